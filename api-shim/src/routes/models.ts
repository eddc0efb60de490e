import type { FastifyInstance } from "fastify";
import { authHeaders } from "../auth.ts";
import type { ShimContext } from "../context.ts";
import { ShimError } from "../errors.ts";
import { creditsNumber } from "../money.ts";
import { transportError, upstreamStatusError, readLimited } from "../upstream.ts";

/** The most of an upstream model list read (its size is the upstream's, not a client's). */
export const MODEL_LIST_LIMIT = 16 * 1024 * 1024;

/**
 * GET /v1/models: the upstream's list, filtered to the configured models and the key's
 * allow-list. Authenticated (it counts against the key's requests/min), charged nothing.
 */
export function modelsRoutes(app: FastifyInstance, ctx: ShimContext): void {
  app.get("/v1/models", async (request, reply) => {
    const allow = request.auth!.key.models;
    let res;
    let text: string;
    // One deadline for the whole list, body included (the headers timeout alone would let a
    // trickling body run on); running out of it is a timeout (504), like the headers timeout.
    const deadline = AbortSignal.timeout(ctx.config.upstreamTimeoutMs);
    try {
      res = await ctx.upstream.request({ method: "GET", path: "/models", requestId: request.id, signal: deadline });
      text = (await readLimited(res.body, MODEL_LIST_LIMIT)).text;
    } catch (e) {
      throw deadline.aborted ? new ShimError("upstream_timeout") : transportError(e);
    }
    // A GET with nothing in it is never the client's fault: whatever the upstream says, it is the
    // upstream's failure (busy: 503, slow: 504), and none of its message reaches the client.
    if (res.status !== 200) {
      if ([408, 429, 503, 504].includes(res.status)) throw upstreamStatusError(res.status, "", undefined, res.headers["retry-after"]);
      throw new ShimError("upstream_error");
    }
    let list: { object?: unknown; data?: unknown[] };
    try {
      list = JSON.parse(text) as typeof list;
      if (!Array.isArray(list.data)) throw new Error("no data");
    } catch {
      throw upstreamStatusError(502, "", undefined, undefined);
    }
    const configured = ctx.config.models;
    // Entries that are not models are skipped, and an id listed twice (LiteLLM has done so) is shown once.
    const seen = new Set<string>();
    const data = list.data!.filter((m) => {
      const id = m !== null && typeof m === "object" ? (m as { id?: unknown }).id : undefined;
      if (typeof id !== "string" || seen.has(id) || (configured && !configured.has(id)) || (allow && !allow.includes(id))) return false;
      seen.add(id);
      return true;
    });
    const key = request.auth!.key;
    // Free, and says so the way every other answer does (the contract's credit members).
    return reply.headers(authHeaders(ctx, request)).type("application/json").send({ ...list, data, credits_charged: 0, credits_remaining: creditsNumber(key.balance - key.held) });
  });
}
