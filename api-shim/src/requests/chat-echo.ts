import { isTextPart, partText } from "./content-parts.ts";
import { pydanticBool } from "./common-params.ts";

/** Which chat message vLLM's `echo` repeats at the start of the answer (inference-request.ts). */

/**
 * Whether vLLM's chat stream echoes the last message: only one with content whose role is the
 * answer's (the assistant's, or with `add_generation_prompt: false` the last message's own),
 * sent after the role's chunk. Otherwise the first text is generated, and must count.
 */
export function echoesLastMessage(b: Record<string, unknown>): boolean {
  const last = echoable(b);
  if (last === null) return false;
  const c = last.content;
  if (typeof c === "string") return c !== "";
  // vLLM keeps a part's text only when not empty (`if parse_res:`), joins them with "\n" and
  // skips the others: a message of empty text parts is not echoed.
  const texts = Array.isArray(c) ? c.map(partText).filter((t) => t !== undefined && t !== "") : [];
  return texts.join("\n") !== "";
}

/** The last message when its role is the answer's (the assistant's, or with `add_generation_prompt: false` its own): the one vLLM's chat echoes, if it has content. */
function echoable(b: Record<string, unknown>): Record<string, unknown> | null {
  const last = Array.isArray(b.messages) ? (b.messages[b.messages.length - 1] as Record<string, unknown> | null) : null;
  if (last === null || typeof last !== "object") return null;
  return pydanticBool(b.add_generation_prompt) !== false && last.role !== "assistant" ? null : last;
}

/**
 * Whether the message vLLM would echo holds a part that is not text. vLLM joins the echoed parts'
 * `text` once the answer is generated (chat_completion_full_generator; the stream's echo chunk
 * likewise), and a template of the "openai" content format (Gemma 3, Qwen2.5-VL) leaves an image
 * part without one: a KeyError, a 500 after the whole generation, charged nothing, as often as
 * the client likes.
 */
export function echoesMedia(b: Record<string, unknown>): boolean {
  const content = echoable(b)?.content;
  return Array.isArray(content) && content.some((part) => !isTextPart(part));
}
