/**
 * Server-sent events, split as they arrive. `sseEvents` yields each whole event (the text before
 * its blank line) as soon as its last byte is in; it never waits for more than that and never
 * holds more than one partial event. An unterminated event at the end of the body is dropped,
 * as the SSE spec says: a cut-off JSON chunk must not reach the client.
 */
export async function* sseEvents(body: AsyncIterable<Uint8Array | string>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buf = "";
  for await (const chunk of body) {
    buf += typeof chunk === "string" ? chunk : decoder.decode(chunk, { stream: true });
    if (buf.includes("\r")) buf = buf.replace(/\r\n?/g, "\n"); // CRLF and CR line endings are valid SSE
    let end: number;
    while ((end = buf.indexOf("\n\n")) !== -1) {
      const event = buf.slice(0, end);
      buf = buf.slice(end + 2);
      if (event !== "") yield event;
    }
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
