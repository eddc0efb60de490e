import type { FastifyInstance, FastifyRequest } from "fastify";
import { modelRefusal } from "../requests/admission.ts";
import { aliasesOf, modelNamed } from "../requests/model-aliases.ts";
import { authHeaders } from "../limits/response-headers.ts";
import { batchAsked } from "../requests/batch-query.ts";
import type { ShimContext } from "../context.ts";
import { ShimError } from "../errors.ts";
import { creditsNumber } from "../money/money.ts";
import type { PriceRecord } from "../money/price-record.ts";
import { countUpstreamFailure, readLimited, unreachable } from "../upstream/upstream.ts";
import { modelNotFound, upstreamStatusError } from "../upstream/upstream-errors.ts";

/** The most of an upstream model list read (its size is the upstream's, not a client's). */
export const MODEL_LIST_LIMIT = 16 * 1024 * 1024;

/**
 * GET /v1/models: the upstream's list, filtered to the configured models and the key's
 * allow-list. GET /v1/models/{id}: one entry of that same list, as the list shows it (OpenAI's,
 * vLLM's and LiteLLM's `models.retrieve`); any other id is the inference routes' 404
 * model_not_found, for an unknown model, one not served or one the key may not use alike (the
 * list does not show it either). Authenticated (each counts against the key's requests/min),
 * charged nothing.
 *
 * A wildcard, not `:model`: the kit serves a model under its Hugging Face id (`Qwen/Qwen2.5-7B-
 * Instruct`), which OpenAI's Python SDK and curl send with its `/` raw; and a parameter is cut at
 * the router's maxParamLength (app.ts), shorter than a model name may be (names.ts, once decoded).
 * The path stays bounded by the request line nginx (8 KiB) and the HTTP server (64 KiB) take. An
 * encoded `/` (the Node SDK's %2F) never arrives: refused 400 with every one (app.ts, nginx).
 */
export function modelsRoutes(app: FastifyInstance, ctx: ShimContext): void {
  app.get("/v1/models", async (request, reply) => {
    const { body, data } = await keyModels(ctx, request);
    // The list's own members only: llama.cpp's answer also lists its models Ollama's way
    // (`models`, file paths included), which the key's allow-list would not filter.
    return reply.headers(authHeaders(ctx, request)).type("application/json").send({ object: body.object ?? "list", data: data.map(({ entry }) => entry), ...free(request) });
  });
  // The router drops one trailing `/` first (ignoreTrailingSlash): `/v1/models/` is the list.
  app.get<{ Params: { "*": string } }>("/v1/models/*", async (request, reply) => {
    const model = request.params["*"];
    const found = (await keyModels(ctx, request)).data.find(({ id }) => id === model);
    if (!found) throw modelNotFound(model);
    return reply.headers(authHeaders(ctx, request)).type("application/json").send({ ...found.entry, ...free(request) });
  });
}

/** Free, and says so the way every other answer does (the contract's credit members). */
function free(request: FastifyRequest): { credits_charged: number; credits_remaining: number } {
  const key = request.auth!.key;
  return { credits_charged: 0, credits_remaining: creditsNumber(key.balance - key.held) };
}

/**
 * The models the request's key is shown: the upstream's list (`body`, its other members kept)
 * and its entries that are configured and in the key's allow-list, an id listed twice (LiteLLM
 * has done so) once. Upstream failures are thrown as the model routes answer them.
 */
async function keyModels(ctx: ShimContext, request: FastifyRequest): Promise<{ body: Record<string, unknown>; data: { id: string; entry: object }[] }> {
  batchAsked(request); // checked as on inference, before any work; free here whatever it says
  let res;
  let text: string;
  let sent = false; // the upstream had the request: reached, whatever broke after
  // One deadline for the whole list, body included (the headers timeout alone would let a
  // trickling body run on); running out of it is a timeout (504), like the headers timeout.
  const deadline = AbortSignal.timeout(ctx.config.upstreamTimeoutMs);
  // A shutdown's drain that ends before the upstream answers: 503, so the client retries elsewhere.
  const signal = request.drainCut ? AbortSignal.any([deadline, request.drainCut]) : deadline;
  try {
    res = await ctx.upstream.request({ method: "GET", path: "/models", requestId: request.id, control: true, signal, onSent: () => (sent = true) });
    text = (await readLimited(res.body, MODEL_LIST_LIMIT)).text;
  } catch (e) {
    if (request.drainCut?.aborted) throw ctx.inflight.refusal();
    throw unreachable(ctx, request, e, deadline.aborted ? (res ? "UND_ERR_BODY_TIMEOUT" : "UND_ERR_HEADERS_TIMEOUT") : undefined, sent);
  }
  // A GET with nothing in it is never the client's fault: whatever the upstream says, it is the
  // upstream's failure (busy: 503, slow: 504), and none of its message reaches the client.
  if (res.status !== 200) {
    countUpstreamFailure(ctx, request, `status_${res.status}`); // what the upstream said, on the line: the client is told none of it
    if ([408, 429, 503, 504].includes(res.status)) throw upstreamStatusError(res.status, "", undefined, res.headers["retry-after"], ctx.hideSecrets);
    // A bare 404 keeps the shim's own "misconfigured" message (no word of the upstream's).
    const missing = res.status === 404 ? upstreamStatusError(404, text, undefined, undefined, ctx.hideSecrets) : null;
    throw missing?.code === "upstream_error" ? missing : new ShimError("upstream_error");
  }
  const list = parseModelList(text);
  if (list === null) {
    countUpstreamFailure(ctx, request, "not_a_model_list");
    throw new ShimError("upstream_error");
  }
  const key = request.auth!.key;
  const seen = new Set<string>();
  // Each model's aliases after it, as its own entry under the alias's id: clients and tools pick
  // a name from this list, and an alias's context, owner and price are its model's.
  const named = list.entries.flatMap((e) => [e, ...aliasesOf(ctx.config, e.id).map((alias) => ({ id: alias, entry: { ...e.entry, id: alias } }))]);
  const data = named.filter(({ id }) => {
    if (seen.has(id) || modelRefusal(ctx, key, id) !== null) return false;
    seen.add(id);
    return true;
  });
  return { body: list.body, data: data.map(({ id, entry }) => ({ id, entry: { ...entry, pricing: shownPrice(ctx.pricer.price(modelNamed(ctx.config, id))) } })) };
}

/**
 * What the model's requests are charged, in credits, as the usage reports' lines per price show
 * it (price-lines.ts; `id` is their price_id): a job estimates its cost before it runs, which it
 * could only do by sending a request and reading its x-credits-charged. Replaces an upstream's
 * member of that name: this is what the key pays.
 */
function shownPrice(p: PriceRecord): Record<string, string | number> {
  return {
    id: p.id, request: creditsNumber(p.request), batch_request: creditsNumber(p.batchRequest), prompt_per_1k: creditsNumber(p.promptPer1k),
    cached_prompt_per_1k: creditsNumber(p.cachedPromptPer1k), completion_per_1k: creditsNumber(p.completionPer1k),
  };
}

/**
 * An upstream model list (`{"data": [{"id": …}, …]}`, or `"data": null` for none), its entries
 * that are models (an object with a string id; a null or a number is skipped), or null when it is
 * not such a list. Read the
 * same way by /v1/models and /ready.
 */
export function parseModelList(text: string): { body: Record<string, unknown>; entries: { id: string; entry: object }[] } | null {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return null;
  }
  const listed = body !== null && typeof body === "object" ? (body as { data?: unknown }).data : undefined;
  // Ollama with no model pulled answers `"data": null` (its list is a nil Go slice): no model yet.
  const data = listed === null ? [] : listed;
  if (!Array.isArray(data)) return null;
  const entries = data.flatMap((entry: unknown) => {
    const id = entry !== null && typeof entry === "object" ? (entry as { id?: unknown }).id : undefined;
    return typeof id === "string" ? [{ id, entry: entry as object }] : [];
  });
  return { body: body as Record<string, unknown>, entries };
}
