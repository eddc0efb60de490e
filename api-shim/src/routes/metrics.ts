import type { FastifyInstance } from "fastify";
import { PUBLIC_ROUTE, type ShimContext } from "../context.ts";

/**
 * GET /metrics for Prometheus, without a token: nginx publishes it to `adminCidrs` only (as
 * /admin), and it is scraped on the private network. It holds no keys, tokens or paths.
 */
export function metricsRoutes(app: FastifyInstance, ctx: ShimContext): void {
  app.get("/metrics", { config: PUBLIC_ROUTE }, async (_request, reply) => {
    const text = await ctx.metrics.registry.metrics();
    return reply.type(ctx.metrics.registry.contentType).send(text);
  });
}
