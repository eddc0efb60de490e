import { invalidParam } from "../errors.ts";
import { combinedLimits, COMBINED_WHY } from "./combined-limits.ts";
import { countRefusal, Relaxation } from "./schema-maxima.ts";
import { jsonShapeProblem, MAX_JSON_CONTAINERS } from "./json-shape.ts";
import { localRef } from "./schema-refs.ts";

/**
 * Bounds on what a request has vLLM compile before its first token: a JSON schema, a regex or a
 * grammar (structured outputs). vLLM compiles each on the host's CPU (xgrammar, guidance), unpriced,
 * and for JSON schemas and grammars without a timeout (vLLM issue #54003: nested schemas compile
 * for minutes), while every other key's requests wait on the engine. A schema is held to OpenAI's
 * published structured-output limits, so one OpenAI takes passes (but for minItems past 1,000,
 * which OpenAI does not bound); a regex and a grammar to a length, and a regex's counted
 * repetitions (`a{1,60000}`), which xgrammar expands into that many copies, and a schema's length
 * and count keywords, which it compiles the same way, to RE2's bound of 1,000 (a maximum past it is
 * removed, the request served: schema-maxima.ts). Every bound is SHIM_CONFIG's `structuredOutputs` (null: none).
 */
export interface StructuredLimits {
  /** Object properties in one schema, all `properties` together (OpenAI: 5,000). */
  readonly maxProperties: number | null;
  /** Levels of nesting in one schema (OpenAI: 10); see schemaRefusal for what is a level. */
  readonly maxDepth: number | null;
  /** Enum values in one schema, all `enum` lists together (OpenAI: 1,000). */
  readonly maxEnumValues: number | null;
  /** Characters of property names, definition names, enum and const values in one schema (OpenAI: 120,000). */
  readonly maxSchemaChars: number | null;
  /** Characters of one regex: `guided_regex`, `structured_outputs.regex`, a schema's `pattern` or `patternProperties` name. */
  readonly maxRegexChars: number | null;
  /**
   * The largest counted repetition in a regex, nested counts multiplied (`(a{10}){20}` is 200), and a
   * schema's length and count keywords (`maxLength`, `minItems`…), which xgrammar compiles the same
   * way: a minimum past it is refused, a maximum past it removed (schema-maxima.ts).
   */
  readonly maxRepetition: number | null;
  /** Characters of one grammar: `guided_grammar`, `structured_outputs.grammar`. */
  readonly maxGrammarChars: number | null;
}

export const DEFAULT_STRUCTURED_LIMITS: StructuredLimits = {
  maxProperties: 5_000,
  maxDepth: 10,
  maxEnumValues: 1_000,
  maxSchemaChars: 120_000,
  maxRegexChars: 10_000,
  maxRepetition: 1_000,
  maxGrammarChars: 100_000,
};

export const STRUCTURED_LIMIT_NAMES = Object.keys(DEFAULT_STRUCTURED_LIMITS) as (keyof StructuredLimits)[];

/**
 * What one limit takes: a positive (safe) integer, or null for none. The one rule for SHIM_CONFIG
 * and for the stack's limits.structuredOutputs (infra/config/limits.ts), so that a stack the
 * Pulumi program takes renders a SHIM_CONFIG the shim starts with.
 */
export const isStructuredLimit = (v: unknown): v is number | null => v === null || (typeof v === "number" && Number.isSafeInteger(v) && v >= 1);

/** Every limit off: what `structuredOutputs: false` means. */
export const NO_STRUCTURED_LIMITS = Object.fromEntries(STRUCTURED_LIMIT_NAMES.map((k) => [k, null])) as unknown as StructuredLimits;

type Body = Record<string, unknown>;
const isObject = (v: unknown): v is Body => v !== null && typeof v === "object" && !Array.isArray(v);

/**
 * Refuses (400 naming the member) a body whose schema, regex or grammar is past `limits`, and
 * removes from its schemas a maximum past maxRepetition (schema-maxima.ts): the Relaxation, whose
 * members the body to forward has written again, or null when nothing was removed (the client's
 * bytes go as they are). Only the members present are read: a body without them costs a few
 * property reads.
 */
export function refuseOversizedStructures(b: Body, limits: StructuredLimits): Relaxation | null {
  const relax = new Relaxation();
  const rf = b.response_format;
  if (isObject(rf) && isObject(rf.json_schema)) schema("response_format", "response_format.json_schema.schema", rf.json_schema, "schema", limits, relax);
  if (isObject(rf) && rf.type === "structural_tag") structuralTag("response_format", "response_format", b, "response_format", limits, relax);
  const text = b.text; // the Responses API's
  if (isObject(text) && isObject(text.format)) schema("text", "text.format.schema", text.format, "schema", limits, relax);
  if (b.guided_json != null) schema("guided_json", "guided_json", b, "guided_json", limits, relax);
  if (b.guided_regex != null) regex("guided_regex", "guided_regex", b.guided_regex, limits);
  if (b.guided_grammar != null) grammar("guided_grammar", "guided_grammar", b.guided_grammar, limits);
  if (b.guided_choice != null) schema("guided_choice", "guided_choice", { schema: { enum: b.guided_choice } }, "schema", limits);
  const so = b.structured_outputs;
  if (isObject(so)) {
    if (so.json != null) schema("structured_outputs", "structured_outputs.json", so, "json", limits, relax);
    if (so.regex != null) regex("structured_outputs", "structured_outputs.regex", so.regex, limits);
    if (so.grammar != null) grammar("structured_outputs", "structured_outputs.grammar", so.grammar, limits);
    if (so.choice != null) schema("structured_outputs", "structured_outputs.choice", { schema: { enum: so.choice } }, "schema", limits);
    if (so.structural_tag != null) structuralTag("structured_outputs", "structured_outputs.structural_tag", so, "structural_tag", limits, relax);
  }
  if (Array.isArray(b.tools)) toolSchemas(b.tools, b.tool_choice, limits, relax);
  return relax.removed > 0 ? relax : null;
}

/**
 * A tool's `parameters` is compiled when the tool is `strict`, and, in vLLM, for every tool when
 * `tool_choice` is "required" or names a function, and under "auto" (the default) once any tool is
 * strict, for every tool but one with `strict: false` (get_model_structural_tag builds one
 * structural tag of them all). Chat nests it in `function`; the Responses API does not, and groups
 * function tools in a `namespace`'s own `tools`, which vLLM reads as tools of their own
 * (responses-tools.ts): each is held to the limits where it is.
 */
function toolSchemas(tools: unknown[], choice: unknown, limits: StructuredLimits, relax: Relaxation): void {
  const forced = choice === "required" || isObject(choice);
  const fns = tools.flatMap((tool, i) =>
    isObject(tool) && tool.type === "namespace" && Array.isArray(tool.tools) ? tool.tools.map((t: unknown, j) => ({ tool: t, at: `tools[${i}].tools[${j}]` })) : [{ tool, at: `tools[${i}]` }])
    .flatMap(({ tool, at }) => (isObject(tool) ? [{ fn: isObject(tool.function) ? tool.function : tool, at: isObject(tool.function) ? `${at}.function` : at }] : []));
  const strictAuto = (choice === undefined || choice === "auto") && fns.some(({ fn }) => fn.strict === true);
  const all: unknown[] = [];
  for (const { fn, at } of fns) {
    if (fn.parameters != null && (forced || fn.strict === true || (strictAuto && fn.strict !== false))) all.push(schema("tools", `${at}.parameters`, fn, "parameters", limits, relax));
  }
  // "required", and "auto" with a strict tool: vLLM compiles every tool's parameters as one schema or grammar (an `anyOf`
  // of them; a structural tag): fifty tools of 4,900 properties were 245,000 in one. Held to combinedLimits, not one's.
  if ((choice !== "required" && !strictAuto) || all.length < 2) return;
  const reason = schemaRefusal({ anyOf: all }, combinedLimits(limits)); // a union adds no level (schemaRefusal)
  const why = strictAuto ? "with a strict tool under tool_choice \"auto\"" : "with tool_choice \"required\"";
  if (reason !== null) throw refused("tools", `The schema in 'tools' (every tool's parameters: ${why} the model server compiles them as one, ${COMBINED_WHY}) ${reason}`);
}

/**
 * A structural tag (`response_format` of type `structural_tag`, `structured_outputs.structural_tag`
 * as JSON text) holds schemas, regexes and grammars vLLM compiles as it compiles the members above:
 * the legacy form's `structures[].schema`, and in the newer `format` any `json_schema`, a `regex`'s
 * `pattern`, a `grammar`'s `grammar`, at any depth of its tags, sequences and choices. Each is held
 * to the same limits. The walk is iterative, as schemaRefusal's.
 */
function structuralTag(param: string, at: string, holder: Body, key: string, limits: StructuredLimits, relax: Relaxation): void {
  const before = relax.removed;
  const tag = jsonOrText(holder[key], param, at);
  if (tag === NOT_JSON) return; // vLLM's to refuse
  const nodes: unknown[] = [tag];
  const paths: string[] = [at]; // where each is, for the 400's message
  const schemas: unknown[] = [];
  while (nodes.length > 0) {
    const node = nodes.pop();
    const path = paths.pop()!;
    if (Array.isArray(node)) {
      node.forEach((item: unknown, i) => item !== null && typeof item === "object" && (nodes.push(item), paths.push(`${path}[${i}]`)));
      continue;
    }
    if (!isObject(node)) continue;
    for (const k of ["schema", "json_schema"]) if (isObject(node[k])) schemas.push(schema(param, `${path}.${k}`, node, k, limits, relax));
    if (node.type === "regex") regex(param, `${path}.pattern`, node.pattern, limits);
    if (node.type === "grammar") grammar(param, `${path}.grammar`, node.grammar, limits);
    for (const k in node) {
      if (k === "schema" || k === "json_schema" || node[k] === null || typeof node[k] !== "object") continue;
      nodes.push(node[k]);
      paths.push(`${path}.${k}`);
    }
  }
  // One tag is one grammar: its schemas are held together to combinedLimits, as toolSchemas' are.
  const reason = schemas.length > 1 ? schemaRefusal({ anyOf: schemas }, combinedLimits(limits)) : null;
  if (reason !== null) throw refused(param, `The schemas in '${at}' (compiled as one grammar, ${COMBINED_WHY}) together ${reason.replace(/^has/, "have")}`);
  if (relax.removed > before && typeof holder[key] === "string") holder[key] = JSON.stringify(tag); // relaxed in its parsed form
}

const NOT_JSON = Symbol("not JSON");

/** A member vLLM takes as an object or as JSON text (`guided_json`, `structured_outputs.json`, a structural tag): the value, parsed when text, held first to the body's JSON limits (json-shape.ts: 7.8 MB of `{},` held the thread 4 s). */
function jsonOrText(value: unknown, param: string, at: string): unknown {
  if (typeof value !== "string") return value;
  const shape = jsonShapeProblem(Buffer.from(value, "utf8"))?.replace(/^Request body (.*)\.$/, "$1");
  if (shape != null) throw refused(param, `The JSON text in '${at}' ${shape}`);
  try {
    return JSON.parse(value);
  } catch {
    return NOT_JSON;
  }
}

/**
 * Refuses the schema in `holder[key]` past `limits`, and removes its maxima past maxRepetition
 * (`relax`), noting `param` as a member to write again; a schema sent as JSON text is written back
 * as text. What was walked (the schema parsed from text), or undefined when nothing was.
 */
function schema(param: string, at: string, holder: Body, key: string, limits: StructuredLimits, relax?: Relaxation): unknown {
  const value = holder[key];
  const before = relax?.removed ?? 0;
  const parsed = jsonOrText(value, param, at);
  // Text that is not JSON, and a format with no schema (Responses' `text.format` of type text or
  // json_object, a json_schema without one), hold nothing to walk: vLLM's to take or refuse.
  if (parsed === NOT_JSON || parsed === null || typeof parsed !== "object") return undefined;
  const reason = schemaRefusal(parsed, limits, relax);
  if (reason !== null) throw refused(param, `The schema in '${at}' ${reason}`);
  if (relax !== undefined && relax.removed > before) {
    relax.members.add(param);
    if (typeof value === "string") holder[key] = JSON.stringify(parsed);
  }
  return parsed;
}

function regex(param: string, at: string, value: unknown, limits: StructuredLimits): void {
  const reason = typeof value === "string" ? regexRefusal(value, limits) : null;
  if (reason !== null) throw refused(param, `The regex in '${at}' ${reason}`);
}

function grammar(param: string, at: string, value: unknown, limits: StructuredLimits): void {
  if (typeof value === "string" && limits.maxGrammarChars !== null && characters(value) > limits.maxGrammarChars) {
    throw refused(param, `The grammar in '${at}' is longer than ${limits.maxGrammarChars} characters`);
  }
}

const refused = (param: string, what: string) =>
  invalidParam(`${what}: the model server compiles it before the first token, on the CPU every request shares. Make it smaller, or ask the operator to raise the shim's structuredOutputs limits.`, param);

/** Keywords whose value is a schema for a member or an item of the value: one level deeper. */
const NESTED_ONE = ["items", "additionalProperties", "unevaluatedProperties", "propertyNames", "additionalItems", "contains", "unevaluatedItems"] as const;
/** Keywords whose value is a list of schemas for an item (`items` as a list: draft 4 tuples). */
const NESTED_LIST = ["prefixItems", "items"] as const;
/** Keywords whose schemas describe the value itself (a choice, a condition). */
const SAME_VALUE_LIST = ["anyOf", "oneOf", "allOf"] as const;
const SAME_VALUE_ONE = ["not", "if", "then", "else"] as const;

/** The most schemas walked through local `$ref`s, a definition again at each level and choice it is used at (a 581 KB
 * schema held the thread 14 s): as many as a body holds objects (json-shape.ts), the cost of the largest body's walk. */
export const REF_WALK_BUDGET = MAX_JSON_CONTAINERS;

/** One schema to walk: where it is, and whether what it holds is counted (not when reached through a `$ref`). */
interface Frame { node: unknown; depth: number; choice: boolean; counted: boolean; def?: object; leave?: object }

/**
 * Why a schema is past `limits`, or null. The walk is iterative (a schema of any depth takes no
 * stack) and stops at the first limit passed. A level is a step into a member's or an item's
 * schema (`properties`, `items`, `additionalProperties`…) or into a definition (`$defs`,
 * `definitions`): the root's own properties are level 1. A choice's schemas (`anyOf`, `oneOf`,
 * `allOf`, `not`, `if`/`then`/`else`) describe the same value, so they add no level, unless the
 * choice is itself directly in a choice: nested unions are what make xgrammar's compile time grow
 * without bound (vLLM issue #54003). A local `$ref` is also walked where it is, for its levels
 * alone (what a definition holds is counted once, where it is defined): xgrammar compiles a ref as
 * a reference to the definition's one rule, as it does a choice, so unions nested through refs are
 * the unions nested directly. A definition already on the path is not walked again (a recursive
 * ref is one rule, not infinite depth), nor one already walked at the same level and choice.
 * With `relax`, a maximum past maxRepetition is removed from its node, not refused (schema-maxima.ts).
 */
export function schemaRefusal(root: unknown, limits: StructuredLimits, relax?: Relaxation): string | null {
  const { maxProperties, maxDepth, maxEnumValues, maxSchemaChars } = limits;
  let properties = 0;
  let enums = 0;
  let chars = 0;
  const frames: Frame[] = [{ node: root, depth: 0, choice: false, counted: true }];
  const onPath = new Set<unknown>([root]); // `#` is the root
  const followed = new Map<object, Set<number>>(); // each definition's (level, choice) walked through a ref
  const push = (node: unknown, depth: number, choice: boolean, counted: boolean, def?: object): void => {
    if (node !== null && typeof node === "object") frames.push({ node, depth, choice, counted, def });
  };
  const follow = (target: object | undefined, depth: number, choice: boolean): void => {
    if (target === undefined || onPath.has(target)) return;
    const seen = followed.get(target) ?? followed.set(target, new Set()).get(target)!;
    if (seen.has(depth * 2 + (choice ? 1 : 0))) return;
    seen.add(depth * 2 + (choice ? 1 : 0));
    push(target, depth, choice, false, target);
  };
  const tooDeep = (depth: number) => maxDepth !== null && depth > maxDepth;
  let viaRefs = 0; // schemas walked through a $ref (REF_WALK_BUDGET)
  const named = (name: string): boolean => (chars += characters(name)) > (maxSchemaChars ?? Infinity);
  while (frames.length > 0) {
    const { node: n, depth, choice, counted, def, leave } = frames.pop()!;
    if (leave !== undefined) {
      onPath.delete(leave);
      continue;
    }
    if (!counted && ++viaRefs > REF_WALK_BUDGET) return `has local $refs whose definitions, walked at each level they are used, are more than ${REF_WALK_BUDGET} schemas`;
    const node = n as Body;
    if (Array.isArray(node)) continue;
    if (tooDeep(depth) || (tooDeep(depth + 1) && hasSubschemas(node))) return `nests more than ${maxDepth} levels`;
    if (def !== undefined) {
      onPath.add(def);
      frames.push({ node: null, depth, choice, counted, leave: def }); // popped once all it holds is walked
    }
    // Without a depth limit a ref has nothing to count: what it names is counted where defined.
    if (maxDepth !== null && typeof node.$ref === "string") follow(localRef(root, node.$ref), depth, choice);
    if (isObject(node.properties)) {
      for (const name in node.properties) {
        if (counted && maxProperties !== null && ++properties > maxProperties) return `has more than ${maxProperties} object properties`;
        if (counted && named(name)) return charsReason(maxSchemaChars);
        push(node.properties[name], depth + 1, false, counted);
      }
    }
    if (isObject(node.patternProperties)) {
      for (const pattern in node.patternProperties) {
        const reason = counted ? regexRefusal(pattern, limits) : null;
        if (reason !== null) return `has a 'patternProperties' regex that ${reason}`;
        push(node.patternProperties[pattern], depth + 1, false, counted);
      }
    }
    for (const defs of [node.$defs, node.definitions]) {
      if (!isObject(defs)) continue;
      for (const name in defs) {
        if (counted && named(name)) return charsReason(maxSchemaChars);
        if (isObject(defs[name])) push(defs[name], depth + 1, false, counted, defs[name]);
      }
    }
    for (const k of NESTED_ONE) if (isObject(node[k])) push(node[k], depth + 1, false, counted);
    for (const k of NESTED_LIST) if (Array.isArray(node[k])) for (const s of node[k] as unknown[]) push(s, depth + 1, false, counted);
    const inner = choice ? depth + 1 : depth;
    for (const k of SAME_VALUE_LIST) if (Array.isArray(node[k])) for (const s of node[k] as unknown[]) push(s, inner, true, counted);
    for (const k of SAME_VALUE_ONE) if (isObject(node[k])) push(node[k], inner, true, counted);
    if (isObject(node.dependentSchemas)) for (const name in node.dependentSchemas) push(node.dependentSchemas[name], inner, true, counted);
    if (!counted) continue;
    if (Array.isArray(node.enum)) {
      if (maxEnumValues !== null && (enums += node.enum.length) > maxEnumValues) return `has more than ${maxEnumValues} enum values`;
      for (const v of node.enum) if (named(valueText(v))) return charsReason(maxSchemaChars);
    }
    if (node.const !== undefined && named(valueText(node.const))) return charsReason(maxSchemaChars);
    if (typeof node.pattern === "string") {
      const reason = regexRefusal(node.pattern, limits);
      if (reason !== null) return `has a 'pattern' that ${reason}`;
    }
    const count = countRefusal(node, limits.maxRepetition, relax);
    if (count !== null) return count;
  }
  return null;
}

/**
 * Whether a schema holds a schema one level down (a leaf at the last level passes: OpenAI counts the
 * levels of objects and arrays). Empty `properties`, definitions or tuple items hold none: an
 * object with no members at the last level is a leaf.
 */
function hasSubschemas(node: Body): boolean {
  for (const k of ["properties", "patternProperties", "$defs", "definitions", "prefixItems"]) {
    const v = node[k];
    if (v !== null && typeof v === "object" && (Array.isArray(v) ? v.length > 0 : hasMember(v as Body))) return true;
  }
  for (const k of NESTED_ONE) if (node[k] !== null && typeof node[k] === "object") return true;
  return false;
}

function hasMember(o: Body): boolean {
  for (const _ in o) return true;
  return false;
}

const charsReason = (max: number | null) => `has more than ${max} characters of property names, definition names, enum and const values`;

/** An enum or const value as OpenAI counts its characters: a string as itself, anything else as its JSON. */
const valueText = (v: unknown): string => (typeof v === "string" ? v : (JSON.stringify(v) ?? ""));

/** Characters as Python counts them (code points): a surrogate pair is one. */
function characters(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n--;
        i++;
      }
    }
  }
  return n;
}

/** `{n}`, `{n,}`, `{n,m}` and Python's `{,m}`. */
const COUNTED = /\{(\d*)(?:,(\d*))?\}/y;

/**
 * Why a regex is past `limits`, or null: its length, or a counted repetition larger than
 * maxRepetition, the counts of the groups around it multiplied (`(a{10}){20}` expands to 200 `a`s).
 * Read in one pass: escapes and character classes are skipped, so `\{9999}` and `[{]` are no count.
 */
export function regexRefusal(re: string, limits: StructuredLimits): string | null {
  if (limits.maxRegexChars !== null && characters(re) > limits.maxRegexChars) return `is longer than ${limits.maxRegexChars} characters`;
  const max = limits.maxRepetition;
  if (max === null) return null;
  const groups: number[] = [1]; // the largest repetition inside each open group
  let last = 1; // the repetition of what a quantifier would apply to
  for (let i = 0; i < re.length; i++) {
    const c = re[i];
    if (c === "\\") {
      i++;
      last = 1;
    } else if (c === "[") {
      i++;
      if (re[i] === "^") i++;
      if (re[i] === "]") i++; // a `]` first is a member
      while (i < re.length && re[i] !== "]") if (re[i++] === "\\") i++;
      last = 1;
    } else if (c === "(") {
      groups.push(1);
      last = 1;
    } else if (c === ")") {
      last = groups.length > 1 ? groups.pop()! : 1;
      groups[groups.length - 1] = Math.max(groups.at(-1)!, last);
    } else if (c === "{") {
      COUNTED.lastIndex = i;
      const m = COUNTED.exec(re);
      if (m === null || (m[1] === "" && !m[2])) continue; // a literal `{`
      const count = Math.max(Number(m[1] || 0), Number(m[2] || 0));
      last *= count;
      if (last > max) return `has a counted repetition of ${Number.isFinite(last) && last < 1e15 ? last : "more than 10^15"} (nested counts multiplied), more than ${max}`;
      groups[groups.length - 1] = Math.max(groups.at(-1)!, last);
      i = COUNTED.lastIndex - 1;
    } else {
      last = 1;
    }
  }
  return null;
}
