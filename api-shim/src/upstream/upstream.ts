import type { FastifyRequest } from "fastify";
import { Pool, errors as undiciErrors } from "undici";
import type { ShimContext } from "../context.ts";
import { ERROR_TABLE, retryAfterSeconds, ShimError } from "../errors.ts";
import { eventData } from "../metering/sse.ts";
import { redactUpstreamSecrets, type SecretHider } from "../observability/redaction.ts";
import { dispatch } from "./upstream-body.ts";
import type { AnswerLease } from "../limits/answer-memory.ts";

/**
 * The seam to the OpenAI-compatible upstream (LiteLLM or vLLM). It owns the connection pools,
 * the upstream's credentials (never the client's key), the timeouts, and the mapping of
 * transport failures and upstream statuses onto our error table.
 */
export interface UpstreamResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: AsyncIterable<Uint8Array> & { text(): Promise<string>; destroy(err?: Error): unknown };
}

export interface UpstreamRequest {
  method: "GET" | "POST";
  /** Path below the base URL, e.g. "/chat/completions". */
  path: string;
  body?: string | Buffer;
  signal?: AbortSignal;
  requestId?: string;
  /** Called when the request is handed to a connection (not if it is dropped before). */
  onSent?: () => void;
  /**
   * A short request the shim makes for itself or answers at once (the model list, /ready's
   * probe): sent on a few connections of its own, so it never waits behind generations.
   */
  control?: boolean;
}

export interface Upstream {
  request(req: UpstreamRequest): Promise<UpstreamResponse>;
  close(): Promise<void>;
}

export interface UpstreamOptions {
  url: string;
  apiKey: string | null;
  /** Time allowed until the response headers arrive. */
  headersTimeoutMs: number;
  /** Longest gap allowed between body chunks (between SSE events when streaming). */
  idleTimeoutMs: number;
  /** Connections for inference (default 256). */
  connections?: number;
}

/**
 * Connections for control requests (UpstreamRequest.control). They once shared the inference
 * pool: with 256 generations in flight, /ready's probe queued behind them until its 4 s ran out
 * and reported the upstream unreachable, and GET /v1/models waited for a generation to end.
 * A model list takes milliseconds, so a few connections serve them all.
 */
export const CONTROL_CONNECTIONS = 4;

export function createUpstream(options: UpstreamOptions): Upstream {
  const base = new URL(options.url);
  const prefix = base.pathname.replace(/\/+$/, "");
  const poolOptions: Pool.Options = {
    pipelining: 1,
    // Below the upstream's own idle limit (vLLM's and LiteLLM's uvicorn: 5 s), so the shim closes
    // an idle connection first: otherwise a request can go out on a connection the upstream is
    // closing at that moment, and fail (undici retries no POST).
    keepAliveTimeout: 4_000,
    headersTimeout: 0, // kept by dispatch() instead, on time (upstream-body.ts)
    bodyTimeout: options.idleTimeoutMs,
    connect: { timeout: Math.min(options.headersTimeoutMs, 10_000) },
  };
  const pool = new Pool(base.origin, { ...poolOptions, connections: options.connections ?? 256 });
  const control = new Pool(base.origin, { ...poolOptions, connections: CONTROL_CONNECTIONS });
  const pools = [pool, control];
  const auth = options.apiKey ? `Bearer ${options.apiKey}` : undefined;

  return {
    async request(req) {
      const headers: Record<string, string> = { accept: req.method === "POST" ? "application/json, text/event-stream" : "application/json" };
      if (auth) headers.authorization = auth;
      if (req.body !== undefined) headers["content-type"] = "application/json";
      if (req.requestId) headers["x-request-id"] = req.requestId;
      return dispatch(req.control ? control : pool, { method: req.method, path: prefix + req.path, headers, body: req.body ?? null }, req.signal, options.headersTimeoutMs, req.onSent);
    },
    // Requests the drain does not own (the model list, /ready's probe) may wait on a silent
    // upstream for its whole timeout (605 s in the Compose file), far past the stop grace
    // period: they get a second, then are cut.
    close: async () => {
      let timer: NodeJS.Timeout | undefined;
      const closed = await Promise.race([Promise.all(pools.map((p) => p.close())).then(() => true), new Promise<false>((r) => (timer = setTimeout(r, CLOSE_WAIT_MS, false)))]);
      clearTimeout(timer);
      if (!closed) await Promise.all(pools.map((p) => p.destroy()));
    },
  };
}

/** How long closing waits for upstream requests still going before it cuts them. */
export const CLOSE_WAIT_MS = 1000;

/** True when the error is the request's own AbortSignal firing (client gone, drain). */
export function isAbort(err: unknown, signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true && (err instanceof undiciErrors.RequestAbortedError || (err as Error)?.name === "AbortError" || err === signal.reason);
}

/** A transport failure before or during the response: a timeout, or any other (the readiness probe tells them apart too). */
export function transportFailure(err: unknown): "upstream_timeout" | "upstream_error" {
  const timedOut = err instanceof undiciErrors.HeadersTimeoutError || err instanceof undiciErrors.BodyTimeoutError || err instanceof undiciErrors.ConnectTimeoutError;
  return timedOut ? "upstream_timeout" : "upstream_error";
}

/**
 * What the client is told of a transport failure before the upstream had the request: refused,
 * reset, a name that does not resolve, a connection closed before the request went out. "The
 * model server returned an error" sent operators who had not started it looking for an error in
 * its logs. The code stays upstream_error (clients and SDKs key on it); once the upstream had the
 * request (it took it and closed, or its answer broke off) the message stays "returned an error".
 */
export const UPSTREAM_NOT_REACHED = "The model server could not be reached.";

/** `reached`: the upstream had the request (it was sent), so it was not a network that failed. */
function failureError(reason: "upstream_timeout" | "upstream_error", reached: boolean): ShimError {
  return new ShimError(reason, reason === "upstream_error" && !reached ? { message: UPSTREAM_NOT_REACHED } : {});
}

/**
 * What broke on the way to the upstream, for the operator: the error's code (ECONNREFUSED,
 * ENOTFOUND, UND_ERR_SOCKET, UND_ERR_HEADERS_TIMEOUT…), from it or its cause. Codes only: a
 * message may quote the upstream URL, credentials included.
 */
export function transportCause(err: unknown): string {
  for (let e = err, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && /^[A-Z][A-Z0-9_]{1,40}$/.test(code)) return code;
  }
  return err instanceof Error && /^[A-Za-z]{1,40}$/.test(err.name) ? err.name : "unknown";
}

/**
 * An upstream that could not be reached or read, as the client's error: its cause goes on the
 * request's log line, and it is counted. `timedOut`: the caller's own deadline ran out, and names
 * what it was waiting for (its abort error would say only "aborted"). `reached`: the upstream had
 * the request (it took it and closed, or its answer broke off), so the client is not told it
 * could not be reached.
 */
export function unreachable(ctx: ShimContext, request: FastifyRequest, e: unknown, timedOut?: string, reached = false): ShimError {
  const reason = timedOut ? "upstream_timeout" : transportFailure(e);
  request.upstreamCause = timedOut ?? transportCause(e);
  countUpstreamFailure(ctx, request, reason);
  return failureError(reason, reached);
}

/**
 * Every reason shim_upstream_failures_total (and, for what the client is told is its own error,
 * shim_upstream_refusals_total) is counted under, besides `status_<code>`, the upstream's error
 * status: the one list, which the type below holds every caller to and docs/operations.md's
 * runbook row is checked against (test/api-shim/upstream-failure-reasons.test.ts).
 */
export const UPSTREAM_FAILURE_REASONS = [
  "upstream_error", "upstream_timeout", "stream_error", "stream_cut", "no_usage", "answer_too_large", "error_body", "not_a_stream", "not_json", "not_a_model_list",
] as const;
export type UpstreamFailureReason = (typeof UPSTREAM_FAILURE_REASONS)[number] | `status_${number}`;

/**
 * An upstream failure counted under `reason` (shim_upstream_failures_total), the one place that
 * counts one: its request's line names a cause, so the operator finds the lines behind that
 * metric by `cause`. A cause already set (a transport's code, such as UND_ERR_SOCKET for a stream
 * whose connection broke) tells more and stays; else it is the reason (`stream_error`,
 * `stream_cut`, `no_usage`, `answer_too_large`, `status_<code>`…), never the upstream's message.
 */
export function countUpstreamFailure(ctx: ShimContext, request: FastifyRequest, reason: UpstreamFailureReason): void {
  request.upstreamCause ??= reason;
  ctx.metrics.upstreamFailures.inc({ reason });
}

const MAX_UPSTREAM_MESSAGE = 500;
// The client learns that the endpoint is misconfigured, not how it is configured; the log tells
// the operator which setting (the /ready probe, routes/health.ts).
const UPSTREAM_ROUTE_MISSING = "The model server has no such route (404): this endpoint is misconfigured.";

/** The longest wait relayed from an upstream's Retry-After, in seconds. */
const MAX_RELAYED_RETRY_AFTER_S = 86_400;

/**
 * An upstream's Retry-After (seconds, possibly fractional, or an HTTP-date) as the shim's own
 * answers give one (retryAfterSeconds): "0" made OpenAI's SDKs retry twice at once into the same
 * refusal, and a wait rounded down (or an unread date taken as 1 s) retried too early.
 */
function relayedRetryAfter(value: string | string[] | undefined): number {
  if (typeof value !== "string") return 1;
  const trimmed = value.trim();
  const ms = /^\d+(\.\d+)?$/.test(trimmed) ? Number(trimmed) * 1000 : Date.parse(trimmed) - Date.now();
  return Number.isFinite(ms) ? Math.min(MAX_RELAYED_RETRY_AFTER_S, retryAfterSeconds(ms)) : 1;
}

/**
 * An upstream error status and body, as one of our errors. Never leaks 5xx bodies or auth
 * failures. `hideSecrets` (ctx.hideSecrets) hides the deployment's own secrets in a message
 * relayed: an upstream refusing the key the shim sent may quote it.
 */
export function upstreamStatusError(status: number, bodyText: string, model: string | undefined, retryAfter: string | string[] | undefined, hideSecrets: SecretHider): ShimError {
  if (status === 400 || status === 422) {
    const message = upstreamMessage(bodyText);
    // vLLM 0.10-0.11 answer any exception as a 400, a dead engine's too (before a stream's first
    // chunk, in the stream): the server failed, not the request. Told as a 400, a client would
    // not retry, and the SDKs' retries would find the engine restarted.
    if (message !== undefined && withoutLitellmFrame(message).startsWith(ENGINE_DEAD_MESSAGE)) return new ShimError("upstream_error");
    return new ShimError("invalid_request", message ? clientMessage(message, model ?? "", hideSecrets) : {});
  }
  if (status === 404) {
    // vLLM and LiteLLM name the model in an OpenAI-shaped error body. A bare 404 (FastAPI's
    // {"detail":"Not Found"}, an HTML page) is a route the upstream does not have: the operator's
    // SHIM_UPSTREAM_URL is wrong, usually missing its /v1, which is no fault of the client's model.
    // (A server that answered an unknown model with a bare 404 would get a 502 too: neither vLLM
    // nor LiteLLM does.)
    if (upstreamMessage(bodyText) === undefined) return new ShimError("upstream_error", { message: UPSTREAM_ROUTE_MISSING });
    return modelNotFound(model ?? "");
  }
  if (status === 413) return new ShimError("request_too_large");
  if (status === 429 || status === 503) {
    return new ShimError("service_unavailable", { headers: { "retry-after": String(relayedRetryAfter(retryAfter)) } });
  }
  if (status === 408 || status === 504) return new ShimError("upstream_timeout");
  if (status >= 400 && status < 500 && status !== 401 && status !== 403) return new ShimError("invalid_request");
  // 401/403: our upstream credentials are wrong (our misconfiguration, not the client's); 5xx: theirs.
  return new ShimError("upstream_error");
}

/**
 * An error body that came where an answer was expected (an event inside a stream, or a 2xx
 * answer), as the error its status would be. vLLM sends `{"error": {"message", "type", "param",
 * "code": 500}}` (then `[DONE]` in a stream); LiteLLM (the deployed upstream) sends the status as
 * a string, `"code": "400"`.
 */
export function upstreamErrorBody(data: string, model: string | undefined, hideSecrets: SecretHider): ShimError {
  let code: unknown;
  try {
    const body = JSON.parse(data) as { error?: { code?: unknown } };
    code = body.error?.code;
  } catch {}
  const n = typeof code === "string" && /^\d{3}$/.test(code) ? Number(code) : code;
  const status = typeof n === "number" && Number.isInteger(n) && n >= 400 && n <= 599 ? n : 500;
  return upstreamStatusError(status, data, model, undefined, hideSecrets);
}

export function modelNotFound(model: string): ShimError {
  return new ShimError("model_not_found", {
    param: "model",
    message: `The model '${model.slice(0, 200)}' does not exist or you do not have access to it.`,
  });
}

/** The message of an OpenAI/vLLM error body (nested or flat), if it is a string. */
function upstreamMessage(text: string): string | undefined {
  try {
    const body = JSON.parse(firstEventData(text)) as { error?: { message?: unknown } | unknown; message?: unknown };
    const nested = body.error && typeof body.error === "object" ? (body.error as { message?: unknown }).message : undefined;
    const msg = nested ?? body.message;
    return typeof msg === "string" && msg !== "" ? msg : undefined;
  } catch {
    return undefined;
  }
}

/**
 * An error body's JSON. LiteLLM refuses a stream that fails at its first chunk (a provider
 * called lazily: Anthropic, Gemini; vLLM's error before its first chunk) with the error's status
 * and its SSE error event as the body (proxy/common_request_processing.py,
 * create_streaming_response): then its first event's data. Any other body as it is.
 */
function firstEventData(text: string): string {
  if (!text.startsWith("data:")) return text;
  const end = text.indexOf("\n\n");
  return eventData(end === -1 ? text : text.slice(0, end)) ?? text;
}

/**
 * LiteLLM's message as the client is told it. LiteLLM (the deployed upstream) prefixes its
 * exception class (`litellm.BadRequestError: `, sometimes the class again), the provider
 * (`Hosted_vllmException - `, `AnthropicException - `) and, when its router answered, appends the
 * model group (`. Received Model Group=smart\nAvailable Model Group Fallbacks=None`, maybe
 * `\nError doing the fallback: …`); a provider's own error body may be quoted whole (vLLM's
 * JSON). Its refusal of a parameter the provider does not take names the provider's model behind
 * the client's alias and advises settings (`drop_params`, `allowed_openai_params`) the shim
 * refuses: it is said again with the model the client asked for. Messages that are not LiteLLM's
 * (vLLM's own, when it is the upstream) pass otherwise unchanged. Any message goes without URL
 * queries and providers' keys (redactUpstreamSecrets): LiteLLM quotes a Gemini call's URL, its
 * `?key=…` included, when the call fails, and the deployment's own secrets (`hideSecrets`).
 */
function clientMessage(message: string, model: string, hideSecrets: SecretHider): { message: string; param?: string } {
  const unsupported = /^litellm\.UnsupportedParamsError: .*? does not support parameters: ([[{][\s\S]*?[\]}]), for model=/.exec(message);
  const names = unsupported ? parameterNames(unsupported[1]!) : [];
  if (names.length > 0) {
    const list = names.map((n) => `'${n}'`).join(", ");
    return { message: `${list} ${names.length === 1 ? "is" : "are"} not supported by model '${model.slice(0, 200)}'.`, param: names[0]! };
  }
  if (!LITELLM_PREFIX.test(message)) return { message: forClient(message, model, hideSecrets) };
  return { message: forClient(withoutLitellmFrame(message).trim() || ERROR_TABLE.invalid_request.message, model, hideSecrets) };
}

/** LiteLLM's exception class and provider before its message (clientMessage). */
const LITELLM_PREFIX = /^(?:litellm\.\w+: )+(?:\w+Error: )?(?:\w+Exception(?: \w+)? - )?/;

/** A message without LiteLLM's prefix, its model group suffix and the JSON body it may quote (clientMessage): the provider's own words. Other messages unchanged. */
function withoutLitellmFrame(message: string): string {
  const prefix = LITELLM_PREFIX.exec(message)?.[0];
  if (prefix === undefined) return message;
  const text = message.slice(prefix.length).replace(/\.? ?Received Model Group=[\s\S]*$/, "");
  return upstreamMessage(text) ?? text;
}

/** vLLM's EngineDeadError (vllm/v1/engine/exceptions.py): the engine process died; vLLM exits and is restarted. */
const ENGINE_DEAD_MESSAGE = "EngineCore encountered an issue.";

/**
 * Secrets hidden before the cut, so none is left half shown: the deployment's own wherever they
 * are, the others by shape except within the request's own model name.
 */
const forClient = (message: string, model: string, hideSecrets: SecretHider) => redactUpstreamSecrets(message, model, hideSecrets).slice(0, MAX_UPSTREAM_MESSAGE);

/**
 * The parameter names in LiteLLM's Python rendering of them: a list (`['logit_bias', 'n']`) or a
 * dict of their values (`{'dimensions': 1024}`), whose keys at the top level are the names.
 */
function parameterNames(python: string): string[] {
  const names: string[] = [];
  const dict = python.startsWith("{");
  let depth = 0;
  for (let i = 0; i < python.length; i++) {
    const c = python[i]!;
    if (c === "'" || c === '"') {
      const end = python.indexOf(c, i + 1);
      if (end < 0) break;
      const word = python.slice(i + 1, end);
      if (depth === 1 && /^[A-Za-z_]\w{0,63}$/.test(word) && (!dict || python[end + 1] === ":")) names.push(word);
      i = end;
    } else if ("[{(".includes(c)) depth++;
    else if ("]})".includes(c)) depth--;
  }
  return names;
}

/**
 * Reads a response body up to `limit` bytes; longer bodies are cut, and the rest discarded (the
 * body destroyed). For error messages and model lists only.
 */
export async function readLimited(body: Body, limit: number): Promise<{ text: string; truncated: boolean }> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const c of body) {
    chunks.push(c);
    size += c.byteLength;
    if (size > limit) {
      body.destroy();
      return { text: Buffer.concat(chunks, limit).toString("utf8"), truncated: true };
    }
  }
  return { text: Buffer.concat(chunks, size).toString("utf8"), truncated: false };
}

/**
 * A whole response body as one Buffer, or null past `limit` bytes. Past it, every byte (those
 * read so far, then the rest) goes to `past` instead of being kept, until the body ends, breaks,
 * stalls (its idle timeout) or the caller's deadline destroys it (the whole read's, from the
 * headers: routes/inference.ts): the upstream did the work either way, and what it says about it
 * (its usage) comes at the end.
 *
 * The bytes kept are taken from `lease` (answer-memory.ts) as they come, waiting while the
 * answers in flight hold the whole budget; those dropped are given back. The caller releases the
 * lease once the answer is sent or dropped.
 */
export async function readBody(body: Body, limit: number, past: { push(chunk: Uint8Array): void }, lease: AnswerLease): Promise<Buffer | null> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  let over = false;
  try {
    for await (const c of body) {
      if (over) {
        past.push(c);
        continue;
      }
      if (!lease.takeNow(c.byteLength)) await lease.take(c.byteLength);
      chunks.push(c);
      size += c.byteLength;
      if (size > limit) {
        over = true;
        for (const k of chunks) past.push(k);
        chunks.length = 0;
        lease.drop(size);
      }
    }
  } catch (e) {
    if (!over) throw e;
  } finally {
    lease.readDone();
  }
  if (over) return null;
  const one = chunks.length === 1 ? chunks[0]! : undefined; // the usual case: no copy
  return one === undefined ? Buffer.concat(chunks, size) : Buffer.isBuffer(one) ? one : Buffer.from(one.buffer, one.byteOffset, one.byteLength);
}

type Body = AsyncIterable<Uint8Array> & { destroy(err?: Error): unknown };
