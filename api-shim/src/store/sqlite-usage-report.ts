import type Database from "better-sqlite3";
import { addPriceCounts, byPrice, priceSliceSql, withPrices } from "./sqlite-price-report.ts";
import { REPORTED_SQL, type UsageGroup, type UsageQuery } from "./store.ts";

/** A usage report's question without its signal: what crosses to the report worker. */
export type ReportQuery = Omit<UsageQuery, "signal" | "asker">;

/**
 * Rows aggregated by one statement. SQLite sorts a statement's rows for GROUP BY after reading
 * them, and nothing interrupts that sort (about a third of a report's time): in slices this
 * large, a report stops within one slice's sort (~20 ms) of being told to.
 */
export const SLICE_ROWS = 65_536;

/**
 * The SQLite store's usage report, the one place of its SQL: run on the report worker's
 * connection for a database file (sqlite-report-worker.ts), in the store's thread for an
 * in-memory one. Period-bounded through the ledger's indexes: (key_id, at) for a key's report,
 * the usage rows' (at) for a report over all keys (migration 4).
 *
 * `check` runs about every 4,096 rows a statement reads and between slices, and ends the report
 * by throwing: how the worker stops a report nobody waits for any more, or one past its time.
 * better-sqlite3 runs a statement in native code, which neither a message nor a worker's
 * terminate() interrupts; a function of the statement's own is called back in JavaScript.
 *
 * The period is read in slices of SLICE_ROWS rows by time (each ends where the next begins: the
 * `at` of the row SLICE_ROWS on, read from the index), each aggregated by SQL and added up here.
 * Day groups do not straddle slices wrongly: a row's day depends on its own `at` only.
 */
export function usageReport(db: Database.Database, q: ReportQuery, check: () => void = () => {}): UsageGroup[] {
  db.function("shim_report_check", () => {
    check();
    return 1;
  });
  const sql = reportSql(q);
  const sliceEnd = db.prepare<ReportQuery, number>(sql.sliceEnd).pluck();
  const slice = db.prepare<ReportQuery, UsageGroup>(sql.slice);
  const groups = new Map<string, UsageGroup>();
  // One read transaction: every slice reads the ledger as of the same moment, as one statement did.
  db.transaction(() => {
    for (let from = q.from; from < q.to; ) {
      check();
      // More than SLICE_ROWS rows in one millisecond: that millisecond is a slice of its own.
      const to = Math.max(sliceEnd.get({ ...q, from }) ?? q.to, from + 1);
      for (const g of slice.all({ ...q, from, to })) {
        const id = JSON.stringify([g.keyId, g.group, g.model, g.priceId]);
        const sum = groups.get(id);
        if (sum === undefined) groups.set(id, g);
        else {
          sum.requests += g.requests;
          sum.promptTokens += g.promptTokens;
          sum.completionTokens += g.completionTokens;
          sum.cost += g.cost;
          if (q.group === "model,price") addPriceCounts(sum, g);
        }
      }
      from = to;
    }
    if (q.group === "model,price") withPrices(db, groups.values());
  })();
  return [...groups.values()].sort((a, b) => byteOrder(a.keyId, b.keyId) || byteOrder(a.group, b.group) || byteOrder(a.model ?? null, b.model ?? null) || byPrice(a, b));
}

/**
 * The report's two statements (named parameters: the query's, `from` and `to` a slice's): where
 * a slice ends, and a slice's groups. They call shim_report_check, which usageReport defines.
 */
export function reportSql(q: Pick<ReportQuery, "keyId" | "group">): { sliceEnd: string; slice: string } {
  const day = "strftime('%Y-%m-%d', at / 1000, 'unixepoch')";
  // By day and model: the day is the group, the model a column of its own (UsageGroup.model).
  const [dim, more] = q.group === "model" ? ["model", ""] : [day, q.group === "day,model" ? ", model" : ""];
  const rows = `at >= @from AND at < @to AND ${q.keyId === null ? "kind = 'usage'" : "key_id = @keyId"} AND (id & 4095 <> 0 OR shim_report_check())`;
  // From the index alone (key_id, at or the usage rows' at; id is the rowid): a key's top-ups
  // count towards its slices' size too, which only makes them a little smaller.
  const sliceEnd = `SELECT at FROM ledger WHERE ${rows} ORDER BY at LIMIT 1 OFFSET ${SLICE_ROWS}`;
  if (q.group === "model,price") return { sliceEnd, slice: priceSliceSql(rows) }; // sqlite-price-report.ts
  return {
    sliceEnd,
    slice: `SELECT key_id AS keyId, ${dim} AS "group"${more}, count(*) AS requests,
        sum(prompt_tokens) AS promptTokens, sum(completion_tokens) AS completionTokens, -sum(amount) AS cost
      FROM ledger WHERE ${rows} AND kind = 'usage' AND ${REPORTED_SQL} GROUP BY key_id, "group"${more}`,
  };
}

/** SQLite's BINARY collation (UTF-8 bytes; NULL first), as ORDER BY key_id, "group" sorted. */
function byteOrder(a: string | null, b: string | null): number {
  if (a === b) return 0;
  if (a === null) return -1;
  if (b === null) return 1;
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}
