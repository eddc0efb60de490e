/**
 * What a start says about the keys in the database, once, as warnings: keys the configuration
 * leaves in a state that nothing else would tell an operator of until customers do (refused
 * every request, served under another tier's limits, left unrevoked). Never a secret: ids and names.
 */
import type { Logger } from "pino";
import type { ShimConfig } from "../config.ts";
import { type KeyDetails, type KeyRecord, keyIsLive } from "../store/store.ts";

/** How many of the keys whose allow-list names no served model are named in the warning: a workshop's hundreds would make one huge line. */
const STRANDED_NAMED = 50;

export function warnAboutKeysAtStart(keys: readonly KeyDetails[], config: Pick<ShimConfig, "bootstrapKeys" | "configFile" | "tiers" | "defaultTier" | "models">, logger: Logger, now: number): void {
  // A configured key revoked (by hand, or by reap-expired, which revokes a tenant's stack keys
  // too) stays so at every start, logged only as "created: false": said with the way to a
  // working key, since the stack's apiKeys output goes on handing it out.
  const configuredIds = new Set(config.bootstrapKeys.map((k) => k.id));
  const revokedConfigured = keys.filter((k) => configuredIds.has(k.id) && k.revokedAt !== null).map((k) => k.id);
  if (revokedConfigured.length > 0) logger.warn({ keyIds: revokedConfigured }, REVOKED_CONFIGURED_KEYS);
  // A shim started without SHIM_CONFIG has no say about configuration's keys: they are left
  // alone, said only when there are some (a first start with no configuration has none).
  const configured = keys.filter((k) => k.fromConfiguration && keyIsLive(k, now)).length;
  if (config.configFile === null && configured > 0) logger.warn({ keys: configured }, CONFIGURED_KEYS_LEFT);
  // A tier taken out of the configuration leaves its keys running under the default tier's
  // limits (auth.ts).
  for (const [tier, count] of keysOfUnconfiguredTiers(keys, config.tiers, now)) {
    logger.warn({ tier, keys: count, defaultTier: config.defaultTier }, "live keys have a tier the configuration does not define: they are served under defaultTier's limits until it is defined again");
  }
  // A model renamed (model.servedName) or taken out leaves the keys whose allow-list named it
  // refused everything, silently.
  const stranded = keysWithoutServedModels(keys, config.models, now);
  if (stranded.length > 0) {
    const named = stranded.slice(0, STRANDED_NAMED).map((k) => ({ id: k.id, name: k.name, models: k.models }));
    logger.warn({ count: stranded.length, keys: named, served: [...config.models!.keys()] }, STRANDED_KEYS);
  }
}

/** Live keys per tier that the configuration no longer defines (they get defaultTier's limits). */
export function keysOfUnconfiguredTiers(keys: readonly KeyRecord[], tiers: ReadonlyMap<string, unknown>, now: number): Map<string, number> {
  const found = new Map<string, number>();
  for (const k of keys) if (!tiers.has(k.tier) && keyIsLive(k, now)) found.set(k.tier, (found.get(k.tier) ?? 0) + 1);
  return found;
}

/**
 * Live keys whose allow-list names none of the models the configuration serves (`served`: the
 * served model and the providers' names, config.models; null, a pass-through shim with no list:
 * none is found). Such a key is refused every request and /v1/models shows it nothing, with no
 * error that says why: what renaming the served model does to keys made with its old name.
 */
export function keysWithoutServedModels(keys: readonly KeyRecord[], served: ReadonlyMap<string, unknown> | null, now: number): KeyRecord[] {
  if (served === null) return [];
  return keys.filter((k) => k.models !== null && keyIsLive(k, now) && !k.models.some((m) => served.has(m)));
}

/** The warning for keys whose allow-list names no model served (docs/configuration.md, model.servedName). */
const STRANDED_KEYS = "live keys may use no model the configuration serves (their allow-list names none): every request they make is refused until it names one; change their allow-list (manage-keys update --key <name> --models <served>) (docs/configuration.md, model.servedName)";

const CONFIGURED_KEYS_LEFT = "SHIM_CONFIG is not set: the database's live keys from a configuration are neither revoked nor updated (a key taken out of it keeps working; a changed tier, allow-list or secret is not applied) until a start with SHIM_CONFIG";

const REVOKED_CONFIGURED_KEYS = "configured bootstrap keys are revoked in the database (a revoke by hand, or reap-expired's): their requests get 401, and the stack's apiKeys output still shows them; a revoked key cannot be brought back: give each a new id (pulumi up --replace of its <tenant>-key-<name>-id resource, docs/operations.md) or, for a shim you run yourself, a new id and hash in SHIM_CONFIG's bootstrapKeys";
