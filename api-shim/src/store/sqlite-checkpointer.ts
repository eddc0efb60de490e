import { once } from "node:events";
import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import type Database from "better-sqlite3";

/**
 * WAL checkpoints run on a worker thread with its own connection, so their fsyncs never stall
 * the request path (on a small VM one checkpoint showed in the request p99); the main
 * connection has wal_autocheckpoint = 0. PASSIVE checkpoints do not block the writer; once the
 * WAL is fully copied the writer starts it over. The worker is plain JavaScript (no type
 * stripping in a second isolate: it would cost ~40 MB of RSS). If it dies, the main connection
 * checkpoints again.
 */
const CHECKPOINT_WORKER = `
const { parentPort, workerData } = require("node:worker_threads");
const Database = require(workerData.module);
// fileMustExist: a file moved away before this thread started must not be created empty here,
// where this connection would copy the real database's WAL into it.
const db = new Database(workerData.filename, { fileMustExist: true });
db.pragma("busy_timeout = 1000");
const checkpoint = () => { try { db.pragma("wal_checkpoint(PASSIVE)"); } catch {} };
const timer = setInterval(checkpoint, workerData.intervalMs);
parentPort.on("message", (m) => {
  if (m !== "stop") return;
  clearInterval(timer);
  checkpoint();
  db.close();
  parentPort.postMessage("stopped");
});
`;

export function startCheckpointer(db: Database.Database, filename: string, intervalMs: number): Worker {
  db.pragma("wal_autocheckpoint = 0");
  const module = createRequire(import.meta.url).resolve("better-sqlite3");
  const worker = new Worker(CHECKPOINT_WORKER, { eval: true, workerData: { filename, intervalMs, module } });
  worker.unref();
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
  await Promise.race([once(worker, "message"), once(worker, "exit"), new Promise((r) => setTimeout(r, 2000).unref())]).catch(() => {});
  await worker.terminate();
}
