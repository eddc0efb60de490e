import { randomUUID } from "node:crypto";
import type pg from "pg";
import { rejectOnAbort } from "../promises.ts";
import { priceReportSql } from "./postgres-price-report.ts";
import { reportCursor } from "./postgres-report-cursor.ts";
import { allRows, openReport, REPORT_TIMEOUT_MS, type ReportOpening } from "./report-reader.ts";
import { KeyedTurns, Turns } from "./turns.ts";
import { type RequestRow, type RequestsQuery, requestsPgSql, requestsPgValues } from "./request-rows.ts";
import { type KeyCredits, type LowCreditsQuery, lowCreditsSql } from "./low-credits.ts";
import { creditsColumns, creditsLine, type CreditsLine, type CreditsQuery, type CreditsRow, entryColumns, grantRows, topUpRows, writeOffRows } from "./credits-statement.ts";
import { REPORTED_SQL, StoreUnavailableError, type UsageGroup, type UsageQuery } from "./store.ts";
import { firstAndRest, REPORT_BATCH_ROWS, type UsageRest, type UsageRows } from "./usage-batches.ts";

/**
 * How long a report's reader may take nothing (no batch asked for, no byte taken by its client's
 * socket: usage-body.ts) before the report is given up: the SQLite store's bound
 * (sqlite-reports.ts), so a client that keeps its connection open and reads nothing holds neither
 * a connection nor a turn for longer than a long report would.
 */
const IDLE_MS = REPORT_TIMEOUT_MS;
/**
 * The server's bound on the report's transaction left idle (idle_in_transaction_session_timeout)
 * is the reader's bound and this much more: the shim gives an idle report up first (and its
 * connection back, whole); the server's ends a session the shim has lost track of (a process
 * stopped in a debugger, a network cut), since the store's own 5 s would cut any report whose
 * reader takes a few seconds over a batch (a slow link). The server counts from the report's last
 * statement, the shim from its reader's last progress: a reader taking a batch slowly but steadily
 * asks for the next one minutes after the last FETCH. So while its reader makes progress, the
 * cursor runs a statement that reads nothing (`SELECT 1`) once half this margin has passed since
 * the last one (at its reader's touch(): postgres-report-cursor.ts): the server's bound then
 * always ends more than half the margin after the shim's, which alone decides when a live shim's
 * report is given up.
 */
const SERVER_IDLE_MARGIN_MS = 10_000;
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
  if (q.group === "model,price") return priceReportSql(q.keyId);
  const day = q.group !== "model";
  // By day and model: the day is the group, the model a column of its own (UsageGroup.model).
  const model = q.group === "day,model";
  return `SELECT key_id AS "keyId", ${day ? "at / 86400000" : "model"} AS "group"${model ? ", model" : ""}, count(*) AS requests,
      sum(prompt_tokens)::bigint AS "promptTokens", sum(completion_tokens)::bigint AS "completionTokens", (-sum(amount))::bigint AS cost
    FROM ledger WHERE kind = 'usage' AND ${REPORTED_SQL} AND at >= $1 AND at < $2 ${q.keyId === null ? "" : "AND key_id = $3"}
    GROUP BY 1, 2${model ? ", 3" : ""} ORDER BY key_id COLLATE "C", ${day ? "2" : 'model COLLATE "C"'}${model ? ', model COLLATE "C"' : ""}`;
}

/**
 * A credits statement's SQL: $1 and $2 the period, $3 the key (a statement of one key). Every
 * ledger row before $2 is read once, through (key_id, at) for one key.
 */
export function creditsSql(q: Pick<CreditsQuery, "keyId">): string {
  return `SELECT l.key_id AS "keyId", k.name, ${creditsColumns("$1", (sum) => `(${sum})::bigint`)},
      coalesce(json_agg(${entryColumns("json_build_object")} ORDER BY l.at, l.id) FILTER (WHERE ${grantRows("$1")}), '[]') AS grants,
      coalesce(json_agg(${entryColumns("json_build_object")} ORDER BY l.at, l.id) FILTER (WHERE ${topUpRows("$1")}), '[]') AS "topUps",
      coalesce(json_agg(${entryColumns("json_build_object", "-")} ORDER BY l.at, l.id) FILTER (WHERE ${writeOffRows("$1")}), '[]') AS "writeOffs"
    FROM ledger l JOIN keys k ON k.id = l.key_id WHERE l.at < $2 ${q.keyId === null ? "" : "AND l.key_id = $3"}
    GROUP BY l.key_id, k.name ORDER BY l.key_id COLLATE "C"`;
}

/** Tests' bounds (the store's are the defaults). */
export interface UsageReportsOptions {
  /** The reader's bound: IDLE_MS. */
  idleMs?: number;
  /** The server's idle bound past the reader's: SERVER_IDLE_MARGIN_MS. */
  serverIdleMarginMs?: number;
}

/**
 * The Postgres store's usage reports: their turns, their statement bound, their reading in
 * batches, and their end when the asker no longer wants them (it left, the drain was cut) or the
 * store closes. A report's statement may run for up to a minute: left running, it kept its pooled
 * connection, and a shutdown's pool.end() waited for it past Compose's 30 s grace. It is cancelled
 * on the server instead (pg_cancel_backend), so the connection comes back to the pool at once.
 *
 * A report is a cursor (DECLARE … WITHOUT HOLD) in a transaction of its own, read
 * REPORT_BATCH_ROWS rows at a time as its reader asks for them (postgres-report-cursor.ts): its
 * connection and its turn are held until its last batch is fetched, or its reader gives up (return(), its asker gone, its
 * idle bound passed), or the store closes; the transaction then commits (or rolls back after a
 * failed statement), giving the connection back to the pool.
 */
export class UsageReports {
  private readonly shared = new Turns(CONCURRENT_REPORTS, WAITING_REPORTS);
  /** Each asker's reports (null: the operator's) one at a time, the next ones waiting (up to WAITING_REPORTS). */
  private readonly lines = new KeyedTurns<string | null>(WAITING_REPORTS);
  /** Aborted by cancelAll (the store is closing). */
  private readonly closing = new AbortController();
  /** Cancellations sent and not yet answered. */
  private readonly cancelling = new Set<Promise<unknown>>();
  /** Reports waiting or under way, settled once their connection is back in the pool (or given up). */
  private readonly running = new Set<Promise<unknown>>();
  private readonly pool: pg.Pool;
  private readonly tx: <T>(fn: (c: pg.PoolClient) => Promise<T>) => Promise<T>;
  private readonly idleMs: number;
  private readonly serverIdleMarginMs: number;

  /** `tx` runs one transaction on a pooled connection (the store's). */
  constructor(pool: pg.Pool, tx: <T>(fn: (c: pg.PoolClient) => Promise<T>) => Promise<T>, options: UsageReportsOptions = {}) {
    this.pool = pool;
    this.tx = tx;
    this.idleMs = options.idleMs ?? IDLE_MS;
    this.serverIdleMarginMs = options.serverIdleMarginMs ?? SERVER_IDLE_MARGIN_MS;
  }

  /**
   * The report's rows: every row (read batch by batch, then answered whole: /v1/usage's small
   * reports, the tests), or, asked with `batched`, as UsageRows (its first batch and the rest).
   * Rejects with the signal's reason as soon as it aborts, whether the report waits for its turn
   * or runs.
   */
  run(q: UsageQuery): Promise<UsageGroup[]> {
    const opening = openReport(q.signal, this.closing.signal);
    const batches = this.batches(q, opening);
    return q.batched ? batches.then(firstAndRest) : rejectOnAbort(batches.then(allRows), opening.signal);
  }

  /**
   * The report, once its turn comes, as batches: resolves with its first batch in hand (so a
   * failure of its statement is still a status of its own), the opening's signal (the asker's and
   * the store's closing) ending it. Days are grouped as integers (UTC
   * day numbers, labelled per batch by the cursor's reader) rather than by formatting a timestamp
   * per row: a month of one busy key is tens of millions of rows.
   */
  private batches(q: UsageQuery, opening: ReportOpening): Promise<UsageRest> {
    const values = q.keyId === null ? [q.from, q.to] : [q.from, q.to, q.keyId];
    return this.statement(q.asker, reportSql(q), values, q.group !== "model" && q.group !== "model,price", opening);
  }

  /**
   * A credits statement (credits-statement.ts), as a report: in the operator's line, with its
   * bound, cancelled when its asker leaves. One line per key: it comes in one FETCH or a few.
   */
  credits(q: CreditsQuery): Promise<CreditsLine[]> {
    const opening = openReport(q.signal, this.closing.signal);
    const values = q.keyId === null ? [q.from, q.to] : [q.from, q.to, q.keyId];
    // The cursor's rows are the statement's lines (its bigints come as numbers: postgres-client.ts).
    const rows = (this.statement(q.asker, creditsSql(q), values, false, opening).then(allRows) as Promise<unknown> as Promise<CreditsRow[]>).then((r) => r.map(creditsLine));
    return rejectOnAbort(rows, opening.signal);
  }

  /** Each active key's credits this month (low-credits.ts), as the operator's report: its line, its bound. */
  lowCredits(q: LowCreditsQuery): Promise<KeyCredits[]> {
    const opening = openReport(undefined, this.closing.signal);
    const rows = this.statement(null, lowCreditsSql("$1", "$2", (sum) => `(${sum})::bigint`, ' COLLATE "C"'), [q.from, q.now], false, opening).then(allRows) as Promise<unknown> as Promise<KeyCredits[]>;
    return rejectOnAbort(rows, opening.signal);
  }

  /** A request's ledger rows, or a key's requests (request-rows.ts), read through a cursor as a report's. */
  requests(q: RequestsQuery): Promise<UsageRows<RequestRow>> {
    const opening = openReport(q.signal, this.closing.signal);
    const rest = this.statement(q.asker, requestsPgSql(q), requestsPgValues(q), false, opening) as Promise<unknown> as Promise<UsageRest<RequestRow>>;
    return rest.then(firstAndRest);
  }

  /** A report's statement (`sql`, its `values`) read through a cursor in its asker's line; `day`: its groups are day numbers. */
  private statement(asker: string | null, sql: string, values: unknown[], day: boolean, opening: ReportOpening): Promise<UsageRest> {
    const mark = reportMark();
    const { signal } = opening;
    const report = () => this.tx(async (c) => {
      // Bounds for this transaction alone: each statement (the first FETCH runs the grouping and
      // sort) has the report's bound; idle between statements, the reader's (the cursor's) and a
      // margin (SERVER_IDLE_MARGIN_MS). The planner plans for every row (a cursor's default is
      // for the first tenth), as for the single statement a report was.
      await c.query(`SET LOCAL statement_timeout = ${REPORT_TIMEOUT_MS}; SET LOCAL idle_in_transaction_session_timeout = ${this.idleMs + this.serverIdleMarginMs}; SET LOCAL cursor_tuple_fraction = 1`);
      await this.cancellable(c, mark, { text: `${mark} DECLARE report NO SCROLL CURSOR WITHOUT HOLD FOR ${sql}`, values }, signal);
      const cursor = reportCursor({
        fetch: () => this.cancellable(c, mark, { text: `${mark} FETCH ${REPORT_BATCH_ROWS} FROM report` }, signal),
        keepAlive: () => this.cancellable(c, mark, { text: `${mark} SELECT 1` }, signal),
        keepAliveMs: this.serverIdleMarginMs / 2,
        rows: REPORT_BATCH_ROWS, day, idleMs: this.idleMs, signal,
      });
      await opening.read(cursor);
      await cursor.done; // the transaction ends (COMMIT, or ROLLBACK when a FETCH failed), and the turn passes on
    });
    // A key's own report, in its line's turn, takes one of the shared turns; the operator's have their line alone.
    const work = this.lines.run(asker, () => (asker === null ? report() : this.shared.run(report, signal)), signal);
    this.running.add(work);
    void work.catch(() => {}).finally(() => this.running.delete(work));
    return opening.batches(work);
  }

  /** Runs one statement of the report on `c`; cancels it on the server if `signal` aborts meanwhile. */
  private async cancellable(c: pg.PoolClient, mark: string, query: pg.QueryConfig, signal: AbortSignal): Promise<UsageGroup[]> {
    signal.throwIfAborted();
    let running = true;
    const cancel = () => {
      if (!running) return;
      // The session is found by the report's mark alone, while it still runs this report's
      // statement (each of them, FETCH too, leads with it): the connection may be a request's, or
      // another report's, by the time the cancellation has a connection of its own. Not by the
      // driver's processID: behind a pooler (PgBouncer) that is the pooler's, and asking the
      // server for its own (pg_backend_pid) costs each report a round trip.
      const sent = this.pool.query(`SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1`, [`${mark}%`])
        .catch(() => {}) // unreachable: the statement's own bound ends it
        .finally(() => this.cancelling.delete(sent));
      this.cancelling.add(sent);
    };
    signal.addEventListener("abort", cancel, { once: true });
    try {
      return (await c.query<UsageGroup>({ ...query, query_timeout: REPORT_TIMEOUT_MS + 1000 } as pg.QueryConfig)).rows;
    } finally {
      running = false;
      signal.removeEventListener("abort", cancel);
    }
  }

  /**
   * The store is closing: running reports are cancelled, waiting ones give up, and those between
   * batches are given up; resolves once the cancellations were answered and the reports' connections are back.
   */
  async cancelAll(): Promise<void> {
    this.closing.abort(new StoreUnavailableError(new Error("the store is closing")));
    await Promise.allSettled([...this.cancelling, ...this.running]);
  }
}
