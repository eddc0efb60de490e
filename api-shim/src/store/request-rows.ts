// A request's own ledger rows (GET /admin/requests/{id}) and a key's requests one per row
// (GET /admin/requests?key=): the question, the row, and the SQL both stores run. Here, with no
// value imports but store.ts's rule: the SQLite report worker imports it.
import { REPORTED_SQL, type UsageRow } from "./store.ts";

/**
 * Which usage rows: those of one request id (`requestId`; `keyId` too when given), or a key's in
 * [from, to) (`keyId`, no `requestId`), oldest first (at, then the row's id: the order written).
 */
export interface RequestsQuery {
  requestId: string | null;
  keyId: string | null;
  from: number;
  to: number; // exclusive
  /** Who asks (UsageQuery.asker): the operator, null, on the admin API. */
  asker: string | null;
  signal?: AbortSignal;
}

/**
 * One forwarded request's ledger row as the stores read it. Columns added after a row was written
 * are null in it (price_id, batch, cached_tokens before 2026-12-07; served before it was recorded):
 * unknown, never guessed. `stream`, `batch` and `served` are 0/1 from SQLite, booleans from Postgres.
 */
export interface RequestRow extends Pick<UsageRow, "requestId" | "keyId" | "at" | "route" | "model" | "status" | "promptTokens" | "completionTokens"> {
  /** The ledger row's own id: where a SQLite itemisation's next batch starts (not shown). */
  rowId: number;
  stream: boolean | number | null;
  batch: boolean | number | null;
  cachedTokens: number | null;
  /** µc charged (the ledger row's −amount): 0 when nothing was. */
  cost: number;
  priceId: string | null;
  served: boolean | number | null;
  ms: number | null;
  /** Counted by /admin/usage and /v1/usage (REPORTED_SQL): served or charged. */
  reported: boolean | number;
  /** A joined request's row (store.ts, JoinedRow): the request whose charge it shares; null on every other row. */
  joinedRequestId: string | null;
}

const COLUMNS = `id AS "rowId", ref AS "requestId", key_id AS "keyId", at, route, model, status, stream, batch,
  prompt_tokens AS "promptTokens", cached_tokens AS "cachedTokens", completion_tokens AS "completionTokens", -amount AS cost,
  price_id AS "priceId", served, ms, ${REPORTED_SQL} AS reported, joined AS "joinedRequestId"`;

/**
 * The Postgres store's statement ($1…: requestSqlValues): a request id through the usage rows'
 * index by id (ledger_usage_ref, built in the background: postgres-usage-index.ts; a scan until
 * then), a key's period through (key_id, at).
 */
export function requestsPgSql(q: Pick<RequestsQuery, "requestId" | "keyId">): string {
  if (q.requestId !== null) return `SELECT ${COLUMNS} FROM ledger WHERE kind = 'usage' AND ref = $1 ${q.keyId === null ? "" : "AND key_id = $2"} ORDER BY at, id`;
  return `SELECT ${COLUMNS} FROM ledger WHERE key_id = $1 AND at >= $2 AND at < $3 AND kind = 'usage' ORDER BY at, id`;
}

export function requestsPgValues(q: Pick<RequestsQuery, "requestId" | "keyId" | "from" | "to">): unknown[] {
  if (q.requestId !== null) return q.keyId === null ? [q.requestId] : [q.requestId, q.keyId];
  return [q.keyId, q.from, q.to];
}

/** Where a SQLite itemisation's next batch starts: after this row (at, then id). */
export interface RowAfter { at: number; id: number }

/**
 * The SQLite store's statement (named parameters: the query's, and `afterAt`/`afterId` for a
 * key's next batch, LIMIT `rows`): a key's period read in pages after the last row sent, through
 * (key_id, at), whose order (at, then the rowid) is the answer's, so nothing is sorted and nothing
 * is held between batches. It calls shim_report_check (the worker's stop and bound), as a usage
 * report's does.
 */
export function requestsSqliteSql(q: Pick<RequestsQuery, "requestId" | "keyId">, rows: number): string {
  const check = "(id & 4095 <> 0 OR shim_report_check())";
  // `+key_id`: the request id's index (a row or two), never the key's (all its rows), whatever
  // the planner guesses without statistics (no ANALYZE runs).
  if (q.requestId !== null) return `SELECT ${COLUMNS} FROM ledger WHERE kind = 'usage' AND ref = @requestId ${q.keyId === null ? "" : "AND +key_id = @keyId"} AND ${check} ORDER BY at, id`;
  return `SELECT ${COLUMNS} FROM ledger WHERE key_id = @keyId AND at >= @from AND at < @to AND (at > @afterAt OR (at = @afterAt AND id > @afterId))
    AND kind = 'usage' AND ${check} ORDER BY at, id LIMIT ${rows}`;
}
