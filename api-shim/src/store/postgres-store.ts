import pg from "pg";
import { settlesWithin } from "../promises.ts";
import { OpenConnections } from "./postgres-connections.ts";
import { LOCK_CLASS, migratePg, takeOwnerLock } from "./postgres-migrations.ts";
import { createKeyIn, createKeyOnceIn, ensureBootstrapKeyIn, revokeKeyIn, revokeRemovedIn, topUpIn, updateKeyIn } from "./postgres-admin.ts";
import { DoubtfulHolds } from "./postgres-doubtful.ts";
import { keyEventsOf } from "./postgres-key-events.ts";
import { neverSent, NotSentError, READ_ONLY_CODE, ReadOnlyError, worthAnotherTry } from "./postgres-failures.ts";
import { durableTransaction, inTransaction, keysWithHolds, onPooled, keyById, refusalOf } from "./postgres-client.ts";
import type { PostgresStoreOptions } from "./postgres-options.ts";
import { UsageReports } from "./postgres-reports.ts";
import { applySettings, checkSessions, connectSession, probeSessions, sessionSettings, type StoreSession } from "./postgres-sessions.ts";
import { settleAfresh, settleOn } from "./postgres-settle.ts";
import { ADOPT_HOLDS, READY, StaleOwners, SWEEP_GRACE_MS } from "./postgres-sweep.ts";
import { UsageIndexBuild } from "./postgres-usage-index.ts";
import { AUDIT, IN_RECOVERY, JOINED_ROW, READ_ONLY, RESERVE } from "./postgres-sql.ts";
import {
  asStoreError, NewerSchemaError, SchemaOwnerNeededError, SessionSettingsError, StoreUnavailableError, type AuditRow, type BootstrapResult, type CreationIdempotency, type KeyChanges, type KeyCreationResult,
  type KeyDetails, type KeyRecord, type KeyUpdateResult, type NewKey, type ReserveInput, type ReserveResult, type SettleInput, type Store, type TopUpInput, type TopUpResult, type UsageGroup, type UsageQuery } from "./store.ts";

export type { PostgresStoreOptions } from "./postgres-options.ts";

/** The bound on close(): the database has all but CUT_MS of it to answer; then what is still open is cut. */
export const SHUTDOWN_MS = 2000;
const CUT_MS = 250;

/**
 * The store for several shim replicas (`SHIM_DATABASE_URL=postgres://…`). Unlike the SQLite store, which decides holds
 * in one process's memory, every decision is made by Postgres: a hold is a conditional UPDATE of the key row, so any
 * number of replicas admit exactly what the balance covers. Schema in postgres-migrations.ts, statements in
 * postgres-sql.ts.
 *
 * Durability: request-path commits use `synchronous_commit = off` (a Postgres crash can lose the last fraction of a
 * second of them, whole, never half; the same trade as the SQLite store's `synchronous = NORMAL`), so a hot key's row
 * lock is held for a statement, not a disk flush. Admin writes (keys, top-ups) commit synchronously.
 *
 * Failure: while the database cannot be reached (or takes no writes) every call is a StoreUnavailableError (503) and the replica
 * keeps running; it recovers by itself. Unlike the SQLite store it never needs a restart to make its books certain: a hold whose
 * reserve or settle failed is released (uncharged) once the database answers, a settlement whose answer was lost is looked up
 * before its client is answered, and the liveness lock is taken back with the holds still in flight.
 */
export class PostgresStore implements Store {
  private closing = false;
  private closed: Promise<void> | undefined;
  private sweeper: NodeJS.Timeout | undefined;
  /** The sweep when an owner's grace ends (StaleOwners). */
  private sweepAgain: NodeJS.Timeout | undefined;
  private relocker: NodeJS.Timeout | undefined;
  private readonly doubtful: DoubtfulHolds;
  private readonly stale: StaleOwners;
  /** Whether the database was last found read-only (told to onReadOnly when that changes). */
  private readOnly = false;
  /** Holds this replica made (or is making) and has not settled yet: they move with it to a new owner id (relock), and one whose row is gone at its settlement was swept (settle). */
  private readonly unsettled = new Set<string>();
  private readonly reports: UsageReports;
  private readonly connections: OpenConnections;
  private readonly options: PostgresStoreOptions;
  private heartbeat: NodeJS.Timeout | undefined;
  /** This replica's try at the usage rows' time index, in the background (postgres-usage-index.ts). */
  usageIndex: UsageIndexBuild | undefined;
  readonly keyEvents = (id: string) => this.read(() => keyEventsOf(this.pool, id));

  private readonly pool: pg.Pool;
  /** The pool's session settings, for a connection of its own (settleAfresh). */
  private readonly session: StoreSession;
  /** The liveness connection's settings, to take the lock again. */
  private readonly connection: StoreSession;
  private readonly retryMs: number;
  /** The connection holding this replica's advisory lock; null while it is being re-taken. */
  private lock: pg.Client | null;
  /** This replica's id: its reservations carry it. A new one each time the lock is re-taken (its holds in flight move to it). */
  owner: number;
  /** The newest id, taken by a relock still moving the holds in flight to it, or `owner` (adoptIfRelocked). */
  private newest: number;

  private constructor(pool: pg.Pool, session: StoreSession, connection: StoreSession, lock: pg.Client, owner: number, connections: OpenConnections, options: PostgresStoreOptions, timeoutMs: number) {
    this.connections = connections;
    this.options = options;
    this.pool = pool;
    this.session = session;
    this.connection = connection;
    this.lock = lock;
    this.owner = this.newest = owner;
    this.retryMs = options.retryMs ?? 1000;
    this.reports = new UsageReports(pool, (fn) => this.tx(fn));
    this.doubtful = new DoubtfulHolds(pool, this.retryMs, timeoutMs);
    this.stale = new StaleOwners(options.sweepGraceMs ?? SWEEP_GRACE_MS);
  }

  static async open(url: string, options: PostgresStoreOptions = {}): Promise<PostgresStore> {
    const timeoutMs = options.timeoutMs ?? 5000;
    const { session, connection } = sessionSettings(url, timeoutMs);
    const connections = new OpenConnections();
    // Each new connection's settings before its first query (a failure is that query's).
    const onConnect = (c: pg.ClientBase) => (connections.add(c as pg.Client), applySettings(c, session.settings));
    const pool = new pg.Pool({ ...session.config, max: options.poolSize ?? 10, onConnect });
    pool.on("error", () => {}); // an idle connection that broke is dropped; the next query says what is wrong
    const lock = new pg.Client(connection.config);
    connections.add(lock);
    lock.on("error", () => {}); // until watch(): a failed start is reported by the rejection below
    try {
      // The pooler check before any SET: a SET that a pooler hands to other clients is not undone by the refusal.
      await lock.connect();
      await probeSessions(lock, connection.config, timeoutMs);
      await applySettings(lock, connection.settings);
      // A standby (or a read-only default) answers reads and takes the lock, then fails every hold.
      if ((await lock.query<{ read_only: boolean }>(READ_ONLY)).rows[0]!.read_only) throw new ReadOnlyError();
      await checkSessions(pool, session.settings, lock, connection.settings);
      await inTransaction(lock, () => migratePg(lock, undefined, undefined, options.prices)).then((m) => options.onMigrated?.(m)); // not onMigrated?.(await …): that skips the migration when nobody asks
      const owner = await takeOwnerLock(lock);
      const store = new PostgresStore(pool, session, connection, lock, owner, connections, options, timeoutMs);
      store.watch(lock);
      store.sweeper = setInterval(() => store.sweep(), options.sweepIntervalMs ?? 60_000).unref();
      store.usageIndex = new UsageIndexBuild(connection, connections, (o) => options.onUsageIndex?.(o));
      return store;
    } catch (e) {
      await lock.end().catch(() => {});
      await pool.end().catch(() => {});
      throw e instanceof NewerSchemaError || e instanceof SchemaOwnerNeededError || e instanceof SessionSettingsError ? e : new StoreUnavailableError(e);
    }
  }

  /**
   * The liveness connection broke (a database restart, a network cut): until this replica holds a lock again, other
   * replicas see its owner id without a lock (they release its holds only after the sweeps' grace), so it makes no new
   * holds (503) and keeps trying to take one (relock).
   */
  private watch(lock: pg.Client): void {
    const lost = () => this.lose(lock);
    lock.on("error", lost);
    lock.on("end", lost);
    // An idle connection never notices a cut network or a terminated session: ask it regularly.
    // A lock on a standby (the server was demoted) is no lock where the holds are.
    const beat = () => lock.query<{ read_only: boolean }>(IN_RECOVERY).then((r) => r.rows[0]!.read_only && lost(), lost);
    this.heartbeat = setInterval(beat, Math.max(this.retryMs, 1000) * 5).unref();
  }

  /** The liveness lock `lock` holds is lost: its connection is ended, and a new one is taken (relock). */
  private lose(lock: pg.Client): void {
    if (this.closing || this.lock !== lock) return;
    this.lock = null;
    clearInterval(this.heartbeat);
    lock.end().catch(() => {});
    this.relocker = setTimeout(() => void this.relock(), this.retryMs).unref();
  }

  /**
   * Takes the lock back under a new owner id, and moves this replica's holds still in flight to it before any sweep:
   * they are a live replica's. What else the old id still holds is swept like a dead replica's once its grace is over:
   * a database crash can lose settlements that had returned (asynchronous commit), bringing their reservation rows
   * back, and only a sweep frees them. (Other replicas may have released some already if this took longer than the
   * grace: those settle without a hold.)
   */
  private async relock(): Promise<void> {
    if (this.closing) return;
    const c = new pg.Client(this.connection.config);
    c.on("error", () => {});
    this.connections.add(c);
    try {
      await connectSession(c, this.connection.settings);
      // A DNS name that still points at the old primary, now a standby: not there (as at the start).
      if ((await c.query<{ read_only: boolean }>(IN_RECOVERY)).rows[0]!.read_only) throw new ReadOnlyError();
      const owner = await takeOwnerLock(c);
      if (this.closing) throw new Error("closing");
      // Told first: a reserve answered from here moves its hold itself (adoptIfRelocked), and one
      // answered before had committed before this statement starts, which moves it.
      this.newest = owner;
      if (this.unsettled.size > 0) await c.query(ADOPT_HOLDS, [owner, [...this.unsettled]]);
      this.owner = owner;
      this.lock = c;
      this.watch(c);
      this.sweep();
    } catch {
      c.end().catch(() => {});
      if (!this.closing) this.relocker = setTimeout(() => void this.relock(), this.retryMs).unref();
    }
  }

  /** Releases the holds of replicas that are gone (this one's under an old owner id included) and says how many. */
  private readonly sweep = (): void => void this.releaseStaleReservations().then((n) => this.options.onReleased?.(n), () => {}); // unreachable: the next sweep

  /** The database is read-only or not, as just found: told when that changes. */
  private foundReadOnly(readOnly: boolean): void {
    if (readOnly !== this.readOnly) this.options.onReadOnly?.(readOnly);
    this.readOnly = readOnly;
  }

  /** Reads and admin operations: a failure is a 503 for this call; the next one tries again (asStoreError). */
  private async read<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw asStoreError(e);
    }
  }

  /**
   * A hold or settlement: on failure (503) its hold becomes doubtful and is released later. A hold whose reserve cannot
   * have reached the server (no liveness lock, no connection) or was refused as read-only does not exist, so it is not
   * remembered: during an outage every refused request was, ~550 bytes each, without bound (and on a read-only database
   * each was retried for ever). A settlement's hold exists whatever happened to the settlement. `resolve`, for a
   * failure worth it (worthAnotherTry: sent and not answered, so it may have committed, or ended by the server from
   * outside, its session terminated, say): one more try that settles the doubt (settleAfresh); only if it fails too is
   * the hold doubtful.
   */
  private async write<T>(kind: "reserve" | "settle", reservationId: string, fn: () => Promise<T>, resolve?: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if ((e as { code?: unknown } | null)?.code === READ_ONLY_CODE) this.foundReadOnly(true);
      if (resolve && worthAnotherTry(e)) {
        try {
          return await resolve();
        } catch {
          // the database cannot tell now: doubtful, as below
        }
      }
      if (kind === "settle" || !neverSent(e)) this.doubtful.add(reservationId);
      throw new StoreUnavailableError(e);
    }
  }

  /** One transaction on one pooled connection, committed durably (admin writes and start-up). */
  private tx<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    return this.read(() => durableTransaction(this.pool, fn));
  }

  /** No new holds (and not ready) while the liveness lock is being taken back: others could sweep them. */
  private requireLock(): void {
    if (this.lock === null) throw new NotSentError("this replica lost its liveness lock and is taking it back");
  }

  /**
   * Ready: the database answers, takes writes (a standby or a read-only default does not), and this replica holds its
   * lock there. A lock held on another server (its session reached another than the pool's, after a failover) is taken
   * again.
   */
  ping(): Promise<void> {
    return this.read(async () => {
      const lock = this.lock;
      // A connection to a server that takes no writes is not kept: the next may reach the primary.
      const { read_only: readOnly, locked } = await onPooled(this.pool, async (c, discard) => {
        const row = (await c.query<{ read_only: boolean; locked: boolean }>(READY, [LOCK_CLASS, this.owner])).rows[0]!;
        if (row.read_only) discard();
        return row;
      });
      this.foundReadOnly(readOnly);
      if (readOnly) throw new ReadOnlyError();
      this.requireLock();
      if (!locked && lock !== null && this.lock === lock) {
        this.lose(lock);
        throw new NotSentError("this replica's liveness lock is not on the server its requests reach; it is taking it back there");
      }
    });
  }

  getKey(id: string): Promise<KeyRecord | undefined> {
    return this.read(() => keyById(this.pool, id));
  }

  getKeyDetails(id: string): Promise<KeyDetails | undefined> {
    return this.read(async () => (await keysWithHolds(this.pool, id))[0]);
  }

  listKeys(): Promise<KeyDetails[]> {
    return this.read(() => keysWithHolds(this.pool));
  }

  createKey(key: NewKey): Promise<KeyRecord> {
    return this.tx((c) => createKeyIn(c, key));
  }

  createKeyOnce(key: NewKey, once: CreationIdempotency): Promise<KeyCreationResult> {
    return this.tx((c) => createKeyOnceIn(c, key, once));
  }

  ensureBootstrapKey(key: NewKey): Promise<BootstrapResult> {
    return this.tx((c) => ensureBootstrapKeyIn(c, key));
  }

  revokeRemovedBootstrapKeys(keep: readonly string[], at: number): Promise<string[]> {
    return this.tx((c) => revokeRemovedIn(c, keep, at));
  }

  revokeKey(id: string, at: number, requestId: string | null = null): Promise<boolean> {
    return this.tx((c) => revokeKeyIn(c, id, at, requestId));
  }

  topUp(input: TopUpInput): Promise<TopUpResult> {
    return this.tx((c) => topUpIn(c, input));
  }

  updateKey(id: string, changes: KeyChanges, at: number, requestId: string | null = null): Promise<KeyUpdateResult> {
    return this.tx((c) => updateKeyIn(c, id, changes, at, requestId));
  }

  reserve(input: ReserveInput): Promise<ReserveResult> {
    return this.write("reserve", input.reservationId, async () => {
      this.requireLock();
      // Counted as this replica's from before it is sent: a relock after it committed moves it too.
      this.unsettled.add(input.reservationId);
      let held = false;
      try {
        const owner = this.owner;
        const { rows } = await this.pool.query<{ available: number }>({
          name: "reserve", text: RESERVE, values: [input.reservationId, input.keyId, input.amount, owner, input.at, input.model ?? null, input.hash ?? null],
        });
        if (rows.length === 1) {
          await this.adoptIfRelocked(input.reservationId, owner);
          held = true;
          return { ok: true, available: rows[0]!.available };
        }
      } finally {
        if (!held) this.unsettled.delete(input.reservationId);
      }
      return refusalOf(this.pool, input);
    });
  }

  /**
   * A hold made under `owner` while the replica took its lock back (the reserve waited for a connection or the key's
   * row): the relock moved the holds there before this one's row existed, so it carries the old, lockless id, which
   * other replicas sweep while its request runs. It is moved to the current id before the client is answered (again if
   * a relock came meanwhile). Should that fail, the hold is doubtful (released, uncharged) and its client gets a 503.
   */
  private async adoptIfRelocked(reservationId: string, owner: number): Promise<void> {
    try {
      for (let moved = owner; moved !== this.newest;) {
        moved = this.newest;
        await this.pool.query(ADOPT_HOLDS, [moved, [reservationId]]);
      }
    } catch (e) {
      this.doubtful.add(reservationId);
      throw e;
    }
  }

  settle(input: SettleInput): Promise<{ available: number; charged: number }> {
    const mine = this.unsettled.delete(input.reservationId);
    return this.write("settle", input.reservationId, () => settleOn(this.pool, input, mine), () => settleAfresh(this.session, this.connections, input, mine));
  }

  /** One INSERT on the pool, after its answer is out (no hold, no key row: nothing moves). */
  readonly recordJoined: Store["recordJoined"] = (r) => this.read(async () => void (await this.pool.query({ name: "joined-row", text: JOINED_ROW, values: [r.keyId, r.at, r.requestId, r.route, r.model, r.status, r.ms, r.batch, r.joined] })));

  /**
   * A sweep: releases the holds of owners without a liveness lock for the grace (postgres-sweep.ts)
   * and says how many; owners still within it get a sweep of their own when it ends.
   */
  releaseStaleReservations(): Promise<number> {
    return this.read(async () => {
      const { released, dueInMs } = await this.stale.pass(this.pool);
      if (dueInMs !== null && !this.closing) {
        clearTimeout(this.sweepAgain);
        this.sweepAgain = setTimeout(() => this.sweep(), dueInMs + 100).unref();
      }
      return released;
    });
  }

  /** Reports get a bound of their own (they scan a period's rows) and end when their asker leaves: postgres-reports.ts. */
  usage(q: UsageQuery): Promise<UsageGroup[]> {
    return this.read(() => this.reports.run(q));
  }

  /** As usage(): a report's turn, bound and cancellation (postgres-reports.ts); a request's or a key's ledger rows too (request-rows.ts). */
  readonly credits: Store["credits"] = (q) => this.read(() => this.reports.credits(q));
  readonly lowCredits: Store["lowCredits"] = (q) => this.read(() => this.reports.lowCredits(q));
  readonly requests: Store["requests"] = (q) => this.read(() => this.reports.requests(q));

  /** Every reservation is a row here, whichever replica made it: `reservedSum` is their sum. */
  audit(): Promise<AuditRow[]> {
    return this.read(async () => (await this.pool.query<AuditRow>(AUDIT)).rows);
  }

  close(): Promise<void> {
    this.closed ??= this.shutdown();
    return this.closed;
  }

  /** Within SHUTDOWN_MS, or the connections are cut: a hung database must not keep the process from exiting. */
  private async shutdown(): Promise<void> {
    const deadline = performance.now() + SHUTDOWN_MS - CUT_MS;
    clearInterval(this.sweeper);
    this.closing = true; // nothing is rescheduled from here
    clearTimeout(this.sweepAgain);
    clearTimeout(this.relocker);
    clearInterval(this.heartbeat);
    // A last try at the doubtful holds (what is left is swept by others); running reports are
    // cancelled, or pool.end() would wait for their connections for up to a minute.
    await settlesWithin(Promise.all([this.doubtful.stop(), this.reports.cancelAll(), this.usageIndex?.stop(this.pool)]), deadline - performance.now());
    // The lock goes with its connection: from here other replicas may release what this one held.
    const ended = Promise.allSettled([this.lock?.end(), this.pool.end()]);
    if (await settlesWithin(ended, deadline - performance.now())) return;
    this.options.onConnectionsCut?.(this.connections.cut());
    await settlesWithin(ended, CUT_MS);
  }
}
