import { once } from "node:events";
import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import type Database from "better-sqlite3";
import { isCorrupt, isFull } from "./sqlite-failures.ts";

/**
 * WAL checkpoints run on a worker thread with its own connection, so their fsyncs never stall
 * the request path (on a small VM one checkpoint showed in the request p99); the main
 * connection has wal_autocheckpoint = 0. PASSIVE checkpoints do not block the writer; once the
 * WAL is fully copied the writer starts it over. The worker is plain JavaScript (no type
 * stripping in a second isolate: it would cost ~40 MB of RSS). If it dies, the main connection
 * checkpoints again.
 *
 * A checkpoint that fails (an fsync the disk refuses, EIO) is posted to the main thread: the
 * WAL then grows with every write (23 MB/s under load) until the volume is full, and nothing
 * else would say so. One that finds another connection checkpointing (busy) is no failure. The
 * failures count until a checkpoint is known to have copied the whole WAL and synced the file,
 * not until one merely succeeds: on a failing disk, one that stops short of the WAL's end (the
 * writer appended meanwhile) syncs nothing, and succeeds between failures.
 *
 * Each checkpoint that finds the whole WAL copied (checkpointed = log: the writer starts it over
 * from its beginning, cut back to journal_size_limit) posts the WAL file's size: that much of the
 * file is reused, not grown, and the volume check counts it as room (sqlite-space.ts). Stat'ed
 * here, right after the checkpoint, off the main thread.
 */
const CHECKPOINT_WORKER = `
const { parentPort, workerData } = require("node:worker_threads");
const Database = require(workerData.module);
// fileMustExist: a file moved away before this thread started must not be created empty here,
// where this connection would copy the real database's WAL into it.
const db = new Database(workerData.filename, { fileMustExist: true });
db.pragma("busy_timeout = 1000");
const { statSync } = require("node:fs");
const postReusable = () => {
  try {
    parentPort.postMessage({ reusableWal: statSync(workerData.filename + "-wal", { throwIfNoEntry: false })?.size ?? 0 });
  } catch {
    // a WAL that cannot be looked at: the last size posted stands, and ages
  }
};
// failing: a checkpoint failed since the WAL was last copied whole. A checkpoint that succeeds
// proves little on a failing disk: one that stops short of the end of the WAL (the writer
// appended meanwhile) copies pages without syncing the file. The WAL was copied whole, the file
// synced, when it has fewer frames than before (the writer started it over, which it does only
// then), or when two checkpoints in a row each find all of its frames copied, none added between.
let failing = false;
let peak = 0; // the most frames the WAL had at a checkpoint since the first failure
let previous = -1; // its frames at the last checkpoint, if that one copied them all
const checkpoint = () => {
  try {
    const [r] = db.pragma("wal_checkpoint(PASSIVE)");
    // Another connection checkpointing (an operator's RESTART waiting on a reader) is not thrown:
    // SQLite answers busy with log and checkpointed both -1, which read as "all copied" and posted
    // the whole WAL as reusable room while nothing was copied.
    if (r.busy) return;
    if (r.checkpointed === r.log) postReusable();
    const whole = r.log < peak || (r.checkpointed === r.log && r.log === previous);
    if (failing && whole) {
      failing = false;
      parentPort.postMessage({ checkpoint: "complete" });
    }
    peak = failing ? Math.max(peak, r.log) : r.log;
    // Only a checkpoint that copied every frame starts a pair: one stopped short (a frame the
    // writer appended meanwhile) synced nothing, and the next, finding the same frames all copied,
    // read as "two in a row" and ended a failing disk's run (found by a flake under load).
    previous = r.checkpointed === r.log ? r.log : -1;
  } catch (e) {
    if (String(e.code).startsWith("SQLITE_BUSY")) return; // with its extended codes, as isBusy (sqlite-failures.ts)
    failing = true;
    previous = -1;
    parentPort.postMessage({ checkpoint: "failed", code: e.code, message: e.message });
  }
};
// A TRUNCATE checkpoint asked for (a key's old name erased: sqlite-erase.ts), tried at each turn
// until one completes; its number posted back then. Its failures are the PASSIVE one's to report.
// Tried without waiting (busy_timeout 0), after the turn's PASSIVE one has copied what it could:
// unlike PASSIVE, TRUNCATE holds the write lock while it waits for readers, so waiting on a
// report's or a backup's snapshot (1 s at each turn, as long as it lasts) kept every settlement
// and hold of the request path out of the database (measured: none of ~570 writes in 4 s passed).
let truncate = 0;
const truncateWal = () => {
  db.pragma("busy_timeout = 0");
  try {
    const [r] = db.pragma("wal_checkpoint(TRUNCATE)");
    if (r.busy) return;
    parentPort.postMessage({ truncated: truncate });
    truncate = 0;
  } catch {
  } finally {
    db.pragma("busy_timeout = 1000");
  }
};
const timer = setInterval(() => {
  checkpoint();
  if (truncate !== 0) truncateWal();
}, workerData.intervalMs);
parentPort.on("message", (m) => {
  if (typeof m === "object" && m !== null && "truncate" in m) {
    truncate = Math.max(truncate, m.truncate);
    return truncateWal();
  }
  if (m !== "stop") return;
  clearInterval(timer);
  checkpoint();
  db.close();
  parentPort.postMessage("stopped");
});
`;

/** How long checkpoints may fail, none completing, before the store fails closed (its checkpointFailureLimitMs by default). */
export const CHECKPOINT_FAILURE_LIMIT_MS = 60_000;

/**
 * Checkpoint failures it takes, over the store's checkpointFailureLimitMs, to fail it closed:
 * time alone also counts checkpoints that merely could not reach the WAL's end (a report's or a
 * backup's read snapshot), so two isolated errors around a long snapshot would be enough.
 */
export const CHECKPOINT_FAILURES_TO_FAIL = 5;

/** A failed checkpoint: its error, how many failed (it included) since one last completed, and for how long since the first of them. */
export interface CheckpointFailure {
  error: Error & { code?: string };
  failures: number;
  failingMs: number;
}

/**
 * The error a failed checkpoint fails the store closed with, or null while the disk may still
 * recover. At once for a corrupt page, and for a full volume (SQLITE_FULL: it does not recover by
 * itself, and the next COMMIT that must grow the WAL fails with answered requests in its batch);
 * otherwise once checkpoints have failed for `limitMs` with none completing, and at least
 * CHECKPOINT_FAILURES_TO_FAIL times: the WAL would grow until the volume is full.
 */
export function failureToFailWith(f: CheckpointFailure, limitMs: number): Error | null {
  if (failsAtOnce(f.error)) return f.error;
  if (f.failingMs < limitMs || f.failures < CHECKPOINT_FAILURES_TO_FAIL) return null;
  const last = `${f.error.code ?? "error"} ${f.error.message}`;
  const why = `WAL checkpoints have failed for ${Math.floor(f.failingMs / 1000)} s (${f.failures} failures, none completed since; last: ${last}): the WAL grows until the volume is full`;
  return Object.assign(new Error(why), { code: f.error.code });
}

function failsAtOnce(error: Error): boolean {
  return isCorrupt(error) || isFull(error);
}

/**
 * The warning logged with a failed checkpoint: what follows, by its cause (failureToFailWith's
 * rule). A full volume or a corrupt file fail the store closed at once, in the same turn; a
 * failing disk's fsyncs only once they have failed for `limitMs` and CHECKPOINT_FAILURES_TO_FAIL
 * times, while the WAL grows.
 */
export function checkpointFailureWarning(error: Error, limitMs = CHECKPOINT_FAILURE_LIMIT_MS): string {
  if (!failsAtOnce(error)) return `a WAL checkpoint failed: the WAL grows until checkpoints succeed again; the store fails closed if they keep failing for ${Math.round(limitMs / 1000)} s (${CHECKPOINT_FAILURES_TO_FAIL} failures or more, none completing)`;
  return `a WAL checkpoint failed: ${isFull(error) ? "the volume is full" : "the database file is corrupt"}; the store fails closed at once`;
}

type CheckpointMessage = { checkpoint: "complete" } | { checkpoint: "failed"; code?: string; message: string } | { reusableWal: number } | { truncated: number };

/**
 * Starts the checkpoint thread; `onFailure` hears of each checkpoint that fails, with the run it
 * belongs to, and `onReusableWal` of the WAL file's size at each checkpoint that copied it whole.
 */
export function startCheckpointer(db: Database.Database, filename: string, intervalMs: number, onFailure: (f: CheckpointFailure) => void, onReusableWal: (bytes: number) => void = () => {}): Worker {
  db.pragma("wal_autocheckpoint = 0");
  const module = createRequire(import.meta.url).resolve("better-sqlite3");
  const worker = new Worker(CHECKPOINT_WORKER, { eval: true, workerData: { filename, intervalMs, module } });
  worker.unref();
  let run: { since: number; failures: number } | null = null;
  worker.on("message", (m: CheckpointMessage | "stopped") => {
    if (m === "stopped") return;
    if ("reusableWal" in m) return onReusableWal(m.reusableWal);
    if ("truncated" in m) return; // truncateWal's (sqlite-erase.ts)
    if (m.checkpoint === "complete") {
      run = null;
      return;
    }
    const now = performance.now();
    run ??= { since: now, failures: 0 };
    run.failures++;
    onFailure({ error: Object.assign(new Error(m.message), { code: m.code }), failures: run.failures, failingMs: now - run.since });
  });
  const fallback = () => {
    if (db.open) db.pragma("wal_autocheckpoint = 1000");
  };
  worker.once("error", fallback);
  worker.once("exit", fallback);
  return worker;
}

/** Its last checkpoint, then its end (a checkpoint that does not answer within 2 s is not waited for). */
export async function stopCheckpointer(worker: Worker): Promise<void> {
  if (worker.threadId === -1) return; // it ended already (it could not open the file, or failed): no answer will come
  worker.postMessage("stop");
  const stopped = new Promise<void>((resolve) => worker.on("message", (m) => m === "stopped" && resolve()));
  await Promise.race([stopped, once(worker, "exit"), new Promise((r) => setTimeout(r, 2000).unref())]).catch(() => {});
  await worker.terminate();
}
