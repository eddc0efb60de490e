import type { FastifyReply, FastifyRequest } from "fastify";
import type { ShimContext } from "../context.ts";
import { ShimError } from "../errors.ts";
import type { Usage } from "../money/pricing.ts";
import type { Settlement } from "../money/settlement.ts";
import { finishRequest } from "../observability/request-line.ts";
import { countUpstreamFailure, isAbort, unreachable } from "../upstream/upstream.ts";
import type { UpstreamFailureReason } from "../upstream/failure-reasons.ts";
import { isUpstreamFault } from "../upstream/upstream-errors.ts";
import type { LeftGeneration } from "../limits/left-generations.ts";

/**
 * How an inference request that got no answer to relay ends (inference.ts): refused by the
 * upstream, failed, cut by a drain, or left by its client; each settles its hold once.
 */

/** What a request is charged when its usage is not known: the request price and no tokens. */
export const REQUEST_PRICE_ONLY: Usage = { promptTokens: 0, completionTokens: 0 };

/**
 * The upstream refused the request (an error status, an error body with a 2xx, or not the answer
 * asked for): counted under `reason`, which goes on the request's line, charged nothing, told to
 * the client as `err`.
 */
export async function refused(ctx: ShimContext, request: FastifyRequest, settlement: Settlement, err: ShimError, reason: UpstreamFailureReason): Promise<never> {
  countRefusal(ctx, request, err, reason);
  await settlement.settle(err.status, null);
  throw finalIfGenerationTimedOut(ctx, request, err, settlement);
}

/**
 * A non-streamed generation the upstream had for at least half of SHIM_UPSTREAM_TIMEOUT_MS, cut by
 * a timeout (LiteLLM's request_timeout, its 408, which in the deployed stack runs out first; the
 * shim's own; a gateway's 504): told final. OpenAI's SDKs retry a 504 twice, and each retry would
 * start the same generation on the GPU again, for as long, into the same timeout: three of them
 * for one call. A stream's 504, one for an upstream never reached, and one answered sooner (a
 * provider's or a gateway's own, in milliseconds) keep the SDKs' retries: nothing long was
 * generated for them, and a retry may well be served.
 */
function finalIfGenerationTimedOut(ctx: ShimContext, request: FastifyRequest, err: ShimError, settlement: Settlement): ShimError {
  if (err.code !== "upstream_timeout" || settlement.stream) return err;
  if (performance.now() - request.shim.start < ctx.config.upstreamTimeoutMs / 2) return err;
  return new ShimError("upstream_timeout", { message: err.message, headers: { ...err.headers, "x-should-retry": "false" } });
}

/** Whether `e` is the 504 finalIfGenerationTimedOut made final: what those waiting on the generation are told too. */
export function isFinalTimeout(e: unknown): e is ShimError {
  return e instanceof ShimError && e.code === "upstream_timeout" && e.headers?.["x-should-retry"] === "false";
}

/**
 * An upstream refusal (`err`, as the client is or would be told it) counted and named on the
 * request's line. One the client is told is its own error (a 4xx: bad parameters, a model the
 * upstream does not have, a body too large) is no upstream failure: an alert on those would be
 * set off by clients' mistakes. The rest (5xx, 401/403 to the shim's credentials, 429/503, a
 * route the upstream lacks, a 501 for what it does not implement) are the upstream's or the
 * operator's to fix.
 */
function countRefusal(ctx: ShimContext, request: FastifyRequest, err: ShimError, reason: UpstreamFailureReason): void {
  if (!isUpstreamFault(err)) {
    request.upstreamCause = reason;
    ctx.metrics.upstreamRefusals.inc({ reason });
  } else countUpstreamFailure(ctx, request, reason);
}

/**
 * The upstream failed (or a drain cut the request) after its client had left: settled with
 * nothing charged and logged as the 499 it is, with the failure counted and its cause on the
 * line as for a client that stayed (a drain's cut is no upstream failure).
 */
export async function leftThenFailed(ctx: ShimContext, request: FastifyRequest, reply: FastifyReply, settlement: Settlement, e: unknown, signal?: AbortSignal, timedOut?: string, left?: LeftGeneration): Promise<FastifyReply> {
  if (timedOut !== undefined || signal === undefined || !isAbort(e, signal)) toRetries(ctx, request, unreachable(ctx, request, e, timedOut), settlement, left);
  return await clientLeft(ctx, request, reply, settlement, null);
}

/** A left generation that ran out of time: its retry waiting on it is told so (joined-retry.ts), not run again. */
function toRetries(ctx: ShimContext, request: FastifyRequest, err: ShimError, settlement: Settlement, left: LeftGeneration | undefined): void {
  if (!left) return;
  const final = finalIfGenerationTimedOut(ctx, request, err, settlement);
  if (final.headers?.["x-should-retry"] === "false") left.failed(final);
}

/** The upstream refused the request (`err`, `reason`, counted as refused() counts them) after its client had left: nothing charged, the reason on the 499 line. */
export async function leftThenRefused(ctx: ShimContext, request: FastifyRequest, reply: FastifyReply, settlement: Settlement, err: ShimError, reason: UpstreamFailureReason, left?: LeftGeneration): Promise<FastifyReply> {
  countRefusal(ctx, request, err, reason);
  toRetries(ctx, request, err, settlement, left);
  return await clientLeft(ctx, request, reply, settlement, null);
}

/**
 * The client is gone: nobody to answer. Settled with `usage`, logged as nginx does (499), the
 * line written even if the store fails to settle (then the hold is released as a stream's is, stream.ts).
 * `settled` is told the charge (an answer kept for the client's retry: joined-retry.ts).
 */
export async function clientLeft(ctx: ShimContext, request: FastifyRequest, reply: FastifyReply, settlement: Settlement, usage: Usage | null, settled?: (cost: number, available: number) => void): Promise<FastifyReply> {
  request.shimErrorCode = "client_closed_request";
  reply.hijack();
  reply.raw.destroy();
  try {
    const { cost, available } = await settlement.settle(499, usage);
    settled?.(cost, available);
  } catch (e) {
    request.log.error({ reqId: request.id, err: e instanceof Error ? e.cause ?? e : e }, "settlement failed");
  }
  finishRequest(ctx, request, 499);
  return reply;
}

/**
 * The upstream failed (or the client left) before a response: release the hold, answer if anyone
 * listens. `sent`: the upstream had the request (and did not refuse it): a client that leaves is
 * then charged the request price. `reached`: the upstream had the request, refused or not (the
 * client is not told it could not be reached). `timedOut`: the read's own deadline cut it (an upstream timeout).
 */
export async function failed(ctx: ShimContext, request: FastifyRequest, reply: FastifyReply, settlement: Settlement, signal: AbortSignal, e: unknown, sent: boolean, reached: boolean, timedOut?: string): Promise<FastifyReply> {
  if (timedOut === undefined && e instanceof ShimError) {
    await settlement.settle(e.status, null);
    throw e;
  }
  if (timedOut === undefined && isAbort(e, signal)) {
    if (signal.reason === "drain") {
      await settlement.settle(503, null);
      throw ctx.inflight.refusal();
    }
    // The client is gone: nobody to answer. Log it as nginx does (499). Once the upstream had the
    // request it is charged the request price, as a stream whose client leaves before any content
    // is: a non-streamed answer carries no usage until it is whole, and without this a client
    // could have answers generated for free by hanging up just before they come. (Dropped before
    // it was sent, it costs nothing.)
    return await clientLeft(ctx, request, reply, settlement, sent ? REQUEST_PRICE_ONLY : null);
  }
  const err = unreachable(ctx, request, e, timedOut, reached);
  await settlement.settle(err.status, null);
  throw reached ? finalIfGenerationTimedOut(ctx, request, err, settlement) : err;
}
