import type { FastifyReply, FastifyRequest } from "fastify";
import { isInference, type KeyRefusal, type ShimContext } from "../context.ts";
import { ShimError } from "../errors.ts";
import { bearerToken, parseKeyId, secretsEqual, verifyKey } from "./keys.ts";
import { type IpScope, rateLimitHeaders, tokensWait } from "../limits/rate-limit.ts";
import { rateLimited, requestsSpent, tokensSpent, tooManyInFlight } from "../limits/refusals.ts";
import { ClientLeftError, type KeyRecord, keyIsLive } from "../store/store.ts";
import { placeFreed } from "../limits/key-waits.ts";
import { urlPath } from "./url-path.ts";
import { firstTry, mayJoin } from "../limits/left-generations.ts";

/**
 * The onRequest hook: admin token for /admin/*, an API key for everything else. A request that
 * presents neither a valid key nor a valid admin token spends from its client IP's bucket first,
 * so guessing keys is throttled like any other unauthenticated traffic.
 */
export function authHook(ctx: ShimContext) {
  return async function authenticate(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    // Probes and scrapes (routes registered with PUBLIC_ROUTE) answer without authentication and
    // without the per-IP limit. The router has matched the route already, so every spelling of
    // it (`/metrics/`, `/metrics?x`) gets the same rule.
    if (request.routeOptions.config.public === true) return;
    const token = bearerToken(request.headers.authorization);

    if (isAdminRequest(request)) {
      // The token is compared first and the right one gets in, as a right API key does: only
      // failures spend the address's budget and are refused (429) once it is spent. Refusing the
      // address before comparing let anyone sharing it (a venue's NAT, which adminCidrs allows)
      // lock the operator out with 60 wrong tokens a minute. Guessing at full speed, told by
      // the 200, is left to the token's length (at least 16 characters, 64 bits as hex digits;
      // the Pulumi program makes 48 letters and digits) and to adminCidrs, which nginx keeps
      // /admin to. Failed admin tokens have a budget of their own, so failed API keys do not
      // spend it.
      const which = token === undefined ? undefined : adminTokenUsed(ctx, token);
      if (which === "current") return;
      if (which === "previous") return previousTokenUsed(ctx, request, reply);
      throttleUnauthenticated(ctx, request, "admin");
      throw new ShimError("invalid_admin_token");
    }

    const id = token === undefined ? undefined : parseKeyId(token);
    const key = id === undefined ? undefined : await ctx.store.getKey(id);
    const now = ctx.clock.now();
    const refused = keyRefusal(token, id, key, now);
    if (refused !== undefined) {
      request.keyRefusal = refused;
      throttleUnauthenticated(ctx, request);
      throw new ShimError("invalid_api_key");
    }
    if (key === undefined) throw new ShimError("invalid_api_key"); // keyRefusal said so already
    // A key whose tier was taken out of the configuration since (server.ts warns at start).
    const limits = ctx.config.tiers.get(key.tier) ?? ctx.config.tiers.get(ctx.config.defaultTier)!;
    const buckets = ctx.limiter.forKey(key.id, limits);
    request.auth = { key, buckets, limits };
    // A drain answers inference 503 (another replica, or this one restarted, will serve it)
    // before any limit is looked at: the key's place in flight may be a request being drained.
    const inference = isInference(request);
    if (inference && ctx.inflight.draining) throw ctx.inflight.refusal();
    const mono = ctx.clock.monotonic();
    // An inference request is admitted only while the tokens/min budget is positive too: a
    // requests/min refusal says to wait for both, or the SDKs' retry (after exactly Retry-After,
    // up to a minute) is refused again, by the tokens budget.
    const wait = tokensWait(buckets, mono, inference);
    if (buckets.requests) {
      const r = buckets.requests.take(1, mono, firstTry(request));
      if (!r.ok) throw requestsSpent(Math.max(r.retryMs, wait), rateLimitHeaders(buckets, mono, now, inference), limits, wait > 0);
    }
    // Refused here, before the body is read and parsed (up to SHIM_MAX_BODY_BYTES of JSON, a
    // tenth of a second or so), not only in the handler: these refusals spend no request, so
    // requests/min would not bound how many bodies a key at its cap or with a spent tokens budget
    // has parsed. Only looked at here; the handler takes the place and the estimate, checking
    // again (other requests may have taken them while the body arrived). The tokens budget
    // first: a key at its cap waits a little for a place (placeFreed), which is no use to it while
    // the budget is spent, and whose end would only have made `wait` (the Retry-After) stale.
    if (!inference) return;
    // A retry that may join its left generation (joined-retry.ts) generates nothing: that
    // generation holds the key's place and spent its tokens, and the retry would get the 429.
    // The handler checks both if it does not join; a refusal then keeps its request (refusals.ts).
    if (mayJoin(ctx, request, key.id)) return void (request.auth.keepsRequest = true);
    if (wait > 0) throw tokensSpent(ctx, request.auth, wait, undefined, request.routeOptions.url === "/v1/embeddings");
    if (limits.concurrency !== null && ctx.limiter.full(key.id, limits.concurrency) && !(await placeFreed(ctx, reply, limits.concurrency, false))) {
      throw tooManyInFlight(ctx, request.auth, limits.concurrency);
    }
  };
}

/**
 * Which admin token `token` is: the current one, the previous one during a rotation's overlap
 * (SHIM_ADMIN_TOKEN_PREVIOUS, before its UNTIL), or neither. Both are always compared, each in
 * constant time, so how long the answer takes says neither which one matched nor whether a
 * previous token is set; a previous token past its UNTIL is compared too, and then is wrong.
 */
function adminTokenUsed(ctx: ShimContext, token: string): "current" | "previous" | undefined {
  const { adminToken, adminTokenPrevious } = ctx.config;
  // Compared with a token that cannot match when unset, so the work done is the same.
  const current = secretsEqual(token, adminToken ?? UNSET) && adminToken !== null;
  const previous = secretsEqual(token, adminTokenPrevious?.token ?? UNSET) && adminTokenPrevious !== null;
  if (current) return "current";
  const live = adminTokenPrevious !== null && (adminTokenPrevious.until === null || ctx.clock.now() < adminTokenPrevious.until);
  return previous && live ? "previous" : undefined;
}
/** What an unset admin token is compared with: `bearerToken` never returns an empty token. */
const UNSET = "";

/**
 * An admin request let in with the previous token: served, and said on the answer (the caller
 * sees it should move), on its log line and in a counter (the operator sees who has yet to),
 * the token itself in none of them.
 */
function previousTokenUsed(ctx: ShimContext, request: FastifyRequest, reply: FastifyReply): void {
  request.adminTokenPrevious = true;
  ctx.metrics.previousAdminToken.inc();
  reply.header("x-admin-token-previous", "true");
  const until = ctx.config.adminTokenPrevious?.until;
  if (until != null) reply.header("x-admin-token-previous-until", new Date(until).toISOString());
}

/**
 * Why a presented key is refused, or undefined when it is live; for the log line alone (the
 * client is told invalid_api_key whatever the reason, as an unknown key is). A tenant's "my key
 * stopped working at 14:02" was answered by nothing: the 401's line had no key and no reason.
 * The id is the key's public part (usage rows and listings show it); the secret is never kept.
 * Revoked and expired are said only of the right secret: a wrong one says no more than that.
 */
export function keyRefusal(token: string | undefined, id: string | undefined, key: KeyRecord | undefined, now: number): KeyRefusal | undefined {
  if (token === undefined) return { keyId: null, reason: "no_key" };
  if (id === undefined) return { keyId: null, reason: "not_a_key" };
  if (key === undefined) return { keyId: id, reason: "unknown_key" };
  if (!verifyKey(token, key.hash)) return { keyId: id, reason: "wrong_secret" };
  if (key.revokedAt !== null) return { keyId: id, reason: "revoked" };
  if (!keyIsLive(key, now)) return { keyId: id, reason: "expired" };
  return undefined;
}

/**
 * Whether the admin token, not an API key, decides. The route the router matched decides, not
 * the raw URL: the router decodes the path, so `/%61dmin/keys` runs the `/admin/keys` handler
 * while its raw URL does not start with `/admin/` (an API key got admin powers that way). A
 * request no route matched is judged by its raw path, so `/admin/anything` still answers 401
 * to a caller without the token rather than saying which admin routes exist.
 */
function isAdminRequest(request: FastifyRequest): boolean {
  const route = request.routeOptions.url;
  if (route !== undefined) return isAdminPath(route);
  return isAdminPath(urlPath(request.url));
}

/** A path the admin token, not an API key, is asked for (as the router reads it, or raw for a request no route matched). */
export const isAdminPath = (path: string): boolean => path === "/admin" || path.startsWith("/admin/");

function throttleUnauthenticated(ctx: ShimContext, request: FastifyRequest, scope: IpScope = "any"): void {
  // No address once the socket is gone: the client left while its key was being looked up.
  if (request.ip === undefined) throw new ClientLeftError();
  const r = ctx.limiter.takeIp(request.ip, scope);
  if (!r.ok) throw rateLimited(r.retryMs, rateLimitHeaders(r.buckets, ctx.clock.monotonic(), ctx.clock.now(), false), { detail: scope === "admin" ? wrongAdminTokens(ctx) : withoutValidKey(ctx) });
}

/**
 * What a 429 on the API counts: a client whose key was revoked, expired or rotated got 401 for a
 * minute, then only "Rate limit exceeded", and its SDK retried that (it does not retry a 401):
 * its user reported rate limits, not a dead key.
 */
const withoutValidKey = (ctx: ShimContext): string =>
  `Too many requests without a valid API key from this address (${ctx.config.unauthenticatedRpm} a minute): check the API key you send (a revoked or expired key, or the old secret of a rotated one, is no longer valid); a valid key is still let in.`;

/** What a 429 on the admin API counts: an operator with a stale token was told only to wait. */
const wrongAdminTokens = (ctx: ShimContext): string =>
  `Too many wrong admin tokens from this address (${ctx.config.unauthenticatedRpm} a minute): check the admin token you send (GPU_SANDBOX_ADMIN_TOKEN, or the stack's adminToken output); the right one is still let in.`;

/**
 * A key found revoked, expired or rotated (the secret presented is no longer its) after it
 * authenticated, when its credit hold is made: answered as a dead key is at authentication, so
 * exactly like an unknown one: no key headers, its request back in its budget, the address's
 * unauthenticated budget spent instead.
 */
export function deadKey(ctx: ShimContext, request: FastifyRequest): ShimError {
  request.auth!.buckets.requests?.adjust(-1, ctx.clock.monotonic());
  const key = request.auth!.key;
  // The record read at authentication: expired since, or else revoked or rotated (the hold does not say which).
  request.keyRefusal = { keyId: key.id, reason: key.expiresAt !== null && key.expiresAt <= ctx.clock.now() ? "expired" : "revoked_or_rotated" };
  request.auth = undefined;
  throttleUnauthenticated(ctx, request);
  return new ShimError("invalid_api_key");
}
