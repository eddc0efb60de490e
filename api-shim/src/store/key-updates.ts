/**
 * Changing a key made with the admin API (PATCH /admin/keys/{id}): its name, tier, model allow-list
 * or expiry, or its secret's hash (POST /admin/keys/{id}/rotate), in one transaction under the key
 * row's lock, its id, balance, holds and ledger untouched (ledger rows name the key by id, so a
 * new name, a person's erased, reaches every report at once).
 * Both stores (sqlite-key-updates.ts, postgres-admin.ts) decide with keyUpdateRefusal and
 * write with keyUpdateSql, so they refuse and change exactly the same.
 *
 * Nothing caches a key between requests: every request reads its key row (auth.ts) and the
 * rate limiter resizes a key's buckets when its tier's limits differ (RateLimiter.forKey: what
 * was spent stays spent, clamped, as for a stack key whose tier changes at a start), so a change
 * holds from the key's next request, as a revocation does.
 */
import type { KeyDetails } from "./store.ts";

/** What to change; a field left out stays as it is. `models: null`: every model; `expiresAt: null`: never. */
export interface KeyChanges {
  /** A new name (trimmed, checked as create checks one): the only change a revoked key takes. */
  name?: string;
  tier?: string;
  models?: string[] | null;
  expiresAt?: number | null;
  /**
   * A new secret's hash (a rotation): the key's next request must present that secret. One that
   * authenticated with the old one and is not held yet (its body still arriving, or waiting for
   * the key's holds to settle) is refused at its hold, which compares the key's hash with the one
   * it authenticated with (ReserveInput.hash), as a revocation refuses it; one already held
   * finishes and is charged to the key as before.
   */
  hash?: string;
}

export type KeyUpdateResult =
  | { kind: "done"; key: KeyDetails }
  | { kind: "not_found" }
  | { kind: "revoked" }
  /** The key comes from configuration (bootstrap): the next start would put its tier, models and hash back. */
  | { kind: "configured" }
  /**
   * The key's new name (KeyChanges.name), or its own name when the change would bring the expired
   * key back into use, is another key in use's (`namesake`, its id): `--key <name>` and create's
   * refusal of a name in use count on one key in use a name.
   */
  | { kind: "name_in_use"; name: string; namesake: string };

/**
 * Why the key found (its row's revocation and bootstrap mark) may not be changed so, or null. A
 * revoked key takes a new name alone: erasing a departed person's name is why it is renamed. So
 * does a stack key once revoked (removed from the stack: no start puts its name back).
 */
export function keyUpdateRefusal(found: { revokedAt: number | null; bootstrap: boolean } | undefined, changes: KeyChanges): KeyUpdateResult | null {
  if (found === undefined) return { kind: "not_found" };
  if (found.revokedAt !== null) return Object.keys(changes).every((k) => k === "name") ? null : { kind: "revoked" };
  return found.bootstrap ? { kind: "configured" } : null;
}

/**
 * The name to look for in another key in use, or null when there is none to look for: a new
 * name, or the key's own when the change brings it back from expiry (revives).
 */
export function nameToCheck(found: { name: string; expiresAt: number | null }, changes: KeyChanges, at: number): string | null {
  if (changes.name !== undefined) return changes.name;
  return revives(found.expiresAt, changes, at) ? found.name : null;
}

/** Whether `changes` bring back into use a key whose expiry (`expiresAt`) has passed at `at`: moved past `at`, or removed. */
export function revives(expiresAt: number | null, changes: KeyChanges, at: number): boolean {
  return expiresAt !== null && expiresAt <= at && changes.expiresAt !== undefined && (changes.expiresAt === null || changes.expiresAt > at);
}

const placeholder = (placeholders: "numbered" | "anonymous") => {
  let n = 0;
  return () => (placeholders === "numbered" ? `$${++n}` : "?");
};

/** Another key in use at a time with a name: its id. Parameters: the name, the key's own id, the time. */
export function liveNamesakeSql(placeholders: "numbered" | "anonymous"): string {
  const p = placeholder(placeholders);
  return `SELECT id FROM keys WHERE name = ${p()} AND id <> ${p()} AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ${p()}) ORDER BY id LIMIT 1`;
}

/**
 * One statement for any set of changes: each column is set only when its flag is, so a field left
 * out keeps its value (and `null`, given, is written). Its parameters (keyUpdateValues) in the
 * order they appear: flag and value for name, tier, models (JSON text), expires_at and hash, then the id;
 * numbered as Postgres takes them (`$1`…) or anonymous (`?`) as better-sqlite3 does.
 */
export function keyUpdateSql(placeholders: "numbered" | "anonymous"): string {
  const p = placeholder(placeholders);
  return `UPDATE keys SET name = CASE WHEN ${p()} THEN ${p()} ELSE name END, tier = CASE WHEN ${p()} THEN ${p()} ELSE tier END, models = CASE WHEN ${p()} THEN ${p()} ELSE models END, expires_at = CASE WHEN ${p()} THEN ${p()} ELSE expires_at END, hash = CASE WHEN ${p()} THEN ${p()} ELSE hash END WHERE id = ${p()}`;
}

/** keyUpdateSql's parameters for `changes` (flags as 0 and 1: SQLite has no booleans, and Postgres reads them as such). */
export function keyUpdateValues(id: string, changes: KeyChanges): (string | number | null)[] {
  const given = (v: unknown) => (v === undefined ? 0 : 1);
  return [
    given(changes.name), changes.name ?? null,
    given(changes.tier), changes.tier ?? null,
    given(changes.models), changes.models ? JSON.stringify(changes.models) : null,
    given(changes.expiresAt), changes.expiresAt ?? null,
    given(changes.hash), changes.hash ?? null,
    id,
  ];
}
