/**
 * A stand-in for the SQLite report worker whose statement is past its scan, in the sort for GROUP
 * BY that no check interrupts: it answers each report after `sortMs` (workerData), whatever the
 * stop flag says, blocking its thread as native code would.
 */
import { parentPort, workerData } from "node:worker_threads";

const { sortMs } = workerData as { sortMs?: number };
parentPort!.on("message", () => {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, sortMs ?? 3000);
  parentPort!.postMessage({ rows: [] });
});
