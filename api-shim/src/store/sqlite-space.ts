import { statfsSync } from "node:fs";
import { dirname } from "node:path";

/**
 * The free space a SQLite store's volume must have for the shim to start. A shim restarted on a
 * volume that is still full (model weights accumulate there) would otherwise start: its few
 * start-up writes fit in the WAL space its predecessor grew, so it listens, /ready says 200, and
 * the next request is forwarded to the model (GPU work) before its settlement meets the full
 * disk, answered 503 and the process exits 1, at every restart. 16 MiB is the size the store lets
 * its WAL keep (journal_size_limit, sqlite-store.ts): room for it to grow back and for
 * checkpoints to copy it into the database. Less than that on a volume holding GBs of weights is
 * a full volume in practice.
 */
export const MIN_FREE_BYTES = 16 * 1024 * 1024;

/** The volume holding the SQLite file has less than MIN_FREE_BYTES free: the shim does not start. */
export class VolumeFullError extends Error {
  constructor(file: string, free: number) {
    super(`the volume holding ${file} has ${free} bytes free, less than the ${MIN_FREE_BYTES} (${MIN_FREE_BYTES / 2 ** 20} MiB) the shim needs to start: free space on it (df -h); until then the shim would take requests it cannot record`);
    this.name = "VolumeFullError";
  }
}

/**
 * Throws VolumeFullError when the volume of `file` (its directory, which exists) has too little
 * room. `bavail`, not `bfree`: the blocks an unprivileged user may take (the image runs as uid
 * 1000; ext4 keeps 5 % for root).
 */
export function checkRoomToStart(file: string, statfs: (dir: string) => { bavail: number; bsize: number } = statfsSync): void {
  const { bavail, bsize } = statfs(dirname(file));
  const free = bavail * bsize;
  if (free < MIN_FREE_BYTES) throw new VolumeFullError(file, free);
}
