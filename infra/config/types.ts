import type { GpuPlan } from "../catalog.ts";
import type { Secret } from "../secret.ts";
import type { CacheIsolation } from "../../api-shim/src/requests/cache-salt.ts";
import type { StructuredLimits } from "../../api-shim/src/requests/structured-limits.ts";

/** Stack config namespace: every key is `gpu-sandbox:<key>`. */
export const CONFIG_NAMESPACE = "gpu-sandbox";

export type TlsMode = "letsencrypt" | "self-signed" | "off";

export interface ModelConfig {
  /** Hugging Face repository id, e.g. `Qwen/Qwen2.5-7B-Instruct`. */
  readonly id: string;
  /** The name clients send as `model`. Defaults to `id`. */
  readonly servedName: string;
  /** Other names clients may send for it (LiteLLM's `model_name`s, `gpt-4o-mini`), resolved by the shim. */
  readonly aliases: readonly string[];
  readonly maxModelLen: number;
  /** The fewest prompt tokens the shim estimates a media part at (SHIM_CONFIG models[].mediaPartTokens); unset, none. */
  readonly mediaPartTokens?: number;
  /**
   * Whose prompts share vLLM's prefix cache (SHIM_CONFIG cacheIsolation): "shared", every key's;
   * "key", each key's own (the shim adds a cache_salt per key). Unset: "shared".
   */
  readonly cacheIsolation?: CacheIsolation;
  readonly gpuMemoryUtilization: number;
  /** vLLM flags passed through as they are, after the ones the kit sets. */
  readonly extraArgs: readonly string[];
  /**
   * vLLM `--tensor-parallel-size` and `--pipeline-parallel-size`, from the plan's GPU count
   * (their product): see parallelLayout in vllm.ts.
   */
  readonly tensorParallelSize: number;
  readonly pipelineParallelSize: number;
}

export interface TlsConfig {
  readonly mode: TlsMode;
  /** Certificate name; for letsencrypt defaults to the instance's ip.linodeusercontent.com name. */
  readonly domain?: string;
  readonly email?: string;
}

export interface BootstrapKey {
  readonly name: string;
  /** Credits granted once, when the key is first created. */
  readonly credits: number;
  readonly tier: string;
  /** Model allow-list; empty means every model. */
  readonly models: readonly string[];
}

/** Per-minute limits; `null` means unlimited. */
export interface Tier {
  readonly rpm: number | null;
  readonly tpm: number | null;
  /** Requests of one key in flight at once; null = no cap. */
  readonly concurrency: number | null;
}

export interface ModelPrice {
  readonly promptPer1k: number;
  readonly completionPer1k: number;
  /** Credits per 1k prompt tokens read from a prompt cache, at most promptPer1k; unset: promptPer1k. */
  readonly cachedPromptPer1k?: number;
}

export interface Pricing {
  /** Credits per request. */
  readonly request: number;
  /** Credits per request with `?batch=1`. */
  readonly batchRequest: number;
  readonly models: Readonly<Record<string, ModelPrice>>;
}

export type ProviderKind = "groq" | "gemini" | "deepseek" | "openai" | "anthropic";

/** An external model routed by LiteLLM. */
export interface ProviderModel {
  /** The name clients send as `model`. */
  readonly name: string;
  /** Other names clients may send for it, resolved by the shim. */
  readonly aliases: readonly string[];
  /** LiteLLM's model string, e.g. `groq/llama-3.3-70b-versatile`. */
  readonly model: string;
  readonly provider: ProviderKind;
  readonly apiKey: Secret;
  /**
   * The most tokens the provider's model writes in one answer, which bounds the credit hold (and
   * so the charge) of a request without max_tokens; unset, the shim's 32,768.
   */
  readonly maxOutputTokens?: number;
  /**
   * The provider's model's context window in tokens, which bounds a prompt's hold: a prompt with
   * media then holds the whole context (as the model vLLM serves does); unset, 32,768 per media part.
   */
  readonly maxModelLen?: number;
  /** As ModelConfig.mediaPartTokens: the provider's count per image, e.g. Gemini's 258. */
  readonly mediaPartTokens?: number;
}

/**
 * limits.structuredOutputs, rendered as SHIM_CONFIG structuredOutputs: false, no check; a map, the
 * limits it sets (null: none) over the shim's defaults.
 */
export type StructuredOutputsSetting = false | Readonly<Partial<Record<keyof StructuredLimits, number | null>>>;

/**
 * The stack's `limits`: nginx's per-client-IP protection in front of the shim (defaults as the
 * LiteLLM + nginx setup), the largest body, and the shim's bounds on structured outputs.
 */
export interface EdgeLimits {
  readonly requestsPerSecond: number;
  readonly burst: number;
  readonly connections: number;
  readonly maxBodyMb: number;
  /** Unset: the shim's defaults, and nothing rendered (an existing stack's SHIM_CONFIG unchanged). */
  readonly structuredOutputs?: StructuredOutputsSetting;
}

/**
 * How much of a client's address nginx's access log keeps: `full`; `truncated`, its network (an
 * IPv4 address's last octet zeroed, an IPv6 address's last 80 bits); `none`. The per-address
 * limits and the shim's X-Forwarded-For always use the whole address.
 */
export type ClientAddressLogging = "full" | "truncated" | "none";

/** What the host's logs keep of a client. */
export interface LogsConfig {
  readonly clientAddress: ClientAddressLogging;
}

/** Linode's encryption at rest: `enabled` or `disabled` (the values its API takes). */
export type StorageEncryption = "enabled" | "disabled";

/**
 * The stack's `storage`: Linode's encryption at rest for the Block Storage Volume (the ledger and
 * the weights) and the instance's disks. Given to new resources only (infra/components/gpu-host.ts).
 */
export interface StorageConfig {
  readonly encryption: StorageEncryption;
}

/** Container images; each may be a tag (resolved to a digest at deploy time) or `name@sha256:…`. */
export interface Images {
  readonly vllm: string;
  readonly litellm: string;
  readonly nginx: string;
  readonly certbot: string;
  readonly node: string;
}

/** previousAdminToken with previousAdminTokenUntil (an ISO-8601 UTC instant; none: until it is removed). */
export interface PreviousAdminToken {
  readonly token: Secret;
  readonly until?: string;
}

/** Validated stack config: what every part of the program reads. Frozen. */
export interface TenantConfig {
  /** The stack name: the tenant. Used in labels and tags. */
  readonly tenant: string;
  readonly region: string;
  readonly plan: GpuPlan;
  readonly image: string;
  readonly model: ModelConfig;
  readonly hfToken?: Secret;
  /** The admin token being rotated out, let in beside the new one until `until` (docs/operations.md). */
  readonly previousAdminToken?: PreviousAdminToken;
  readonly allowedCidrs: readonly string[];
  readonly adminCidrs: readonly string[];
  readonly tls: TlsConfig;
  readonly keys: readonly BootstrapKey[];
  readonly tiers: Readonly<Record<string, Tier>>;
  readonly pricing: Pricing;
  readonly providers: readonly ProviderModel[];
  readonly volumeSizeGb: number;
  readonly ttlHours?: number;
  readonly tags: readonly string[];
  readonly limits: EdgeLimits;
  readonly logs: LogsConfig;
  /** Unset: Linode's defaults, and neither encryption property given (an existing stack unchanged). */
  readonly storage?: StorageConfig;
  readonly images: Images;
  readonly readyTimeoutMinutes: number;
}

/** One thing wrong with the config: which key, the bad value, and what is allowed. */
export interface ConfigProblem {
  readonly key: string;
  readonly value: unknown;
  readonly message: string;
}

export type ValidationResult =
  | {
    readonly ok: true;
    readonly config: TenantConfig;
    /**
     * What stops a deployment to Linode (`pulumi up`, `npm run new-tenant`) but not a render: an
     * adminCidrs entry nobody can connect from. Listed in `problems` too when the config is invalid.
     */
    readonly deployProblems: readonly ConfigProblem[];
  }
  | { readonly ok: false; readonly problems: readonly ConfigProblem[] };
