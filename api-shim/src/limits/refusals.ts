import type { FastifyRequest } from "fastify";
import type { ShimContext } from "../context.ts";
import { retryAfterSeconds, ShimError } from "../errors.ts";
import type { ReportsBusyError } from "../store/store.ts";
import { rateLimitHeaders } from "./rate-limit.ts";

/**
 * The limits' refusals (429 rate_limit_exceeded, with Retry-After and the key's rate-limit
 * headers): a spent budget, a key at its cap on requests in flight, too many usage reports at
 * once. Raised by the auth hook, at admission and by the routes alike.
 */

type Auth = NonNullable<FastifyRequest["auth"]>;

/** The key's tokens/min budget admits nothing for `retryMs`: refused before any work. */
export function tokensSpent(ctx: ShimContext, auth: Auth, retryMs: number): ShimError {
  return rateLimited(retryMs, giveBackRequest(ctx, auth, true));
}

/** A key's tier caps its requests in flight, and that many are (past the grace placeFreed waits): retry when one ends. */
export function tooManyInFlight(ctx: ShimContext, auth: Auth, limit: number): ShimError {
  // The wire code is OpenAI's rate_limit_exceeded; the log says which limit.
  return rateLimited(1000, giveBackRequest(ctx, auth, true), { message: `Too many requests in flight for this key: its tier allows ${limit} at once. Retry when one has finished.`, logCode: "too_many_in_flight" });
}

/**
 * Too many usage reports wait already (ReportsBusyError): the askers' own rate, refused before
 * any work, so a 429 to retry shortly (the SDKs do, after Retry-After), logged as reports_busy.
 * `asker`: the key that asked (null: the operator, on the admin API), whose line was full unless
 * the shim's was.
 */
export function reportsBusy(ctx: ShimContext, request: FastifyRequest, busy: ReportsBusyError, asker: string | null): ShimError {
  const headers = request.auth ? giveBackRequest(ctx, request.auth, false) : {};
  const who = busy.scope === "shim" ? "for this server (all keys' together)" : asker === null ? "from the admin API" : "for this key";
  return rateLimited(1000, headers, { message: `Too many usage reports at once ${who}: wait for the earlier ones, then retry.`, logCode: "reports_busy" });
}

/**
 * A request refused before any work gives back the request the auth hook took from the
 * requests/min budget, so a client retrying while it waits (for a place in flight, for the
 * tokens budget) does not use that budget up. Returns the key's rate-limit headers as they then
 * stand, for the refusal.
 */
export function giveBackRequest(ctx: ShimContext, auth: Auth, inference: boolean): Record<string, string> {
  const mono = ctx.clock.monotonic();
  auth.buckets.requests?.adjust(-1, mono);
  return rateLimitHeaders(auth.buckets, mono, ctx.clock.now(), inference);
}

export function rateLimited(retryMs: number, headers: Record<string, string>, why: { message?: string; logCode?: string } = {}): ShimError {
  const seconds = retryAfterSeconds(retryMs);
  return new ShimError("rate_limit_exceeded", {
    message: why.message ?? `Rate limit exceeded. Try again in ${seconds} ${seconds === 1 ? "second" : "seconds"}.`,
    extra: { retry_after: seconds },
    headers: { ...headers, "retry-after": String(seconds) },
    logCode: why.logCode,
  });
}
