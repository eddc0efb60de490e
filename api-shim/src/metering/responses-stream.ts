import { randomUUID } from "node:crypto";
import { errorObject, type ShimError } from "../errors.ts";
import { TokenEstimate, type Usage } from "../money/pricing.ts";
import type { Meter, MeteredEvent } from "./meter.ts";
import { eventData } from "./sse.ts";
import { eventWithoutData, isDone } from "./event-kind.ts";
import { toUsage } from "./usage-json.ts";
import { deliveredTokens, isCount } from "./token-count.ts";

/**
 * Reads a Responses API stream as it passes through (vLLM's serving_responses.py, OpenAI's and
 * LiteLLM's): events `event: <type>\ndata: {json}`, each relayed as it comes, from
 * `response.created` and `response.in_progress` through the output items, their content parts and
 * deltas (`response.output_text.delta`, `response.reasoning_text.delta`,
 * `response.function_call_arguments.delta`…) to `response.completed` (or `response.incomplete`,
 * `response.failed`), which carries the whole response with its `usage`. No `[DONE]` follows
 * (vLLM's _convert_stream_to_sse_events writes none); one before the final event is the upstream's failure.
 *
 * The final event is the charge: it is held (returned as a usage event marked `last`) so the relay
 * can settle and send it with the credit figures spliced in, then the comment line. A stream that
 * ends before it (client gone, upstream cut, idle timeout, drain) is charged from what was
 * delivered: each delta event at least one token, or the estimate of their text when more, never
 * above the request's bound, and the prompt's estimate once the answer began.
 */
export class ResponsesMeter implements Meter {
  private final: Usage | null = null;
  /** The final event's usage had an output count. */
  private outputReported = false;
  private ended = false;
  private began = false;
  /** Delta events that carried generated text (each at least one token). */
  private deltas = 0;
  private readonly text = new TokenEstimate();
  /** The output items (`output_index`) that came as deltas: their `response.output_item.done` repeats text counted already. */
  private readonly streamedItems = new Set<number>();
  /** The call items (`output_index`) whose name was counted. */
  private readonly namedItems = new Set<number>();
  /** The text of the output items completed (`response.output_item.done`) that came without deltas: an upstream that sends items whole. */
  private readonly itemsText = new TokenEstimate();
  /** A delta or a completed item without an `output_index` came: which items the deltas were is unknown, so the two texts may be the same. */
  private unplaced = false;
  /** The final event was `response.failed`. */
  private failed = false;
  /** The sequence number the next event would have: the failure events the shim writes take it and the next. */
  private nextSequence = 0;
  /** The response's identity as the upstream's first event with a `response` gave it (`response.created`): a `response.failed` the shim writes repeats it. */
  private identity: ResponseIdentity | null = null;
  private readonly maxCompletion: number;
  /** What a `response.failed` the shim writes names when the upstream named no response: the request's model and time (seconds, the shim's clock). */
  private readonly request: { model: string; createdAt: number } | undefined;
  readonly endLine = "";

  /** `maxCompletion`: the most output tokens the request may generate (the hold's bound). */
  constructor(maxCompletion: number, request?: { model: string; createdAt: number }) {
    this.maxCompletion = maxCompletion;
    this.request = request;
  }

  process(event: string): MeteredEvent {
    const data = eventData(event);
    if (data === null) return eventWithoutData(event);
    // The Responses API has no [DONE], and the relay stops at the final event: one before it is
    // an upstream that ended the answer without its final event, told to the client as a failure
    // (its SDK would otherwise wait for a response that never comes) and charged as a cut stream.
    if (isDone(data)) return this.ended ? { kind: "done" } : { kind: "error", data };
    const type = eventType(event, data);
    // Deltas, most of a stream, are read without parsing: the generated text is their `delta` string.
    if (type !== null && type.endsWith(".delta")) {
      this.nextSequence++;
      this.countDelta(data);
      return { kind: "chunk", forward: event };
    }
    let parsed: { type?: unknown; sequence_number?: unknown; response?: { usage?: unknown } | null; error?: unknown; item?: unknown };
    try {
      parsed = JSON.parse(data) as typeof parsed;
    } catch {
      return { kind: "chunk", forward: event };
    }
    if (parsed === null || typeof parsed !== "object") return { kind: "chunk", forward: event };
    const seq = parsed.sequence_number;
    this.nextSequence = typeof seq === "number" && Number.isSafeInteger(seq) ? seq + 1 : this.nextSequence + 1;
    const kind = parsed.type ?? type;
    if (this.identity === null && parsed.response !== null && typeof parsed.response === "object") {
      const { id, created_at, model } = parsed.response as ResponseIdentity;
      this.identity = { id, created_at, model };
    }
    // A delta whose type only its data tells, after other members (pydantic writes them in field
    // order, `type` last, when a proxy leaves out the `event:` line): counted as the others are.
    if (typeof kind === "string" && kind.endsWith(".delta")) {
      this.countDelta(data);
      return { kind: "chunk", forward: event };
    }
    // OpenAI's error event (`type: "error"`, its code and message at the top), or an error body (vLLM's, LiteLLM's) sent inside the stream.
    if (kind === "error" || (parsed.error !== null && typeof parsed.error === "object" && parsed.response === undefined)) return { kind: "error", data };
    if (kind === "response.completed" || kind === "response.incomplete" || kind === "response.failed") {
      const usage = (parsed.response?.usage ?? null) as Parameters<typeof toUsage>[0];
      this.final = toUsage(usage);
      // A usage without its output count is charged the deltas delivered, as chat's usage chunk
      // without completion_tokens is charged its counted chunks (metering.ts).
      this.outputReported = isCount(usage?.output_tokens) || isCount(usage?.completion_tokens);
      this.ended = true;
      this.began = true;
      this.failed = kind === "response.failed";
      return { kind: "usage", forward: event, data, last: true };
    }
    const index = (parsed as { output_index?: unknown }).output_index;
    if (kind === "response.output_item.added") this.countCallName(parsed.item, index);
    if (kind === "response.output_item.done") this.countItem(parsed.item, index);
    // vLLM writes created and in_progress before the prompt is processed; anything after them is the answer.
    if (kind !== "response.created" && kind !== "response.in_progress") this.began = true;
    return { kind: "chunk", forward: event };
  }

  get complete(): boolean {
    return this.ended;
  }

  get promptReported(): boolean {
    return this.final !== null;
  }

  get sawUsage(): boolean {
    return this.final !== null;
  }

  get contentSeen(): boolean {
    return this.deltas > 0 || this.itemsText.tokens > 0 || (this.ended && !this.upstreamFailed);
  }

  /** A `response.failed` without a usable usage: the upstream failed, and the final event is all it says. */
  get upstreamFailed(): boolean {
    return this.failed && this.final === null;
  }

  get answerBegan(): boolean {
    return this.began;
  }

  /**
   * Never before the stream's end: the Responses API's answer is finished by its final event
   * (`response.completed`), which carries the usage and is the last read, so an error event is
   * always before the answer finished (a failure), never in the usage's place.
   */
  get outputsFinished(): "none" {
    return "none";
  }

  /** The final event's usage; else (cut short, or a final event without usage) the estimate of what was delivered. */
  usage(promptOwed = true, promptEstimate: () => number = () => 0): Usage {
    if (this.final !== null) return this.outputReported ? this.final : { ...this.final, completionTokens: this.counted() };
    return { promptTokens: promptOwed && this.began ? promptEstimate() : 0, completionTokens: this.counted() };
  }

  /**
   * The output delivered: each delta at least one token, or the estimate of the text when more
   * (the deltas' and the items that came whole, each item's once), never above the bound.
   */
  private counted(): number {
    const estimate = this.unplaced ? Math.max(this.text.tokens, this.itemsText.tokens) : this.text.tokens + this.itemsText.tokens;
    return deliveredTokens(this.deltas, estimate, this.maxCompletion);
  }

  /** A completed output item: its text counts unless its deltas came (their text is counted). */
  private countItem(item: unknown, index: unknown): void {
    this.countCallName(item, index);
    if (typeof index !== "number") this.unplaced = true;
    else if (this.streamedItems.has(index)) return;
    addItemText(this.itemsText, item);
  }

  /**
   * A call's name, the model's output as its arguments are, written whole in the item's first
   * event (`response.output_item.added`, whose arguments come as deltas or in its done event):
   * counted once per item, whichever of its events came first, as chat's meter counts a call's name.
   */
  private countCallName(item: unknown, index: unknown): void {
    const it = item as { name?: unknown; arguments?: unknown } | null;
    if (it === null || typeof it !== "object" || typeof it.name !== "string" || typeof it.arguments !== "string") return;
    if (typeof index === "number") {
      if (this.namedItems.has(index)) return;
      this.namedItems.add(index);
    }
    this.text.add(it.name);
  }

  /** A delta event's text (its `delta` string, read in place): the answer began, and one more delta that carried text. */
  private countDelta(data: string): void {
    this.began = true;
    const index = OUTPUT_INDEX.exec(data);
    if (index === null) this.unplaced = true;
    else this.streamedItems.add(Number(index[1]));
    const at = DELTA.exec(data);
    if (at !== null && at[0].endsWith('"')) {
      const start = at.index + at[0].length;
      if (data.charCodeAt(start) !== 0x22) this.deltas++;
      this.text.addString(data, start);
    }
  }

  missingUsageChunk(): null {
    return null;
  }

  /**
   * OpenAI's error event, with the shim's error object beside it: OpenAI's SDKs throw it as an
   * APIError (`event: error`). Then OpenAI's `response.failed`, the response's status and error,
   * for clients that read only the lifecycle events: Codex CLI ignores `event: error`, and saw the
   * stream close without a final event, reconnected and never showed why. In that order, as OpenAI
   * sends them: the AI SDK reports the first of the two and skips the second, where the other order
   * reported the failure twice, and the Agents SDK replaced the message with "ended with
   * unsuccessful terminal state" (docs/decisions.md). `response.failed` has no top-level `error`
   * (the openai SDK would throw it as a second error). After the upstream's own final event (the
   * store failed settling it) the error event alone: a response ends once.
   */
  errorEvent(failure: ShimError): string {
    const error = errorObject(failure);
    const sequence = this.nextSequence;
    const event = `event: error\ndata: ${JSON.stringify({ type: "error", code: error.code, message: error.message, param: error.param, sequence_number: sequence, error })}`;
    if (this.ended) return event;
    const response = {
      id: this.identity?.id ?? `resp_${randomUUID().replaceAll("-", "")}`,
      object: "response",
      created_at: this.identity?.created_at ?? this.request?.createdAt ?? null,
      model: this.identity?.model ?? this.request?.model ?? null,
      status: "failed",
      error: { code: failedResponseCode(failure), message: error.message },
      output: [],
      usage: null,
    };
    return `${event}\n\nevent: response.failed\ndata: ${JSON.stringify({ type: "response.failed", sequence_number: sequence + 1, response })}`;
  }
}

/** What a `response.failed` the shim writes repeats of the upstream's response: as it came, unchecked. */
interface ResponseIdentity {
  id?: unknown;
  created_at?: unknown;
  model?: unknown;
}

/**
 * The `response.error.code` of a `response.failed` the shim writes. Codex decides by it
 * (codex-rs/codex-api/src/sse/responses.rs): `invalid_prompt` ends the turn with the message shown;
 * any code it does not know (`server_error`) it retries, up to 5 times, showing the message. A 4xx
 * (the upstream refused the request) would fail the same way again, so it is final; a 5xx (the
 * upstream failed, cut or timed out, a drain, the store) is transient, worth another try.
 */
const failedResponseCode = (failure: ShimError): "invalid_prompt" | "server_error" => (failure.status < 500 ? "invalid_prompt" : "server_error");

/** A delta event's `output_index` member and its value: the output item it belongs to. */
const OUTPUT_INDEX = /"output_index"\s*:\s*(\d+)/;

/** A delta event's `delta` member up to its value (a string's opening quote). */
const DELTA = /"delta"\s*:\s*"?/;

/** The event's type: its `event:` line (vLLM, OpenAI), else its data's leading `"type"` member. */
function eventType(event: string, data: string): string | null {
  if (event.startsWith("event:")) {
    const end = event.indexOf("\n");
    return event.slice(6, end < 0 ? undefined : end).trim();
  }
  return /^\{\s*"type"\s*:\s*"([^"]*)"/.exec(data)?.[1] ?? null;
}

/** The generated text of a completed output item: a message's parts, a call's arguments (its name: countCallName), reasoning's text and summary. */
function addItemText(into: TokenEstimate, item: unknown): void {
  if (item === null || typeof item !== "object") return;
  const it = item as { content?: unknown; summary?: unknown; arguments?: unknown };
  if (typeof it.arguments === "string") into.add(it.arguments);
  for (const list of [it.content, it.summary]) {
    if (!Array.isArray(list)) continue;
    for (const part of list) {
      const p = part as { text?: unknown; refusal?: unknown } | null;
      if (typeof p?.text === "string") into.add(p.text);
      if (typeof p?.refusal === "string") into.add(p.refusal);
    }
  }
}
