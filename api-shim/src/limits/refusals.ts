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

/**
 * The key's requests/min budget is spent (`tokensToo`: on an inference route, its tokens/min
 * budget too, which the Retry-After waits for as well). The tier's figures, not its name: tier
 * names are the operator's, the numbers are what the client can act on.
 */
export function requestsSpent(retryMs: number, headers: Record<string, string>, limits: Auth["limits"], tokensToo: boolean): ShimError {
  const tokens = tokensToo ? `, and its tokens per minute (${limits.tpm}) are spent too` : "";
  return rateLimited(retryMs, headers, { detail: `Requests per minute: this key's tier allows ${limits.rpm}${tokens}.` });
}

/**
 * What a request refused at admission counted against tokens/min: its estimate, and, when no
 * limit the client sent bounds its outputs (the model's ceiling made the count), that limit's
 * name and the count of the outputs it left unbounded.
 */
export interface TokensCounted {
  estimate: number;
  /** `perOutput`: the model's ceiling on each of the request's `outputs` (n × prompts). */
  unbounded: { param: "max_tokens" | "max_output_tokens"; perOutput: number; outputs: number } | null;
}

/**
 * The key's tokens/min budget admits nothing for `retryMs`: refused before any work, before the
 * body is read (`counted` undefined) or at admission with this request's count. Why a burst
 * without max_tokens is refused is otherwise a puzzle: each such request counts the model's
 * whole context (docs/decisions.md), which the message says with the remedy.
 */
export function tokensSpent(ctx: ShimContext, auth: Auth, retryMs: number, counted?: TokensCounted, embeddings = false): ShimError {
  const counts = `Tokens per minute: this key's tier allows ${auth.limits.tpm}, and its recent requests have counted them all.`;
  const spent = `${counts} A request counts its prompt and the most it may generate`;
  let detail: string;
  // Before the body is read only the route is known. An embeddings request generates nothing:
  // told to set max_tokens, a batch ingestion (LangChain's embedDocuments, the AI SDK's
  // embedMany: hundreds of inputs a request) was sent after a member it does not take.
  if (counted === undefined && embeddings) detail = `${counts} An embeddings request counts its inputs' tokens: send fewer inputs per request, or wait for the Retry-After.`;
  // Else the route's limit is not read yet: both names, and the remedy all the same (a burst
  // without max_tokens is refused here, by the budget the first ones spent).
  else if (counted === undefined) detail = `${spent} (max_tokens × n; without max_tokens, the model's whole context). Set max_tokens (max_output_tokens on /v1/responses) to what you need.`;
  else if (counted.unbounded === null) detail = `${spent}: this one, ${counted.estimate}.`;
  else {
    const { param, perOutput, outputs } = counted.unbounded;
    const each = outputs === 1 ? "it" : `each of its ${outputs} outputs`;
    detail = `${spent}: this one, ${counted.estimate}, as without ${param} ${each} may generate up to ${perOutput} (the model's limit). Set ${param} to what you need.`;
  }
  return rateLimited(retryMs, giveBackRequest(ctx, auth, true), { detail });
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
 * stand, for the refusal. Not for a retry let past the hook's checks to join (`keepsRequest`): its
 * body was read and parsed, and only requests/min then bounds how many such bodies a key has parsed.
 */
export function giveBackRequest(ctx: ShimContext, auth: Auth, inference: boolean): Record<string, string> {
  const mono = ctx.clock.monotonic();
  if (!auth.keepsRequest) auth.buckets.requests?.adjust(-1, mono);
  return rateLimitHeaders(auth.buckets, mono, ctx.clock.now(), inference);
}

/**
 * A 429 whose message is `why.message`, or seed 004's sentence word for word (clients may match
 * it) followed by `why.detail`, which says which limit refused and what to do about it.
 */
export function rateLimited(retryMs: number, headers: Record<string, string>, why: { message?: string; detail?: string; logCode?: string } = {}): ShimError {
  const seconds = retryAfterSeconds(retryMs);
  const seed = `Rate limit exceeded. Try again in ${seconds} ${seconds === 1 ? "second" : "seconds"}.`;
  return new ShimError("rate_limit_exceeded", {
    message: why.message ?? (why.detail === undefined ? seed : `${seed} ${why.detail}`),
    extra: { retry_after: seconds },
    headers: { ...headers, "retry-after": String(seconds) },
    logCode: why.logCode,
  });
}
