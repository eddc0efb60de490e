import { parentPort, workerData } from "node:worker_threads";
import Database from "better-sqlite3";

/**
 * Runs WAL checkpoints on its own connection and thread, so their fsyncs never stall the
 * request path (the main connection has wal_autocheckpoint = 0). PASSIVE checkpoints do not
 * block the writer; once the WAL has been fully copied, the writer starts it over.
 */
const { filename, intervalMs } = workerData as { filename: string; intervalMs: number };
const db = new Database(filename);
db.pragma("busy_timeout = 1000");
db.pragma("synchronous = NORMAL");

const timer = setInterval(() => {
  try {
    db.pragma("wal_checkpoint(PASSIVE)");
  } catch {
    // Busy or failing disk: the next round tries again; the request path reports store errors itself.
  }
}, intervalMs);

parentPort!.on("message", (message: unknown) => {
  if (message !== "stop") return;
  clearInterval(timer);
  try {
    db.pragma("wal_checkpoint(PASSIVE)");
  } catch {}
  db.close();
  parentPort!.postMessage("stopped");
});
