import { ShimError } from "../errors.ts";

/**
 * A request body's fields or a URL's query parameters, when every one is among `known`; else a
 * 400 naming the first that is not. A misspelt member is refused, not silently ignored: ignored,
 * it gives another answer than the one asked for (a key meant to expire that never does; a
 * report asked for one key, `key_id=`, that comes back with every key's usage).
 */
export function onlyKnown(members: object, known: readonly string[], what: "field" | "query parameter"): Record<string, unknown> {
  const unknown = Object.keys(members).find((k) => !known.includes(k));
  if (unknown !== undefined) {
    const name = unknown.slice(0, 100);
    const takes = known.length === 0 ? `: this route takes no ${what}s.` : `; known: ${known.join(", ")}.`;
    throw new ShimError("invalid_request", { param: name, message: `Unknown ${what} '${name}'${takes}` });
  }
  return members as Record<string, unknown>;
}
