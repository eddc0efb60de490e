import { parse as parseYaml } from "yaml";
import type { BootstrapKey, ModelConfig, ModelPrice, Pricing, ShimConfig, TierLimits } from "./config.ts";
import { isKeyId } from "./auth/keys.ts";
import { CACHE_ISOLATIONS, isCacheIsolation } from "./requests/cache-salt.ts";
import { CACHED_PRICE_WHY, cachedPriceFits } from "./money/cache-reads.ts";
import { formatCredits, MAX_BALANCE_MICRO, parseCredits } from "./money/money.ts";
import { holdsKey, redactKeysAsMade, redactLoggedKeys, redactUpstreamSecrets, secretRedactor } from "./observability/redaction.ts";
import { DEFAULT_STRUCTURED_LIMITS, isStructuredLimit, NO_STRUCTURED_LIMITS, STRUCTURED_LIMIT_NAMES, type StructuredLimits } from "./requests/structured-limits.ts";
import { isKeyName, isModelName, MAX_KEY_NAME_CHARACTERS } from "./names.ts";
import { type NamedSecrets, secretIn, shownValue } from "./shown-value.ts";
import { modelNamed } from "./requests/model-aliases.ts";

/** SHIM_CONFIG's file (pricing, tiers, models, bootstrap keys, cache isolation), read for parseShimConfig (config.ts), with the defaults it starts from. */

/** 1 credit per request, 2 with `?batch=1` (seed 001), in µc. */
export const DEFAULT_REQUEST_PRICES = { request: 1_000_000, batchRequest: 2_000_000 } as const;

export const DEFAULT_TIERS: ReadonlyMap<string, TierLimits> = new Map([
  ["free", { rpm: 10, tpm: 10_000, concurrency: null }],
  ["developer", { rpm: 100, tpm: 100_000, concurrency: null }],
  ["pro", { rpm: 500, tpm: 500_000, concurrency: null }],
  ["enterprise", { rpm: null, tpm: null, concurrency: null }],
]);

const KEY_HASH = /^sha256:[0-9a-f]{64}$/;
/** A model's largest mediaPartTokens: a context's worth (as the Pulumi program bounds maxModelLen), far below 2^53 × the parts. */
const MAX_MEDIA_PART_TOKENS = 1_048_576;
export const show = (v: unknown): string => JSON.stringify(v) ?? String(v);

/** How SHIM_CONFIG takes a bootstrap key: as its hash, never itself. */
const AS_HASH = `sha256: and the 64 lowercase hex digits of the key's SHA-256 (printf %s "$KEY" | sha256sum)`;

/**
 * A setting's problem, as parseShimConfig reports every one: `<where>: <value> is not valid;
 * expected <allowed>`. The problems go to stderr (docker compose logs), and a bootstrap key pasted
 * into the wrong field (an id, a list item, bootstrapKeys itself, a mapping key, a tier's name)
 * would be repeated there: a value holding a key anywhere as keys are made, with its `sk-gs-` or
 * without (`<id>_<secret>`, which the id field's hint may lead to; holdsKey), is called a key and
 * never shown, and one in the path (a mapping key) or in what is expected (the configured tiers'
 * names) is hidden. This is the one place that guards SHIM_CONFIG's messages for it. Any other
 * secret (a provider's key, the deployment's own `secrets`: secretIn, shown-value.ts) is not
 * repeated either. A value the log would take for a key (a secret alone, or glued to letters:
 * redactLoggedKeys) is more often a name here (a served LoRA's `AcmeCustomerSupportAdapterV2Final`):
 * it is shown as a variable's bad value is, by its first characters and its length (shownValue),
 * and in the path or what is expected (names the operator wrote, to be told apart) whole. Other
 * values are shown whole, as the file has them (prices, names: what the operator looks for).
 */
export function problem(where: string, value: unknown, allowed: string, secrets: NamedSecrets = {}): string {
  // The path and what is expected are shown with any secret in them hidden.
  const hide = (text: string) => redactUpstreamSecrets(redactKeysAsMade(text), "", secretRedactor(Object.values(secrets)));
  const at = hide(where);
  const expected = hide(allowed);
  const text = show(value);
  if (!holdsKey(text)) {
    const asText = typeof value === "string" ? value : text;
    const secret = secretIn(asText, secrets);
    const shown = secret !== null ? `${secret} (not repeated)` : redactLoggedKeys(text) !== text ? shownValue(asText, secrets) : text;
    return `${at}: ${shown} is not valid; expected ${expected}`;
  }
  // The hash field's own expectation is already the hint.
  return `${at}: is a key (not repeated); expected ${expected}, not a key${allowed === AS_HASH ? "" : `; SHIM_CONFIG takes a bootstrap key only as its hash, in bootstrapKeys[].hash: ${AS_HASH}`}`;
}

type FileConfig = Pick<ShimConfig, "pricing" | "tiers" | "unauthenticatedRpm" | "defaultTier" | "models" | "modelAliases" | "bootstrapKeys" | "cacheIsolation" | "structuredOutputs">;
type Bad = (where: string, value: unknown, allowed: string) => void;

export function parseFileConfig(path: string | null, readFile: (p: string) => string, problems: string[], bad: Bad): FileConfig {
  let doc: unknown = {};
  if (path !== null) {
    try {
      doc = parseYaml(readFile(path)) ?? {};
    } catch (e) {
      // The parser's first line may quote an alias or a tag: a key pasted as one is hidden.
      problems.push(`SHIM_CONFIG: cannot read or parse ${show(path)}: ${redactLoggedKeys((e as Error).message.split("\n")[0]!)}`);
    }
  }
  const at = (k: string) => `SHIM_CONFIG ${k}`;
  const root = obj(doc, "SHIM_CONFIG", ["pricing", "tiers", "unauthenticatedRpm", "defaultTier", "models", "bootstrapKeys", "cacheIsolation", "structuredOutputs"], bad);

  const pricingDoc = obj(root.pricing, at("pricing"), ["request", "batchRequest", "models"], bad);
  const credits = (v: unknown, where: string, def: number): number => {
    if (v === undefined) return def;
    const micro = parseCredits(v);
    if (micro === undefined || micro < 0) {
      bad(where, v, "a non-negative number of credits with at most 6 decimals");
      return def;
    }
    return micro;
  };
  /** A key's starting credits: as the admin API's, at most MAX_BALANCE_MICRO. */
  const balance = (v: unknown, where: string): number => {
    const micro = credits(v, where, 0);
    if (micro <= MAX_BALANCE_MICRO) return micro;
    bad(where, v, `at most ${formatCredits(MAX_BALANCE_MICRO)} credits`);
    return 0;
  };
  const prices = new Map<string, ModelPrice>();
  for (const [name, p] of Object.entries(obj(pricingDoc.models, at("pricing.models"), null, bad))) {
    const po = obj(p, at(`pricing.models.${name}`), ["promptPer1k", "completionPer1k", "cachedPromptPer1k"], bad);
    const where = (member: string) => at(`pricing.models.${name}.${member}`);
    const before = problems.length;
    const promptPer1k = credits(po.promptPer1k, where("promptPer1k"), 0);
    const promptRefused = problems.length > before; // its own problem says so; no second one below
    const price: { -readonly [K in keyof ModelPrice]: ModelPrice[K] } = { promptPer1k, completionPer1k: credits(po.completionPer1k, where("completionPer1k"), 0) };
    // Set only where written: absent, a cached prompt token is a prompt token (pricing.ts).
    if (po.cachedPromptPer1k !== undefined) {
      const cached = credits(po.cachedPromptPer1k, where("cachedPromptPer1k"), -1); // -1: refused
      if (!cachedPriceFits(cached, promptPer1k) && !promptRefused) bad(where("cachedPromptPer1k"), po.cachedPromptPer1k, `at most promptPer1k (${formatCredits(promptPer1k)}): ${CACHED_PRICE_WHY}`);
      else if (cached >= 0) price.cachedPromptPer1k = cached;
    }
    prices.set(name, price);
  }
  const pricing: Pricing = {
    request: credits(pricingDoc.request, at("pricing.request"), DEFAULT_REQUEST_PRICES.request),
    batchRequest: credits(pricingDoc.batchRequest, at("pricing.batchRequest"), DEFAULT_REQUEST_PRICES.batchRequest),
    models: prices,
  };

  const limit = (v: unknown, where: string, def: number | null): number | null => {
    if (v === undefined) return def;
    if (v === null) return null;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 1) {
      bad(where, v, "a positive integer, or null for unlimited");
      return def;
    }
    return v;
  };
  /** A model's floor for a media part's estimate (ModelConfig.mediaPartTokens): 0, none, when absent. */
  const mediaPartTokens = (v: unknown, where: string): number => {
    if (v === undefined || v === null) return 0;
    if (typeof v === "number" && Number.isSafeInteger(v) && v >= 0 && v <= MAX_MEDIA_PART_TOKENS) return v;
    bad(where, v, `a non-negative integer up to ${MAX_MEDIA_PART_TOKENS} (the fewest prompt tokens a media part is estimated at; 0: no floor)`);
    return 0;
  };
  const tiers = new Map(DEFAULT_TIERS);
  for (const [name, t] of Object.entries(obj(root.tiers, at("tiers"), null, bad))) {
    // `free: null` reads as "unlimited" to whoever writes it, but it would change nothing. One
    // problem: a new tier's missing rpm and tpm would only say the same again.
    if (t === null) {
      bad(at(`tiers.${name}`), t, "a mapping of rpm, tpm and concurrency; for no limit, set each to null");
      continue;
    }
    const to = obj(t, at(`tiers.${name}`), ["rpm", "tpm", "concurrency"], bad);
    // A new tier names both limits (null for unlimited), as the Pulumi program requires: one left
    // out would otherwise be unlimited without anyone having written so.
    if (!tiers.has(name) && (to.rpm === undefined || to.tpm === undefined)) bad(at(`tiers.${name}`), t, "both rpm and tpm for a new tier (a number, or null for unlimited)");
    const base = tiers.get(name) ?? { rpm: null, tpm: null, concurrency: null };
    tiers.set(name, {
      rpm: limit(to.rpm, at(`tiers.${name}.rpm`), base.rpm),
      tpm: limit(to.tpm, at(`tiers.${name}.tpm`), base.tpm),
      concurrency: limit(to.concurrency, at(`tiers.${name}.concurrency`), base.concurrency),
    });
  }
  const tierNames = [...tiers.keys()].join(" | ");
  const defaultTier = root.defaultTier === undefined ? "free" : String(root.defaultTier);
  if (!tiers.has(defaultTier)) bad(at("defaultTier"), root.defaultTier, `one of the tiers: ${tierNames}`);

  let models: Map<string, ModelConfig> | null = null;
  /** Each model's aliases as written, checked once every model's name is known (modelAliases). */
  const written: { model: string; at: string; aliases: unknown }[] = [];
  /** Each model's index in models, for a problem naming the entry an alias clashes with. */
  const modelIndex = new Map<string, number>();
  if (root.models !== undefined) {
    models = new Map();
    if (!Array.isArray(root.models)) bad(at("models"), root.models, "a list of { name, aliases?, maxModelLen?, maxOutputTokens?, mediaPartTokens?, provider?, continuousUsage?, tokenPrompts? }");
    else
      root.models.forEach((m, i) => {
        const mo = obj(m, at(`models[${i}]`), ["name", "aliases", "maxModelLen", "maxOutputTokens", "mediaPartTokens", "provider", "continuousUsage", "tokenPrompts"], bad);
        if (!isModelName(mo.name)) return bad(at(`models[${i}].name`), mo.name, "a model name: 1 to 256 characters, without control characters");
        if (models!.has(mo.name)) return bad(at(`models[${i}].name`), mo.name, "a name no other entry of models has");
        const bound = (k: string) => (mo[k] === undefined || mo[k] === null ? null : limit(mo[k], at(`models[${i}].${k}`), null));
        const len = bound("maxModelLen");
        const out = bound("maxOutputTokens");
        const media = mediaPartTokens(mo.mediaPartTokens, at(`models[${i}].mediaPartTokens`));
        for (const flag of ["provider", "continuousUsage", "tokenPrompts"]) if (mo[flag] !== undefined && typeof mo[flag] !== "boolean") bad(at(`models[${i}].${flag}`), mo[flag], "true or false");
        if (mo.aliases !== undefined) written.push({ model: mo.name, at: at(`models[${i}].aliases`), aliases: mo.aliases });
        modelIndex.set(mo.name, i);
        models!.set(mo.name, { name: mo.name, maxModelLen: len, ...(out !== null ? { maxOutputTokens: out } : {}), ...(media > 0 ? { mediaPartTokens: media } : {}), ...(mo.provider === true ? { provider: true } : {}), continuousUsage: mo.continuousUsage === true, tokenPrompts: mo.tokenPrompts !== false });
      });
  }

  const modelAliases = aliasMap(modelIndex, written, bad);
  // A price for a model that is not served is a typo (`qwen2.5-7B`): the model would be charged
  // only the request price. One for an alias would split a model's invoice by the name asked:
  // an alias is charged its model's price. (infra/config checks the same for a stack's pricing.)
  const configuredModel = models && `a configured model: ${[...models.keys()].join(" | ")}`;
  for (const name of prices.keys()) {
    const of = modelAliases.get(name);
    if (of !== undefined) bad(at(`pricing.models.${name}`), name, `a configured model's name: it is an alias of ${of}, charged at ${of}'s price (price ${of})`);
    else if (models && !models.has(name)) bad(at(`pricing.models.${name}`), name, configuredModel!);
  }

  const bootstrapKeys: BootstrapKey[] = [];
  if (root.bootstrapKeys !== undefined && !Array.isArray(root.bootstrapKeys)) bad(at("bootstrapKeys"), root.bootstrapKeys, "a list of { id, name, hash, credits, tier, models? }");
  const seen = new Set<string>();
  (Array.isArray(root.bootstrapKeys) ? root.bootstrapKeys : []).forEach((k, i) => {
    const w = (f: string) => at(`bootstrapKeys[${i}].${f}`);
    const ko = obj(k, at(`bootstrapKeys[${i}]`), ["id", "name", "hash", "credits", "tier", "models"], bad);
    const id = String(ko.id ?? "");
    if (!isKeyId(id)) bad(w("id"), ko.id, "12 letters or digits (the id part of sk-gs-<id>_<secret>)");
    else if (seen.has(id)) bad(w("id"), ko.id, "an id not used by another bootstrap key");
    seen.add(id);
    if (typeof ko.hash !== "string" || !KEY_HASH.test(ko.hash)) problems.push(notAHash(w("hash"), ko.hash));
    const tier = ko.tier === undefined ? defaultTier : String(ko.tier);
    if (!tiers.has(tier)) bad(w("tier"), ko.tier, `one of the tiers: ${tierNames}`);
    let allow: string[] | null = null;
    if (ko.models !== undefined && ko.models !== null) {
      // As POST /admin/keys: an empty list would allow no model at all.
      if (!Array.isArray(ko.models) || ko.models.length === 0 || !ko.models.every(isModelName)) bad(w("models"), ko.models, "a non-empty list of model names, or leave it out for all models");
      else {
        // An alias is allowed with its model: kept as the model's name, as the admin API keeps it.
        allow = [...new Set((ko.models as string[]).map((m) => modelNamed({ modelAliases }, m)))];
        for (const m of allow) if (models && !models.has(m)) bad(w("models"), m, configuredModel!);
      }
    }
    // As POST /admin/keys: a NUL, say, would fail the Postgres store at every start.
    if (ko.name !== undefined && ko.name !== null && !isKeyName(ko.name)) bad(w("name"), ko.name, `a name of 1 to ${MAX_KEY_NAME_CHARACTERS} characters, without control characters (or leave it out for the id)`);
    bootstrapKeys.push({
      id,
      name: isKeyName(ko.name) ? ko.name : id,
      hash: String(ko.hash),
      credits: balance(ko.credits, w("credits")),
      tier,
      models: allow,
    });
  });

  // Absent: `shared`, as before the setting existed. Anything else is refused, never read as
  // `shared`: a typo (`Key`, `per-key`) would otherwise leave the keys sharing the cache unseen.
  const cacheIsolation = root.cacheIsolation === undefined ? "shared" : root.cacheIsolation;
  if (!isCacheIsolation(cacheIsolation)) bad(at("cacheIsolation"), root.cacheIsolation, `${CACHE_ISOLATIONS.join(" | ")} (key: each key its own part of vLLM's prefix cache)`);

  // Each limit merged over OpenAI's (the defaults), null for none; `false` turns the whole check off.
  let structuredOutputs: StructuredLimits = DEFAULT_STRUCTURED_LIMITS;
  if (root.structuredOutputs === false) structuredOutputs = NO_STRUCTURED_LIMITS;
  else if (root.structuredOutputs !== undefined && (root.structuredOutputs === null || typeof root.structuredOutputs !== "object" || Array.isArray(root.structuredOutputs))) bad(at("structuredOutputs"), root.structuredOutputs, "a mapping of limits, or false for no check");
  else {
    const so = obj(root.structuredOutputs, at("structuredOutputs"), STRUCTURED_LIMIT_NAMES, bad);
    structuredOutputs = Object.fromEntries(STRUCTURED_LIMIT_NAMES.map((k) => {
      const set = so[k] !== undefined;
      if (set && !isStructuredLimit(so[k])) bad(at(`structuredOutputs.${k}`), so[k], "a positive integer, or null for unlimited");
      return [k, set && isStructuredLimit(so[k]) ? so[k] : DEFAULT_STRUCTURED_LIMITS[k]];
    })) as unknown as StructuredLimits;
  }

  return {
    structuredOutputs,
    cacheIsolation: isCacheIsolation(cacheIsolation) ? cacheIsolation : "shared",
    pricing,
    tiers,
    unauthenticatedRpm: limit(root.unauthenticatedRpm, at("unauthenticatedRpm"), 60),
    defaultTier,
    models,
    modelAliases,
    bootstrapKeys,
  };
}

/**
 * models[].aliases (`written`) as a map of each alias to its model (`modelIndex`: the models' names
 * and their entries' indexes), in the order written. An alias
 * is a model name (isModelName) that no model has (a request for it would be two models' at once)
 * and no other alias has (it would name two models).
 */
function aliasMap(modelIndex: ReadonlyMap<string, number>, written: readonly { model: string; at: string; aliases: unknown }[], bad: Bad): Map<string, string> {
  const aliases = new Map<string, string>();
  for (const { model, at, aliases: list } of written) {
    if (!Array.isArray(list)) {
      bad(at, list, "a list of other names clients may send for this model");
      continue;
    }
    list.forEach((alias, j) => {
      if (!isModelName(alias)) return bad(`${at}[${j}]`, alias, "a model name: 1 to 256 characters, without control characters");
      const index = modelIndex.get(alias);
      if (index !== undefined) return bad(`${at}[${j}]`, alias, `a name that is not a model's (models[${index}] is ${alias})`);
      const of = aliases.get(alias);
      if (of !== undefined) return bad(`${at}[${j}]`, alias, `a name no other alias has (it is already an alias of ${of})`);
      aliases.set(alias, model);
    });
  }
  return aliases;
}

/**
 * A bootstrap key's hash that is not one, as a problem that never repeats it: what was written may
 * be the key's secret without its prefix, or a hash mistyped. One holding a key (`sk-gs-…` or
 * `<id>_<secret>`, alone or after `sha256:`) is called a key, as problem() calls one anywhere.
 */
function notAHash(where: string, value: unknown): string {
  if (holdsKey(show(value))) return problem(where, value, AS_HASH);
  const what = value === undefined || value === null ? "missing" : typeof value === "string" ? `a string of ${value.length} characters` : `a ${Array.isArray(value) ? "list" : typeof value === "object" ? "mapping" : typeof value}`;
  return `${where}: is not valid (${what}, not repeated); expected sha256:<64 lowercase hex digits> of the full key`;
}

/** Returns the mapping (or {} after reporting), and reports keys outside `allowed`. */
function obj(v: unknown, where: string, allowed: string[] | null, bad: Bad): Record<string, unknown> {
  if (v === undefined || v === null) return {};
  if (typeof v !== "object" || Array.isArray(v)) {
    bad(where, v, "a mapping");
    return {};
  }
  const o = v as Record<string, unknown>;
  const child = (k: string) => (where === "SHIM_CONFIG" ? `SHIM_CONFIG ${k}` : `${where}.${k}`);
  if (allowed) for (const k of Object.keys(o)) if (!allowed.includes(k)) bad(child(k), k, `one of the keys ${allowed.join(", ")}`);
  return o;
}
