// Keys as the scripts find them by `--key` (an id or a name) and tell their status: the rules of
// the admin API's key list, in one place (admin-client.ts re-exports them for its callers).
import type { ApiKey } from "./admin-client.ts";
import { UsageError } from "./cli.ts";

const LISTED_IN_ERRORS = 10; // how many keys a "no such key" message lists: a tenant can have thousands

/** A key as the shim treats it now: revoked, expired (both get 401 and no top-ups), or active. */
export function keyStatus(k: ApiKey, now = Date.now()): "revoked" | "expired" | "active" {
  if (k.revoked_at !== null) return "revoked";
  if (k.expires_at !== null && Date.parse(k.expires_at) <= now) return "expired";
  return "active";
}

/**
 * What `--key` refers to: as given first (a SHIM_CONFIG bootstrap key may have a name with spaces
 * at its ends); else trimmed, as the admin API stores names: a pasted " team-07" means team-07.
 */
export function keyReference(keys: readonly ApiKey[], given: string): string {
  return keys.some((k) => k.id === given || k.name === given) ? given : given.trim();
}

/**
 * A key by id, or by name (names are what operators remember, but the shim does not make them
 * unique, so an ambiguous name asks for the id). A name means the key in use (active) that has
 * it; only when none does, the one key that had it and is no longer in use (revoked or expired):
 * such a key is still billed, reported and the target of a top-up retry (which the shim answers
 * from its first reply). A key rotated by expiry, a new one made with its name, is named by it.
 */
export function findKey(keys: readonly ApiKey[], given: string): ApiKey {
  const ref = keyReference(keys, given);
  const byId = keys.find((k) => k.id === ref);
  if (byId) return byId;
  const now = Date.now();
  const named = keys.filter((k) => k.name === ref);
  const active = named.filter((k) => keyStatus(k, now) === "active");
  const byName = active.length > 0 ? active : named;
  if (byName.length === 1) return byName[0]!;
  if (byName.length > 1) {
    throw new UsageError(`--key "${ref}" names ${byName.length} ${active.length > 0 ? "" : "revoked or expired "}keys (${byName.map((k) => k.id).join(", ")}); give the id`, { exit: "refused" });
  }
  const known = keys.filter((k) => keyStatus(k, now) === "active");
  if (known.length === 0) throw new UsageError(`--key "${ref}": no key with that id or name; the tenant has no keys in use`, { exit: "refused" });
  const shown = known.slice(0, LISTED_IN_ERRORS).map((k) => `${k.name} (${k.id})`).join(", ");
  const more = known.length > LISTED_IN_ERRORS ? `, and ${known.length - LISTED_IN_ERRORS} more (npm run manage-keys -- list)` : "";
  throw new UsageError(`--key "${ref}": no key with that id or name; keys in use: ${shown}${more}`, { exit: "refused" });
}
