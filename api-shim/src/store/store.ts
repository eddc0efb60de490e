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
import type { KeyCredits, LowCreditsQuery } from "./low-credits.ts";
import type { TopUpInput, TopUpResult } from "./top-ups.ts";
import type { RequestRow, RequestsQuery } from "./request-rows.ts";
import type { UsageRows } from "./usage-batches.ts";
import type { KeyEvent } from "./key-events.ts";
export type { KeyChanges, KeyUpdateResult } from "./key-updates.ts";
export type { FieldChange, KeyEvent, KeyEventKind } from "./key-events.ts";

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
  /** The admin request that creates it (its `created` event's); left out: none (a start's). */
  requestId?: string | null;
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

/**
 * A request answered with another's generation, charging nothing: an SDK's retry that joined a
 * generation whose client left, a re-send given its Idempotency-Key's earlier answer
 * (routes/joined-retry.ts). Its ledger row is a usage row of amount 0, not served, no tokens and
 * no price, so reports and balances are as without it (REPORTED_SQL), and `joined` names the
 * request whose row has the charge: GET /admin/requests/{id} finds it by the id its client saw.
 */
export interface JoinedRow extends Pick<UsageRow, "requestId" | "keyId" | "at" | "route" | "model" | "status" | "ms" | "batch"> {
  /** The request whose generation, and charge, it got (`status`: what its client was answered, that generation's). */
  joined: string;
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
  /**
   * Marks the key revoked, with its `revoked` event (`requestId`: the admin request's) the first
   * time; false when there is no such key.
   */
  revokeKey(id: string, at: number, requestId?: string | null): Promise<boolean>;
  /**
   * Changes a key's tier, models, expiry or secret's hash (key-updates.ts), atomically, its id
   * and money untouched; refused for a key revoked or from configuration (a start would undo
   * it), or brought back into use (expired at `at`) while another key in use has its name. Its
   * event (`rotated`, or `updated` with what changed) in the same transaction (key-events.ts).
   */
  updateKey(id: string, changes: KeyChanges, at: number, requestId?: string | null): Promise<KeyUpdateResult>;
  /**
   * The key's history (key-events.ts), oldest first: created (since the upgrade that added it),
   * rotated, updated, revoked; undefined when there is no such key.
   */
  keyEvents(id: string): Promise<KeyEvent[] | undefined>;
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
   * A joined request's row (JoinedRow), written off its answer's path: only such requests write
   * one (SQLite: in the open batch, with its settlements; Postgres: one INSERT). Resolves once written.
   */
  recordJoined(row: JoinedRow): Promise<void>;
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
  /** Each active key's balance and the credits it had this month (low-credits.ts), off the request path, as the operator's report. */
  lowCredits(query: LowCreditsQuery): Promise<KeyCredits[]>;
  /**
   * A request id's ledger rows, or a key's requests in a period one row each, oldest first
   * (request-rows.ts): as a report (its turn, bound and end when its asker leaves), the first
   * batch and the rest to read (UsageRows), so a busy key's month is never held whole.
   */
  requests(query: RequestsQuery): Promise<UsageRows<RequestRow>>;
  /** Per-key balance, ledger sum and open reservations: the money invariants, for checks. */
  audit(): Promise<AuditRow[]>;
  /** The ledger as one SQLite file (the SQLite store's, sqlite-backup.ts); none: a database backed up with its own tools (Postgres). */
  backup?(signal: AbortSignal): Promise<BackupFile>;
  close(): Promise<void>;
}

export { StoreUnavailableError, UnconfirmedWriteError, NewerSchemaError, SchemaOwnerNeededError, SessionSettingsError, BootstrapIdTakenError, ReportsBusyError, ClientLeftError, asStoreError } from "./store-errors.ts";
