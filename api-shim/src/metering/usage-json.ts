import { readCachedTokens } from "../money/cache-reads.ts";
import { type CacheWrites, readCacheWrites } from "../money/cache-writes.ts";
import type { Usage } from "../money/pricing.ts";
import { isCount } from "./token-count.ts";

/**
 * An upstream's `usage` object, read into what is charged: a non-streamed answer's (answer-body.ts)
 * and a stream's usage chunks (metering.ts) alike, so both are charged the same for the same figures.
 */

export interface UsageJson {
  prompt_tokens?: unknown;
  completion_tokens?: unknown;
  /** The Responses API's names for them (responsesUsage), with `input_tokens_details.cached_tokens`. */
  input_tokens?: unknown;
  output_tokens?: unknown;
  input_tokens_details?: unknown;
}

/** A usage object's counts, each read on its own: null where the upstream's is missing or not a count. */
export interface Counts {
  promptTokens: number | null;
  completionTokens: number | null;
  /** Prompt-cache writes reported (a provider's, through LiteLLM), in promptTokens too. */
  cacheWrites?: CacheWrites;
  /** Prompt tokens read from a prompt cache (cache-reads.ts), in promptTokens too; absent for none. */
  cachedTokens?: number;
}

/** A stream's usage object's counts, each read on its own. */
export function readCounts(u: UsageJson): Counts {
  return withCacheCounts<Counts>({ promptTokens: isCount(u.prompt_tokens) ? u.prompt_tokens : null, completionTokens: isCount(u.completion_tokens) ? u.completion_tokens : null }, u);
}

/** A usage object whose counts can both be read (a missing completion count is 0: embeddings have none), else null. */
export function toUsage(u: UsageJson | null | undefined): Usage | null {
  if (!u || typeof u !== "object") return null;
  if (u.prompt_tokens === undefined && u.input_tokens !== undefined) u = chatNames(u);
  const p = u.prompt_tokens;
  const c = u.completion_tokens ?? 0;
  if (!isCount(p) || !isCount(c)) return null;
  return withCacheCounts<Usage>({ promptTokens: p, completionTokens: c }, u);
}

/** `into` with the prompt-cache writes and reads `u` reports, where it reports any (a vLLM answer: none). */
function withCacheCounts<T extends { cacheWrites?: CacheWrites; cachedTokens?: number }>(into: T, u: object): T {
  const cacheWrites = readCacheWrites(u);
  if (cacheWrites) into.cacheWrites = cacheWrites;
  const cachedTokens = readCachedTokens(u);
  if (cachedTokens > 0) into.cachedTokens = cachedTokens;
  return into;
}

/** The largest token count a usage row holds (Postgres's integer columns). */
export const MAX_TOKEN_COUNT = 2 ** 31 - 1;

/**
 * Usage as the stores keep it: a count past 2^31 (one reported, or a sum over a request's
 * outputs) is an upstream's nonsense, and failing the settlement on it left the request
 * uncharged (Postgres refused the row). Cache writes and reads are kept for the charge
 * (settlement.ts), not stored: a row keeps the counts, prompt_tokens as the upstream reported it.
 */
export function storedUsage(u: Usage): Usage {
  return { ...u, promptTokens: Math.min(u.promptTokens, MAX_TOKEN_COUNT), completionTokens: Math.min(u.completionTokens, MAX_TOKEN_COUNT) };
}

/**
 * A Responses API usage object (`input_tokens`, `output_tokens`, `input_tokens_details.cached_tokens`:
 * vLLM's ResponseUsage, OpenAI's, LiteLLM's) under chat's names, so that both are read by the same
 * rules (cached tokens as chat's `prompt_tokens_details.cached_tokens`); other members kept.
 */
function chatNames(u: UsageJson): UsageJson & { prompt_tokens_details?: unknown } {
  return { ...u, prompt_tokens: u.input_tokens, completion_tokens: u.completion_tokens ?? u.output_tokens, prompt_tokens_details: u.input_tokens_details };
}
