import type Database from "better-sqlite3";
import { keyUpdateSql, liveNamesakeSql } from "./key-updates.ts";
import { INSERT_EVENT, type KeyEventRow, SELECT_EVENTS } from "./key-events.ts";
import type { KeyDetails } from "./store.ts";

/** The SQLite store's SQL: every statement prepared once, when the store opens. */

export interface KeyRow {
  id: string; name: string; hash: string; tier: string; models: string | null; balance: number;
  held: number; holds: number; created_at: number; expires_at: number | null; revoked_at: number | null; bootstrap: number;
}
/** The row's `holds` and `bootstrap` columns count its open holds and mark configuration's keys: the details come at no cost. */
export const toKey = (r: KeyRow): KeyDetails => ({
  id: r.id, name: r.name, hash: r.hash, tier: r.tier,
  models: r.models === null ? null : (JSON.parse(r.models) as string[]),
  balance: r.balance, held: r.held, holds: r.holds, createdAt: r.created_at, expiresAt: r.expires_at, revokedAt: r.revoked_at,
  fromConfiguration: r.bootstrap === 1,
});

/** A request's ledger row, in the order of `requestRow`'s parameters. */
export type RequestRow = [keyId: string, at: number, amount: number, requestId: string, route: string, model: string, status: number, promptTokens: number, completionTokens: number, stream: number, ms: number, served: number, priceId: string, batch: number, cachedTokens: number];

/** A joined request's ledger row, in the order of `joinedRow`'s parameters. */
export type JoinedRowValues = [keyId: string, at: number, requestId: string, route: string, model: string, status: number, ms: number, batch: number, joined: string];

export function prepareStatements(db: Database.Database) {
  return {
    ping: db.prepare("SELECT 1"),
    getKey: db.prepare<[string], KeyRow>("SELECT * FROM keys WHERE id = ?"),
    listKeys: db.prepare<[], KeyRow>("SELECT * FROM keys ORDER BY created_at, id"),
    insertKey: db.prepare("INSERT INTO keys (id, name, hash, tier, models, created_at, expires_at) VALUES (@id, @name, @hash, @tier, @models, @at, @expiresAt)"),
    updateBootstrap: db.prepare("UPDATE keys SET name = @name, hash = @hash, tier = @tier, models = @models, bootstrap = 1 WHERE id = @id"),
    bootstrapGranted: db.prepare<[string], { one: number }>("SELECT 1 AS one FROM ledger WHERE idem = 'bootstrap:' || ?"),
    liveBootstrapIds: db.prepare<[], { id: string }>("SELECT id FROM keys WHERE bootstrap = 1 AND revoked_at IS NULL"),
    credit: db.prepare("INSERT INTO ledger (key_id, at, amount, kind, ref, idem) VALUES (@keyId, @at, @amount, @kind, @ref, @idem) ON CONFLICT (idem) WHERE idem IS NOT NULL DO NOTHING"),
    addBalance: db.prepare("UPDATE keys SET balance = balance + @amount WHERE id = @keyId"),
    updateKey: db.prepare<(string | number | null)[]>(keyUpdateSql("anonymous")),
    liveNamesake: db.prepare<[string, string, number], { id: string }>(liveNamesakeSql("anonymous")),
    revoke: db.prepare("UPDATE keys SET revoked_at = coalesce(revoked_at, @at) WHERE id = @id"),
    // A key's history (key-events.ts): the key_events table is made at open, before these are prepared.
    insertEvent: db.prepare<KeyEventRow>(INSERT_EVENT.replace(/\$\d/g, "?")),
    keyEvents: db.prepare<[string], { key_id: string; at: number; event: string; request_id: string | null; changes: string }>(SELECT_EVENTS.replace(/\$\d/g, "?")),
    // The request path: prepared once, positional parameters (binding from objects costs more).
    begin: db.prepare("BEGIN IMMEDIATE"),
    commit: db.prepare("COMMIT"),
    money: db.prepare<[string], { balance: number; held: number; revokedAt: number | null; expiresAt: number | null; models: string | null; hash: string }>("SELECT balance, held, revoked_at AS revokedAt, expires_at AS expiresAt, models, hash FROM keys WHERE id = ?"),
    // The request's one ledger row: its charge (−cost) and its usage record.
    requestRow: db.prepare<RequestRow>(
      "INSERT INTO ledger (key_id, at, amount, kind, ref, route, model, status, prompt_tokens, completion_tokens, stream, ms, served, price_id, batch, cached_tokens) VALUES (?, ?, ?, 'usage', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
    // A joined request's row (store.ts, JoinedRow): nothing charged, served or counted, naming the request it joined.
    joinedRow: db.prepare<JoinedRowValues>(
      "INSERT INTO ledger (key_id, at, amount, kind, ref, route, model, status, prompt_tokens, completion_tokens, stream, ms, served, batch, cached_tokens, joined) VALUES (?, ?, 0, 'usage', ?, ?, ?, ?, 0, 0, 0, ?, 0, ?, 0, ?)"),
    applyMoney: db.prepare<[number, number, number, string]>("UPDATE keys SET balance = balance + ?, held = held + ?, holds = holds + ? WHERE id = ?"),
    openHolds: db.prepare<[], { id: string; held: number; holds: number }>("SELECT id, held, holds FROM keys WHERE held <> 0 OR holds <> 0"),
    setHolds: db.prepare<[number, number, string]>("UPDATE keys SET held = ?, holds = ? WHERE id = ?"),
    getIdem: db.prepare<[string], { fingerprint: string; body: string }>("SELECT fingerprint, body FROM idempotency WHERE key = ?"),
    putIdem: db.prepare("INSERT INTO idempotency (key, fingerprint, body, at) VALUES (?, ?, ?, ?)"),
    audit: db.prepare<[], { keyId: string; balance: number; held: number; holds: number; ledgerSum: number }>(
      `SELECT k.id AS keyId, k.balance, k.held, k.holds, coalesce(l.total, 0) AS ledgerSum
       FROM keys k LEFT JOIN (SELECT key_id, sum(amount) AS total FROM ledger GROUP BY key_id) l ON l.key_id = k.id
       ORDER BY k.id`),

  };
}
