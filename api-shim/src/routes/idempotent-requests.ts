import type { FastifyReply, FastifyRequest } from "fastify";
import type { ShimContext } from "../context.ts";
import { ShimError } from "../errors.ts";
import { callHash, IDEMPOTENCY_KEY, type LeftGeneration } from "../limits/left-generations.ts";
import { MAX_IDEMPOTENCY_KEY_LENGTH } from "../names.ts";
import { answerJoined } from "./joined-retry.ts";
import type { InferenceKind } from "../requests/inference-request.ts";

/**
 * `Idempotency-Key` on the non-streamed inference routes: a batch job killed and restarted sends
 * its requests again with the keys it gave them, and pays once. A request with one is remembered
 * from its admission in the retry join's memory (limits/left-generations.ts: its 10 minutes, its
 * bounds and each key's quarter of them), found by its key's id and the value; a re-send of the
 * same call (route, `?batch=1` and body bytes) waits for it while it runs and is then given its
 * answer, as often as it is sent while the answer is kept, charged nothing more (joined-retry.ts,
 * `idempotent-replayed: true`); at most RESENDS_WAITING re-sends wait on one, a further one is
 * told to come back (409 idempotency_key_in_use). Kept whether its client stayed or left: a job that crashed after
 * an answer came but before it recorded it is the case a user sends the key for. A request that
 * failed or was refused is not kept: its re-send generates. docs/decisions.md.
 *
 * Nothing here runs for a request without the header beyond looking it up.
 */

/**
 * Re-sends let wait on one running request. A waiting re-send takes no place in flight (its first
 * took it) but holds its socket and its whole body in SHIM_BODY_MEMORY_BYTES, since it generates
 * if the first fails: unbounded, one key sending one value many times at once could fill that
 * memory and others' requests would be refused. A restart sends one, a job started twice two, and
 * the SDK's retry of a re-send whose client left replaces it (it stops waiting); past this, a
 * 409 idempotency_key_in_use tells it to come back. A constant, not the key's cap in flight: a
 * key with no cap would have no bound, and one with a cap of 1 could not be started twice.
 * docs/decisions.md.
 */
export const RESENDS_WAITING = 4;
/** What the 409 asks to wait: short, as the answer may be moments away; the SDKs retry twice after it. */
const IN_USE_RETRY_AFTER_S = 2;

/** Printable ASCII: what Stripe's and OpenAI's keys (UUIDs, `job-42:prompt-17`) are made of, and nothing a log line or header would mangle. */
const VALUE = new RegExp(`^[\\x20-\\x7e]{1,${MAX_IDEMPOTENCY_KEY_LENGTH}}$`);

/** The request's Idempotency-Key, checked (a 400 naming it); undefined when it has none. */
export function idempotencyKeyOf(request: FastifyRequest, stream: boolean): string | undefined {
  const value = request.headers[IDEMPOTENCY_KEY];
  if (value === undefined) return undefined;
  if (typeof value !== "string" || !VALUE.test(value)) {
    throw invalid(`Idempotency-Key must be 1 to ${MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters (letters, digits, punctuation, spaces), sent once.`);
  }
  // A stream is relayed as it is generated and stopped when its client leaves: there is no whole
  // answer to give a re-send. Refused rather than ignored, so a job does not believe it is covered.
  if (stream) throw invalid("Idempotency-Key is honoured on non-streamed requests only: send this request with stream: false to make it safe to send again, or without Idempotency-Key.");
  return value;
}

/**
 * Answers `request` with the earlier request of its key sent with Idempotency-Key `value` (waiting
 * for it while it runs), and returns undefined; or, when there is none (or it failed while this one
 * waited), remembers this one under `value` and returns its entry, for the handler to keep its
 * answer in (keepAnswer) and to end. Another call under the same value is the 409
 * idempotency_key_reused, nothing generated or charged.
 */
export async function idempotentTurn(ctx: ShimContext, request: FastifyRequest, reply: FastifyReply, call: string, value: string, model: string, route: InferenceKind): Promise<LeftGeneration | undefined> {
  const keyId = request.auth!.key.id;
  const hash = callHash(call, request.rawBody ?? Buffer.alloc(0));
  for (;;) {
    const earlier = ctx.leftGenerations.idempotent(keyId, value);
    if (!earlier) return ctx.leftGenerations.remember(keyId, hash, request.id, value);
    if (earlier.hash !== hash) throw reused();
    // Counted while it waits (and while a kept answer is sent, briefly: an ended one is not capped).
    if (!earlier.ended && earlier.resendsWaiting >= RESENDS_WAITING) throw inUse();
    earlier.resendsWaiting++;
    try {
      if (await answerJoined(ctx, request, reply, earlier, model, route)) return undefined;
    } finally {
      earlier.resendsWaiting--;
    }
    // It ended without an answer (failed or refused: forgotten): this one generates, or waits for
    // another re-send that took its place meanwhile.
  }
}

const invalid = (message: string) => new ShimError("invalid_request", { message, param: "Idempotency-Key" });
const reused = () =>
  new ShimError("idempotency_key_reused", {
    param: "Idempotency-Key",
    message: "This Idempotency-Key was used by another request of this key in the last 10 minutes, with another body, route or batch price: nothing was generated or charged. Send the first request's body again to get its answer, or use a new Idempotency-Key for a new request.",
  });
const inUse = () =>
  new ShimError("idempotency_key_in_use", {
    param: "Idempotency-Key",
    headers: { "retry-after": String(IN_USE_RETRY_AFTER_S), "x-should-retry": "true" },
    message: `A request of this key with this Idempotency-Key is still running, and ${RESENDS_WAITING} re-sends of it are waiting for its answer already: nothing was generated or charged. Send it again in a few seconds (the OpenAI SDKs retry this by themselves): it gets the answer once there is one.`,
  });
