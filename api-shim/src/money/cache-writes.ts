import { countOrZero } from "../metering/token-count.ts";
import { eachMessagePart } from "../requests/content-parts.ts";

/**
 * Prompt-cache writes, which a provider bills above its input price and LiteLLM counts in
 * `prompt_tokens` like any other prompt token (AnthropicConfig.calculate_usage: prompt_tokens =
 * input + cache_creation_input_tokens + cache_read_input_tokens). Anthropic bills a write that
 * lives 5 minutes (`cache_control: {type: "ephemeral"}`, or `ttl: "5m"`) at 1.25 times the input
 * price and one that lives an hour (`ttl: "1h"`) at 2 times, so the shim charges each written
 * token its prompt price (in `prompt_tokens`) plus a surcharge of 0.25 or 1 times it. Cache reads,
 * which Anthropic bills at 0.1 times, are cache-reads.ts's (the model's cachedPromptPer1k, else the
 * prompt price). vLLM reports no writes.
 */

/** The cache writes a usage object reports, in tokens; each is also counted in its prompt_tokens. */
export interface CacheWrites {
  fiveMinute: number;
  oneHour: number;
  /** Writes reported as a total without the split by lifetime (older LiteLLM, some providers): charged by the lifetime the request asked for. */
  unsplit: number;
}

/**
 * The longest cache lifetime a request asked for: "1h" if any asked for an hour, "5m" for any other
 * `cache_control` (Anthropic's default), null for none; read with the lifetimes' check
 * (provider-surcharges.ts). Null for a model vLLM serves, which ignores `cache_control` and reports
 * no writes, and for embeddings, which cache nothing (admission.ts).
 */
export type CacheLifetime = "5m" | "1h" | null;

/** Surcharge per written token, in quarters of the prompt price. */
const SURCHARGE_QUARTERS = { "5m": 1n, "1h": 4n } as const;

/**
 * The cache writes of a usage object (LiteLLM's: `prompt_tokens_details.cache_creation_token_details.
 * {ephemeral_5m_input_tokens, ephemeral_1h_input_tokens}`, the total in `cache_creation_input_tokens`
 * or `prompt_tokens_details.cache_creation_tokens`), or undefined for none. A vLLM answer has none
 * of these members: four property reads at most (two when its prompt_tokens_details is null).
 */
export function readCacheWrites(u: object): CacheWrites | undefined {
  const usage = u as { cache_creation_input_tokens?: unknown; prompt_tokens_details?: unknown };
  const details = usage.prompt_tokens_details as { cache_creation_tokens?: unknown; cache_creation_token_details?: unknown } | null | undefined;
  if (usage.cache_creation_input_tokens === undefined && (details === null || typeof details !== "object" || (details.cache_creation_tokens === undefined && details.cache_creation_token_details === undefined))) return undefined;
  const split = details?.cache_creation_token_details as { ephemeral_5m_input_tokens?: unknown; ephemeral_1h_input_tokens?: unknown } | null | undefined;
  const fiveMinute = countOrZero(split?.ephemeral_5m_input_tokens);
  const oneHour = countOrZero(split?.ephemeral_1h_input_tokens);
  const total = Math.max(countOrZero(usage.cache_creation_input_tokens), countOrZero(details?.cache_creation_tokens));
  const unsplit = Math.max(0, total - fiveMinute - oneHour);
  return fiveMinute + oneHour + unsplit > 0 ? { fiveMinute, oneHour, unsplit } : undefined;
}

/**
 * The surcharge for `writes` at `promptPer1k` (µc per 1k tokens), rounded up: 0.25 times the
 * prompt price per 5-minute write, 1 times per 1-hour write, and unsplit writes at the rate of
 * the longest lifetime the request asked for (no request that asked for none can write an
 * hour's). Writes are part of the `promptTokens` charged, so no more than those count.
 */
export function cacheWriteSurcharge(writes: CacheWrites | undefined, promptTokens: number, promptPer1k: number, asked: CacheLifetime): number {
  if (!writes || promptPer1k <= 0 || promptTokens <= 0) return 0;
  const oneHour = Math.min(writes.oneHour, promptTokens);
  const fiveMinute = Math.min(writes.fiveMinute, promptTokens - oneHour);
  const unsplit = Math.min(writes.unsplit, promptTokens - oneHour - fiveMinute);
  const quarters = BigInt(oneHour) * SURCHARGE_QUARTERS["1h"] + BigInt(fiveMinute) * SURCHARGE_QUARTERS["5m"] + BigInt(unsplit) * SURCHARGE_QUARTERS[asked ?? "5m"];
  return quarterCost(quarters, promptPer1k);
}

/** The hold's room for the surcharge: every prompt token of `promptBound` written for the lifetime asked (none when no `cache_control` was). */
export function cacheWriteHold(promptBound: number, promptPer1k: number, asked: CacheLifetime): number {
  if (asked === null || promptPer1k <= 0 || promptBound <= 0) return 0;
  return quarterCost(BigInt(promptBound) * SURCHARGE_QUARTERS[asked], promptPer1k);
}

/** ceil(quarters / 4 × microPer1k / 1000), exactly. */
function quarterCost(quarters: bigint, microPer1k: number): number {
  return Number((quarters * BigInt(microPer1k) + 3999n) / 4000n);
}

/**
 * Calls `visit` with every `cache_control` object of `body`, and the member it is under: on the
 * body itself (null), a message, a message's content part or tool call ("messages"), a tool or a tool's
 * function ("tools"), where LiteLLM reads one for Anthropic.
 */
export function eachCacheControl(body: Record<string, unknown>, visit: (control: { ttl?: unknown }, member: "messages" | "tools" | null) => void): void {
  const note = (holder: unknown, member: "messages" | "tools" | null): void => {
    const control = (holder as { cache_control?: unknown } | null | undefined)?.cache_control;
    if (control !== null && typeof control === "object") visit(control, member);
  };
  note(body, null);
  // A message, its content parts and an assistant turn's tool calls (LiteLLM copies a tool call's
  // cache_control onto Anthropic's tool_use block).
  eachMessagePart(body.messages, (item) => note(item, "messages"));
  if (Array.isArray(body.tools)) {
    for (const t of body.tools) {
      note(t, "tools");
      note((t as { function?: unknown } | null)?.function, "tools");
    }
  }
}
