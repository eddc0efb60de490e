/**
 * The SQLite store's report thread (sqlite-reports.ts starts it): usage reports on a read-only
 * connection of its own, so their scans never stop the event loop that serves requests. WAL
 * lets it read while the store writes; each report reads what was committed when it started.
 */
import { parentPort, workerData } from "node:worker_threads";
import Database from "better-sqlite3";
import { type ReportQuery, usageReport } from "./sqlite-usage-report.ts";

export type ReportAnswer = { rows: ReturnType<typeof usageReport> } | { error: string };

const { filename, busyTimeoutMs } = workerData as { filename: string; busyTimeoutMs: number };
// A file that cannot be opened throws here: the worker fails, and so does the report waiting on it.
const db = new Database(filename, { readonly: true, fileMustExist: true });
db.pragma(`busy_timeout = ${busyTimeoutMs}`);

parentPort!.on("message", (q: ReportQuery) => {
  let answer: ReportAnswer;
  try {
    answer = { rows: usageReport(db, q) };
  } catch (e) {
    answer = { error: e instanceof Error ? `${e.name}: ${e.message}` : String(e) };
  }
  parentPort!.postMessage(answer);
});
