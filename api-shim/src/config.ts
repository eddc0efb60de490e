import { parse as parseYaml } from "yaml";
import { coversEveryAddress, isCidr } from "./client-address.ts";
import { isKeyId } from "./keys.ts";
import { formatCredits, MAX_BALANCE_MICRO, parseCredits } from "./money.ts";
import { parseDatabaseUrl } from "./store/database-url.ts";
import { isKeyName, isModelName } from "./text.ts";

/**
 * The one place that reads the environment and SHIM_CONFIG. `parseShimConfig` is pure: it takes
 * the environment and a file reader, and returns a frozen, typed object or throws one
 * ConfigError listing every problem, each naming the variable or key, the bad value and what is
 * allowed. (One exception: the TLS files a postgres:// SHIM_DATABASE_URL names are read by the
 * driver's own parser, which checks the URL as the store will use it: database-url.ts.)
 */

export interface TierLimits {
  readonly rpm: number | null; // null = unlimited
  readonly tpm: number | null;
  /** Requests of one key in flight at once (a stream counts until it ends); null = no cap. */
  readonly concurrency: number | null;
}
export interface ModelConfig {
  readonly name: string;
  /** Bounds the completion-token hold when a request has no max_tokens. */
  readonly maxModelLen: number | null;
  /** The upstream understands stream_options.continuous_usage_stats (vLLM does; LiteLLM may not). */
  readonly continuousUsage: boolean;
  /** The upstream takes /v1/completions prompts that are not text, token IDs and `prompt_embeds` (vLLM does; LiteLLM does not). */
  readonly tokenPrompts: boolean;
}
/** Token prices in µc per 1,000 tokens. */
export interface ModelPrice {
  readonly promptPer1k: number;
  readonly completionPer1k: number;
}
export interface BootstrapKey {
  readonly id: string;
  readonly name: string;
  readonly hash: string;
  readonly credits: number; // µc, granted once
  readonly tier: string;
  readonly models: readonly string[] | null;
}
export interface Pricing {
  readonly request: number; // µc
  readonly batchRequest: number; // µc
  readonly models: ReadonlyMap<string, ModelPrice>;
}
export interface ShimConfig {
  readonly port: number;
  readonly host: string;
  readonly upstreamUrl: string;
  readonly upstreamApiKey: string | null;
  /** SHIM_CONFIG's path; null when unset (then there are no configuration keys to keep in step). */
  readonly configFile: string | null;
  /** An extra URL /ready requires a 2xx from: the model server behind a proxy (vLLM's /health behind LiteLLM). */
  readonly readyUrl: string | null;
  readonly databaseUrl: string;
  readonly adminToken: string | null;
  readonly trustProxy: readonly string[];
  readonly upstreamTimeoutMs: number;
  readonly streamIdleTimeoutMs: number;
  readonly drainTimeoutMs: number;
  readonly maxBodyBytes: number;
  /** Largest non-streamed answer relayed: it is read whole (the headers carry its charge). */
  readonly maxAnswerBytes: number;
  /** Bytes that non-streamed answers may hold at once, across requests (answer-memory.ts). */
  readonly answerMemoryBytes: number;
  readonly logLevel: string;
  readonly logPretty: boolean;
  readonly pricing: Pricing;
  readonly tiers: ReadonlyMap<string, TierLimits>;
  readonly unauthenticatedRpm: number | null;
  readonly defaultTier: string;
  /** When set, the only model names accepted. */
  readonly models: ReadonlyMap<string, ModelConfig> | null;
  readonly bootstrapKeys: readonly BootstrapKey[];
}

/** 1 credit per request, 2 with `?batch=1` (seed 001), in µc. */
export const DEFAULT_REQUEST_PRICES = { request: 1_000_000, batchRequest: 2_000_000 } as const;

export const DEFAULT_TIERS: ReadonlyMap<string, TierLimits> = new Map([
  ["free", { rpm: 10, tpm: 10_000, concurrency: null }],
  ["developer", { rpm: 100, tpm: 100_000, concurrency: null }],
  ["pro", { rpm: 500, tpm: 500_000, concurrency: null }],
  ["enterprise", { rpm: null, tpm: null, concurrency: null }],
]);

export class ConfigError extends Error {
  readonly problems: readonly string[];
  constructor(problems: string[]) {
    super(`invalid api-shim configuration:\n  - ${problems.join("\n  - ")}`);
    this.name = "ConfigError";
    this.problems = problems;
  }
}

type Env = Readonly<Record<string, string | undefined>>;
const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];
const KEY_HASH = /^sha256:[0-9a-f]{64}$/;
const show = (v: unknown): string => JSON.stringify(v) ?? String(v);

/**
 * An http(s) URL as a log line or a message may show it: never whole, since a password, a token
 * or a key in it would reach the logs. User info becomes `***@`, a query or fragment `?…`;
 * unparseable (or not http), it is shown only up to where user info, a query or a fragment could
 * start.
 */
export function shownUrl(v: string): string {
  try {
    const u = new URL(v);
    if (u.protocol === "http:" || u.protocol === "https:") {
      const credentials = u.username !== "" || u.password !== "";
      return `${u.protocol}//${credentials ? "***@" : ""}${u.host}${u.pathname}${u.search || u.hash ? "?…" : ""}`;
    }
  } catch {}
  return v.includes("://") ? `${v.slice(0, v.indexOf("://") + 3)}…` : v.includes("@") ? "…" : v.replace(/[?#].*$/, "…");
}

/** The shortest SHIM_ADMIN_TOKEN accepted: 16 characters, ~95 bits even from hex digits. */
export const MIN_ADMIN_TOKEN_LENGTH = 16;

/**
 * What SHIM_ADMIN_TOKEN and SHIM_UPSTREAM_API_KEY, sent in headers, are made of: printable ASCII
 * and spaces (an admin passphrase worked before, and still does), without angle brackets (a
 * placeholder's). Beyond ASCII a client's bytes would not match (Node reads header bytes as
 * Latin-1), and fetch refuses a control character or one beyond Latin-1 in every request.
 */
const HEADER_TOKEN = /^[\t\x20-\x3b=\x3f-\x7e]+$/;

export function parseShimConfig(env: Env, readFile: (path: string) => string): ShimConfig {
  const problems: string[] = [];
  const bad = (where: string, value: unknown, allowed: string) =>
    problems.push(`${where}: ${show(value)} is not valid; expected ${allowed}`);

  const int = (name: string, def: number, min: number, max: number): number => {
    const raw = env[name];
    if (raw === undefined || raw === "") return def;
    const n = Number(raw);
    if (!/^\d+$/.test(raw.trim()) || n < min || n > max) {
      bad(name, raw, `an integer from ${min} to ${max}`);
      return def;
    }
    return n;
  };
  const str = (name: string): string | null => {
    const v = env[name];
    return v === undefined || v.trim() === "" ? null : v.trim();
  };
  /** False, after reporting, when `value` is set and not HEADER_TOKEN (never shown: a secret). */
  const headerToken = (name: string, value: string | null, why: string, expected: string): boolean => {
    if (value === null || HEADER_TOKEN.test(value)) return true;
    problems.push(`${name}: has a character other than ASCII letters, digits, punctuation and spaces (< or >, as in a placeholder, a control character, or one beyond ASCII, ${why}); expected ${expected}`);
    return false;
  };

  const port = int("SHIM_PORT", 8080, 0, 65535);
  // `withoutCredentials`: what to do instead of putting credentials in the URL.
  const httpUrl = (name: string, example: string, withoutCredentials: string): string | null => {
    const v = str(name);
    if (v === null) return null;
    let ok = false;
    let credentials = false;
    const shown = shownUrl(v);
    try {
      const u = new URL(v);
      credentials = u.username !== "" || u.password !== "";
      ok = (u.protocol === "http:" || u.protocol === "https:") && !u.search && !u.hash && !credentials;
    } catch {}
    if (credentials) problems.push(`${name}: ${show(shown)} has credentials in it, which would not be sent (only the origin is used); ${withoutCredentials}`);
    else if (!ok) bad(name, shown, `an http(s) URL without query, e.g. ${example}`);
    return v;
  };
  const upstreamUrl = httpUrl("SHIM_UPSTREAM_URL", "http://litellm:4000/v1", "give the upstream's key in SHIM_UPSTREAM_API_KEY");
  if (upstreamUrl === null) problems.push("SHIM_UPSTREAM_URL: is required; expected the upstream's base URL including /v1, e.g. http://litellm:4000/v1");
  const readyUrl = httpUrl("SHIM_READY_URL", "http://vllm:8000/health", "the probe sends no credentials, so give a URL that answers without them, such as vLLM's /health");
  const trustProxy = (str("SHIM_TRUST_PROXY") ?? "").split(",").map((s) => s.trim()).filter(Boolean);
  // Every peer trusted: any client could choose its own address (its rate-limit bucket) and request id.
  const everyone = "the proxy's own addresses, not every address (a /0, or entries covering every IPv4 or every IPv6 address, would let any client choose the address it is counted by)";
  const trustProblems = problems.length;
  for (const cidr of trustProxy) {
    if (!isCidr(cidr)) bad("SHIM_TRUST_PROXY", cidr, "comma-separated IP addresses or CIDRs, e.g. 172.16.0.0/12");
    else if (coversEveryAddress([cidr])) bad("SHIM_TRUST_PROXY", cidr, everyone);
  }
  if (problems.length === trustProblems && coversEveryAddress(trustProxy)) bad("SHIM_TRUST_PROXY", trustProxy.join(","), everyone);
  const logLevel = (str("LOG_LEVEL") ?? "info").toLowerCase();
  if (!LOG_LEVELS.includes(logLevel)) bad("LOG_LEVEL", logLevel, LOG_LEVELS.join(" | "));
  // Only "1" ever took effect: "true" or "yes" was ignored without a word.
  const logPretty = str("SHIM_LOG_PRETTY") ?? "0";
  if (logPretty !== "0" && logPretty !== "1") bad("SHIM_LOG_PRETTY", logPretty, "1 to pretty-print, or 0 or unset");

  const databaseUrl = str("SHIM_DATABASE_URL") ?? "sqlite:./data/shim.db";
  try {
    parseDatabaseUrl(databaseUrl);
  } catch (e) {
    problems.push((e as Error).message);
  }
  // The messages do not repeat the token (it is a secret).
  const adminToken = str("SHIM_ADMIN_TOKEN");
  // .env.example's `<shim-admin-token: openssl rand -hex 32>` left in place is published in the
  // repository: /admin would be guarded by no secret at all.
  if (adminToken !== null && /^<[^>]*>$/.test(adminToken)) {
    problems.push("SHIM_ADMIN_TOKEN: is still a placeholder, as in .env.example (<…>); set a secret of your own (random: openssl rand -hex 32)");
  } else if (headerToken("SHIM_ADMIN_TOKEN", adminToken, "whose bytes a client's would not match", "ASCII letters, digits, punctuation and spaces (random: openssl rand -hex 32)") &&
    adminToken !== null && adminToken.length < MIN_ADMIN_TOKEN_LENGTH) {
    // A short admin token could be guessed.
    problems.push(`SHIM_ADMIN_TOKEN: is ${adminToken.length} characters long; expected at least ${MIN_ADMIN_TOKEN_LENGTH} (random: openssl rand -hex 24; the Pulumi program makes 48)`);
  }
  // Sent as `Authorization: Bearer <key>`: one a header cannot carry failed every request (502) and /ready.
  const upstreamApiKey = str("SHIM_UPSTREAM_API_KEY");
  if (upstreamApiKey !== null && /^bearer\s/i.test(upstreamApiKey)) problems.push('SHIM_UPSTREAM_API_KEY: starts with "Bearer ", which the shim adds itself; expected the key alone');
  else headerToken("SHIM_UPSTREAM_API_KEY", upstreamApiKey, "which a header cannot carry as typed", "the upstream's key as it was issued");
  const configFile = str("SHIM_CONFIG");
  const file = parseFileConfig(configFile, readFile, problems, bad);
  const timeouts = {
    upstreamTimeoutMs: int("SHIM_UPSTREAM_TIMEOUT_MS", 120_000, 1, 3_600_000),
    streamIdleTimeoutMs: int("SHIM_STREAM_IDLE_TIMEOUT_MS", 60_000, 1, 3_600_000),
    drainTimeoutMs: int("SHIM_DRAIN_TIMEOUT_MS", 23_000, 0, 3_600_000),
    maxBodyBytes: int("SHIM_MAX_BODY_BYTES", 8 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
    maxAnswerBytes: int("SHIM_MAX_ANSWER_BYTES", 256 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
    answerMemoryBytes: int("SHIM_ANSWER_MEMORY_BYTES", 512 * 1024 * 1024, 1024, 64 * 1024 * 1024 * 1024),
  };

  if (problems.length > 0) throw new ConfigError(problems);
  return deepFreeze({
    port,
    host: str("SHIM_HOST") ?? "0.0.0.0",
    upstreamUrl: (upstreamUrl ?? "").replace(/\/+$/, ""),
    upstreamApiKey,
    configFile,
    readyUrl,
    databaseUrl,
    adminToken,
    trustProxy,
    ...timeouts,
    logLevel,
    logPretty: logPretty === "1",
    ...file,
  });
}

type FileConfig = Pick<ShimConfig, "pricing" | "tiers" | "unauthenticatedRpm" | "defaultTier" | "models" | "bootstrapKeys">;
type Bad = (where: string, value: unknown, allowed: string) => void;

function parseFileConfig(path: string | null, readFile: (p: string) => string, problems: string[], bad: Bad): FileConfig {
  let doc: unknown = {};
  if (path !== null) {
    try {
      doc = parseYaml(readFile(path)) ?? {};
    } catch (e) {
      problems.push(`SHIM_CONFIG: cannot read or parse ${show(path)}: ${(e as Error).message.split("\n")[0]}`);
    }
  }
  const at = (k: string) => `SHIM_CONFIG ${k}`;
  const root = obj(doc, "SHIM_CONFIG", ["pricing", "tiers", "unauthenticatedRpm", "defaultTier", "models", "bootstrapKeys"], bad);

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
    const po = obj(p, at(`pricing.models.${name}`), ["promptPer1k", "completionPer1k"], bad);
    prices.set(name, {
      promptPer1k: credits(po.promptPer1k, at(`pricing.models.${name}.promptPer1k`), 0),
      completionPer1k: credits(po.completionPer1k, at(`pricing.models.${name}.completionPer1k`), 0),
    });
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
  const tiers = new Map(DEFAULT_TIERS);
  for (const [name, t] of Object.entries(obj(root.tiers, at("tiers"), null, bad))) {
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
  if (root.models !== undefined) {
    models = new Map();
    if (!Array.isArray(root.models)) bad(at("models"), root.models, "a list of { name, maxModelLen?, continuousUsage?, tokenPrompts? }");
    else
      root.models.forEach((m, i) => {
        const mo = obj(m, at(`models[${i}]`), ["name", "maxModelLen", "continuousUsage", "tokenPrompts"], bad);
        if (!isModelName(mo.name)) return bad(at(`models[${i}].name`), mo.name, "a model name: 1 to 256 characters, without control characters");
        if (models!.has(mo.name)) return bad(at(`models[${i}].name`), mo.name, "a name no other entry of models has");
        const len = mo.maxModelLen === undefined || mo.maxModelLen === null ? null : limit(mo.maxModelLen, at(`models[${i}].maxModelLen`), null);
        for (const flag of ["continuousUsage", "tokenPrompts"]) if (mo[flag] !== undefined && typeof mo[flag] !== "boolean") bad(at(`models[${i}].${flag}`), mo[flag], "true or false");
        models!.set(mo.name, { name: mo.name, maxModelLen: len, continuousUsage: mo.continuousUsage === true, tokenPrompts: mo.tokenPrompts !== false });
      });
  }

  // A price for a model that is not served is a typo (`qwen2.5-7B`): the model would be charged
  // only the request price. (infra/config checks the same for a stack's pricing.)
  const configuredModel = models && `a configured model: ${[...models.keys()].join(" | ")}`;
  if (models) for (const name of prices.keys()) if (!models.has(name)) bad(at(`pricing.models.${name}`), name, configuredModel!);

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
    if (typeof ko.hash !== "string" || !KEY_HASH.test(ko.hash)) bad(w("hash"), ko.hash, "sha256:<64 lowercase hex digits> of the full key");
    const tier = ko.tier === undefined ? defaultTier : String(ko.tier);
    if (!tiers.has(tier)) bad(w("tier"), ko.tier, `one of the tiers: ${tierNames}`);
    let allow: string[] | null = null;
    if (ko.models !== undefined && ko.models !== null) {
      // As POST /admin/keys: an empty list would allow no model at all.
      if (!Array.isArray(ko.models) || ko.models.length === 0 || !ko.models.every(isModelName)) bad(w("models"), ko.models, "a non-empty list of model names, or leave it out for all models");
      else {
        allow = ko.models as string[];
        for (const m of allow) if (models && !models.has(m)) bad(w("models"), m, configuredModel!);
      }
    }
    // As POST /admin/keys: a NUL, say, would fail the Postgres store at every start.
    if (ko.name !== undefined && ko.name !== null && !isKeyName(ko.name)) bad(w("name"), ko.name, "a name of 1 to 200 characters, without control characters (or leave it out for the id)");
    bootstrapKeys.push({
      id,
      name: isKeyName(ko.name) ? ko.name : id,
      hash: String(ko.hash),
      credits: balance(ko.credits, w("credits")),
      tier,
      models: allow,
    });
  });

  return {
    pricing,
    tiers,
    unauthenticatedRpm: limit(root.unauthenticatedRpm, at("unauthenticatedRpm"), 60),
    defaultTier,
    models,
    bootstrapKeys,
  };
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

function deepFreeze<T>(o: T): T {
  if (o && typeof o === "object" && !Object.isFrozen(o)) {
    Object.freeze(o);
    if (!(o instanceof Map)) for (const v of Object.values(o)) deepFreeze(v);
    else for (const v of o.values()) deepFreeze(v);
  }
  return o;
}
