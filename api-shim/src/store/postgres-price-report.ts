import { REPORTED_SQL } from "./store.ts";

/**
 * The Postgres store's report per key, model and price (group=model,price; $1 and $2 the period,
 * $3 the key): each line's price fields from `prices` (price-schema.ts). Rows without a price id
 * (written before prices were recorded, or by a replica of the previous version) are one line of
 * their own per key and model, their price, batch requests and cached tokens null: unknown, never
 * guessed. Within a key and model, the unknown price first, then by when each was first seen.
 */
export function priceReportSql(keyId: string | null): string {
  return `SELECT g.*, CASE WHEN p.id IS NULL THEN NULL ELSE json_build_object('request', p.request, 'batchRequest', p.batch_request,
      'promptPer1k', p.prompt_per_1k, 'cachedPromptPer1k', p.cached_prompt_per_1k, 'completionPer1k', p.completion_per_1k, 'firstSeen', p.first_seen) END AS price
    FROM (SELECT key_id AS "keyId", model AS "group", price_id AS "priceId", count(*) AS requests, sum(batch::int)::bigint AS "batchRequests",
        sum(prompt_tokens)::bigint AS "promptTokens", sum(cached_tokens)::bigint AS "cachedTokens",
        sum(completion_tokens)::bigint AS "completionTokens", (-sum(amount))::bigint AS cost
      FROM ledger WHERE kind = 'usage' AND ${REPORTED_SQL} AND at >= $1 AND at < $2 ${keyId === null ? "" : "AND key_id = $3"}
      GROUP BY 1, 2, 3) g LEFT JOIN prices p ON p.id = g."priceId"
    ORDER BY g."keyId" COLLATE "C", g."group" COLLATE "C", g."priceId" IS NOT NULL, p.first_seen, g."priceId" COLLATE "C"`;
}
