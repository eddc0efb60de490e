/**
 * The SQLite store's report thread (sqlite-reports.ts starts it): usage reports on a read-only
 * connection of its own, so their scans never stop the event loop that serves requests. WAL
 * lets it read while the store writes; each report reads what was committed when it started.
 * Backups too (GET /admin/backup, sqlite-backup.ts): a VACUUM INTO is one read snapshot, as long
 * as a report's scan.
 */
import { parentPort, workerData } from "node:worker_threads";
import Database from "better-sqlite3";
import { type ReportQuery, usageReport } from "./sqlite-usage-report.ts";
import { type CreditsAsk, creditsStatement } from "./sqlite-credits-statement.ts";
import { code } from "./sqlite-failures.ts";
import { type LowCreditsQuery, sqliteLowCredits } from "./low-credits.ts";
import { type RequestsAsk, requestRowsPage } from "./sqlite-request-rows.ts";
import type { RowAfter } from "./request-rows.ts";
import type { UsageGroup } from "./store.ts";
import { REPORT_BATCH_ROWS } from "./usage-batches.ts";

// Rows go REPORT_BATCH_ROWS per message: one message of a report's every row took the store's
// thread 10 s to receive (a structured clone is one task). The store's thread asks for the next
// (`more`) once it wrote the last, so rows wait here, not in its memory, while a client reads slowly.

/**
 * A report to run: it ends early once `stop[0]` is not 0 (set by the store's thread), or
 * `timeoutMs` after it came. `more`: the running report's next batch; `drop`: its asker gave up
 * the rest (no answer). `credits`: a credits statement, answered as a report (its lines as rows); `lowCredits` so too (low-credits.ts). `backup`: the database copied into that new file (VACUUM INTO), answered
 * `written` (or an error); nothing stops it but its end.
 */
export type ReportAsk = { query: ReportQuery; timeoutMs: number } | { credits: CreditsAsk; timeoutMs: number } | { lowCredits: LowCreditsQuery; timeoutMs: number } | { requests: RequestsAsk; timeoutMs: number } | { more: true } | { drop: true } | { backup: string };
/**
 * `more`: further batches follow, each once asked for (absent: this is the last). `code`:
 * SQLite's, when the database failed (a corrupt page): the store fails closed on some. `ready`:
 * sent once, first, when the database is open (a report's bound counts from then on, not from
 * this thread's start).
 */
export type ReportAnswer = { rows: UsageGroup[]; more?: boolean } | { error: string; code?: string } | { ready: true } | { written: true };

const { filename, busyTimeoutMs, stop } = workerData as { filename: string; busyTimeoutMs: number; stop: Int32Array };
// A file that cannot be opened throws here: the worker fails, and so does the report waiting on it.
const db = new Database(filename, { readonly: true, fileMustExist: true });
db.pragma(`busy_timeout = ${busyTimeoutMs}`);
parentPort!.postMessage({ ready: true } satisfies ReportAnswer);

/** The finished report's rows not yet sent, and where the next batch starts. */
let held: { rows: UsageGroup[]; next: number } | undefined;
/**
 * A key's requests being read (sqlite-request-rows.ts): a page per batch, each a statement of its
 * own with the bound, after the last row sent; nothing held between them but where to go on.
 */
let paging: { ask: RequestsAsk; after: RowAfter; timeoutMs: number } | undefined;

parentPort!.on("message", (ask: ReportAsk) => {
  if ("drop" in ask) return void (held = paging = undefined);
  if ("more" in ask) return parentPort!.postMessage(paging === undefined ? nextBatch() : nextPage(paging.ask, paging.after, paging.timeoutMs));
  held = paging = undefined;
  if ("backup" in ask) return parentPort!.postMessage(attempt((): ReportAnswer => (db.prepare("VACUUM INTO ?").run(ask.backup), { written: true })));
  if ("requests" in ask) return parentPort!.postMessage(nextPage(ask.requests, undefined, ask.timeoutMs));
  // Monotonic, and this thread's own: the wall clock may be stepped (NTP) while a report runs.
  const deadline = performance.now() + ask.timeoutMs;
  parentPort!.postMessage(attempt(() => {
    const check = checking(deadline, ask.timeoutMs);
    // A statement's lines go as rows: the store's thread knows what it asked for.
    held = { rows: "credits" in ask ? creditsStatement(db, ask.credits, check) as unknown as UsageGroup[] : "lowCredits" in ask ? sqliteLowCredits(db, ask.lowCredits, check) as unknown as UsageGroup[] : usageReport(db, ask.query, check), next: 0 };
    return nextBatch();
  }));
});

/** A statement's check: stopped by the store's thread, or past its bound. */
function checking(deadline: number, timeoutMs: number): () => void {
  return () => {
    if (Atomics.load(stop, 0) !== 0) throw new Error("the report was stopped (its asker left, or the store is closing)");
    if (performance.now() > deadline) throw new Error(`the report ran past ${timeoutMs} ms`);
  };
}

/** A page of a request's or key's rows (its own bound), `paging` set when more may follow. */
function nextPage(ask: RequestsAsk, after: RowAfter | undefined, timeoutMs: number): ReportAnswer {
  paging = undefined;
  return attempt(() => {
    const page = requestRowsPage(db, ask, after, checking(performance.now() + timeoutMs, timeoutMs));
    if (page.after !== undefined) paging = { ask, after: page.after, timeoutMs };
    // The rows cross as they are: the store's thread knows what it asked for.
    return { rows: page.rows as unknown as UsageGroup[], ...(page.after !== undefined ? { more: true } : {}) };
  });
}

/** `work`'s answer, or its failure as one (with SQLite's code: the store fails closed on some). */
function attempt(work: () => ReportAnswer): ReportAnswer {
  try {
    return work();
  } catch (e) {
    const failure = code(e);
    return { error: e instanceof Error ? `${e.name}: ${e.message}` : String(e), ...(failure !== undefined ? { code: failure } : {}) };
  }
}

function nextBatch(): ReportAnswer {
  if (held === undefined) return { error: "no report to continue" };
  const { rows, next } = held;
  const end = next + REPORT_BATCH_ROWS;
  if (end >= rows.length) {
    held = undefined;
    return { rows: next === 0 ? rows : rows.slice(next) };
  }
  held.next = end;
  return { rows: rows.slice(next, end), more: true };
}
