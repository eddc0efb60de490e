import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { EVICTION_KINDS, EVICTION_REASONS, type Evictions, JOIN_OUTCOMES, type JoinOutcome, KEEP_MS, KEPT_BYTES, KEPT_ENTRIES, KEY_BYTES, KEY_ENTRIES } from "../limits/left-generations.ts";
import { MIN_FREE_BYTES } from "../store/sqlite-space.ts";
import { UPSTREAM_FAILURE_REASONS } from "../upstream/failure-reasons.ts";

const MIB = 2 ** 20;
/** The bounds of the memory of left generations, as the retry metrics' help says them. */
const KEPT = { minutes: KEEP_MS / 60_000, entries: KEPT_ENTRIES.toLocaleString("en"), keyEntries: KEY_ENTRIES, mib: KEPT_BYTES / MIB, keyMib: KEY_BYTES / MIB };

/** Node's default gauges that are totals of a labelled gauge of the same name without `_total`. */
const DUPLICATE_TOTAL_GAUGES = ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"];

/**
 * Prometheus metrics with low-cardinality labels only: route pattern, status, configured model
 * names. Never keys or client addresses, nor key ids but in the low-credit gauges' one bounded
 * family (low-credits.ts: at most 100 keys). One registry per app instance (tests build many
 * apps in one process).
 */
export class Metrics {
  readonly registry = new Registry();
  readonly requests: Counter<"route" | "status">;
  readonly duration: Histogram<"route">;
  readonly tokens: Counter<"model" | "kind">;
  readonly credits: Counter<"model">;
  readonly activeStreams: Gauge;
  /** Read at each scrape: the shim's AnswerMemory (answer-memory.ts), kept off the hot path. */
  answerMemory: { readonly inUse: number; readonly waits: number } = { inUse: 0, waits: 0 };
  /** The request bodies held (body-memory.ts), set by buildApp. */
  bodyMemory: { readonly inUse: number; readonly refusals: number } = { inUse: 0, refusals: 0 };
  /** The generations kept for an SDK's retry to join and for Idempotency-Keys' re-sends (left-generations.ts), set by buildApp, read at each scrape. */
  retryMemory: { readonly size: number; readonly bytes: number; readonly keptAnswers: number; readonly joins: Readonly<Record<JoinOutcome, number>>; readonly replays: Readonly<Record<JoinOutcome, number>>; readonly evicted: Readonly<Evictions> } = {
    size: 0,
    bytes: 0,
    keptAnswers: 0,
    joins: { running: 0, finished: 0 },
    replays: { running: 0, finished: 0 },
    evicted: { left: { expired: 0, over_key_share: 0, over_total: 0 }, idempotent: { expired: 0, over_key_share: 0, over_total: 0 } },
  };
  /** Requests being answered, besides the scrape reading it (buildApp: inflight.ts), read at each scrape. */
  requestsInFlight: () => number = () => 0;
  readonly upstreamFailures: Counter<"reason">;
  readonly upstreamRefusals: Counter<"reason">;
  readonly releasedReservations: Counter;
  readonly cappedCharges: Counter<"model">;
  readonly checkpointFailures: Counter;
  readonly previousAdminToken: Counter;
  private volumeFree: Gauge | undefined;
  private ready: Gauge | undefined;

  constructor(options: { defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    this.requests = new Counter({ name: "shim_requests_total", help: "Requests answered, by route pattern and status.", labelNames: ["route", "status"], registers });
    this.duration = new Histogram({
      name: "shim_request_duration_seconds",
      help: "Time from request to the end of the response (streams: to the last event).",
      labelNames: ["route"],
      // Up past the longest a request runs in the rendered stack (a generation waited for up to
      // SHIM_UPSTREAM_TIMEOUT_MS, 595 s): with 120 s the last bucket, every long generation fell in
      // +Inf and histogram_quantile showed p95/p99 stuck at 120 s. Two buckets more per route.
      buckets: [0.001, 0.005, 0.025, 0.1, 0.5, 1, 2.5, 10, 30, 120, 300, 900],
      registers,
    });
    this.tokens = new Counter({ name: "shim_tokens_total", help: "Tokens metered, by model and kind (prompt|completion).", labelNames: ["model", "kind"], registers });
    this.credits = new Counter({ name: "shim_credits_charged_total", help: "Credits charged, by model.", labelNames: ["model"], registers });
    this.activeStreams = new Gauge({ name: "shim_active_streams", help: "Streams in flight.", registers });
    const answerMemory = () => this.answerMemory;
    new Gauge({ name: "shim_answer_memory_bytes", help: "Bytes of answers held (being read or sent) against SHIM_ANSWER_MEMORY_BYTES: non-streamed answers, and streamed events that arrive in more than one piece.", registers, collect() { this.set(answerMemory().inUse); } });
    new Counter({ name: "shim_answer_memory_waits_total", help: "Times an answer's (a streamed event's) read waited for SHIM_ANSWER_MEMORY_BYTES to have room.", registers, collect() { this.reset(); this.inc(answerMemory().waits); } });
    const bodyMemory = () => this.bodyMemory;
    new Gauge({ name: "shim_body_memory_bytes", help: "Bytes of request bodies held by requests in flight, against SHIM_BODY_MEMORY_BYTES.", registers, collect() { this.set(bodyMemory().inUse); } });
    new Counter({ name: "shim_body_memory_refusals_total", help: "Requests refused (503, before their body was read) because their body would take the bodies held past SHIM_BODY_MEMORY_BYTES.", registers, collect() { this.reset(); this.inc(bodyMemory().refusals); } });
    // Each outcome and reason exported at 0 from the start, as the upstream failures' are: a series appearing at 1 is invisible to rate().
    const retries = () => this.retryMemory;
    new Counter({ name: "shim_retry_joins_total", help: "Left generations (identical non-streamed requests whose client left) whose answer an SDK retry (x-stainless-retry-count >= 1) got whole, each once (x-joined-request-id; charged nothing more), by outcome: running (that retry waited for the generation) or finished (its answer was kept). A delivery cut is not counted; the retry that then gets it is.", labelNames: ["outcome"], registers, collect() { this.reset(); for (const outcome of JOIN_OUTCOMES) this.inc({ outcome }, retries().joins[outcome]); } });
    new Counter({ name: "shim_idempotent_replays_total", help: "Non-streamed requests with an Idempotency-Key answered whole with the answer of the key's earlier request with that Idempotency-Key and body (idempotent-replayed: true; charged nothing more), each time, by outcome: running (it waited for that request) or finished (its answer was kept).", labelNames: ["outcome"], registers, collect() { this.reset(); for (const outcome of JOIN_OUTCOMES) this.inc({ outcome }, retries().replays[outcome]); } });
    new Counter({ name: "shim_retry_answers_kept_total", help: `Answers of non-streamed requests whose client left, kept (${KEPT.minutes} minutes) for the client's retry to join.`, registers, collect() { this.reset(); this.inc(retries().keptAnswers); } });
    new Counter({ name: "shim_retry_memory_evictions_total", help: `Entries of the retry memory dropped, by kind: left (a generation whose client left, running or its answer kept, dropped before a retry joined it: that retry is generated and charged again) or idempotent (a request sent with an Idempotency-Key, running or answered, most of them to a client that stayed: only a re-send after it is generated again); and by reason: expired (kept ${KEPT.minutes} minutes), over_key_share (the key's own oldest, past its share: ${KEPT.keyEntries} entries or ${KEPT.keyMib} MiB), over_total (the oldest of the key holding the most, past ${KEPT.entries} entries or ${KEPT.mib} MiB in all).`, labelNames: ["reason", "kind"], registers, collect() { this.reset(); for (const kind of EVICTION_KINDS) for (const reason of EVICTION_REASONS) this.inc({ reason, kind }, retries().evicted[kind][reason]); } });
    new Gauge({ name: "shim_retry_memory_entries", help: `Left generations remembered for a retry to join, and requests with an Idempotency-Key: running, or their answer kept (at most ${KEPT.entries}; ${KEPT.keyEntries} a key).`, registers, collect() { this.set(retries().size); } });
    new Gauge({ name: "shim_retry_memory_bytes", help: `Bytes of answers kept for a retry to join or an Idempotency-Key's re-send (at most ${KEPT.mib} MiB; ${KEPT.keyMib} MiB a key), outside SHIM_ANSWER_MEMORY_BYTES.`, registers, collect() { this.set(retries().bytes); } });
    const inFlight = () => this.requestsInFlight();
    // Non-streamed requests waiting on the upstream (a hung one for up to SHIM_UPSTREAM_TIMEOUT_MS) show nowhere else.
    new Gauge({ name: "shim_requests_in_flight", help: "Requests being answered (admitted and not yet finished: inference, streams included, and any other route), besides the scrape itself.", registers, collect() { this.set(inFlight()); } });
    this.upstreamFailures = new Counter({ name: "shim_upstream_failures_total", help: "Upstream failures (unreachable, timed out, 5xx, refusing the shim's credentials, cut streams), by reason. Not the upstream refusing a client's request: shim_upstream_refusals_total.", labelNames: ["reason"], registers });
    // Each fixed reason is exported from the start at 0: a series that appeared at 1 with the
    // first failure was invisible to rate() and increase(), so a dead upstream's first failures
    // went unseen. (`status_<code>` reasons appear with their first failure: there is no list.)
    for (const reason of UPSTREAM_FAILURE_REASONS) this.upstreamFailures.inc({ reason }, 0);
    // Apart from the failures, so an alert on their rate is not set off by a client's mistakes.
    this.upstreamRefusals = new Counter({ name: "shim_upstream_refusals_total", help: "Requests the upstream refused as the client's own error (400, 422, a 404 naming the model, 413), relayed to the client as a 4xx, by reason.", labelNames: ["reason"], registers });
    this.releasedReservations = new Counter({ name: "shim_stale_reservations_released_total", help: "Credit holds released because their process is gone or lost its liveness lock: at start, and by the Postgres store's sweeps while serving. A request still in flight then settles without a hold (charged if the balance covers it).", registers });
    this.cappedCharges = new Counter({ name: "shim_charges_capped_total", help: "Charges capped at their hold: usage worth more than the most the request was allowed to cost.", labelNames: ["model"], registers });
    this.previousAdminToken = new Counter({ name: "shim_admin_previous_token_requests_total", help: "Admin requests let in with SHIM_ADMIN_TOKEN_PREVIOUS, the admin token being rotated out: a client (a cron job, a dashboard) still to move to the new one. Their log lines say adminToken \"previous\".", registers });
    this.checkpointFailures = new Counter({ name: "shim_sqlite_checkpoint_failures_total", help: "WAL checkpoints of the SQLite store that failed (a disk error): the WAL grows meanwhile; after a minute of failures with none completing the store fails closed.", registers });
    if (options.defaultMetrics) {
      collectDefaultMetrics({ register: this.registry });
      // prom-client's three gauges named `_total`, which promtool check metrics flags (only a
      // counter may end so): each is the sum of the labelled gauge beside it, e.g.
      // sum(nodejs_active_handles), so nothing is lost.
      for (const name of DUPLICATE_TOTAL_GAUGES) this.registry.removeSingleMetric(name);
    }
  }

  /**
   * The upstream's readiness as /ready probes it (upstream/readiness.ts): 1 ready, 0 not. The gauge
   * appears with the first probe's result, not as a 0 before any probe was made.
   */
  upstreamReady(ready: boolean): void {
    this.ready ??= new Gauge({
      name: "shim_upstream_ready",
      help: "1 when the upstream lists the configured models (and SHIM_READY_URL answers 2xx), 0 when not: /ready's upstream probe, made every SHIM_READY_PROBE_INTERVAL_MS (15 s) with or without traffic.",
      registers: [this.registry],
    });
    this.ready.set(ready ? 1 : 0);
  }

  /**
   * The SQLite store's volume's free bytes, from the statfs its room checks already make: at
   * start, then every second (sqlite-space.ts; nothing on the request path). The gauge appears
   * with the first value: a shim on Postgres has none, rather than a 0 that an alert on low free
   * space would fire on.
   */
  sqliteVolumeFree(bytes: number): void {
    this.volumeFree ??= new Gauge({
      name: "shim_sqlite_volume_free_bytes",
      help: `Bytes free (to the shim's user) on the SQLite store's volume, checked every second. The shim fails closed and exits when this and the reusable part of its own WAL fall under ${MIN_FREE_BYTES / 2 ** 20} MiB (${MIN_FREE_BYTES} bytes): alert well before.`,
      registers: [this.registry],
    });
    this.volumeFree.set(bytes);
  }
}
