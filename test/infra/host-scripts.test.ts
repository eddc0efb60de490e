// The host scripts (templates/host/) run on a fake host: stubs for the programs they call,
// their absolute paths moved into a temp directory (test/support/host-scripts.ts).
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { fakeHost } from "../support/host-scripts.ts";
import { runTool, tempDir } from "../support/tools.ts";

describe("mount-volume.sh: a volume that may hold the ledger is never formatted", () => {
  /** A 64 MiB image holding an ext4 filesystem, as a volume reattached to a new instance. */
  /** A program's path (the fake host's stubs of the same name come first on its PATH). */
  const which = (program: string) =>
    spawnSync("bash", ["-c", `PATH="$PATH:/usr/sbin:/sbin" command -v ${program}`], { encoding: "utf8" }).stdout.trim();

  function ext4Image(): string {
    const image = join(tempDir("volume-"), "volume.img");
    expect(runTool("truncate", ["-s", "64M", image]).status).toBe(0);
    const made = runTool("mkfs.ext4", ["-q", "-L", "gpu-sandbox", image]);
    expect(made.status, made.output).toBe(0);
    return image;
  }

  /**
   * blkid with every read(2) of the device failing with EIO (attachment in progress, a storage
   * hiccup): the reads after the ones the dynamic loader makes, counted on a normal run.
   */
  function blkidWithEio(image: string): string {
    const trace = runTool("strace", ["-e", "trace=openat,read", "blkid", "-p", image]).output;
    const loaderReads = trace.slice(0, trace.indexOf(image)).split("\n").filter((l) => l.startsWith("read(")).length;
    return `exec strace -o /dev/null -e trace=read -e inject=read:error=EIO:when=${loaderReads + 1}+ ${which("blkid")} "$@"`;
  }

  it("does not format a volume holding ext4 whose reads fail, though blkid -p then exits 2 as for a blank one", () => {
    const image = ext4Image();
    const eio = blkidWithEio(image);
    expect(spawnSync("bash", ["-c", eio, "blkid", "-p", image]).status).toBe(2); // as for "no signature at all"

    const host = fakeHost({ blkid: eio, "mkfs.ext4": `exec ${which("mkfs.ext4")} "$@"` });
    host.setVolume(image);
    const r = host.run("mount-volume.sh");
    expect({ formatted: host.read("calls").includes("mkfs.ext4"), status: r.status }).toEqual({ formatted: false, status: 1 });
    expect(host.read("bootstrap.log")).toContain("not formatting it");
    expect(spawnSync("blkid", ["-p", image]).status).toBe(0); // the filesystem is still there
  });

  it("formats a blank volume (blkid -p finds nothing and its first MiB is zeros), then mounts it", () => {
    const host = fakeHost({ blkid: "exit 2" });
    const r = host.run("mount-volume.sh");
    expect(r.status, r.stderr).toBe(0);
    expect(host.read("calls")).toContain(`mkfs.ext4 -q -L gpu-sandbox ${host.root}/volume`);
    expect(host.read("fstab")).toContain(`${host.root}/volume ${host.root}/data ext4 `);
  });
});
