import type { FastifyInstance } from "fastify";
import { PUBLIC_ROUTE, type ShimContext } from "../context.ts";
import { within } from "../promises.ts";
import { PROBE_TIMEOUT_MS } from "../upstream/readiness.ts";

/**
 * GET /health: the process answers (no dependencies). GET /ready: the store answers, the
 * upstream lists the configured models and, when SHIM_READY_URL is set, that URL answers 2xx;
 * 503 says which part is not ready. The extra URL exists because a proxy upstream (LiteLLM)
 * lists its configured models whether or not the model server behind it is up.
 */
export function healthRoutes(app: FastifyInstance, ctx: ShimContext): void {
  app.get("/health", { config: PUBLIC_ROUTE }, async (_request, reply) => reply.type("application/json").send('{"status":"ok"}'));

  app.get("/ready", { config: PUBLIC_ROUTE }, async (request, reply) => {
    // Shutting down: not ready, whatever the store and the upstream would say (no waiting on them).
    if (ctx.inflight.draining) return reply.code(503).send({ status: "not_ready", draining: true });
    // The store is pinged alongside the upstream probes, within the same bound.
    const pinged = within(ctx.store.ping().then(() => "ok", () => "unavailable"), PROBE_TIMEOUT_MS, "unavailable");
    // The probe the readiness watch makes too (upstream/readiness.ts), cached for both.
    // The operator's hint goes to the log: /ready is public, and says only what failed. With
    // the request's id, as every line written while serving a request (request.log has none).
    const probe = ctx.readiness.probe((fresh) => void fresh.then((r) => r.hint && request.log.warn({ reqId: request.id }, r.hint)));
    const [store, upstream] = await Promise.all([pinged, probe]);
    const ready = store === "ok" && upstream.ok && !ctx.inflight.draining;
    return reply.code(ready ? 200 : 503).send({
      status: ready ? "ready" : "not_ready",
      store,
      upstream: upstream.detail,
      ...(ctx.inflight.draining ? { draining: true } : {}),
    });
  });
}

