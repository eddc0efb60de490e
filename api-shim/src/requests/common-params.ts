import { invalidParam } from "../errors.ts";
import { hasControlCharacters } from "../names.ts";

/**
 * The members several inference routes read the same way.
 */

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
