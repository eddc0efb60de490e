import type { Clock } from "../clock.ts";
import { addressBucket } from "../auth/client-address.ts";
import type { TierLimits } from "../config.ts";
import { KeyWaiters } from "./key-waits.ts";
import { Turns } from "./turns.ts";

/** Which unauthenticated budget of an address: failed admin tokens have their own. */
export type IpScope = "any" | "admin";
const ipBucketKey = (ip: string, scope: IpScope) => (scope === "admin" ? `admin ${addressBucket(ip)}` : addressBucket(ip));

/** The wait a debt of estimates still running asks for: about when a short request ends. */
const ESTIMATES_RETRY_MS = 1000;

/** Client addresses with an unauthenticated-traffic bucket at most (~100 bytes each). */
export const MAX_TRACKED_ADDRESSES = 10_000;

/**
 * The furthest ahead take() tells refused callers to come back in turn: under the 60 s past which
 * OpenAI's SDKs are told not to retry (errors.ts), so a long line of callers is not told to give
 * up by the line alone; past it they are told this and come back together, as before.
 */
export const QUEUED_WAIT_MAX_MS = 59_000;

/**
 * In-process token buckets: capacity = the per-minute limit, refilled continuously at
 * limit/60 s. Each shim process holds its own: one process with SQLite; with several Postgres
 * replicas the load balancer pins a key to one replica to keep its limits exact (a database
 * write per request would cost more than the limits are worth). A restart refills every bucket,
 * which can only favour the client.
 */
export class TokenBucket {
  private cap: number;
  private level: number;
  private at: number;
  private perMs: number;
  /** Admission estimates of requests still running (takeEstimate), most of which come back at settlement. */
  private pending = 0;
  /** The turns take() told the callers it refused, and the room held for them. */
  private readonly turns = new Turns();

  constructor(capacity: number, nowMs: number) {
    this.cap = capacity;
    this.level = capacity;
    this.at = nowMs;
    this.perMs = capacity / 60_000;
  }

  get capacity(): number {
    return this.cap;
  }

  /**
   * A new per-minute limit: what was spent this minute stays spent, at most the new limit (an
   * upgrade gives its room at once, a downgrade no fresh minute and no debt); a debt is kept.
   * Found by review: the level was kept instead, so 1 of 1 spent upgraded to 60 left 0, not 59.
   */
  resize(capacity: number, nowMs: number): void {
    this.refill(nowMs);
    if (this.level >= 0) this.level = Math.max(0, capacity - (this.cap - this.level));
    this.cap = capacity;
    this.perMs = capacity / 60_000;
    // Turns told at the old rate are not the new rate's: a key upgraded from 1 to 60 requests/min
    // was told to wait out the old minute's turn (61 s) for a request due in one second.
    this.turns.clear();
  }

  private refill(nowMs: number): void {
    if (nowMs > this.at) {
      this.level = Math.min(this.capacity, this.level + (nowMs - this.at) * this.perMs);
      this.at = nowMs;
    }
  }

  /**
   * Takes `n` for a request whose turn has come, or when `n` is there beyond the room held for
   * the turns told; otherwise returns the ms to wait, in whole seconds (Retry-After's): until
   * there is room for this caller after those told before it, held for it from then (Turns), at
   * most QUEUED_WAIT_MAX_MS ahead. Told the same wait, parallel callers refused together retried
   * together (openai-node waits exactly Retry-After), the refill served a few and the rest were
   * refused again: 16 workers on 120 requests/min lost 134 of 300 requests after the SDK's two
   * retries; told turns whose room was not held, 5 to 10, their room taken by workers answered
   * in between; with it held, none. A `firstTry` (an SDK's first attempt, which says so) was
   * told no turn, so it takes one only RETRIES_FIRST_MS past its time: a worker answered a few
   * ms after its own turn took the next one, due the same second, before that one's caller was
   * back.
   */
  take(n: number, nowMs: number, firstTry = false): { ok: true } | { ok: false; retryMs: number } {
    this.refill(nowMs);
    const held = this.turns.held(nowMs);
    // The earliest turn's room is the first to come back; the later turns' is yet to refill.
    if (this.turns.due(nowMs, firstTry) > 0 && this.level >= n) {
      this.turns.claim();
      this.level -= n;
      return { ok: true };
    }
    if (this.level - held >= n) {
      this.level -= n;
      return { ok: true };
    }
    const roomMs = Math.ceil((held + n - this.level) / this.perMs);
    if (roomMs > QUEUED_WAIT_MAX_MS) return { ok: false, retryMs: Math.max(this.msUntil(n, nowMs), QUEUED_WAIT_MAX_MS) };
    const retryMs = Math.ceil(roomMs / 1000) * 1000;
    this.turns.tell(nowMs + retryMs, n);
    return { ok: false, retryMs };
  }

  /** ms until `n` can be taken (0: now). */
  msUntil(n: number, nowMs: number): number {
    this.refill(nowMs);
    return this.level >= n ? 0 : Math.ceil((n - this.level) / this.perMs);
  }

  /** Admission for token budgets: the level must be positive; the amount may then overdraw it. */
  takeIfPositive(n: number, nowMs: number): { ok: true } | { ok: false; retryMs: number } {
    const retryMs = this.msUntilPositive(nowMs);
    if (retryMs === 0) {
      this.level -= n;
      return { ok: true };
    }
    return { ok: false, retryMs };
  }

  /** takeIfPositive for a request's admission estimate, given back or corrected by settleEstimate. */
  takeEstimate(n: number, nowMs: number): { ok: true } | { ok: false; retryMs: number } {
    const r = this.takeIfPositive(n, nowMs);
    if (r.ok) this.pending += n;
    return r;
  }

  /** A request admitted by takeEstimate has ended: its estimate is replaced by what it `used`. */
  settleEstimate(estimate: number, used: number, nowMs: number): void {
    this.pending = Math.max(0, this.pending - estimate);
    this.adjust(used - estimate, nowMs);
  }

  /**
   * ms until takeIfPositive admits (0: now). A debt made only of estimates still running (a
   * request without max_tokens takes the model's whole context) is mostly given back when they
   * end: retry then (a second), not after the estimates would have refilled (hours, with `n`).
   */
  msUntilPositive(nowMs: number): number {
    this.refill(nowMs);
    if (this.level > 0) return 0;
    const settled = this.level + this.pending;
    return settled > 0 ? ESTIMATES_RETRY_MS : Math.max(1, Math.ceil((1 - settled) / this.perMs));
  }

  /** Corrects an earlier estimate (positive = take more, negative = give back). */
  adjust(delta: number, nowMs: number): void {
    this.refill(nowMs);
    this.level = Math.min(this.capacity, this.level - delta);
  }

  /** What a request that holds no turn may take now: the room held for turns told is not its. */
  remaining(nowMs: number): number {
    this.refill(nowMs);
    return Math.max(0, Math.floor(this.level - this.turns.held(nowMs)));
  }

  /**
   * ms until the bucket is full again. While its debt is only estimates still running, the wait
   * msUntilPositive gives (the reset header must not say hours where Retry-After says 1); else
   * the time the level takes to refill, as if those running use their estimates and those told
   * turns (take) use them.
   */
  msUntilFull(nowMs: number): number {
    this.refill(nowMs);
    if (this.level <= 0 && this.level + this.pending > 0) return ESTIMATES_RETRY_MS;
    return Math.ceil((this.capacity - this.level + this.turns.held(nowMs)) / this.perMs);
  }
}

export interface KeyBuckets {
  readonly requests: TokenBucket | null;
  readonly tokens: TokenBucket | null;
}

/** Buckets per key id (per tier limits), requests in flight per key, and buckets per client IP (unauthenticated traffic). */
export class RateLimiter {
  private readonly clock: Clock;
  /** `kept`: every bucket the key has had, one whose limit is lifted (unlimited) included. */
  private readonly keys = new Map<string, { limits: TierLimits; buckets: KeyBuckets; kept: { requests?: TokenBucket; tokens?: TokenBucket } }>();
  private readonly ips = new Map<string, TokenBucket>();
  /** Requests in flight per key id (a tier's concurrency cap counts them). */
  private readonly inFlight = new Map<string, number>();
  /** Requests refused a place in flight, waiting a little for one of their key's to end (`leave`). */
  readonly placeWaiters = new KeyWaiters();
  private readonly ipRpm: number | null;

  constructor(clock: Clock, unauthenticatedRpm: number | null) {
    this.clock = clock;
    this.ipRpm = unauthenticatedRpm;
  }

  forKey(keyId: string, limits: TierLimits): KeyBuckets {
    const entry = this.keys.get(keyId);
    if (entry && entry.limits.rpm === limits.rpm && entry.limits.tpm === limits.tpm) return entry.buckets;
    // A key whose limits changed (its tier, or a bootstrap key re-applied at a replica's start)
    // keeps its buckets, resized: what it spent stays spent (a downgrade gives no fresh minute)
    // and its requests in flight settle their estimates into the bucket they were taken from,
    // also across a spell without a limit (the bucket is kept while the limit is lifted).
    const now = this.clock.monotonic();
    const bucket = (old: TokenBucket | undefined, limit: number | null) => {
      if (!old) return limit === null ? undefined : new TokenBucket(limit, now);
      if (limit !== null) old.resize(limit, now);
      return old;
    };
    const kept = { requests: bucket(entry?.kept.requests, limits.rpm), tokens: bucket(entry?.kept.tokens, limits.tpm) };
    const buckets = { requests: limits.rpm === null ? null : kept.requests!, tokens: limits.tpm === null ? null : kept.tokens! };
    this.keys.set(keyId, { limits, buckets, kept });
    return buckets;
  }

  /**
   * Admits one more request of `keyId` unless `limit` of its requests are in flight already;
   * every admitted request calls `leave` once, when it ends.
   */
  enter(keyId: string, limit: number): boolean {
    if (this.full(keyId, limit)) return false;
    this.inFlight.set(keyId, (this.inFlight.get(keyId) ?? 0) + 1);
    return true;
  }

  /** Whether `enter` would refuse now, without entering: for a check before the request's body is read. */
  full(keyId: string, limit: number): boolean {
    return (this.inFlight.get(keyId) ?? 0) >= limit;
  }

  leave(keyId: string): void {
    const n = (this.inFlight.get(keyId) ?? 1) - 1;
    if (n > 0) this.inFlight.set(keyId, n);
    else this.inFlight.delete(keyId);
    this.placeWaiters.wake(keyId, 1);
  }

  /**
   * One request from an unauthenticated client address (an IPv6 client by its /64, see
   * addressBucket); when refused, the address's buckets for the 429's headers. Failed admin
   * tokens spend a budget of their own ("admin"): a script polling with a revoked key from the
   * operator's address must not lock the operator out of the admin API.
   */
  takeIp(ip: string, scope: IpScope = "any"): { ok: true } | { ok: false; retryMs: number; buckets: KeyBuckets } {
    if (this.ipRpm === null) return { ok: true };
    const now = this.clock.monotonic();
    const address = ipBucketKey(ip, scope);
    let bucket = this.seen(address);
    if (!bucket) {
      bucket = new TokenBucket(this.ipRpm, now);
      // Bounded under address spraying, in O(1): the least recently seen address is forgotten.
      // A client still being limited is seen often (by takeIp), so it stays;
      // pushing it out takes requests from MAX_TRACKED_ADDRESSES other addresses, which already
      // have that many budgets.
      if (this.ips.size >= MAX_TRACKED_ADDRESSES) this.ips.delete(this.ips.keys().next().value!);
      this.ips.set(address, bucket);
    }
    const r = bucket.take(1, now);
    return r.ok ? r : { ...r, buckets: { requests: bucket, tokens: null } };
  }

  /** An address's bucket, if it has one, moved to the map's end: the map stays in least-recently-seen order. */
  private seen(address: string): TokenBucket | undefined {
    const bucket = this.ips.get(address);
    if (bucket) {
      this.ips.delete(address);
      this.ips.set(address, bucket);
    }
    return bucket;
  }

  /** How many client addresses have a bucket (bounded by MAX_TRACKED_ADDRESSES). */
  get trackedAddresses(): number {
    return this.ips.size;
  }
}

/** OpenAI's (Go's) duration strings: "0s", "250ms", "6s", "1m0s", "1m30s", "1h15m0s". */
export function durationString(ms: number): string {
  if (ms <= 0) return "0s";
  if (ms < 1000) return `${Math.ceil(ms)}ms`;
  const s = Math.ceil(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m${s % 60}s` : `${Math.floor(m / 60)}h${m % 60}m${s % 60}s`;
}

/** How long until a key's tokens/min budget admits again, on an inference route (others are not held back by it). */
export function tokensWait(b: KeyBuckets, monoNow: number, inference: boolean): number {
  return inference && b.tokens ? b.tokens.msUntilPositive(monoNow) : 0;
}

/**
 * Both header families for a key: `X-RateLimit-*` (requests per minute; Reset = unix seconds
 * when the bucket is full again) and OpenAI's `x-ratelimit-*-{requests,tokens}`. Unlimited
 * dimensions have nothing to report and are omitted. Seed 004's family has no tokens headers, so
 * on an inference route (`inference`), while the tokens/min budget admits nothing, it says 0
 * remaining and resets no earlier than that budget admits again: a client reading only it would
 * otherwise see requests left on a 429 and retry too early. Other routes (models, usage) are not
 * held back by that budget, and say the requests left.
 */
export function rateLimitHeaders(b: KeyBuckets, monoNow: number, wallNow: number, inference: boolean): Record<string, string> {
  const h: Record<string, string> = {};
  if (b.requests) {
    const remaining = String(b.requests.remaining(monoNow));
    const untilFull = b.requests.msUntilFull(monoNow);
    const wait = tokensWait(b, monoNow, inference);
    h["X-RateLimit-Limit"] = String(b.requests.capacity);
    h["X-RateLimit-Remaining"] = wait > 0 ? "0" : remaining;
    h["X-RateLimit-Reset"] = String(Math.ceil((wallNow + Math.max(untilFull, wait)) / 1000));
    h["x-ratelimit-limit-requests"] = String(b.requests.capacity);
    h["x-ratelimit-remaining-requests"] = remaining;
    h["x-ratelimit-reset-requests"] = durationString(untilFull);
  }
  if (b.tokens) {
    h["x-ratelimit-limit-tokens"] = String(b.tokens.capacity);
    h["x-ratelimit-remaining-tokens"] = String(b.tokens.remaining(monoNow));
    h["x-ratelimit-reset-tokens"] = durationString(b.tokens.msUntilFull(monoNow));
  }
  return h;
}
