import { randomUUID } from "node:crypto";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { admission, type Checked, checked, forwarded, modelNotAllowed } from "../requests/admission.ts";
import { AnswerUsage, usageOfBody } from "../metering/answer-body.ts";
import { spliceJsonBytes } from "../requests/json-splice.ts";
import { finishRequest } from "../observability/request-line.ts";
import { deadKey } from "../auth/auth.ts";
import { tooManyInFlight } from "../limits/refusals.ts";
import { authHeaders } from "../limits/response-headers.ts";
import { INFERENCE_ROUTE, type ShimContext } from "../context.ts";
import { ShimError } from "../errors.ts";
import type { InferenceKind } from "../requests/inference-request.ts";
import { formatCredits } from "../money/money.ts";
import { placeFreed, retryInGrace } from "../limits/key-waits.ts";
import { writeWithBackpressure } from "../client/response-writer.ts";
import { Settlement } from "../money/settlement.ts";
import type { ReserveInput, ReserveResult } from "../store/store.ts";
import { meterFor, relayStream } from "../metering/stream.ts";
import { clientLeft, failed, isFinalTimeout, leftThenFailed, leftThenRefused, refused, REQUEST_PRICE_ONLY } from "./inference-failures.ts";
import { countUpstreamFailure, isAbort, readBody, readLimited, type UpstreamResponse } from "../upstream/upstream.ts";
import type { UpstreamFailureReason } from "../upstream/failure-reasons.ts";
import { upstreamErrorBody, upstreamStatusError } from "../upstream/upstream-errors.ts";
import { callHash, type LeftGeneration } from "../limits/left-generations.ts";
import { answerJoined, callOf, joinable, keepAnswer } from "./joined-retry.ts";
import { idempotencyKeyOf, idempotentTurn } from "./idempotent-requests.ts";

const ROUTES: readonly [string, InferenceKind, string][] = [
  ["/v1/chat/completions", "chat", "/chat/completions"],
  ["/v1/completions", "completions", "/completions"],
  ["/v1/embeddings", "embeddings", "/embeddings"],
  ["/v1/responses", "responses", "/responses"],
];

/**
 * How long a non-streamed answer (or an upstream refusal's message) may take to read once its
 * headers have come, for every client, the rest of an answer too large to relay (read for its
 * usage) included. vLLM and LiteLLM send a non-streamed answer in one go once it is generated
 * (the generation itself is bounded by SHIM_UPSTREAM_TIMEOUT_MS, before the headers), so this
 * is only the transfer: SHIM_MAX_ANSWER_BYTES' default, 256 MiB, read over loopback in 2-4 s on
 * a loaded 2-core machine, and a wait for answer memory adds 2 s at most (answer-memory.ts).
 * Without it, an upstream sending a byte now and then, each inside SHIM_STREAM_IDLE_TIMEOUT_MS,
 * would keep a client that waits (and its hold and place) for ever.
 */
const ANSWER_READ_MS = 10_000;
/** The cause on the line of a read ANSWER_READ_MS cut (its error would only say "aborted"). */
const LATE = `the answer did not end within ${ANSWER_READ_MS} ms of its headers`;

/** Answers below this size are written as one buffer (one syscall with the headers). */
const COPY_BELOW = 64 * 1024;

export function inferenceRoutes(app: FastifyInstance, ctx: ShimContext): void {
  for (const [path, kind, upstreamPath] of ROUTES) {
    app.post(path, { config: INFERENCE_ROUTE }, (request, reply) => handle(ctx, kind, upstreamPath, request, reply));
  }
}

/**
 * Admission (validation, model checks, the key's requests in flight, tokens/min, credit hold),
 * forwarding, and settlement. Every path after the hold ends in exactly one settle: the real
 * cost, or 0 when the upstream failed before answering.
 */
async function handle(ctx: ShimContext, kind: InferenceKind, upstreamPath: string, request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
  const auth = request.auth!;
  request.shim.routeLogs = true; // every way out below writes the request's line, a client that left included
  if (ctx.inflight.draining) throw ctx.inflight.refusal();
  const checks = checked(ctx, kind, request);
  // A re-send with an Idempotency-Key (idempotent-requests.ts), or an SDK's retry of a generation
  // its client left (joined-retry.ts): that answer, charged once. Before the key's place in
  // flight (and the tokens/min check): it generates nothing, and that generation, still
  // running, may hold the key's last place.
  const idempotencyKey = idempotencyKeyOf(request, checks.req.stream);
  let idempotent: LeftGeneration | undefined;
  if (idempotencyKey !== undefined) {
    idempotent = await idempotentTurn(ctx, request, reply, callOf(upstreamPath, checks.batch), idempotencyKey, checks.req.model, kind);
    if (!idempotent) return reply;
  } else {
    const left = joinable(ctx, request, callOf(upstreamPath, checks.batch), checks.req.stream);
    if (left && (await answerJoined(ctx, request, reply, left, checks.req.model, kind))) return reply;
  }
  // Requests in flight for this key, under the tier's cap: counted from here until the request
  // ends, streams included. Counted without a cap too: a key whose tier gains one (a bootstrap
  // key re-applied by another replica's start) has its requests already in flight counted. (The
  // auth hook refused a key at its cap before its body was read; others may have taken the last
  // place since, and one of them may be ending: placeFreed waits a little for it, and answers
  // 503 if a drain begins meanwhile.)
  const cap = auth.limits.concurrency;
  try {
    if (!ctx.limiter.enter(auth.key.id, cap ?? Infinity) && !(await placeFreed(ctx, reply, cap!, true))) throw tooManyInFlight(ctx, auth, cap!); // only a cap refuses
    try {
      return await admitted(ctx, kind, upstreamPath, request, reply, checks, idempotent);
    } finally {
      ctx.limiter.leave(auth.key.id);
    }
  } finally {
    // However it ended: kept when answered (admitted waits for the answer, client or not), else
    // forgotten (refused, failed): its re-send generates, and those waiting on it generate theirs.
    idempotent?.end();
  }
}

/**
 * `handle` from the tokens/min check on, for a request that has its place among its key's requests
 * in flight. `idempotent`: its entry under its Idempotency-Key, given its answer, client or not,
 * and ended (forgotten unless answered) however it ends.
 */
async function admitted(ctx: ShimContext, kind: InferenceKind, upstreamPath: string, request: FastifyRequest, reply: FastifyReply, checks: Checked, idempotent: LeftGeneration | undefined) {
  const auth = request.auth!;
  const { req, modelConfig, batch } = checks;
  const continuous = modelConfig?.continuousUsage === true;
  // A non-streamed request's bytes as sent, kept (counted in its body hold, below) until it ends
  // or its client leaves: that generation is then remembered for a retry by their hash
  // (callHash). Where the shim rewrote what it forwards (a relaxed schema, a default max_tokens,
  // the cache salt), the client's bytes give way to their hash at once, so that the request holds
  // one copy of its body, the forwarded one, as the body hold counts it (a review of the join).
  // (An idempotent request is remembered already, by its Idempotency-Key.)
  let sentBytes: Buffer | string | undefined = req.stream || idempotent ? undefined : request.rawBody;
  const facts = admission(ctx, kind, request, checks);
  if (Buffer.isBuffer(sentBytes) && facts.upstreamBody !== sentBytes) sentBytes = callHash(callOf(upstreamPath, batch), sentBytes);
  const { estimate, hold } = facts;
  const reservationId = randomUUID();
  // In flight from before the hold: a drain that starts while the hold is being made waits for this request (and aborts it) instead of closing the store under it.
  const ac = new AbortController();
  // A non-streamed answer's bytes (a stream's large events) count against the memory all answers
  // may hold until sent or dropped. Releasing it also ends a wait for room: a cut request must not wait on others.
  const lease = ctx.answerMemory.lease();
  // With the request: GET /admin/requests/{id} tells it is running (routes/running-request.ts).
  const inflightDone = ctx.inflight.add((reason) => {
    ac.abort(reason);
    lease.release();
  }, request);
  // Its body counts (SHIM_BODY_MEMORY_BYTES) while it is in flight, past its client's leaving:
  // a request goes on waiting on the upstream then, with its body in the upstream's hands.
  const bodyHold = request.bodyHold;
  bodyHold?.keep();
  const done = () => {
    inflightDone();
    bodyHold?.release();
  };
  let reserved;
  try {
    // The hash it authenticated with: a rotation since refuses it as a revocation does.
    const input = { reservationId, keyId: auth.key.id, amount: hold, at: ctx.clock.now(), model: req.model, hash: auth.key.hash };
    reserved = await ctx.store.reserve(input);
    // Refused for credits (only that refusal has the balance: not a dead key nor a model taken
    // out of its allow-list), though the balance covers it: only the key's other holds are in the way.
    if (!reserved.ok && "balance" in reserved && reserved.balance >= hold) reserved = await reserveAsHoldsSettle(ctx, reply, input, reserved, ac.signal);
  } finally {
    // Not admitted (refused or the store failed): the admission estimate goes back to the bucket.
    if (!reserved?.ok) {
      auth.buckets.tokens?.settleEstimate(estimate, 0, ctx.clock.monotonic());
      done();
    }
  }
  if (!reserved.ok) {
    // Revoked, expired or rotated since it authenticated (while its body was still arriving, or
    // it waited for the key's holds to settle): refused as any dead key is, before anything is
    // forwarded or charged.
    if (reserved.inactive) throw deadKey(ctx, request);
    // Its model taken out of the key's allow-list since (PATCH /admin/keys/{id}): refused as admission (checked) refuses it.
    if (reserved.notAllowed) throw modelNotAllowed(req.model);
    // A drain cut it while it waited for holds to settle: another replica (or this one restarted) may admit it.
    if (ac.signal.aborted) throw ctx.inflight.refusal();
    const required = formatCredits(hold);
    const available = formatCredits(reserved.available);
    throw new ShimError("insufficient_credits", {
      message: `Insufficient credits. Required: ${required}, Available: ${available}`,
      extra: { credits_required: Number(required), credits_available: Number(available) },
      headers: { "x-credits-remaining": available },
    });
  }
  request.shim.held = hold;
  const settlement = new Settlement({ ctx, request, reservationId, hold, kind, model: req.model, batch, stream: req.stream, estimate, cacheLifetime: facts.cacheLifetime });
  /** The prompt's tokens estimated from its fields, for an answer whose usage never came. */
  const promptEstimate = () => facts.promptTokens;

  // Once the upstream has a non-streamed request, a client that leaves does not stop it: the
  // answer is waited for (within SHIM_UPSTREAM_TIMEOUT_MS) and charged its usage. The deployed
  // upstream, LiteLLM, does not cancel a non-streamed call when its client goes away (litellm
  // #37140), so vLLM generates the whole answer anyway: aborting only made that GPU time cost
  // the request price. Once the answer is coming (vLLM sends it when the generation is done),
  // its read has ANSWER_READ_MS to end, as for a client that stays (`cut` if it did not: an
  // upstream timeout, nothing charged). A stream is aborted: LiteLLM
  // stops a stream whose client left, and it is charged for what was generated.
  let sent = false;
  let left = false;
  let cut = false;
  /** This generation, remembered for its client's retry once the client left (an idempotent request's: from the start). */
  let remembered: LeftGeneration | undefined = idempotent;
  /**
   * The one deadline of a body read whole (readWithin), armed at its headers and cleared once it
   * is read: one timer a request. (dispatch's headers timer ends at the headers, and a stream
   * must not have this bound.)
   */
  let readDeadline: NodeJS.Timeout | undefined;
  const readWithin = (res: UpstreamResponse) => {
    readDeadline = setTimeout(() => {
      cut = true;
      res.body.destroy(new Error(LATE));
      lease.release(); // a read waiting for answer memory ends too
    }, ANSWER_READ_MS);
  };
  const onClose = () => {
    if (reply.raw.writableFinished) return;
    if (req.stream || !sent) {
      ac.abort("client");
      // A stream's event waiting for room does not read the body, so would not see the abort.
      return void lease.release();
    }
    left = true;
    if (sentBytes) remembered = ctx.leftGenerations.remember(auth.key.id, typeof sentBytes === "string" ? sentBytes : callHash(callOf(upstreamPath, batch), sentBytes), request.id);
    sentBytes = undefined;
  };
  reply.raw.on("close", onClose);
  if (reply.raw.destroyed) onClose(); // left while the request was being admitted
  try {
    let res: UpstreamResponse;
    try {
      res = await ctx.upstream.request({ method: "POST", path: upstreamPath, body: forwarded(facts), signal: ac.signal, requestId: request.id, onSent: () => (sent = true) });
    } catch (e) {
      // An upstream failure after its client left: counted and its cause logged as any upstream
      // failure, nothing charged, and nobody to answer.
      if (left && !isAbort(e, ac.signal)) return await leftThenFailed(ctx, request, reply, settlement, e, undefined, undefined, remembered);
      // Once the request was sent the upstream was reached: a connection it then closes without
      // answering (vLLM killed mid-generation) is its error, not a network's.
      return await failed(ctx, request, reply, settlement, ac.signal, e, sent, sent);
    }
    const ok = res.status >= 200 && res.status < 300;
    // A 2xx that is not the answer asked for is a refusal too: a stream request answered with
    // plain JSON, which vLLM 0.15.1 and 0.16.0 did for errors (with status 200).
    const refusal = !ok || (req.stream && !String(res.headers["content-type"] ?? "").startsWith("text/event-stream"));
    if (req.stream && !refusal) {
      return await relayStream({ ctx, request, reply, res, settlement, available: reserved.available, signal: ac.signal, meter: meterFor(kind, { clientWantsUsage: req.clientWantsUsage, hideContinuous: continuous && !req.clientWantsContinuous, runningUsage: continuous || req.continuousAsked, outputsPerPrompt: req.n, outputs: req.outputs, echo: req.echo, maxCompletion: facts.completionBound, request: { model: req.model, createdAt: Math.floor(ctx.clock.now() / 1000) } }), promptEstimate, lease });
    }
    readWithin(res);
    if (refusal) {
      let text = "";
      try {
        text = (await readLimited(res.body, 64 * 1024)).text;
      } catch (e) {
        // The upstream refused it: a client leaving meanwhile pays nothing (`sent`: false).
        if (left) return await leftThenFailed(ctx, request, reply, settlement, e, ac.signal, cut ? LATE : undefined, remembered);
        return await failed(ctx, request, reply, settlement, ac.signal, e, false, true, cut ? LATE : undefined);
      } finally {
        clearTimeout(readDeadline);
      }
      const reason: UpstreamFailureReason = ok ? "not_a_stream" : `status_${res.status}`;
      const err = ok ? upstreamErrorBody(text, req.model, ctx.hideSecrets) : upstreamStatusError(res.status, text, req.model, res.headers["retry-after"], ctx.hideSecrets);
      if (left) return await leftThenRefused(ctx, request, reply, settlement, err, reason, remembered);
      return await refused(ctx, request, settlement, err, reason);
    }
    let answerBytes: Buffer | null;
    const read = new AnswerUsage();
    try {
      answerBytes = await readBody(res.body, ctx.config.maxAnswerBytes, read, lease);
    } catch (e) {
      // The body broke, ran out of time or a drain cut it: nothing charged, for a client that
      // stays as for one that left. (Too large, the read ends instead: answerBytes is null.)
      if (left) return await leftThenFailed(ctx, request, reply, settlement, e, ac.signal, cut ? LATE : undefined, remembered);
      return await failed(ctx, request, reply, settlement, ac.signal, e, true, true, cut ? LATE : undefined);
    } finally {
      clearTimeout(readDeadline);
    }
    if (answerBytes === null) {
      // The upstream did the work (embeddings of a large batch; many long outputs with
      // logprobs), but the answer is past what the shim relays. It is charged from the usage in
      // the answer (else the estimated prompt), so such requests are not free GPU time, and the
      // client is told how to fit. One that left meanwhile is charged the same. A 413, which no
      // client retries: charged, the same request would fail the same way, and clients retry a
      // 5xx (OpenAI's SDKs twice unless x-should-retry says no; the AI SDK and LangChain whatever
      // it says), each retry charged again. Still counted as a failure: the limit is the operator's.
      countUpstreamFailure(ctx, request, "answer_too_large");
      const usage = read.usage() ?? { promptTokens: promptEstimate(), completionTokens: 0 };
      if (left) return await clientLeft(ctx, request, reply, settlement, usage);
      const { cost, available } = await settlement.settle(413, usage);
      throw new ShimError("request_too_large", {
        message: `The answer was larger than the ${ctx.config.maxAnswerBytes} bytes this endpoint relays; send fewer inputs per request${kind === "embeddings" ? " or ask for encoding_format 'base64'" : ""}.`,
        logCode: "answer_too_large",
        headers: { "x-credits-charged": formatCredits(cost), "x-credits-remaining": formatCredits(available), "x-should-retry": "false" },
      });
    }
    const answer = usageOfBody(answerBytes, read);
    // An error body, or a 2xx that is not a JSON object (binary vectors, a proxy's HTML page):
    // nothing the shim can meter or relay as the JSON answer asked for, so the upstream's
    // failure, charged nothing and not relayed (relayed, it went out labelled application/json
    // and charged the request price alone: vLLM's "bytes" embeddings, embeddings-request.ts).
    if (answer.isError || !answer.isObject) {
      const err = answer.isError ? upstreamErrorBody(answerBytes.toString("utf8"), req.model, ctx.hideSecrets) : new ShimError("upstream_error", { message: "The model server's answer was not JSON." });
      const reason: UpstreamFailureReason = answer.isError ? "error_body" : "not_json";
      if (left) return await leftThenRefused(ctx, request, reply, settlement, err, reason, remembered);
      return await refused(ctx, request, settlement, err, reason);
    }
    // Read whole after its client left: charged as if delivered.
    if (left) return await clientLeft(ctx, request, reply, settlement, answer.usage ?? REQUEST_PRICE_ONLY, (cost) => remembered && keepAnswer(remembered, res.status, answerBytes, batch, cost));
    // No usage from the upstream: charge the request price and no tokens rather than guess.
    const { cost, available } = await settlement.settle(res.status, answer.usage ?? REQUEST_PRICE_ONLY);
    // Charged: kept for a re-send with its Idempotency-Key, whether or not this client receives it.
    if (idempotent) keepAnswer(idempotent, res.status, answerBytes, batch, cost);
    // Seed 001's success body: the charge, what is left, and whether the batch price applied.
    const pieces = spliceJsonBytes(answerBytes, { credits_charged: formatCredits(cost), credits_remaining: formatCredits(available), batch_request: String(batch) });
    // The hot path writes the response itself: Fastify's send pipeline (onSend hooks, header
    // bookkeeping) measurably costs per request here, and there is nothing for it to do.
    reply.hijack();
    // From here the answer is the client's: its leaving no longer changes the charge.
    reply.raw.off("close", onClose);
    ctx.inflight.closeIfDraining(reply.raw);
    reply.raw.writeHead(res.status, {
      "x-request-id": request.id,
      ...authHeaders(ctx, request, cost, available),
      "content-type": "application/json",
      "content-length": pieces.reduce((n, p) => n + p.length, 0),
    });
    // One write for an ordinary answer. A large one is not copied into a new buffer just to add
    // the credit members at its end, and goes out with backpressure and an idle timeout: a
    // client that stops reading would otherwise hold its memory (and keep others' reads waiting
    // for SHIM_ANSWER_MEMORY_BYTES) until nginx gave up on it.
    if (answerBytes.length < COPY_BELOW) reply.raw.end(Buffer.concat(pieces));
    else {
      for (const p of pieces) await writeWithBackpressure(reply.raw, p, ctx.config.streamIdleTimeoutMs, ac.signal);
      reply.raw.end();
    }
    // Gone before it had it all (it left, stopped reading, or a drain): charged all the same, and
    // logged as a client that left.
    const gone = reply.raw.destroyed && !reply.raw.writableFinished;
    if (gone) request.shimErrorCode = "client_closed_request";
    finishRequest(ctx, request, gone ? 499 : res.status);
    return reply;
  } catch (e) {
    // An idempotent request's generation ran out of time, its client there (the 504 told final):
    // re-sends waiting on it get that 504, as a left generation's retries do (leftThenFailed),
    // rather than each starting the same long generation into the same timeout.
    if (remembered && isFinalTimeout(e)) remembered.failed(e);
    throw e;
  } finally {
    reply.raw.off("close", onClose);
    sentBytes = undefined;
    remembered?.end(); // without an answer (it failed), a retry generates its own
    // An answer still being written is still in flight: a drain (SIGTERM) waits for it rather
    // than closing its connection under it, charged and half sent. Its memory is held until then.
    const over = () => {
      done();
      lease.release();
    };
    if (reply.raw.writableFinished || reply.raw.destroyed) over();
    else reply.raw.once("close", over);
  }
}

/**
 * A hold refused while the key's balance covers it (`refused`): the key's other requests hold the
 * rest, and one may be finishing (a stream its client has just stopped settles a few ms after the
 * client closed). Tried again as the key's holds settle here, within the request's grace (key-waits.ts: one
 * FINISHING_GRACE_MS for all its waits, a wait for a place in flight included);
 * the last refusal when they did not make room in time, the balance fell short of it, or the
 * client left or a drain cut it (`signal`) meanwhile. A store failure is thrown as the first
 * reserve's would be.
 */
async function reserveAsHoldsSettle(ctx: ShimContext, reply: FastifyReply, input: ReserveInput, refused: ReserveResult, signal: AbortSignal): Promise<ReserveResult> {
  let last = refused;
  const settled = await retryInGrace(ctx.holdsSettled, reply, input.keyId, input.amount, signal, async () => {
    last = await ctx.store.reserve({ ...input, at: ctx.clock.now() });
    return !("balance" in last) || last.balance < input.amount ? last : undefined;
  });
  return settled ?? last;
}
