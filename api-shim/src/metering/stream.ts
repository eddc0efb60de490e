import type { FastifyReply, FastifyRequest } from "fastify";
import type { AnswerLease } from "../limits/answer-memory.ts";
import { errors as undiciErrors } from "undici";
import { finishRequest } from "../observability/request-line.ts";
import { authHeaders } from "../limits/response-headers.ts";
import type { ShimContext } from "../context.ts";
import { ShimError } from "../errors.ts";
import { spliceJson, spliceJsonMember } from "../requests/json-splice.ts";
import { type MeterOptions, StreamMeter } from "./metering.ts";
import type { Meter, UsageEvent } from "./meter.ts";
import { ResponsesMeter } from "./responses-stream.ts";
import type { InferenceKind } from "../requests/inference-request.ts";
import { loggedModel } from "../observability/redaction.ts";
import { formatCredits } from "../money/money.ts";
import type { Settlement } from "../money/settlement.ts";
import { writeWithBackpressure } from "../client/response-writer.ts";
import { replaceEventData, sseEvents } from "./sse.ts";
import { countUpstreamFailure, transportCause, type UpstreamResponse } from "../upstream/upstream.ts";
import type { UpstreamFailureReason } from "../upstream/failure-reasons.ts";
import { upstreamErrorBody } from "../upstream/upstream-errors.ts";

export interface RelayInput {
  ctx: ShimContext;
  request: FastifyRequest;
  reply: FastifyReply;
  res: UpstreamResponse;
  settlement: Settlement;
  /** The key's available credits after this request's hold. */
  available: number;
  signal: AbortSignal;
  /** What reads the stream's events as they pass (meterFor): what was delivered, and what to charge. */
  meter: Meter;
  /**
   * Prompt tokens charged when content arrived but no usage did, to a client that left (the
   * prompt was processed, and without this a client behind an upstream that sends no running
   * usage, LiteLLM, could skip paying for a long prompt by closing the stream early) and to one
   * that read to the end of a stream whose upstream ignored `include_usage` (finishing must not
   * cost less than leaving).
   */
  promptEstimate: () => number;
  /** The request's share of SHIM_ANSWER_MEMORY_BYTES: each large event's bytes, until it is sent (sse.ts). */
  lease: AnswerLease;
}

/**
 * The meter for a stream of route `kind`: the Responses API's events, or chat's and completions'
 * chunks (all of `options`). `request`, the request's model and time: a Responses failure event the
 * shim writes names them when the upstream named no response.
 */
export function meterFor(kind: InferenceKind, options: MeterOptions & { request: { model: string; createdAt: number } }): Meter {
  return kind === "responses" ? new ResponsesMeter(options.maxCompletion ?? Infinity, options.request) : new StreamMeter(options);
}

/**
 * Relays an SSE stream event by event as each arrives. The charge is settled when the stream
 * ends: from the upstream's usage chunk, which is held back until the next event (vLLM sends its
 * usage-only chunk right before [DONE]; LiteLLM's keeps a choice with nothing generated, its
 * finish chunk or its own after it) so that, when it is the last, it carries the final figures; or, when the
 * stream ends early (client gone, upstream cut, idle timeout, drain), from what was delivered.
 * The final figures also go in a comment line `: credits_charged=… credits_remaining=…` just
 * before `data: [DONE]`; SDKs ignore comments. A Responses API stream (responses-stream.ts) is
 * settled from its final event (`response.completed`), which goes out last with the figures spliced
 * in, followed by the comment line; it has no `[DONE]`.
 */
export async function relayStream(input: RelayInput): Promise<FastifyReply> {
  const { ctx, request, reply, res, settlement, signal } = input;
  const out = reply.raw;
  reply.hijack();
  ctx.inflight.closeIfDraining(out);
  out.writeHead(200, {
    "x-request-id": request.id,
    // The charge is not known until the end: it comes in the comment line at the stream's end.
    ...authHeaders(ctx, request, null, input.available),
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
    "x-credits-reserved": formatCredits(settlement.hold),
  });
  out.flushHeaders();
  ctx.metrics.activeStreams.inc();

  // Backpressure, an idle timeout for a client that stops reading ('close' then aborts the
  // upstream: it is charged for what was read of it; what vLLM generated meanwhile, unread, is
  // not: docs/api-shim/environment.md, SHIM_STREAM_IDLE_TIMEOUT_MS), and a drain that cuts now:
  // response-writer.ts.
  const write = (text: string) => writeWithBackpressure(out, text, ctx.config.streamIdleTimeoutMs, signal);

  const { meter } = input;
  // What ended the stream early, if anything: the client leaving, or a failure told to it.
  let clientGone = false;
  let failure: ShimError | null = null;
  let metricReason: UpstreamFailureReason | null = null;
  /** The upstream's failure told by its own final event, relayed as it came (not `failure`, which the shim tells). */
  let upstreamFailure: ShimError | null = null;
  let sawDone = false;
  /** An error event came in the usage chunk's place, after the whole answer. */
  let usageFailed = false;
  // The usage chunk last received (vLLM's usage-only chunk; LiteLLM's, which keeps a choice with
  // nothing generated), until the next event shows whether it is the last word.
  let held: UsageEvent | null = null;
  try {
    // One event is held whole until it ends: at most what one non-streamed answer may be, and
    // counted with them against SHIM_ANSWER_MEMORY_BYTES (one that finds no room is cut the same way).
    for await (const event of sseEvents(res.body, ctx.config.maxAnswerBytes, input.lease)) {
      const m = meter.process(event);
      if (m.kind === "done") {
        sawDone = true;
        break;
      }
      if (m.kind === "comment") {
        // No data (a proxy's keep-alive comment): relayed, and a held usage chunk stays held.
        await write(`${m.forward}\n\n`);
        continue;
      }
      if (m.kind === "error" && meter.outputsFinished === "all") {
        // An error in the usage chunk's place, after every output's finish: LiteLLM's proxy writes
        // one where building the usage chunk raised (BerriAI/litellm#41187, from v1.94.0), with or
        // without [DONE] after it. The answer is whole and at most its final usage is missing: the
        // stream ends as one that came without it (charged below from running usage, else the
        // estimate), not as a failure a client with its whole answer would retry and pay for twice.
        // A usage chunk held before it stays held: it is the last word, and carries the figures.
        usageFailed = true;
        sawDone = true;
        break;
      }
      if (held) {
        // Another data event came after it before [DONE] (content, another usage chunk): it goes out
        // as it came, without figures, and the meter goes on (the last usage chunk wins, never
        // below the content chunks when content followed it).
        if (held.forward) await write(`${held.forward}\n\n`);
        held = null;
      }
      if (m.kind === "usage") {
        held = m;
        // A Responses stream's final event: the answer is whole, and nothing follows it.
        if (m.last) {
          sawDone = true;
          break;
        }
        continue;
      }
      if (m.kind === "error") {
        // The upstream failed inside the stream (vLLM sends an error event, then [DONE]). It is
        // told to the client as our own error, mapped as a failed status would be (a 5xx's
        // message is the upstream's internals), and charged as an upstream failure below. After
        // content it is the upstream's failure whatever its code says: vLLM 0.10-0.11 label
        // every in-stream exception 400, a dead engine included, with the engine's message.
        failure = meter.contentSeen ? new ShimError("upstream_error") : upstreamErrorBody(m.data, request.shim.model ?? undefined, ctx.hideSecrets);
        metricReason = "stream_error";
        break;
      }
      await write(`${m.forward}\n\n`);
    }
    // Leaving the loop gave a Responses stream's final event's bytes back to the answer memory
    // (sseEvents), but it is held until it is written, with the figures spliced in (the whole
    // response, its output again): taken again, past the budget (it is in memory already), until
    // the request ends.
    if (held?.last) input.lease.takeNow(2 * held.data.length, true);
    // The client left (or was cut) with the rest of the stream already received: the loop ran
    // on to the end with nothing more written, and the request is the client's leaving all the same.
    if (signal.aborted && signal.reason === "client") clientGone = true;
    else if (!failure && !sawDone && !meter.complete) {
      // The upstream closed without [DONE] before the answer and its usage were whole: a
      // cut-short stream, told to the client as an error. With them, only [DONE] is missing
      // (an upstream restarting, a proxy closing an idle connection): a whole stream. So is a
      // clean close after every output's finish without usage: servers that send neither usage
      // nor [DONE] end every answer so (TGI before #2221, ik_llama.cpp#467, llama-box#2), and it
      // is charged as whole; told as a failure, a client retries and pays twice. A connection
      // broken there (the catch below) is still a cut.
      if (meter.outputsFinished === "all") sawDone = true;
      else {
        failure = new ShimError("upstream_error");
        metricReason = "stream_cut";
      }
    }
    // A Responses stream that ended with the upstream's own report of its failure (`response.failed`
    // without usage): the upstream's failure, charged as one below, not an upstream without usage.
    if (!failure && meter.upstreamFailed) {
      upstreamFailure = new ShimError("upstream_error");
      metricReason = "stream_error";
    }
    if (!failure && !upstreamFailure && sawDone && (usageFailed || !meter.promptReported)) {
      // The shim asked for usage and the upstream ignored it (or sent no prompt count, or failed to
      // build it): charged from an estimate below, or from running usage where it came, and shown
      // to the operator, who can fix the upstream.
      metricReason = "no_usage";
      const estimated = meter.promptReported ? "charged from the usage that came" : "prompt estimated, completion counted in chunks";
      const message = usageFailed
        ? `stream usage failed upstream (an error event in its place, after every finish): ${estimated}`
        : meter.sawUsage ? "stream usage without prompt_tokens: prompt estimated" : "stream ended without usage: prompt estimated, completion counted in chunks";
      request.log.warn({ reqId: request.id, model: loggedModel(request.shim.model ?? "", ctx.hideSecrets, ctx.config.models) }, message);
    }
  } catch (e) {
    if (signal.aborted && signal.reason === "client") clientGone = true;
    // A drain: not the upstream's fault.
    else if (signal.aborted && signal.reason === "drain") failure = new ShimError("service_unavailable");
    // The connection broke with the answer and its usage in, only [DONE] missing: a whole stream
    // (a client told it failed would retry and pay again). The cause stays on the log line.
    else if (meter.complete) request.upstreamCause = transportCause(e);
    else {
      failure = new ShimError(e instanceof undiciErrors.BodyTimeoutError ? "upstream_timeout" : "upstream_error");
      request.upstreamCause = transportCause(e);
      // The connection broke mid-stream (the model server died or was cut off): a cut stream.
      metricReason = failure.code === "upstream_timeout" ? "upstream_timeout" : "stream_cut";
    }
  }
  if (metricReason) countUpstreamFailure(ctx, request, metricReason);
  res.body.destroy();

  let figures = "";
  try {
    // An upstream failure before any content is the upstream's fault: nothing is charged.
    // A client that leaves is charged the request and what was generated up to then, with its
    // prompt (running usage's, else estimated) once the answer began (its first chunk: the prompt
    // was processed); an upstream failure after content, only the content, unless an output had
    // finished: a whole output was delivered, and behind LiteLLM, which sends one finish_reason
    // for all of `n`, the whole answer (its error in the usage chunk's place, BerriAI/litellm#41187,
    // left every n > 1 stream's prompt free). A whole stream owes its prompt (estimated if it came
    // without usage), even with no completion tokens (a provider's content filter). Whether the
    // upstream sends running usage must not change any of this.
    const failed = failure ?? upstreamFailure;
    const nothing = failed !== null && !meter.contentSeen;
    const owesPrompt = clientGone ? meter.answerBegan : failed === null || meter.outputsFinished !== "none";
    const { cost, available } = await settlement.settle(clientGone ? 499 : (failed?.status ?? 200), nothing ? null : meter.usage(owesPrompt, input.promptEstimate));
    const credits = { credits_charged: formatCredits(cost), credits_remaining: formatCredits(available) };
    // The usage chunk that ended the stream carries the final figures; a whole stream whose
    // usage-only chunk was lost still gives a client that asked for usage its chunk.
    const last = failure === null && !clientGone ? (held ?? meter.missingUsageChunk()) : null;
    // A Responses stream's final event (`last`) gets them in its `response` too: the SDKs'
    // finalResponse() is that object, as responses.create()'s is the body that carries them.
    const withFigures = (data: string) => (last?.last ? spliceJsonMember(spliceJson(data, credits), "response", credits) : spliceJson(data, credits));
    figures = `${last?.forward ? `${replaceEventData(last.forward, withFigures(last.data))}\n\n` : ""}: credits_charged=${credits.credits_charged} credits_remaining=${credits.credits_remaining}\n\n`;
  } catch (e) {
    // The store failed after the upstream answered, and could not tell whether the settlement was
    // made (the Postgres store looks it up once first): its hold is released, uncharged, when the
    // store answers again (SQLite: at its restart); one that did commit keeps its charge, once.
    request.log.error({ reqId: request.id, err: e instanceof Error ? e.cause ?? e : e }, "settlement failed");
    failure ??= new ShimError("service_unavailable");
  }
  if (!out.destroyed) {
    // A usage-only chunk held when the stream failed after it (a drain, the store) goes out as it came, before the error.
    if (failure) await write(`${held?.forward ? `${held.forward}\n\n` : ""}${meter.errorEvent(failure)}\n\n`);
    await write(figures);
    if (!failure && meter.endLine !== "") await write(meter.endLine);
    out.end();
  }
  ctx.metrics.activeStreams.dec();
  const told = failure ?? upstreamFailure;
  if (clientGone) request.shimErrorCode = "client_closed_request";
  else if (told) request.shimErrorCode = told.logCode;
  finishRequest(ctx, request, clientGone ? 499 : 200);
  return reply;
}
