import { execFileSync } from "node:child_process";
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { join } from "node:path";

/**
 * A tmpfs of `size` (24 MiB by default) in a new directory under `parent`: a volume small enough
 * to fill in a test. Null without root (or CAP_SYS_ADMIN): the test skips. unmountVolume() ends it.
 */
export function smallVolume(parent: string, prefix: string, size = "24m"): string | null {
  const mnt = mkdtempSync(join(parent, prefix));
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", mnt], { stdio: "pipe" });
    return mnt;
  } catch {
    rmSync(mnt, { recursive: true, force: true });
    return null;
  }
}

/** Unmounts a smallVolume (lazily: a process that still has a file open on it lets go later) and removes its directory. */
export function unmountVolume(mnt: string): void {
  execFileSync("umount", ["-l", mnt]);
  rmSync(mnt, { recursive: true, force: true });
}

/** Writes `dir/filler` until the volume has not a byte left. */
export function fillUp(dir: string): void {
  const fd = openSync(join(dir, "filler"), "w");
  try {
    for (const size of [1 << 20, 4096, 1]) {
      try {
        for (;;) writeSync(fd, Buffer.alloc(size, 1));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "ENOSPC") throw e;
      }
    }
  } finally {
    closeSync(fd);
  }
}
