/** The Postgres store's helpers over pg: how rows become the store's records, one transaction, a grant. */
import pg from "pg";
import { REFUSAL } from "./postgres-sql.ts";
import type { KeyDetails, KeyRecord, ReserveInput, ReserveResult } from "./store.ts";

export interface KeyRow {
  id: string; name: string; hash: string; tier: string; models: string[] | null; balance: number;
  held: number; created_at: number; expires_at: number | null; revoked_at: number | null;
}
export const toKey = (r: KeyRow): KeyRecord => ({
  id: r.id, name: r.name, hash: r.hash, tier: r.tier, models: r.models, balance: r.balance, held: r.held,
  createdAt: r.created_at, expiresAt: r.expires_at, revokedAt: r.revoked_at,
});
export const KEY_COLUMNS = "id, name, hash, tier, models, balance, held, created_at, expires_at, revoked_at";
/** One key by id, on the pool or inside a transaction (a named statement, prepared once per connection). */
export async function keyById(q: pg.Pool | pg.PoolClient, id: string): Promise<KeyRecord | undefined> {
  const { rows } = await q.query<KeyRow>({ name: "get-key", text: `SELECT ${KEY_COLUMNS} FROM keys WHERE id = $1`, values: [id] });
  return rows[0] && toKey(rows[0]);
}

/**
 * Keys with their open holds counted and configuration's marked (KeyDetails): every key, or the
 * one `id`. Counted in `reservations`, which has no index by key (each hold would pay for one):
 * for the admin API, not a request's path (keyById reads neither).
 */
export async function keysWithHolds(q: pg.Pool | pg.PoolClient, id?: string): Promise<KeyDetails[]> {
  const { rows } = await q.query<KeyRow & { holds: number; bootstrap: boolean }>(
    `SELECT ${KEY_COLUMNS}, bootstrap, coalesce(r.n, 0)::bigint AS holds FROM keys
       LEFT JOIN (SELECT key_id, count(*) AS n FROM reservations GROUP BY key_id) r ON r.key_id = keys.id
     ${id === undefined ? "" : "WHERE keys.id = $1"} ORDER BY created_at, id COLLATE "C"`,
    id === undefined ? [] : [id],
  );
  return rows.map((r) => ({ ...toKey(r), holds: r.holds, fromConfiguration: r.bootstrap }));
}

/**
 * bigint columns as JS numbers: every amount is an integer of µc well inside 2^53 (money.ts
 * refuses anything larger), and the interface speaks numbers.
 */
export const types = {
  getTypeParser: ((oid: number, format?: "text" | "binary") =>
    oid === pg.types.builtins.INT8 ? Number : pg.types.getTypeParser(oid, format ?? "text")) as typeof pg.types.getTypeParser,
};

/** Runs `fn` between BEGIN and COMMIT on `c`; rolls back and rethrows when it fails. */
export async function inTransaction<T>(c: pg.ClientBase, fn: () => Promise<T>): Promise<T> {
  await c.query("BEGIN");
  try {
    const result = await fn();
    await c.query("COMMIT");
    return result;
  } catch (e) {
    await c.query("ROLLBACK").catch(() => {});
    throw e;
  }
}

/**
 * `fn` on one pooled connection, which is not reused after a failure (its state is unknown) or
 * when `fn` calls `discard` (it reached a server the store cannot use).
 */
export async function onPooled<T>(pool: pg.Pool, fn: (c: pg.PoolClient, discard: () => void) => Promise<T>): Promise<T> {
  const c = await pool.connect();
  // The pool does not listen for a checked-out connection's errors: a connection that breaks
  // meanwhile would be an unhandled 'error' event (a crash). The failed query reports it.
  const ignore = () => {};
  c.on("error", ignore);
  let failure: Error | boolean | undefined;
  try {
    return await fn(c, () => void (failure = true));
  } catch (e) {
    failure = e instanceof Error ? e : true;
    throw e;
  } finally {
    c.off("error", ignore);
    c.release(failure);
  }
}

/** One transaction on one pooled connection, committed durably (admin writes and start-up). */
export function durableTransaction<T>(pool: pg.Pool, fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
  return onPooled(pool, (c) => inTransaction(c, async () => {
    await c.query("SET LOCAL synchronous_commit = on");
    return fn(c);
  }));
}

/** A ledger row and the matching balance change; false when the idempotency key was used. */
export async function grant(c: pg.ClientBase, keyId: string, amount: number, at: number, kind: string, ref: string | null, idem: string | null): Promise<boolean> {
  if (amount === 0) return false; // a write-off's is negative
  const r = await c.query("INSERT INTO ledger (key_id, at, amount, kind, ref, idem) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (idem) WHERE idem IS NOT NULL DO NOTHING",
    [keyId, at, amount, kind, ref, idem]);
  if (r.rowCount === 0) return false;
  await c.query("UPDATE keys SET balance = balance + $2 WHERE id = $1", [keyId, amount]);
  return true;
}

/** Why a hold of `input` was refused (RESERVE changed no row): the key inactive (or gone), the model not allowed, or not enough available. */
export async function refusalOf(q: pg.Pool, input: ReserveInput): Promise<ReserveResult> {
  const why = (await q.query<{ available: number; balance: number; inactive: boolean; not_allowed: boolean }>({ name: "refusal", text: REFUSAL, values: [input.keyId, input.at, input.model ?? null, input.hash ?? null] })).rows[0];
  if (why === undefined || why.inactive) return { ok: false, available: why?.available ?? 0, inactive: true };
  return why.not_allowed ? { ok: false, available: why.available, notAllowed: true } : { ok: false, available: why.available, balance: why.balance };
}
