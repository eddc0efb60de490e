import type { Logger } from "pino";
import type { Clock } from "./clock.ts";
import type { ShimConfig } from "./config.ts";
import type { Inflight } from "./inflight.ts";
import type { RequestLine } from "./logger.ts";
import type { Metrics } from "./metrics.ts";
import type { Pricer } from "./pricing.ts";
import type { KeyBuckets, RateLimiter } from "./rate-limit.ts";
import type { KeyRecord, Store } from "./store/store.ts";
import type { Upstream } from "./upstream.ts";

/** Everything a route needs, built once per app by buildApp. */
export interface ShimContext {
  config: ShimConfig;
  store: Store;
  upstream: Upstream;
  clock: Clock;
  logger: Logger;
  /** Writes the one line per request (see logger.ts). */
  logRequest: (line: RequestLine) => void;
  metrics: Metrics;
  pricer: Pricer;
  limiter: RateLimiter;
  inflight: Inflight;
}

/** Per-request facts for the one log line and the metrics. */
export interface RequestState {
  start: number;
  keyId: string | null;
  model: string | null;
  /** Model label for metrics: a configured (or upstream-confirmed) name, else "other". */
  modelLabel: string;
  tokens: number | null;
  cost: number | null;
  logged: boolean;
}

declare module "fastify" {
  interface FastifyRequest {
    shim: RequestState;
    auth?: { key: KeyRecord; buckets: KeyBuckets };
    isAdmin?: boolean;
    rawBody?: Buffer;
    shimErrorCode?: string;
  }
}
