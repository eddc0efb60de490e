// A structural tag (vLLM's `response_format` of type `structural_tag`, and
// `structured_outputs.structural_tag` as JSON text) carries schemas, regexes and grammars that
// vLLM compiles with xgrammar as it does `response_format`'s json_schema: held to the same
// limits, or any schema past them reached vLLM wrapped in one.
import { describe, expect, it } from "vitest";
import { ShimError } from "../../api-shim/src/errors.ts";
import { refusedUnsent, shimWithKey, structuredRefusal, wideSchema } from "../support/structured-refusal.ts";

const wide = (n: number) => wideSchema(n);
const legacy = (schema: unknown) => ({ type: "structural_tag", structures: [{ begin: "<f>", schema, end: "</f>" }], triggers: ["<f>"] });
/** xgrammar's newer format: a schema, a regex and a grammar nested in tags, a sequence and a choice. */
const format = (parts: { schema?: unknown; pattern?: string; grammar?: string }) => ({
  type: "structural_tag",
  format: {
    type: "triggered_tags",
    triggers: ["<f>"],
    tags: [{
      begin: "<f>",
      end: "</f>",
      content: {
        type: "sequence",
        elements: [
          { type: "json_schema", json_schema: parts.schema ?? { type: "string" } },
          { type: "or", elements: [{ type: "regex", pattern: parts.pattern ?? "a+" }, { type: "grammar", grammar: parts.grammar ?? 'root ::= "b"' }] },
        ],
      },
    }],
  },
});

const refusal = (body: Record<string, unknown>) => structuredRefusal(body);

describe("a structural tag", () => {
  it("has its schemas held together to four times one schema's limits, as the one grammar vLLM compiles of them", () => {
    const structures = (...widths: number[]) => ({ type: "structural_tag", structures: widths.map((n, i) => ({ begin: `<f${i}>`, schema: wide(n), end: `</f${i}>` })), triggers: ["<f"] });
    expect(refusal({ response_format: structures(5_000, 5_000, 5_000, 5_000) })).toBeUndefined();
    const e = refusal({ response_format: structures(5_000, 5_000, 5_000, 5_000, 1) });
    expect(e && [e.status, e.param]).toEqual([400, "response_format"]);
    expect(e?.message).toMatch(/^The schemas in 'response_format' \(compiled as one grammar, held to 4 times one schema's limits\) together have more than 20000 object properties/);
    expect(refusal({ structured_outputs: { structural_tag: JSON.stringify(structures(5_000, 5_000, 5_000, 4_000, 1_001)) } })?.param).toBe("structured_outputs");
    expect(refusal({ structured_outputs: { structural_tag: JSON.stringify(structures(5_000, 5_000, 5_000, 4_000, 1_000)) } })).toBeUndefined();
  });

  it("has its schemas, regexes and grammars held to the limits, in either form, as an object or JSON text", () => {
    const tagged = "response_format.format.tags[0].content.elements";
    const cases: [Record<string, unknown>, string, string, RegExp][] = [
      [{ response_format: legacy(wide(5_001)) }, "response_format", "response_format.structures[0].schema", /has more than 5000 object properties/],
      [{ response_format: format({ schema: wide(5_001) }) }, "response_format", `${tagged}[0].json_schema`, /has more than 5000 object properties/],
      [{ response_format: format({ pattern: "a{1,60000}" }) }, "response_format", `${tagged}[1].elements[0].pattern`, /counted repetition of 60000/],
      [{ response_format: format({ grammar: "x".repeat(100_001) }) }, "response_format", `${tagged}[1].elements[1].grammar`, /longer than 100000 characters/],
      [{ structured_outputs: { structural_tag: JSON.stringify(legacy(wide(5_001))) } }, "structured_outputs", "structured_outputs.structural_tag.structures[0].schema", /object properties/],
      [{ structured_outputs: { structural_tag: JSON.stringify(format({ schema: wide(5_001) })) } }, "structured_outputs", "structured_outputs.structural_tag.format.tags[0].content.elements[0].json_schema", /object properties/],
    ];
    for (const [body, param, at, why] of cases) {
      const e = refusal({ model: "m", ...body });
      expect.soft(e, at).toBeInstanceOf(ShimError);
      expect.soft(e && [e.status, e.param], at).toEqual([400, param]);
      expect.soft(e?.message, at).toContain(`'${at}'`);
      expect.soft(e?.message, at).toMatch(why);
    }
  });

  it("within the limits passes, and text that is not JSON is left to vLLM", () => {
    expect(refusal({ response_format: legacy(wide(5_000)) })).toBeUndefined();
    expect(refusal({ response_format: format({ schema: wide(5_000), pattern: "a{1000}", grammar: "x".repeat(100_000) }) })).toBeUndefined();
    expect(refusal({ structured_outputs: { structural_tag: JSON.stringify(format({})) } })).toBeUndefined();
    expect(refusal({ structured_outputs: { structural_tag: "{not json" } })).toBeUndefined();
  });
});

describe("through the shim, to the openai SDK", () => {
  const shim = shimWithKey();

  it("an oversized schema in a structural tag is a BadRequestError naming response_format, never forwarded", async () => {
    await refusedUnsent(shim.h, shim.h.client(shim.key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], response_format: legacy(wide(5_001)) } as never), "response_format");
  });
});
