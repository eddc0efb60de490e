/**
 * Limits on a request body's JSON structure, checked on the raw bytes before JSON.parse. A body
 * within SHIM_MAX_BODY_BYTES can still be built to be slow: 8 MB of `[[[[…` or of `{},{},…` is
 * millions of objects, a second or more of JSON.parse and garbage collection on the one thread
 * every request shares, from any key (even one without credits: the parse comes first). No
 * OpenAI request needs more than these; tool and response-format schemas nest a few dozen
 * levels, a long conversation has tens of thousands of objects.
 */
export const MAX_JSON_DEPTH = 128;
export const MAX_JSON_CONTAINERS = 200_000;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/** Why the body's structure is refused, or null. Linear in the bytes; invalid JSON is left to JSON.parse. */
export function jsonShapeProblem(raw: Uint8Array): string | null {
  let depth = 0;
  let containers = 0;
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
    }
  }
  return null;
}

/** The index of the quote that closes the string opened at `open`, or -1. */
function stringEnd(raw: Uint8Array, open: number): number {
  // Usually the next quote (a native search, fast over long text), unless a backslash is right
  // before it; then the string is walked byte by byte, honouring escapes (one pass, however
  // many escaped quotes it holds).
  const next = raw.indexOf(QUOTE, open + 1);
  if (next === -1 || raw[next - 1] !== BACKSLASH) return next;
  for (let k = open + 1; k < raw.length; k++) {
    const c = raw[k];
    if (c === BACKSLASH) k++;
    else if (c === QUOTE) return k;
  }
  return -1;
}
