import { stat, statfs, statfsSync } from "node:fs";
import { dirname } from "node:path";

/**
 * The free space a SQLite store's volume must have for the shim to start, and to go on serving.
 * A shim restarted on a volume that is still full (model weights accumulate there) would
 * otherwise start: its few start-up writes fit in the WAL space its predecessor grew, so it
 * listens, /ready says 200, and the next request is forwarded to the model (GPU work) before its
 * settlement meets the full disk, answered 503 and the process exits 1, at every restart. 16 MiB
 * is the size the store lets its WAL keep (journal_size_limit, sqlite-store.ts): room for it to
 * grow back and for checkpoints to copy it into the database. Less than that on a volume holding
 * GBs of weights is a full volume in practice. While the store serves, its own WAL counts as room
 * (lackOfRoom).
 */
export const MIN_FREE_BYTES = 16 * 1024 * 1024;

/** The volume holding the SQLite file has less than MIN_FREE_BYTES free: the shim does not start, or stops. */
export class VolumeFullError extends Error {
  constructor(file: string, free: number, wal = 0) {
    const counted = wal > 0 ? ` (and ${wal} in the store's own WAL, which it reuses)` : "";
    super(`the volume holding ${file} has ${free} bytes free${counted}, less than the ${MIN_FREE_BYTES} (${MIN_FREE_BYTES / 2 ** 20} MiB) the shim needs to start: free space on it (df -h); until then the shim would take requests it cannot record`);
    this.name = "VolumeFullError";
  }
}

/** What statfs says of a volume that counts here. */
type VolumeStats = { bavail: number; bsize: number };

/**
 * The VolumeFullError of `file` when its volume has too little room, else null. `bavail`, not
 * `bfree`: the blocks an unprivileged user may take (the image runs as uid 1000; ext4 keeps 5 %
 * for root). While the store serves, its own WAL (`walBytes`) counts as room: the store reuses
 * it from its start after each checkpoint, grown up to journal_size_limit (16 MiB) and kept, and
 * a close() that checkpoints it whole removes it, so the next start finds that space free. Were
 * it not counted, a shim on a volume with a little more than 16 MiB free and nothing else
 * writing to it would fail closed each time its WAL had grown, start again, and so on every few
 * hundred requests. Not at start: a WAL a crash left holds pages still to be copied into the
 * database, which must grow for them first.
 */
function lackOfRoom(file: string, { bavail, bsize }: VolumeStats, walBytes = 0): VolumeFullError | null {
  const free = bavail * bsize;
  return free + walBytes < MIN_FREE_BYTES ? new VolumeFullError(file, free, walBytes) : null;
}

/** Throws VolumeFullError when the volume of `file` (its directory, which exists) has too little room. */
export function checkRoomToStart(file: string, stat: (dir: string) => VolumeStats = statfsSync): void {
  const full = lackOfRoom(file, stat(dirname(file)));
  if (full !== null) throw full;
}

/** What fs.stat says of the WAL that counts here. */
type WalStats = { size: number };
type StatfsCallback = (dir: string, callback: (err: Error | null, stats: VolumeStats) => void) => void;
type WalStatCallback = (path: string, callback: (err: Error | null, stats: WalStats) => void) => void;

/**
 * The start's check again every `intervalMs` while the store runs (on the checkpoint thread's
 * beat): `onFull` is called once, with the same VolumeFullError, when the volume has filled up
 * since. A volume that fills while the shim serves is otherwise found by a batch's COMMIT that
 * cannot grow the WAL, after requests were answered 200 with charges that batch then loses; a
 * restart meets checkRoomToStart's refusal instead. The statfs runs on libuv's thread pool (a
 * stalled mount does not stop the event loop; one in flight is not stacked), never on the
 * request path; so does the stat of the store's WAL after it (none, or one that cannot be looked
 * at, counts 0 bytes). A statfs that fails (the directory removed) says nothing about room: the
 * database's own errors say the rest. Returns the function that stops it.
 */
export function watchRoom(file: string, intervalMs: number, onFull: (e: VolumeFullError) => void, statVolume: StatfsCallback = statfs, statWal: WalStatCallback = stat): () => void {
  const dir = dirname(file);
  let stopped = false;
  let pending = false;
  const stop = () => {
    stopped = true;
    clearInterval(timer);
  };
  const timer = setInterval(() => {
    if (pending) return;
    pending = true;
    statVolume(dir, (err, stats) => {
      if (stopped || err !== null) {
        pending = false;
        return;
      }
      statWal(`${file}-wal`, (walErr, wal) => {
        pending = false;
        const full = stopped ? null : lackOfRoom(file, stats, walErr === null ? wal.size : 0);
        if (full === null) return;
        stop();
        onFull(full);
      });
    });
  }, intervalMs);
  timer.unref();
  return stop;
}
