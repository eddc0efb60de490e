import type { FastifyRequest } from "fastify";
import type { AnswerMemory } from "./limits/answer-memory.ts";
import type { BodyHold, BodyMemory } from "./limits/body-memory.ts";
import type { Clock } from "./clock.ts";
import type { ShimConfig, TierLimits } from "./config.ts";
import type { Inflight } from "./inflight.ts";
import type { LeftGenerations } from "./limits/left-generations.ts";
import type { KeyWaiters } from "./limits/key-waits.ts";
import type { RequestLine } from "./observability/logger.ts";
import type { Metrics } from "./observability/metrics.ts";
import type { Pricer } from "./money/pricing.ts";
import type { KeyBuckets, RateLimiter } from "./limits/rate-limit.ts";
import type { SecretHider } from "./observability/redaction.ts";
import type { KeyRecord, Store } from "./store/store.ts";
import type { UpstreamReadiness } from "./upstream/readiness.ts";
import type { Upstream } from "./upstream/upstream.ts";

/** Everything a route needs, built once per app by buildApp. */
export interface ShimContext {
  config: ShimConfig;
  store: Store;
  upstream: Upstream;
  clock: Clock;
  /** Writes the one line per request (see logger.ts). */
  logRequest: (line: RequestLine) => void;
  /** Removes the admin token and the upstream's key from client-chosen text bound for a log, and from an upstream's message bound for a client. */
  hideSecrets: SecretHider;
  metrics: Metrics;
  pricer: Pricer;
  limiter: RateLimiter;
  inflight: Inflight;
  /** Requests refused a credit hold, waiting a little for their key's holds to settle (settlement.ts wakes them). */
  holdsSettled: KeyWaiters;
  answerMemory: AnswerMemory;
  /** Non-streamed generations whose client left, for its SDK's retry to join (left-generations.ts). */
  leftGenerations: LeftGenerations;
  bodyMemory: BodyMemory;
  /** The upstream probed as /ready probes it, cached, and on a timer while the app listens (shim_upstream_ready). */
  readiness: UpstreamReadiness;
}

/** Per-request facts for the one log line and the metrics. */
export interface RequestState {
  start: number;
  model: string | null;
  tokens: number | null;
  cost: number | null;
  /** What the key had available once this request settled: the credit figure its answer shows. */
  available: number | null;
  logged: boolean;
  /** An inference route has taken the request: it writes the line, a client that left included. */
  routeLogs: boolean;
  /** Its body was refused unread (not JSON, at its first byte; too large, within a bound): the answer keeps the connection for Node to drain it (app.ts). */
  bodyRefused: boolean;
  /** When its waits for its key's other requests end (key-waits.ts, graceEnds); null before any. */
  graceEnds: number | null;
  /** The schema maxima removed before forwarding (requests/schema-maxima.ts): the `x-schema-relaxed` header's value; null: none. */
  schemaRelaxed: string | null;
  /** A retry answered with another request's generation (joined-retry.ts): that request's id. */
  joined?: string;
  /** The credits an inference request holds on its key while it runs (from its hold to its settlement); null before one. */
  held: number | null;
  /** A re-send with an Idempotency-Key answered with an earlier request's answer (idempotent-requests.ts): that request's id. */
  replayed?: string;
}

/**
 * Why a request's API key was refused (the client is told only invalid_api_key): `keyId` is the
 * id the token named (its public part; null when it named none). `no_key`: no bearer token;
 * `not_a_key`: not the shape of one of this shim's keys (another provider's key, a truncated
 * paste); `unknown_key`: no key has that id (another tenant's key, a key from a rebuilt
 * ledger); `wrong_secret`: the id is a key's but not the secret (the old secret of a rotated
 * key, a typo); `revoked`, `expired`; `revoked_or_rotated`: either, after it authenticated,
 * while its body arrived or it waited for holds.
 */
export interface KeyRefusal {
  keyId: string | null;
  reason: "no_key" | "not_a_key" | "unknown_key" | "wrong_secret" | "revoked" | "expired" | "revoked_or_rotated";
}

/** Route config: `{ config: PUBLIC_ROUTE }` marks a route that needs no key (probes, scrapes). */
export const PUBLIC_ROUTE = { public: true } as const;
/**
 * Route config of the inference routes: they put themselves in flight (Inflight) once admitted,
 * with an abort that settles them (every other request is put in flight by the onRequest hook),
 * and are held to their key's tokens/min budget and cap on requests in flight, which the auth
 * hook looks at too (before the body is read).
 */
export const INFERENCE_ROUTE = { inference: true } as const;

/** An inference route (its config says so): the tokens/min budget and the drain apply to it. */
export function isInference(request: FastifyRequest): boolean {
  return request.routeOptions.config.inference === true;
}

declare module "fastify" {
  interface FastifyContextConfig {
    public?: boolean;
    inference?: boolean;
  }
  interface FastifyRequest {
    shim: RequestState;
    /**
     * `keepsRequest`: a refusal keeps the request requests/min took (refusals.ts, giveBackRequest): a retry the auth hook let
     * through to join a left generation (left-generations.ts mayJoin), whose body was read whatever its key's place and tokens.
     */
    auth?: { key: KeyRecord; buckets: KeyBuckets; limits: TierLimits; keepsRequest?: boolean };
    rawBody?: Buffer;
    /** Its body's bytes, counted against SHIM_BODY_MEMORY_BYTES (body-memory.ts); none without a body. */
    bodyHold?: BodyHold;
    shimErrorCode?: string;
    /** Why its API key was refused (auth.ts keyRefusal), for the log line alone. */
    keyRefusal?: KeyRefusal;
    /** An admin request let in with SHIM_ADMIN_TOKEN_PREVIOUS (auth.ts), for its log line. */
    adminTokenPrevious?: true;
    /**
     * Aborted when a drain ends with this request still unanswered (not on inference routes,
     * which abort their own work): work that waits on the upstream listens to it.
     */
    drainCut?: AbortSignal;
    /** Why the upstream could not be reached or read (transportCause), for the log line. */
    upstreamCause?: string;
  }
}
