import { errorObject, type ShimError } from "../errors.ts";
import { TokenEstimate, type Usage } from "../money/pricing.ts";
import type { Meter, MeteredEvent } from "./meter.ts";
import { eventData } from "./sse.ts";
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
  /** The text of the output items completed (`response.output_item.done`), for a stream that delivered them without deltas. */
  private readonly itemsText = new TokenEstimate();
  /** The final event was `response.failed`. */
  private failed = false;
  /** The sequence number the next event would have: an error event the shim writes takes it. */
  private nextSequence = 0;
  private readonly maxCompletion: number;
  readonly endLine = "";

  /** `maxCompletion`: the most output tokens the request may generate (the hold's bound). */
  constructor(maxCompletion: number) {
    this.maxCompletion = maxCompletion;
  }

  process(event: string): MeteredEvent {
    const data = eventData(event);
    if (data === null) return { kind: "comment", forward: event };
    // The Responses API has no [DONE], and the relay stops at the final event: one before it is
    // an upstream that ended the answer without its final event, told to the client as a failure
    // (its SDK would otherwise wait for a response that never comes) and charged as a cut stream.
    if (data === "[DONE]") return this.ended ? { kind: "done" } : { kind: "error", data };
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
    if (kind === "response.output_item.done") addItemText(this.itemsText, parsed.item);
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

  /** The final event's usage; else (cut short, or a final event without usage) the estimate of what was delivered. */
  usage(promptOwed = true, promptEstimate: () => number = () => 0): Usage {
    if (this.final !== null) return this.outputReported ? this.final : { ...this.final, completionTokens: this.counted() };
    return { promptTokens: promptOwed && this.began ? promptEstimate() : 0, completionTokens: this.counted() };
  }

  /** The output delivered: each delta at least one token, or the estimate of their text when more, never above the bound. */
  private counted(): number {
    return deliveredTokens(this.deltas, Math.max(this.text.tokens, this.itemsText.tokens), this.maxCompletion);
  }

  /** A delta event's text (its `delta` string, read in place): the answer began, and one more delta that carried text. */
  private countDelta(data: string): void {
    this.began = true;
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

  /** OpenAI's error event, with the shim's error object beside it: OpenAI's SDKs throw it as an APIError (`event: error`). */
  errorEvent(failure: ShimError): string {
    const error = errorObject(failure);
    const body = { type: "error", code: error.code, message: error.message, param: error.param, sequence_number: this.nextSequence, error };
    return `event: error\ndata: ${JSON.stringify(body)}`;
  }
}

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

/** The generated text of a completed output item: a message's parts, a call's arguments, reasoning's text and summary. */
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
