import { createHash } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, isAbsolute, join, normalize } from "node:path";
import type { Images, TenantConfig } from "../config.ts";
import { renderCompose } from "./compose.ts";
import { renderEnvExample } from "./env-file.ts";
import { renderLitellmConfig } from "./litellm.ts";
import { renderNginxConf } from "./nginx.ts";
import { renderShimConfig, type BootstrapKeyRecord } from "./shim-config.ts";
import { SHIM_PACKAGE_DIR, shimSourceFiles } from "./shim-source.ts";
import { readTemplate } from "./template.ts";

/** Relative path → content. What goes to /opt/gpu-sandbox on the host. */
export type Bundle = ReadonlyMap<string, string>;

/** Lists every file with its SHA-256; the host checks it before using the bundle. */
export const MANIFEST = "MANIFEST.sha256";

export interface BundleInputs {
  /** Image references, pinned by digest when `pulumi up` resolved them. */
  readonly images: Images;
  /** Bootstrap keys (hashes only); `render` has none, since Pulumi makes them at deploy time. */
  readonly bootstrapKeys: readonly BootstrapKeyRecord[];
  /**
   * The certificate's DNS name, which port 80 redirects to: `pulumi up` knows it (tls.domain or
   * Linode's name for the host); `render` has tls.domain alone.
   */
  readonly tlsDomain?: string;
}

/**
 * The serving bundle: compose file, nginx and LiteLLM configs, the shim's config and source, the
 * deploy scripts, `.env.example`, and a manifest. Pure: the same function feeds `pulumi up` and
 * `npm run render`, so what render shows is what deploys. Secrets are never in it; they go to
 * `.env` separately.
 */
export function renderBundle(config: TenantConfig, inputs: BundleInputs): Bundle {
  const files = new Map<string, string>([
    [".env.example", renderEnvExample(config)],
    ["nginx/nginx.conf", renderNginxConf(config, inputs.tlsDomain)],
    ["nginx/reload-on-cert-change.sh", readTemplate("bundle/reload-on-cert-change.sh")],
    ["litellm/config.yaml", renderLitellmConfig(config)],
    ["shim/config.yaml", renderShimConfig(config, inputs.bootstrapKeys)],
    ["bin/deploy.sh", readTemplate("bundle/bin/deploy.sh")],
    ["bin/wait-ready.sh", readTemplate("bundle/bin/wait-ready.sh")],
    ["bin/make-self-signed-cert.sh", readTemplate("bundle/bin/make-self-signed-cert.sh")],
    ["bin/check-certificate.sh", readTemplate("bundle/bin/check-certificate.sh")],
  ]);
  if (config.tls.mode === "letsencrypt") files.set("tls/certbot-renew.sh", readTemplate("bundle/certbot-renew.sh"));
  for (const [path, content] of shimSourceFiles()) files.set(`${SHIM_PACKAGE_DIR}/${path}`, content);
  // Last: it labels each service with the hash of the files above that it mounts.
  files.set("compose.yaml", renderCompose(config, inputs.images, files));
  files.set(MANIFEST, manifest(files));
  return files;
}

/** `sha256sum` format, sorted by path. */
function manifest(files: ReadonlyMap<string, string>): string {
  return [...files.keys()].sort().map((path) => `${sha256(files.get(path)!)}  ${path}\n`).join("");
}

export function sha256(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** Identifies a bundle's content: the hash of its manifest. */
export function bundleHash(bundle: Bundle): string {
  const m = bundle.get(MANIFEST);
  if (m === undefined) throw new Error("bundle has no manifest");
  return sha256(m);
}

/** A directory the bundle cannot be written to without replacing files no earlier bundle wrote. */
export class BundleDirError extends Error {
  override name = "BundleDirError";
}

/**
 * Writes the bundle into `dir` (files 0644, scripts 0755, the directories it makes 0755, whatever
 * the umask), with `beside`: files written next to it but not part of it (render's
 * cloud-init.yaml, which is not copied to the host). An earlier bundle there is replaced whole:
 * the files its manifest lists, and `beside`, are removed first, so none the new bundle dropped
 * lingers. Nothing else in `dir` is touched (an operator's .env or
 * notes, Pulumi's deploy/ staging), and when the bundle would write over a file that no earlier
 * bundle wrote, it throws BundleDirError before changing anything.
 */
export function writeBundle(dir: string, bundle: Bundle, beside: ReadonlyMap<string, string> = new Map()): void {
  const earlier = earlierBundleFiles(dir);
  const ours = new Set(earlier ? [...earlier, ...beside.keys()] : []);
  const files = new Map([...bundle, ...beside]);
  const foreign = [...files.keys()].filter((path) => !ours.has(path) && existsSync(join(dir, path)));
  if (foreign.length > 0) {
    const shown = foreign.length > 5 ? `${foreign.slice(0, 5).join(", ")} and ${foreign.length - 5} more` : foreign.join(", ");
    throw new BundleDirError(`${dir} holds files no earlier render wrote that this one would replace (${shown}): `
      + `render into a new or empty directory, or one an earlier render wrote (it has ${MANIFEST}).`);
  }
  // The old manifest goes last and the new one comes first: whatever an interrupted write
  // leaves is listed in a manifest, so the next write still recognises it as its own.
  for (const path of ours) if (path !== MANIFEST) removeBundleFile(dir, path);
  const ordered = [...files].sort(([a], [b]) => Number(b === MANIFEST) - Number(a === MANIFEST));
  for (const [path, content] of ordered) {
    const target = join(dir, path);
    makeDirs(dirname(target));
    const mode = path.endsWith(".sh") ? 0o755 : 0o644;
    writeFileSync(target, content, { mode });
    // Set outright: the umask (027, 077 on hardened hosts) would take the others' read, and the
    // host's non-root readers (the shim, uid 1000, of its source and config; LiteLLM of its
    // config) are others to the files rsync -a and Dockerfile COPY keep the modes of.
    chmodSync(target, mode);
  }
}

/** mkdir -p, with each directory it makes 0755 whatever the umask (see writeBundle). Nothing in the bundle is secret. */
function makeDirs(path: string): void {
  if (existsSync(path)) return;
  makeDirs(dirname(path));
  mkdirSync(path);
  chmodSync(path, 0o755);
}

/** The files an earlier bundle's manifest in `dir` lists, the manifest included; none without one. */
function earlierBundleFiles(dir: string): string[] | undefined {
  let text;
  try {
    text = readFileSync(join(dir, MANIFEST), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  const paths = text.split("\n").map((line) => /^[0-9a-f]{64} {2}(.+)$/.exec(line)?.[1])
    // Only paths inside `dir`, as the manifest writes them: a hand-edited `../x` is not followed.
    .filter((path): path is string => path !== undefined && !isAbsolute(path) && normalize(path) === path && !path.startsWith(".."));
  return [...paths, MANIFEST];
}

/** Removes one file of an earlier bundle, and the directories that leaves empty under `dir`. */
function removeBundleFile(dir: string, path: string): void {
  rmSync(join(dir, path), { force: true });
  for (let parent = dirname(path); parent !== "."; parent = dirname(parent)) {
    try {
      rmdirSync(join(dir, parent));
    } catch {
      return; // not empty (or already gone with a sibling's removal): its parents are not empty either
    }
  }
}
