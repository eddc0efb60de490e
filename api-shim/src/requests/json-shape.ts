/**
 * Limits on a request body's JSON structure, checked on the raw bytes before JSON.parse. A body
 * within SHIM_MAX_BODY_BYTES can still be built to be slow: 8 MB of `[[[[…` or of `{},{},…` is
 * millions of objects, a second or more of JSON.parse and garbage collection on the one thread
 * every request shares, from any key (even one without credits: the parse comes first). No
 * OpenAI request needs more than these; tool and response-format schemas nest a few dozen
 * levels, a long conversation has tens of thousands of objects and members.
 */
export const MAX_JSON_DEPTH = 128;
export const MAX_JSON_CONTAINERS = 200_000;
/** Object members (`"name": value`), the costliest thing to parse: ~0.7 µs each. */
export const MAX_JSON_MEMBERS = 100_000;
/**
 * Values in arrays and objects (counted by their separating commas): 8 MB of `[1,1,…]` is 4
 * million numbers and ~0.3 s of parsing. OpenAI caps an embeddings request at 300,000 tokens, so
 * even a batch of token ids stays far below this.
 */
export const MAX_JSON_VALUES = 1_000_000;

export const QUOTE = 0x22;
export const BACKSLASH = 0x5c;

/** Why the body's structure is refused, or null. Linear in the bytes; invalid JSON is left to JSON.parse. */
export function jsonShapeProblem(raw: Uint8Array): string | null {
  let depth = 0;
  let containers = 0;
  let members = 0;
  let values = 0;
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i];
    if (c === QUOTE) {
      i = stringEnd(raw, i);
      if (i === -1) return null;
    } else if (c === 0x7b || c === 0x5b) {
      if (++depth > MAX_JSON_DEPTH) return `Request body nests JSON deeper than ${MAX_JSON_DEPTH} levels.`;
      if (++containers > MAX_JSON_CONTAINERS) return `Request body has more than ${MAX_JSON_CONTAINERS} JSON objects and arrays.`;
    } else if (c === 0x7d || c === 0x5d) {
      depth--;
    } else if (c === 0x3a && ++members > MAX_JSON_MEMBERS) {
      return `Request body has more than ${MAX_JSON_MEMBERS} JSON object members.`;
    } else if (c === 0x2c && ++values > MAX_JSON_VALUES) {
      return `Request body has more than ${MAX_JSON_VALUES} JSON values.`;
    }
  }
  return null;
}

/** The index of the quote that closes the string opened at `open`, or -1. (json-splice.ts walks members with it too.) */
export function stringEnd(raw: Uint8Array, open: number): number {
  // Short strings (most of them) are walked byte by byte; past 32 bytes, the next quote is
  // found by a native search (fast over long text) unless a backslash is right before it, in
  // which case the walk goes on, honouring escapes. Every byte is looked at about once.
  const short = walkString(raw, open + 1, Math.min(raw.length, open + 33));
  if (short >= 0) return short;
  const from = -1 - short;
  if (from >= raw.length) return -1;
  const next = raw.indexOf(QUOTE, from);
  if (next === -1 || (next > from && raw[next - 1] !== BACKSLASH)) return next;
  const rest = walkString(raw, from, raw.length);
  return rest >= 0 ? rest : -1;
}

/**
 * Walks string bytes from `from` (outside an escape) up to `to`: the index of the closing quote,
 * or, when there is none before `to`, `-1 - where the walk stopped` (again outside an escape).
 */
function walkString(raw: Uint8Array, from: number, to: number): number {
  let k = from;
  for (; k < to; k++) {
    const c = raw[k];
    if (c === BACKSLASH) k++;
    else if (c === QUOTE) return k;
  }
  return -1 - k;
}
