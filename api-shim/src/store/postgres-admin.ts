/** The Postgres store's admin writes, each inside the caller's transaction (PostgresStore's tx: committed durably). */
import type pg from "pg";
import { keyUpdateRefusal, keyUpdateSql, keyUpdateValues, liveNamesakeSql, nameToCheck } from "./key-updates.ts";
import { grant, keyById, keysWithHolds } from "./postgres-client.ts";
import { LOCK_KEY } from "./postgres-sql.ts";
import { type CreationIdempotency, creationBody, creationRowKey, type KeyCreationResult, priorCreation } from "./key-creations.ts";
import { changeEvent, creationChanges, modelsOf, startChangeEvent } from "./key-events.ts";
import { recordEvent } from "./postgres-key-events.ts";
import {
  grantRefusal, type BootstrapResult, isAdminApiKey, type KeyChanges, type KeyRecord, type KeyUpdateResult, type NewKey, type TopUpInput, type TopUpResult, topUpRefusal, creditsChangeRow,
} from "./store.ts";

export async function createKeyIn(c: pg.PoolClient, key: NewKey): Promise<KeyRecord> {
  await c.query("INSERT INTO keys (id, name, hash, tier, models, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    [key.id, key.name, key.hash, key.tier, key.models && JSON.stringify(key.models), key.at, key.expiresAt]);
  await recordEvent(c, { keyId: key.id, at: key.at, event: "created", requestId: key.requestId ?? null, changes: creationChanges(key) });
  await grant(c, key.id, key.credits, key.at, "grant", null, null);
  return (await keyById(c, key.id))!;
}

/**
 * createKeyIn under an Idempotency-Key (key-creations.ts). Copies sent at once take turns on a
 * lock on that key (an advisory lock, as a new name takes: there is no row to lock yet), so a
 * copy sees the first one's row, committed, and never makes a second key.
 */
export async function createKeyOnceIn(c: pg.PoolClient, key: NewKey, once: CreationIdempotency): Promise<KeyCreationResult> {
  const rowKey = creationRowKey(once);
  await c.query("SELECT pg_advisory_xact_lock(hashtextextended('gpu-sandbox idempotency ' || $1, 0))", [rowKey]);
  const prior = priorCreation((await c.query<{ fingerprint: string; body: string }>("SELECT fingerprint, body FROM idempotency WHERE key = $1", [rowKey])).rows[0], once);
  if (prior) return prior;
  const made = await createKeyIn(c, key);
  await c.query("INSERT INTO idempotency (key, fingerprint, body, at) VALUES ($1, $2, $3, $4)", [rowKey, once.fingerprint, creationBody(made.id), key.at]);
  return { kind: "done", key: made };
}

/**
 * Replicas starting together run this at once: the key's row (ON CONFLICT) and its grant's
 * idempotency key make the second one a no-op. The row's lock (FOR UPDATE) is held from the
 * check that it is configuration's to the grant, as a top-up holds it.
 */
export async function ensureBootstrapKeyIn(c: pg.PoolClient, key: NewKey): Promise<BootstrapResult> {
  const models = key.models && JSON.stringify(key.models);
  const inserted = await c.query("INSERT INTO keys (id, name, hash, tier, models, created_at, expires_at, bootstrap) VALUES ($1, $2, $3, $4, $5, $6, $7, true) ON CONFLICT (id) DO NOTHING",
    [key.id, key.name, key.hash, key.tier, models, key.at, key.expiresAt]);
  const found = (await c.query<{ bootstrap: boolean; hash: string; name: string; tier: string; models: string[] | null }>(
    "SELECT bootstrap, hash, name, tier, models FROM keys WHERE id = $1 FOR UPDATE", [key.id])).rows[0]!;
  if (isAdminApiKey(found, key)) return { created: false, granted: false, adminKey: true };
  const created = inserted.rowCount === 1;
  if (created) await recordEvent(c, { keyId: key.id, at: key.at, event: "created", requestId: null, changes: creationChanges(key) }); // by the start
  // The stack's secret replaced (operations.md, "Rotate a stack key"): the old one gets 401 from this start on.
  else if (found.hash !== key.hash) await recordEvent(c, { keyId: key.id, at: key.at, event: "rotated", requestId: null, changes: [] });
  // Its name, tier or models changed in the configuration: an event by the start, only when one did.
  const changed = created ? null : startChangeEvent({ name: found.name, tier: found.tier, models: modelsOf(found.models), expiresAt: null }, key);
  if (changed) await recordEvent(c, changed);
  await c.query("UPDATE keys SET name = $2, hash = $3, tier = $4, models = $5, bootstrap = true WHERE id = $1", [key.id, key.name, key.hash, key.tier, models]);
  const idem = `bootstrap:${key.id}`;
  if (key.credits <= 0 || (await c.query("SELECT 1 FROM ledger WHERE idem = $1", [idem])).rowCount !== 0) return { created, granted: false };
  const refused = grantRefusal((await keyById(c, key.id))!, key.credits, key.at);
  if (refused !== null) return { created, granted: false, refused };
  return { created, granted: await grant(c, key.id, key.credits, key.at, "bootstrap", null, idem) };
}

export async function topUpIn(c: pg.PoolClient, input: TopUpInput): Promise<TopUpResult> {
  // The key's row lock first: top-ups of one key take turns across replicas, so a retried
  // request with the same Idempotency-Key sees the first one's stored answer, committed.
  const found = await c.query(LOCK_KEY, [input.keyId]);
  if (found.rowCount === 0) return { kind: "not_found" };
  const { kind, amount, idem: idemKey } = creditsChangeRow(input);
  if (idemKey) {
    const prior = (await c.query<{ fingerprint: string; body: string }>("SELECT fingerprint, body FROM idempotency WHERE key = $1", [idemKey])).rows[0];
    if (prior) return prior.fingerprint === input.idempotency!.fingerprint ? { kind: "replay", body: prior.body } : { kind: "conflict" };
  }
  const refused = topUpRefusal(input, await keyById(c, input.keyId));
  if (refused) return refused;
  await grant(c, input.keyId, amount, input.at, kind, input.note, idemKey);
  const body = input.respond((await keyById(c, input.keyId))!);
  if (idemKey) await c.query("INSERT INTO idempotency (key, fingerprint, body, at) VALUES ($1, $2, $3, $4)", [idemKey, input.idempotency!.fingerprint, body, input.at]);
  return { kind: "done", body };
}

/** The configuration's keys that are no longer in it (`keep`) revoked; their ids. */
export async function revokeRemovedIn(c: pg.PoolClient, keep: readonly string[], at: number): Promise<string[]> {
  const { rows } = await c.query<{ id: string }>("UPDATE keys SET revoked_at = $2 WHERE bootstrap AND revoked_at IS NULL AND NOT (id = ANY($1::text[])) RETURNING id", [[...keep], at]);
  for (const r of rows) await recordEvent(c, { keyId: r.id, at, event: "revoked", requestId: null, changes: [] }); // by the start
  return rows.map((r) => r.id).sort();
}

const UPDATE_KEY = keyUpdateSql("numbered");
const LIVE_NAMESAKE = liveNamesakeSql("numbered");

/**
 * A key's name, tier, models or expiry changed (key-updates.ts). The key row's lock (FOR UPDATE) from
 * the check to the change, as a top-up holds it: a revocation on another replica waits for it,
 * and a hold (RESERVE, an UPDATE of the row) made after it sees the new row. A new name, or bringing
 * an expired key back into use, takes a lock on the name first (an advisory lock: its one-key space
 * is not the replicas' two-key one), so two keys given one name at once cannot both pass.
 */
export async function updateKeyIn(c: pg.PoolClient, id: string, changes: KeyChanges, at: number, requestId: string | null = null): Promise<KeyUpdateResult> {
  const found = (await c.query<{ revoked_at: number | null; bootstrap: boolean; expires_at: number | null; name: string; tier: string; models: string[] | null }>(
    "SELECT revoked_at, bootstrap, expires_at, name, tier, models FROM keys WHERE id = $1 FOR UPDATE", [id])).rows[0];
  const refused = keyUpdateRefusal(found && { revokedAt: found.revoked_at, bootstrap: found.bootstrap }, changes);
  if (refused) return refused;
  const name = nameToCheck({ name: found!.name, expiresAt: found!.expires_at }, changes, at);
  if (name !== null) {
    await c.query("SELECT pg_advisory_xact_lock(hashtextextended('gpu-sandbox key name ' || $1, 0))", [name]);
    const namesake = (await c.query<{ id: string }>(LIVE_NAMESAKE, [name, id, at])).rows[0];
    if (namesake) return { kind: "name_in_use", name, namesake: namesake.id };
  }
  await c.query(UPDATE_KEY, keyUpdateValues(id, changes));
  const event = changeEvent(id, { name: found!.name, tier: found!.tier, models: modelsOf(found!.models), expiresAt: found!.expires_at === null ? null : Number(found!.expires_at) }, changes, at, requestId);
  if (event !== null) await recordEvent(c, event);
  return { kind: "done", key: (await keysWithHolds(c, id))[0]! };
}

/**
 * Revokes the key (false: no such key) under its row's lock, as a change holds it; its `revoked`
 * event only when it was not revoked already (the first revocation's time stands).
 */
export async function revokeKeyIn(c: pg.PoolClient, id: string, at: number, requestId: string | null): Promise<boolean> {
  const found = (await c.query<{ revoked_at: number | null }>("SELECT revoked_at FROM keys WHERE id = $1 FOR UPDATE", [id])).rows[0];
  if (found === undefined) return false;
  if (found.revoked_at !== null) return true;
  await c.query("UPDATE keys SET revoked_at = $2 WHERE id = $1", [id, at]);
  await recordEvent(c, { keyId: id, at, event: "revoked", requestId, changes: [] });
  return true;
}
