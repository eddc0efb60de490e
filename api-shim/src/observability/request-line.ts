import type { FastifyRequest } from "fastify";
import type { ShimContext } from "../context.ts";
import type { ShimError } from "../errors.ts";
import { creditsNumber } from "../money/money.ts";
import { loggedModel, redactedPath } from "./redaction.ts";

/**
 * The one log line and count per request (logger.ts writes the line). Written where a request
 * ends: app.ts's hooks, and the inference and usage routes, which end their own requests (a
 * stream once its last event is out); so here, not in app.ts, which registers those routes.
 */

/** The line and count of a connection the HTTP server refused before Fastify had a request on it. */
export function logUnparsed(ctx: ShimContext, reqId: string, status: number, error: ShimError): void {
  const route = "unparsed";
  ctx.metrics.requests.inc({ route, status });
  ctx.logRequest({ reqId, method: "-", path: "-", status, ms: null, keyId: null, model: null, tokens: null, cost: null, error: error.logCode });
}

/** The one log line and the metrics of a request; streams call it when their last event is out. */
export function finishRequest(ctx: ShimContext, request: FastifyRequest, status: number): void {
  const s = request.shim;
  if (!s || s.logged) return;
  s.logged = true;
  const ms = performance.now() - s.start;
  const route = request.routeOptions.url ?? "unmatched";
  ctx.metrics.requests.inc({ route, status });
  ctx.metrics.duration.observe({ route }, ms / 1000);
  ctx.logRequest({
    reqId: request.id,
    method: request.method,
    path: redactedPath(request.url, ctx.hideSecrets, ctx.config.models).slice(0, 200),
    status,
    ms: Math.round(ms * 100) / 100,
    keyId: request.auth?.key.id ?? request.keyRefusal?.keyId ?? null,
    model: s.model === null ? null : loggedModel(s.model, ctx.hideSecrets, ctx.config.models),
    tokens: s.tokens,
    cost: s.cost === null ? null : creditsNumber(s.cost),
    ...(request.shimErrorCode ? { error: request.shimErrorCode } : {}),
    ...(request.upstreamCause ? { cause: request.upstreamCause } : {}),
    ...(s.joined ? { joined: s.joined } : {}),
    ...(s.replayed ? { replayed: s.replayed } : {}),
    ...(request.keyRefusal ? { keyRefused: request.keyRefusal.reason } : {}),
    ...(request.adminTokenPrevious ? { adminToken: "previous" as const } : {}),
  });
}
