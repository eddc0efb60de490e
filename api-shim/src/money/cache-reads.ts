import { isCount } from "../metering/token-count.ts";
import type { ModelPrice } from "../config.ts";

/**
 * Prompt-cache reads: prompt tokens a provider (or vLLM's prefix cache) served from its cache,
 * counted in `prompt_tokens` like any other and billed by providers at a fraction of the input
 * price (Anthropic 0.1x, OpenAI 0.5x to 0.1x by model, Gemini 0.25x, DeepSeek about 0.1x). A
 * model's `cachedPromptPer1k` prices them; without it they are charged `promptPer1k`, as every
 * prompt token was before it existed. Writes are cache-writes.ts's.
 */

/**
 * The cached prompt tokens a usage object reports: `cache_read_input_tokens` (Anthropic's, through
 * LiteLLM) when it is a count, else `prompt_tokens_details.cached_tokens` (OpenAI's, Gemini's,
 * DeepSeek's `prompt_cache_hit_tokens` through LiteLLM, vLLM's with --enable-prompt-tokens-details).
 * They are the same tokens, never added: LiteLLM's Usage sets `cached_tokens` from
 * `cache_read_input_tokens` (litellm/types/utils.py, Usage.__init__). 0 for anything that is not a
 * count (absent, null, negative, a fraction, a string). A vLLM answer has neither: two property reads (its prompt_tokens_details is null or absent).
 */
export function readCachedTokens(u: object): number {
  const usage = u as { cache_read_input_tokens?: unknown; prompt_tokens_details?: unknown };
  const read = usage.cache_read_input_tokens;
  if (read !== undefined && isCount(read)) return read; // 0 included: LiteLLM's cached_tokens is 0 then too
  const details = usage.prompt_tokens_details as { cached_tokens?: unknown } | null | undefined;
  if (details === null || typeof details !== "object") return 0;
  const cached = details.cached_tokens;
  return isCount(cached) ? cached : 0;
}

/** The cached tokens a request is charged for (promptCost) and its usage row records: none below 0, none past the prompt's. */
export function cachedTokensCharged(promptTokens: number, cachedTokens: number): number {
  return Math.min(Math.max(cachedTokens, 0), Math.max(promptTokens, 0));
}

/**
 * The charge for `promptTokens` of which `cachedTokens` were read from a cache, in µc: the cached
 * ones (no more than the prompt's) at `cachedPromptPer1k`, the rest at `promptPer1k`, rounded up
 * once, exactly: ceil(((prompt − cached) × promptPer1k + cached × cachedPromptPer1k) / 1000).
 * Without a cachedPromptPer1k it is tokenCost(promptTokens, promptPer1k) (money.ts), to the µc.
 */
export function promptCost(promptTokens: number, cachedTokens: number, price: ModelPrice): number {
  if (promptTokens <= 0) return 0;
  const cached = cachedTokensCharged(promptTokens, cachedTokens);
  const cachedPer1k = price.cachedPromptPer1k ?? price.promptPer1k;
  const micro1k = BigInt(promptTokens - cached) * BigInt(price.promptPer1k) + BigInt(cached) * BigInt(cachedPer1k);
  return micro1k <= 0n ? 0 : Number((micro1k + 999n) / 1000n);
}

/**
 * The one rule on a model's cachedPromptPer1k, for both readers of prices (SHIM_CONFIG's,
 * config-file.ts; the stack config's, infra/config/validate.ts): at most its promptPer1k, since
 * the hold reserves promptPer1k for every prompt token, cached or not (Pricer.hold). Either unit
 * (credits or µc), as long as both prices are in the same one.
 */
export const cachedPriceFits = (cachedPer1k: number, promptPer1k: number): boolean => cachedPer1k <= promptPer1k;
/** Why: the end of either reader's message for a cachedPromptPer1k that does not fit. */
export const CACHED_PRICE_WHY = "a cached prompt token is charged no more than a prompt token, which the hold reserves for every prompt token";
