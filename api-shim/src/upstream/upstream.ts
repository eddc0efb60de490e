import type { FastifyRequest } from "fastify";
import { Pool, errors as undiciErrors } from "undici";
import type { ShimContext } from "../context.ts";
import { ShimError } from "../errors.ts";
import { dispatch } from "./upstream-body.ts";
import type { AnswerLease } from "../limits/answer-memory.ts";
import type { UpstreamFailureReason } from "./failure-reasons.ts";

/**
 * The seam to the OpenAI-compatible upstream (LiteLLM or vLLM). It owns the connection pools,
 * the upstream's credentials (never the client's key), the timeouts, and the mapping of
 * transport failures onto our error table (its refusals: upstream-errors.ts).
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
    // upstream for its whole timeout (595 s in the Compose file), far past the stop grace
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
 * A whole response body as one Buffer, or null past `limit` bytes. Every piece goes to `seen` as
 * it arrives (which reads its usage between reads: answer-body.ts AnswerUsage). Past the limit the
 * pieces are no longer kept, and the body is read on until it ends, breaks, stalls (its idle
 * timeout) or the caller's deadline destroys it (the whole read's, from the headers:
 * routes/inference.ts): the upstream did the work either way, and what it says about it (its
 * usage) comes at the end.
 *
 * The bytes kept are taken from `lease` (answer-memory.ts) as they come, waiting while the
 * answers in flight hold the whole budget; those dropped are given back. The caller releases the
 * lease once the answer is sent or dropped.
 */
export async function readBody(body: Body, limit: number, seen: { push(chunk: Uint8Array): void }, lease: AnswerLease): Promise<Buffer | null> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  let over = false;
  try {
    for await (const c of body) {
      seen.push(c);
      if (over) continue;
      if (!lease.takeNow(c.byteLength)) await lease.take(c.byteLength);
      chunks.push(c);
      size += c.byteLength;
      if (size > limit) {
        over = true;
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
