import { BACKSLASH, QUOTE, stringEnd } from "./json-shape.ts";

/**
 * Changing a JSON object's members while leaving the rest of its text as it was: the credit
 * members (`credits_charged`, …) added at the end of an object the upstream sent, and a request's
 * `stream_options` replaced (inference-request.ts, upstreamBody). One implementation, on bytes: a
 * non-streamed answer is kept as the upstream's bytes (answer-body.ts), a request is forwarded as
 * the client's, a stream's usage event is a string.
 */

export const OPEN_BRACE = 0x7b;
export const CLOSE_BRACE = 0x7d;
export const OPEN_BRACKET = 0x5b;
export const CLOSE_BRACKET = 0x5d;
/** JSON's whitespace: space, tab, line feed, carriage return. */
export const isJsonSpace = (c: number) => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;

/**
 * The body with `"name":value` members added at the end of its last object, as pieces to write
 * in order (the body's bytes are not copied). `raw` must end in a JSON object.
 */
export function spliceJsonBytes(raw: Buffer, members: Record<string, string>): Buffer[] {
  const end = raw.lastIndexOf(CLOSE_BRACE);
  let before = end - 1;
  while (before >= 0 && isJsonSpace(raw[before]!)) before--;
  const empty = raw[before] === OPEN_BRACE; // `{}`: no comma before the first member
  return [raw.subarray(0, end), Buffer.from(`${empty ? "" : ","}${jsonMembers(members)}`), raw.subarray(end)];
}

/**
 * `raw` (a JSON object, as JSON.parse read it) with `members` (each `"name":value,`, its comma
 * included) spliced in first, after its `{`: bytes, so nothing of the client's is re-encoded.
 */
export function withFirstMembers(raw: Buffer, members: readonly Buffer[]): Buffer {
  const open = raw.indexOf(OPEN_BRACE) + 1;
  return Buffer.concat([raw.subarray(0, open), ...members, raw.subarray(open)]);
}

/** spliceJsonBytes for text (an SSE event's `data: {…}`); text without an object is returned as it is. */
export function spliceJson(text: string, members: Record<string, string>): string {
  if (!text.includes("}")) return text;
  return Buffer.concat(spliceJsonBytes(Buffer.from(text, "utf8"), members)).toString("utf8");
}

/** `"name":value,…`: the values are JSON texts already. */
function jsonMembers(members: Record<string, string>): string {
  return Object.entries(members).map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(",");
}

/**
 * The body with the value of its own member `name` replaced by `value` (a JSON text), as pieces
 * like spliceJsonBytes's; null when it has none. `raw` must be a JSON object (one JSON.parse
 * read), and the member replaced is the one JSON.parse read: its key compared as decoded
 * (`"stream\u005foptions"` is `stream_options`), and of two the last. One walk over the members,
 * strings skipped by a native search (json-shape.ts's stringEnd), instead of a second parse.
 */
export function spliceMemberValue(raw: Buffer, name: string, value: string): Buffer[] | null {
  const found = memberRange(raw, name);
  return found && [raw.subarray(0, found[0]), Buffer.from(value), raw.subarray(found[1])];
}

/**
 * `text` (a JSON object) with `members` added at the end of its member `name`'s object too, as
 * spliceJson adds them at the end of the whole: a Responses stream's final event carries the
 * credit figures at its top level and in its `response`, which is what the SDKs' finalResponse()
 * returns. `text` as it is when that member is not an object.
 */
export function spliceJsonMember(text: string, name: string, members: Record<string, string>): string {
  const raw = Buffer.from(text, "utf8");
  const found = memberRange(raw, name);
  if (found === null || raw[found[0]] !== OPEN_BRACE) return text;
  return Buffer.concat([raw.subarray(0, found[0]), ...spliceJsonBytes(raw.subarray(found[0], found[1]), members), raw.subarray(found[1])]).toString("utf8");
}

/**
 * spliceMemberValue for every member `name` of the object, not only the one JSON.parse read: of
 * duplicates, a reader that takes the first would otherwise see the client's value. null when it
 * has none.
 */
export function spliceEveryMemberValue(raw: Buffer, name: string, value: string): Buffer[] | null {
  const found = memberRanges(raw, name);
  if (found.length === 0) return null;
  const pieces: Buffer[] = [];
  let from = 0;
  for (const [start, end] of found) pieces.push(raw.subarray(from, start), Buffer.from(value)), (from = end);
  pieces.push(raw.subarray(from));
  return pieces;
}

/** Where the value of the object `raw`'s own member `name` starts and ends (see spliceMemberValue); null when it has none. */
function memberRange(raw: Buffer, name: string): [number, number] | null {
  return memberRanges(raw, name).at(-1) ?? null;
}

/** Where the value of each of the object `raw`'s own members `name` starts and ends, in order. */
function memberRanges(raw: Buffer, name: string): [number, number][] {
  const key = Buffer.from(JSON.stringify(name));
  const found: [number, number][] = [];
  let i = skipSpace(raw, raw.indexOf(OPEN_BRACE) + 1);
  while (raw[i] === QUOTE) {
    const keyEnd = stringEnd(raw, i);
    if (keyEnd < 0) return [];
    const named = isKey(raw.subarray(i, keyEnd + 1), key, name);
    const start = skipSpace(raw, skipSpace(raw, keyEnd + 1) + 1); // past the colon
    const end = valueEnd(raw, start);
    if (named) found.push([start, end]);
    i = skipSpace(raw, end);
    if (raw[i] !== COMMA) break;
    i = skipSpace(raw, i + 1);
  }
  return found;
}

const COMMA = 0x2c;

function skipSpace(raw: Buffer, i: number): number {
  while (i < raw.length && isJsonSpace(raw[i]!)) i++;
  return i;
}

/** Whether a key's JSON text (quotes included) names `name`: as written, or decoded when it has escapes. */
function isKey(text: Buffer, key: Buffer, name: string): boolean {
  if (text.equals(key)) return true;
  return text.includes(BACKSLASH) && JSON.parse(text.toString("utf8")) === name;
}

/** The index just past the value that starts at `start`. */
function valueEnd(raw: Buffer, start: number): number {
  let depth = 0;
  for (let i = start; i < raw.length; i++) {
    const c = raw[i]!;
    if (c === QUOTE) {
      i = stringEnd(raw, i);
      if (i < 0) return raw.length;
      if (depth === 0) return i + 1;
    } else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      depth++;
    } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
      if (depth === 0) return i; // the object's own end, after a number or literal
      if (--depth === 0) return i + 1;
    } else if (depth === 0 && (c === COMMA || isJsonSpace(c))) {
      return i;
    }
  }
  return raw.length;
}
