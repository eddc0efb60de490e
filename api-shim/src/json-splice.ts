/**
 * Adding the credit members (`credits_charged`, …) at the end of a JSON object the upstream sent,
 * leaving its text as it was. One implementation, on bytes: a non-streamed answer is kept as the
 * upstream's bytes (answer-body.ts), a stream's usage event is a string.
 */

export const OPEN_BRACE = 0x7b;
export const CLOSE_BRACE = 0x7d;
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

/** spliceJsonBytes for text (an SSE event's `data: {…}`); text without an object is returned as it is. */
export function spliceJson(text: string, members: Record<string, string>): string {
  if (!text.includes("}")) return text;
  return Buffer.concat(spliceJsonBytes(Buffer.from(text, "utf8"), members)).toString("utf8");
}

/** `"name":value,…`: the values are JSON texts already. */
function jsonMembers(members: Record<string, string>): string {
  return Object.entries(members).map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(",");
}
