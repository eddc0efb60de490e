import type { MeteredEvent } from "./meter.ts";

/**
 * What an event is before its data's JSON is read, the same for every meter (metering.ts,
 * responses-stream.ts): the stream's end, or, for an event without data, a comment or an error
 * told outside SSE's fields.
 */

/**
 * Whether an event's data is `[DONE]`, whitespace after it allowed: some servers write a space
 * or a tab after it, and OpenAI's Python SDK ends a stream on data that starts with `[DONE]`.
 * Relayed as a chunk, it made the openai SDK (Node) throw a SyntaxError, and the stream end as cut.
 */
export function isDone(data: string): boolean {
  return data.startsWith("[DONE]") && data.trimEnd() === "[DONE]";
}

/**
 * An event without data: a comment (a keep-alive, a `retry:` line), relayed as it came; or an
 * error told in an `error:` line holding a JSON object, which is no SSE field (browsers ignore
 * it). llama.cpp's server before PR #16109 (2025-09) tells a failure after its 200 that way,
 * `error: {"code","message","type"}`, then `data: [DONE]`: relayed as a comment, its message
 * (the server's internals) reached the client, the SDK saw a whole stream and it was charged as
 * one. It is the error event vLLM sends as `data: {"error":…}`, and is handled as that one is.
 */
export function eventWithoutData(event: string): MeteredEvent {
  for (const line of event.split("\n")) {
    if (!line.startsWith("error:")) continue;
    try {
      const error: unknown = JSON.parse(line.slice(6));
      if (error !== null && typeof error === "object" && !Array.isArray(error)) return { kind: "error", data: JSON.stringify({ error }) };
    } catch {}
  }
  return { kind: "comment", forward: event };
}
