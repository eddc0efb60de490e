import { stringify } from "yaml";
import type { TenantConfig } from "../config.ts";

/** A bootstrap key as the shim's config takes it: the hash only, never the plaintext. */
export interface BootstrapKeyRecord {
  readonly id: string;
  readonly name: string;
  readonly hash: string;
  readonly credits: number;
  readonly tier: string;
  readonly models: readonly string[];
}

/** What every model reached through LiteLLM is configured with (see the comment at `models`). */
const VIA_LITELLM = { continuousUsage: false, tokenPrompts: false } as const;

/** A provider's model as the shim's config takes it: its context and longest answer where set. */
function providerModel(p: TenantConfig["providers"][number]): Record<string, unknown> {
  return {
    name: p.name,
    ...aliases(p),
    // Its context, when set, bounds a prompt's hold (media: the whole context, else 32,768 a part);
    // its maxOutputTokens an answer's without max_tokens. `provider`: vLLM's completions default
    // of 16 tokens is not its own, context known or not.
    ...(p.maxModelLen !== undefined ? { maxModelLen: p.maxModelLen } : {}),
    ...(p.maxOutputTokens !== undefined ? { maxOutputTokens: p.maxOutputTokens } : {}),
    ...mediaPartTokens(p),
    provider: true,
    ...VIA_LITELLM,
  };
}

/**
 * A model's aliases, which the shim resolves to it (the upstream never sees one): only where the
 * stack sets some, so a stack without renders the file it rendered before.
 */
const aliases = (m: { aliases: readonly string[] }): Record<string, readonly string[]> => (m.aliases.length > 0 ? { aliases: m.aliases } : {});

/** The fewest prompt tokens a media part is estimated at, where the stack sets it (unset: no floor). */
const mediaPartTokens = (m: { mediaPartTokens?: number }): Record<string, number> =>
  m.mediaPartTokens !== undefined ? { mediaPartTokens: m.mediaPartTokens } : {};

/**
 * The shim's SHIM_CONFIG: prices, tiers, the models it accepts (with the context length that
 * bounds a request's credit hold), the bootstrap keys' hashes, whose prompts share vLLM's prefix cache and the bounds on
 * structured outputs (the last two only where the stack sets them). The shim grants a bootstrap
 * key's credits once, when it first sees the key, so re-applying this never resets a balance.
 */
export function renderShimConfig(config: TenantConfig, bootstrapKeys: readonly BootstrapKeyRecord[]): string {
  const doc = {
    pricing: {
      request: config.pricing.request,
      batchRequest: config.pricing.batchRequest,
      models: config.pricing.models,
    },
    tiers: config.tiers,
    // Requests without a valid key, per client IP: throttles key guessing.
    unauthenticatedRpm: 60,
    defaultTier: "free",
    // Every model is reached through LiteLLM. It drops vLLM's per-chunk usage, so streams are
    // metered from the final usage chunk; and its text completion takes a prompt only as text (a
    // string or a list of strings): token IDs or `prompt_embeds` would fail there as a 500.
    models: [
      { name: config.model.servedName, ...aliases(config.model), maxModelLen: config.model.maxModelLen, ...mediaPartTokens(config.model), ...VIA_LITELLM },
      ...config.providers.map(providerModel),
    ],
    bootstrapKeys: bootstrapKeys.map((k) => ({
      id: k.id, name: k.name, hash: k.hash, credits: k.credits, tier: k.tier, ...(k.models.length ? { models: k.models } : {}),
    })),
    // Only where the stack sets it: a stack without it renders the file it rendered before (the
    // shim's default is `shared`), so the shim is not recreated for nothing.
    ...(config.model.cacheIsolation !== undefined ? { cacheIsolation: config.model.cacheIsolation } : {}),
    // Likewise: unset in the stack, nothing, and the shim's defaults apply.
    ...(config.limits.structuredOutputs !== undefined ? { structuredOutputs: config.limits.structuredOutputs } : {}),
  };
  // Read by the shim with this same `yaml` package (YAML 1.2), so its quoting suffices; the files
  // YAML 1.1 readers load (LiteLLM's, compose.yaml) go through yamlText.
  return `# api-shim config (SHIM_CONFIG), rendered by infra/render/shim-config.ts. No secrets: keys are hashes.\n${stringify(doc, { lineWidth: 0 })}`;
}
