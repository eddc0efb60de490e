/**
 * The storage seam. Routes only see this async interface, so a Postgres store (several shim
 * replicas) can implement it later without touching them. All amounts are integer µc; all
 * timestamps are milliseconds since the Unix epoch.
 */
import type { CreationIdempotency, KeyCreationResult } from "./key-creations.ts";
import { MAX_BALANCE_MICRO } from "../money/money.ts";
import type { ReportedPrice } from "../money/price-record.ts";
import type { KeyChanges, KeyUpdateResult } from "./key-updates.ts";
import type { BackupFile } from "./sqlite-backup.ts";
import type { CreditsLine, CreditsQuery } from "./credits-statement.ts";
import type { TopUpInput, TopUpResult } from "./top-ups.ts";
export type { KeyChanges, KeyUpdateResult } from "./key-updates.ts";

export interface KeyRecord {
  id: string;
  name: string;
  hash: string;
  tier: string;
  models: string[] | null;
  /** Sum of the key's ledger rows. */
  balance: number;
  /** Sum of the key's open reservations (holds). */
  held: number;
  createdAt: number;
  expiresAt: number | null;
  revokedAt: number | null;
}

/**
 * A key as the admin API shows it: with its open holds counted. Not part of KeyRecord, which
 * every request reads (auth.ts): the Postgres store counts them in its reservations table.
 */
export interface KeyDetails extends KeyRecord {
  /**
   * How many open reservations (holds) the key has: its requests in flight, whose usage is not
   * in the ledger yet. `held > 0` does not tell them: a request priced 0 holds 0 credits.
   */
  holds: number;
  /**
   * The key comes from configuration (a stack's gpu-sandbox:keys, SHIM_CONFIG's bootstrapKeys):
   * changed there, so PATCH and rotate answer it 409 key_from_configuration.
   */
  fromConfiguration: boolean;
}

/** Whether a key may be used at `now`: not revoked, not expired. (The stores' holds check the same.) */
export function keyIsLive(key: Pick<KeyRecord, "revokedAt" | "expiresAt">, now: number): boolean {
  return key.revokedAt === null && (key.expiresAt === null || key.expiresAt > now);
}

export interface NewKey {
  id: string;
  name: string;
  hash: string;
  tier: string;
  models: string[] | null;
  expiresAt: number | null;
  /** Initial grant in µc (a ledger row when > 0). */
  credits: number;
  at: number;
}

export interface UsageRow {
  requestId: string;
  keyId: string;
  at: number;
  route: string;
  model: string;
  status: number;
  promptTokens: number;
  completionTokens: number;
  cost: number;
  stream: boolean;
  ms: number;
  /**
   * The upstream did the work: it answered, or had the request when its client left, or failed after content (a stream cut, an
   * answer too large to relay). False when nothing was served (the upstream refused or failed before any content, or the request
   * never reached it): Settlement is told null usage exactly then. Apart from the cost: a free model's served requests cost 0.
   */
  served: boolean;
  /** The price it was charged at (price-record.ts: its id), and what of it a line per price needs to recompute the cost. */
  priceId: string;
  batch: boolean;
  /** Prompt tokens read from a prompt cache (counted in promptTokens too), charged the cached price. */
  cachedTokens: number;
}

export interface ReserveInput {
  reservationId: string;
  keyId: string;
  amount: number;
  at: number;
  /**
   * The model asked for: checked again against the key's allow-list as the hold reads its row,
   * so a PATCH that narrowed it after the request authenticated refuses it (left out: not checked).
   */
  model?: string;
  /**
   * The key's hash as the request authenticated with it (auth.ts read it with the key row): a
   * hold for a key whose hash differs now (rotated since, while the body was still arriving) is
   * refused `inactive`, as one for a key revoked since is (left out: not checked).
   */
  hash?: string;
}
/**
 * Refused: not enough available, with the key's `balance` (whether it alone covers the hold, so
 * only other requests' holds stand in the way: inference.ts waits a little for them to settle),
 * `inactive` (the key was revoked, expired or rotated after it authenticated), or `notAllowed` (its
 * allow-list no longer has `model`).
 */
export type ReserveResult =
  | { ok: true; available: number }
  | { ok: false; available: number; balance: number; inactive?: undefined; notAllowed?: undefined }
  | { ok: false; available: number; inactive: true }
  | { ok: false; available: number; notAllowed: true; inactive?: undefined };

export interface SettleInput {
  reservationId: string;
  keyId: string;
  hold: number;
  /** 0 ≤ cost ≤ hold (Pricer.cost caps it). The stores charge at most the hold all the same. */
  cost: number;
  usage: UsageRow;
}

export { creditsChangeRow, type TopUpInput, type TopUpResult, topUpRefusal } from "./top-ups.ts";
export type { CreationIdempotency, KeyCreationResult } from "./key-creations.ts";

export interface UsageQuery {
  /** The caller takes the rows in batches (UsageRows): a large report's (/admin/usage streams its body). */
  batched?: boolean;
  /** The key reported on; null: all keys. */
  keyId: string | null;
  /**
   * Who asks: the key asking for its own report (its id: /v1/usage), or null for the operator (/admin/usage,
   * /admin/credits; routes/usage.ts chooses). The stores' reports wait in a line per asker (turns.ts), not per key
   * reported on, so a key keeping its own line full cannot keep the operator from pulling its report.
   */
  asker: string | null;
  from: number;
  to: number; // exclusive
  group: UsageGrouping;
  /**
   * Aborts when the asker no longer wants the report (it left: a ClientLeftError; the drain was cut). The Postgres
   * store's report then rejects at once with that reason (any but a ClientLeftError as a StoreUnavailableError's
   * cause): one still waiting for its turn gives up its place, one running has its statement cancelled on the
   * server. The SQLite store's report does the same on its worker thread (sqlite-reports.ts); an in-memory
   * database's runs at once, in one synchronous call.
   */
  signal?: AbortSignal;
}
/**
 * Which usage rows a report counts, as SQL on the ledger (both stores'): those the upstream served
 * (UsageRow.served) or that were charged. Rows written before the stores recorded `served`, or
 * by the previous version since (NULL: the column is added at open, sqlite-migrations.ts and
 * postgres-migrations.ts), keep the rule they were reported by: charged, or answered (a status
 * below 400), so their reports do not change with the upgrade.
 */
export const REPORTED_SQL = "(amount <> 0 OR coalesce(served, status < 400))";

/** day,model: a row per key, UTC day and model (an invoice's when prices differ per model); model,price: per key, model and price (an auditor's). */
export type UsageGrouping = "model" | "day" | "day,model" | "model,price";

export interface UsageGroup {
  keyId: string;
  /** The model name, or the UTC day (YYYY-MM-DD) when grouping by day (or by day and model). */
  group: string;
  model?: string; // grouping by day and model: the model (`group` is the day); absent otherwise
  requests: number;
  promptTokens: number;
  completionTokens: number;
  cost: number;
  /**
   * Grouping by model and price only: the price's id (null: rows written before prices were
   * recorded), its fields (null: unknown), and the batch requests and cached prompt tokens of the
   * line (null with a null id: not recorded then).
   */
  priceId?: string | null;
  price?: ReportedPrice | null;
  batchRequests?: number | null;
  cachedTokens?: number | null;
}

export interface AuditRow {
  keyId: string;
  balance: number;
  held: number;
  ledgerSum: number;
  /** Open reservations of the key, as the database records them (whichever process made them). */
  reservations: number;
  /**
   * Sum of the open reservations this store can itemize (the SQLite store: those of its own
   * process). Equals `held` unless a dead process left holds that were not released yet.
   */
  reservedSum: number;
}

export interface BootstrapResult {
  created: boolean;
  granted: boolean;
  adminKey?: true; // the id is a key made with the admin API: nothing of it was changed (the start refuses: server.ts)
  /** Why the grant, due, was not made (asked again at the next start): grantRefusal. */
  refused?: GrantRefusal;
}

export type GrantRefusal = "key_inactive" | "balance_too_large";

/**
 * Whether the key that has a bootstrap entry's id was made with the admin API: it is not marked
 * as configuration's, and it is another key (hash). An unmarked one with the entry's hash is the
 * entry's own, made with 0 credits before keys were marked (no grant row told the migration).
 */
export function isAdminApiKey(found: { bootstrap: boolean; hash: string }, entry: NewKey): boolean {
  return !found.bootstrap && found.hash !== entry.hash;
}

/**
 * Why a grant of `credits` to `key` is not made: the key is revoked or expired (its credits could
 * not be spent), or they would take its balance past MAX_BALANCE_MICRO (past what a JavaScript
 * number holds exactly as µc). Null when it is made. A top-up's refusal (routes/admin.ts) and a
 * bootstrap key's one-time grant, not made yet, alike.
 */
export function grantRefusal(key: KeyRecord, credits: number, at: number): GrantRefusal | null {
  if (!keyIsLive(key, at)) return "key_inactive";
  return key.balance + credits > MAX_BALANCE_MICRO ? "balance_too_large" : null;
}

export interface Store {
  /** Throws when the store cannot serve requests. */
  ping(): Promise<void>;
  getKey(id: string): Promise<KeyRecord | undefined>;
  /** The key with its open holds counted (the admin API's; getKey, on every request, goes without). */
  getKeyDetails(id: string): Promise<KeyDetails | undefined>;
  listKeys(): Promise<KeyDetails[]>;
  createKey(key: NewKey): Promise<KeyRecord>;
  /**
   * createKey with an Idempotency-Key (key-creations.ts): the key made and its key kept in one
   * transaction; a key already kept answers the key it made (`replay`), or `conflict` for another request.
   */
  createKeyOnce(key: NewKey, once: CreationIdempotency): Promise<KeyCreationResult>;
  /**
   * Creates the key if absent, else updates its name/hash/tier/models from configuration;
   * grants its credits once (ledger idempotency key `bootstrap:<id>`), never again, and not
   * while grantRefusal says no (`refused`). A key with that id made with the admin API
   * is left as it is (`adminKey`).
   */
  ensureBootstrapKey(key: NewKey): Promise<BootstrapResult>;
  /**
   * Revokes every key that came from configuration and is no longer in it (`keep`: the ids it
   * has now); returns their ids. Their ledger and usage stay. Keys made with the admin API are
   * never touched.
   */
  revokeRemovedBootstrapKeys(keep: readonly string[], at: number): Promise<string[]>;
  /** Marks the key revoked; false when there is no such key. */
  revokeKey(id: string, at: number): Promise<boolean>;
  /**
   * Changes a key's tier, models, expiry or secret's hash (key-updates.ts), atomically, its id
   * and money untouched; refused for a key revoked or from configuration (a start would undo
   * it), or brought back into use (expired at `at`) while another key in use has its name.
   */
  updateKey(id: string, changes: KeyChanges, at: number): Promise<KeyUpdateResult>;
  topUp(input: TopUpInput): Promise<TopUpResult>;
  /** One atomic conditional hold: succeeds only if balance − held ≥ amount. */
  reserve(input: ReserveInput): Promise<ReserveResult>;
  /**
   * Atomically: the reservation gone, held −= hold, balance −= cost, and the request's record
   * of usage and charge (every charge has its ledger row; the balance stays the ledger's sum).
   * A cost beyond the hold is charged the hold: a caller's mistake takes no credit that other
   * holds count on. Settling a reservation that is already settled changes nothing. `charged` is
   * what this call charged: the cost; 0 when it changed nothing. One more case, the Postgres store's only: a
   * hold this store made and did not settle, released meanwhile by a sweep (its liveness
   * session was cut for longer than the sweeps' grace), still gets its request's record, charged the cost if the key's available
   * balance covers it, else 0 (never eating into other requests' holds).
   */
  settle(input: SettleInput): Promise<{ available: number; charged: number }>;
  /**
   * Releases every reservation not owned by this process (a dead one's); returns how many. The
   * Postgres store's: those of replicas without their liveness lock for its grace (30 s), so at
   * start usually none; it releases the rest when their grace ends (its onReleased says how many).
   */
  releaseStaleReservations(): Promise<number>;
  /**
   * Usage per key and model (or day): the requests that were served or charged (REPORTED_SQL). A
   * request the upstream failed before serving it, charged nothing, is in the ledger (one row per
   * forwarded request) but not in the report: a client reading "3 requests, cost 1" would think
   * the price was wrong. A free model's served requests (cost 0) are.
   */
  usage(query: UsageQuery): Promise<UsageGroup[]>;
  /** Per key over a period: its balance at each end, and what was granted and spent between (credits-statement.ts). */
  credits(query: CreditsQuery): Promise<CreditsLine[]>;
  /** Per-key balance, ledger sum and open reservations: the money invariants, for checks. */
  audit(): Promise<AuditRow[]>;
  /** The ledger as one SQLite file (the SQLite store's, sqlite-backup.ts); none: a database backed up with its own tools (Postgres). */
  backup?(signal: AbortSignal): Promise<BackupFile>;
  close(): Promise<void>;
}

/** The store failed (busy past its timeout, I/O, closed): requests fail closed with 503. */
export class StoreUnavailableError extends Error {
  constructor(cause: unknown) {
    super("store unavailable", { cause });
    this.name = "StoreUnavailableError";
  }
}

/**
 * An admin write committed, but the disk refused the sync that would have made it durable: a
 * failed sync rolls nothing back, so the change stands (the next process reads it) unless the
 * host loses the page cache. Not "retry later" (a retry would grant a top-up's credits, or make a
 * key, a second time): the client is told to check first (errors.ts, change_not_confirmed). The
 * store still fails closed, as for any StoreUnavailableError.
 */
export class UnconfirmedWriteError extends StoreUnavailableError {
  constructor(cause: unknown) {
    super(cause);
    this.name = "UnconfirmedWriteError";
  }
}

/**
 * The database was made by a newer shim (a schema version past the last migration this one
 * knows): it refuses to start rather than serve against tables it does not understand (an
 * image rolled back after an upgrade). A restart cannot fix it, so it is not a store failure.
 */
export class NewerSchemaError extends Error {
  constructor(database: string, found: number, known: number) {
    super(`${database} was made by a newer version of the shim (schema ${found}, this one knows ${known}); run the newer image or restore a backup`);
    this.name = "NewerSchemaError";
  }
}

/**
 * The Postgres store's role may not add the ledger's `served` column (it does not own the tables:
 * a replica running with data rights only), which settling needs: the start fails saying what to
 * do, rather than as a database failure a restart would fix.
 */
export class SchemaOwnerNeededError extends Error {
  /** `grant`: what is missing is a right of this role, which only a GRANT gives (an owner's start does not). */
  constructor(what = "its new column `served`", sql = "ALTER TABLE ledger ADD COLUMN served boolean", grant = false) {
    super(grant
      ? `the ledger needs ${what}: run, as the tables' owner, ${sql}, then restart this shim`
      : `the ledger needs ${what}: start one shim once as the tables' owner (or run, as the owner: ${sql}), then restart the replicas`);
    this.name = "SchemaOwnerNeededError";
  }
}

/**
 * The Postgres store's connections do not keep their server sessions (the settings it SETs on
 * them, its liveness lock): a pooler in transaction or statement mode between the shim and
 * PostgreSQL (postgres-sessions.ts's probeSessions, before anything is SET, and checkSessions).
 * The start fails naming what was not kept; a restart cannot fix it.
 */
export class SessionSettingsError extends Error {
  constructor(faults: readonly string[]) {
    super(`the database connections do not keep their server sessions: ${faults.join("; ")}. The store needs its settings (statement bound, asynchronous commit, keepalives) and its liveness lock to stay with each connection: connect to PostgreSQL itself or through a pooler in session mode (PgBouncer: pool_mode = session), not transaction or statement mode`);
    this.name = "SessionSettingsError";
  }
}

/**
 * A bootstrap key has the id of a key made with the admin API (store.ensureBootstrapKey's
 * `adminKey`): that key is left as it is, and the shim refuses to start rather than serve
 * without the configured one (its holder would get 401s). A restart cannot fix it.
 */
export class BootstrapIdTakenError extends Error {
  constructor(id: string) {
    super(`bootstrap key ${id} has the id of a key made with the admin API; give it another id`);
    this.name = "BootstrapIdTakenError";
  }
}

/**
 * Too many usage reports wait already (turns.ts): the askers' own rate, not a failure of the
 * store, so a 429 with Retry-After (routes/usage.ts), never a 503 nor an error line. `scope`:
 * the full line was the asker's own (a key's reports, or the operator's over all keys) or the
 * one the whole shim's reports share.
 */
export class ReportsBusyError extends Error {
  readonly scope: "line" | "shim";
  constructor(scope: "line" | "shim", running: number, waiting: number) {
    super(`${running} running and ${waiting} waiting already`);
    this.name = "ReportsBusyError";
    this.scope = scope;
  }
}

/** The client left before its answer: nothing failed, so nothing is logged as a failure. */
export class ClientLeftError extends Error {
  constructor() {
    super("the client left");
    this.name = "ClientLeftError";
  }
}

/**
 * What a store's read or report rejects with: its own errors as they are (the store failed, the
 * client left, too many reports wait), anything else as the store unavailable (a 503).
 */
export function asStoreError(e: unknown): Error {
  return e instanceof StoreUnavailableError || e instanceof ClientLeftError || e instanceof ReportsBusyError ? e : new StoreUnavailableError(e);
}
