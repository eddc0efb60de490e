import type { FastifyReply, FastifyRequest } from "fastify";
import type { ShimContext } from "../context.ts";
import { ShimError } from "../errors.ts";
import { type LeftGeneration, saysRetry } from "../limits/left-generations.ts";
import { authHeaders } from "../limits/response-headers.ts";
import { formatCredits } from "../money/money.ts";
import { finishRequest } from "../observability/request-line.ts";
import { spliceJsonBytes } from "../requests/json-splice.ts";
import type { InferenceKind } from "../requests/inference-request.ts";
import { batchAsked } from "../requests/batch-query.ts";

/**
 * An SDK's retry of a non-streamed request whose client left joins that generation
 * (limits/left-generations.ts): it is answered with that generation's answer, charged once.
 *
 * A retry is what the official SDKs say it is: openai-node (and so LangChain.js and
 * LlamaIndex.TS) sends `X-Stainless-Retry-Count: String(retryCount)` on every attempt, 0 on the
 * first (openai 7.57 client.js, buildHeaders, with makeRequest's `retryCount: maxRetries -
 * retriesRemaining`), and openai-python the same header. A request without it, or with 0, is
 * never joined: identical bodies sent on purpose (sampling n times) are each generated
 * (left-generations.ts: saysRetry, and mayJoin, which the auth hook asks).
 */

/** On a joined retry's answer: the request whose generation (and charge) it is. */
export const JOINED_HEADER = "x-joined-request-id";
/** On a re-send answered with its Idempotency-Key's earlier answer, as the admin API's top-ups mark theirs. */
export const REPLAYED_HEADER = "idempotent-replayed";

/** What names a call besides its body: its route, and its price (`?batch=1`, the one query the inference routes read). */
export function callOf(upstreamPath: string, batch: boolean): string {
  return batch ? `${upstreamPath}?batch=1` : upstreamPath;
}

/**
 * The left generation `request` may join: none unless it says it is a retry and its key has a
 * left generation (no hashing otherwise), then the same route and body bytes. Asked only of a
 * request without an Idempotency-Key (the handler looks that one up by its key instead), so the
 * retry header alone is read, not mayJoin's two.
 */
export function joinable(ctx: ShimContext, request: FastifyRequest, route: string, stream: boolean): LeftGeneration | undefined {
  const keyId = request.auth!.key.id;
  if (stream || !saysRetry(request) || !ctx.leftGenerations.has(keyId) || !request.rawBody) return undefined;
  return ctx.leftGenerations.find(keyId, route, request.rawBody);
}

/**
 * Answers `request` with `g`'s answer, waiting for it while it is generated; nothing is charged.
 * True once answered (or its client left); a boolean, not the reply, which is a thenable: awaited,
 * it would become undefined once sent. False when `g` ends without an answer (it failed: the retry then generates its own), but a
 * generation that ran out of time is told as its 504 (x-should-retry: false). A
 * client that leaves meanwhile is logged 499, charged nothing, and `g` waits for its next retry.
 * `g` an idempotent request's (idempotent-requests.ts): a replay, marked REPLAYED_HEADER; every
 * re-send with its Idempotency-Key gets the answer, which stays kept for the next.
 */
export async function answerJoined(ctx: ShimContext, request: FastifyRequest, reply: FastifyReply, g: LeftGeneration, model: string, route: InferenceKind): Promise<boolean> {
  const replay = g.idempotencyKey !== undefined;
  const ac = new AbortController();
  // In flight while it waits: a drain waits for it, and cuts it (503) as it cuts the generation.
  // With the request, and the generation it joined named: GET /admin/requests/{id} of the retry's
  // id tells it is waiting on that one (routes/running-request.ts). A replay is named as one, not
  // as a joined retry, on its line too.
  if (replay) request.shim.replayed = g.requestId;
  else request.shim.joined = g.requestId;
  const done = ctx.inflight.add((reason) => ac.abort(reason), request);
  const onClose = () => reply.raw.writableFinished || ac.abort("client");
  reply.raw.on("close", onClose);
  if (reply.raw.destroyed) onClose();
  // This retry's, until it is delivered whole (then forgotten) or not delivered (then the next retry's).
  g.claimed = true;
  const joined = g.ended ? "finished" : "running";
  let sending = false;
  try {
    const answer = await g.outcome(ac.signal);
    const s = request.shim;
    s.model = model;
    s.cost = 0;
    if (ac.signal.reason === "drain") throw ctx.inflight.refusal();
    if (ac.signal.aborted) {
      request.shimErrorCode = "client_closed_request";
      reply.hijack();
      reply.raw.destroy();
      finishRequest(ctx, request, 499);
      return true;
    }
    if (!answer) {
      // It generates its own (inference.ts): neither joined nor charged 0, on its line and to a lookup of its id.
      s.joined = undefined;
      s.replayed = undefined;
      s.cost = null;
      return false;
    }
    if (answer instanceof ShimError) {
      // Its call's batch flag, which the generation's shares (the call is part of what joins them).
      recordJoined(ctx, request, g, route, answer.status, batchAsked(request));
      throw answer; // the generation ran out of time: told final, not run again
    }
    // What the key has left now (other requests may have been charged since the generation was):
    // the retry's figure, as its limits' headers are; the charge is the generation's.
    // A store that fails to say: the key as read when the retry authenticated, rather than no answer.
    const key = await ctx.store.getKey(request.auth!.key.id).catch(() => request.auth!.key);
    const available = key ? key.balance - key.held : undefined;
    const body = Buffer.concat(spliceJsonBytes(answer.body, { credits_charged: formatCredits(answer.cost), credits_remaining: formatCredits(available ?? 0), batch_request: String(answer.batch) }));
    reply.hijack();
    reply.raw.off("close", onClose);
    ctx.inflight.closeIfDraining(reply.raw);
    const headers = { "x-request-id": request.id, ...authHeaders(ctx, request, answer.cost, available), "content-type": "application/json", "content-length": body.length };
    reply.raw.writeHead(answer.status, replay ? { ...headers, [JOINED_HEADER]: g.requestId, [REPLAYED_HEADER]: "true" } : { ...headers, [JOINED_HEADER]: g.requestId });
    // Delivered whole: counted (shim_retry_joins_total: each generation once, as a delivery cut
    // here leaves it to the next retry, which would count it again) and forgotten, so a later
    // retry of another call with the same body generates its own.
    reply.raw.once("finish", () => {
      if (replay) return ctx.leftGenerations.replayed(joined);
      ctx.leftGenerations.joined(joined);
      ctx.leftGenerations.drop(g);
    });
    reply.raw.once("close", () => reply.raw.writableFinished || (g.claimed = false));
    sending = true;
    reply.raw.end(body);
    finishRequest(ctx, request, answer.status);
    recordJoined(ctx, request, g, route, answer.status, answer.batch);
    return true;
  } finally {
    if (!sending) g.claimed = false;
    reply.raw.off("close", onClose);
    done();
  }
}

/**
 * The answered request's own ledger row (store.ts, JoinedRow): charging nothing, naming `g`'s
 * request, so its id finds where its charge is once its log has rotated. Written once its answer
 * is out (not awaited: a store that fails it costs the row, logged, never the answer). A request
 * whose client left before any answer gets none: its client never had its id.
 */
function recordJoined(ctx: ShimContext, request: FastifyRequest, g: LeftGeneration, route: InferenceKind, status: number, batch: boolean): void {
  const row = { requestId: request.id, keyId: g.keyId, at: ctx.clock.now(), route, model: request.shim.model!, status, ms: Math.round(performance.now() - request.shim.start), batch, joined: g.requestId };
  ctx.store.recordJoined(row).catch((e: unknown) => request.log.error({ reqId: request.id, joined: g.requestId, err: (e as { cause?: unknown }).cause ?? e }, "joined request's ledger row not written"));
}

/** What `g`'s retry will be answered with: the answer as read, and what it was charged. */
export function keepAnswer(g: LeftGeneration, status: number, answer: Buffer, batch: boolean, cost: number): void {
  // A copy of its own size: the answer read may be a view of a larger buffer (one chunk of the
  // socket's), which kept for minutes would hold more than the bytes KEPT_BYTES counts.
  const body = Buffer.allocUnsafeSlow(answer.length);
  answer.copy(body);
  g.answered({ status, body, cost, batch });
}
