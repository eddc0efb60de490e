import { readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";
import { HOST_FILES_ARCHIVE } from "../../infra/render/cloud-init.ts";
import { runTool, tempDir } from "./tools.ts";

export interface UnpackedFile {
  readonly content: string;
  readonly mode: number;
}

/**
 * The files a host gets from its cloud-init user data, as the host gets them: the archive from
 * write_files decoded as cloud-init's `encoding: b64` does, then unpacked by the real `tar`
 * with the arguments of the user data's own runcmd (into a temporary root). Keyed by absolute path.
 */
export function unpackHostFiles(cloudConfig: string): Map<string, UnpackedFile> {
  const doc = parse(cloudConfig);
  const entry = doc.write_files.find((f: { path: string }) => f.path === HOST_FILES_ARCHIVE);
  if (!entry || entry.encoding !== "b64") throw new Error(`no b64 ${HOST_FILES_ARCHIVE} in write_files`);
  const root = tempDir("host-root-");
  const archive = join(tempDir("host-archive-"), "host-files.tar.gz");
  writeFileSync(archive, Buffer.from(entry.content, "base64"));
  const unpack = (doc.runcmd as string[][]).find((c) => c[0] === "tar");
  if (!unpack) throw new Error("no tar in runcmd");
  const args = unpack.slice(1).map((a) => (a === HOST_FILES_ARCHIVE ? archive : a === "/" ? root : a));
  const extracted = runTool("tar", args);
  if (extracted.status !== 0) throw new Error(`tar ${args.join(" ")}: ${extracted.output}`);
  const listed = runTool("tar", ["-tzf", archive]);
  const files = new Map<string, UnpackedFile>();
  for (const name of listed.output.split("\n").filter(Boolean)) {
    const path = join(root, name);
    files.set(`/${name}`, { content: readFileSync(path, "utf8"), mode: statSync(path).mode & 0o7777 });
  }
  return files;
}
