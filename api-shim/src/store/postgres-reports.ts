import { randomUUID } from "node:crypto";
import type pg from "pg";
import { rejectOnAbort } from "../promises.ts";
import { KeyedTurns, Turns } from "./turns.ts";
import { REPORTED_SQL, StoreUnavailableError, type UsageGroup, type UsageQuery } from "./store.ts";

/** The bound on a usage report's statement (the request path's is the store's timeoutMs). */
const REPORT_TIMEOUT_MS = 60_000;
/**
 * Reports running at once, so requests keep the rest of the pool of 10; and waiting, beyond
 * which a report is refused at once (ReportsBusyError, a 429). Each asking key's reports wait in
 * a line of their own, one at a time taking a shared turn (as the SQLite store's), so a key
 * sending reports in a loop cannot fill the queue, and two widgets of a dashboard asking at once
 * both get their answer; the operator's (/admin/usage, of one key or all, as reap-expired's
 * export) have a line and turns of their own (UsageQuery.asker), so no key's reports hold them up.
 */
const CONCURRENT_REPORTS = 2;
const WAITING_REPORTS = 8;
/**
 * Leads a report's SQL, with an id of its own, so a cancellation finds that report's statement and
 * nothing else: a cancellation that waited for a pool connection may run after its report ended
 * and another report started on the same backend.
 */
const reportMark = () => `/* shim usage report ${randomUUID()} */`;

/**
 * A report's statement: $1 and $2 the period, $3 the key (a report of one key). Through the
 * ledger's indexes: (key_id, at) for one key, the usage rows' (at) for all keys (once built:
 * postgres-usage-index.ts).
 */
export function reportSql(q: Pick<UsageQuery, "keyId" | "group">): string {
  const day = q.group === "day";
  return `SELECT key_id AS "keyId", ${day ? "at / 86400000" : "model"} AS "group", count(*) AS requests,
      sum(prompt_tokens)::bigint AS "promptTokens", sum(completion_tokens)::bigint AS "completionTokens", (-sum(amount))::bigint AS cost
    FROM ledger WHERE kind = 'usage' AND ${REPORTED_SQL} AND at >= $1 AND at < $2 ${q.keyId === null ? "" : "AND key_id = $3"}
    GROUP BY 1, 2 ORDER BY key_id COLLATE "C", ${day ? "2" : 'model COLLATE "C"'}`;
}

/**
 * The Postgres store's usage reports: their turns, their statement bound, and their end when the
 * asker no longer wants them (it left, the drain was cut) or the store closes. A report's
 * statement may run for up to a minute: left running, it kept its pooled connection, and a
 * shutdown's pool.end() waited for it past Compose's 30 s grace. It is cancelled on the server
 * instead (pg_cancel_backend), so the connection comes back to the pool at once.
 */
export class UsageReports {
  private readonly shared = new Turns(CONCURRENT_REPORTS, WAITING_REPORTS);
  /** Each asker's reports (null: the operator's) one at a time, the next ones waiting (up to WAITING_REPORTS). */
  private readonly lines = new KeyedTurns<string | null>(WAITING_REPORTS);
  /** Aborted by cancelAll (the store is closing). */
  private readonly closing = new AbortController();
  /** Cancellations sent and not yet answered. */
  private readonly cancelling = new Set<Promise<unknown>>();
  private readonly pool: pg.Pool;
  private readonly tx: <T>(fn: (c: pg.PoolClient) => Promise<T>) => Promise<T>;

  /** `tx` runs one transaction on a pooled connection (the store's). */
  constructor(pool: pg.Pool, tx: <T>(fn: (c: pg.PoolClient) => Promise<T>) => Promise<T>) {
    this.pool = pool;
    this.tx = tx;
  }

  /**
   * Days are grouped as integers (UTC day numbers, formatted here) rather than by formatting a
   * timestamp per row: a month of one busy key is tens of millions of rows. Rejects with the
   * signal's reason as soon as it aborts, whether the report waits for its turn or runs.
   */
  run(q: UsageQuery): Promise<UsageGroup[]> {
    const day = q.group === "day";
    const mark = reportMark();
    const sql = `${mark} ${reportSql(q)}`;
    const values = q.keyId === null ? [q.from, q.to] : [q.from, q.to, q.keyId];
    const { asker } = q;
    const signal = q.signal ? AbortSignal.any([q.signal, this.closing.signal]) : this.closing.signal;
    // The key's report ends when its statement does (a cancelled one within a round trip).
    // The days are labelled after COMMIT, not inside the transaction: for a year of thousands of
    // keys that is seconds of work, and the session idle in its transaction meanwhile met the
    // store's idle_in_transaction_session_timeout (5 s), failing the report 503 (seen once,
    // under load). The report's own bound covers the rest of its transaction too.
    const statement = async () => {
      const rows = await this.tx(async (c) => {
        await c.query(`SET LOCAL statement_timeout = ${REPORT_TIMEOUT_MS}`);
        await c.query(`SET LOCAL idle_in_transaction_session_timeout = ${REPORT_TIMEOUT_MS}`);
        return this.cancellable(c, mark, { text: sql, values, query_timeout: REPORT_TIMEOUT_MS + 1000 } as pg.QueryConfig, signal);
      });
      return day ? rows.map((r) => ({ ...r, group: new Date(Number(r.group) * 86_400_000).toISOString().slice(0, 10) })) : rows;
    };
    // A key's own report, in its line's turn, takes one of the shared turns; the operator's have their line alone.
    const work = this.lines.run(asker, () => (asker === null ? statement() : this.shared.run(statement, signal)), signal);
    return rejectOnAbort(work, signal);
  }

  /** Runs the report's statement on `c`; cancels it on the server if `signal` aborts meanwhile. */
  private async cancellable(c: pg.PoolClient, mark: string, query: pg.QueryConfig, signal: AbortSignal): Promise<UsageGroup[]> {
    signal.throwIfAborted();
    let running = true;
    const cancel = () => {
      if (!running) return;
      // The session is found by the report's mark alone, while it still runs this report: the
      // connection may be a request's, or another report's, by the time the cancellation has a
      // connection of its own. Not by the driver's processID: behind a pooler (PgBouncer) that is
      // the pooler's, and asking the server for its own (pg_backend_pid) costs each report a round trip.
      const sent = this.pool.query(`SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1`, [`${mark}%`])
        .catch(() => {}) // unreachable: the statement's own bound ends it
        .finally(() => this.cancelling.delete(sent));
      this.cancelling.add(sent);
    };
    signal.addEventListener("abort", cancel, { once: true });
    try {
      return (await c.query<UsageGroup>(query)).rows;
    } finally {
      running = false;
      signal.removeEventListener("abort", cancel);
    }
  }

  /** The store is closing: running reports are cancelled, waiting ones give up; resolves once the cancellations were answered. */
  async cancelAll(): Promise<void> {
    this.closing.abort(new StoreUnavailableError(new Error("the store is closing")));
    await Promise.allSettled([...this.cancelling]);
  }
}
