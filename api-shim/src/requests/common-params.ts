import { invalidParam, ShimError } from "../errors.ts";
import { hasControlCharacters } from "../names.ts";
import { refuseUpstreamControls } from "../providers/upstream-controls.ts";

/**
 * The members several inference routes read the same way.
 */

/**
 * An inference request's body, as every route first reads it: a JSON object, without the
 * members that would steer LiteLLM (refuseUpstreamControls), with its model (requiredModel).
 */
export function inferenceBody(body: unknown): { b: Record<string, unknown>; model: string } {
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new ShimError("invalid_request", { message: "Request body must be a JSON object." });
  }
  const b = body as Record<string, unknown>;
  refuseUpstreamControls(b);
  return { b, model: requiredModel(b) };
}

/**
 * The bytes of `parts` as JSON.stringify writes each (the JSON a chat template prints again with
 * `tojson`), skipping those absent or empty lists.
 */
export function jsonBytes(parts: readonly unknown[]): number {
  let bytes = 0;
  for (const part of parts) {
    if (part === undefined || part === null || (Array.isArray(part) && part.length === 0)) continue;
    bytes += Buffer.byteLength(JSON.stringify(part));
  }
  return bytes;
}

/**
 * The `model` member every inference route requires (chat, completions, embeddings, responses):
 * a non-empty string of at most 256 characters without control characters (it goes on log lines
 * and in usage rows). Returns it.
 */
export function requiredModel(b: Record<string, unknown>): string {
  if (typeof b.model !== "string" || b.model.trim() === "") throw invalidParam("'model' is required and must be a non-empty string.", "model");
  if (b.model.length > 256) throw invalidParam("'model' is too long.", "model");
  if (hasControlCharacters(b.model)) throw invalidParam("'model' must not contain control characters.", "model");
  return b.model;
}

/** `stream` (chat, completions, responses): a boolean, absent or null meaning false. */
export function streamFlag(b: Record<string, unknown>): boolean {
  if (b.stream === undefined || b.stream === null) return false;
  if (typeof b.stream !== "boolean") throw invalidParam("'stream' must be a boolean.", "stream");
  return b.stream;
}

/** A bool as vLLM's pydantic reads one (lax mode: 1, "yes", "off", …); undefined when it is none. */
export function pydanticBool(v: unknown): boolean | undefined {
  if (v === true || v === 1 || (typeof v === "string" && /^(?:1|on|t|true|y|yes)$/i.test(v))) return true;
  if (v === false || v === 0 || (typeof v === "string" && /^(?:0|off|f|false|n|no)$/i.test(v))) return false;
  return undefined;
}

/**
 * Which member brings the request's own Jinja chat template (`chat_template`, or one inside
 * `chat_template_kwargs`), or null. vLLM renders one on chat when started with
 * --trust-request-chat-template, and LiteLLM passes both through: a chat is not refused for it
 * (that would break clients of such a server), its hold counts the model's context instead.
 */
export function requestChatTemplate(b: Record<string, unknown>): "chat_template" | "chat_template_kwargs" | null {
  if (b.chat_template !== undefined && b.chat_template !== null) return "chat_template";
  const kwargs = b.chat_template_kwargs;
  return kwargs !== null && typeof kwargs === "object" && (kwargs as Record<string, unknown>).chat_template != null ? "chat_template_kwargs" : null;
}
