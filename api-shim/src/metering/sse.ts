import type { AnswerLease } from "../limits/answer-memory.ts";

/**
 * Server-sent events, split as they arrive. `sseEvents` yields each whole event (the text before
 * its blank line) as soon as its last byte is in; it never waits for more than that and never
 * holds more than one partial event. An unterminated event at the end of the body is dropped,
 * as the SSE spec says: a cut-off JSON chunk must not reach the client.
 *
 * Work is proportional to the bytes that arrive: each chunk is searched once (plus one character
 * of the one before it, for a blank line split between them), and a partial event is kept as
 * pieces joined once, when it ends. Searching the whole pending text on every chunk made one
 * large event (vLLM's first chunk with `echo` and `logprobs` holds the whole prompt) quadratic:
 * seconds of blocked event loop for a few MB.
 *
 * With a `lease`, a partial event's bytes (characters) are taken from the memory answers may hold
 * (answer-memory.ts) as they arrive, and given back once the caller asks for the next event (it
 * has sent this one) or stops; an event that ends within the chunk it began in (a token chunk)
 * takes nothing. While there is no room the body is not read (its bytes wait in the upstream's
 * socket); an event that finds none within the wait is cut as one past `maxEventLength` is.
 * A token chunk split across two reads is the common partial event under load: it costs no new
 * array and no more of the lease than taking and giving back its bytes (which wakes no reader
 * waiting for room, answer-memory.ts).
 */
export async function* sseEvents(body: AsyncIterable<Uint8Array | string>, maxEventLength = Infinity, lease?: AnswerLease): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  const pending: string[] = []; // the partial event, in pieces (emptied, not replaced)
  let pendingLength = 0;
  let took = false; // the partial event took bytes from the lease
  let endsInNewline = false; // the partial event's last character is "\n"
  let afterCR = false; // the previous chunk ended in "\r", so a "\n" starting this one is its CRLF
  try {
    for await (const chunk of body) {
      let text = typeof chunk === "string" ? chunk : decoder.decode(chunk, { stream: true });
      if (afterCR && text.startsWith("\n")) {
        text = text.slice(1);
        afterCR = false;
      }
      // Nothing left (the start of a multi-byte character, or only that "\n"): afterCR stands as is.
      if (text === "") continue;
      afterCR = text.endsWith("\r");
      if (text.includes("\r")) text = text.replace(/\r\n?/g, "\n"); // CRLF and CR line endings are valid SSE
      let start = 0;
      if (endsInNewline && text.startsWith("\n")) {
        // The blank line is split between the chunks: the event is what was pending, minus its "\n".
        const event = pending.join("").slice(0, -1);
        pending.length = 0;
        pendingLength = 0;
        start = 1;
        if (took) lease!.readDone(); // read whole: now only waiting to be sent
        if (event !== "") yield event;
        if (took) lease!.sent();
        took = false;
      }
      let end: number;
      while ((end = text.indexOf("\n\n", start)) !== -1) {
        let event = text.slice(start, end);
        if (pending.length > 0) {
          pending.push(event);
          event = pending.join("");
          pending.length = 0;
          pendingLength = 0;
        }
        start = end + 2;
        if (took) lease!.readDone();
        if (event !== "") yield event;
        if (took) lease!.sent();
        took = false;
      }
      if (start < text.length) {
        const added = text.length - start;
        pending.push(start === 0 ? text : text.slice(start));
        pendingLength += added;
        // An event that never ends (an upstream's bug) must not take the process's memory.
        if (pendingLength > maxEventLength) throw new EventTooLargeError(maxEventLength);
        // Nor may many large ones at once (streams stalled mid-event): what they hold is shared.
        if (lease && !lease.takeNow(added, false, true) && !(await lease.take(added, true))) throw new EventTooLargeError(null);
        took = lease !== undefined;
        endsInNewline = text.endsWith("\n");
      } else {
        endsInNewline = false;
      }
    }
  } finally {
    lease?.sent(); // the partial event is dropped (the body ended, broke or was cut), or the caller stopped
  }
}

/** An upstream event past SHIM_MAX_ANSWER_BYTES, or (`noRoom`) that found no room in SHIM_ANSWER_MEMORY_BYTES within its wait. */
export class EventTooLargeError extends Error {
  /** `limit`: the length the event went past; null: it found no room in the answer memory. */
  constructor(limit: number | null) {
    super(limit === null ? "an upstream event found no room in SHIM_ANSWER_MEMORY_BYTES within its wait" : `an upstream event is longer than ${limit} characters (SHIM_MAX_ANSWER_BYTES)`);
    this.name = "EventTooLargeError";
  }
}

/** The data of an event (its `data:` lines joined by newlines), or null for comment-only events. */
export function eventData(event: string): string | null {
  // Fast path: vLLM and LiteLLM send exactly one `data: ` line per event.
  if (event.startsWith("data: ") && !event.includes("\n")) return event.slice(6);
  let data: string | null = null;
  for (const line of event.split("\n")) {
    if (!line.startsWith("data:")) continue;
    const value = line.slice(line.startsWith("data: ") ? 6 : 5);
    data = data === null ? value : `${data}\n${value}`;
  }
  return data;
}

/**
 * The event with its data replaced: `data` (its lines, one `data:` line each) where the event's
 * first data line was, its other lines (`id:`, `event:`, `retry:`, comments) kept as they were.
 * Writing the new data on one line would break an event whose data spanned several (each line
 * after the first would lose its `data:` prefix), and writing only the data would drop the rest.
 */
export function replaceEventData(event: string, data: string): string {
  const dataLines = `data: ${data.replaceAll("\n", "\ndata: ")}`;
  if (!event.includes("\n")) return dataLines; // one data line: vLLM's and LiteLLM's events
  const lines: string[] = [];
  let placed = false;
  for (const line of event.split("\n")) {
    if (!line.startsWith("data:")) lines.push(line);
    else if (!placed) {
      lines.push(dataLines);
      placed = true;
    }
  }
  return lines.join("\n");
}
