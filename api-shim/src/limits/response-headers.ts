import type { FastifyReply, FastifyRequest } from "fastify";
import { isInference, type ShimContext } from "../context.ts";
import { formatCredits } from "../money/money.ts";
import { rateLimitHeaders } from "./rate-limit.ts";

/**
 * The headers of an authenticated response: both rate-limit families (as they stand when the
 * response is written, so the tokens figures include this request's correction) and the credit
 * figures, and the schema keywords removed (x-schema-relaxed). Computed once per response rather
 * than set one by one along the way.
 */
export function authHeaders(ctx: ShimContext, request: FastifyRequest, charged: number | null = 0, available?: number): Record<string, string> {
  const auth = request.auth;
  if (!auth) return {};
  const h = rateLimitHeaders(auth.buckets, ctx.clock.monotonic(), ctx.clock.now(), isInference(request));
  // A tier's cap on requests in flight, so a client sizes its pool before it meets the 429 (a
  // batch job read it from nothing but that 429's message). No cap, no header, as for rpm/tpm.
  if (auth.limits.concurrency !== null) h["x-ratelimit-limit-concurrency"] = String(auth.limits.concurrency);
  if (charged !== null) h["x-credits-charged"] = formatCredits(charged); // null: not known yet (streams)
  // After a settlement, its figure (an upstream's refusal may come minutes after the key was
  // read, other requests settled since); before one, the key as read at authentication.
  h["x-credits-remaining"] = formatCredits(available ?? request.shim.available ?? auth.key.balance - auth.key.held);
  // The schema keywords removed before the request was forwarded (requests/schema-maxima.ts).
  if (request.shim.schemaRelaxed !== null) h["x-schema-relaxed"] = request.shim.schemaRelaxed;
  return h;
}

/** Header names spelled as seed 004 spells them, by their lower-case form. */
const SEED_CASE = new Map(["X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"].map((name) => [name.toLowerCase(), name]));

/**
 * Gives an answer Fastify writes the seed's case for the headers it spells (`X-RateLimit-Limit`),
 * as the relayed answers have (they write their own head with authHeaders' names). Fastify keeps a
 * reply's headers by lower-cased name and writes them so; Node's setHeader keeps a name's case,
 * and the writeHead Fastify makes adds its own headers to those. From the onSend hook, so every
 * answer Fastify sends (200s, refusals, errors) has it; the same values, only the names' case.
 */
export function seedHeaderCase(reply: FastifyReply): void {
  for (const [lower, name] of SEED_CASE) {
    const value = reply.getHeader(lower);
    if (value === undefined) continue;
    reply.removeHeader(lower);
    reply.raw.setHeader(name, value);
  }
}
