import type { FastifyRequest } from "fastify";
import type { ShimContext } from "../context.ts";
import type { InferenceKind } from "../requests/inference-request.ts";
import { loggedModel } from "../observability/redaction.ts";
import { storedUsage } from "../metering/usage-json.ts";
import { creditsNumber } from "./money.ts";
import type { Usage } from "./pricing.ts";
import type { CacheLifetime } from "./cache-writes.ts";
import { cachedTokensCharged } from "./cache-reads.ts";

/**
 * The end of a request's money: turns its hold into a charge exactly once. Called with the
 * upstream's usage (or what a cut-short stream delivered), or with null when nothing was
 * generated (upstream failure: the hold is released and a usage row with cost 0 is written).
 */
export class Settlement {
  private readonly ctx: ShimContext;
  private readonly request: FastifyRequest;
  readonly reservationId: string;
  readonly hold: number;
  private readonly kind: InferenceKind;
  private readonly model: string;
  private readonly batch: boolean;
  /** A stream (its failures are told differently: routes/inference-failures.ts). */
  readonly stream: boolean;
  /** Tokens taken from the key's tokens/min bucket at admission (the prompt estimate). */
  private readonly estimate: number;
  /** The prompt-cache lifetime the request asked for: the rate of cache writes reported without their lifetime. */
  private readonly cacheLifetime: CacheLifetime;
  private result: Promise<{ cost: number; available: number }> | undefined;

  constructor(init: { ctx: ShimContext; request: FastifyRequest; reservationId: string; hold: number; kind: InferenceKind; model: string; batch: boolean; stream: boolean; estimate: number; cacheLifetime?: CacheLifetime }) {
    this.ctx = init.ctx;
    this.request = init.request;
    this.reservationId = init.reservationId;
    this.hold = init.hold;
    this.kind = init.kind;
    this.model = init.model;
    this.batch = init.batch;
    this.stream = init.stream;
    this.estimate = init.estimate;
    this.cacheLifetime = init.cacheLifetime ?? null;
  }

  get settled(): boolean {
    return this.result !== undefined;
  }

  /** Resolves with what the key was charged (`cost`: the store's answer, which the client is told and the metrics count) and what it has left. */
  settle(status: number, usage: Usage | null): Promise<{ cost: number; available: number }> {
    this.result ??= this.run(status, usage);
    return this.result;
  }

  private async run(status: number, usage: Usage | null): Promise<{ cost: number; available: number }> {
    const { ctx, request } = this;
    const keyId = request.auth!.key.id;
    const u = storedUsage(usage ?? { promptTokens: 0, completionTokens: 0 });
    const { cost, capped } = usage === null ? { cost: 0, capped: false } : ctx.pricer.cost(this.model, this.batch, u, this.hold, this.cacheLifetime);
    const tokens = u.promptTokens + u.completionTokens;
    // Correct the tokens/min bucket from the admission estimate to what was really used.
    request.auth!.buckets.tokens?.settleEstimate(this.estimate, tokens, ctx.clock.monotonic());
    const { available, charged } = await ctx.store.settle({
      reservationId: this.reservationId,
      keyId,
      hold: this.hold,
      cost,
      usage: {
        requestId: request.id, keyId, at: ctx.clock.now(), route: this.kind, model: this.model, status,
        promptTokens: u.promptTokens, completionTokens: u.completionTokens, cost, stream: this.stream,
        ms: Math.round(performance.now() - request.shim.start), served: usage !== null,
        priceId: ctx.pricer.price(this.model).id, batch: this.batch, cachedTokens: cachedTokensCharged(u.promptTokens, u.cachedTokens ?? 0),
      },
    });
    // Requests of the key refused while this hold stood may now be covered (inference.ts).
    ctx.holdsSettled.wake(keyId, available);
    request.shim.tokens = tokens;
    request.shim.cost = charged;
    request.shim.available = available;
    // Metrics label a model by its configured name; without a model list, names are the
    // clients' own choice, so they share one label rather than grow the metric without bound.
    const label = ctx.config.models ? this.model : "unlisted";
    if (u.promptTokens > 0) ctx.metrics.tokens.inc({ model: label, kind: "prompt" }, u.promptTokens);
    if (u.completionTokens > 0) ctx.metrics.tokens.inc({ model: label, kind: "completion" }, u.completionTokens);
    if (charged > 0) ctx.metrics.credits.inc({ model: label }, creditsNumber(charged));
    if (charged !== cost) {
      // Its hold was released before it settled (Postgres: a sweep after this replica's liveness
      // session was cut for longer than the grace): it was charged what the key's balance still
      // covered (store.ts, settle).
      request.log.warn({ reqId: request.id, model: loggedModel(this.model, ctx.hideSecrets, ctx.config.models), cost: creditsNumber(cost), charged: creditsNumber(charged) }, "hold released before the settlement: charged what the balance covered");
    }
    if (capped) {
      // The usage was worth more than the hold, the most the request was allowed to cost: the
      // key is charged the hold (its balance must not go below zero), and the operator should
      // know that a hold bound did not hold (docs/api-shim/money.md, Settle).
      ctx.metrics.cappedCharges.inc({ model: label });
      request.log.warn({ reqId: request.id, model: loggedModel(this.model, ctx.hideSecrets, ctx.config.models), promptTokens: u.promptTokens, completionTokens: u.completionTokens, hold: creditsNumber(this.hold) }, "charge capped at the hold");
    }
    return { cost: charged, available };
  }
}
