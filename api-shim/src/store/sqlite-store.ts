import type { Worker } from "node:worker_threads";
import Database from "better-sqlite3";
import { auditRows, Batch, type Hold, releaseStaleHolds } from "./sqlite-batch.ts";
import { CHECKPOINT_FAILURE_LIMIT_MS, type CheckpointFailure, failureToFailWith, startCheckpointer, stopCheckpointer } from "./sqlite-checkpointer.ts";
import { failsTheStore, isBusy, isCorrupt, walSyncFailureCode } from "./sqlite-failures.ts";
import { migrate } from "./sqlite-migrations.ts";
import type { SqliteStoreOptions } from "./sqlite-options.ts";
import { createKeyIn, createKeyOnceIn, ensureBootstrapKeyIn, topUpIn } from "./sqlite-admin-writes.ts";
import { revokeKeyIn, revokeRemovedIn, updateKeyIn } from "./sqlite-key-updates.ts";
import { fromRow, type KeyEvent } from "./key-events.ts";
import { renameScrubbed, truncateWal } from "./sqlite-erase.ts";
import { SqliteReports } from "./sqlite-reports.ts";
import { BackupNotPossibleError, type BackupFile, SqliteBackups } from "./sqlite-backup.ts";
import { type CompleteCheckpoint, WAL_SIZE_LIMIT, watchRoom } from "./sqlite-space.ts";
import { prepareStatements, toKey } from "./sqlite-statements.ts";
import { usageReport } from "./sqlite-usage-report.ts";
import { creditsStatement } from "./sqlite-credits-statement.ts";
import { sqliteLowCredits } from "./low-credits.ts";
import type { CreditsLine, CreditsQuery } from "./credits-statement.ts";
import { allRequestRows } from "./sqlite-request-rows.ts";
import { WalClosedError, WalSync } from "./sqlite-wal-sync.ts";
import { retryWhileBusy, WriteLockQueue } from "./sqlite-write-lock.ts";
import {
  StoreUnavailableError, UnconfirmedWriteError, type AuditRow, type BootstrapResult, type CreationIdempotency, type KeyChanges, type KeyCreationResult, type KeyDetails, type KeyRecord, type KeyUpdateResult, type JoinedRow, type NewKey, type ReserveInput,
  type ReserveResult, type SettleInput, type Store, type TopUpInput, type TopUpResult, type UsageGroup, type UsageQuery,
} from "./store.ts";

const CLOSING = new Error("the store is closing");

/**
 * The embedded store: better-sqlite3 in WAL mode, written by one process (the shim). Schema in
 * sqlite-migrations.ts, WAL checkpoints in sqlite-checkpointer.ts.
 */
export class SqliteStore implements Store {
  private readonly db: Database.Database;
  /**
   * This process's open holds by reservation id. The database has each key's sum (`held`) and
   * count (`holds`) of open holds, so another process sees them and a restart releases those a
   * dead process left. A null-prototype object, not a Map: V8 promotes what passes through a
   * long-lived Map with constant additions and deletions to the old generation (inflight.ts).
   */
  private readonly holds = Object.create(null) as Record<string, Hold>;
  /** The open batch (sqlite-batch.ts); null when none is open. */
  private batch: Batch | null = null;
  private readonly commitSoon = () => this.commit();
  private readonly commitAfterNextTurn = () => setImmediate(this.commitSoon);
  private broken: unknown = null;
  private checkpointer: Worker | undefined;
  private stopWatchingRoom: (() => void) | undefined; // file databases only
  private readonly reports: SqliteReports | undefined; // file databases only
  private readonly backups: SqliteBackups | undefined; // file databases only
  private readonly walSync: WalSync | undefined; // file databases only
  private readonly stmt: ReturnType<typeof prepareStatements>;
  private readonly options: SqliteStoreOptions;
  private readonly busyTimeoutMs: number;
  private readonly lockQueue = new WriteLockQueue(() => this.begin());

  constructor(filename: string, options: SqliteStoreOptions = {}) {
    this.db = new Database(filename);
    const db = this.db;
    // WAL, cut back to 16 MB when next reset once a long report's read snapshot has let it grow.
    for (const p of ["journal_mode = WAL", "synchronous = NORMAL", `journal_size_limit = ${WAL_SIZE_LIMIT}`]) db.pragma(p);
    this.busyTimeoutMs = options.busyTimeoutMs ?? 5000;
    db.pragma(`busy_timeout = ${this.busyTimeoutMs}`); // migrations only: then 0 (WriteLockQueue)
    this.options = options;
    db.pragma("foreign_keys = ON");
    try {
      const migration = migrate(db, options.prices); // not onMigrated?.(migrate(db)): that skips the migration when nobody asks
      options.onMigrated?.(migration);
    } catch (e) {
      db.close();
      throw e;
    }
    db.pragma("busy_timeout = 0");
    if (filename !== ":memory:") {
      const intervalMs = options.checkpointIntervalMs ?? 1000;
      let lastComplete: CompleteCheckpoint = { walBytes: 0, at: performance.now() }; // what of the WAL is room (sqlite-space.ts)
      this.checkpointer = startCheckpointer(db, filename, intervalMs, (f) => this.checkpointFailed(f), (walBytes) => (lastComplete = { walBytes, at: performance.now() }));
      this.stopWatchingRoom = watchRoom(filename, intervalMs, () => lastComplete, { full: (e) => this.fail(e, "elsewhere"), free: options.onVolumeFree });
      this.reports = new SqliteReports(filename, { busyTimeoutMs: this.busyTimeoutMs, onStoreFailure: (e) => this.fail(e, "elsewhere") });
      this.backups = new SqliteBackups(filename, options.statVolume);
      this.walSync = new WalSync(filename);
    }
    this.stmt = prepareStatements(db);
  }

  /**
   * Runs a synchronous database call; every failure becomes StoreUnavailableError, and one that
   * says the database cannot be used (failsTheStore) leaves the store failed closed.
   */
  private run<T>(fn: () => T): Promise<T> {
    try {
      if (this.broken !== null) throw this.broken;
      return Promise.resolve(fn());
    } catch (e) {
      if (failsTheStore(e)) this.fail(e, "elsewhere");
      return Promise.reject(new StoreUnavailableError(e));
    }
  }

  /**
   * Group commit for the request path (reserve, settle). The first operation of a batch opens a
   * write transaction (BEGIN IMMEDIATE: the write lock, so the keys it reads cannot change under
   * it); every reserve and settle until the batch commits runs in it at once, its result known
   * immediately. The batch commits in the check phase of the event-loop turn after the one that
   * opened it: after what Node and undici write in this turn's check phase (undici sends a
   * request on an idle keep-alive connection from a setImmediate), so the upstream request does
   * not wait for the COMMIT's I/O; a settlement is answered after it (settle). Holds and charges
   * are decided in memory (sqlite-batch.ts), written at COMMIT; the database's CHECK constraints
   * still refuse a negative balance there. A crash can lose the last batch whole: holds
   * (released at start anyway) and charges no client was told yet, never an unbalanced ledger. A failed statement or COMMIT rolls the batch back and
   * leaves the store failed closed (503) until the process restarts and releases what it held;
   * so does a write lock that cannot be taken for any reason but another connection holding it
   * (a read-only file: no batch would ever open, and nothing else would say so).
   */
  private batched<T>(fn: () => T, failsClosed = false): Promise<T> {
    try {
      if (this.broken !== null) throw this.broken;
      if (this.batch === null && (this.lockQueue.waiting || !this.begin())) return this.waitForLock(fn, failsClosed);
      return Promise.resolve(this.inBatch(fn));
    } catch (e) {
      if (e !== CLOSING) this.fail(e, "batch");
      return Promise.reject(new StoreUnavailableError(e));
    }
  }

  /**
   * `fn` once the write lock is free, or a 503 past busyTimeoutMs. A settlement (`failsClosed`)
   * that cannot be written fails the store closed, as a failed COMMIT does: the process restarts
   * and releases its holds, instead of serving on with that hold taken from the key for good.
   * A lock that failed for another reason than busy fails it closed whatever the operation.
   */
  private waitForLock<T>(fn: () => T, failsClosed: boolean): Promise<T> {
    return this.lockQueue.wait(() => this.inBatch(fn), performance.now() + this.busyTimeoutMs).catch((e: unknown) => {
      // Closing is no failure: the next start releases what is held.
      if (e !== CLOSING && (failsClosed || !isBusy(e))) this.fail(e, "batch");
      throw new StoreUnavailableError(e);
    });
  }

  /** Opens a batch (BEGIN IMMEDIATE: the write lock); false when another connection holds the lock. */
  private begin(): boolean {
    if (!this.db.open) throw CLOSING;
    try {
      this.stmt.begin.run();
    } catch (e) {
      if (isBusy(e)) return false;
      throw e;
    }
    this.batch = new Batch(this.stmt, this.holds);
    setImmediate(this.commitAfterNextTurn);
    return true;
  }

  /** An operation in the open batch. No savepoint per operation (it doubles the statements): one that fails half way takes the whole batch with it, and the store stays failed closed. */
  private inBatch<T>(fn: () => T): T {
    try {
      if (this.broken !== null) throw this.broken; // it failed while this waited for the lock
      return fn();
    } catch (e) {
      this.fail(e, "batch");
      throw e;
    }
  }

  /** A WAL checkpoint failed: reported, and the store fails closed if it is one that must (failureToFailWith). A last checkpoint at close() is no reason to. */
  private checkpointFailed(f: CheckpointFailure): void {
    if (this.checkpointer === undefined) return;
    this.options.onCheckpointFailure?.(f);
    const failure = failureToFailWith(f, this.options.checkpointFailureLimitMs ?? CHECKPOINT_FAILURE_LIMIT_MS);
    if (failure !== null) this.fail(failure, "elsewhere");
  }

  /**
   * Fails the store closed (once: later failures change nothing). The open batch holds
   * settlements whose answers wait for its COMMIT (settle): a failure of its own statement
   * or COMMIT ("batch") rolls it back whole, but one from elsewhere (a checkpoint, the volume
   * check, a report, an admin statement, a WAL sync) commits it first (the WAL usually has the
   * room), rolled back only if that fails; not onto a corrupt file, where nothing more is written,
   * nor once its transaction is gone: a read in it (getKey, ping) that failed with an I/O error, a
   * full disk or no memory has had SQLite roll it back already (commit() says why not to write).
   */
  private fail(e: unknown, cause: "batch" | "elsewhere"): void {
    if (this.broken !== null) return;
    this.broken = e;
    const batch = this.batch;
    if (cause === "elsewhere" && !isCorrupt(e) && this.db.open && this.db.inTransaction) this.commit(); // one that fails leaves the batch to the ROLLBACK below
    this.batch = null;
    try {
      if (this.db.inTransaction) this.db.exec("ROLLBACK");
    } catch {}
    batch?.ended(e); // unless committed above
    this.options.onFailure?.(e);
  }

  /**
   * Commits the open batch, if any. Admin operations call it first so they commit on their own.
   * A batch whose transaction SQLite rolled back itself (fail() says when) is dropped, as a
   * ROLLBACK would, and the store fails closed: its writes outside a transaction would commit
   * one statement at a time, and one failing half way (the disk still failing) would leave
   * ledger rows without their balance change for good.
   */
  private commit(): void {
    const batch = this.batch;
    if (batch === null) return;
    this.batch = null;
    if (!this.db.open) return batch.ended(CLOSING);
    if (!this.db.inTransaction) {
      const dropped = new Error("SQLite rolled back the open batch's transaction itself (a statement in it failed: an I/O error, a full disk, no memory)");
      this.fail(dropped, "batch");
      return batch.ended(dropped);
    }
    try {
      batch.write();
      this.stmt.commit.run();
      batch.committed();
    } catch (e) {
      this.fail(e, "batch");
      batch.ended(e);
    }
  }

  /** For operations that see every request settled before them (admin routes, start-up): the open batch commits first. */
  private now<T>(fn: () => T): Promise<T> {
    // Another connection has the write lock: tried again without stopping the thread.
    return retryWhileBusy(() => this.run(() => {
      this.commit();
      if (this.broken !== null) throw this.broken;
      return fn();
    }), (e) => isBusy((e as Error).cause), performance.now() + this.busyTimeoutMs);
  }

  /**
   * An admin write (keys, top-ups, revocations, start-up): on disk before it answers, as the
   * Postgres store commits them. It commits as the request path's batches do (synchronous =
   * NORMAL, after the open batch: now()), then waits for an fdatasync of the WAL on libuv's
   * thread pool (sqlite-wal-sync.ts), not on this thread as synchronous = FULL would. A sync the
   * disk refuses fails the store closed, but unlike a failed COMMIT it rolls nothing back: the
   * write stands, so it is answered as UnconfirmedWriteError (check before retrying), not as
   * "retry later".
   */
  private async durably<T>(fn: () => T): Promise<T> {
    const result = await this.now(fn);
    if (this.walSync === undefined) return result;
    try {
      await this.walSync.sync();
    } catch (e) {
      if (e instanceof WalClosedError) throw new StoreUnavailableError(CLOSING); // closing makes it durable
      const failure = Object.assign(new Error(`syncing the WAL failed: ${(e as Error).message}`), { code: walSyncFailureCode(e), cause: e });
      this.fail(failure, "elsewhere");
      throw new UnconfirmedWriteError(failure);
    }
    return result;
  }

  ping(): Promise<void> {
    return this.run(() => void this.stmt.ping.get());
  }

  getKey(id: string): Promise<KeyDetails | undefined> {
    return this.run(() => {
      const r = this.stmt.getKey.get(id);
      if (r === undefined) return undefined;
      this.batch?.applyTo(r); // inside an open batch the row does not have its changes yet
      return toKey(r);
    });
  }

  /** The key's row counts its open holds (`holds`): getKey has them already. */
  getKeyDetails(id: string): Promise<KeyDetails | undefined> {
    return this.getKey(id);
  }

  listKeys(): Promise<KeyDetails[]> {
    return this.now(() => this.stmt.listKeys.all().map(toKey));
  }

  createKey(key: NewKey): Promise<KeyRecord> {
    return this.durably(this.db.transaction(() => createKeyIn(this.stmt, key)));
  }

  createKeyOnce(key: NewKey, once: CreationIdempotency): Promise<KeyCreationResult> {
    return this.durably(this.db.transaction(() => createKeyOnceIn(this.stmt, key, once)));
  }

  ensureBootstrapKey(key: NewKey): Promise<BootstrapResult> {
    return this.durably(this.db.transaction(() => ensureBootstrapKeyIn(this.stmt, key)));
  }

  revokeRemovedBootstrapKeys(keep: readonly string[], at: number): Promise<string[]> {
    return this.durably(this.db.transaction(() => revokeRemovedIn(this.stmt, keep, at)));
  }

  revokeKey(id: string, at: number, requestId: string | null = null): Promise<boolean> {
    return this.durably(this.db.transaction(() => revokeKeyIn(this.stmt, id, at, requestId)));
  }

  keyEvents(id: string): Promise<KeyEvent[] | undefined> {
    return this.now(() => (this.stmt.getKey.get(id) === undefined ? undefined : this.stmt.keyEvents.all(id).map(fromRow)));
  }

  /** A new name takes the old one's bytes out of the file and the WAL before it answers (sqlite-erase.ts). */
  async updateKey(id: string, changes: KeyChanges, at: number, requestId: string | null = null): Promise<KeyUpdateResult> {
    const change = () => updateKeyIn(this.stmt, id, changes, at, requestId);
    if (changes.name === undefined) return this.durably(this.db.transaction(change));
    const result = await this.durably(() => renameScrubbed(this.db, change));
    const truncated = this.checkpointer && (await truncateWal(this.checkpointer, 10_000));
    if (truncated === "gone") await this.now(() => this.db.pragma("wal_checkpoint(TRUNCATE)")); // its thread ended: this connection checkpoints
    return result;
  }

  topUp(input: TopUpInput): Promise<TopUpResult> {
    return this.durably(this.db.transaction(() => topUpIn(this.stmt, input)));
  }

  reserve(input: ReserveInput): Promise<ReserveResult> {
    return this.batched(() => this.batch!.reserve(input));
  }

  /**
   * Answered once the batch holding the settlement has committed (in the event-loop turn after
   * the one that opened it): its client is told the charge (x-credits-charged, a stream's last
   * figures) only once its ledger row is written, so a process killed in between cannot lose a
   * charge its client was told. The COMMIT only writes the WAL (synchronous = NORMAL): a crash of
   * the host, not of the process, can still lose the last batch (syncs: sqlite-wal-sync.ts).
   */
  async settle(input: SettleInput): Promise<{ available: number; charged: number }> {
    let batch: Batch | undefined;
    const result = await this.batched(() => {
      batch = this.batch!;
      return batch.settle(input);
    }, true);
    await batch!.whenWritten();
    return result;
  }

  /** In the open batch (its write lock and COMMIT), as a settlement's row: resolves once committed. */
  async recordJoined(row: JoinedRow): Promise<void> {
    let batch: Batch | undefined;
    await this.batched(() => (batch = this.batch!).joined(row));
    await batch!.whenWritten();
  }

  releaseStaleReservations(): Promise<number> {
    return this.durably(this.db.transaction(() => releaseStaleHolds(this.stmt, this.holds)));
  }

  /** After the open batch commits: off this thread for a file, in it for `:memory:` (sqlite-reports.ts says why). */
  usage(q: UsageQuery): Promise<UsageGroup[]> {
    if (this.reports === undefined) return this.now(() => usageReport(this.db, q));
    return this.reports.run(q, () => this.now(() => {}));
  }

  /** As usage(): after the open batch commits, on the report worker for a file. */
  readonly credits: Store["credits"] = (q) => (this.reports === undefined ? this.now(() => creditsStatement(this.db, q)) : this.reports.credits(q, () => this.now(() => {})));
  /** So too: each active key's credits this month (low-credits.ts), for the gauges' refresh; never on the request path. */
  readonly lowCredits: Store["lowCredits"] = (q) => (this.reports === undefined ? this.now(() => sqliteLowCredits(this.db, q)) : this.reports.lowCredits(q, () => this.now(() => {})));

  /** As usage(): after the open batch commits, on the report worker for a file, a page per batch (sqlite-request-rows.ts). */
  readonly requests: Store["requests"] = (q) => (this.reports === undefined ? this.now(() => allRequestRows(this.db, q)) : this.reports.requests(q, () => this.now(() => {})));

  /** After the open batch commits, on the report worker (sqlite-backup.ts); an in-memory database has no file to copy. */
  backup(signal: AbortSignal): Promise<BackupFile> {
    const { reports, backups } = this;
    if (reports === undefined || backups === undefined) return Promise.reject(new BackupNotPossibleError("an in-memory database (sqlite::memory:) has no file to back up"));
    return backups.take((into, givenUp) => reports.backup(into, () => this.now(() => {}), signal, givenUp));
  }

  /** sqlite-batch.ts: auditRows. */
  audit(): Promise<AuditRow[]> {
    return this.now(() => auditRows(this.stmt, this.holds));
  }

  /** Commits the open batch now (tests, and anything about to hand the file to another process). */
  flush(): Promise<void> {
    return this.run(() => this.commit());
  }

  async close(): Promise<void> {
    this.reports?.close();
    this.backups?.close();
    this.stopWatchingRoom?.();
    const checkpointer = this.checkpointer;
    this.checkpointer = undefined;
    if (checkpointer) await stopCheckpointer(checkpointer);
    // The last batch is committed first. A store that already failed closed has nothing left to
    // commit (its batch was rolled back), but its connection is closed all the same.
    this.lockQueue.failAll(CLOSING);
    const failedBefore = this.broken !== null;
    if (!failedBefore) this.commit();
    const failure = failedBefore ? null : this.broken;
    await this.walSync?.close();
    if (this.db.open) this.db.close();
    this.options.owner?.release();
    if (failure !== null) throw new StoreUnavailableError(failure);
  }
}
