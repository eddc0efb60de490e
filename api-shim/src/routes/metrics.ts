import type { FastifyInstance } from "fastify";
import { PUBLIC_ROUTE, type ShimContext } from "../context.ts";

/** GET /metrics for Prometheus. Not published by nginx; scraped on the private network. */
export function metricsRoutes(app: FastifyInstance, ctx: ShimContext): void {
  app.get("/metrics", { config: PUBLIC_ROUTE }, async (_request, reply) => {
    const text = await ctx.metrics.registry.metrics();
    return reply.type(ctx.metrics.registry.contentType).send(text);
  });
}
