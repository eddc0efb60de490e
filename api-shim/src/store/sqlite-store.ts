import { randomUUID } from "node:crypto";
import { once } from "node:events";
import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import Database from "better-sqlite3";
import type {
  AuditRow, BootstrapResult, KeyRecord, NewKey, ReserveInput, ReserveResult, SettleInput, Store,
  TopUpInput, TopUpResult, UsageGroup, UsageQuery,
} from "./store.ts";
import { StoreUnavailableError } from "./store.ts";

/**
 * The embedded store: better-sqlite3 in WAL mode. One process writes (the shim), so the
 * reservations of any other instance id found at start belong to a process that died.
 * Each migration runs once, in order, tracked by PRAGMA user_version.
 */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE keys (
     id TEXT PRIMARY KEY, name TEXT NOT NULL, hash TEXT NOT NULL, tier TEXT NOT NULL, models TEXT,
     balance INTEGER NOT NULL DEFAULT 0, held INTEGER NOT NULL DEFAULT 0,
     created_at INTEGER NOT NULL, expires_at INTEGER, revoked_at INTEGER,
     CHECK (held >= 0), CHECK (balance - held >= 0)) STRICT;
   CREATE TABLE ledger (
     id INTEGER PRIMARY KEY, key_id TEXT NOT NULL REFERENCES keys(id), at INTEGER NOT NULL,
     amount INTEGER NOT NULL, kind TEXT NOT NULL, ref TEXT, idem TEXT) STRICT;
   -- Partial: usage rows (no idempotency key) do not pay for this index on every request.
   CREATE UNIQUE INDEX ledger_idem ON ledger(idem) WHERE idem IS NOT NULL;
   CREATE TRIGGER ledger_append_only_u BEFORE UPDATE ON ledger BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
   CREATE TRIGGER ledger_append_only_d BEFORE DELETE ON ledger BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
   CREATE TABLE reservations (
     id TEXT PRIMARY KEY, key_id TEXT NOT NULL, amount INTEGER NOT NULL, instance TEXT NOT NULL,
     at INTEGER NOT NULL) STRICT, WITHOUT ROWID;
   CREATE TABLE usage (
     id INTEGER PRIMARY KEY, request_id TEXT NOT NULL, key_id TEXT NOT NULL, at INTEGER NOT NULL,
     route TEXT NOT NULL, model TEXT NOT NULL, status INTEGER NOT NULL,
     prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, cost INTEGER NOT NULL,
     stream INTEGER NOT NULL, ms INTEGER NOT NULL) STRICT;
   CREATE INDEX usage_key_at ON usage(key_id, at);
   CREATE TABLE idempotency (
     key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, body TEXT NOT NULL, at INTEGER NOT NULL) STRICT;`,
];

interface KeyRow {
  id: string; name: string; hash: string; tier: string; models: string | null; balance: number;
  held: number; created_at: number; expires_at: number | null; revoked_at: number | null;
}
const toKey = (r: KeyRow): KeyRecord => ({
  id: r.id, name: r.name, hash: r.hash, tier: r.tier,
  models: r.models === null ? null : (JSON.parse(r.models) as string[]),
  balance: r.balance, held: r.held, createdAt: r.created_at, expiresAt: r.expires_at, revokedAt: r.revoked_at,
});

export interface SqliteStoreOptions {
  busyTimeoutMs?: number;
  /** ms between WAL checkpoints run by a worker thread (file databases). Default 1000. */
  checkpointIntervalMs?: number;
}

export class SqliteStore implements Store {
  readonly instanceId = randomUUID();
  private readonly db: Database.Database;
  private commitScheduled = false;
  private broken: unknown = null;
  private checkpointer: Worker | undefined;
  private readonly stmt;

  constructor(filename: string, options: SqliteStoreOptions = {}) {
    this.db = new Database(filename);
    const db = this.db;
    db.pragma("journal_mode = WAL");
    db.pragma("synchronous = NORMAL");
    db.pragma(`busy_timeout = ${options.busyTimeoutMs ?? 5000}`);
    db.pragma("foreign_keys = ON");
    migrate(db);
    if (filename !== ":memory:") this.checkpointer = startCheckpointer(db, filename, options.checkpointIntervalMs ?? 1000);
    this.stmt = {
      ping: db.prepare("SELECT 1"),
      getKey: db.prepare<[string], KeyRow>("SELECT * FROM keys WHERE id = ?"),
      listKeys: db.prepare<[], KeyRow>("SELECT * FROM keys ORDER BY created_at, id"),
      insertKey: db.prepare("INSERT INTO keys (id, name, hash, tier, models, created_at, expires_at) VALUES (@id, @name, @hash, @tier, @models, @at, @expiresAt)"),
      updateBootstrap: db.prepare("UPDATE keys SET name = @name, hash = @hash, tier = @tier, models = @models WHERE id = @id"),
      credit: db.prepare("INSERT INTO ledger (key_id, at, amount, kind, ref, idem) VALUES (@keyId, @at, @amount, @kind, @ref, @idem) ON CONFLICT (idem) WHERE idem IS NOT NULL DO NOTHING"),
      addBalance: db.prepare("UPDATE keys SET balance = balance + @amount WHERE id = @keyId"),
      revoke: db.prepare("UPDATE keys SET revoked_at = coalesce(revoked_at, @at) WHERE id = @id"),
      // The request path uses positional parameters: binding from objects costs more per call.
      hold: db.prepare<[number, string, number], { available: number }>(
        "UPDATE keys SET held = held + ? WHERE id = ? AND balance - held >= ? RETURNING balance - held AS available"),
      available: db.prepare<[string], { available: number }>("SELECT balance - held AS available FROM keys WHERE id = ?"),
      insertReservation: db.prepare<[string, string, number, string, number]>("INSERT INTO reservations (id, key_id, amount, instance, at) VALUES (?, ?, ?, ?, ?)"),
      usageLedger: db.prepare<[string, number, number, string]>("INSERT INTO ledger (key_id, at, amount, kind, ref) VALUES (?, ?, ?, 'usage', ?)"),
      charge: db.prepare<[number, number, string], { available: number }>(
        "UPDATE keys SET balance = balance - ?, held = held - ? WHERE id = ? RETURNING balance - held AS available"),
      deleteReservation: db.prepare<[string], { amount: number }>("DELETE FROM reservations WHERE id = ? RETURNING amount"),
      insertUsage: db.prepare<[string, string, number, string, string, number, number, number, number, number, number]>(
        "INSERT INTO usage (request_id, key_id, at, route, model, status, prompt_tokens, completion_tokens, cost, stream, ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
      staleReservations: db.prepare<[string], { id: string; key_id: string; amount: number }>("SELECT id, key_id, amount FROM reservations WHERE instance <> ?"),
      release: db.prepare("UPDATE keys SET held = held - @amount WHERE id = @keyId"),
      getIdem: db.prepare<[string], { fingerprint: string; body: string }>("SELECT fingerprint, body FROM idempotency WHERE key = ?"),
      putIdem: db.prepare("INSERT INTO idempotency (key, fingerprint, body, at) VALUES (?, ?, ?, ?)"),
      audit: db.prepare<[], { keyId: string; balance: number; held: number; ledgerSum: number; reservations: number; reservedSum: number }>(
        `SELECT k.id AS keyId, k.balance, k.held, coalesce(l.total, 0) AS ledgerSum,
           coalesce(r.n, 0) AS reservations, coalesce(r.total, 0) AS reservedSum
         FROM keys k
         LEFT JOIN (SELECT key_id, sum(amount) AS total FROM ledger GROUP BY key_id) l ON l.key_id = k.id
         LEFT JOIN (SELECT key_id, count(*) AS n, sum(amount) AS total FROM reservations GROUP BY key_id) r ON r.key_id = k.id
         ORDER BY k.id`),
    };
  }

  /** The hold: one conditional UPDATE (admits only if balance − held covers it) and the reservation row. */
  private reserveOp(input: ReserveInput): ReserveResult {
    const row = this.stmt.hold.get(input.amount, input.keyId, input.amount);
    if (!row) return { ok: false, available: this.stmt.available.get(input.keyId)?.available ?? 0 };
    this.stmt.insertReservation.run(input.reservationId, input.keyId, input.amount, this.instanceId, input.at);
    return { ok: true, available: row.available };
  }

  /** The settlement: reservation gone, ledger −cost, balance −= cost, held −= hold, usage row. */
  private settleOp(input: SettleInput): { available: number } {
    // A reservation already released (e.g. by a concurrent shutdown path) must not be released twice.
    if (!this.stmt.deleteReservation.get(input.reservationId)) {
      return { available: this.stmt.available.get(input.keyId)?.available ?? 0 };
    }
    const u = input.usage;
    if (input.cost > 0) this.stmt.usageLedger.run(input.keyId, u.at, -input.cost, u.requestId);
    const row = this.stmt.charge.get(input.cost, input.hold, input.keyId);
    this.stmt.insertUsage.run(u.requestId, u.keyId, u.at, u.route, u.model, u.status, u.promptTokens, u.completionTokens, input.cost, u.stream ? 1 : 0, u.ms);
    return { available: row?.available ?? 0 };
  }

  /** Runs a synchronous database call; every failure becomes StoreUnavailableError (fail closed). */
  private run<T>(fn: () => T): Promise<T> {
    try {
      if (this.broken !== null) throw this.broken;
      return Promise.resolve(fn());
    } catch (e) {
      return Promise.reject(new StoreUnavailableError(e));
    }
  }

  /**
   * Group commit for the request path (reserve, settle). Each operation runs at once, as its
   * own savepoint inside a write transaction that stays open until the end of the current
   * event-loop turn, when one COMMIT covers every operation of that turn. Operations stay
   * atomic and serialized (one process, one connection), results are known immediately, and
   * the commit's I/O is paid once per turn and off the request's critical path. A crash can
   * lose the last turn's operations whole: holds (released at start anyway) and charges (the
   * client's favour), never an unbalanced ledger. A failed COMMIT leaves the store failed
   * closed (503) until the process restarts and releases what it held.
   */
  private batched<T>(fn: () => T): Promise<T> {
    return this.run(() => {
      if (!this.db.inTransaction) this.db.exec("BEGIN IMMEDIATE"); // SQLITE_BUSY here: 503, nothing open
      if (!this.commitScheduled) {
        this.commitScheduled = true;
        setImmediate(() => this.commit());
      }
      try {
        return fn();
      } catch (e) {
        // No savepoint per operation (it doubles the statements): an operation that fails half
        // way takes the whole batch with it, and the store stays failed closed.
        this.fail(e);
        throw e;
      }
    });
  }

  private fail(e: unknown): void {
    this.broken = e;
    try {
      if (this.db.inTransaction) this.db.exec("ROLLBACK");
    } catch {}
  }

  /** Commits the open batch, if any. Admin operations call it first so they commit on their own. */
  private commit(): void {
    this.commitScheduled = false;
    if (!this.db.open || !this.db.inTransaction) return;
    try {
      this.db.exec("COMMIT");
    } catch (e) {
      this.fail(e);
    }
  }

  /** For operations that must be durable before they answer (admin routes, start-up). */
  private now<T>(fn: () => T): Promise<T> {
    return this.run(() => {
      this.commit();
      if (this.broken !== null) throw this.broken;
      return fn();
    });
  }

  ping(): Promise<void> {
    return this.run(() => void this.stmt.ping.get());
  }

  getKey(id: string): Promise<KeyRecord | undefined> {
    return this.run(() => {
      const r = this.stmt.getKey.get(id);
      return r && toKey(r);
    });
  }

  listKeys(): Promise<KeyRecord[]> {
    return this.run(() => this.stmt.listKeys.all().map(toKey));
  }

  createKey(key: NewKey): Promise<KeyRecord> {
    return this.now(
      this.db.transaction(() => {
        this.stmt.insertKey.run({ ...key, models: key.models && JSON.stringify(key.models) });
        this.grant(key.id, key.credits, key.at, "grant", null, null);
        return toKey(this.stmt.getKey.get(key.id)!);
      }),
    );
  }

  ensureBootstrapKey(key: NewKey): Promise<BootstrapResult> {
    return this.now(
      this.db.transaction(() => {
        const fields = { ...key, models: key.models && JSON.stringify(key.models) };
        const exists = this.stmt.getKey.get(key.id) !== undefined;
        if (exists) this.stmt.updateBootstrap.run(fields);
        else this.stmt.insertKey.run(fields);
        const granted = this.grant(key.id, key.credits, key.at, "bootstrap", null, `bootstrap:${key.id}`);
        return { created: !exists, granted };
      }),
    );
  }

  /** A ledger row and the matching balance change; false when the idempotency key was used. */
  private grant(keyId: string, amount: number, at: number, kind: string, ref: string | null, idem: string | null): boolean {
    if (amount <= 0) return false;
    if (this.stmt.credit.run({ keyId, at, amount, kind, ref, idem }).changes === 0) return false;
    this.stmt.addBalance.run({ keyId, amount });
    return true;
  }

  revokeKey(id: string, at: number): Promise<boolean> {
    return this.now(() => this.stmt.revoke.run({ id, at }).changes > 0);
  }

  topUp(input: TopUpInput): Promise<TopUpResult> {
    return this.now(
      this.db.transaction((): TopUpResult => {
        const idemKey = input.idempotency && `credits:${input.keyId}:${input.idempotency.key}`;
        if (idemKey) {
          const prior = this.stmt.getIdem.get(idemKey);
          if (prior) return prior.fingerprint === input.idempotency!.fingerprint ? { kind: "replay", body: prior.body } : { kind: "conflict" };
        }
        if (!this.stmt.getKey.get(input.keyId)) return { kind: "not_found" };
        this.grant(input.keyId, input.amount, input.at, "topup", input.note, idemKey);
        const body = input.respond(toKey(this.stmt.getKey.get(input.keyId)!));
        if (idemKey) this.stmt.putIdem.run(idemKey, input.idempotency!.fingerprint, body, input.at);
        return { kind: "done", body };
      }),
    );
  }

  reserve(input: ReserveInput): Promise<ReserveResult> {
    return this.batched(() => this.reserveOp(input));
  }

  settle(input: SettleInput): Promise<{ available: number }> {
    return this.batched(() => this.settleOp(input));
  }

  releaseStaleReservations(): Promise<number> {
    return this.now(
      this.db.transaction(() => {
        const stale = this.stmt.staleReservations.all(this.instanceId);
        for (const r of stale) {
          this.stmt.deleteReservation.get(r.id);
          this.stmt.release.run({ keyId: r.key_id, amount: r.amount });
        }
        return stale.length;
      }),
    );
  }

  usage(q: UsageQuery): Promise<UsageGroup[]> {
    const dim = q.group === "day" ? "strftime('%Y-%m-%d', at / 1000, 'unixepoch')" : "model";
    const sql = `SELECT key_id AS keyId, ${dim} AS "group", count(*) AS requests,
        sum(prompt_tokens) AS promptTokens, sum(completion_tokens) AS completionTokens, sum(cost) AS cost
      FROM usage WHERE at >= @from AND at < @to ${q.keyId === null ? "" : "AND key_id = @keyId"}
      GROUP BY key_id, "group" ORDER BY key_id, "group"`;
    return this.run(() => this.db.prepare<UsageQuery, UsageGroup>(sql).all(q));
  }

  audit(): Promise<AuditRow[]> {
    return this.run(() => this.stmt.audit.all());
  }

  /** Commits the open batch now (tests, and anything about to hand the file to another process). */
  flush(): Promise<void> {
    return this.run(() => this.commit());
  }

  async close(): Promise<void> {
    const worker = this.checkpointer;
    this.checkpointer = undefined;
    if (worker) {
      worker.postMessage("stop");
      await Promise.race([once(worker, "message"), once(worker, "exit"), new Promise((r) => setTimeout(r, 2000).unref())]).catch(() => {});
      await worker.terminate();
    }
    return this.run(() => {
      this.commit();
      if (this.db.open) this.db.close();
    });
  }
}

/**
 * WAL checkpoints run on a worker thread with its own connection, so their fsyncs never stall
 * the request path (on a small VM one checkpoint showed in the request p99); the main
 * connection has wal_autocheckpoint = 0. PASSIVE checkpoints do not block the writer; once the
 * WAL is fully copied the writer starts it over. The worker is plain JavaScript (no type
 * stripping in a second isolate: it would cost ~40 MB of RSS). If it dies, the main connection
 * checkpoints again.
 */
const CHECKPOINT_WORKER = `
const { parentPort, workerData } = require("node:worker_threads");
const Database = require(workerData.module);
const db = new Database(workerData.filename);
db.pragma("busy_timeout = 1000");
const checkpoint = () => { try { db.pragma("wal_checkpoint(PASSIVE)"); } catch {} };
const timer = setInterval(checkpoint, workerData.intervalMs);
parentPort.on("message", (m) => {
  if (m !== "stop") return;
  clearInterval(timer);
  checkpoint();
  db.close();
  parentPort.postMessage("stopped");
});
`;

function startCheckpointer(db: Database.Database, filename: string, intervalMs: number): Worker {
  db.pragma("wal_autocheckpoint = 0");
  const module = createRequire(import.meta.url).resolve("better-sqlite3");
  const worker = new Worker(CHECKPOINT_WORKER, { eval: true, workerData: { filename, intervalMs, module } });
  worker.unref();
  const fallback = () => {
    if (db.open) db.pragma("wal_autocheckpoint = 1000");
  };
  worker.once("error", fallback);
  worker.once("exit", fallback);
  return worker;
}

function migrate(db: Database.Database): void {
  const version = db.pragma("user_version", { simple: true }) as number;
  for (let v = version; v < MIGRATIONS.length; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v]!);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
}
