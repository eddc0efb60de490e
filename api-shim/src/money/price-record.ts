import { createHash } from "node:crypto";
import type { Pricing } from "../config.ts";

/**
 * The price a request was charged at, named on its ledger row (`price_id`) so that a report can
 * split a model's line where its price changed and an auditor can recompute each line's cost
 * (docs/api-shim/usage-reports.md#lines-per-price). Every amount is µc: the request prices per
 * request, the token prices per 1,000 tokens. A model without a pricing entry is charged the
 * request price alone: its token prices are 0.
 */
export interface PriceRecord {
  /** A stable hash of the other fields: the same prices have the same id in every process and store. */
  readonly id: string;
  readonly request: number;
  readonly batchRequest: number;
  readonly promptPer1k: number;
  /** What a cached prompt token was charged: the model's cachedPromptPer1k, else its promptPer1k (cache-reads.ts). */
  readonly cachedPromptPer1k: number;
  readonly completionPer1k: number;
}

/** A price as a report shows it: its fields, and when this ledger first had it (ms; null: its row is missing). */
export interface ReportedPrice extends Omit<PriceRecord, "id"> {
  readonly firstSeen: number | null;
}

/**
 * The price of each model of `pricing`, and `unpriced` for a model it does not list. Computed
 * once per configuration (Pricer's constructor), so naming the price costs a request one map read.
 */
export function priceRecords(pricing: Pricing): { models: ReadonlyMap<string, PriceRecord>; unpriced: PriceRecord } {
  const record = (promptPer1k: number, cachedPromptPer1k: number, completionPer1k: number): PriceRecord => {
    const fields = { request: pricing.request, batchRequest: pricing.batchRequest, promptPer1k, cachedPromptPer1k, completionPer1k };
    // The fields in a fixed order, as integers: a restart with the same prices gives the same id.
    const text = JSON.stringify([fields.request, fields.batchRequest, promptPer1k, cachedPromptPer1k, completionPer1k]);
    return { id: createHash("sha256").update(text).digest("hex").slice(0, 16), ...fields };
  };
  const models = new Map<string, PriceRecord>();
  for (const [model, p] of pricing.models) models.set(model, record(p.promptPer1k, p.cachedPromptPer1k ?? p.promptPer1k, p.completionPer1k));
  return { models, unpriced: record(0, 0, 0) };
}

/** Every distinct price of `pricing` (what a store records at its start). */
export function distinctPrices(pricing: Pricing): PriceRecord[] {
  const { models, unpriced } = priceRecords(pricing);
  return [...new Map([...models.values(), unpriced].map((p) => [p.id, p])).values()];
}

/** The prices a store records at its open (the `prices` table), with the time they were seen. */
export interface PricesSeen {
  readonly records: readonly PriceRecord[];
  readonly at: number;
}
