/**
 * A stand-in for a SQLite report worker whose further batch takes a while (a slow disk): a
 * report's first batch is one row of its asker's key (ReportQuery.keyId) with more to come; each
 * `more` is answered after `moreMs` (workerData) with the last row of that key. Tells, in the
 * rows, which report they were read for.
 */
import { parentPort, workerData } from "node:worker_threads";

const { moreMs } = workerData as { moreMs?: number };
parentPort!.postMessage({ ready: true }); // as the real worker does once its database is open
const row = (keyId: string, group: string) => ({ keyId, group, requests: 1, promptTokens: 1, completionTokens: 1, cost: 1 });
let keyId = "";
parentPort!.on("message", (ask: { query?: { keyId: string | null }; more?: true; drop?: true }) => {
  if (ask.drop) return;
  if (ask.query) {
    keyId = ask.query.keyId ?? "all";
    return parentPort!.postMessage({ rows: [row(keyId, "first")], more: true });
  }
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, moreMs ?? 500);
  parentPort!.postMessage({ rows: [row(keyId, "last")] });
});
