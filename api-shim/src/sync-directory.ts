import { closeSync, fsyncSync, openSync } from "node:fs";

/**
 * Flushes a directory's entries to disk: a file made, renamed or moved in it is there after a
 * power cut only once its directory is synced (the file's own fsync does not cover its name).
 */
export function syncDirectory(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
