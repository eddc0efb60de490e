import { partText } from "./content-parts.ts";

/**
 * Text the prompt carries more often than the body does, which the hold's "a token is at least one
 * byte of the body" bound would miss (a charge is capped at the hold). vLLM's harmony path (gpt-oss)
 * authors each tool output `functions.<name>`, with the name of the call it answers, found by its
 * id (responses/harmony.py response_input_to_harmony: a `function_call_output`'s `call_id`;
 * parser/harmony_utils.py parse_chat_input_to_harmony_message: a `tool` message's `tool_call_id`),
 * so a name sent once is rendered once more per output. And on the Responses route the first
 * `system` input item is rendered twice: as the system message's model identity (responses/
 * serving.py _extract_system_message_from_request) and again as a developer message. Chat on
 * gpt-oss peels its leading system message off and renders it once (harmony_utils.py
 * extract_instructions_from_messages), so chat counts only the names. Counted for every model, as
 * which template a model has is not known here: ordinary names are a few bytes, and a system
 * prompt counted twice only holds more.
 */
export function repeatedTexts(kind: "chat" | "responses", body: Record<string, unknown>): string[] {
  const list = kind === "chat" ? body.messages : body.input;
  if (!Array.isArray(list)) return [];
  const items = list.filter((item): item is Record<string, unknown> => item !== null && typeof item === "object" && !Array.isArray(item));
  const texts = kind === "chat" ? chatToolNames(items) : responsesCallNames(items);
  if (kind === "responses") {
    // Of a list, vLLM takes the first `input_text` part's text: every text part bounds it.
    const content = items.find((item) => item.role === "system")?.content;
    if (typeof content === "string") texts.push(content);
    else if (Array.isArray(content)) for (const part of content) texts.push(partText(part) ?? "");
  }
  return texts;
}

/** The bytes of repeatedTexts: one token at most each, as the body's own bytes are held. */
export function repeatedTextBytes(kind: "chat" | "responses", body: Record<string, unknown>): number {
  let bytes = 0;
  for (const text of repeatedTexts(kind, body)) bytes += Buffer.byteLength(text);
  return bytes;
}

/** For each `function_call_output`, the name of the `function_call` of its `call_id` in the body (one from a previous response is held for with it). */
function responsesCallNames(items: Record<string, unknown>[]): string[] {
  const names = new Map<unknown, string>();
  for (const item of items) if (item.type === "function_call") longest(names, item.call_id, item.name);
  return items.flatMap((item) => (item.type === "function_call_output" && names.has(item.call_id) ? [names.get(item.call_id)!] : []));
}

/**
 * For each `tool` message, the name of the assistant's tool call its `tool_call_id` names, keyed as
 * vLLM keys them (harmony_utils.py): a call under its `id`, None (null here) without one; a tool
 * message by `chat_msg.get("tool_call_id", "")`, so one without the member answers a call whose id is "".
 */
function chatToolNames(messages: Record<string, unknown>[]): string[] {
  const names = new Map<unknown, string>();
  for (const m of messages) {
    if (!Array.isArray(m.tool_calls)) continue;
    for (const call of m.tool_calls) {
      if (call === null || typeof call !== "object") continue;
      const fn = (call as { function?: unknown }).function;
      longest(names, "id" in call ? (call as { id?: unknown }).id : null, fn !== null && typeof fn === "object" ? (fn as { name?: unknown }).name : undefined);
    }
  }
  return messages.flatMap((m) => {
    const id = "tool_call_id" in m ? m.tool_call_id : "";
    return m.role === "tool" && names.has(id) ? [names.get(id)!] : [];
  });
}

/** Keeps the longest of the names given one id: vLLM takes one of them (the last before, or the last of all), and the longest bounds it. */
function longest(names: Map<unknown, string>, id: unknown, name: unknown): void {
  if (typeof name !== "string") return;
  const kept = names.get(id);
  if (kept === undefined || Buffer.byteLength(name) > Buffer.byteLength(kept)) names.set(id, name);
}
