import { creditsNumber, formatCredits } from "../money/money.ts";
import type { UsageGroup } from "../store/store.ts";

/**
 * A report line per key, model and price (/admin/usage?group=model,price): the price's fields
 * and the counts that, with them, recompute the line's cost up to the per-request rounding
 * (docs/api-shim/usage-reports.md#lines-per-price). Amounts are credits (the request prices per
 * request, the token prices per 1,000 tokens). What is not known (rows written before prices were
 * recorded) is empty in CSV and null in JSON: never a guess.
 */
export const PRICE_CSV_HEADER = ["key_id", "model", "price_id", "price_request", "price_batch_request", "price_prompt_per_1k", "price_cached_prompt_per_1k",
  "price_completion_per_1k", "requests", "batch_requests", "prompt_tokens", "cached_tokens", "completion_tokens", "total_tokens", "cost"];

const credits = (micro: number | undefined | null): string => (micro == null ? "" : formatCredits(micro));
const count = (n: number | undefined | null): string | number => n ?? "";

export function priceCsvCells(r: UsageGroup): (string | number)[] {
  const p = r.price ?? null;
  return [r.keyId, r.group, r.priceId ?? "", credits(p?.request), credits(p?.batchRequest), credits(p?.promptPer1k), credits(p?.cachedPromptPer1k),
    credits(p?.completionPer1k), r.requests, count(r.batchRequests), r.promptTokens, count(r.cachedTokens), r.completionTokens,
    r.promptTokens + r.completionTokens, formatCredits(r.cost)];
}

const creditsOrNull = (micro: number | undefined | null): number | null => (micro == null ? null : creditsNumber(micro));

export function priceJsonLine(r: UsageGroup): object {
  const p = r.price ?? null;
  return {
    key_id: r.keyId, model: r.group,
    price: r.priceId == null ? null : {
      id: r.priceId, request: creditsOrNull(p?.request), batch_request: creditsOrNull(p?.batchRequest), prompt_per_1k: creditsOrNull(p?.promptPer1k),
      cached_prompt_per_1k: creditsOrNull(p?.cachedPromptPer1k), completion_per_1k: creditsOrNull(p?.completionPer1k),
      first_seen: p?.firstSeen == null ? null : new Date(p.firstSeen).toISOString(),
    },
    requests: r.requests, batch_requests: r.batchRequests ?? null, prompt_tokens: r.promptTokens, cached_tokens: r.cachedTokens ?? null,
    completion_tokens: r.completionTokens, total_tokens: r.promptTokens + r.completionTokens, cost: creditsNumber(r.cost),
  };
}
