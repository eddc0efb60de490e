import pg from "pg";
import type { OpenConnections } from "./postgres-connections.ts";
import { LOCK_CLASS } from "./postgres-migrations.ts";

/** What became of a replica's try at the usage rows' time index, for the log. */
export type UsageIndexOutcome =
  | { kind: "present" }
  | { kind: "built"; ms: number }
  | { kind: "stopped" }
  | { kind: "failed"; reason: string };

const INDEX = "ledger_usage_at";
/** Advisory-lock class of the build ("SHIM" + 1), apart from the replicas' liveness locks, which sweeps read. */
const BUILD_LOCK_CLASS = LOCK_CLASS + 1;

/**
 * The usage rows' index by time, so a report over all keys (the operator's, reap-expired's
 * export) reads its period rather than the whole ledger, as on SQLite (its migration 4). Built in
 * the background with CREATE INDEX CONCURRENTLY, outside the migrations, once per database: in
 * a migration's transaction the build held the ledger's writes (replicas still serving failed
 * their settlements after 5 s), and on a ledger of tens of millions of rows it outlasted the
 * start's bounds, so an upgrade never completed. Concurrently, writes go on meanwhile and the
 * replica serves at once; reports use the index once it is valid.
 *
 * One replica builds at a time (an advisory lock); the others wait for it and find it there, or
 * take over should that replica go away mid-build.
 * A build cut short (the store closed, the server restarted) leaves an invalid index, which the
 * next try drops and builds again. A role with data rights only cannot build it: reported, and
 * the store works as before.
 */
export class UsageIndexBuild {
  /** Settles once the try is over; never rejects. */
  readonly outcome: Promise<UsageIndexOutcome>;
  private readonly client: pg.Client;
  private stopped = false;
  /** Waiting for the build lock or building: stop() cancels the statement on the server. */
  private working = false;
  private connecting: Promise<unknown> | undefined;

  /**
   * `connection`: the liveness connection's settings (no statement bound on the server);
   * `connections`: the store's, so a shutdown the database does not answer cuts this one too.
   */
  constructor(connection: pg.ClientConfig, connections: OpenConnections) {
    // No client-side bound: a build takes as long as the ledger needs.
    this.client = new pg.Client({ ...connection, query_timeout: undefined });
    connections.add(this.client);
    this.client.on("error", () => {}); // the query that was running says what went wrong
    this.outcome = this.run().finally(() => this.client.end().catch(() => {}));
  }

  private async run(): Promise<UsageIndexOutcome> {
    const c = this.client;
    try {
      this.connecting = c.connect();
      await this.connecting;
      if (await this.valid()) return { kind: "present" };
      // No bound on the server either: a role's or database's statement_timeout or lock_timeout
      // (a usual guard for DDL) would fail the build's waits for older transactions, a report's
      // among them, and leave an invalid index every write keeps up to date for nothing.
      await c.query("SET statement_timeout = 0; SET lock_timeout = 0");
      // A closed connection stops the build on the server within a second (PostgreSQL 14+), should
      // stop()'s cancellation not get through; otherwise it would run on to its end.
      await c.query("SET client_connection_check_interval = '1s'").catch(() => {});
      if (this.stopped) return { kind: "stopped" };
      this.working = true;
      // Waits for a replica building it: should that one go away mid-build, this one takes over.
      await c.query("SELECT pg_advisory_lock($1, 0)", [BUILD_LOCK_CLASS]);
      if (await this.valid()) return { kind: "present" }; // built meanwhile by the lock's last holder
      const started = Date.now();
      await c.query(`DROP INDEX CONCURRENTLY IF EXISTS ${INDEX}`); // an invalid one, left by a build cut short
      await c.query(`CREATE INDEX CONCURRENTLY ${INDEX} ON ledger(at) WHERE kind = 'usage'`);
      return { kind: "built", ms: Date.now() - started };
    } catch (e) {
      return this.stopped ? { kind: "stopped" } : { kind: "failed", reason: e instanceof Error ? e.message : String(e) };
    } finally {
      this.working = false;
    }
  }

  /** Whether the index is there and usable. */
  private async valid(): Promise<boolean> {
    const { rows } = await this.client.query<{ valid: boolean }>("SELECT indisvalid AS valid FROM pg_index WHERE indexrelid = to_regclass($1)", [INDEX]);
    return rows[0]?.valid === true;
  }

  /** The store closes: a build under way is cancelled on the server (through `pool`) and its connection closed. */
  async stop(pool: pg.Pool): Promise<void> {
    this.stopped = true;
    const pid = (this.client as unknown as { processID?: number }).processID;
    if (this.working && pid !== undefined) await pool.query("SELECT pg_cancel_backend($1)", [pid]).catch(() => {});
    // pg: an end() during connect() leaves connect() waiting for ever (and the outcome with it).
    await this.connecting?.catch(() => {});
    await this.client.end().catch(() => {});
  }
}
