import { randomUUID } from "node:crypto";
import { METHODS } from "node:http";
import net from "node:net";
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyRequest, type HTTPMethods } from "fastify";
import type { Logger } from "pino";
import { AnswerMemory } from "./limits/answer-memory.ts";
import { BodyMemory } from "./limits/body-memory.ts";
import { trustedPeers } from "./auth/client-address.ts";
import { authHook, isAdminPath } from "./auth/auth.ts";
import { giveBackRequest } from "./limits/refusals.ts";
import { authHeaders, seedHeaderCase } from "./limits/response-headers.ts";
import type { Clock } from "./clock.ts";
import type { ShimConfig } from "./config.ts";
import { isInference, type RequestState, type ShimContext } from "./context.ts";
import { clientErrorHandler, markIfAnsweredEarly, refusalOf, requestArrived } from "./client/client-errors.ts";
import { errorHandler, notJson, sendError, ShimError, toShimError } from "./errors.ts";
import { Inflight } from "./inflight.ts";
import { LeftGenerations } from "./limits/left-generations.ts";
import { KeyWaiters } from "./limits/key-waits.ts";
import { jsonShapeProblem } from "./requests/json-shape.ts";
import { requestLogger } from "./observability/logger.ts";
import { Metrics } from "./observability/metrics.ts";
import { LowCreditGauges } from "./observability/low-credits.ts";
import { redactedPath, secretRedactor } from "./observability/redaction.ts";
import { finishRequest, logUnparsed } from "./observability/request-line.ts";
import { Pricer } from "./money/pricing.ts";
import { isAmbiguousPath, urlPath } from "./auth/url-path.ts";
import { RateLimiter } from "./limits/rate-limit.ts";
import { adminRoutes } from "./routes/admin.ts";
import { requestRoutes } from "./routes/requests.ts";
import { SANE_REQUEST_ID } from "./requests/request-id.ts";
import { backupRoutes } from "./routes/backup.ts";
import { creditsRoutes } from "./routes/credits.ts";
import { keyEventRoutes } from "./routes/key-events.ts";
import { healthRoutes } from "./routes/health.ts";
import { inferenceRoutes } from "./routes/inference.ts";
import { metricsRoutes } from "./routes/metrics.ts";
import { modelsRoutes } from "./routes/models.ts";
import { usageRoutes } from "./routes/usage.ts";
import type { Store } from "./store/store.ts";
import { probeUpstream, UpstreamReadiness } from "./upstream/readiness.ts";
import type { Upstream } from "./upstream/upstream.ts";
import { namesPostgres } from "./store/database-url.ts";

export interface AppDeps {
  config: ShimConfig;
  store: Store;
  upstream: Upstream;
  clock: Clock;
  logger: Logger;
  metrics?: Metrics;
}

declare module "fastify" {
  interface FastifyInstance {
    shim: ShimContext;
  }
}

const MAX_HEADER_BYTES = 64 * 1024;
/** Builds the Fastify app from its dependencies. It never listens and touches no process globals. */
export function buildApp(deps: AppDeps): FastifyInstance {
  const { config } = deps;
  const metrics = deps.metrics ?? new Metrics();
  const ctx: ShimContext = {
    ...deps,
    logRequest: requestLogger(deps.logger),
    hideSecrets: secretRedactor([config.adminToken, config.adminTokenPrevious?.token ?? null, config.upstreamApiKey]),
    metrics,
    pricer: new Pricer(config.pricing, config.models),
    limiter: new RateLimiter(deps.clock, config.unauthenticatedRpm),
    inflight: new Inflight(namesPostgres(config.databaseUrl)),
    holdsSettled: new KeyWaiters(),
    answerMemory: new AnswerMemory(config.answerMemoryBytes),
    leftGenerations: new LeftGenerations(),
    bodyMemory: new BodyMemory(config.bodyMemoryBytes),
    readiness: new UpstreamReadiness({ probe: () => probeUpstream(ctx), clock: deps.clock, metrics, logger: deps.logger, draining: () => ctx.inflight.draining }),
  };
  metrics.answerMemory = ctx.answerMemory;
  metrics.bodyMemory = ctx.bodyMemory;
  metrics.retryMemory = ctx.leftGenerations;
  metrics.requestsInFlight = () => Math.max(0, ctx.inflight.size - 1); // read in the /metrics request, itself in flight
  new LowCreditGauges({ store: deps.store, clock: deps.clock, logger: deps.logger, registry: metrics.registry, share: config.lowCreditsShare, intervalMs: config.lowCreditsIntervalMs });
  const fromProxy = trustedPeers(config.trustProxy);
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    // One line per request, written by the hooks below (finishRequest), without headers or bodies.
    logController: new LogController({ disableRequestLogging: true }),
    // No per-request child logger: lines that need the request id carry it themselves.
    childLoggerFactory: (logger) => logger,
    bodyLimit: config.maxBodyBytes,
    // The same check as the request id's: X-Forwarded-For and X-Request-Id are believed from
    // exactly the same peers.
    trustProxy: config.trustProxy.length > 0 ? fromProxy : false,
    requestIdHeader: false,
    genReqId: (req) => {
      // Reuse a sane incoming id (nginx's $request_id) so one id follows a request across hops,
      // but only from SHIM_TRUST_PROXY, as X-Forwarded-For: a client's own id would let it pass
      // for another request in the log, and reach vLLM, which refuses an id already running.
      const incoming = req.headers["x-request-id"];
      return typeof incoming === "string" && SANE_REQUEST_ID.test(incoming) && fromProxy(req.socket.remoteAddress) ? incoming : randomUUID();
    },
    // While draining (server.ts calls close()), a request on a kept-alive connection reaches the
    // routes, which answer it in the OpenAI shape with a request id (503 service_unavailable for
    // inference, /ready 503 with draining: true), not with Fastify's own 503 body.
    return503OnClosing: false,
    // Unparseable HTTP, headers too large, a request that did not arrive in time.
    clientErrorHandler: clientErrorHandler((reqId, status, error) => logUnparsed(ctx, reqId, status, error), fromProxy),
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: MAX_PARAM_LENGTH },
    // The HTTP server's limits, set here so tests run with production's. Idle keep-alive above
    // nginx's upstream keepalive (60 s): nginx, not the shim, closes idle connections (else a
    // request can go out on one the shim is closing, a 502). Headers up to 64 KiB, above what
    // nginx lets through (4 x 8 KiB): every request nginx accepts reaches the shim, and is
    // answered under nginx's request id. requestTimeout bounds receiving a request, not streams.
    keepAliveTimeout: 65_000,
    requestTimeout: 120_000,
    http: { maxHeaderSize: MAX_HEADER_BYTES, headersTimeout: 66_000 },
    // The router's own errors come before the hooks and the error handler: without this, Fastify
    // answers them in its own shape, without a request id, echoing the raw path (which may hold
    // a key). They are answered before authentication, like an unparseable request.
    frameworkErrors: (err, request, reply) => {
      request.shim = newRequestState();
      const error = toShimError(err);
      request.shimErrorCode = error.logCode;
      ctx.inflight.closeIfDraining(reply.raw); // no onRequest hook ran either
      markIfAnsweredEarly(request.raw); // nor onSend
      void sendError(reply.header("x-request-id", request.id), error);
      finishRequest(ctx, request, error.status); // no onResponse hook runs for these
    },
  });
  app.decorate("shim", ctx);
  // The readiness watch runs while the app listens (an app only injected into never probes); it
  // stops probing at the drain by itself, and for good once the app closes.
  app.addHook("onListen", (done) => {
    ctx.readiness.start(config.readyProbeIntervalMs);
    done();
  });
  app.addHook("onClose", (_app, done) => {
    ctx.readiness.stop();
    done();
  });

  // Only JSON is read. Fastify's text/plain parser handed the routes a string, refused as "not a
  // JSON object" though it was one (fetch sends a string body as text/plain): any other type's
  // body is refused naming Content-Type: application/json. An empty one is no body, as an empty
  // JSON body is: fetch's DELETE with `body: ""` names text/plain, curl's `-X DELETE -d ''` a form.
  app.removeContentTypeParser("text/plain");
  app.addContentTypeParser(["text/plain", "*"], refuseNonJsonBody);
  // Keep the raw bytes: non-streamed bodies are forwarded exactly as the client sent them.
  app.removeContentTypeParser("application/json");
  app.addContentTypeParser("application/json", { parseAs: "buffer" }, (request, body, done) => {
    // No route here (a 404 or 405): the path and method decide the answer, not the body, which
    // no handler reads, so it is not parsed (as refuseNonJsonBody leaves another type's unread).
    if (request.is404) return done(null, undefined);
    // Bodies are read as sent (no decompression: a gzip bomb would bypass SHIM_MAX_BODY_BYTES and
    // the body memory): a compressed one was refused as "not valid JSON", which misled, and a
    // plain one labelled gzip was served. Absent is the common case: one header lookup.
    const encoding = request.headers["content-encoding"];
    if (encoding !== undefined && !isIdentity(encoding)) return done(new ShimError("unsupported_content_encoding"), undefined);
    // A UTF-8 byte order mark first (PowerShell 5's and Notepad's files, sent with curl
    // --data-binary) is not JSON, but vLLM (json.loads on the bytes) takes it: dropped here, so
    // what is parsed, measured and forwarded (upstreamBody splices after the first `{`) is the rest.
    const raw = hasBom(body as Buffer) ? (body as Buffer).subarray(3) : (body as Buffer);
    request.rawBody = raw;
    if (raw.length === 0) return done(null, undefined); // routes that need a body say so (400)
    const shape = jsonShapeProblem(raw);
    if (shape) return done(new ShimError("invalid_request", { message: shape }), undefined);
    try {
      done(null, JSON.parse(raw.toString("utf8")));
    } catch {
      done(new ShimError("invalid_request", { message: "Request body is not valid JSON." }), undefined);
    }
  });

  // One onRequest hook (each hook is a promise and a turn of the microtask queue per request).
  const authenticate = authHook(ctx);
  app.addHook("onRequest", (request, reply) => {
    request.shim = newRequestState();
    reply.header("x-request-id", request.id);
    // Inference requests put themselves in flight once admitted, with an abort that settles them.
    if (!isInference(request)) request.drainCut = ctx.inflight.untilClosed(reply.raw, request.raw);
    // A client that leaves before its answer is whole gets no onResponse hook (it runs on
    // 'finish'): its one line is written here, as nginx logs it (499), or 408 when the shim cut a
    // request that did not arrive in time. An inference route writes its own once it runs.
    const socket = request.raw.socket;
    requestArrived(request.raw, request.id);
    reply.raw.once("close", () => {
      if (reply.raw.writableFinished || request.shim.logged || request.shim.routeLogs) return;
      const refusal = refusalOf(socket);
      // Once the drain has cut what was in flight, a connection closing without a whole answer is
      // (almost always) the shim's doing: a request whose body was still arriving, an answer cut.
      request.shimErrorCode ??= refusal ? refusal.error.logCode : ctx.inflight.cutting ? "drain_cut" : "client_closed_request";
      finishRequest(ctx, request, refusal ? refusal.status : 499);
    });
    // Before the route's credential is asked for: nginx may have let the request through to
    // another route than the one matched here (url-path.ts).
    if (isAmbiguousPath(request.url)) return Promise.reject(ambiguousPath());
    return authenticate(request, reply);
  });
  // After authentication, before the body is read: its bytes count against SHIM_BODY_MEMORY_BYTES
  // until the response closes, and a request past it is refused unread.
  // A refusal gives the key's requests/min place back: the server was busy, not the key.
  app.addHook("preParsing", ctx.bodyMemory.hook(config.maxBodyBytes, (request) => request.auth && giveBackRequest(ctx, request.auth, isInference(request))));
  // Every answer Fastify sends (the hijacked inference answers set it themselves): one that began
  // before a drain may be sent during it.
  app.addHook("onSend", (request, reply, payload, done) => {
    // Fastify closes the connection after a parser's error. For a body refused unread (bodyRefused),
    // Node reads and drops the rest, as after the auth hook's 401: closing with the body still
    // arriving made nginx's write fail, a 502 for the client instead of the 400.
    if (request.shim.bodyRefused) reply.removeHeader("connection");
    ctx.inflight.closeIfDraining(reply.raw);
    markIfAnsweredEarly(request.raw);
    seedHeaderCase(reply);
    done(null, payload);
  });
  app.addHook("onResponse", async (request, reply) => finishRequest(ctx, request, reply.statusCode));

  const handleError = errorHandler((request) => authHeaders(ctx, request));
  app.setErrorHandler(function (error, request, reply) {
    // A body refused as too large from its Content-Length, within a bound, is drained too: the
    // client, still writing it, got EPIPE and never read its 413 (retried as a connection error).
    // nginx's own limit answers first in the deployed stack; this is the shim run alone.
    if ((error as { code?: unknown }).code === "FST_ERR_CTP_BODY_TOO_LARGE") request.shim.bodyRefused = drainable(request);
    handleError.call(this, error, request, reply);
    // A client that left while its error was being worked out gets no onResponse hook: its line
    // is written here, as nginx logs a client that left (499).
    if (reply.raw.destroyed) {
      request.shimErrorCode = "client_closed_request";
      finishRequest(ctx, request, 499);
    }
  });
  app.setNotFoundHandler((request, reply) => {
    const allowed = allowedMethods(app, request);
    if (allowed.length > 0) {
      request.shimErrorCode = "method_not_allowed";
      const allow = allowed.join(", ");
      void sendError(reply, new ShimError("method_not_allowed", { message: `This method is not allowed on this path. Allowed: ${allow}.`, headers: { allow } }), authHeaders(ctx, request));
      return;
    }
    request.shimErrorCode = "not_found";
    const shown = redactedPath(request.url, ctx.hideSecrets, config.models).slice(0, 200);
    // A client whose base URL lacks its /v1 (the commonest mistake) is told where the route is.
    const path = request.url.split("?")[0]!;
    // hasRoute matches patterns: a route with a wildcard (/v1/models/*) is asked for as one.
    const routed = (url: string) => app.hasRoute({ method: request.method as HTTPMethods, url });
    const under = !path.startsWith("/v1/") && (routed(`/v1${path}`) || routed(`/v1/${path.split("/")[1]}/*`)) ? ` (the API is under /v1: /v1${shown.split("?")[0]}; a client's base URL ends in /v1)` : "";
    void sendError(reply, new ShimError("not_found", { message: `Unknown route: ${request.method} ${shown}${under}` }), authHeaders(ctx, request));
  });

  healthRoutes(app, ctx);
  metricsRoutes(app, ctx);
  modelsRoutes(app, ctx);
  inferenceRoutes(app, ctx);
  usageRoutes(app, ctx);
  adminRoutes(app, ctx);
  requestRoutes(app, ctx);
  keyEventRoutes(app, ctx);
  creditsRoutes(app, ctx);
  backupRoutes(app, ctx);
  return app;
}

/**
 * Stops the app as a SIGTERM does: no new connections, what is in flight gets `drainMs` to finish
 * (the rest is aborted and settled), then the connections are closed. app.close() alone would
 * wait for keep-alive connections that went idle after it began (Fastify's 72 s).
 */
export async function closeApp(app: FastifyInstance, drainMs: number): Promise<{ aborted: number }> {
  // Stops accepting connections and leaves the open ones to the drain. Node's server.close()
  // (app.close() calls it) also destroys every connection it counts as idle, and it counts one
  // whose answer has been ended but is still being flushed to a slow client: a large answer,
  // charged, was cut half sent.
  net.Server.prototype.close.call(app.server);
  const result = await app.shim.inflight.drain(drainMs);
  const closed = app.close();
  app.server.closeAllConnections();
  await closed;
  return result;
}

/** `identity` (any case) or an empty value: no content coding. */
const isIdentity = (encoding: string): boolean => {
  const e = encoding.trim();
  return e === "" || e.toLowerCase() === "identity";
};

/** The router's longest path parameter (model ids use a wildcard instead: routes/models.ts). */
const MAX_PARAM_LENGTH = 200;

const hasBom = (raw: Buffer): boolean => raw[0] === 0xef && raw[1] === 0xbb && raw[2] === 0xbf;

const ambiguousPath = () => new ShimError("invalid_request", {
  message: "The path holds an encoded slash, dot or backslash (%2F, %2E, %5C) or a dot segment (/./, /../): send it as the API documents it.",
  logCode: "ambiguous_path",
});

function newRequestState(): RequestState {
  return { start: performance.now(), model: null, tokens: null, cost: null, available: null, logged: false, routeLogs: false, bodyRefused: false, graceEnds: null, schemaRelaxed: null, held: null };
}

/**
 * The methods the router has a route for at this request's path, matched as it matched the
 * request (decoding, trailing slash, parameters): Fastify's own routes, not a second list. None
 * means a 404. Only reached past authentication (the onRequest hook runs for unmatched requests
 * too), so a caller without the path's credential gets the 401 it got before. An API key on an
 * admin path spelled with an encoded letter (`/%61dmin/keys`: the raw path decides a request no
 * route matched, isAdminRequest) is answered the 404 it was: it learns nothing of the admin routes.
 */
function allowedMethods(app: FastifyInstance, request: FastifyRequest): string[] {
  // A segment past maxParamLength: the router answers every method's parameter route with its
  // own 404 handler, which findRoute reports as a route (`Allow: DELETE, POST` on
  // /admin/keys/<250 characters>, where both are 404s). No route takes such a segment.
  if (urlPath(request.url).split("/").some((segment) => segment.length > MAX_PARAM_LENGTH)) return [];
  const allowed = METHODS.filter((method) => app.findRoute({ method: method as HTTPMethods, url: request.url }) !== null);
  if (allowed.length === 0 || request.auth === undefined) return allowed;
  try {
    return isAdminPath(decodeURIComponent(urlPath(request.url))) ? [] : allowed;
  } catch {
    return [];
  }
}

/** The largest body refused as too large that is read and dropped for its client to read the 413 (more is cut). */
const DRAINED_BODY_BYTES = 64 * 1024 * 1024;

/** A body refused unread whose declared Content-Length is no larger than DRAINED_BODY_BYTES. */
function drainable(request: FastifyRequest): boolean {
  const length = Number(request.headers["content-length"]);
  return Number.isSafeInteger(length) && length <= DRAINED_BODY_BYTES;
}

/**
 * The parser of every body that is not JSON. It never buffers one: the first byte is enough to
 * refuse it, and an unknown path leaves it unread for its 404 (an SDK file upload to an endpoint
 * the shim does not serve, read first, was cut as too large and retried by the SDK).
 */
function refuseNonJsonBody(request: FastifyRequest, payload: NodeJS.ReadableStream, done: (err: Error | null, body?: unknown) => void): void {
  if (request.is404) return done(null, undefined);
  let settled = false;
  const finish = (err: Error | null) => {
    if (settled) return;
    settled = true;
    payload.removeListener("data", onData);
    done(err, undefined);
  };
  const onData = (chunk: Buffer) => {
    if (chunk.length === 0) return;
    request.shim.bodyRefused = true;
    finish(notJson());
  };
  payload.on("data", onData);
  payload.once("end", () => finish(null));
  payload.on("error", finish); // kept: a stream may fail again after the refusal
}
