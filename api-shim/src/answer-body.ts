import { CLOSE_BRACE, isJsonSpace, OPEN_BRACE } from "./json-splice.ts";
import { toUsage, type UsageJson } from "./metering.ts";
import type { Usage } from "./pricing.ts";

/**
 * A non-streamed answer's body, kept as the bytes the upstream sent: its usage is read from them
 * and the credit members are spliced in as separate pieces (json-splice.ts), so a large body (an embeddings batch
 * can be tens of MB) is held once instead of as chunks, a string and a spliced copy (five times
 * its size, measured, before).
 */

/** Bodies above this size are not parsed whole just to read their usage. */
const PARSE_WHOLE_BELOW = 64 * 1024;
const USAGE_MEMBER = Buffer.from('"usage":');

/**
 * The usage of a non-streamed JSON response, and whether the body is a JSON object (so members
 * can be spliced in). Large bodies: only the last `"usage":{…}` object is parsed.
 */
export function usageOfBody(raw: Buffer): { usage: Usage | null; isObject: boolean; isError?: true } {
  let first = 0;
  while (first < raw.length && isJsonSpace(raw[first]!)) first++;
  let last = raw.length - 1;
  while (last > first && isJsonSpace(raw[last]!)) last--;
  if (first >= raw.length || raw[first] !== OPEN_BRACE || raw[last] !== CLOSE_BRACE) return { usage: null, isObject: false };
  if (raw.length >= PARSE_WHOLE_BELOW) {
    const usage = lastUsageObject(raw);
    if (usage) return { usage, isObject: true };
  }
  try {
    const body = JSON.parse(raw.toString("utf8")) as { usage?: UsageJson; error?: unknown; choices?: unknown; data?: unknown } | null;
    const isObject = body !== null && typeof body === "object" && !Array.isArray(body);
    // An error body sent with a 2xx status (vLLM 0.15.1 and 0.16.0 answered errors with 200):
    // an error object and no answer in it.
    if (isObject && body.error !== null && typeof body.error === "object" && body.choices === undefined && body.data === undefined) return { usage: null, isObject, isError: true };
    return { usage: isObject ? toUsage(body.usage) : null, isObject };
  } catch {
    return { usage: null, isObject: false };
  }
}

/** The `"usage":{…}` object nearest the end (where vLLM and LiteLLM put it), if it reads as usage. */
function lastUsageObject(raw: Buffer): Usage | null {
  const at = raw.lastIndexOf(USAGE_MEMBER);
  if (at < 0) return null;
  let open = at + USAGE_MEMBER.length;
  while (open < raw.length && isJsonSpace(raw[open]!)) open++;
  if (raw[open] !== OPEN_BRACE) return null;
  let depth = 0;
  for (let i = open; i < raw.length && i < open + 4096; i++) {
    if (raw[i] === OPEN_BRACE) depth++;
    else if (raw[i] === CLOSE_BRACE && --depth === 0) {
      try {
        return toUsage(JSON.parse(raw.toString("utf8", open, i + 1)) as UsageJson);
      } catch {
        return null;
      }
    }
  }
  return null;
}

/** How much follows a `"usage":` member that lastUsageObject reads. */
const USAGE_WINDOW = 4096;

/**
 * The usage of an answer too large to keep, found as it streams by: the bytes from the last
 * `"usage":` member seen (a member split between two pieces included) are kept, nothing else.
 * Scanning the whole answer, not only its end, matters: vLLM puts `prompt_logprobs`, which can be
 * megabytes, after `usage`. (`"usage":` with its quotes can only be a key: inside a JSON string a
 * quote is escaped.)
 */
export class UsageScanner {
  private carry = Buffer.alloc(0);
  private window: Buffer | null = null;

  push(chunk: Uint8Array): void {
    const c = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    if (this.window !== null && this.window.length < USAGE_WINDOW) this.window = Buffer.concat([this.window, c.subarray(0, USAGE_WINDOW - this.window.length)]);
    const at = c.lastIndexOf(USAGE_MEMBER);
    if (at >= 0) {
      this.window = Buffer.from(c.subarray(at, at + USAGE_WINDOW));
    } else {
      // A member split between the previous piece and this one.
      const seam = Buffer.concat([this.carry, c.subarray(0, USAGE_MEMBER.length - 1)]);
      const inSeam = seam.indexOf(USAGE_MEMBER);
      if (inSeam >= 0) this.window = Buffer.concat([seam.subarray(inSeam, this.carry.length), c.subarray(0, USAGE_WINDOW - (this.carry.length - inSeam))]);
    }
    const tail = c.length >= USAGE_MEMBER.length - 1 ? c.subarray(c.length - (USAGE_MEMBER.length - 1)) : Buffer.concat([this.carry, c]).subarray(-(USAGE_MEMBER.length - 1));
    this.carry = Buffer.from(tail);
  }

  usage(): Usage | null {
    return this.window === null ? null : lastUsageObject(this.window);
  }
}
