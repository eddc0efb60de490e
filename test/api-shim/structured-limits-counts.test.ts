// A schema's length and count keywords (minLength/maxLength, minItems/maxItems,
// minProperties/maxProperties) are compiled by xgrammar's JSON-schema converter into the same
// counted repetition a regex's `{n,m}` is (mlc-ai/xgrammar cpp/json_schema_converter.cc:
// GenerateString, GenerateArray, GetPropertyWithNumberConstraints). A regex's count was held to
// 1,000 (maxRepetition) while `{"type":"string","minLength":100000000}` passed unread (found by
// the security re-audit, F5). They are now held to the same bound: a minimum past it refused, a
// maximum past it removed before forwarding (schema-maxima.ts; schema-maxima.test.ts through the shim).
import { describe, expect, it } from "vitest";
import { Relaxation } from "../../api-shim/src/requests/schema-maxima.ts";
import { DEFAULT_STRUCTURED_LIMITS as LIMITS, schemaRefusal } from "../../api-shim/src/requests/structured-limits.ts";
import { refusalMessage, refusedUnsent, shimWithKey, structuredRefusal } from "../support/structured-refusal.ts";

/** Where each keyword belongs: a string's, an array's, an object's. */
const holder = (k: (typeof MINIMA | typeof MAXIMA)[number], n: number): Record<string, unknown> =>
  k.endsWith("Length") ? { type: "string", [k]: n } : k.endsWith("Items") ? { type: "array", items: { type: "string" }, [k]: n } : { type: "object", additionalProperties: { type: "string" }, [k]: n };

const MINIMA = ["minLength", "minItems", "minProperties"] as const;
const MAXIMA = ["maxLength", "maxItems", "maxProperties"] as const;

describe("a schema's length and count keywords", () => {
  it("a minimum passes at the regex's repetition bound and is refused one past it, naming its keyword", () => {
    for (const k of MINIMA) {
      expect(schemaRefusal(holder(k, 1_000), LIMITS, new Relaxation()), k).toBeNull();
      expect(schemaRefusal(holder(k, 1_001), LIMITS, new Relaxation()), k).toBe(`has a '${k}' of 1001, a counted repetition larger than ${1_000}`);
    }
    expect(schemaRefusal({ type: "string", minLength: 100_000_000 }, LIMITS)).toBe("has a 'minLength' of 100000000, a counted repetition larger than 1000");
  });

  it("a maximum past the bound is removed, not refused; at the bound it stays (schema-maxima.ts)", () => {
    for (const k of MAXIMA) {
      const at = holder(k, 1_000);
      const relax = new Relaxation();
      expect(schemaRefusal(at, LIMITS, relax), k).toBeNull();
      expect([at[k], relax.removed], k).toEqual([1_000, 0]);
      const past = holder(k, 1_001);
      expect(schemaRefusal(past, LIMITS, relax), k).toBeNull();
      expect([k in past, relax.removed, relax.header()], k).toEqual([false, 1, k]);
    }
    // Without a Relaxation (a walk of schemas already relaxed: tools together), a maximum is neither refused nor removed.
    const left = holder("maxLength", 5_000);
    expect(schemaRefusal(left, LIMITS)).toBeNull();
    expect(left.maxLength).toBe(5_000);
  });

  it("are read at any depth, in definitions and unions too", () => {
    expect(schemaRefusal({ $defs: { D: { type: "array", minItems: 2_000 } } }, LIMITS)).toMatch(/'minItems' of 2000/);
    expect(schemaRefusal({ anyOf: [{ type: "string", maxLength: 10 }, { type: "object", minProperties: 1e9 }] }, LIMITS)).toMatch(/'minProperties' of 1000000000/);
    const deep = { type: "object", properties: { a: { type: "array", items: { type: "string", maxLength: 5_000 } } }, $defs: { D: { type: "array", maxItems: 2_000 } }, anyOf: [{ type: "string", maxLength: 10 }, { type: "object", maxProperties: 1e9 }] };
    const relax = new Relaxation();
    expect(schemaRefusal(deep, LIMITS, relax)).toBeNull();
    expect(deep).toEqual({ type: "object", properties: { a: { type: "array", items: { type: "string" } } }, $defs: { D: { type: "array" } }, anyOf: [{ type: "string", maxLength: 10 }, { type: "object" }] });
    expect(relax.header()).toBe("maxLength, maxItems, maxProperties");
  });

  it("are left to vLLM when not a number, and not read with maxRepetition off", () => {
    expect(schemaRefusal({ type: "string", maxLength: "100000000" }, LIMITS, new Relaxation())).toBeNull();
    expect(schemaRefusal({ type: "string", minLength: 100_000_000 }, { ...LIMITS, maxRepetition: null })).toBeNull();
    const off = { type: "string", maxLength: 100_000_000 };
    expect(schemaRefusal(off, { ...LIMITS, maxRepetition: null }, new Relaxation())).toBeNull();
    expect(off.maxLength).toBe(100_000_000);
  });

  it("an OpenAI schema with its array bounds and a string's length passes", () => {
    // OpenAI documents minItems/maxItems (and a string's pattern and format) for structured outputs.
    const schema = {
      type: "object",
      properties: {
        tags: { type: "array", items: { type: "string", minLength: 1, maxLength: 64 }, minItems: 1, maxItems: 20 },
        rows: { type: "array", items: { type: "object", properties: { v: { type: "number" } }, required: ["v"], additionalProperties: false }, maxItems: 1_000 },
      },
      required: ["tags", "rows"],
      additionalProperties: false,
    };
    expect(schemaRefusal(schema, LIMITS)).toBeNull();
    expect(structuredRefusal({ response_format: { type: "json_schema", json_schema: { name: "x", strict: true, schema } } })).toBeUndefined();
  });
});

describe("through the shim, to the openai SDK", () => {
  const shim = shimWithKey();

  it("a string of 100,000,000 characters at least is a BadRequestError naming response_format, never forwarded", async () => {
    const call = shim.h.client(shim.key).chat.completions.create({
      model: "qwen2.5-7b",
      messages: [{ role: "user", content: "hi" }],
      response_format: { type: "json_schema", json_schema: { name: "x", schema: { type: "object", properties: { s: { type: "string", minLength: 100_000_000 } } } } },
    });
    expect(refusalMessage(await refusedUnsent(shim.h, call, "response_format"))).toMatch(/^The schema in 'response_format.json_schema.schema' has a 'minLength' of 100000000, a counted repetition larger than 1000: the model server compiles it/);
  });
});
