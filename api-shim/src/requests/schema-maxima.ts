import { spliceEveryMemberValue } from "./json-splice.ts";

/**
 * A schema's length and count keywords past `maxRepetition` (structured-limits.ts). xgrammar
 * compiles each into a counted repetition, so none is sent to vLLM above the bound, but they are
 * not alike: a *minimum* cannot be met without the repetition, and is refused; a *maximum* is
 * mostly a loose cap (zod's `.max(5000)`, a file-writing tool's `content` of maxLength 100000),
 * and is removed instead, the request served. What vLLM then generates is still JSON of the
 * schema's shape, its length bounded by max_tokens; and a large maximum cost every decoding step,
 * not only the compile (mlc-ai/xgrammar#852), while an unbounded string costs nothing extra.
 * llama.cpp chose the same (ggml-org/llama.cpp#26613). The client is told in `x-schema-relaxed`.
 */
const MINIMA = ["minLength", "minItems", "minProperties"] as const;
const MAXIMA = ["maxLength", "maxItems", "maxProperties"] as const;

/** What a request's schemas lost: the keywords (named in `x-schema-relaxed`), and the body's members that hold them. */
export class Relaxation {
  /** Keywords removed, counted: a walk compares the count before and after to know whether its schema changed. */
  removed = 0;
  private readonly keywords = new Set<string>();
  /** The body's own members whose value changed (`response_format`, `tools`…): written again, the rest of the body not. */
  readonly members = new Set<string>();
  remove(node: Record<string, unknown>, keyword: string): void {
    delete node[keyword];
    this.keywords.add(keyword);
    this.removed++;
  }
  /** The header's value: the keywords removed, in one order (maxLength, maxItems, maxProperties). */
  header(): string {
    return MAXIMA.filter((k) => this.keywords.has(k)).join(", ");
  }
}

/**
 * Why `node`'s length and count keywords are past `max`, or null: a minimum is refused; a maximum
 * is removed from the node (`relax`; without it, left: a walk of schemas already relaxed). Not a
 * number: vLLM's to refuse.
 */
export function countRefusal(node: Record<string, unknown>, max: number | null, relax: Relaxation | undefined): string | null {
  if (max === null) return null;
  for (const k of MINIMA) {
    const n = node[k];
    if (typeof n === "number" && n > max) return `has a '${k}' of ${n}, a counted repetition larger than ${max}`;
  }
  if (relax === undefined) return null;
  for (const k of MAXIMA) {
    const n = node[k];
    if (typeof n === "number" && n > max) relax.remove(node, k);
  }
  return null;
}

/**
 * `raw` with each member the relaxation changed written again from the parsed `body` (whose
 * schemas lost their keywords), the rest the client's bytes (json-splice.ts): only those members
 * are re-serialized, so a `seed` past 2^53 elsewhere is not rounded. Every duplicate of a member
 * gets the value JSON.parse read. The whole body re-serialized only were the walk to miss one.
 */
export function relaxedBody(raw: Buffer, body: Record<string, unknown>, relaxation: Relaxation): Buffer {
  let out = raw;
  for (const member of relaxation.members) {
    const pieces = spliceEveryMemberValue(out, member, JSON.stringify(body[member]));
    if (pieces === null) return Buffer.from(JSON.stringify(body));
    out = Buffer.concat(pieces);
  }
  return out;
}
