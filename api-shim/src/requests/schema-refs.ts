/**
 * The local definition a JSON schema's `$ref` names: `#` (the root) or a JSON pointer into the
 * schema (`#/$defs/a`, `#/definitions/a~1b`), or undefined for another document's, a missing one,
 * or one that is not a schema object. xgrammar resolves these against the root it compiles
 * (json_schema_converter.cc ResolveRef) and makes another document's ref any JSON: nothing to walk.
 */
export function localRef(root: unknown, ref: unknown): object | undefined {
  if (typeof ref !== "string" || (ref !== "#" && !ref.startsWith("#/"))) return undefined;
  let at: unknown = root;
  for (const token of ref === "#" ? [] : ref.slice(2).split("/")) {
    const key = pointerToken(token);
    if (at === null || typeof at !== "object" || !Object.hasOwn(at, key)) return undefined;
    at = (at as Record<string, unknown>)[key];
  }
  return at !== null && typeof at === "object" && !Array.isArray(at) ? at : undefined;
}

/** A pointer token as a key: a URI fragment's percent-escapes, then RFC 6901's `~1` (`/`) and `~0` (`~`). */
function pointerToken(token: string): string {
  let key = token;
  try {
    key = decodeURIComponent(token);
  } catch {
    // not percent-encoded text: the token as written
  }
  return key.replaceAll("~1", "/").replaceAll("~0", "~");
}
