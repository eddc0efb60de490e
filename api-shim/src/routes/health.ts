import type { FastifyInstance } from "fastify";
import { PUBLIC_ROUTE, type ShimContext } from "../context.ts";
import { within } from "../promises.ts";
import { readLimited, transportCause, transportFailure } from "../upstream/upstream.ts";
import { MODEL_LIST_LIMIT, parseModelList } from "./models.ts";

/** How long an upstream readiness probe result is reused: /ready may be polled often. */
const PROBE_CACHE_MS = 2000;
/** How long each upstream probe of /ready may take: inside the 5 s its callers (wait-ready.sh) wait. */
const PROBE_TIMEOUT_MS = 4000;

/**
 * GET /health: the process answers (no dependencies). GET /ready: the store answers, the
 * upstream lists the configured models and, when SHIM_READY_URL is set, that URL answers 2xx;
 * 503 says which part is not ready. The extra URL exists because a proxy upstream (LiteLLM)
 * lists its configured models whether or not the model server behind it is up.
 */
export function healthRoutes(app: FastifyInstance, ctx: ShimContext): void {
  let probe: { at: number; result: Promise<Probe> } | undefined;

  app.get("/health", { config: PUBLIC_ROUTE }, async (_request, reply) => reply.type("application/json").send('{"status":"ok"}'));

  app.get("/ready", { config: PUBLIC_ROUTE }, async (request, reply) => {
    // Shutting down: not ready, whatever the store and the upstream would say (no waiting on them).
    if (ctx.inflight.draining) return reply.code(503).send({ status: "not_ready", draining: true });
    // The store is pinged alongside the upstream probes, within the same bound.
    const pinged = within(ctx.store.ping().then(() => "ok", () => "unavailable"), PROBE_TIMEOUT_MS, "unavailable");
    const now = ctx.clock.monotonic();
    if (!probe || now - probe.at > PROBE_CACHE_MS) {
      probe = { at: now, result: probeUpstream(ctx) };
      // The operator's hint goes to the log: /ready is public, and says only what failed. With
      // the request's id, as every line written while serving a request (request.log has none).
      void probe.result.then((r) => r.hint && request.log.warn({ reqId: request.id }, r.hint));
    }
    const [store, upstream] = await Promise.all([pinged, probe.result]);
    const ready = store === "ok" && upstream.ok && !ctx.inflight.draining;
    return reply.code(ready ? 200 : 503).send({
      status: ready ? "ready" : "not_ready",
      store,
      upstream: upstream.detail,
      ...(ctx.inflight.draining ? { draining: true } : {}),
    });
  });
}

/**
 * What /ready reports of the upstream, and for the log a hint at the likely cause; `cause`: for
 * an upstream that could not be reached, the transport's code (ECONNREFUSED…).
 */
export interface Probe { ok: boolean; detail: string; hint?: string; cause?: string }

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
