// Structured outputs (a JSON schema, a regex, a grammar) are compiled by vLLM on the host's CPU
// before the first token, unpriced, and JSON schemas and grammars without a timeout (vLLM issue
// #54003): one key could stall the engine for every other. The shim holds a schema to OpenAI's
// published limits and a regex or grammar to a length and a counted repetition to 1,000, all
// SHIM_CONFIG structuredOutputs (found by the hostile-tenant review, section 1).
import { stringify } from "yaml";
import { describe, expect, it } from "vitest";
import { ConfigError, parseShimConfig } from "../../api-shim/src/config.ts";
import { ShimError } from "../../api-shim/src/errors.ts";
import { DEFAULT_STRUCTURED_LIMITS as LIMITS, regexRefusal, schemaRefusal, type StructuredLimits } from "../../api-shim/src/requests/structured-limits.ts";
import { refusalMessage, refusedUnsent, shimWithKey, structuredRefusal, wideSchema } from "../support/structured-refusal.ts";

/** An object schema whose properties nest `levels` deep (the root's own properties are level 1), a string at the bottom. */
const nested = (levels: number, step: (inner: unknown) => unknown = (inner) => ({ type: "object", properties: { a: inner } })): unknown => {
  let s: unknown = { type: "string" };
  for (let i = 0; i < levels; i++) s = step(s);
  return s;
};
/** An object of `n` properties (names p0, p1…). */
const wide = wideSchema;
const enumOf = (n: number, value = (i: number) => `v${i}`) => ({ type: "string", enum: Array.from({ length: n }, (_, i) => value(i)) });

const refusal = (body: Record<string, unknown>, limits: StructuredLimits = LIMITS) => structuredRefusal(body, limits);

/** The IANA time zones as Node's Intl lists them: 418 in Node 24, padded to 418 if an ICU lists fewer. */
const timeZones = (): string[] => {
  const zones = Intl.supportedValuesOf("timeZone").slice(0, 418);
  while (zones.length < 418) zones.push(`Etc/Zone${zones.length}`);
  return zones;
};
/** Three calendar tools each taking a time zone from the same 418-value enum; only the first strict (finding 4's example). */
const calendarTools = (zones: string[]) => ["create_event", "find_free_slots", "list_events"].map((name, i) => ({
  type: "function" as const,
  function: {
    name,
    description: `Calendar: ${name.replace(/_/g, " ")}`,
    ...(i === 0 ? { strict: true } : {}),
    parameters: {
      type: "object",
      properties: { title: { type: "string" }, start: { type: "string", description: "ISO 8601 local time" }, timeZone: { type: "string", enum: zones } },
      required: ["title", "start", "timeZone"],
      additionalProperties: false,
    },
  },
}));
/** `n` of the calendar tools, in turn, each under a name of its own. */
const calendarCopies = (zones: string[], n: number) => Array.from({ length: n }, (_, i) => calendarTools(zones)[i % 3]!).map((t, i) => ({ ...t, function: { ...t.function, name: `cal${i}` } }));

describe("a schema, at OpenAI's limits", () => {
  it("passes at each limit and is refused one past it", () => {
    expect(schemaRefusal(nested(10), LIMITS)).toBeNull();
    expect(schemaRefusal(nested(11), LIMITS)).toBe("nests more than 10 levels");
    // An object at the last level whose properties (or definitions, or tuple items) are empty holds
    // nothing a level down: a level-10 leaf, as OpenAI takes it. One member there is level 11.
    const emptyObject = { type: "object", properties: {}, additionalProperties: false };
    expect(schemaRefusal(nested(9, (inner) => ({ type: "object", properties: { a: inner } })), LIMITS)).toBeNull();
    const leafAt10 = (leaf: unknown) => { let s: unknown = leaf; for (let i = 0; i < 10; i++) s = { type: "object", properties: { a: s } }; return s; };
    expect(schemaRefusal(leafAt10(emptyObject), LIMITS)).toBeNull();
    expect(schemaRefusal(leafAt10({ type: "object", $defs: {}, patternProperties: {} }), LIMITS)).toBeNull();
    expect(schemaRefusal(leafAt10({ type: "array", prefixItems: [] }), LIMITS)).toBeNull();
    expect(schemaRefusal(leafAt10({ ...emptyObject, properties: { b: { type: "string" } } }), LIMITS)).toBe("nests more than 10 levels");
    expect(schemaRefusal(wide(5_000), LIMITS)).toBeNull();
    expect(schemaRefusal(wide(5_001), LIMITS)).toBe("has more than 5000 object properties");
    // Properties are counted across the whole schema, not per object (a and b are two of them).
    expect(schemaRefusal({ type: "object", properties: { a: wide(2_500), b: wide(2_498) } }, LIMITS)).toBeNull();
    expect(schemaRefusal({ type: "object", properties: { a: wide(2_500), b: wide(2_499) } }, LIMITS)).toBe("has more than 5000 object properties");
    expect(schemaRefusal({ type: "object", properties: { a: enumOf(600), b: enumOf(400) } }, LIMITS)).toBeNull();
    expect(schemaRefusal({ type: "object", properties: { a: enumOf(600), b: enumOf(401) } }, LIMITS)).toBe("has more than 1000 enum values");
    // 120,000 characters of names and values: 1,000 enum values of 119 and a property name of 1,000.
    const long = (i: number) => `${String(i).padStart(4, "0")}${"x".repeat(115)}`;
    expect(schemaRefusal({ type: "object", properties: { ["n".repeat(1_000)]: enumOf(1_000, long) } }, LIMITS)).toBeNull();
    expect(schemaRefusal({ type: "object", properties: { ["n".repeat(1_001)]: enumOf(1_000, long) } }, LIMITS)).toMatch(/^has more than 120000 characters of property names/);
    // const values and definition names count too; characters as Python counts them (an emoji is one).
    expect(schemaRefusal({ $defs: { ["d".repeat(60_000)]: { const: "c".repeat(60_000) } } }, LIMITS)).toBeNull();
    expect(schemaRefusal({ $defs: { ["d".repeat(60_000)]: { const: "c".repeat(60_001) } } }, LIMITS)).toMatch(/characters/);
    expect(schemaRefusal({ enum: ["😀".repeat(120_000)] }, LIMITS)).toBeNull();
  });

  it("counts what is nested in $defs, definitions, anyOf, items and additionalProperties", () => {
    // A definition is one level below the root, as a property is.
    expect(schemaRefusal({ $defs: { D: nested(9) } }, LIMITS)).toBeNull();
    expect(schemaRefusal({ $defs: { D: nested(10) } }, LIMITS)).toBe("nests more than 10 levels");
    expect(schemaRefusal({ definitions: { D: nested(10) } }, LIMITS)).toBe("nests more than 10 levels");
    expect(schemaRefusal({ properties: { a: { $defs: { D: nested(8) } } } }, LIMITS)).toBeNull(); // $defs below the root are as deep as where they are
    expect(schemaRefusal({ properties: { a: { $defs: { D: nested(9) } } } }, LIMITS)).toBe("nests more than 10 levels");
    expect(schemaRefusal({ $defs: { A: wide(3_000) }, definitions: { B: wide(2_001) } }, LIMITS)).toBe("has more than 5000 object properties");
    expect(schemaRefusal({ definitions: { A: enumOf(1_001) } }, LIMITS)).toBe("has more than 1000 enum values");
    // items and additionalProperties are a level each, as properties are.
    const viaItems = (inner: unknown) => ({ type: "array", items: inner });
    expect(schemaRefusal(nested(10, viaItems), LIMITS)).toBeNull();
    expect(schemaRefusal(nested(11, viaItems), LIMITS)).toBe("nests more than 10 levels");
    const viaMap = (inner: unknown) => ({ type: "object", additionalProperties: inner });
    expect(schemaRefusal(nested(11, viaMap), LIMITS)).toBe("nests more than 10 levels");
    expect(schemaRefusal({ type: "array", prefixItems: [nested(10)] }, LIMITS)).toBe("nests more than 10 levels");
    // A union describes the same value: a nullable object at each of 10 levels passes, as OpenAI takes it…
    const nullable = (inner: unknown) => ({ anyOf: [{ type: "object", properties: { a: inner } }, { type: "null" }] });
    expect(schemaRefusal(nested(10, nullable), LIMITS)).toBeNull();
    expect(schemaRefusal(nested(11, nullable), LIMITS)).toBe("nests more than 10 levels");
    // …but unions nested directly in unions (vLLM issue #54003's schema) are a level each.
    const union = (inner: unknown) => ({ oneOf: [inner, { type: "integer" }] });
    expect(schemaRefusal(nested(11, union), LIMITS)).toBeNull(); // the first union is the root's own value
    expect(schemaRefusal(nested(12, union), LIMITS)).toBe("nests more than 10 levels");
    expect(schemaRefusal({ properties: { a: { anyOf: [enumOf(999), enumOf(2)] } } }, LIMITS)).toBe("has more than 1000 enum values");
    // The schemas of not, if/then/else and dependentSchemas are compiled too: what they hold counts.
    for (const k of ["not", "if", "then", "else"]) expect(schemaRefusal({ [k]: enumOf(1_001) }, LIMITS), k).toBe("has more than 1000 enum values");
    expect(schemaRefusal({ dependentSchemas: { a: wide(5_001) } }, LIMITS)).toBe("has more than 5000 object properties");
    // A property named like a keyword is a name, not the keyword.
    expect(schemaRefusal({ properties: { enum: { type: "string" }, properties: { type: "string" } } }, LIMITS)).toBeNull();
  });

  it("walks a 10,000-deep schema without recursion, and stops at the first limit passed", () => {
    expect(schemaRefusal(nested(10_000), LIMITS)).toBe("nests more than 10 levels");
    expect(schemaRefusal(nested(10_000, (inner) => ({ anyOf: [inner] })), LIMITS)).toBe("nests more than 10 levels");
    // With no depth limit the walk still ends, its stack on the heap.
    expect(schemaRefusal(nested(10_000), { ...LIMITS, maxDepth: null, maxProperties: null })).toBeNull();
    expect(schemaRefusal(nested(10_000, (inner) => ({ items: [inner, { anyOf: [inner] }] })), { ...LIMITS, maxDepth: 20 })).toBe("nests more than 20 levels");
  });

  it("checks a schema's pattern and patternProperties as regexes", () => {
    expect(schemaRefusal({ properties: { a: { type: "string", pattern: "^a{1,1000}$" } } }, LIMITS)).toBeNull();
    expect(schemaRefusal({ properties: { a: { type: "string", pattern: "^a{1,1001}$" } } }, LIMITS)).toBe("has a 'pattern' that has a counted repetition of 1001 (nested counts multiplied), more than 1000");
    expect(schemaRefusal({ patternProperties: { "^x{5000}$": { type: "string" } } }, LIMITS)).toMatch(/^has a 'patternProperties' regex that has a counted repetition of 5000/);
  });
});

describe("a regex", () => {
  it("is refused past its length and past 1,000 counted repetitions, nested counts multiplied", () => {
    expect(regexRefusal("a".repeat(10_000), LIMITS)).toBeNull();
    expect(regexRefusal("a".repeat(10_001), LIMITS)).toBe("is longer than 10000 characters");
    for (const re of ["a{1000}", "a{1,1000}", "a{1000,}", "a{,1000}", "(ab{10}){100}", "[a-z]{1000}", "\\d{3}-\\d{4}"]) expect(regexRefusal(re, LIMITS), re).toBeNull();
    for (const re of ["a{1001}", "a{1,60000}", "a{1001,}", "a{,1001}", "(ab{10}){101}", "((a{2}){2}){251}", "(?:x|y{11}){100}", "a{99999999999999999999}"]) expect(regexRefusal(re, LIMITS), re).toMatch(/counted repetition/);
    // Escaped braces and braces in a class are no count; a brace without digits is a literal.
    for (const re of ["\\{99999}", "[{]99999}", "[]{]{2}", "a{x}", "{}", "\\\\{2}"]) expect(regexRefusal(re, LIMITS), re).toBeNull();
    expect(regexRefusal("\\\\{2000}", LIMITS)).toMatch(/2000/); // an escaped backslash, then a count
    // A class's members are no count, a `]` first in it included: RE2 takes these as they are.
    for (const re of ["[x{2000}]", "[^x{2000}]", "[]{2000}]", "[^]{2000}]"]) expect(regexRefusal(re, LIMITS), re).toBeNull();
    // A count inside a group inside a group multiplies the outer one's, with something after it in between.
    expect(regexRefusal("((a{20})b){50}", LIMITS)).toBeNull();
    expect(regexRefusal("((a{20})b){51}", LIMITS)).toMatch(/counted repetition of 1020/);
    // `{}` is a literal, which a count after it repeats: `a{}{2000}` is 2,000 copies of `}`.
    expect(regexRefusal("a{}{2000}", LIMITS)).toMatch(/counted repetition of 2000/);
    expect(regexRefusal("a{1,60000}", { ...LIMITS, maxRepetition: null })).toBeNull();
  });
});

describe("the members a request carries them in", () => {
  const big = wide(5_001);
  it("each is refused with a 400 naming the member", () => {
    const cases: [Record<string, unknown>, string, string][] = [
      [{ response_format: { type: "json_schema", json_schema: { name: "x", schema: big } } }, "response_format", "response_format.json_schema.schema"],
      [{ guided_json: big }, "guided_json", "guided_json"],
      [{ guided_json: JSON.stringify(big) }, "guided_json", "guided_json"],
      [{ structured_outputs: { json: big } }, "structured_outputs", "structured_outputs.json"],
      [{ text: { format: { type: "json_schema", name: "x", schema: big } } }, "text", "text.format.schema"],
      [{ tools: [{ type: "function", function: { name: "f", strict: true, parameters: big } }] }, "tools", "tools[0].function.parameters"],
      [{ tools: [{ type: "function", name: "f", strict: true, parameters: big }] }, "tools", "tools[0].parameters"],
      [{ tool_choice: "required", tools: [{ type: "function", function: { name: "f", parameters: big } }] }, "tools", "tools[0].function.parameters"],
      // A Responses namespace's function tools are vLLM's tools as any other (responses-tools.ts).
      [{ tools: [{ type: "function", name: "e", parameters: {} }, { type: "namespace", name: "n", tools: [{ type: "function", name: "f", strict: true, parameters: wide(1) }, { type: "function", name: "g", strict: true, parameters: big }] }] }, "tools", "tools[1].tools[1].parameters"],
      [{ tool_choice: "required", tools: [{ type: "namespace", name: "n", tools: [{ type: "function", name: "f", parameters: big }] }] }, "tools", "tools[0].tools[0].parameters"],
      // A named function forces tool use as "required" does: vLLM compiles the tools' parameters, strict or not.
      [{ tool_choice: { type: "function", function: { name: "g" } }, tools: [{ type: "function", function: { name: "f", parameters: big } }] }, "tools", "tools[0].function.parameters"],
      [{ tool_choice: { type: "function", name: "f" }, tools: [{ type: "function", name: "f", parameters: big }] }, "tools", "tools[0].parameters"],
      [{ guided_regex: "a{1,60000}" }, "guided_regex", "guided_regex"],
      [{ structured_outputs: { regex: "x".repeat(10_001) } }, "structured_outputs", "structured_outputs.regex"],
      [{ guided_grammar: "x".repeat(100_001) }, "guided_grammar", "guided_grammar"],
      [{ structured_outputs: { grammar: "x".repeat(100_001) } }, "structured_outputs", "structured_outputs.grammar"],
      [{ guided_choice: Array.from({ length: 1_001 }, (_, i) => `c${i}`) }, "guided_choice", "guided_choice"],
      [{ structured_outputs: { choice: Array.from({ length: 1_001 }, (_, i) => `c${i}`) } }, "structured_outputs", "structured_outputs.choice"],
    ];
    for (const [body, param, at] of cases) {
      const e = refusal({ model: "m", ...body });
      expect.soft(e, at).toBeInstanceOf(ShimError);
      expect.soft(e && [e.status, e.param], at).toEqual([400, param]);
      expect.soft(e?.message, at).toContain(`'${at}'`);
    }
  });

  it("pass when within the limits, a non-strict tool's parameters are not read, and a schema that is not JSON is left to vLLM", () => {
    const fine = wide(5_000);
    expect(refusal({ response_format: { type: "json_schema", json_schema: { name: "x", schema: fine } }, guided_json: fine, structured_outputs: { json: fine, regex: "a{3}", grammar: "root ::= \"a\"" } })).toBeUndefined();
    expect(refusal({ tools: [{ type: "function", function: { name: "f", parameters: wide(5_001) } }] })).toBeUndefined();
    expect(refusal({ guided_json: "{ not json" })).toBeUndefined();
    expect(refusal({ guided_grammar: "x".repeat(100_000), structured_outputs: { regex: "x".repeat(10_000) } })).toBeUndefined(); // at the limits
    expect(refusal({ tool_choice: "auto", tools: [{ type: "function", function: { name: "f", parameters: wide(5_001) } }] })).toBeUndefined();
    expect(refusal({ tool_choice: "required", tools: [null, "f", 1] })).toBeUndefined(); // not tools: vLLM's to refuse, not a crash here
    expect(refusal({ response_format: { type: "json_object" } })).toBeUndefined();
  });

  it("with tool_choice \"required\" the tools' parameters are one schema, as vLLM compiles them, held to four times one schema's limits; named, the named one's", () => {
    const tools = (...widths: number[]) => widths.map((n, i) => ({ type: "function", function: { name: `f${i}`, parameters: wide(n) } }));
    // Four tools at OpenAI's per-schema limit are the combined limit (COMBINED_FACTOR, combined-limits.ts); one property more is past it.
    expect(refusal({ tool_choice: "required", tools: tools(5_000, 5_000, 5_000, 5_000) })).toBeUndefined();
    const e = refusal({ tool_choice: "required", tools: [...tools(5_000, 5_000, 5_000, 5_000), { type: "namespace", name: "n", tools: [{ type: "function", name: "g", parameters: wide(1) }] }] });
    expect(e && [e.status, e.param]).toEqual([400, "tools"]);
    expect(e?.message).toMatch(/^The schema in 'tools' \(every tool's parameters: with tool_choice "required" the model server compiles them as one, held to 4 times one schema's limits\) has more than 20000 object properties/);
    // Given as JSON text too, and a tool past the limits alone is still named.
    expect(refusal({ tool_choice: "required", tools: [{ type: "function", function: { name: "a", parameters: JSON.stringify(wide(5_000)) } }, ...tools(5_000, 5_000, 5_000, 1)] })?.param).toBe("tools");
    expect(refusal({ tool_choice: "required", tools: tools(1, 5_001) })?.message).toContain("'tools[1].function.parameters'");
    // Enum values and characters are held to four times theirs too.
    expect(refusal({ tool_choice: "required", tools: [4, 4, 4, 4].map((_, i) => ({ type: "function", function: { name: `e${i}`, parameters: enumOf(1_000) } })) })).toBeUndefined();
    expect(refusal({ tool_choice: "required", tools: [1_000, 1_000, 1_000, 1_000, 1].map((n, i) => ({ type: "function", function: { name: `e${i}`, parameters: enumOf(n) } })) })?.message).toMatch(/has more than 4000 enum values/);
    const chars = (n: number, i: number) => ({ type: "function", function: { name: `c${i}`, parameters: { const: "c".repeat(n) } } });
    expect(refusal({ tool_choice: "required", tools: [120_000, 120_000, 120_000, 120_000].map(chars) })).toBeUndefined();
    expect(refusal({ tool_choice: "required", tools: [120_000, 120_000, 120_000, 120_000, 1].map(chars) })?.message).toMatch(/has more than 480000 characters/);
    // Depth is not multiplied: a union adds no level, so tools at the depth limit pass together.
    expect(refusal({ tool_choice: "required", tools: [nested(10), nested(10)].map((p, i) => ({ type: "function", function: { name: `d${i}`, parameters: p } })) })).toBeUndefined();
    // The case the combined check exists for: fifty tools of 4,900 properties (245,000 in one compile).
    expect(refusal({ tool_choice: "required", tools: tools(...Array<number>(50).fill(4_900)) })?.message).toMatch(/has more than 20000 object properties/);
    // vLLM compiles only the named tool's.
    expect(refusal({ tool_choice: { type: "function", function: { name: "f0" } }, tools: tools(5_000, 5_000, 5_000, 5_000, 5_000) })).toBeUndefined();
  });

  it("under tool_choice auto, one strict tool has vLLM compile every tool not strict: false, as one grammar", () => {
    // vLLM's get_model_structural_tag (structural_tag_registry.py): under "auto" a structural tag is
    // built once any tool is strict, of every tool, each with its parameters unless strict is false.
    const tool = (n: number, strict?: boolean, name = `f${n}`) => ({ type: "function", function: { name, parameters: wide(n), ...(strict === undefined ? {} : { strict }) } });
    const together = /^The schema in 'tools' \(every tool's parameters: with a strict tool under tool_choice "auto" the model server compiles them as one, held to 4 times one schema's limits\) has more than 20000 object properties/;
    const four = (strict?: boolean) => [tool(5_000, true, "a"), tool(5_000, strict, "b"), tool(5_000, strict, "c"), tool(4_999, strict, "d")];
    for (const choice of [undefined, "auto"]) {
      const e = refusal({ tool_choice: choice, tools: [...four(true), tool(2, true)] });
      expect(e && [e.status, e.param], String(choice)).toEqual([400, "tools"]);
      expect(e?.message, String(choice)).toMatch(together);
      // A tool that says nothing of strict is in the grammar too, and alone past the limits is named.
      expect(refusal({ tool_choice: choice, tools: [...four(), tool(2)] })?.message).toMatch(together);
      expect(refusal({ tool_choice: choice, tools: [tool(1, true), tool(5_001)] })?.message).toContain("'tools[1].function.parameters'");
      // strict: false is compiled without its schema; with no strict tool at all nothing is compiled.
      expect(refusal({ tool_choice: choice, tools: [...four(true), tool(5_000, false)] })).toBeUndefined();
      expect(refusal({ tool_choice: choice, tools: [..."bcde"].map((name) => tool(5_000, undefined, name)).concat(tool(5_001)) })).toBeUndefined();
    }
    // The Responses API's tools, a namespace's included.
    const fn = (n: number, strict?: boolean, name = `g${n}`) => ({ type: "function", name, parameters: wide(n), ...(strict === undefined ? {} : { strict }) });
    expect(refusal({ tools: [fn(5_000, true), { type: "namespace", name: "n", tools: [fn(5_000, undefined, "x"), fn(5_000, undefined, "y"), fn(5_000, undefined, "z"), fn(1)] }] })?.message).toMatch(together);
    // At the combined limit it passes: four tools of 5,000, one property short of the fifth's one.
    expect(refusal({ tools: [...four(), tool(1)] })).toBeUndefined();
  });

  it("under tool_choice auto, three calendar tools with a time-zone enum each, one strict, pass as OpenAI takes them", () => {
    // 418 IANA zones a tool: 1,254 enum values in the one grammar, past one schema's 1,000 (the
    // structured-output review, finding 4: this was a 400 though each tool passes alone).
    const zones = timeZones();
    expect(refusal({ tool_choice: "auto", tools: calendarTools(zones) })).toBeUndefined();
    // Ten such tools (4,180 values) are past four schemas' enum values.
    expect(refusal({ tool_choice: "auto", tools: calendarCopies(zones, 10) })?.message).toMatch(/has more than 4000 enum values/);
  });

  it("every limit can be turned off", () => {
    const off = Object.fromEntries(Object.keys(LIMITS).map((k) => [k, null])) as unknown as StructuredLimits;
    expect(refusal({ guided_json: nested(50), guided_regex: "a{1,60000}", guided_grammar: "x".repeat(200_000), structured_outputs: { json: wide(10_000) } }, off)).toBeUndefined();
  });
});

describe("SHIM_CONFIG structuredOutputs", () => {
  const parse = (structuredOutputs: unknown) => parseShimConfig({ SHIM_UPSTREAM_URL: "http://litellm:4000/v1", SHIM_CONFIG: "/cfg.yaml" }, () => stringify({ structuredOutputs }));
  const problems = (value: unknown) => {
    try {
      parse(value);
      return [];
    } catch (e) {
      return (e as ConfigError).problems;
    }
  };
  it("defaults to OpenAI's limits, merges what is set over them, and takes null (no limit) or false (no check)", () => {
    expect(parseShimConfig({ SHIM_UPSTREAM_URL: "http://litellm:4000/v1" }, () => "").structuredOutputs).toEqual(LIMITS);
    expect(parse({ maxProperties: 20_000, maxRepetition: null }).structuredOutputs).toEqual({ ...LIMITS, maxProperties: 20_000, maxRepetition: null });
    expect(Object.values(parse(false).structuredOutputs).every((v) => v === null)).toBe(true);
  });
  it("refuses what is not a positive integer or null, and unknown keys", () => {
    expect(problems({ maxDepth: 0 })).toEqual(["SHIM_CONFIG structuredOutputs.maxDepth: 0 is not valid; expected a positive integer, or null for unlimited"]);
    expect(problems({ maxDepht: 12 })[0]).toMatch(/^SHIM_CONFIG structuredOutputs.maxDepht: "maxDepht" is not valid; expected one of the keys maxProperties, maxDepth/);
    expect(problems(true)).toEqual(["SHIM_CONFIG structuredOutputs: true is not valid; expected a mapping of limits, or false for no check"]);
  });
});

describe("through the shim, to the openai SDK", () => {
  const shim = shimWithKey();

  const expectRefused = async (call: Promise<unknown>, param: string, at: string) => {
    expect(refusalMessage(await refusedUnsent(shim.h, call, param))).toBe(`The schema in '${at}' has more than 5000 object properties: the model server compiles it before the first token, on the CPU every request shares. Make it smaller, or ask the operator to raise the shim's structuredOutputs limits.`);
  };
  const messages = [{ role: "user" as const, content: "hi" }];

  it("chat's response_format past OpenAI's limits is a BadRequestError naming it, never forwarded", async () => {
    await expectRefused(shim.h.client(shim.key).chat.completions.create({ model: "qwen2.5-7b", messages, response_format: { type: "json_schema", json_schema: { name: "x", schema: wide(5_001) } } }), "response_format", "response_format.json_schema.schema");
  });

  it("vLLM's guided_json and structured_outputs through the SDK's extra body", async () => {
    await expectRefused(shim.h.client(shim.key).chat.completions.create({ model: "qwen2.5-7b", messages, guided_json: wide(5_001) } as never), "guided_json", "guided_json");
    await expectRefused(shim.h.client(shim.key).completions.create({ model: "qwen2.5-7b", prompt: "hi", structured_outputs: { json: wide(5_001) } } as never), "structured_outputs", "structured_outputs.json");
  });

  it("the Responses API's text.format", async () => {
    await expectRefused(shim.h.client(shim.key).responses.create({ model: "qwen2.5-7b", input: "hi", text: { format: { type: "json_schema", name: "x", schema: wide(5_001) } } }), "text", "text.format.schema");
  });

  it("a format without a schema (Responses' text or json_object, a json_schema with none) is served, not a 500", async () => {
    // The walk read the missing schema as a schema: every Responses request naming its text format was an internal error.
    const text = await shim.h.client(shim.key).responses.create({ model: "qwen2.5-7b", input: "hi", text: { format: { type: "text" } } });
    expect(text.status).toBe("completed");
    const json = await shim.h.client(shim.key).responses.create({ model: "qwen2.5-7b", input: "hi", text: { format: { type: "json_object" } } });
    expect(json.status).toBe("completed");
    const none = await shim.h.client(shim.key).chat.completions.create({ model: "qwen2.5-7b", messages, response_format: { type: "json_schema", json_schema: { name: "x" } } });
    expect(none.choices.length).toBe(1);
  });

  it("a schema or structural tag given as JSON text is held to the body's JSON limits, a BadRequestError naming its member, never forwarded", async () => {
    // The body's shape is checked before it is parsed (json-shape.ts), but a member's JSON text was
    // parsed and walked whatever it held: 7.8 MB of guided_json ({"allOf":[{},{},…]}, 2.6 million
    // objects in one string) held the shim's one thread 4 to 9 s (found by the structured-output review).
    const many = `{"allOf":[${Array(200_001).fill("{}").join(",")}]}`;
    const tag = JSON.stringify({ type: "structural_tag", format: { type: "sequence", elements: Array.from({ length: 200_001 }, () => ({})) } });
    const cases: [Record<string, unknown>, string, string][] = [
      [{ guided_json: many }, "guided_json", "guided_json"],
      [{ structured_outputs: { json: many } }, "structured_outputs", "structured_outputs.json"],
      [{ structured_outputs: { structural_tag: tag } }, "structured_outputs", "structured_outputs.structural_tag"],
    ];
    for (const [extra, param, at] of cases) {
      const bad = await refusedUnsent(shim.h, shim.h.client(shim.key).chat.completions.create({ model: "qwen2.5-7b", messages, ...extra } as never), param);
      expect(bad.message).toContain(`The JSON text in '${at}' has more than 200000 JSON objects and arrays`);
    }
    // Within the limits, JSON text is walked and served as before.
    const ok = await shim.h.client(shim.key).chat.completions.create({ model: "qwen2.5-7b", messages, guided_json: `{"allOf":[${Array(1_000).fill("{}").join(",")}]}` } as never);
    expect(ok.choices.length).toBe(1);
  });

  it("three calendar tools with a 418-value time-zone enum each, one strict, under tool_choice auto, are served as OpenAI serves them", async () => {
    // Each passes alone, and OpenAI's limits are per schema; the combined check held their 1,254
    // enum values to one schema's 1,000 and refused it (the structured-output review, finding 4).
    const before = shim.h.fake.counters.received;
    const tools = calendarTools(timeZones());
    const ok = await shim.h.client(shim.key).chat.completions.create({ model: "qwen2.5-7b", messages, tools, tool_choice: "auto" });
    expect(ok.choices.length).toBe(1);
    expect(shim.h.fake.counters.received).toBe(before + 1);
    expect((JSON.parse(shim.h.fake.requests.at(-1)!.body) as { tools: unknown }).tools).toEqual(tools);
    // Past four schemas' enum values (ten such tools, 4,180) it is still a BadRequestError naming the combined limit, never forwarded.
    const bad = await refusedUnsent(shim.h, shim.h.client(shim.key).chat.completions.create({ model: "qwen2.5-7b", messages, tools: calendarCopies(timeZones(), 10), tool_choice: "auto" }), "tools");
    expect(bad.message).toContain("held to 4 times one schema's limits) has more than 4000 enum values");
  });

  it("a schema within the limits is served, and a body without structured outputs reaches the upstream byte for byte", async () => {
    const ok = await shim.h.client(shim.key).chat.completions.create({ model: "qwen2.5-7b", messages, response_format: { type: "json_schema", json_schema: { name: "x", schema: wide(5_000) } } });
    expect(ok.choices.length).toBe(1);
    const sent = '{ "model" : "qwen2.5-7b", "messages": [{"role": "user", "content": "x"}], "seed": 12345678901234567890, "temperature": 1.0 }';
    expect((await shim.h.post(shim.key, "/v1/chat/completions", sent)).status).toBe(200);
    expect(shim.h.fake.requests.at(-1)!.body).toBe(sent);
  });
});
