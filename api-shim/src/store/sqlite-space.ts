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
 * GBs of weights is a full volume in practice. While the store serves, the part of its own WAL it
 * reuses counts as room (lackOfRoom).
 */
export const MIN_FREE_BYTES = 16 * 1024 * 1024;

/** The size the SQLite store lets its WAL keep when it starts it over (journal_size_limit). */
export const WAL_SIZE_LIMIT = MIN_FREE_BYTES;

/**
 * The volume holding the SQLite file has less than MIN_FREE_BYTES free: the shim does not start,
 * or (`serving`) stops. Worded for each: a shim that was serving (its volume filled by a backup
 * or model weights) told an operator it "needs to start", which it had done long before.
 */
export class VolumeFullError extends Error {
  /** SQLite's own code for a full disk: the exit line's `err.code` and hint (failureHint) say so, as for SQLITE_FULL from SQLite itself. */
  readonly code = "SQLITE_FULL";
  constructor(file: string, free: number, wal = 0, serving = false) {
    const counted = wal > 0 ? ` (and ${wal} in the store's own WAL, which it reuses)` : "";
    const needs = serving
      ? "go on serving, so it fails closed and exits (and is refused a restart until there is room): free space on it (df -h); serving on, it would take requests it cannot record"
      : "start: free space on it (df -h); until then the shim would take requests it cannot record";
    super(`the volume holding ${file} has ${free} bytes free${counted}, less than the ${MIN_FREE_BYTES} (${MIN_FREE_BYTES / 2 ** 20} MiB) the shim needs to ${needs}`);
    this.name = "VolumeFullError";
  }
}

/** What statfs says of a volume that counts here. */
type VolumeStats = { bavail: number; bsize: number };

/**
 * The VolumeFullError of `file` when its volume has too little room, else null. `bavail`, not
 * `bfree`: the blocks an unprivileged user may take (the image runs as uid 1000; ext4 keeps 5 %
 * for root). While the store serves, the part of its own WAL it reuses (`walBytes`, see
 * reusableWal) counts as room: the store starts the WAL over after each checkpoint that copies
 * it whole, the file kept at up to journal_size_limit (16 MiB), and a close() that checkpoints
 * it whole removes it, so the next start finds that space free. Were it not counted, a shim on a
 * volume with a little more than 16 MiB free and nothing else writing to it would fail closed
 * each time its WAL had grown, start again, and so on every few hundred requests. Not at start: a
 * WAL a crash left holds pages still to be copied into the database, which must grow for them
 * first.
 */
function lackOfRoom(file: string, { bavail, bsize }: VolumeStats, walBytes = 0, serving = false): VolumeFullError | null {
  const free = bavail * bsize;
  return free + walBytes < MIN_FREE_BYTES ? new VolumeFullError(file, free, walBytes, serving) : null;
}

/**
 * Throws VolumeFullError when the volume of `file` (its directory, which exists) has too little
 * room; else returns its free bytes (the first value of shim_sqlite_volume_free_bytes, there from
 * the first scrape rather than after watchRoom's first check a second later).
 */
export function checkRoomToStart(file: string, stat: (dir: string) => VolumeStats = statfsSync): number {
  const stats = stat(dirname(file));
  const full = lackOfRoom(file, stats);
  if (full !== null) throw full;
  return stats.bavail * stats.bsize;
}

/** The last checkpoint that copied the whole WAL: the WAL file's size then, and when (performance.now(); the store's start before one has). */
export interface CompleteCheckpoint {
  walBytes: number;
  at: number;
}

/**
 * The bytes of a WAL of `size` that count as room, never more than journal_size_limit (to which
 * the file is cut back when started over). While checkpoints copy it whole (the last within two
 * intervals), all of it: each such checkpoint lets the writer start the file over, so it grows by
 * at most an interval's writes past what it reuses (counting that against the free space would
 * fail a shim on a volume with a little more than 16 MiB free as soon as its load rises). Once
 * they stop doing so, only its size at the last one: what it has grown past that is growth no
 * checkpoint resets (a read snapshot held: a usage report, a VACUUM INTO backup; or failing
 * checkpoints). It takes the volume's space like any other file; counted as room, free + WAL
 * stayed the same while the volume filled, until a COMMIT met the full disk and lost its batch's
 * charges.
 */
export function reusableWal(size: number, last: CompleteCheckpoint, now: number, intervalMs: number): number {
  const resetting = now - last.at <= 2 * intervalMs;
  return Math.min(size, resetting ? size : last.walBytes, WAL_SIZE_LIMIT);
}

/** What fs.stat says of the WAL that counts here. */
type WalStats = { size: number };
type StatfsCallback = (dir: string, callback: (err: Error | null, stats: VolumeStats) => void) => void;
type WalStatCallback = (path: string, callback: (err: Error | null, stats: WalStats) => void) => void;

/** What watchRoom tells: the volume filled up (once), and the free bytes each check found. */
export interface RoomEvents {
  full(e: VolumeFullError): void;
  free?(bytes: number): void;
}

/**
 * The start's check again every `intervalMs` while the store runs (on the checkpoint thread's
 * beat): `on.full` is called once, with a VolumeFullError worded for a serving shim, when the volume has filled up
 * since. A volume that fills while the shim serves is otherwise found by a batch's COMMIT that
 * cannot grow the WAL, after requests were answered 200 with charges that batch then loses; a
 * restart meets checkRoomToStart's refusal instead. The statfs runs on libuv's thread pool (a
 * stalled mount does not stop the event loop; one in flight is not stacked), never on the
 * request path; so does the stat of the store's WAL after it (none, or one that cannot be looked
 * at, counts 0 bytes), of which the part reused counts as room (reusableWal; `lastComplete()`
 * says when the last checkpoint copied it whole). A statfs that fails (the directory removed)
 * says nothing about room: the database's own errors say the rest. `on.free` is told each
 * statfs's free bytes (the shim's shim_sqlite_volume_free_bytes, metrics.ts): the fail-closed
 * exit comes in the same tick as the statfs that finds the volume full, so no scrape sees a
 * counter for it; the free space seen falling, one scrape after another, is what an alert can
 * fire on first. Returns the function that stops it.
 */
export function watchRoom(file: string, intervalMs: number, lastComplete: () => CompleteCheckpoint, on: RoomEvents, statVolume: StatfsCallback = statfs, statWal: WalStatCallback = stat): () => void {
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
      if (!stopped) on.free?.(stats.bavail * stats.bsize);
      statWal(`${file}-wal`, (walErr, wal) => {
        pending = false;
        const full = stopped ? null : lackOfRoom(file, stats, walErr === null ? reusableWal(wal.size, lastComplete(), performance.now(), intervalMs) : 0, true);
        if (full === null) return;
        stop();
        on.full(full);
      });
    });
  }, intervalMs);
  timer.unref();
  return stop;
}
