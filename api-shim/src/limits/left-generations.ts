import { createHash } from "node:crypto";
import type { FastifyRequest } from "fastify";
import type { ShimContext } from "../context.ts";
import type { ShimError } from "../errors.ts";

/**
 * Non-streamed generations whose client left before the answer, remembered for that client's
 * retry (routes/joined-retry.ts).
 *
 * Node's fetch gives up on a response whose headers have not come in 300 s (undici's
 * headersTimeout), whatever the SDK's own timeout; a non-streamed answer's headers come only
 * once it is whole; and the shim generates and charges a request whose client left (inference.ts:
 * LiteLLM would not cancel it anyway). So openai-node (LangChain.js and LlamaIndex.TS use it)
 * retried a long generation, and each attempt was generated and charged again, the client never
 * getting an answer. Its retry, told by `x-stainless-retry-count` ≥ 1, of a body identical to
 * one whose client left gets that generation's answer instead.
 *
 * Nothing here runs on the common path: an entry is made only when a client leaves a
 * non-streamed request the upstream has, and a body is hashed only to make one, or for a retry
 * whose key has one. Per replica (process memory), like the answers it keeps.
 */

/** How long a finished answer is kept for a retry: an SDK retries within seconds (openai-node's backoff is at most 8 s, a Retry-After at most 60 s). */
export const KEEP_MS = 10 * 60_000;
/**
 * Bytes of kept answers at once, past it the oldest of the key holding the most dropped (an answer
 * larger than a key's share, KEY_BYTES, is not kept).
 * Outside SHIM_ANSWER_MEMORY_BYTES, whose budget is for answers being read and sent: a kept
 * one would hold it for minutes and make every large answer wait.
 */
export const KEPT_BYTES = 64 * 1024 * 1024;
/** Generations remembered at once (generating or finished), past it the oldest of the key holding the most dropped. */
export const KEPT_ENTRIES = 1000;
/**
 * A key's share of both bounds, a quarter: one key whose clients leave many (or large) generations
 * drops its own oldest past it, not other keys' (whose retries were generated and charged again).
 * Far above what one client's retries need (its left generations still running are bounded by
 * its concurrency; a joined answer is forgotten), and an answer past KEY_BYTES is not kept: that
 * large come only many outputs with top_logprobs, or a large embeddings batch. docs/decisions.md.
 */
export const KEY_ENTRIES = KEPT_ENTRIES / 4;
export const KEY_BYTES = KEPT_BYTES / 4;

/** Why a generation was dropped before a retry had it (shim_retry_memory_evictions_total's `reason`). */
export const EVICTION_REASONS = ["expired", "over_key_share", "over_total"] as const;
export type EvictionReason = (typeof EVICTION_REASONS)[number];
/**
 * Whose entry was dropped (the metric's `kind`): a left generation, which an SDK retry would have
 * joined, or a request sent with an Idempotency-Key, most of them answered to a client that
 * stayed, so that a batch job's keys do not read as retries' losses.
 */
export const EVICTION_KINDS = ["left", "idempotent"] as const;
export type EvictionKind = (typeof EVICTION_KINDS)[number];
export type Evictions = Record<EvictionKind, Record<EvictionReason, number>>;
/** What a retry joined: a generation still running (it waited) or a finished answer (shim_retry_joins_total's `outcome`). */
export const JOIN_OUTCOMES = ["running", "finished"] as const;
export type JoinOutcome = (typeof JOIN_OUTCOMES)[number];

/**
 * A left generation's answer and its charge. The credit members and headers are added when it is
 * delivered (joined-retry.ts): what the key has left and its limits are the retry's moment's.
 */
export interface KeptAnswer {
  status: number;
  /** The upstream's answer, as read. */
  body: Buffer;
  /** What the generation was charged. */
  cost: number;
  batch: boolean;
}

/** A hash of what makes two requests the same call: the route and the body's bytes. */
/** What a call is remembered and found by: its route and its body's bytes as the client sent them. */
export function callHash(route: string, body: Buffer): string {
  return createHash("sha256").update(route).update("\0").update(body).digest("base64url");
}

export class LeftGeneration {
  readonly keyId: string;
  readonly hash: string;
  /** The request whose client left: named on its retry's answer and log line. */
  readonly requestId: string;
  /**
   * The request's Idempotency-Key (idempotent-requests.ts): remembered from its admission, found
   * by this value rather than its bytes, answered or left, and replayed to every re-send until it
   * expires. Undefined: a left generation, for an SDK retry's join alone.
   */
  readonly idempotencyKey: string | undefined;
  answer: KeptAnswer | undefined;
  /** Its final failure (a generation that ran out of time), for the retries waiting on it. */
  private failure: ShimError | undefined;
  /** No more to come: answered, failed, or dropped. */
  ended = false;
  /**
   * A retry is joining it (waiting, or being sent its answer): another retry of the same bytes
   * then joins another such generation, or generates its own. Identical calls left together (n
   * samples of one prompt) each get their own answer, not one answer given to all, the others charged and lost.
   */
  claimed = false;
  /** Re-sends with its Idempotency-Key waiting for it to end (idempotent-requests.ts caps them). */
  resendsWaiting = 0;
  private readonly owner: LeftGenerations;
  private readonly waiters: ((outcome: KeptAnswer | ShimError | undefined) => void)[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(owner: LeftGenerations, keyId: string, hash: string, requestId: string, idempotencyKey: string | undefined) {
    this.owner = owner;
    this.keyId = keyId;
    this.hash = hash;
    this.requestId = requestId;
    this.idempotencyKey = idempotencyKey;
  }

  /** Its answer, charged: kept KEEP_MS for a retry (if it fits), and given to those waiting. */
  answered(answer: KeptAnswer): void {
    if (this.ended) return;
    this.answer = answer;
    // Past a key's share it is not kept; nor when its key would then hold the most (kept() took
    // its bytes back). Either way a retry or re-send already waiting on it still gets it (it was
    // charged once for them too); one not yet come generates its own.
    const kept = answer.body.length <= KEY_BYTES && this.owner.kept(this);
    if (!kept) {
      this.settle();
      this.answer = undefined;
      this.owner.drop(this, this.claimed || answer.body.length > KEY_BYTES ? undefined : "over_total");
      return;
    }
    this.timer = setTimeout(() => this.owner.drop(this, "expired"), KEEP_MS).unref();
    this.end();
  }

  /**
   * It ran out of time (`err`: the 504 that says not to retry): the retries waiting on it are told
   * so, rather than starting the same long generation into the same timeout. Then forgotten.
   */
  failed(err: ShimError): void {
    if (this.ended) return;
    this.failure = err;
    this.owner.drop(this);
  }

  /** The request is over: without an answer (failed, refused, too large) a retry generates its own. */
  end(): void {
    if (!this.answer) this.owner.drop(this);
    this.settle();
  }

  /** Dropped from memory (expired, evicted, or delivered). */
  forget(): void {
    clearTimeout(this.timer);
    this.answer = undefined;
    this.settle();
  }

  private settle(): void {
    this.ended = true;
    for (const wake of this.waiters.splice(0)) wake(this.answer ?? this.failure);
  }

  /** Its answer once it has one, or its final failure; undefined when it ends without either, or when `signal` aborts. */
  async outcome(signal: AbortSignal): Promise<KeptAnswer | ShimError | undefined> {
    if (signal.aborted) return undefined;
    if (this.ended) return this.answer;
    return await new Promise((resolve) => {
      // Each side removes the other: a client that leaves takes its resolver out of `waiters` (a
      // re-send leaving again and again during a long generation kept one each until it ended),
      // and an outcome delivered takes the listener off the request's signal.
      const left = () => {
        const at = this.waiters.indexOf(wake);
        if (at !== -1) this.waiters.splice(at, 1);
        resolve(undefined);
      };
      const wake = (outcome: KeptAnswer | ShimError | undefined) => {
        signal.removeEventListener("abort", left);
        resolve(outcome);
      };
      this.waiters.push(wake);
      signal.addEventListener("abort", left, { once: true });
    });
  }

  /** Waiters on its outcome now: for the test that a client leaving is let go (nothing else shows it). */
  get waiting(): number {
    return this.waiters.length;
  }
}

/** What one key holds: its generations in the order they were made, and its kept answers' bytes. */
interface Holding {
  readonly entries: Set<LeftGeneration>;
  bytes: number;
}

export class LeftGenerations {
  /** Entries in the order they were made (a Set keeps it): of the keys that must make room, the oldest goes first. */
  private readonly all = new Set<LeftGeneration>();
  private readonly byKey = new Map<string, Holding>();
  /** Idempotent requests' entries by idempotencySlot: one per key and value. */
  private readonly byIdempotencyKey = new Map<string, LeftGeneration>();
  private keptBytes = 0;
  /** Counts for /metrics, read at each scrape (observability/metrics.ts): nothing on the request path. */
  keptAnswers = 0;
  readonly joins: Record<JoinOutcome, number> = { running: 0, finished: 0 };
  /** Re-sends with an Idempotency-Key answered with an earlier request's answer, each time (shim_idempotent_replays_total). */
  readonly replays: Record<JoinOutcome, number> = { running: 0, finished: 0 };
  readonly evicted: Evictions = { left: { expired: 0, over_key_share: 0, over_total: 0 }, idempotent: { expired: 0, over_key_share: 0, over_total: 0 } };

  /** Generations remembered now (generating or finished), for the metric and tests. */
  get size(): number {
    return this.all.size;
  }

  /** Bytes of answers kept now. */
  get bytes(): number {
    return this.keptBytes;
  }

  /**
   * The client of a non-streamed request the upstream has left (`call`: its callHash). Room is
   * made first from the key's own oldest (at its share), then, at the total, from the key holding
   * the most. With `idempotencyKey`: a request sent with that Idempotency-Key, from its admission.
   */
  remember(keyId: string, call: string, requestId: string, idempotencyKey?: string): LeftGeneration {
    const g = new LeftGeneration(this, keyId, call, requestId, idempotencyKey);
    const own = this.byKey.get(keyId)?.entries;
    while (own && own.size >= KEY_ENTRIES) this.drop(oldestToGo(own), "over_key_share");
    while (this.all.size >= KEPT_ENTRIES) this.drop(this.largestHoldersOldest("entries")!, "over_total");
    this.all.add(g);
    let mine = this.byKey.get(keyId);
    if (!mine) this.byKey.set(keyId, (mine = { entries: new Set(), bytes: 0 }));
    mine.entries.add(g);
    if (idempotencyKey !== undefined) this.byIdempotencyKey.set(idempotencySlot(keyId, idempotencyKey), g);
    return g;
  }

  /** `keyId`'s request sent with Idempotency-Key `value`, running or with its answer kept. */
  idempotent(keyId: string, value: string): LeftGeneration | undefined {
    return this.byIdempotencyKey.size === 0 ? undefined : this.byIdempotencyKey.get(idempotencySlot(keyId, value));
  }

  /** Whether `keyId` has any: the one look-up a retry pays when it has none (the usual case). */
  has(keyId: string): boolean {
    return this.byKey.has(keyId);
  }

  /** `keyId`'s generation of the same call (route and body bytes), generating or finished, that no other retry is joining. */
  find(keyId: string, route: string, body: Buffer): LeftGeneration | undefined {
    const mine = this.byKey.get(keyId);
    if (!mine) return undefined;
    const hash = callHash(route, body);
    // Not an idempotent request's: that one is found by its Idempotency-Key, which its SDK's retries send too.
    for (const g of mine.entries) if (g.hash === hash && !g.claimed && g.idempotencyKey === undefined) return g;
    return undefined;
  }

  /**
   * `g`'s answer is kept: counted; the key's own oldest answers dropped while it is over KEY_BYTES,
   * then, while all are over KEPT_BYTES, the oldest answer of the key holding the most bytes.
   * False when that is `g` itself (its key, with it, holds the most and has no older answer): it
   * is not kept, or a key holding 16 MiB would push out the answers of keys holding less.
   */
  kept(g: LeftGeneration): boolean {
    const size = g.answer!.body.length;
    const mine = this.byKey.get(g.keyId)!;
    mine.bytes += size;
    this.keptBytes += size;
    for (const old of mine.entries) {
      if (mine.bytes <= KEY_BYTES) break;
      if (old !== g && old.answer) this.drop(old, "over_key_share");
    }
    while (this.keptBytes > KEPT_BYTES) {
      const old = this.largestHoldersOldest("bytes");
      if (old === g) {
        mine.bytes -= size;
        this.keptBytes -= size;
        return false;
      }
      this.drop(old!, "over_total");
    }
    if (g.idempotencyKey === undefined) this.keptAnswers++;
    return true;
  }

  /**
   * The oldest entry (with an answer, when measured in bytes) of the key holding the most
   * `by` entries or bytes: over the total, a key holding less than another loses nothing. One walk of at most
   * KEPT_ENTRIES, only when the total is reached.
   */
  private largestHoldersOldest(by: "entries" | "bytes"): LeftGeneration | undefined {
    const bytes = by === "bytes";
    let pick: LeftGeneration | undefined;
    let most = -1;
    for (const g of this.all) {
      if (bytes && !g.answer) continue;
      const holding = this.byKey.get(g.keyId)!;
      const held = bytes ? holding.bytes : holding.entries.size;
      if (held > most) [pick, most] = [g, held];
    }
    // By entries: that key's oldest answered one before its oldest still running (oldestToGo).
    return pick && !bytes ? oldestToGo(this.byKey.get(pick.keyId)!.entries) : pick;
  }

  /** A retry got a left generation's answer whole (joined-retry.ts): once per generation, since it is then forgotten. */
  joined(outcome: JoinOutcome): void {
    this.joins[outcome]++;
  }

  /** A re-send with an Idempotency-Key got an earlier request's answer whole (each time: the answer is kept for the next). */
  replayed(outcome: JoinOutcome): void {
    this.replays[outcome]++;
  }

  /** Forgets `g` (idempotent); `reason`: dropped before a retry had it, counted. */
  drop(g: LeftGeneration, reason?: EvictionReason): void {
    if (!this.all.delete(g)) return;
    const mine = this.byKey.get(g.keyId)!;
    if (g.answer) {
      this.keptBytes -= g.answer.body.length;
      mine.bytes -= g.answer.body.length;
    }
    mine.entries.delete(g);
    if (mine.entries.size === 0) this.byKey.delete(g.keyId);
    if (g.idempotencyKey !== undefined && this.idempotent(g.keyId, g.idempotencyKey) === g) this.byIdempotencyKey.delete(idempotencySlot(g.keyId, g.idempotencyKey));
    if (reason) this.evicted[g.idempotencyKey === undefined ? "left" : "idempotent"][reason]++;
    g.forget();
  }
}

/**
 * Of a key's entries (oldest first), the one to drop for room: its oldest with an answer kept, else
 * its oldest. A running one is what a killed job's restart (or an SDK's retry) comes back for
 * while it is generated, and dropped it is generated again: answered ones, many already received by
 * a client that stayed (an idempotent request's is kept either way), give way first. Found by the
 * review of 2026-12-07: a job's long request was dropped, still running, by its 250 short ones
 * answered since, and its re-send after a kill generated it again.
 */
function oldestToGo(entries: Set<LeftGeneration>): LeftGeneration {
  for (const g of entries) if (g.answer) return g;
  return entries.values().next().value!;
}

/** Where an idempotent request is found: its key's id and its Idempotency-Key (a key id has no newline). */
const idempotencySlot = (keyId: string, value: string) => `${keyId}\n${value}`;

/** The header the official SDKs number their attempts in, 0 on the first (routes/joined-retry.ts says whose). */
export const RETRY_COUNT = "x-stainless-retry-count";

/** The request header that makes an inference request idempotent (routes/idempotent-requests.ts). */
export const IDEMPOTENCY_KEY = "idempotency-key";

/**
 * Whether `request` may join a left generation of `keyId`'s, before its body is read: it says it
 * is a retry and the key has one, or its Idempotency-Key is one of the key's requests (running or
 * answered). The auth hook then leaves the key's place in flight and its tokens/min to the
 * handler, which checks both only if it does not join. A request with neither header pays two
 * header look-ups.
 */
export function mayJoin(ctx: ShimContext, request: FastifyRequest, keyId: string): boolean {
  const idempotencyKey = request.headers[IDEMPOTENCY_KEY];
  if (idempotencyKey !== undefined) return typeof idempotencyKey === "string" && ctx.leftGenerations.idempotent(keyId, idempotencyKey) !== undefined;
  return saysRetry(request) && ctx.leftGenerations.has(keyId);
}

/**
 * Whether `request` says it is an SDK's first attempt (RETRY_COUNT 0): one told no turn by a
 * requests/min refusal (rate-limit.ts take). Without the header nothing is said.
 */
export const firstTry = (request: FastifyRequest): boolean => request.headers[RETRY_COUNT] === "0";

/** Whether `request` says it is an SDK's retry: its attempt number (RETRY_COUNT) is 1 or more. */
export function saysRetry(request: FastifyRequest): boolean {
  const count = request.headers[RETRY_COUNT];
  return count !== undefined && count !== "0" && Number(count) >= 1;
}
