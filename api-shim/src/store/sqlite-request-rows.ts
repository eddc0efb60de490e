import type Database from "better-sqlite3";
import { type RequestRow, type RequestsQuery, requestsSqliteSql, type RowAfter } from "./request-rows.ts";
import { REPORT_BATCH_ROWS } from "./usage-batches.ts";

/** A request's rows, or a key's, as they cross to the report worker (no signal). */
export type RequestsAsk = Omit<RequestsQuery, "signal" | "asker">;

/** A batch of rows and, when more may follow, the row after which the next starts. */
export interface RequestsPage { rows: RequestRow[]; after?: RowAfter }

/**
 * The SQLite store's rows for `q`: a request id's in one batch (a few rows, through the usage
 * rows' index by id: sqlite-migrations.ts), a key's period one page of REPORT_BATCH_ROWS after
 * `after` (request-rows.ts says why by pages). Each page is a statement of its own, so a slow
 * reader holds no read snapshot (the WAL checkpoints past it) and the worker holds no rows for it.
 * `check` ends the statement by throwing (the worker's stop and bound), as in a usage report.
 */
export function requestRowsPage(db: Database.Database, q: RequestsAsk, after: RowAfter | undefined, check: () => void = () => {}): RequestsPage {
  db.function("shim_report_check", () => {
    check();
    return 1;
  });
  check();
  const statement = db.prepare<Record<string, unknown>, RequestRow>(requestsSqliteSql(q, REPORT_BATCH_ROWS));
  if (q.requestId !== null) return { rows: statement.all(q.keyId === null ? { requestId: q.requestId } : { requestId: q.requestId, keyId: q.keyId }) };
  const rows = statement.all({ keyId: q.keyId, from: q.from, to: q.to, afterAt: after?.at ?? -1, afterId: after?.id ?? -1 });
  const last = rows.at(-1);
  return rows.length < REPORT_BATCH_ROWS || last === undefined ? { rows } : { rows, after: { at: last.at, id: last.rowId } };
}

/** Every page of `q` at once: an in-memory database's (its reports run in the store's thread; the tests'). */
export function allRequestRows(db: Database.Database, q: RequestsAsk): RequestRow[] {
  const rows: RequestRow[] = [];
  for (let page: RequestsPage | undefined; page === undefined || page.after !== undefined; ) {
    page = requestRowsPage(db, q, page?.after);
    rows.push(...page.rows);
  }
  return rows;
}
