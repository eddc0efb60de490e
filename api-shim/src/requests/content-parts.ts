/**
 * A chat message's content parts as vLLM reads them (chat_utils._parse_chat_message_content_part):
 * a plain string is text, and so are the parts below, each with its text in its own member; any
 * other part (an image, audio, video, an unknown type, a malformed part) is media.
 */
const TEXT_MEMBER = new Map<unknown, string>([
  ["text", "text"],
  ["input_text", "text"],
  ["output_text", "text"],
  ["refusal", "refusal"],
  ["thinking", "thinking"],
  // A Responses API reasoning item's content, sent back in a later request's input.
  ["reasoning_text", "text"],
]);

/** Whether vLLM reads the part as text (whatever its text member holds): the hold and the estimate count it as text, bounded by its bytes. */
export function isTextPart(part: unknown): boolean {
  return typeof part === "string" || textMember(part) !== undefined;
}

/** The text vLLM reads from a part; undefined for media, and for a text part without its text (vLLM skips it). */
export function partText(part: unknown): string | undefined {
  if (typeof part === "string") return part;
  const member = textMember(part);
  const text = member === undefined ? undefined : (part as Record<string, unknown>)[member];
  return typeof text === "string" ? text : undefined;
}

// vLLM reads a part by its type only without a `uuid`; with one, by the media member it carries
// (`_parse_chat_message_content_mm_part`). Such a part is refused (media-urls.ts refuseUnsafeMedia),
// and counts as media here, as vLLM reads it, for what reads parts before that refusal.
const textMember = (part: unknown): string | undefined =>
  part !== null && typeof part === "object" && ((part as { uuid?: unknown }).uuid ?? null) === null
    ? TEXT_MEMBER.get((part as { type?: unknown }).type) : undefined;

/**
 * The parts that are not text in the messages' contents (those that are lists). Unknown part types
 * count as media: a hold too large is only a hold, one too small undercharges (the cost is capped by it).
 */
export function mediaParts(messages: unknown): number {
  let count = 0;
  eachMessagePart(messages, (item, from) => {
    if (from === "content" && !isTextPart(item)) count++;
  });
  return count;
}

/**
 * The one walk of chat messages: calls `visit` with each message of `messages` that is an object
 * (`from` null), then with each of its parts, named by the list they are in: its content's parts
 * (a content that is a list) and its tool calls (an assistant turn's `tool_calls`).
 */
export function eachMessagePart(messages: unknown, visit: (item: unknown, from: "content" | "tool_calls" | null) => void): void {
  if (!Array.isArray(messages)) return;
  for (const m of messages) {
    if (m === null || typeof m !== "object") continue;
    visit(m, null);
    const { content, tool_calls: calls } = m as { content?: unknown; tool_calls?: unknown };
    if (Array.isArray(content)) for (const part of content) visit(part, "content");
    // A Responses API function call's output given as parts (text, images, files) is content too.
    else if ((m as { type?: unknown }).type === "function_call_output" && Array.isArray((m as { output?: unknown }).output)) {
      for (const part of (m as { output: unknown[] }).output) visit(part, "content");
    }
    if (Array.isArray(calls)) for (const call of calls) visit(call, "tool_calls");
  }
}
