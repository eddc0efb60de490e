/**
 * A stand-in for a SQLite report worker whose statement no check reaches (a stalled disk, a long
 * sort): it answers each report after `sortMs` (workerData), whatever the stop flag says,
 * blocking its thread as native code would.
 */
import { parentPort, workerData } from "node:worker_threads";

const { sortMs } = workerData as { sortMs?: number };
parentPort!.postMessage({ ready: true }); // as the real worker does once its database is open
parentPort!.on("message", () => {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, sortMs ?? 3000);
  parentPort!.postMessage({ rows: [] });
});
