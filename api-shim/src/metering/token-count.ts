/**
 * A token count as an upstream's usage reports it: a non-negative safe integer. Anything else
 * (absent, null, a fraction, a string, a negative) is not one, and the readers of usage
 * (usage-json.ts, money/cache-reads.ts, money/cache-writes.ts) treat it as missing.
 */
export const isCount = (n: unknown): n is number => typeof n === "number" && Number.isSafeInteger(n) && n >= 0;

/** `n` when it is a count, else 0. */
export const countOrZero = (n: unknown): number => (isCount(n) ? n : 0);

/**
 * The output tokens a stream delivered, when the upstream did not count them: each content chunk
 * (delta) at least one token, or the estimate of their text when more (an upstream merges a lagging
 * consumer's tokens into one chunk), never above the most the request may generate.
 */
export const deliveredTokens = (chunks: number, estimate: number, bound: number): number => Math.max(chunks, Math.min(estimate, bound));
