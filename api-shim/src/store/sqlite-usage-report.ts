import type Database from "better-sqlite3";
import type { UsageGroup, UsageQuery } from "./store.ts";

/** A usage report's question without its signal: what crosses to the report worker. */
export type ReportQuery = Omit<UsageQuery, "signal">;

/**
 * The SQLite store's usage report, the one place of its SQL: run on the report worker's
 * connection for a database file (sqlite-report-worker.ts), in the store's thread for an
 * in-memory one. Period-bounded through the ledger's indexes: (key_id, at) for a key's report,
 * the usage rows' (at) for a report over all keys (migration 4).
 *
 * `check` runs about every 4,096 rows the scan reads, and ends the statement by throwing: how the
 * worker stops a report nobody waits for any more, or one past its time. better-sqlite3 runs a
 * statement in native code, which neither a message nor a worker's terminate() interrupts; a
 * function of the statement's own is called back in JavaScript.
 */
export function usageReport(db: Database.Database, q: ReportQuery, check: () => void = () => {}): UsageGroup[] {
  db.function("shim_report_check", () => {
    check();
    return 1;
  });
  const dim = q.group === "day" ? "strftime('%Y-%m-%d', at / 1000, 'unixepoch')" : "model";
  const sql = `SELECT key_id AS keyId, ${dim} AS "group", count(*) AS requests,
      sum(prompt_tokens) AS promptTokens, sum(completion_tokens) AS completionTokens, -sum(amount) AS cost
    FROM ledger WHERE kind = 'usage' AND (amount <> 0 OR status < 400) AND at >= @from AND at < @to ${q.keyId === null ? "" : "AND key_id = @keyId"}
      AND (id & 4095 <> 0 OR shim_report_check())
    GROUP BY key_id, "group" ORDER BY key_id, "group"`;
  return db.prepare<ReportQuery, UsageGroup>(sql).all(q);
}
