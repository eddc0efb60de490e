import { Transform } from "node:stream";
import type { FastifyReply, FastifyRequest, RequestPayload } from "fastify";
import { ShimError } from "../errors.ts";

/**
 * The request bodies that admitted requests may hold at once, across requests.
 *
 * A request's body is read whole and parsed before the route runs, and the request then waits on
 * the upstream (up to SHIM_UPSTREAM_TIMEOUT_MS, while vLLM queues it) with what is forwarded.
 * Each body may be up to SHIM_MAX_BODY_BYTES, and nothing else bounded how many are held at
 * once: parallel embeddings batches against a busy upstream took the process to the container's
 * memory limit, an outage for every key. So each request's body bytes are counted here from
 * before they are read until its answer is finished or its client gone, and a request that would
 * go past the budget is refused before its body is read: 503 with Retry-After: 1 (OpenAI's
 * SDKs retry it), nothing charged. Unlike an answer (answer-memory.ts), nothing has been done
 * for it yet, so refusing costs the client only the retry.
 *
 * A body's first FREE_BYTES are always taken: ordinary requests (a chat is a few KiB) are never
 * refused by this, however many large ones are in flight.
 *
 * And, as the answer budget lets one reader past it (answer-memory.ts), one large body (past
 * FREE_BYTES) may go past the budget when no other large body is held: so a body up to
 * SHIM_MAX_BODY_BYTES always gets in on a shim that holds no other large one, even with a max body
 * set above the budget (limits.maxBodyMb above 64 MiB: every such body was refused, on an idle
 * shim too, and the SDKs sent it three times). The bodies held stay within the larger of the budget
 * and one body (plus the small ones).
 */
export const FREE_BYTES = 64 * 1024;

/** SHIM_BODY_MEMORY_BYTES' default (config.ts); the compose render sizes the shim's memory cap by it. */
export const DEFAULT_BODY_MEMORY_BYTES = 64 * 1024 * 1024;

export class BodyMemory {
  readonly limit: number;
  private used = 0;
  /** How many of the bodies held are past FREE_BYTES. */
  private large = 0;
  /** Requests refused for want of room, since the start (a budget too small shows here). */
  refusals = 0;

  constructor(limit: number) {
    this.limit = limit;
  }

  /** Bytes held now by the bodies of requests not yet over. */
  get inUse(): number {
    return this.used;
  }

  /**
   * Takes `n` more bytes for a body that holds `held`; false (nothing taken) past the budget,
   * unless it is the only large body held.
   */
  take(held: number, n: number): boolean {
    const wasLarge = held > FREE_BYTES;
    if (held + n > FREE_BYTES && this.used + n > this.limit && this.large > (wasLarge ? 1 : 0)) return false;
    this.used += n;
    if (!wasLarge && held + n > FREE_BYTES) this.large++;
    return true;
  }

  /** Gives back every byte of a body that held `held`. */
  give(held: number): void {
    this.used -= held;
    if (held > FREE_BYTES) this.large--;
  }

  /** The refusal of a request that would take the budget past its limit. */
  full(): ShimError {
    this.refusals++;
    return new ShimError("service_unavailable", {
      message: "The server is busy with other large requests; retry shortly.",
      headers: { "retry-after": "1" },
      logCode: "body_memory_full",
    });
  }

  /**
   * Fastify's preParsing hook: takes a body's Content-Length before it is read (one past
   * `maxBodyBytes` is refused as too large next, unread), or a chunked body's bytes as they arrive.
   * `refused`: what a refusal gives back (the request's requests/min place: the server was busy,
   * the key did nothing wrong).
   * They are given back when the response closes (finished, or its client gone), on every path,
   * or, for a route that keeps them (request.bodyHold.keep(): inference), when it is done.
   */
  hook(maxBodyBytes: number, refused: (request: FastifyRequest) => void) {
    return (request: FastifyRequest, reply: FastifyReply, payload: RequestPayload, done: (err: Error | null, payload?: RequestPayload) => void): void => {
      const length = request.headers["content-length"];
      const chunked = length === undefined && request.headers["transfer-encoding"] !== undefined;
      const n = Number(length);
      if (!chunked && !(n > 0 && n <= maxBodyBytes)) return done(null, payload); // no body, or refused as too large next
      // A client gone while it was authenticated (a key looked up on Postgres): its close has
      // fired already, and a listener added now would never run, holding the bytes for good.
      if (request.raw.destroyed) return done(null, payload);
      const full = () => {
        refused(request);
        return this.full();
      };
      const hold = new BodyHold(this);
      if (!chunked && !hold.take(n)) return done(full());
      request.bodyHold = hold;
      reply.raw.once("close", () => hold.closed());
      if (!chunked) return done(null, payload);
      const counted = new Transform({
        transform: (chunk: Buffer, _encoding, next) => (hold.take(chunk.length) ? next(null, chunk) : next(full())),
      });
      payload.on("error", (e) => counted.destroy(e));
      // Piped, the request is no longer Node's to drain: a body nobody reads (a route the shim does
      // not serve, a GET, a refusal mid-body, which unpipes it) stayed in the socket, and the next
      // request on the connection was never answered (straight to the shim; nginx sends bodies
      // whole). So once the answer is sent its rest is read and dropped, uncounted, as Node drains
      // an unread body: no cap (requestTimeout bounds how long), and nothing held.
      reply.raw.once("finish", () => {
        if (request.raw.complete) return;
        payload.unpipe(counted);
        payload.resume();
      });
      done(null, payload.pipe(counted));
    };
  }
}

/** One request's body bytes, held from before they are read until the request is over. */
export class BodyHold {
  private readonly memory: BodyMemory;
  private held = 0;
  private kept = false;
  private over = false;

  constructor(memory: BodyMemory) {
    this.memory = memory;
  }

  /** Takes `n` more bytes; false (nothing taken) past the budget. */
  take(n: number): boolean {
    if (this.over) return true; // over: nothing is counted any more
    if (!this.memory.take(this.held, n)) return false;
    this.held += n;
    return true;
  }

  /** The route holds the body past its response's close (until the upstream is done with it): then its release() gives it back. */
  keep(): void {
    this.kept = true;
  }

  /** The response closed. */
  closed(): void {
    if (!this.kept) this.release();
  }

  /** Gives every byte back. Idempotent. */
  release(): void {
    if (this.over) return;
    this.over = true;
    this.memory.give(this.held);
    this.held = 0;
  }
}
