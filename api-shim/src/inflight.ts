import { EventEmitter, once } from "node:events";
import type { FastifyRequest } from "fastify";
import { type ShimError, shuttingDown } from "./errors.ts";

/**
 * What the requests cut at the end of a drain get to settle (a settlement takes milliseconds). The
 * drain timeout plus this (and the upstream's and the store's bounded close after it) must stay
 * inside the container's stop grace period (23 + 3 + 1 + 2 s < 30 s
 * in the rendered compose file), or the process is killed with holds unsettled.
 */
export const SETTLE_AFTER_DRAIN_MS = 3_000;

/** What a restart takes once the drain is over, told to a request it turns away (Inflight.refusal). */
const RESTART_MS = 5_000;

/** A slot whose request abortAll has aborted and that has not finished yet (it is not aborted twice). */
const ABORTED = () => {};

/**
 * The requests in flight, so a shutdown can wait for them (drain) and then abort the rest. An
 * aborted inference request still settles: it is charged for what was generated.
 *
 * Slots in an array with a free list rather than a Set: V8 keeps whatever passes through a
 * long-lived Map or Set with constant additions and deletions alive until the next full GC
 * (everything added is promoted to the old generation). Here that was every request's abort
 * closure, and with it the request's whole object graph: tens of MB/s of old-generation
 * garbage under load, which drove the peak RSS (docs/performance.md).
 *
 * An inference request's FastifyRequest sits beside its abort, in a second array at the same
 * slot, so GET /admin/requests/{id} can tell a request still running (routes/running-request.ts)
 * from one that never was: one more array store as it is added and one as it is removed, no
 * object made for it (the request exists anyway, and is alive while in flight), and a search of
 * the slots, rare (a support desk's lookup), rather than a Map kept on every request.
 */
export class Inflight {
  private readonly slots: (((reason: string) => void) | undefined)[] = [];
  /** The request in each slot that has one (inference, joined retries): read by `running` alone. */
  private readonly requests: (FastifyRequest | undefined)[] = [];
  private readonly free: number[] = [];
  private count = 0;
  private readonly events = new EventEmitter();
  /** Aborted as a drain begins: see drainBegan. */
  private readonly drainStart = new AbortController();
  /** Set by abortAll: a request put in flight after it (a kept-alive connection's) is aborted at once. */
  private cut: string | null = null;
  /** How many requests abortAll cut (each counted once, however many times it is called). */
  private abortedCount = 0;
  /** When the drain's wait for what is in flight runs out (performance.now()); null before a drain. */
  private drainEnds: number | null = null;

  /** Other shim processes may share the store (Postgres), and one of them answer at once. */
  private readonly replicas: boolean;

  constructor(replicas = false) {
    this.replicas = replicas;
  }

  /**
   * Registers an abort function; call the returned function when the request is over. `request`:
   * the client's request this is (an inference one), for `running` to find by its id.
   */
  add(abort: (reason: string) => void, request?: FastifyRequest): () => void {
    const slot = this.free.length > 0 ? this.free.pop()! : this.slots.length;
    this.slots[slot] = abort;
    this.requests[slot] = request;
    this.count++;
    const cut = this.cut;
    // After the caller has its done function and has set up what the abort acts on.
    if (cut !== null) queueMicrotask(() => this.slots[slot] === abort && this.abortSlot(slot, cut));
    let removed = false;
    return () => {
      if (removed) return;
      removed = true;
      this.slots[slot] = undefined;
      this.requests[slot] = undefined;
      this.free.push(slot);
      if (--this.count === 0) this.events.emit("empty");
    };
  }

  /**
   * Puts a request that is not an inference one in flight until its response closes, so a drain
   * waits for it as for inference (a model list, a usage export still being sent). If the drain
   * ends first, the returned signal is aborted while it is unanswered (work waiting on the
   * upstream listens to it and answers 503), and its connection is cut once its answer has begun
   * or while its body is still arriving (no handler runs yet to answer it).
   */
  untilClosed(res: { headersSent: boolean; destroy(): unknown; once(event: "close", listener: () => void): unknown }, req: { complete: boolean }): AbortSignal {
    const ac = new AbortController();
    res.once("close", this.add((reason) => (res.headersSent || !req.complete ? res.destroy() : ac.abort(reason))));
    return ac.signal;
  }

  /** Whether a drain has begun: inference is no longer admitted (503). */
  get draining(): boolean {
    return this.drainStart.signal.aborted;
  }

  /**
   * Aborts as a drain begins, for waits outside what the drain waits for: a request waiting for
   * a place among its key's requests in flight (key-waits.ts) is not in flight yet, so the drain
   * would end (and the store be closed) without it.
   */
  get drainBegan(): AbortSignal {
    return this.drainStart.signal;
  }

  /**
   * The refusal of a request the drain turns away or cuts, told when to come back: once the drain
   * may have ended (an upper bound: one whose requests all finish ends sooner; 0 once it has cut
   * them) and a restart is over (settling what it cut, the exit, Compose starting the new shim).
   * With replicas another one serves it now: a second, the least Retry-After.
   */
  refusal(): ShimError {
    if (this.replicas) return shuttingDown(0);
    const drainLeft = this.drainEnds === null || this.cut !== null ? 0 : Math.max(0, this.drainEnds - performance.now());
    return shuttingDown(drainLeft + RESTART_MS);
  }

  /** Whether the drain has cut what was in flight: connections closing now are the shim's doing. */
  get cutting(): boolean {
    return this.cut !== null;
  }

  /** The request in flight on this process with this id (given to `add`), if any: a search of the slots. */
  running(id: string): FastifyRequest | undefined {
    for (const r of this.requests) if (r !== undefined && r.id === id) return r;
    return undefined;
  }

  get size(): number {
    return this.count;
  }

  /**
   * A drain leaves open connections to their requests (closeApp): every answer sent while it runs
   * says `Connection: close`, so the connection is closed after it and nginx sends nothing more to
   * this process. Called wherever an answer's head is made (the hook, the handlers, the error
   * paths, the inference paths that write their own heads); `writeHead` keeps what `setHeader` set.
   */
  closeIfDraining(res: { setHeader(name: string, value: string): unknown }): void {
    if (this.draining) res.setHeader("connection", "close");
  }

  /**
   * Aborts every request in flight (each still settles), and any put in flight from now on. Called
   * again (a second signal, then a store failure), it aborts only what it did not abort before.
   */
  abortAll(reason: string): void {
    this.cut = reason;
    for (const [slot, abort] of this.slots.entries()) if (abort !== undefined && abort !== ABORTED) this.abortSlot(slot, reason);
  }

  /** How many requests abortAll has cut so far (a drain's count, however it was cut). */
  get aborted(): number {
    return this.abortedCount;
  }

  private abortSlot(slot: number, reason: string): void {
    const abort = this.slots[slot]!;
    this.slots[slot] = ABORTED;
    this.abortedCount++;
    abort(reason);
  }

  /**
   * Stops admitting, waits up to `timeoutMs` for requests to finish, then aborts the rest and waits
   * for them to settle. Once it returns, what is put in flight is cut at once, and `cutting` says
   * that connections closing now (closeApp closes them all) are the shim's doing.
   */
  async drain(timeoutMs: number, settleTimeoutMs = SETTLE_AFTER_DRAIN_MS): Promise<{ aborted: number }> {
    this.drainEnds = performance.now() + timeoutMs;
    this.drainStart.abort();
    // Ends early when it is emptied by abortAll (a second signal, a store failure): what that cut
    // is counted in `aborted` as what the timeout cuts is.
    const finished = await this.waitEmpty(timeoutMs);
    this.abortAll("drain"); // nothing to abort when it finished: marks the cut
    if (!finished) await this.waitEmpty(settleTimeoutMs);
    return { aborted: this.aborted };
  }

  private async waitEmpty(timeoutMs: number): Promise<boolean> {
    if (this.size === 0) return true;
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), timeoutMs);
    try {
      await once(this.events, "empty", { signal: ac.signal });
      return true;
    } catch {
      return this.size === 0;
    } finally {
      clearTimeout(timer);
    }
  }
}
