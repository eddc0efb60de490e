import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { reportsBusy } from "../limits/refusals.ts";
import { authHeaders } from "../limits/response-headers.ts";
import { batchAsked } from "../requests/batch-query.ts";
import type { ShimContext } from "../context.ts";
import { onlyKnown } from "../requests/known-members.ts";
import { creditsNumber } from "../money/money.ts";
import { untilLeftOrCut } from "../client/client-left.ts";
import { parsePeriod, showPeriod } from "../requests/period.ts";
import { ReportsBusyError, type UsageGroup, type UsageQuery } from "../store/store.ts";
import { type UsageBatches, usageBatches } from "../store/usage-batches.ts";
import type { CreditsLine, CreditsQuery } from "../store/credits-statement.ts";
import type { RequestRow, RequestsQuery } from "../store/request-rows.ts";

/** GET /v1/usage: the calling key's usage in seed 004's shape, plus its remaining credits and its expiry. */
export function usageRoutes(app: FastifyInstance, ctx: ShimContext): void {
  app.get("/v1/usage", async (request, reply) => {
    const key = request.auth!.key;
    // Seed 004's report names its period start and end; asked for as `from` and `to`, as on
    // /admin/usage: `?start=` would otherwise answer with the current month. `batch` (sent with
    // every request by a client after the batch price) is checked as on inference, then ignored.
    const period = parsePeriod(onlyKnown(request.query as object, ["from", "to", "batch"], "query parameter"), ctx.clock.now());
    batchAsked(request);
    const groups = await usageReport(ctx, request, reply, { keyId: key.id, from: period.from, to: period.to, group: "model" });
    // Null prototype: model names come from clients ("__proto__" must stay a plain key).
    const models: Record<string, { requests: number; tokens: number; cost: number }> = Object.create(null);
    let requests = 0;
    let tokens = 0;
    let cost = 0;
    for (const g of groups) {
      const t = g.promptTokens + g.completionTokens;
      models[g.group] = { requests: g.requests, tokens: t, cost: creditsNumber(g.cost) };
      requests += g.requests;
      tokens += t;
      cost += g.cost;
    }
    return reply.headers(authHeaders(ctx, request)).send({
      object: "usage",
      period: showPeriod(period),
      usage: { total_requests: requests, total_tokens: tokens, total_cost: creditsNumber(cost), models },
      credits_charged: 0,
      credits_remaining: creditsNumber(key.balance - key.held),
      // When the key stops working, as LiteLLM's /key/info tells its holder `expires`: an expired
      // key's 401 is a revoked or unknown key's, so this is where its holder can see it coming.
      // Not its name nor its tier's: those are the operator's words (the 429s give figures only).
      key: { id: key.id, expires_at: key.expiresAt === null ? null : new Date(key.expiresAt).toISOString() },
    });
  });
}

/**
 * A usage report for an HTTP request (/v1/usage, /admin/usage): given up when its client leaves
 * or the drain is cut (untilLeftOrCut), and a 429 when too many wait already (reportsBusy). Its
 * asker, whose line it waits in, is the request's: the key on /v1/usage, the operator (null) on
 * the admin API, which authenticates no key.
 */
export function usageReport(ctx: ShimContext, request: FastifyRequest, reply: FastifyReply, query: Omit<UsageQuery, "signal" | "asker">): Promise<UsageGroup[]> {
  return report(ctx, request, reply, query, (q) => ctx.store.usage(q));
}

/**
 * usageReport in batches (UsageQuery.batched), for a report too large to hold and format at once
 * (/admin/usage); a store without batches answers with its rows as one.
 */
export function usageReportBatches(ctx: ShimContext, request: FastifyRequest, reply: FastifyReply, query: Omit<UsageQuery, "signal" | "asker">): Promise<UsageBatches> {
  return report(ctx, request, reply, query, (q) => ctx.store.usage({ ...q, batched: true }).then(usageBatches));
}

/**
 * A credits statement (GET /admin/credits) as a usage report is asked: in its asker's line, given
 * up when its client leaves, a 429 when too many wait.
 */
export function creditsReport(ctx: ShimContext, request: FastifyRequest, reply: FastifyReply, query: Omit<CreditsQuery, "signal" | "asker">): Promise<CreditsLine[]> {
  return report(ctx, request, reply, query, (q) => ctx.store.credits(q));
}

/** A request's ledger rows, or a key's requests (request-rows.ts), as a usage report is asked. */
export function requestsReport(ctx: ShimContext, request: FastifyRequest, reply: FastifyReply, query: Omit<RequestsQuery, "signal" | "asker">): Promise<UsageBatches<RequestRow>> {
  return report(ctx, request, reply, query, (q) => ctx.store.requests(q).then(usageBatches));
}

async function report<Q extends object, T>(ctx: ShimContext, request: FastifyRequest, reply: FastifyReply, query: Q, ask: (q: Q & { asker: string | null; signal: AbortSignal }) => Promise<T>): Promise<T> {
  const asker = request.auth?.key.id ?? null;
  try {
    return await untilLeftOrCut(request, reply, (signal) => ask({ ...query, asker, signal }));
  } catch (e) {
    throw e instanceof ReportsBusyError ? reportsBusy(ctx, request, e, asker) : e;
  }
}
