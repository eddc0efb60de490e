// A `$ref` to a local definition is compiled by xgrammar as a rule reference to that definition's
// one rule, as a union's choice is (mlc-ai/xgrammar cpp/json_schema_converter.cc: GenerateRef,
// GenerateAnyOf): a union whose choice is a `$ref` to a union is the grammar a union directly in a
// union is, the nesting vLLM issue #54003 compiles for minutes. The depth walk did not follow refs,
// so fifty unions nested through `$defs` passed (found by the security re-audit, F6). Depth is now
// counted through local refs; a recursive ref is one rule in xgrammar, so a definition already on
// the path is not followed again.
import { describe, expect, it } from "vitest";
import { DEFAULT_STRUCTURED_LIMITS as LIMITS, REF_WALK_BUDGET, schemaRefusal } from "../../api-shim/src/requests/structured-limits.ts";
import { refusalMessage, refusedUnsent, shimWithKey, wideSchema } from "../support/structured-refusal.ts";

const ref = (name: string) => ({ $ref: `#/$defs/${name}` });
/** The finding's schema: d0 … d{n-1}, each a union of a ref to the next and null. */
const unionChain = (n: number): Record<string, unknown> => ({
  type: "object",
  properties: { a: ref("d0") },
  $defs: Object.fromEntries(Array.from({ length: n }, (_, i) => [`d${i}`, i === n - 1 ? { type: "string" } : { anyOf: [ref(`d${i + 1}`), { type: "null" }] }])),
});
/** The same unions nested directly, in the same property. */
const unionNest = (n: number): Record<string, unknown> => {
  let s: unknown = { type: "string" };
  for (let i = 0; i < n - 1; i++) s = { anyOf: [s, { type: "null" }] };
  return { type: "object", properties: { a: s } };
};
/** A definition of n empty schemas in one allOf, used by ref at every level of a ten-level object, as a member and in a union. */
const usedEverywhere = (n: number): Record<string, unknown> => {
  let s: Record<string, unknown> = { type: "string" };
  for (let i = 0; i < 9; i++) s = { type: "object", properties: { p: s, r: ref("D") }, anyOf: [ref("D"), { type: "null" }] };
  return { ...s, $defs: { D: { allOf: Array.from({ length: n }, () => ({})) } } };
};
const nested = (levels: number): unknown => {
  let s: unknown = { type: "string" };
  for (let i = 0; i < levels; i++) s = { type: "object", properties: { a: s } };
  return s;
};

describe("depth through $ref", () => {
  it("refuses the finding's fifty unions nested through $defs", () => {
    expect(schemaRefusal(unionChain(50), LIMITS)).toBe("nests more than 10 levels");
  });

  it("counts unions nested through refs as the same unions nested directly", () => {
    for (const n of [10, 11, 12, 13]) expect(schemaRefusal(unionChain(n), LIMITS), String(n)).toBe(schemaRefusal(unionNest(n), LIMITS));
    expect(schemaRefusal(unionChain(11), LIMITS)).toBeNull();
    expect(schemaRefusal(unionChain(12), LIMITS)).toBe("nests more than 10 levels");
  });

  it("places a definition where it is used: deeper use, deeper levels", () => {
    const at = (path: number, levels: number) => {
      let s: unknown = ref("D");
      for (let i = 0; i < path; i++) s = { type: "object", properties: { p: s } };
      return { ...(s as object), $defs: { D: nested(levels) } };
    };
    expect(schemaRefusal(at(1, 9), LIMITS)).toBeNull();
    expect(schemaRefusal(at(2, 8), LIMITS)).toBeNull();
    expect(schemaRefusal(at(2, 9), LIMITS)).toBe("nests more than 10 levels");
    // definitions too, and a pointer's escapes (~1 is "/", ~0 is "~").
    expect(schemaRefusal({ type: "object", properties: { p: { type: "object", properties: { q: { $ref: "#/definitions/a~1b~0c" } } } }, definitions: { "a/b~c": nested(9) } }, LIMITS)).toBe("nests more than 10 levels");
    // ~01 is "~1", not "/" (RFC 6901 undoes ~1 first): a definition named with a tilde is not a way past the walk.
    expect(schemaRefusal({ type: "object", properties: { p: { type: "object", properties: { q: { $ref: "#/definitions/a~01b" } } } }, definitions: { "a~1b": nested(9), "a/b": {} } }, LIMITS)).toBe("nests more than 10 levels");
  });

  it("passes OpenAI's documented recursive schemas: a ref already on the path is one rule, not infinite depth", () => {
    const ui = {
      type: "object",
      properties: {
        type: { type: "string", enum: ["div", "button", "header", "section", "field", "form"] },
        label: { type: "string" },
        children: { type: "array", items: { $ref: "#" } },
        attributes: { type: "array", items: { type: "object", properties: { name: { type: "string" }, value: { type: "string" } }, required: ["name", "value"], additionalProperties: false } },
      },
      required: ["type", "label", "children", "attributes"],
      additionalProperties: false,
    };
    const linkedList = {
      type: "object",
      properties: { linked_list: ref("linked_list_node") },
      $defs: { linked_list_node: { type: "object", properties: { value: { type: "number" }, next: { anyOf: [ref("linked_list_node"), { type: "null" }] } }, additionalProperties: false, required: ["next", "value"] } },
      additionalProperties: false,
      required: ["linked_list"],
    };
    expect(schemaRefusal(ui, LIMITS)).toBeNull();
    expect(schemaRefusal(linkedList, LIMITS)).toBeNull();
    // A union of itself, and two definitions that refer to each other.
    expect(schemaRefusal({ properties: { a: ref("u") }, $defs: { u: { anyOf: [ref("u"), { type: "null" }] } } }, LIMITS)).toBeNull();
    expect(schemaRefusal({ properties: { a: ref("x") }, $defs: { x: { anyOf: [ref("y"), { type: "null" }] }, y: { anyOf: [ref("x"), { type: "integer" }] } } }, LIMITS)).toBeNull();
  });

  it("counts what a definition holds once, however often it is used", () => {
    expect(schemaRefusal({ type: "object", properties: { a: ref("W"), b: ref("W"), c: ref("W") }, $defs: { W: wideSchema(4_990) } }, LIMITS)).toBeNull();
    expect(schemaRefusal({ properties: { a: ref("E"), b: ref("E") }, $defs: { E: { enum: Array.from({ length: 999 }, (_, i) => i) } } }, LIMITS)).toBeNull();
  });

  it("ends quickly on refs that fan out and on long chains of aliases", () => {
    // Forty definitions, each holding the next twice: 2^40 paths, each definition walked a bounded number of times.
    const fan = { properties: { a: ref("f0") }, $defs: Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`f${i}`, { type: "object", properties: { x: ref(`f${i + 1}`), y: ref(`f${i + 1}`) } }])) };
    const aliases = { properties: { a: ref("a0") }, $defs: Object.fromEntries(Array.from({ length: 20_000 }, (_, i) => [`a${i}`, ref(`a${i + 1}`)])) };
    const start = performance.now();
    expect(schemaRefusal(fan, LIMITS)).toBe("nests more than 10 levels");
    expect(schemaRefusal(fan, { ...LIMITS, maxDepth: 1_000 })).toBeNull();
    expect(schemaRefusal(aliases, { ...LIMITS, maxProperties: null, maxSchemaChars: null })).toBeNull();
    expect(performance.now() - start).toBeLessThan(5_000);
  });

  it("refuses a definition walked again at every level it is used past the walk's budget; a wide definition used at a few levels passes", () => {
    // A flat definition of n schemas, used at each of ten levels, as a member and as a choice:
    // walked some twenty times. 190,000 of them (581 KB with nested $defs) held the shim's one
    // thread 14 s, every other request waiting (found by the structured-output review).
    expect(schemaRefusal(usedEverywhere(20_000), LIMITS)).toBe(`has local $refs whose definitions, walked at each level they are used, are more than ${REF_WALK_BUDGET} schemas`);
    expect(schemaRefusal(usedEverywhere(5_000), LIMITS)).toBeNull();
    expect(schemaRefusal({ type: "object", properties: { a: ref("W"), b: { type: "object", properties: { c: ref("W") } }, d: { anyOf: [ref("W"), { type: "null" }] } }, $defs: { W: wideSchema(4_990) } }, LIMITS)).toBeNull();
  });

  it("leaves another document's refs, a missing definition and maxDepth null alone", () => {
    expect(schemaRefusal({ properties: { a: { $ref: "https://example.com/s.json" }, b: ref("missing") } }, LIMITS)).toBeNull();
    expect(schemaRefusal(unionChain(50), { ...LIMITS, maxDepth: null })).toBeNull();
  });
});

describe("through the shim, to the openai SDK", () => {
  const shim = shimWithKey();

  it("unions nested through $defs are a BadRequestError naming response_format, never forwarded; OpenAI's recursive schema is served", async () => {
    const messages = [{ role: "user" as const, content: "hi" }];
    const bad = await refusedUnsent(shim.h, shim.h.client(shim.key).chat.completions.create({ model: "qwen2.5-7b", messages, response_format: { type: "json_schema", json_schema: { name: "x", schema: unionChain(50) } } }), "response_format");
    expect(refusalMessage(bad)).toMatch(/^The schema in 'response_format.json_schema.schema' nests more than 10 levels: /);
    const ok = await shim.h.client(shim.key).chat.completions.create({ model: "qwen2.5-7b", messages, response_format: { type: "json_schema", json_schema: { name: "x", schema: { type: "object", properties: { children: { type: "array", items: { $ref: "#" } } } } } } });
    expect(ok.choices.length).toBe(1);
  });

  it("a definition walked past the budget through its refs is a BadRequestError, never forwarded", async () => {
    const call = shim.h.client(shim.key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], response_format: { type: "json_schema", json_schema: { name: "x", schema: usedEverywhere(20_000) } } });
    expect((await refusedUnsent(shim.h, call, "response_format")).message).toMatch(/local \$refs whose definitions, walked at each level they are used, are more than/);
  });
});
