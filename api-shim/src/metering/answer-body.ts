import { CLOSE_BRACE, isJsonSpace, OPEN_BRACE } from "../requests/json-splice.ts";
import { toUsage, type UsageJson } from "./usage-json.ts";
import type { Usage } from "../money/pricing.ts";

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
    const body = JSON.parse(raw.toString("utf8")) as { usage?: UsageJson; error?: unknown; choices?: unknown; data?: unknown; object?: unknown } | null;
    const isObject = body !== null && typeof body === "object" && !Array.isArray(body);
    // An error body sent with a 2xx status (vLLM 0.15.1 and 0.16.0 answered errors with 200):
    // an error object and no answer in it. A Responses answer (`object: "response"`) has `error`,
    // null or the failure's, beside its output: one that failed without usage is an error too, as
    // its stream's `response.failed` is (responses-stream.ts); with usage it is charged that.
    const hasError = isObject && body.error !== null && typeof body.error === "object";
    const usage = isObject ? toUsage(body.usage) : null;
    if (hasError && (body.object === "response" ? usage === null : body.choices === undefined && body.data === undefined)) return { usage: null, isObject, isError: true };
    return { usage, isObject };
  } catch {
    return { usage: null, isObject: false };
  }
}

/** The `"usage":{…}` object nearest the end (where vLLM and LiteLLM put it), if it reads as usage. */
function lastUsageObject(raw: Buffer): Usage | null {
  const at = raw.lastIndexOf(USAGE_MEMBER);
  return at < 0 ? null : usageObjectAt(raw, at);
}

/** The longest usage object read after its member. */
const MAX_USAGE_OBJECT = 4096;

/** The `"usage":{…}` member at `at`, if its object is there whole and reads as usage. */
function usageObjectAt(raw: Buffer, at: number): Usage | null {
  let open = at + USAGE_MEMBER.length;
  while (open < raw.length && isJsonSpace(raw[open]!)) open++;
  if (raw[open] !== OPEN_BRACE) return null;
  let depth = 0;
  for (let i = open; i < raw.length && i < open + MAX_USAGE_OBJECT; i++) {
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

const NOTHING = Buffer.alloc(0);

/** What follows a member that usageObjectAt may read: the object, and the whitespace before it. */
const USAGE_WINDOW = USAGE_MEMBER.length + 64 + MAX_USAGE_OBJECT;

/**
 * The usage of an answer too large to keep, found as it streams by: the last `"usage":` member
 * whose object reads as usage (a `"usage": null` or a string further on does not replace it),
 * with only the bytes after the latest member kept. Scanning the whole answer, not only its end,
 * matters: vLLM puts `prompt_logprobs`, which can be megabytes, after `usage`. (`"usage":` with
 * its quotes can only be a key: inside a JSON string a quote is escaped. A nested object with a
 * `usage` key that reads as usage, after the answer's own, would win; no upstream sends one.)
 */
export class UsageScanner {
  /** The last bytes of what came before, to find a member split between two pieces. */
  private carry = NOTHING;
  /** From the latest member on, up to USAGE_WINDOW bytes. */
  private pending: Buffer | null = null;
  private found: Usage | null = null;

  push(chunk: Uint8Array): void {
    const c = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    if (this.pending !== null && this.pending.length < USAGE_WINDOW) this.pending = Buffer.concat([this.pending, c.subarray(0, USAGE_WINDOW - this.pending.length)]);
    // A member split between the previous piece and this one (the seam holds no other).
    const keep = USAGE_MEMBER.length - 1;
    const seam = Buffer.concat([this.carry, c.subarray(0, keep)]);
    const split = seam.indexOf(USAGE_MEMBER);
    if (split >= 0) {
      this.settlePending();
      this.pending = Buffer.concat([seam.subarray(split, this.carry.length), c.subarray(0, USAGE_WINDOW - (this.carry.length - split))]);
    }
    for (let at = c.indexOf(USAGE_MEMBER); at >= 0; at = c.indexOf(USAGE_MEMBER, at + 1)) {
      this.settlePending();
      this.pending = Buffer.from(c.subarray(at, at + USAGE_WINDOW));
    }
    this.carry = Buffer.from(c.length >= keep ? c.subarray(c.length - keep) : Buffer.concat([this.carry, c]).subarray(-keep));
  }

  usage(): Usage | null {
    this.settlePending();
    return this.found;
  }

  private settlePending(): void {
    if (this.pending === null) return;
    this.found = usageObjectAt(this.pending, 0) ?? this.found;
    this.pending = null;
  }
}
