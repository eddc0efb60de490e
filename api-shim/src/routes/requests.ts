import type { FastifyInstance } from "fastify";
import type { ShimContext } from "../context.ts";
import { ShimError } from "../errors.ts";
import { isKeyId } from "../auth/keys.ts";
import { creditsNumber, formatCredits } from "../money/money.ts";
import { parsePeriod, showPeriod } from "../requests/period.ts";
import { onlyKnown } from "../requests/known-members.ts";
import { SANE_REQUEST_ID } from "../requests/request-id.ts";
import type { RequestRow } from "../store/request-rows.ts";
import { requestsReport } from "./usage.ts";
import { runningRequest } from "./running-request.ts";
import { type RowsLayout, sendRowsBody } from "./usage-body.ts";

/**
 * Beyond DESIGN.md's routes (docs/decisions.md): a request's ledger row by the id its client saw
 * (x-request-id), and a key's requests one row each, so "charged for request X that failed" and
 * "our count says Y for November" are answered from the admin API once the shim's log has rotated,
 * not from a copy of the ledger and sqlite3. Both run as reports (their turn, bound, and end when
 * the asker leaves); a key's month is streamed as /admin/usage's body is.
 */
export function requestRoutes(app: FastifyInstance, ctx: ShimContext): void {
  app.get<{ Params: { id: string } }>("/admin/requests/:id", async (request, reply) => {
    const q = onlyKnown(request.query as object, ["key"], "query parameter");
    const keyId = keyParam(q.key);
    // An id the shim could not have given a request names none: no scan for it.
    if (!SANE_REQUEST_ID.test(request.params.id)) throw requestNotFound();
    // Still running here: said so, before the scan (it has no row yet). Asked first, a request not
    // running now has settled already, its row committed before the scan reads.
    const running = runningRequest(ctx, request.params.id, keyId);
    if (running) throw running;
    const batches = await requestsReport(ctx, request, reply, { requestId: request.params.id, keyId: keyId ?? null, from: 0, to: Number.MAX_SAFE_INTEGER });
    const rows: RequestRow[] = [];
    for await (const batch of batches) rows.push(...batch);
    if (rows.length === 0) throw requestNotFound();
    return reply.send({ object: "list", data: rows.map(requestJson) });
  });

  app.get("/admin/requests", async (request, reply) => {
    const q = onlyKnown(request.query as object, ["key", "from", "to", "format"], "query parameter");
    const format = q.format ?? "json";
    if (format !== "json" && format !== "csv") throw invalid("'format' must be json or csv.", "format");
    const keyId = keyParam(q.key);
    if (keyId === undefined) throw invalid("'key' is required: a key id (12 letters or digits). A request by its id: GET /admin/requests/{request_id}.", "key");
    // As /admin/usage: an empty list would read as "this key sent nothing".
    if (!(await ctx.store.getKey(keyId))) throw new ShimError("not_found", { param: "key", message: "No such key." });
    const period = parsePeriod(q, ctx.clock.now());
    const batches = await requestsReport(ctx, request, reply, { requestId: null, keyId, from: period.from, to: period.to });
    return sendRowsBody(ctx, request, reply, batches, format, { ...REQUEST_LAYOUT, head: { object: "request_list", key_id: keyId, period: showPeriod(period) }, filename: "requests.csv" });
  });
}

function keyParam(key: unknown): string | undefined {
  if (key !== undefined && (typeof key !== "string" || !isKeyId(key))) throw invalid("'key' must be a key id (12 letters or digits).", "key");
  return key;
}

const invalid = (message: string, param: string) => new ShimError("invalid_request", { message, param });
const requestNotFound = () => new ShimError("not_found", {
  param: "request_id",
  message: "No request with this id is in the ledger. Requests forwarded to the model have a row (charged or not), and so do those answered with another request's generation (a retry that joined it, a re-send with its Idempotency-Key: a row charging nothing, naming that request). One the shim refused before (a bad key or body, 402, 403, 429) was charged nothing and is in its log alone; a joined retry or re-send answered by a shim older than 2026-12-08 has none (its answer's x-joined-request-id, and its log line's 'joined' or 'replayed', name the request whose row has the charge); and a request still running on another replica has none yet (each replica knows only its own).",
});

/** A column that was not recorded when the row was written (NULL): unknown, null in JSON, empty in CSV. */
const flag = (v: boolean | number | null): boolean | null => (v === null ? null : Boolean(v));

/** A request's row as both answers show it: its charge in credits as the usage report writes them. */
function requestJson(r: RequestRow): object {
  return {
    request_id: r.requestId, key_id: r.keyId, at: new Date(r.at).toISOString(), route: r.route, model: r.model, status: r.status,
    stream: flag(r.stream), batch: flag(r.batch), served: flag(r.served), reported: Boolean(r.reported),
    prompt_tokens: r.promptTokens, cached_tokens: r.cachedTokens, completion_tokens: r.completionTokens, total_tokens: r.promptTokens + r.completionTokens,
    cost: creditsNumber(r.cost), price_id: r.priceId, ms: r.ms, joined_request_id: r.joinedRequestId,
  };
}

const cell = (v: boolean | number | string | null): string | number => (v === null ? "" : typeof v === "boolean" ? String(v) : v);

const REQUEST_LAYOUT: Omit<RowsLayout<RequestRow>, "head" | "filename"> = {
  csvHeader: ["request_id", "key_id", "at", "route", "model", "status", "stream", "batch", "served", "reported", "prompt_tokens", "cached_tokens",
    "completion_tokens", "total_tokens", "cost", "price_id", "ms", "joined_request_id"], // a column added goes last: scripts read by position
  csvCells: (r) => [r.requestId, r.keyId, new Date(r.at).toISOString(), r.route, r.model, r.status, cell(flag(r.stream)), cell(flag(r.batch)),
    cell(flag(r.served)), String(Boolean(r.reported)), r.promptTokens, cell(r.cachedTokens), r.completionTokens, r.promptTokens + r.completionTokens,
    formatCredits(r.cost), cell(r.priceId), cell(r.ms), cell(r.joinedRequestId)],
  json: requestJson,
};
