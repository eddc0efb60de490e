import { coversEveryAddress, isCidr } from "./auth/client-address.ts";
import { MAX_AUTHORIZATION_LENGTH } from "./auth/keys.ts";
import { parseFileConfig, problem } from "./config-file.ts";
import { readInstant } from "./requests/period.ts";
import { DEFAULT_BODY_MEMORY_BYTES } from "./limits/body-memory.ts";
import type { CacheIsolation } from "./requests/cache-salt.ts";
import type { StructuredLimits } from "./requests/structured-limits.ts";
import { shownUrlOrValue, shownValue, URL_SCHEME } from "./shown-value.ts";
import { namesPostgres, parseDatabaseUrl } from "./store/database-url.ts";
import { driverEnvironmentProblems } from "./store/postgres-environment.ts";

/**
 * The one entry of the configuration: the environment, and SHIM_CONFIG's file through
 * config-file.ts, which only this module calls. `parseShimConfig` is pure: it takes
 * the environment and a file reader, and returns a frozen, typed object or throws one
 * ConfigError listing every problem, each naming the variable or key, the bad value (as
 * shown-value.ts shows it: never a secret set in the wrong variable) and what is allowed. (One
 * exception: the TLS files a postgres:// SHIM_DATABASE_URL names are read by the driver's own
 * parser, which checks the URL as the store will use it: database-url.ts.)
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
  /**
   * The most tokens one answer of the model may have (a provider's maximum output, where the
   * context is not known): an output's bound without max_tokens; never a ceiling on a request's own
   * (the shim does not send it upstream, so a lower one would cap the charge below the usage).
   */
  readonly maxOutputTokens?: number;
  /**
   * A provider's model behind LiteLLM, not one vLLM serves: vLLM's /v1/completions default of 16
   * tokens does not bound its answers (LiteLLM makes a text completion a chat call), whether or
   * not its maxModelLen is known. A model without maxModelLen is taken as one anyway.
   */
  readonly provider?: boolean;
  /**
   * The fewest prompt tokens each media part (an image, audio, video: content-parts.ts) of a request
   * is estimated at, when the upstream's count never comes (inference-request.ts, promptTokens):
   * the model's count per image (Gemma 3's 256, LLaVA-1.5's 576). Absent (0): no floor, the part's
   * payload alone, a few tokens for a part by URL. Per model, as no fixed count is a lower bound:
   * Qwen2-VL counts 16 for a small image, audio 6 to 25 a second, and an upstream that streams no
   * usage has every stream charged the estimate.
   */
  readonly mediaPartTokens?: number;
  /** The upstream understands stream_options.continuous_usage_stats (vLLM does; LiteLLM may not). */
  readonly continuousUsage: boolean;
  /** The upstream takes /v1/completions prompts that are not text, token IDs and `prompt_embeds` (vLLM does; LiteLLM does not). */
  readonly tokenPrompts: boolean;
}
/**
 * Whether `model` may be a paid provider's (behind LiteLLM) rather than one vLLM serves: not
 * configured (no model list: a shim in front of any OpenAI-compatible server), `provider: true`,
 * or without a maxModelLen (every model vLLM serves has its context known). Such a model's
 * completions are not bounded by vLLM's default of 16 tokens (pricing.ts), and what a provider
 * bills beyond its tokens (cache writes, surcharges) is held for or refused (admission.ts).
 */
export const mayBeProviders = (model: ModelConfig | undefined): boolean => model === undefined || model.provider === true || model.maxModelLen === null;
/**
 * Whether a completions request without a limit (`defaultMaxTokens`) is held at the default of
 * 16 tokens, vLLM's and OpenAI's: for a model vLLM serves. The hold (Pricer.outputBound) and the
 * body sent (upstreamBody, which then adds `"max_tokens":16` for servers without that default)
 * follow this one rule; a provider's model is held as chat and sent nothing.
 */
export const heldAtDefaultMaxTokens = (defaultMaxTokens: boolean | undefined, model: ModelConfig | undefined): boolean => defaultMaxTokens === true && !mayBeProviders(model);
/** Token prices in µc per 1,000 tokens. */
export interface ModelPrice {
  readonly promptPer1k: number;
  readonly completionPer1k: number;
  /** Prompt tokens read from a prompt cache (cache-reads.ts), at most promptPer1k; absent: promptPer1k. */
  readonly cachedPromptPer1k?: number;
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
  /**
   * The admin token being rotated out (SHIM_ADMIN_TOKEN_PREVIOUS), let in as well during a planned
   * rotation's overlap, and until `until` (ms since the epoch; null: until it is unset).
   */
  readonly adminTokenPrevious: { readonly token: string; readonly until: number | null } | null;
  readonly trustProxy: readonly string[];
  readonly upstreamTimeoutMs: number;
  readonly streamIdleTimeoutMs: number;
  readonly drainTimeoutMs: number;
  /** How often the upstream is probed as /ready probes it, for shim_upstream_ready; 0: only when /ready is asked. */
  readonly readyProbeIntervalMs: number;
  /** A key is low on credits under this share of what it had this month (store/low-credits.ts; fleet-status.sh's FLEET_LOW_SHARE). */
  readonly lowCreditsShare: number;
  /** The low-credit gauges are read at most this often (ms; 0: not at all): observability/low-credits.ts. */
  readonly lowCreditsIntervalMs: number;
  readonly maxBodyBytes: number;
  /** Largest non-streamed answer relayed: it is read whole (the headers carry its charge). */
  readonly maxAnswerBytes: number;
  /** Bytes that non-streamed answers may hold at once, across requests (answer-memory.ts). */
  readonly answerMemoryBytes: number;
  /** Bytes that the bodies of requests in flight may hold at once (body-memory.ts). */
  readonly bodyMemoryBytes: number;
  readonly logLevel: string;
  readonly logPretty: boolean;
  readonly pricing: Pricing;
  readonly tiers: ReadonlyMap<string, TierLimits>;
  readonly unauthenticatedRpm: number | null;
  readonly defaultTier: string;
  /** When set, the only model names accepted (with their aliases). */
  readonly models: ReadonlyMap<string, ModelConfig> | null;
  /** Each alias (models[].aliases) and the model it names: requests/model-aliases.ts. Empty without a model list. */
  readonly modelAliases: ReadonlyMap<string, string>;
  readonly bootstrapKeys: readonly BootstrapKey[];
  /**
   * Whose prompts share vLLM's prefix cache (requests/cache-salt.ts): `shared`, every key's (no
   * `cache_salt` added: the body goes as before); `key`, each key's own.
   */
  readonly cacheIsolation: CacheIsolation;
  /** Bounds on the schemas, regexes and grammars a request has vLLM compile (requests/structured-limits.ts); null: none. */
  readonly structuredOutputs: StructuredLimits;
}

export { DEFAULT_REQUEST_PRICES, DEFAULT_TIERS } from "./config-file.ts";

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

/**
 * An http(s) URL as a log line or a message may show it: never whole, since a password, a token
 * or a key in it would reach the logs. User info becomes `***@`, a query or fragment `?…`; with
 * another scheme, or unparseable, its scheme alone (`ftp://…`); no URL at all (a key set in the
 * wrong variable), as shownValue shows a value that is not valid.
 */
export function shownUrl(v: string): string {
  try {
    const u = new URL(v);
    if (u.protocol === "http:" || u.protocol === "https:") {
      const credentials = u.username !== "" || u.password !== "";
      return `${u.protocol}//${credentials ? "***@" : ""}${u.host}${u.pathname}${u.search || u.hash ? "?…" : ""}`;
    }
  } catch {}
  const scheme = URL_SCHEME.exec(v);
  return scheme ? `${scheme[0]}…` : shownValue(v);
}

/** The shortest SHIM_ADMIN_TOKEN accepted: 16 characters, 64 bits from hex digits (openssl rand -hex 8), ~95 from letters and digits. */
export const MIN_ADMIN_TOKEN_LENGTH = 16;
/** The longest: what an Authorization header the shim reads carries after `Bearer ` (a longer one started, and every admin request got 401). */
const MAX_ADMIN_TOKEN_LENGTH = MAX_AUTHORIZATION_LENGTH - "Bearer ".length;

/**
 * What SHIM_ADMIN_TOKEN and SHIM_UPSTREAM_API_KEY, sent in headers, are made of: printable ASCII,
 * spaces and tabs (fetch refuses a control character or one beyond Latin-1 in every request, and
 * Node reads header bytes as Latin-1). ADMIN_TOKEN also refuses angle brackets (a placeholder's;
 * an admin passphrase worked before, and still does). PLACEHOLDER: .env.example's, left in place. */
const HEADER_TOKEN = /^[\t\x20-\x7e]+$/;
const ADMIN_TOKEN = /^[\t\x20-\x3b=\x3f-\x7e]+$/;
const PLACEHOLDER = /^(sk-)?<[^<>]*>$/;

export function parseShimConfig(env: Env, readFile: (path: string) => string): ShimConfig {
  const problems: string[] = [];
  const str = (name: string): string | null => {
    const v = env[name];
    return v === undefined || v.trim() === "" ? null : v.trim();
  };
  // Never repeated in a problem, wherever they were put (shown-value.ts).
  const secrets = { SHIM_ADMIN_TOKEN: str("SHIM_ADMIN_TOKEN"), SHIM_ADMIN_TOKEN_PREVIOUS: str("SHIM_ADMIN_TOKEN_PREVIOUS"), SHIM_UPSTREAM_API_KEY: str("SHIM_UPSTREAM_API_KEY") };
  const bad = (where: string, value: unknown, allowed: string) => problems.push(problem(where, value, allowed, secrets));
  /** A variable's value that is not valid; `parsed`: its form to show when it parsed as what the variable wants (shownValue). */
  const badValue = (name: string, value: string, allowed: string, parsed?: string) =>
    problems.push(`${name}: ${shownValue(value, secrets, parsed)} is not valid; expected ${allowed}`);

  const int = (name: string, def: number, min: number, max: number): number => {
    const raw = env[name];
    if (raw === undefined || raw.trim() === "") return def; // blank is unset, as for the strings
    const n = Number(raw);
    if (!/^\d+$/.test(raw.trim()) || n < min || n > max) {
      // An integer out of range is shown whole, up to 12 digits (more than any bound here has).
      badValue(name, raw, `an integer from ${min} to ${max}`, /^\d{1,12}$/.test(raw.trim()) ? raw.trim() : undefined);
      return def;
    }
    return n;
  };
  /** False, after reporting, when `value` is set and is a PLACEHOLDER or not `rule` (never shown: a secret). */
  const headerToken = (name: string, value: string | null, rule: RegExp, refused: string, expected: string, instead: string): boolean => {
    if (value === null) return true;
    if (PLACEHOLDER.test(value)) {
      problems.push(`${name}: is still a placeholder, as in .env.example (<…>); ${instead}`);
      return false;
    }
    if (!rule.test(value)) {
      problems.push(`${name}: has a character other than ASCII letters, digits, punctuation and spaces (${refused}); expected ${expected}`);
      return false;
    }
    return true;
  };

  const port = int("SHIM_PORT", 8080, 0, 65535);
  // `withoutCredentials`: what to do instead of putting credentials in the URL.
  const httpUrl = (name: string, example: string, withoutCredentials: string): string | null => {
    const v = str(name);
    if (v === null) return null;
    let ok = false;
    let credentials = false;
    // A URL (a scheme and `//`) as shownUrl shows it; anything else, by its first characters.
    const shown = shownUrlOrValue(v, secrets, shownUrl);
    try {
      const u = new URL(v);
      credentials = u.username !== "" || u.password !== "";
      ok = (u.protocol === "http:" || u.protocol === "https:") && !u.search && !u.hash && !credentials;
    } catch {}
    if (credentials) problems.push(`${name}: ${shown} has credentials in it, which would not be sent (only the origin is used); ${withoutCredentials}`);
    else if (!ok) problems.push(`${name}: ${shown} is not valid; expected an http(s) URL without query, e.g. ${example}`);
    return v;
  };
  const upstreamUrl = httpUrl("SHIM_UPSTREAM_URL", "http://litellm:4000/v1", "give the upstream's key in SHIM_UPSTREAM_API_KEY");
  if (upstreamUrl === null) problems.push("SHIM_UPSTREAM_URL: is required; expected the upstream's base URL including /v1, e.g. http://litellm:4000/v1");
  const readyUrl = httpUrl("SHIM_READY_URL", "http://vllm:8000/health", "the probe sends no credentials, so give a URL that answers without them, such as vLLM's /health");
  const trustProxy = (str("SHIM_TRUST_PROXY") ?? "").split(",").map((s) => s.trim()).filter(Boolean);
  // Every peer trusted: any client could choose its own address (its rate-limit bucket) and request id.
  const everyone = "the proxy's own addresses, not every address (a /0, or entries covering every IPv4 or every public IPv6 client address, would let any client choose the address it is counted by)";
  const trustProblems = problems.length;
  for (const cidr of trustProxy) {
    if (!isCidr(cidr)) badValue("SHIM_TRUST_PROXY", cidr, "comma-separated IP addresses or CIDRs, e.g. 172.16.0.0/12");
    else if (coversEveryAddress([cidr])) badValue("SHIM_TRUST_PROXY", cidr, everyone, cidr);
  }
  if (problems.length === trustProblems && coversEveryAddress(trustProxy)) badValue("SHIM_TRUST_PROXY", trustProxy.join(","), everyone, trustProxy.join(","));
  const logLevel = (str("LOG_LEVEL") ?? "info").toLowerCase();
  if (!LOG_LEVELS.includes(logLevel)) badValue("LOG_LEVEL", logLevel, LOG_LEVELS.join(" | "));
  // Only "1" ever took effect: "true" or "yes" was ignored without a word.
  const logPretty = str("SHIM_LOG_PRETTY") ?? "0";
  if (logPretty !== "0" && logPretty !== "1") badValue("SHIM_LOG_PRETTY", logPretty, "1 to pretty-print, or 0 or unset");

  const databaseUrl = str("SHIM_DATABASE_URL") ?? "sqlite:./data/shim.db";
  try {
    parseDatabaseUrl(databaseUrl, secrets);
  } catch (e) {
    problems.push((e as Error).message);
  }
  // The driver would take what the URL leaves out from these, past the URL's checks. Irrelevant to SQLite.
  if (namesPostgres(databaseUrl)) problems.push(...driverEnvironmentProblems(env));
  // The messages do not repeat the token (it is a secret).
  const adminToken = secrets.SHIM_ADMIN_TOKEN;
  const adminTokenRules = (name: string, token: string | null): void => {
    // .env.example's placeholder left in place is published in the repository: /admin would be guarded by no secret.
    if (headerToken(name, token, ADMIN_TOKEN, "< or >, as in a placeholder, a control character, or one beyond ASCII, whose bytes a client's would not match",
      "ASCII letters, digits, punctuation and spaces (random: openssl rand -hex 32)", "set a secret of your own (random: openssl rand -hex 32)") &&
      token !== null) {
      // A short admin token could be guessed; a longer one than the header read carries never matches.
      if (token.length < MIN_ADMIN_TOKEN_LENGTH) problems.push(`${name}: is ${token.length} characters long; expected at least ${MIN_ADMIN_TOKEN_LENGTH} (random: openssl rand -hex 24; the Pulumi program makes 48)`);
      if (token.length > MAX_ADMIN_TOKEN_LENGTH) problems.push(`${name}: is ${token.length} characters long; expected at most ${MAX_ADMIN_TOKEN_LENGTH} (with \`Bearer \`, the ${MAX_AUTHORIZATION_LENGTH} of the Authorization header the shim reads)`);
    }
  };
  adminTokenRules("SHIM_ADMIN_TOKEN", adminToken);
  const adminTokenPrevious = previousAdminToken(env, secrets, problems);
  adminTokenRules("SHIM_ADMIN_TOKEN_PREVIOUS", secrets.SHIM_ADMIN_TOKEN_PREVIOUS);
  // Sent as `Authorization: Bearer <key>`: one a header cannot carry failed every request (502) and /ready.
  const upstreamApiKey = secrets.SHIM_UPSTREAM_API_KEY;
  if (upstreamApiKey !== null && /^bearer\s/i.test(upstreamApiKey)) problems.push('SHIM_UPSTREAM_API_KEY: starts with "Bearer ", which the shim adds itself; expected the key alone');
  else headerToken("SHIM_UPSTREAM_API_KEY", upstreamApiKey, HEADER_TOKEN, "a control character other than a tab, or one beyond ASCII, which a header cannot carry as typed",
    "the upstream's key as it was issued", "set the upstream's key (in the Compose bundle: LITELLM_MASTER_KEY in .env)");
  const configFile = str("SHIM_CONFIG");
  const file = parseFileConfig(configFile, readFile, problems, bad);
  const timeouts = {
    upstreamTimeoutMs: int("SHIM_UPSTREAM_TIMEOUT_MS", 120_000, 1, 3_600_000),
    streamIdleTimeoutMs: int("SHIM_STREAM_IDLE_TIMEOUT_MS", 60_000, 1, 3_600_000),
    drainTimeoutMs: int("SHIM_DRAIN_TIMEOUT_MS", 23_000, 0, 3_600_000),
    readyProbeIntervalMs: int("SHIM_READY_PROBE_INTERVAL_MS", 15_000, 0, 3_600_000),
    maxBodyBytes: int("SHIM_MAX_BODY_BYTES", 8 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
    maxAnswerBytes: int("SHIM_MAX_ANSWER_BYTES", 256 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
    answerMemoryBytes: int("SHIM_ANSWER_MEMORY_BYTES", 512 * 1024 * 1024, 1024, 64 * 1024 * 1024 * 1024),
    bodyMemoryBytes: int("SHIM_BODY_MEMORY_BYTES", DEFAULT_BODY_MEMORY_BYTES, 1024, 64 * 1024 * 1024 * 1024),
  };

  const lowCredits = lowCreditsSettings(env, int, badValue);

  if (problems.length > 0) throw new ConfigError(problems);
  return deepFreeze({
    ...lowCredits,
    port,
    host: str("SHIM_HOST") ?? "0.0.0.0",
    upstreamUrl: (upstreamUrl ?? "").replace(/\/+$/, ""),
    upstreamApiKey,
    configFile,
    readyUrl,
    databaseUrl,
    adminToken,
    adminTokenPrevious,
    trustProxy,
    ...timeouts,
    logLevel,
    logPretty: logPretty === "1",
    ...file,
  });
}

/**
 * SHIM_ADMIN_TOKEN_PREVIOUS with its SHIM_ADMIN_TOKEN_PREVIOUS_UNTIL, for a planned rotation's
 * overlap. Refused: an UNTIL without a previous token (an overlap meant, and none set), one that
 * is not an instant readInstant reads (a time without its zone would end hours off),
 * a previous token equal to the current one (a rotation that changed nothing), or a previous
 * token without a current one (SHIM_ADMIN_TOKEN unset is the shim refusing every admin request).
 */
function previousAdminToken(env: Env, secrets: { SHIM_ADMIN_TOKEN: string | null; SHIM_ADMIN_TOKEN_PREVIOUS: string | null }, problems: string[]): ShimConfig["adminTokenPrevious"] {
  const { SHIM_ADMIN_TOKEN: current, SHIM_ADMIN_TOKEN_PREVIOUS: previous } = secrets;
  const untilText = env.SHIM_ADMIN_TOKEN_PREVIOUS_UNTIL?.trim() || null;
  let until: number | null = null;
  if (untilText !== null) {
    const read = readInstant(untilText);
    if ("ms" in read) until = read.ms;
    else problems.push(`SHIM_ADMIN_TOKEN_PREVIOUS_UNTIL: ${read.why ?? `${shownValue(untilText, secrets, /^[\dT:.Z+-]{1,35}$/.test(untilText) ? untilText : undefined)} is not valid`}; expected ${PREVIOUS_UNTIL_SHAPE}`);
    if (previous === null) problems.push("SHIM_ADMIN_TOKEN_PREVIOUS_UNTIL: is set without SHIM_ADMIN_TOKEN_PREVIOUS; expected both (the token being rotated out, and until when it is let in) or neither");
  }
  if (previous === null) return null;
  if (current === null) problems.push("SHIM_ADMIN_TOKEN_PREVIOUS: is set without SHIM_ADMIN_TOKEN; expected the new token in SHIM_ADMIN_TOKEN, the old one in SHIM_ADMIN_TOKEN_PREVIOUS");
  else if (previous === current) problems.push("SHIM_ADMIN_TOKEN_PREVIOUS: is the same as SHIM_ADMIN_TOKEN; expected the token being rotated out, which differs from the new one");
  return { token: previous, until };
}
/** What SHIM_ADMIN_TOKEN_PREVIOUS_UNTIL (and the stack's previousAdminTokenUntil) takes, as period.ts readInstant reads it. */
export const PREVIOUS_UNTIL_SHAPE = "an ISO-8601 instant with its time zone, e.g. 2026-06-08T12:00:00Z";

/**
 * The low-credit gauges' share (a decimal from 0 to 1, as fleet-status.sh's FLEET_LOW_SHARE) and
 * refresh interval: each refresh reads a month of the ledger, so not more than once a second.
 */
function lowCreditsSettings(env: Env, int: (name: string, def: number, min: number, max: number) => number, badValue: (name: string, value: string, allowed: string, parsed?: string) => void) {
  const raw = env.SHIM_LOW_CREDITS_SHARE?.trim() ?? "";
  let lowCreditsShare = 0.1;
  if (raw !== "") {
    if (/^(0(\.\d+)?|1(\.0*)?|\.\d+)$/.test(raw)) lowCreditsShare = Number(raw);
    else badValue("SHIM_LOW_CREDITS_SHARE", raw, "a number from 0 to 1 (a share of the credits a key had this month, e.g. 0.1)");
  }
  let lowCreditsIntervalMs = int("SHIM_LOW_CREDITS_INTERVAL_MS", 300_000, 0, 86_400_000);
  if (lowCreditsIntervalMs > 0 && lowCreditsIntervalMs < 1000) {
    badValue("SHIM_LOW_CREDITS_INTERVAL_MS", String(lowCreditsIntervalMs), "0 (off) or an integer from 1000 to 86400000", String(lowCreditsIntervalMs));
    lowCreditsIntervalMs = 300_000;
  }
  return { lowCreditsShare, lowCreditsIntervalMs };
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === "object" && !Object.isFrozen(o)) {
    Object.freeze(o);
    if (!(o instanceof Map)) for (const v of Object.values(o)) deepFreeze(v);
    else for (const v of o.values()) deepFreeze(v);
  }
  return o;
}
