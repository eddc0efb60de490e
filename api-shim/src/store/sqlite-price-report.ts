import type Database from "better-sqlite3";
import type { ReportedPrice } from "../money/price-record.ts";
import { REPORTED_SQL, type UsageGroup } from "./store.ts";

/**
 * The SQLite store's report per key, model and price (group=model,price): a slice's statement,
 * their sums, and each price's fields from `prices` (price-schema.ts). Rows without a price id
 * (written before prices were recorded) are one line of their own per key and model, their price,
 * batch requests and cached tokens null: unknown, never guessed.
 */
export function priceSliceSql(rows: string): string {
  return `SELECT key_id AS keyId, model AS "group", price_id AS priceId, count(*) AS requests, sum(batch) AS batchRequests,
      sum(prompt_tokens) AS promptTokens, sum(cached_tokens) AS cachedTokens, sum(completion_tokens) AS completionTokens, -sum(amount) AS cost
    FROM ledger WHERE ${rows} AND kind = 'usage' AND ${REPORTED_SQL} GROUP BY key_id, "group", price_id`;
}

/** Adds a slice's counts of batch requests and cached tokens to the line's (null stays null: rows without a price). */
export function addPriceCounts(sum: UsageGroup, g: UsageGroup): void {
  sum.batchRequests = sum.batchRequests == null || g.batchRequests == null ? null : sum.batchRequests + g.batchRequests;
  sum.cachedTokens = sum.cachedTokens == null || g.cachedTokens == null ? null : sum.cachedTokens + g.cachedTokens;
}

interface PriceRow { id: string; request: number; batch_request: number; prompt_per_1k: number; cached_prompt_per_1k: number; completion_per_1k: number; first_seen: number }

/** Gives each line its price's fields (the `prices` table is a few rows: read whole). */
export function withPrices(db: Database.Database, lines: Iterable<UsageGroup>): void {
  const prices = new Map<string, ReportedPrice>();
  for (const r of db.prepare<[], PriceRow>("SELECT * FROM prices").all()) {
    prices.set(r.id, { request: r.request, batchRequest: r.batch_request, promptPer1k: r.prompt_per_1k, cachedPromptPer1k: r.cached_prompt_per_1k, completionPer1k: r.completion_per_1k, firstSeen: r.first_seen });
  }
  for (const line of lines) {
    line.priceId ??= null;
    line.price = line.priceId === null ? null : (prices.get(line.priceId) ?? null);
  }
}

/** Within a key and model: the unknown price first, then by when each price was first seen (its id on a tie). */
export function byPrice(a: UsageGroup, b: UsageGroup): number {
  if (a.priceId === b.priceId) return 0;
  if (a.priceId == null) return -1;
  if (b.priceId == null) return 1;
  return (a.price?.firstSeen ?? 0) - (b.price?.firstSeen ?? 0) || (a.priceId < b.priceId ? -1 : 1);
}
