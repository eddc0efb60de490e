import type { FastifyError, FastifyReply, FastifyRequest } from "fastify";
import { redactKeys } from "./observability/redaction.ts";
import { ClientLeftError, StoreUnavailableError, UnconfirmedWriteError } from "./store/store.ts";

/**
 * The one error table. Every error response is OpenAI-shaped,
 * `{"error":{"message","type","param","code"}}`, so each SDK raises its own exception class.
 * 5xx messages are generic on purpose: never stack traces, hostnames, SQL or upstream bodies.
 */
export const ERROR_TABLE = {
  invalid_request: { status: 400, type: "invalid_request_error", message: "Invalid request." },
  invalid_api_key: {
    status: 401,
    type: "authentication_error",
    message: "Invalid API key. Send a valid key as 'Authorization: Bearer <key>'.",
  },
  invalid_admin_token: {
    status: 401,
    type: "authentication_error",
    message: "Invalid admin token. Send it as 'Authorization: Bearer <token>'.",
  },
  insufficient_credits: { status: 402, type: "insufficient_credits", message: "Insufficient credits." },
  model_not_allowed: { status: 403, type: "permission_error", message: "This key may not use this model." },
  model_not_found: {
    status: 404,
    type: "invalid_request_error",
    message: "The model does not exist or you do not have access to it.",
  },
  not_found: { status: 404, type: "invalid_request_error", message: "Not found." },
  // GET /admin/requests/{id} of a request this shim is still serving (routes/running-request.ts): no ledger row yet.
  request_running: { status: 404, type: "invalid_request_error", message: "This request is still running: it has no ledger row yet." },
  // A path the router has routes for, asked with another method; sent with an `Allow` header.
  // Code and type as nginx's own 405 (templates/nginx/error-pages.conf).
  method_not_allowed: { status: 405, type: "invalid_request_error", message: "This method is not allowed." },
  // OpenAI's SDKs retry every 409 (twice by default) unless told it is final: these are.
  idempotency_key_reused: {
    status: 409,
    type: "invalid_request_error",
    message: "This Idempotency-Key was already used with a different request.",
    final: true,
  },
  // A re-send past those already waiting on its Idempotency-Key's running request
  // (routes/idempotent-requests.ts): not final, so the SDKs retry it after its Retry-After.
  idempotency_key_in_use: {
    status: 409,
    type: "invalid_request_error",
    message: "A request with this Idempotency-Key is still running, and as many re-sends as are let wait on it already do.",
  },
  key_inactive: {
    status: 409,
    type: "invalid_request_error",
    // An expired key's top-up says to move its expiry on first (routes/admin.ts).
    message: "This key is revoked: credits granted to it could never be spent.",
    final: true,
  },
  // PATCH /admin/keys/{id} of a key from the configuration (a bootstrap key): the next start would
  // put its tier and models back, so the change is refused rather than lost silently. Both places
  // named: a shim run by hand (no stack) takes its keys from SHIM_CONFIG, where `pulumi up` does nothing.
  key_from_configuration: {
    status: 409,
    type: "invalid_request_error",
    message: "This key is defined in the configuration (the stack's gpu-sandbox:keys, or SHIM_CONFIG's bootstrapKeys for a shim you run yourself): every start of the shim sets its tier and models from there again, so a change here would be undone. Change its entry there, then run `pulumi up` (or restart the shim you run).",
    final: true,
  },
  // GET /admin/backup while another backup is made or sent (routes/backup.ts): one at a time.
  backup_in_progress: {
    status: 409,
    type: "invalid_request_error",
    message: "A backup of the ledger is being made or sent already: one at a time. Try again once it is done.",
    final: true,
  },
  // PATCH /admin/keys/{id} bringing an expired key back while another key in use has its name.
  key_name_in_use: { status: 409, type: "invalid_request_error", message: "Another key in use has this key's name.", final: true },
  request_timeout: { status: 408, type: "invalid_request_error", message: "The request did not arrive in time; send it again." },
  request_too_large: { status: 413, type: "invalid_request_error", message: "Request body is too large." },
  unsupported_content_encoding: {
    status: 415,
    type: "invalid_request_error",
    message: "Request bodies with a Content-Encoding are not accepted: send the body uncompressed, without Content-Encoding (or with identity).",
  },
  rate_limit_exceeded: { status: 429, type: "rate_limit_exceeded", message: "Rate limit exceeded." },
  internal_error: { status: 500, type: "api_error", message: "Internal error." },
  // GET /admin/backup with the Postgres store (or an in-memory database): its own tools back it up.
  backup_not_supported: { status: 501, type: "invalid_request_error", message: "This shim's store cannot be backed up through the admin API.", final: true },
  upstream_error: { status: 502, type: "api_error", message: "The model server returned an error." },
  service_unavailable: { status: 503, type: "api_error", message: "Service temporarily unavailable. Retry later." },
  // An admin write committed whose sync to disk failed (UnconfirmedWriteError): sent again as
  // it is, a top-up would be granted twice, a key made twice. So final, and the message says how
  // to check: a top-up's retry with its Idempotency-Key replays instead of granting again.
  change_not_confirmed: {
    status: 503,
    type: "api_error",
    message: "The change was probably made, but the server could not confirm it is saved to disk, and is restarting. Check before retrying: GET /admin/keys shows keys and balances; a top-up sent again with the same Idempotency-Key is applied at most once.",
    final: true,
  },
  upstream_timeout: { status: 504, type: "api_error", message: "The model server did not respond in time." },
  // GET /admin/backup when the copy would leave the ledger's volume less than the shim needs.
  backup_no_room: { status: 507, type: "api_error", message: "Not enough free space on the ledger's volume for a backup.", final: true },
} as const satisfies Record<string, { status: number; type: string; message: string; final?: true }>;

export type ErrorCode = keyof typeof ERROR_TABLE;

export interface ShimErrorOptions {
  message?: string;
  param?: string | null;
  /** Extra fields placed inside `error` and at the top level of the body (seed 001's 402). */
  extra?: Record<string, unknown>;
  headers?: Record<string, string>;
  /** What the request log records instead of `code`, where the operator needs to tell apart errors that share a code on the wire. */
  logCode?: string;
}

export class ShimError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly param: string | null;
  readonly extra: Record<string, unknown> | undefined;
  readonly headers: Record<string, string> | undefined;
  readonly logCode: string;

  constructor(code: ErrorCode, options: ShimErrorOptions = {}) {
    // Messages echo what the client sent (a path, a model name) or the upstream said: a key in
    // there must not come back in an error body (nor reach a log through one).
    super(redactKeys(options.message ?? ERROR_TABLE[code].message));
    this.name = "ShimError";
    this.code = code;
    this.status = ERROR_TABLE[code].status;
    this.param = options.param == null ? null : redactKeys(options.param); // may name a client's field
    this.extra = options.extra;
    this.headers = options.headers;
    this.logCode = options.logCode ?? code;
  }
}

/**
 * The longest Retry-After every OpenAI SDK waits for: openai-node 7 and openai-python honour up to
 * 60 s, openai-node 4 and 5 below 60 s; past it they retry after their own backoff (~0.5 s, then
 * ~1 s), as if there were none.
 */
export const SDK_LONGEST_RETRY_AFTER_S = 59;

/**
 * A request refused or cut by a shutdown's drain: another replica, or this one restarted, will
 * answer it, after `retryAfterMs` (Inflight.refusal says how long: the drain's time left and a
 * restart). Without a Retry-After OpenAI's SDKs spent their two retries within ~1.5 s, inside the
 * drain (up to SHIM_DRAIN_TIMEOUT_MS, 23 s deployed), and the caller got the 503 (or nginx's 502)
 * though the restarted shim would have served it. At most the wait every SDK honours; a later
 * retry meets nginx's 502, whose Retry-After (5 s) spaces the next.
 */
export function shuttingDown(retryAfterMs: number): ShimError {
  const wait = Math.min(SDK_LONGEST_RETRY_AFTER_S, retryAfterSeconds(retryAfterMs));
  return new ShimError("service_unavailable", { message: "The server is shutting down; retry shortly.", headers: { "retry-after": String(wait) } });
}

/** `credits`: an authenticated answer's charge and the key's credits, top-level as on a success. */
export function errorBody(err: ShimError, credits?: { credits_charged: number; credits_remaining: number }): string {
  const error = errorObject(err);
  return JSON.stringify(err.extra || credits ? { error, ...err.extra, ...credits } : { error });
}

/** The `error` object of every error body (errorBody), and of a Responses stream's error event (responses-stream.ts). */
export function errorObject(err: ShimError): { message: string; type: string; param: string | null; code: string; [member: string]: unknown } {
  return { message: err.message, type: ERROR_TABLE[err.code].type, param: err.param, code: err.code, ...err.extra };
}

/**
 * A wait as the Retry-After every answer of ours gives: whole seconds, rounded up, at least 1
 * (a 0 makes OpenAI's SDKs retry at once, into the same refusal).
 */
export const retryAfterSeconds = (ms: number): number => Math.max(1, Math.ceil(ms / 1000));

/** A 400 naming the request member at fault (`param`), as OpenAI's SDKs show it. */
export const invalidParam = (message: string, param: string): ShimError => new ShimError("invalid_request", { message, param });

/** A body of another type than JSON (app.ts's parsers, and Fastify's for a malformed Content-Type). */
export const notJson = (): ShimError => new ShimError("invalid_request", { message: "Request body must be JSON (Content-Type: application/json)." });

/** Maps Fastify's own errors (body parsing, limits, routing) onto the table. */
export function toShimError(err: unknown): ShimError {
  if (err instanceof ShimError) return err;
  if (err instanceof UnconfirmedWriteError) return new ShimError("change_not_confirmed");
  if (err instanceof StoreUnavailableError) return new ShimError("service_unavailable");
  const fe = err as Partial<FastifyError> | undefined;
  switch (fe?.code) {
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return new ShimError("request_too_large");
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return notJson();
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
      return new ShimError("invalid_request", { message: "Request body is empty; send a JSON object." });
    case "FST_ERR_CTP_INVALID_CONTENT_LENGTH":
      return new ShimError("invalid_request", { message: "Content-Length does not match the body." });
    // The router's own errors. Neither message echoes the path: it may hold a key.
    case "FST_ERR_BAD_URL":
      return new ShimError("invalid_request", { message: "Malformed URL: it has an invalid percent-encoding." });
    case "FST_ERR_MAX_PARAM_LENGTH":
      return new ShimError("not_found"); // an id that long names nothing (ids are checked the same way below it)
  }
  if (err instanceof SyntaxError || fe?.code === "FST_ERR_CTP_INVALID_JSON_BODY") {
    return new ShimError("invalid_request", { message: "Request body is not valid JSON." });
  }
  const status = typeof fe?.statusCode === "number" ? fe.statusCode : 500;
  if (status === 413) return new ShimError("request_too_large");
  if (status >= 400 && status < 500) return new ShimError("invalid_request");
  return new ShimError("internal_error");
}

/** Writes an error response; the single place that does. `headers` are the request's own (auth). */
export function sendError(reply: FastifyReply, err: ShimError, headers?: Record<string, string>): FastifyReply {
  if (headers) reply.headers(headers);
  if ("final" in ERROR_TABLE[err.code]) reply.header("x-should-retry", "false");
  if (err.headers) reply.headers(err.headers);
  // A wait longer than OpenAI's SDKs honour (a key in tokens/min debt, an upstream's relayed
  // Retry-After): they would retry it at once, twice, into the same refusal. Told it is final, the
  // SDK raises it with its Retry-After for the caller to wait out.
  if (Number(err.headers?.["retry-after"]) > SDK_LONGEST_RETRY_AFTER_S) reply.header("x-should-retry", "false");
  return reply.code(err.status).type("application/json").send(errorBody(err, creditsOf(reply)));
}

/**
 * An authenticated error's body says what its headers say (every JSON answer carries its charge):
 * a client reading the body must not take a charged failure, an answer too large, for a free one.
 * Read back from the headers so the two cannot differ; amounts are at most a billion credits
 * with 6 decimals, so the decimal text and the number are the same amount.
 */
function creditsOf(reply: FastifyReply): { credits_charged: number; credits_remaining: number } | undefined {
  const charged = reply.getHeader("x-credits-charged");
  const remaining = reply.getHeader("x-credits-remaining");
  if (typeof charged !== "string" || typeof remaining !== "string") return undefined;
  return { credits_charged: Number(charged), credits_remaining: Number(remaining) };
}

/**
 * The one Fastify error handler. Unexpected errors are logged (without the request) once.
 * `headersFor` adds an authenticated request's rate-limit and credit headers.
 */
export const errorHandler = (headersFor: (request: FastifyRequest) => Record<string, string>) =>
  function handleError(this: unknown, error: unknown, request: FastifyRequest, reply: FastifyReply): void {
  const err = toShimError(error);
  if (error instanceof StoreUnavailableError) {
    request.log.error({ reqId: request.id, err: error.cause }, "store unavailable");
  } else if (err.status >= 500 && !(error instanceof ShimError) && !(error instanceof ClientLeftError)) {
    request.log.error({ reqId: request.id, err: error }, "unhandled error");
  }
  request.shimErrorCode = err.logCode;
  void sendError(reply, err, headersFor(request));
};
