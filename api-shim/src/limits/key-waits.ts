import type { FastifyReply } from "fastify";
import { clientLeftSignal } from "../client/client-left.ts";
import type { ShimContext } from "../context.ts";

/**
 * How long a request that its key's other requests crowd out (their credit holds, their places
 * in flight) waits for them to finish before its 402 or 429. A client that stops a stream (the
 * SDKs' `break`, a chat UI's Stop button) and sends its next request at once used to be refused:
 * the stopped stream's hold and place are given back a few ms after its connection closes (its
 * upstream request is aborted, then settled), and the next request arrived first. The SDKs never
 * retry a 402, and retry a 429 only after Retry-After (1 s). Half a second covers that settlement
 * many times over (milliseconds, a few more under load) while a key that is really at its limit
 * is still told so promptly.
 */
export const FINISHING_GRACE_MS = 500;

/**
 * When a request's waits must end: FINISHING_GRACE_MS after its first (`state.graceEnds`, set
 * then). One grace per request, not per wait: a request may wait for a place in the auth hook,
 * again in the handler, then for credits, and its 402 would otherwise come three graces late.
 */
export function graceEnds(state: { graceEnds: number | null }): number {
  return (state.graceEnds ??= performance.now() + FINISHING_GRACE_MS);
}

/**
 * How often a waiter tries again without being woken: a hold settled by another replica (Postgres)
 * or released other than by a settlement here wakes nobody in this process.
 */
const POLL_MS = 100;

/** A waiter: what it needs (credits in µc, or 1 place) and how to wake it. */
type Waiter = { need: number; end: () => void };

/**
 * Waiters per key for something its other requests give back: a credit hold (woken by
 * settlement.ts) or a place in flight (by RateLimiter.leave). Nothing is registered, and nothing
 * paid, unless a request was refused: `wake` on a key nobody waits for is one map lookup.
 */
export class KeyWaiters {
  private readonly waiting = new Map<string, Set<Waiter>>();

  /**
   * `room` of `keyId` is free now (its available credits; 1 place): the waiters it can admit try
   * again, in the order they (last) began to wait. Not every waiter: 150 requests refused by a key with credit
   * for 50 would otherwise each try again at each of the 50 settlements. The rest try on their
   * poll (a waiter whose hold the balance no longer covers then gets its 402).
   */
  wake(keyId: string, room: number): void {
    const waiters = this.waiting.get(keyId);
    if (waiters === undefined) return;
    for (const w of waiters) {
      if (w.need > room) continue;
      room -= w.need;
      w.end();
    }
  }

  /**
   * Calls `attempt` again until it gives a result (not undefined), each time `keyId` is woken with
   * room for `need` (or POLL_MS passed), until `deadline` (performance.now(): graceEnds), at least
   * once; undefined when the deadline passes or `signal` aborts first (the client left, a drain).
   * An attempt's failure is thrown as it is.
   */
  async retry<T>(keyId: string, need: number, signal: AbortSignal, deadline: number, attempt: () => T | undefined | Promise<T | undefined>): Promise<T | undefined> {
    const until = AbortSignal.any([signal, AbortSignal.timeout(Math.max(0, Math.ceil(deadline - performance.now())))]);
    while (!until.aborted) {
      // Registered before the attempt: what is given back while it runs wakes this wait.
      const woken = this.next(keyId, need, until);
      let result: T | undefined;
      try {
        result = await attempt();
      } catch (e) {
        woken.end();
        throw e;
      }
      if (result !== undefined) {
        woken.end();
        return result;
      }
      await woken.promise;
    }
    return undefined;
  }

  /** Resolves when `keyId` is woken, POLL_MS have passed or `signal` aborts; `end` forgets it sooner. */
  private next(keyId: string, need: number, signal: AbortSignal): { promise: Promise<void>; end: () => void } {
    let resolve!: () => void;
    const promise = new Promise<void>((r) => (resolve = r));
    let waiters = this.waiting.get(keyId);
    if (waiters === undefined) this.waiting.set(keyId, (waiters = new Set()));
    const waiter: Waiter = {
      need,
      end: () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", waiter.end);
        if (waiters.delete(waiter) && waiters.size === 0) this.waiting.delete(keyId);
        resolve();
      },
    };
    const timer = setTimeout(waiter.end, POLL_MS);
    signal.addEventListener("abort", waiter.end, { once: true });
    waiters.add(waiter);
    return { promise, end: waiter.end };
  }
}

/**
 * A request's wait for what its key's other requests give back (`waiters`: places in flight or
 * credit holds): `attempt` retried (KeyWaiters.retry) until the request's grace ends (graceEnds),
 * given up when its client leaves or `signal` aborts.
 */
export function retryInGrace<T>(waiters: KeyWaiters, reply: FastifyReply, keyId: string, need: number, signal: AbortSignal, attempt: () => T | undefined | Promise<T | undefined>): Promise<T | undefined> {
  return waiters.retry(keyId, need, AbortSignal.any([signal, clientLeftSignal(reply)]), graceEnds(reply.request.shim), attempt);
}

/**
 * For a request whose key has `limit` requests in flight already: whether one of them ended within
 * the request's grace (a stream its client has just stopped ends a few ms after the client
 * closed), its place then taken (`take`: the handler) or only seen free (the auth hook, before the
 * body is read). False when none did, or the client left meanwhile.
 *
 * A drain that begins meanwhile turns the request away (Inflight.refusal, 503: another replica, or
 * this one restarted, serves it), at once and with no place kept. It is not in flight while it
 * waits, so the drain does not wait for it: once the drain had found nothing in flight, server.ts
 * closed the store while the request, woken by the last one's end, went on to make its hold.
 */
export async function placeFreed(ctx: ShimContext, reply: FastifyReply, limit: number, take: boolean): Promise<boolean> {
  const keyId = reply.request.auth!.key.id;
  const free = take ? () => ctx.limiter.enter(keyId, limit) || undefined : () => !ctx.limiter.full(keyId, limit) || undefined;
  const freed = (await retryInGrace(ctx.limiter.placeWaiters, reply, keyId, 1, ctx.inflight.drainBegan, free)) === true;
  if (ctx.inflight.draining) {
    if (freed && take) ctx.limiter.leave(keyId);
    throw ctx.inflight.refusal();
  }
  return freed;
}
