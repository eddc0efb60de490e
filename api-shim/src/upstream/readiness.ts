import type { Logger } from "pino";
import type { Clock } from "../clock.ts";
import type { ShimContext } from "../context.ts";
import type { Metrics } from "../observability/metrics.ts";
import { MODEL_LIST_LIMIT, parseModelList } from "../routes/models.ts";
import { readLimited, transportCause, transportFailure } from "./upstream.ts";

/** How long an upstream readiness probe result is reused: /ready may be polled often, and the watch probes too. */
const PROBE_CACHE_MS = 2000;
/** How long each upstream probe of /ready may take: inside the 5 s its callers (wait-ready.sh) wait. */
export const PROBE_TIMEOUT_MS = 4000;

/**
 * What /ready reports of the upstream, and for the log a hint at the likely cause; `cause`: for
 * an upstream that could not be reached, the transport's code (ECONNREFUSED…).
 */
export interface Probe { ok: boolean; detail: string; hint?: string; cause?: string }

/** What the watch needs: the probe itself (probeUpstream), and where its results go. */
interface ReadinessDeps { probe: () => Promise<Probe>; clock: Clock; metrics: Metrics; logger: Logger; draining: () => boolean }

/**
 * The upstream's readiness, probed as /ready probes it, by /ready and by a timer alike: one
 * cached probe (PROBE_CACHE_MS) for both, so the timer adds at most one probe per interval per
 * replica, whatever polls /ready. Each result sets shim_upstream_ready, which an alert reads: a
 * dead model server with no traffic fails no request, so no counter of the shim's tells of it.
 * The timer never holds the process open, and stops probing once the shim drains.
 */
export class UpstreamReadiness {
  private cached: { at: number; result: Promise<Probe> } | undefined;
  private last: boolean | null = null;
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private readonly deps: ReadinessDeps;

  constructor(deps: ReadinessDeps) {
    this.deps = deps;
  }

  /** The cached probe, or a fresh one (`fresh` is told of it: /ready logs its hint with its request's id). */
  probe(fresh?: (result: Promise<Probe>) => void): Promise<Probe> {
    const now = this.deps.clock.monotonic();
    if (this.cached && now - this.cached.at <= PROBE_CACHE_MS) return this.cached.result;
    const result = this.deps.probe();
    this.cached = { at: now, result };
    fresh?.(result); // first: /ready's line with its request's id comes before the watch's
    // Only the newest probe's answer counts: one that hung past the cache (its timeout is twice
    // that) and ended after a newer one must not set the gauge back, nor log a change that is none.
    void result.then((r) => this.cached?.result === result && this.seen(r), () => {});
    return result;
  }

  /** Probes every `intervalMs` (0: never) until stop() or the drain; the first probe one interval after the start. */
  start(intervalMs: number): void {
    if (intervalMs <= 0 || this.running) return;
    this.running = true;
    const tick = async () => {
      // Shutting down: /ready says not ready anyway, and the upstream's connections are being closed.
      if (!this.running || this.deps.draining()) return void (this.running = false);
      await this.probe();
      if (this.running && !this.deps.draining()) this.timer = setTimeout(tick, intervalMs).unref();
    };
    this.timer = setTimeout(tick, intervalMs).unref();
  }

  stop(): void {
    this.running = false;
    clearTimeout(this.timer);
  }

  /** The gauge follows every result; the log says only when it changes (not every interval while vLLM loads). */
  private seen(r: Probe): void {
    this.deps.metrics.upstreamReady(r.ok);
    const before = this.last;
    this.last = r.ok;
    if (before === r.ok) return;
    if (r.ok) {
      if (before === false) this.deps.logger.info("the upstream is ready: shim_upstream_ready is 1");
    } else {
      this.deps.logger.warn({ upstream: r.detail, cause: r.cause }, `the upstream is not ready (${r.detail}): /ready answers 503 and shim_upstream_ready is 0 until it is${r.hint ? `; ${r.hint}` : ""}`);
    }
  }
}

/**
 * Both probes at once, each within PROBE_TIMEOUT_MS: /ready answers within that (its callers wait
 * 5 s), not after the two one after the other. Also `npm run shim`'s check at start.
 */
export async function probeUpstream(ctx: ShimContext): Promise<Probe> {
  const timeoutMs = Math.min(ctx.config.upstreamTimeoutMs, PROBE_TIMEOUT_MS);
  const [models, server] = await Promise.all([probeModels(ctx, timeoutMs), ctx.config.readyUrl === null ? null : probeReadyUrl(ctx.config.readyUrl, timeoutMs)]);
  return !models.ok || server === null ? models : server;
}

async function probeReadyUrl(url: string, timeoutMs: number): Promise<Probe> {
  const signal = AbortSignal.timeout(timeoutMs);
  try {
    const res = await fetch(url, { signal });
    await res.body?.cancel();
    return res.ok ? { ok: true, detail: "ok" } : { ok: false, detail: `model server: status ${res.status}` };
  } catch (e) {
    if (signal.aborted) return { ok: false, detail: "model server: timed out", hint: `readiness probe: SHIM_READY_URL timed out after ${timeoutMs} ms` };
    return { ok: false, detail: "model server: unreachable", hint: `readiness probe: SHIM_READY_URL unreachable (${transportCause(e)})` };
  }
}

async function probeModels(ctx: ShimContext, timeoutMs: number): Promise<Probe> {
  const signal = AbortSignal.timeout(timeoutMs);
  try {
    const res = await ctx.upstream.request({ method: "GET", path: "/models", control: true, signal });
    const { text } = await readLimited(res.body, MODEL_LIST_LIMIT);
    // A 404 for the model list: the upstream URL most likely lacks its /v1.
    if (res.status === 404) return { ok: false, detail: "status 404", hint: "the upstream answered 404 for <SHIM_UPSTREAM_URL>/models: SHIM_UPSTREAM_URL should be its base URL including /v1" };
    if (res.status === 401 || res.status === 403) return { ok: false, detail: `status ${res.status}`, hint: `the upstream refused the shim's credentials (${res.status}) for <SHIM_UPSTREAM_URL>/models: set SHIM_UPSTREAM_API_KEY to the key it expects` };
    if (res.status !== 200) return { ok: false, detail: `status ${res.status}` };
    const list = parseModelList(text);
    if (list === null) return { ok: false, detail: "invalid model list" };
    const ids = new Set(list.entries.map((m) => m.id));
    const missing = ctx.config.models ? [...ctx.config.models.keys()].filter((m) => !ids.has(m)) : [];
    return missing.length === 0 ? { ok: true, detail: "ok" } : { ok: false, detail: `models not served yet: ${missing.join(", ")}` };
  } catch (e) {
    // A deadline that ran out (the probe's own, or the upstream's timeouts) is no sign that the
    // upstream cannot be reached: "unreachable (UND_ERR_ABORTED)" sent operators looking at a
    // LiteLLM that was up, only slow or busy.
    if (signal.aborted) return { ok: false, detail: "timed out", hint: `readiness probe: <SHIM_UPSTREAM_URL>/models timed out after ${timeoutMs} ms` };
    if (transportFailure(e) === "upstream_timeout") return { ok: false, detail: "timed out", hint: `readiness probe: <SHIM_UPSTREAM_URL>/models timed out (${transportCause(e)})` };
    const cause = transportCause(e);
    return { ok: false, detail: "unreachable", hint: `readiness probe: <SHIM_UPSTREAM_URL>/models unreachable (${cause})`, cause };
  }
}
