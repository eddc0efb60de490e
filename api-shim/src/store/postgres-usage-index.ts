import pg from "pg";
import { cutSocket, type OpenConnections } from "./postgres-connections.ts";
import { NOT_PERMITTED_CODE } from "./postgres-failures.ts";
import { LOCK_CLASS } from "./postgres-migrations.ts";
import { connectSession, type StoreSession } from "./postgres-sessions.ts";

/** What became of a replica's try at the usage rows' indexes (by time, by request id), for the log. */
export type UsageIndexOutcome =
  | { kind: "present" }
  | { kind: "built"; ms: number }
  | { kind: "stopped" }
  /** The role may not build it (it does not own the tables): not tried again by this replica. */
  | { kind: "not-permitted"; reason: string }
  /** A try failed (told as it happens; the outcome is not settled by it): the next in `retryMs`. */
  | { kind: "retrying"; reason: string; code: string | undefined; retryMs: number };

/** Told each try's failure and, once, the final outcome. */
export type UsageIndexListener = (event: UsageIndexOutcome) => void;

/**
 * The usage rows' indexes built in the background, each by name: by time (reports over all keys)
 * and by request id (GET /admin/requests/{id}: a row or two found through it, not a scan of the
 * ledger). Each built only when missing or invalid; one outcome for all.
 */
const INDEXES: readonly { name: string; columns: string }[] = [
  { name: "ledger_usage_at", columns: "at" },
  { name: "ledger_usage_ref", columns: "ref" },
];
/** Advisory-lock class of the build ("SHIM" + 1), apart from the replicas' liveness locks, which sweeps read. */
const BUILD_LOCK_CLASS = LOCK_CLASS + 1;
/** Between tries at the build lock while another replica builds. */
const LOCK_POLL_MS = 500;
/** After a try that failed for a passing reason (a restart, a lost connection, a deadlock): the wait before the next, growing to the last. */
const RETRY_MS = [1_000, 5_000, 30_000, 60_000];
/**
 * After any other failure (a DBA's temp_file_limit, a full disk): each try scans and sorts the
 * whole ledger again, so not every minute.
 */
const RETRY_OTHER_MS = 3_600_000;
/** SQLSTATEs of failures that pass: connection exceptions (08…), a shutdown or crash (57P01-57P03), a deadlock or serialization failure, too many connections, a lock not available. */
const PASSING = /^(08|57P0[123]$|40P01$|40001$|53300$|55P03$)/;
/** Node's own network errors (no SQLSTATE): a database restarting refuses, a silently cut connection's keepalive times out. */
const NETWORK = new Set(["ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "ETIMEDOUT", "EPIPE", "EHOSTUNREACH", "EHOSTDOWN", "ENETUNREACH", "ENETDOWN", "ENOTFOUND", "EAI_AGAIN"]);
/** An idle connection's first keepalive probe: a connection cut silently during a build ends in about a minute, not the OS's two hours. */
const KEEPALIVE_DELAY_MS = 10_000;

/**
 * The usage rows' index by time, so a report over all keys (the operator's, reap-expired's
 * export) reads its period rather than the whole ledger, as on SQLite (its migration 4), and by
 * request id (GET /admin/requests/{id}; SQLite's made at open). Not a schema version: a replica of
 * the previous version still opens the database, and keeps the indexes up to date. Built in
 * the background with CREATE INDEX CONCURRENTLY, outside the migrations, once per database: in
 * a migration's transaction the build held the ledger's writes (replicas still serving failed
 * their settlements after 5 s), and on a ledger of tens of millions of rows it outlasted the
 * start's bounds, so an upgrade never completed. Concurrently, writes go on meanwhile and the
 * replica serves at once; reports use the index once it is valid.
 *
 * One replica builds at a time (an advisory lock); the others try for the lock every
 * LOCK_POLL_MS and then find the index there, or take over should that replica have gone away
 * mid-build. They poll rather than wait in `pg_advisory_lock`: a session waiting in a statement
 * holds a snapshot, which the build's last phase waits for while the session waits for the build's
 * lock, a deadlock PostgreSQL ends by cancelling one of them (the build's work lost). A try that
 * fails is told to the listener (logged) and made again: soon after a failure that passes (a
 * database restart, a lost connection), an hour later after any other (a temp_file_limit, a full
 * disk: each try reads and sorts the whole ledger). A build cut short leaves an invalid index,
 * which the next try drops and builds again. A role that does not own the tables
 * cannot build it: reported once, and the store works as before.
 */
export class UsageIndexBuild {
  /** Settles once built, found, not permitted, or stopped; never rejects. */
  readonly outcome: Promise<UsageIndexOutcome>;
  private client: pg.Client | undefined;
  private stopped = false;
  /** Building: stop() cancels the statement on the server. */
  private building = false;
  private connecting: Promise<unknown> | undefined;
  /** The try's session on the server (pg_backend_pid). */
  private pid: number | undefined;
  /** Ends the current wait between tries. */
  private wake: () => void = () => {};
  private readonly connection: StoreSession;
  private readonly connections: OpenConnections;

  /**
   * `connection`: the liveness connection's settings (no statement bound on the server);
   * `connections`: the store's, so a shutdown the database does not answer cuts this one too.
   */
  constructor(connection: StoreSession, connections: OpenConnections, listener: UsageIndexListener = () => {}) {
    this.connection = connection;
    this.connections = connections;
    this.outcome = this.tries(listener);
    void this.outcome.then(listener);
  }

  private async tries(listener: UsageIndexListener): Promise<UsageIndexOutcome> {
    for (let passing = 0; ; ) {
      const outcome = await this.attempt();
      if (!("failure" in outcome)) return outcome;
      const { reason, code } = outcome.failure;
      // No code: pg's own errors for a connection that ended or timed out.
      const passes = code === undefined || PASSING.test(code) || NETWORK.has(code);
      const retryMs = passes ? RETRY_MS[Math.min(passing++, RETRY_MS.length - 1)]! : RETRY_OTHER_MS;
      if (this.stopped) return { kind: "stopped" }; // stopped while the failed try closed its connection
      listener({ kind: "retrying", reason, code, retryMs });
      await this.sleep(retryMs);
      if (this.stopped) return { kind: "stopped" };
    }
  }

  /** One try on a connection of its own; a `failure` is worth another later. */
  private async attempt(): Promise<UsageIndexOutcome | { failure: { reason: string; code: string | undefined } }> {
    // No client-side bound on the build (it takes as long as the ledger needs): the short
    // statements below carry the store's own (`bounded`), and keepalives end a connection cut
    // silently during the build.
    const { config, settings } = this.connection;
    const c = new pg.Client({ ...config, query_timeout: undefined, keepAlive: true, keepAliveInitialDelayMillis: KEEPALIVE_DELAY_MS });
    const bounded = <R extends pg.QueryResultRow>(text: string, values: unknown[] = []) =>
      c.query<R>({ text, values, query_timeout: config.query_timeout } as pg.QueryConfig);
    this.client = c;
    this.connections.add(c);
    c.on("error", () => {}); // the query that was running says what went wrong
    let failed = false;
    try {
      this.connecting = connectSession(c, settings, config.query_timeout);
      await this.connecting;
      // The server's own id of the session, to cancel its build (behind a pooler, the driver's
      // processID is the pooler's).
      this.pid = (await bounded<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid;
      if ((await missing(bounded)).length === 0) return { kind: "present" };
      // No bound on the server either: a role's or database's statement_timeout or lock_timeout
      // (a usual guard for DDL) would fail the build's waits for older transactions, a report's
      // among them, and leave an invalid index every write keeps up to date for nothing.
      await bounded("SET statement_timeout = 0; SET lock_timeout = 0");
      // A closed connection stops the build on the server within a second (PostgreSQL 14+), should
      // stop()'s cancellation not get through; otherwise it would run on to its end.
      await bounded("SET client_connection_check_interval = '1s'").catch(() => {});
      while (!(await bounded<{ ok: boolean }>("SELECT pg_try_advisory_lock($1, 0) AS ok", [BUILD_LOCK_CLASS])).rows[0]!.ok) {
        await this.sleep(LOCK_POLL_MS);
        if (this.stopped) return { kind: "stopped" };
      }
      const toBuild = await missing(bounded); // less those built meanwhile by the lock's last holder
      if (toBuild.length === 0) return { kind: "present" };
      if (this.stopped) return { kind: "stopped" };
      this.building = true;
      const started = performance.now();
      for (const { name, columns } of toBuild) {
        await c.query(`DROP INDEX CONCURRENTLY IF EXISTS ${name}`); // an invalid one, left by a build cut short
        await c.query(`CREATE INDEX CONCURRENTLY ${name} ON ledger(${columns}) WHERE kind = 'usage'`);
      }
      return { kind: "built", ms: Math.round(performance.now() - started) };
    } catch (e) {
      failed = true;
      if (this.stopped) return { kind: "stopped" };
      const code = typeof (e as { code?: unknown }).code === "string" ? ((e as { code: string }).code) : undefined;
      const reason = e instanceof Error ? e.message : String(e);
      if (code === NOT_PERMITTED_CODE) return { kind: "not-permitted", reason };
      return { failure: { reason, code } };
    } finally {
      this.building = false;
      // After a failure the connection may be cut silently: end() would wait for its close.
      if (failed) cutSocket(c);
      await c.end().catch(() => {});
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      if (this.stopped) return resolve();
      const timer = setTimeout(resolve, ms);
      timer.unref();
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  /** The store closes: a build under way is cancelled on the server (through `pool`), a wait ended, the connection closed. */
  async stop(pool: pg.Pool): Promise<void> {
    this.stopped = true;
    this.wake();
    const c = this.client;
    if (this.building && this.pid !== undefined) await pool.query("SELECT pg_cancel_backend($1)", [this.pid]).catch(() => {});
    // pg: an end() during connect() leaves connect() waiting for ever (and the outcome with it).
    await this.connecting?.catch(() => {});
    await c?.end().catch(() => {});
  }
}

/** The indexes not there or not usable (a build cut short), in INDEXES' order. */
async function missing(query: <R extends pg.QueryResultRow>(text: string, values?: unknown[]) => Promise<pg.QueryResult<R>>): Promise<typeof INDEXES> {
  const { rows } = await query<{ name: string }>("SELECT n AS name FROM unnest($1::text[]) n JOIN pg_index i ON i.indexrelid = to_regclass(n) WHERE i.indisvalid",
    [INDEXES.map((i) => i.name)]);
  const usable = new Set(rows.map((r) => r.name));
  return INDEXES.filter((i) => !usable.has(i.name));
}
