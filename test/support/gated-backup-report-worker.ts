/**
 * A stand-in report worker (SqliteReports' workerUrl) whose backup cannot be stopped, as SQLite's
 * VACUUM INTO cannot: it creates the copy at once, then blocks its thread, as native code would,
 * until the test creates `<copy>.go`; then it answers `written`. Reports are answered at once with
 * no rows. The test, not a duration, decides when the copy ends.
 */
import { existsSync, writeFileSync } from "node:fs";
import { parentPort } from "node:worker_threads";

const pause = new Int32Array(new SharedArrayBuffer(4));
parentPort!.postMessage({ ready: true });
parentPort!.on("message", (ask: { backup?: string }) => {
  if (ask.backup !== undefined) {
    writeFileSync(ask.backup, "a copy being written");
    while (!existsSync(`${ask.backup}.go`)) Atomics.wait(pause, 0, 0, 10);
    return parentPort!.postMessage({ written: true });
  }
  parentPort!.postMessage({ rows: [] });
});
