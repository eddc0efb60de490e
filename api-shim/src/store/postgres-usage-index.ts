import pg from "pg";
import type { OpenConnections } from "./postgres-connections.ts";
import { LOCK_CLASS } from "./postgres-migrations.ts";

/** What became of a replica's try at the usage rows' time index, for the log. */
export type UsageIndexOutcome =
  | { kind: "present" }
  | { kind: "built"; ms: number }
  | { kind: "stopped" }
  /** The role may not build it (it does not own the tables): not tried again by this replica. */
  | { kind: "not-permitted"; reason: string };

const INDEX = "ledger_usage_at";
/** Advisory-lock class of the build ("SHIM" + 1), apart from the replicas' liveness locks, which sweeps read. */
const BUILD_LOCK_CLASS = LOCK_CLASS + 1;
/** Between tries at the build lock while another replica builds. */
const LOCK_POLL_MS = 500;
/** After a failed try (the database restarted, a deadlock, a lost connection): the wait before the next, growing to the last. */
const RETRY_MS = [1_000, 5_000, 30_000, 60_000];
/** SQLSTATE insufficient_privilege: "must be owner of table ledger". */
const NOT_PERMITTED = "42501";

/**
 * The usage rows' index by time, so a report over all keys (the operator's, reap-expired's
 * export) reads its period rather than the whole ledger, as on SQLite (its migration 4). Built in
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
 * fails (a database restart, a lost connection) is made again, later; a build cut short leaves an
 * invalid index, which the next try drops and builds again. A role that does not own the tables
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
  /** Ends the current wait between tries. */
  private wake: () => void = () => {};
  private readonly connection: pg.ClientConfig;
  private readonly connections: OpenConnections;

  /**
   * `connection`: the liveness connection's settings (no statement bound on the server);
   * `connections`: the store's, so a shutdown the database does not answer cuts this one too.
   */
  constructor(connection: pg.ClientConfig, connections: OpenConnections) {
    this.connection = connection;
    this.connections = connections;
    this.outcome = this.tries();
  }

  private async tries(): Promise<UsageIndexOutcome> {
    for (let attempt = 0; ; attempt++) {
      const outcome = await this.attempt();
      if (outcome !== null) return outcome;
      await this.sleep(RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)]!);
      if (this.stopped) return { kind: "stopped" };
    }
  }

  /** One try on a connection of its own; null: it failed, and is worth another later. */
  private async attempt(): Promise<UsageIndexOutcome | null> {
    // No client-side bound: a build takes as long as the ledger needs.
    const c = new pg.Client({ ...this.connection, query_timeout: undefined });
    this.client = c;
    this.connections.add(c);
    c.on("error", () => {}); // the query that was running says what went wrong
    try {
      this.connecting = c.connect();
      await this.connecting;
      if (await valid(c)) return { kind: "present" };
      // No bound on the server either: a role's or database's statement_timeout or lock_timeout
      // (a usual guard for DDL) would fail the build's waits for older transactions, a report's
      // among them, and leave an invalid index every write keeps up to date for nothing.
      await c.query("SET statement_timeout = 0; SET lock_timeout = 0");
      // A closed connection stops the build on the server within a second (PostgreSQL 14+), should
      // stop()'s cancellation not get through; otherwise it would run on to its end.
      await c.query("SET client_connection_check_interval = '1s'").catch(() => {});
      while (!(await c.query<{ ok: boolean }>("SELECT pg_try_advisory_lock($1, 0) AS ok", [BUILD_LOCK_CLASS])).rows[0]!.ok) {
        await this.sleep(LOCK_POLL_MS);
        if (this.stopped) return { kind: "stopped" };
      }
      if (await valid(c)) return { kind: "present" }; // built meanwhile by the lock's last holder
      if (this.stopped) return { kind: "stopped" };
      this.building = true;
      const started = Date.now();
      await c.query(`DROP INDEX CONCURRENTLY IF EXISTS ${INDEX}`); // an invalid one, left by a build cut short
      await c.query(`CREATE INDEX CONCURRENTLY ${INDEX} ON ledger(at) WHERE kind = 'usage'`);
      return { kind: "built", ms: Date.now() - started };
    } catch (e) {
      if (this.stopped) return { kind: "stopped" };
      if ((e as { code?: unknown }).code === NOT_PERMITTED) return { kind: "not-permitted", reason: (e as Error).message };
      return null;
    } finally {
      this.building = false;
      await c.end().catch(() => {});
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
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
    const pid = (c as unknown as { processID?: number } | undefined)?.processID;
    if (this.building && pid !== undefined) await pool.query("SELECT pg_cancel_backend($1)", [pid]).catch(() => {});
    // pg: an end() during connect() leaves connect() waiting for ever (and the outcome with it).
    await this.connecting?.catch(() => {});
    await c?.end().catch(() => {});
  }
}

/** Whether the index is there and usable. */
async function valid(c: pg.Client): Promise<boolean> {
  const { rows } = await c.query<{ valid: boolean }>("SELECT indisvalid AS valid FROM pg_index WHERE indexrelid = to_regclass($1)", [INDEX]);
  return rows[0]?.valid === true;
}
