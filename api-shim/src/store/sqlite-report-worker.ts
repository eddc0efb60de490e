/**
 * The SQLite store's report thread (sqlite-reports.ts starts it): usage reports on a read-only
 * connection of its own, so their scans never stop the event loop that serves requests. WAL
 * lets it read while the store writes; each report reads what was committed when it started.
 */
import { parentPort, workerData } from "node:worker_threads";
import Database from "better-sqlite3";
import { type ReportQuery, usageReport } from "./sqlite-usage-report.ts";
import { code } from "./sqlite-failures.ts";

/** A report to run: it ends early once `stop[0]` is not 0 (set by the store's thread), or `timeoutMs` after it came. */
export interface ReportAsk { query: ReportQuery; timeoutMs: number }
/** `code`: SQLite's, when the database failed (a corrupt page): the store fails closed on some. */
export type ReportAnswer = { rows: ReturnType<typeof usageReport> } | { error: string; code?: string };

const { filename, busyTimeoutMs, stop } = workerData as { filename: string; busyTimeoutMs: number; stop: Int32Array };
// A file that cannot be opened throws here: the worker fails, and so does the report waiting on it.
const db = new Database(filename, { readonly: true, fileMustExist: true });
db.pragma(`busy_timeout = ${busyTimeoutMs}`);

parentPort!.on("message", ({ query, timeoutMs }: ReportAsk) => {
  // Monotonic, and this thread's own: the wall clock may be stepped (NTP) while a report runs.
  const deadline = performance.now() + timeoutMs;
  let answer: ReportAnswer;
  try {
    answer = { rows: usageReport(db, query, () => {
      if (Atomics.load(stop, 0) !== 0) throw new Error("the report was stopped (its asker left, or the store is closing)");
      if (performance.now() > deadline) throw new Error(`the report ran past ${timeoutMs} ms`);
    }) };
  } catch (e) {
    const failure = code(e);
    answer = { error: e instanceof Error ? `${e.name}: ${e.message}` : String(e), ...(failure !== undefined ? { code: failure } : {}) };
  }
  parentPort!.postMessage(answer);
});
