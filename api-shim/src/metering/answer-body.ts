import { CLOSE_BRACE, CLOSE_BRACKET, isJsonSpace, OPEN_BRACE, OPEN_BRACKET } from "../requests/json-splice.ts";
import { BACKSLASH, QUOTE, stringEnd } from "../requests/json-shape.ts";
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

/**
 * The usage of a non-streamed JSON response, and whether the body is a JSON object (so members
 * can be spliced in). Large bodies: only their own usage object is parsed (UsageScanner), as
 * `read` scanned it while the body arrived (else here, at once).
 */
export function usageOfBody(raw: Buffer, read?: AnswerUsage): { usage: Usage | null; isObject: boolean; isError?: true } {
  let first = 0;
  while (first < raw.length && isJsonSpace(raw[first]!)) first++;
  let last = raw.length - 1;
  while (last > first && isJsonSpace(raw[last]!)) last--;
  if (first >= raw.length || raw[first] !== OPEN_BRACE || raw[last] !== CLOSE_BRACE) return { usage: null, isObject: false };
  if (raw.length >= PARSE_WHOLE_BELOW) {
    const scanner = read ?? new UsageScanner();
    if (!read) scanner.push(raw);
    const usage = scanner.usage();
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

/**
 * The usage of a non-streamed answer read as its pieces arrive (readBody gives it each): nothing
 * is done while the answer is under PARSE_WHOLE_BELOW bytes (usageOfBody parses such an answer
 * whole), and from there on its own usage is scanned for piece by piece, between reads. A scan of
 * the whole answer once it was in held the event loop, every stream waiting: 35 ms for a 40 MB
 * embeddings batch, about 0.5 s at SHIM_MAX_ANSWER_BYTES' 256 MiB.
 */
export class AnswerUsage {
  /** The pieces of an answer still under PARSE_WHOLE_BELOW bytes (null once they were scanned). */
  private early: Uint8Array[] | null = [];
  private size = 0;
  private readonly scanner = new UsageScanner();

  push(chunk: Uint8Array): void {
    if (this.early === null) return this.scanner.push(chunk);
    this.early.push(chunk);
    this.size += chunk.byteLength;
    if (this.size >= PARSE_WHOLE_BELOW) this.scanEarly();
  }

  /** The answer's own usage, the pieces of a small answer scanned now (one past a low SHIM_MAX_ANSWER_BYTES). */
  usage(): Usage | null {
    this.scanEarly();
    return this.scanner.usage();
  }

  private scanEarly(): void {
    if (this.early === null) return;
    for (const c of this.early) this.scanner.push(c);
    this.early = null;
  }
}

/** The longest usage object read after its member. */
const MAX_USAGE_OBJECT = 4096;

const COLON = 0x3a;
/** The bytes of the key looked for. */
const USAGE_KEY = Buffer.from("usage");

/** The bytes that open or close a string, an object or an array. */
const STRUCTURAL = new Uint8Array(256);
for (const b of [QUOTE, OPEN_BRACE, CLOSE_BRACE, OPEN_BRACKET, CLOSE_BRACKET]) STRUCTURAL[b] = 1;

/** The backslashes right before `end`, not counting any before `start`: an odd run at a piece's end escapes the next piece's first byte. */
function backslashesBefore(bytes: Buffer, end: number, start: number): number {
  let k = end;
  while (k > start && bytes[k - 1] === BACKSLASH) k--;
  return end - k;
}

/** Where UsageScanner is after the answer's own string "usage": the key, its colon, then its value. */
const After = { Nothing: 0, UsageString: 1, UsageColon: 2 } as const;

/**
 * The usage of a non-streamed answer, found as its bytes go by, in one piece or many: the answer's
 * own `usage` member (the top-level object's) whose value is an object that reads as usage (a
 * `"usage": null` or a string further on does not replace it; of two such members the last wins,
 * as JSON.parse would have it). Only bytes of that object are kept. Scanning the whole answer, not
 * only its end, matters: vLLM puts `prompt_logprobs`, which can be megabytes, after `usage`. And
 * only the top level: an answer can echo the client's own JSON, with a `usage` member of the
 * client's choosing, before or after its usage (a Responses answer's `tools`, and vLLM's
 * `input_messages` with `enable_response_messages`, where a gpt-oss prompt carries each tool's
 * JSON schema), which a search for the member's bytes took for the answer's.
 */
export class UsageScanner {
  /** Objects and arrays open (1: inside the answer's own object). */
  private depth = 0;
  private inString = false;
  /** The byte after a backslash, in a string. */
  private escaped = false;
  /** In a string at the top level: bytes read, and whether they are "usage" so far. */
  private keyLength = 0;
  private keyMatches = false;
  private after: (typeof After)[keyof typeof After] = After.Nothing;
  /** The usage object's bytes read so far, while it is read. */
  private captured: Buffer[] | null = null;
  private capturedLength = 0;
  private found: Usage | null = null;

  push(chunk: Uint8Array): void {
    const c = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    const n = c.length;
    // The state in locals while the piece is read (a field's read and write cost more per byte).
    let { depth, inString, escaped, keyLength, keyMatches, after } = this;
    // Where the usage object starts in this piece, while it is read.
    let from = 0;
    let i = 0;
    while (i < n) {
      if (inString) {
        if (depth === 1 && keyLength <= USAGE_KEY.length) {
          // A top-level string's first bytes, one at a time: is it "usage"?
          const b = c[i]!;
          keyMatches &&= keyLength < USAGE_KEY.length ? b === USAGE_KEY[keyLength] : b === QUOTE && !escaped;
          keyLength++;
          if (escaped) escaped = false;
          else if (b === BACKSLASH) escaped = true;
          else if (b === QUOTE) {
            inString = false;
            after = keyMatches && keyLength === USAGE_KEY.length + 1 ? After.UsageString : After.Nothing;
          }
          i++;
          continue;
        }
        if (escaped) {
          escaped = false;
          i++;
          continue;
        }
        // The rest of the string, to its closing quote in this piece (stringEnd: a native search
        // over long text); if it goes on in the next, whether this one ends inside an escape.
        const start = i;
        const q = stringEnd(c, start - 1);
        if (q < 0) {
          escaped = backslashesBefore(c, n, start) % 2 === 1;
          break;
        }
        i = q + 1;
        inString = false;
        if (depth === 1) after = After.Nothing; // longer than "usage"
        continue;
      }
      // Below the top level only quotes and brackets matter: the bytes between (numbers, an
      // embedding's thousands) are passed over without the rest of the tests.
      if (depth > 1) {
        while (i < n && STRUCTURAL[c[i]!] === 0) i++;
        if (i === n) break;
      }
      const b = c[i]!;
      i++;
      if (isJsonSpace(b)) continue;
      if (after === After.UsageString) after = b === COLON ? After.UsageColon : After.Nothing;
      else if (after === After.UsageColon) {
        after = After.Nothing;
        if (b === OPEN_BRACE && depth === 1) {
          this.captured = [];
          this.capturedLength = 0;
          from = i - 1;
        }
      }
      if (b === QUOTE) {
        inString = true;
        keyLength = 0;
        keyMatches = true;
      } else if (b === OPEN_BRACE || b === OPEN_BRACKET) depth++;
      else if (b === CLOSE_BRACE || b === CLOSE_BRACKET) {
        depth--;
        if (depth === 1 && this.captured !== null) {
          this.keep(c.subarray(from, i));
          this.settle();
        }
      }
    }
    if (this.captured !== null) this.keep(c.subarray(from));
    Object.assign(this, { depth, inString, escaped, keyLength, keyMatches, after });
  }

  usage(): Usage | null {
    return this.found;
  }

  /** More of the usage object; one past MAX_USAGE_OBJECT is no usage (it is not read). */
  private keep(bytes: Buffer): void {
    if (this.captured === null) return;
    this.capturedLength += bytes.length;
    if (this.capturedLength > MAX_USAGE_OBJECT) this.captured = null;
    else this.captured.push(Buffer.from(bytes));
  }

  /** The usage object is whole: it is the usage if it reads as one. */
  private settle(): void {
    const bytes = this.captured;
    this.captured = null;
    if (bytes === null) return;
    try {
      this.found = toUsage(JSON.parse(Buffer.concat(bytes).toString("utf8")) as UsageJson) ?? this.found;
    } catch {
      // Not JSON after all (the answer is malformed): not the usage.
    }
  }
}
