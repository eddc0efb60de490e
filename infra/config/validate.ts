import { CACHED_PRICE_WHY, cachedPriceFits } from "../../api-shim/src/money/cache-reads.ts";
import { CACHE_ISOLATIONS } from "../../api-shim/src/requests/cache-salt.ts";
import { findPlan, GPU_PLANS, LINODE_REGIONS, regionsOffering } from "../catalog.ts";
import { Secret } from "../secret.ts";
import { isIPv6Cidr, OWN_ADDRESS_HINT, unreachableAdminEntries } from "./addresses.ts";
import { normaliseCidr, Problems } from "./checks.ts";
import { checkLogs } from "./logs.ts";
import { checkPreviousAdminToken } from "./admin-token.ts";
import { checkStorage } from "./storage.ts";
import { isHubRepoId } from "./model-id.ts";
import { ModelNames, SERVED_NAME, SERVED_NAME_RULE } from "./model-names.ts";
import { checkSecret, checkShadowed, type ValidationContext } from "./secrets.ts";
import { CONFIG_KEYS, isSecretSetting, numberAsWritten, setSecretCommand, unknownSettingMessage } from "./settings.ts";
import { CONFIG_NAMESPACE } from "./types.ts";
import { webPortSources } from "../host.ts";
import { checkLimits } from "./limits.ts";
import { checkTls } from "./tls.ts";
import { checkedExtraArgs, parallelLayout } from "./vllm.ts";
import {
  DEFAULT_ALLOWED_CIDRS, DEFAULT_GPU_MEMORY_UTILIZATION, DEFAULT_IMAGE, DEFAULT_IMAGES,
  DEFAULT_MAX_MODEL_LEN, DEFAULT_MODEL_ID, DEFAULT_PLAN, DEFAULT_PRICING, DEFAULT_READY_TIMEOUT_MINUTES,
  DEFAULT_TIERS, DEFAULT_VOLUME_SIZE_GB, MAX_READY_TIMEOUT_MINUTES,
} from "./defaults.ts";
import type {
  BootstrapKey, Images, ModelConfig, ModelPrice, Pricing, ProviderKind, ProviderModel,
  TenantConfig, Tier, TlsMode, ValidationResult,
} from "./types.ts";

const PROVIDERS: readonly ProviderKind[] = ["groq", "gemini", "deepseek", "openai", "anthropic"];
const TTL_MAX_HOURS = 24 * 90;
/** The largest model.maxModelLen (and a provider's, providers[].maxModelLen), and a provider's longest answer (providers[].maxOutputTokens). */
const MAX_CONTEXT_TOKENS = 1_048_576;
/** The smallest model.maxModelLen (and providers[].maxModelLen). */
const MIN_CONTEXT_TOKENS = 256;

/** model.mediaPartTokens (and a provider's): the shim's fewest tokens a media part's estimate; 0 or unset, none (no one count suits every model). */
const MEDIA_PART_TOKENS_RANGE = { min: 0, max: MAX_CONTEXT_TOKENS, integer: true } as const;

export type { ValidationContext } from "./secrets.ts";

/**
 * Validates raw stack config (keys without the namespace) for the stack `stack`.
 *
 * Pure: it reads nothing and makes nothing, so `pulumi up`, `npm run render` and the scripts
 * all reject the same configs with the same messages, and tests call it with tables of cases.
 * Every problem is reported, not just the first.
 */
export function validateConfig(raw: Readonly<Record<string, unknown>>, context: ValidationContext): ValidationResult {
  // The stack file's text of its numbers: the forms Pulumi's reader and the yaml package disagree on.
  const p = new Problems(isSecretSetting, (path) => (context.fileConfig ? numberAsWritten(context.fileConfig, path) : undefined));
  const secret = (key: string, value: unknown) => checkSecret(p, key, value, context);
  for (const key of Object.keys(raw)) {
    if (!(CONFIG_KEYS as readonly string[]).includes(key)) p.unknown(key, unknownSettingMessage(key));
  }
  checkShadowed(p, context);

  const tenant = checkTenant(p, context.stack);
  const region = checkRegion(p, raw.region);
  const planId = p.string("plan", raw.plan) ?? DEFAULT_PLAN;
  const plan = findPlan(planId);
  if (!plan) {
    // A GPU plan id Linode may well offer (g3-gpu-rtxpro6000-blackwell-1, access-gated in 2026) is
    // told so: "not a GPU plan" would be false.
    const why = /^g\d+-gpu-/.test(planId)
      ? "is not in the kit's catalog (infra/catalog.ts): Linode may offer it (its Blackwell RTX PRO 6000 plans are access-gated and not listed yet), but the kit deploys only the plans it lists, whose GPUs, prices and regions it checks"
      : "is not a Linode GPU plan";
    p.add("plan", planId, `${why}; GPU plans: ${GPU_PLANS.map((x) => x.id).join(", ")}`);
  } else if (region && !regionsOffering(plan).includes(region)) {
    p.add("plan", planId, `is not offered in region ${region}; regions with ${plan.gpu}: ${regionsOffering(plan).join(", ")}`);
  }
  const image = p.string("image", raw.image) ?? DEFAULT_IMAGE;
  // The host scripts install Docker's and NVIDIA's Ubuntu packages: another distribution would
  // fail at first boot, with the instance already billing.
  // LTS releases are the even years' April ones: 22.04, 24.04, 26.04, 28.04.
  if (!/^linode\/ubuntu2[2468]\.04$/.test(image)) p.add("image", image, "must be an Ubuntu LTS Linode image (linode/ubuntu22.04, linode/ubuntu24.04 or a later LTS), which the host scripts are written for");

  const names = new ModelNames(p);
  const model = checkModel(p, raw.model, plan?.gpuCount ?? 1, names);
  const hfToken = secret("hfToken", raw.hfToken);
  const previousAdminToken = checkPreviousAdminToken(p, secret("previousAdminToken", raw.previousAdminToken), raw.previousAdminTokenUntil);
  const allowedCidrs = p.cidrs("allowedCidrs", raw.allowedCidrs) ?? [...DEFAULT_ALLOWED_CIDRS];
  if (allowedCidrs.length === 0) p.add("allowedCidrs", "[]", "is empty, so nothing could reach the endpoint; list the client addresses, or 0.0.0.0/0 and ::/0 for everyone");
  const adminCidrs = p.cidrs("adminCidrs", raw.adminCidrs) ?? [];
  // pulumi up deploys over SSH to the IPv4 address, and nginx sees IPv6 clients as Docker's
  // gateway, so IPv6 entries can open SSH but never deploy or reach /admin.
  if (adminCidrs.length > 0 && adminCidrs.every(isIPv6Cidr)) {
    p.add("adminCidrs", adminCidrs.join(", "), "needs an IPv4 address: pulumi up deploys over SSH to the host's IPv4 address, and /admin is reached over IPv4 only");
  }
  const deploy = new Problems(isSecretSetting);
  checkAdminReachable(deploy, raw.adminCidrs);
  const tls = checkTls(p, raw.tls, allowedCidrs);
  if (tls) checkFirewallRuleSizes(p, tls.mode, allowedCidrs, adminCidrs);
  const tiers = checkTiers(p, raw.tiers);
  const providers = checkProviders(p, raw.providers, names, secret);
  const pricing = checkPricing(p, raw.pricing, names);
  const keys = checkKeys(p, raw.keys, tiers, names);
  const volumeSizeGb = p.number("volumeSizeGb", raw.volumeSizeGb, { min: 10, max: 10_240, integer: true }) ?? DEFAULT_VOLUME_SIZE_GB;
  const ttlHours = checkTtlHours(p, raw.ttlHours);
  const tags = checkTags(p, raw.tags);
  const limits = checkLimits(p, raw.limits);
  const logs = checkLogs(p, raw.logs);
  const storage = checkStorage(p, raw.storage);
  const images = checkImages(p, raw.images);
  const readyTimeoutMinutes =
    p.number("readyTimeoutMinutes", raw.readyTimeoutMinutes, { min: 1, max: MAX_READY_TIMEOUT_MINUTES, integer: true }) ?? DEFAULT_READY_TIMEOUT_MINUTES;

  if (p.list.length > 0 || !tenant || !region || !plan || !model || !tls) {
    return { ok: false, problems: [...p.list, ...deploy.list] };
  }
  const config: TenantConfig = {
    tenant, region, plan, image, model, allowedCidrs, adminCidrs, tls, keys, tiers, pricing, providers,
    volumeSizeGb, tags, limits, logs, images, readyTimeoutMinutes,
    ...(hfToken ? { hfToken } : {}),
    ...(previousAdminToken ? { previousAdminToken } : {}),
    ...(storage ? { storage } : {}),
    ...(ttlHours !== undefined ? { ttlHours } : {}),
  };
  return { ok: true, config: deepFreeze(config), deployProblems: deploy.list };
}

/**
 * ttlHours: whole hours, 1 to 90 days; "24" (what `pulumi config set` stores) as 24. Exported
 * for the scripts, which read a failed deploy's ttlHours from a stack file that no longer
 * validates as a whole, and must read it by this same rule.
 */
export function checkTtlHours(p: Problems, value: unknown): number | undefined {
  return p.number("ttlHours", value, { min: 1, max: TTL_MAX_HOURS, integer: true });
}

/** The most addresses (IPv4 and IPv6 together) Linode takes in one Cloud Firewall rule. */
export const FIREWALL_RULE_MAX_ADDRESSES = 255;

/**
 * Linode refuses a firewall rule of more than 255 addresses, and only at `pulumi up` (the
 * firewall then keeps its old rules): each rule the host's firewall would get is checked here.
 * The API's port also takes adminCidrs' entries allowedCidrs does not cover (webPortSources).
 */
function checkFirewallRuleSizes(p: Problems, tlsMode: TlsMode, allowedCidrs: readonly string[], adminCidrs: readonly string[]): void {
  const tooMany = (n: number) => `makes Linode firewall rules of ${n} addresses; a rule takes at most ${FIREWALL_RULE_MAX_ADDRESSES}: list wider ranges`;
  const largest = Math.max(...webPortSources(tlsMode, allowedCidrs, adminCidrs).map((r) => r.sources.length));
  if (largest > FIREWALL_RULE_MAX_ADDRESSES) {
    const why = largest > allowedCidrs.length ? ` (with the adminCidrs entries it does not cover, for /admin)` : "";
    p.add("allowedCidrs", `${allowedCidrs.length} entries`, tooMany(largest) + why, true);
  }
  if (adminCidrs.length > FIREWALL_RULE_MAX_ADDRESSES) p.add("adminCidrs", `${adminCidrs.length} entries`, `${tooMany(adminCidrs.length)} (SSH's)`, true);
}

/**
 * adminCidrs without an IPv4 entry anyone connects to a public address from (documentation,
 * private, CGNAT, loopback, link-local ranges): `pulumi up`, which dials the host's IPv4 address,
 * would wait for SSH until its timeout, with the GPU billing. Deployment problems, not config
 * errors: the bundle `npm run render` writes is still good on a host of one's own, where such an
 * address may well be the admin's.
 */
function checkAdminReachable(deploy: Problems, value: unknown): void {
  if (!Array.isArray(value)) return;
  const { entries, refused } = unreachableAdminEntries(value.map((item) => (typeof item === "string" ? normaliseCidr(item) : undefined)));
  if (!refused) return; // beside an IPv4 entry someone connects from, they are warnings (configWarnings)
  for (const { index, what } of entries) {
    deploy.add(`adminCidrs[${index}]`, value[index], `is ${what}, which never reaches the host's public address: \`pulumi up\` would wait ` +
      `for SSH until its timeout (45 minutes) while the GPU host bills; ${OWN_ADDRESS_HINT}`);
  }
}

/**
 * The stack name becomes the tenant name in Linode labels (`gs-<tenant>-data` must fit the
 * 32-character volume label limit) and tags, so it follows the strictest of those rules.
 */
function checkTenant(p: Problems, stack: string): string | undefined {
  if (!/^[a-z][a-z0-9-]{1,22}[a-z0-9]$/.test(stack) || stack.includes("--")) {
    return p.add("(stack name)", stack,
      "must be 3-24 characters of lowercase letters, digits and single hyphens, starting with a letter (it names the Linode resources)");
  }
  return stack;
}

function checkRegion(p: Problems, value: unknown): string | undefined {
  if (value === undefined || value === null || value === "") {
    return p.add("region", value, "is required; set it with `pulumi config set gpu-sandbox:region <id>`, e.g. us-ord");
  }
  const region = p.string("region", value);
  if (region === undefined) return undefined;
  if (!LINODE_REGIONS.some((r) => r.id === region)) {
    const gpu = [...new Set(GPU_PLANS.flatMap(regionsOffering))].sort();
    return p.add("region", region, `is not a Linode region; regions with GPU plans: ${gpu.join(", ")}`);
  }
  return region;
}

function checkModel(p: Problems, value: unknown, gpuCount: number, names: ModelNames): ModelConfig | undefined {
  const m = p.settingMap("model", value, ["id", "servedName", "aliases", "maxModelLen", "mediaPartTokens", "cacheIsolation", "gpuMemoryUtilization", "extraArgs"], "id");
  const id = p.string("model.id", m.id) ?? DEFAULT_MODEL_ID;
  if (!isHubRepoId(id)) {
    return p.add("model.id", id, "must be a Hugging Face repository id such as Qwen/Qwen2.5-7B-Instruct");
  }
  const servedName = p.string("model.servedName", m.servedName) ?? id;
  // It follows --served-model-name: vLLM would read one starting with "-" as a flag and exit.
  if (!SERVED_NAME.test(servedName)) p.add("model.servedName", servedName, SERVED_NAME_RULE);
  names.claim("model.servedName", servedName);
  const aliases = names.aliases("model.aliases", m.aliases, servedName);
  const maxModelLen = p.number("model.maxModelLen", m.maxModelLen, { min: MIN_CONTEXT_TOKENS, max: MAX_CONTEXT_TOKENS, integer: true }) ?? DEFAULT_MAX_MODEL_LEN;
  const mediaPartTokens = p.number("model.mediaPartTokens", m.mediaPartTokens, MEDIA_PART_TOKENS_RANGE);
  const cacheIsolation = p.oneOf("model.cacheIsolation", m.cacheIsolation, CACHE_ISOLATIONS);
  const gpuMemoryUtilization =
    p.number("model.gpuMemoryUtilization", m.gpuMemoryUtilization, { min: 0.1, max: 0.99 }) ?? DEFAULT_GPU_MEMORY_UTILIZATION;
  const extraArgs = checkedExtraArgs(p, p.array("model.extraArgs", m.extraArgs) ?? []);
  return { id, servedName, aliases, maxModelLen, ...(mediaPartTokens !== undefined ? { mediaPartTokens } : {}), ...(cacheIsolation !== undefined ? { cacheIsolation } : {}), gpuMemoryUtilization, extraArgs, ...parallelLayout(gpuCount) };
}

function checkTiers(p: Problems, value: unknown): Record<string, Tier> {
  const tiers: Record<string, Tier> = { ...DEFAULT_TIERS };
  const t = p.object("tiers", value) ?? {};
  for (const [name, v] of Object.entries(t)) {
    if (!/^[a-z][a-z0-9_-]{0,31}$/.test(name)) {
      p.add(`tiers.${name}`, v, "tier names are 1-32 lowercase letters, digits, _ and -");
      continue;
    }
    // `free: null` reads as "unlimited" to whoever writes it, but it would change nothing.
    // "null": what `pulumi config set --path 'gpu-sandbox:tiers.free' null` stores.
    if (v === null || v === "null") {
      p.add(`tiers.${name}`, v, "must be a map of rpm, tpm and concurrency; for no limit, set each to null");
      continue;
    }
    const tier = p.object(`tiers.${name}`, v);
    if (!tier) continue;
    p.unknownKeys(`tiers.${name}`, tier, ["rpm", "tpm", "concurrency"]);
    // No limit: null, "unlimited", or "null", which is what `pulumi config set --path
    // 'gpu-sandbox:tiers.team.rpm' null` stores (the CLI types only true, false and integers).
    const limit = (k: "rpm" | "tpm" | "concurrency"): number | null | undefined =>
      tier[k] === null || tier[k] === "unlimited" || tier[k] === "null"
        ? null
        : p.number(`tiers.${name}.${k}`, tier[k], { min: 1, max: 1e9, integer: true }) ?? DEFAULT_TIERS[name]?.[k];
    const rpm = limit("rpm");
    const tpm = limit("tpm");
    if (rpm === undefined || tpm === undefined) {
      // A limit set but refused has its own problem already; this one is for a limit not set.
      if (tier.rpm === undefined || tier.tpm === undefined) p.add(`tiers.${name}`, v, "a new tier needs both rpm and tpm (a number, or null for unlimited)");
      continue;
    }
    // Optional: no cap on a key's requests in flight unless one is set.
    tiers[name] = { rpm, tpm, concurrency: limit("concurrency") ?? null };
  }
  return tiers;
}

function checkPricing(p: Problems, value: unknown, names: ModelNames): Pricing {
  const modelNames = names.models;
  const v = p.settingMap("pricing", value, ["request", "batchRequest", "models"]);
  const models: [string, ModelPrice][] = [];
  for (const [name, price] of Object.entries(p.object("pricing.models", v.models) ?? {})) {
    // A price of its own would split the model's invoice by the name it was asked by.
    const of = names.aliasOf.get(name);
    if (of !== undefined) {
      p.add(`pricing.models.${name}`, price, `is an alias of ${of}, whose price it is charged; price ${of}`);
      continue;
    }
    if (!modelNames.includes(name)) {
      p.add(`pricing.models.${name}`, price, `prices a model that is not served; served models: ${modelNames.join(", ")}`);
      continue;
    }
    const m = p.object(`pricing.models.${name}`, price) ?? {};
    p.unknownKeys(`pricing.models.${name}`, m, ["promptPer1k", "completionPer1k", "cachedPromptPer1k"]);
    const before = p.list.length;
    const promptPer1k = p.credits(`pricing.models.${name}.promptPer1k`, m.promptPer1k) ?? 0;
    const promptRefused = p.list.length > before; // its own problem says so; no second one here
    const cachedKey = `pricing.models.${name}.cachedPromptPer1k`;
    let cachedPromptPer1k = p.credits(cachedKey, m.cachedPromptPer1k);
    // The shim's rule (a start refused on the host otherwise), with its reason.
    if (cachedPromptPer1k !== undefined && !cachedPriceFits(cachedPromptPer1k, promptPer1k) && !promptRefused) {
      cachedPromptPer1k = p.add(cachedKey, m.cachedPromptPer1k, `must not be more than promptPer1k (${promptPer1k}): ${CACHED_PRICE_WHY}`);
    }
    models.push([name, {
      promptPer1k,
      completionPer1k: p.credits(`pricing.models.${name}.completionPer1k`, m.completionPer1k) ?? 0,
      // Only where set: the rendered SHIM_CONFIG then carries it, and a model without it is charged as before.
      ...(cachedPromptPer1k !== undefined ? { cachedPromptPer1k } : {}),
    }]);
  }
  return {
    request: p.credits("pricing.request", v.request) ?? DEFAULT_PRICING.request,
    batchRequest: p.credits("pricing.batchRequest", v.batchRequest) ?? DEFAULT_PRICING.batchRequest,
    // fromEntries makes every name its own key: `models[name] =` set the prototype for a model
    // served as "__proto__", and its price was lost (charged per request only).
    models: Object.fromEntries(models),
  };
}

function checkKeys(p: Problems, value: unknown, tiers: Readonly<Record<string, Tier>>, names: ModelNames): BootstrapKey[] {
  const modelNames = names.models;
  const keys: BootstrapKey[] = [];
  (p.array("keys", value) ?? []).forEach((item, i) => {
    const at = `keys[${i}]`;
    const k = p.object(at, item);
    if (!k) return;
    p.unknownKeys(at, k, ["name", "credits", "tier", "models"]);
    const name = p.string(`${at}.name`, k.name);
    const nameRule = "1-32 lowercase letters, digits, _ and -, starting with a letter or digit, e.g. app";
    // A name that is set but not allowed is not "required" (one that is not a string: p.string said so).
    if (k.name === undefined || k.name === null || k.name === "") {
      p.add(`${at}.name`, k.name, `is required: ${nameRule}`);
    } else if (name !== undefined && !/^[a-z0-9][a-z0-9_-]{0,31}$/.test(name)) {
      p.add(`${at}.name`, name, `must be ${nameRule}`);
    } else if (name !== undefined && keys.some((x) => x.name === name)) {
      p.add(`${at}.name`, name, "is used by another key; key names must be unique");
    }
    if (k.credits === undefined) p.add(`${at}.credits`, k.credits, "is required: the credits the key starts with, e.g. 1000");
    const credits = p.credits(`${at}.credits`, k.credits);
    const tier = p.string(`${at}.tier`, k.tier) ?? "free";
    // Own names only: `in` took constructor, toString, __proto__… (Object.prototype's) for tiers.
    if (!Object.hasOwn(tiers, tier)) p.add(`${at}.tier`, tier, `is not a tier; tiers: ${Object.keys(tiers).join(", ")}`);
    const models: string[] = [];
    const listed = p.array(`${at}.models`, k.models);
    // Rendered as no list, an empty one would allow every model (the shim's "all"), paid
    // providers included; the admin API and SHIM_CONFIG refuse it too.
    if (listed?.length === 0) p.add(`${at}.models`, listed, `must list at least one served model (served models: ${modelNames.join(", ")}); leave it out for every model`);
    (listed ?? []).forEach((m, j) => {
      if (p.encrypted(`${at}.models[${j}]`, m)) return;
      // An alias is allowed with its model, and listed as the model (as the shim keeps allow-lists).
      const named = typeof m === "string" ? names.modelNamed(m) : undefined;
      if (named !== undefined && modelNames.includes(named)) {
        if (!models.includes(named)) models.push(named);
      } else p.add(`${at}.models[${j}]`, m, `is not a served model; served models: ${modelNames.join(", ")}`);
    });
    if (name && credits !== undefined) keys.push({ name, credits, tier, models });
  });
  return keys;
}

function checkProviders(p: Problems, value: unknown, names: ModelNames, secret: (key: string, value: unknown) => Secret | undefined): ProviderModel[] {
  const out: ProviderModel[] = [];
  (p.array("providers", value) ?? []).forEach((item, i) => {
    const at = `providers[${i}]`;
    const v = p.object(at, item);
    if (!v) return;
    p.unknownKeys(at, v, ["name", "aliases", "model", "apiKey", "maxOutputTokens", "maxModelLen", "mediaPartTokens"]);
    const model = p.string(`${at}.model`, v.model);
    const [provider, providerModel] = (model?.split(/\/(.*)/s) ?? []) as [ProviderKind | undefined, string | undefined];
    if (!model || !provider || !PROVIDERS.includes(provider) || !/^\S+$/.test(providerModel ?? "")) {
      p.add(`${at}.model`, v.model, `must be <provider>/<model> with provider one of ${PROVIDERS.join(", ")}, e.g. groq/llama-3.3-70b-versatile`);
    }
    const name = p.string(`${at}.name`, v.name) ?? model;
    if (name !== undefined && !/^[\w./:-]{1,128}$/.test(name)) p.add(`${at}.name`, name, "must be 1-128 characters of letters, digits and . _ - / :");
    const named = name !== undefined && names.claim(`${at}.name`, name);
    const aliases = names.aliases(`${at}.aliases`, v.aliases, named ? name : undefined);
    const apiKey = secret(`${at}.apiKey`, v.apiKey);
    // "" is not missing: checkSecret refused it as empty.
    if (v.apiKey === undefined || v.apiKey === null) p.add(`${at}.apiKey`, v.apiKey, `is required: ${setSecretCommand(`${at}.apiKey`)}`);
    const maxOutputTokens = p.number(`${at}.maxOutputTokens`, v.maxOutputTokens, { min: 1, max: MAX_CONTEXT_TOKENS, integer: true });
    const maxModelLen = p.number(`${at}.maxModelLen`, v.maxModelLen, { min: MIN_CONTEXT_TOKENS, max: MAX_CONTEXT_TOKENS, integer: true });
    const mediaPartTokens = p.number(`${at}.mediaPartTokens`, v.mediaPartTokens, MEDIA_PART_TOKENS_RANGE);
    if (model && name && apiKey && provider && PROVIDERS.includes(provider)) {
      out.push({ name, aliases, model, provider, apiKey, ...(maxOutputTokens !== undefined ? { maxOutputTokens } : {}), ...(maxModelLen !== undefined ? { maxModelLen } : {}), ...(mediaPartTokens !== undefined ? { mediaPartTokens } : {}) });
    }
  });
  return out;
}

/**
 * Linode tags. A number is taken as its digits (Problems.digits): `tags: [2025]` in YAML, or
 * `pulumi config set --path 'gpu-sandbox:tags[0]' 2025` (which stores integers as numbers).
 */
function checkTags(p: Problems, value: unknown): string[] {
  const tags: string[] = [];
  (p.array("tags", value) ?? []).forEach((item, i) => {
    if (p.encrypted(`tags[${i}]`, item)) return;
    const number = typeof item === "number" && Number.isFinite(item);
    const t = number ? p.digits(`tags[${i}]`, item) : item;
    if (number && t === undefined) return;
    if (typeof t !== "string") p.add(`tags[${i}]`, item, "must be a string (a tag such as team-a)");
    else if (t.length < 3 || t.length > 50) p.add(`tags[${i}]`, item, "Linode tags are 3-50 characters");
    else tags.push(t);
  });
  return tags;
}

function checkImages(p: Problems, value: unknown): Images {
  const names = Object.keys(DEFAULT_IMAGES) as (keyof Images)[];
  const v = p.settingMap("images", value, names);
  const images = { ...DEFAULT_IMAGES };
  for (const name of names) {
    const ref = p.string(`images.${name}`, v[name]);
    if (ref === undefined) continue;
    if (!/^[a-z0-9][\w.\-/:]*(@sha256:[a-f0-9]{64})?$/.test(ref) || !/[:@]/.test(ref)) {
      p.add(`images.${name}`, ref, "must be an image reference with a tag or digest, e.g. vllm/vllm-openai:v0.33.0 or name@sha256:<64 hex>");
    } else {
      images[name] = ref;
    }
  }
  return images;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object" && !(value instanceof Secret) && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
