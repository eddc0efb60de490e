// A schema's large *maximum* (maxLength, maxItems, maxProperties above maxRepetition) is removed
// before the body goes to vLLM, and the request is served, with `x-schema-relaxed` naming what was
// removed; a large *minimum* is still refused. Tool and framework schemas set a large maximum as a
// loose cap (zod's `.max(5000)`, a file-writing tool's `content` of maxLength 100000): refusing
// them broke ordinary clients, and xgrammar pays for a large maximum at every decoding step
// (mlc-ai/xgrammar#852) as well as at compile time, while an unbounded string costs nothing extra.
// llama.cpp chose the same (ggml-org/llama.cpp#26613).
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, startShim } from "../support/shim-harness.ts";

const MODEL = "qwen2.5-7b";
const messages = [{ role: "user" as const, content: "write the file" }];

/** A file-writing tool's arguments, as agent frameworks declare them. */
const writeFile = (content: Record<string, unknown>) => ({
  type: "object",
  properties: { path: { type: "string", maxLength: 255 }, content: { type: "string", ...content }, lines: { type: "array", items: { type: "string" }, maxItems: 5_000 } },
  required: ["path", "content"],
  additionalProperties: false,
});

describe("a schema's large maxima are removed and the request served", () => {
  let h: Harness;
  let key: string;
  let client: OpenAI;
  beforeAll(async () => {
    h = await startShim();
    ({ key } = await h.createKey({ credits: 100 }));
    client = h.client(key);
  });
  afterAll(async () => h.close());

  /** The body vLLM received last, parsed. */
  const received = () => JSON.parse(h.fake.requests.at(-1)!.body) as Record<string, any>;

  it("response_format: maxLength 100000 and maxItems 5000 go, the rest of the schema stays; 200 and x-schema-relaxed", async () => {
    const { data, response } = await client.chat.completions
      .create({ model: MODEL, messages, response_format: { type: "json_schema", json_schema: { name: "file", strict: true, schema: writeFile({ maxLength: 100_000, minLength: 1 }) } } })
      .withResponse();
    expect(response.status).toBe(200);
    expect(data.choices[0]!.message.content).toMatch(/^\{/);
    expect(response.headers.get("x-schema-relaxed")).toBe("maxLength, maxItems");
    const schema = received().response_format.json_schema.schema;
    expect(schema.properties.content).toEqual({ type: "string", minLength: 1 });
    expect(schema.properties.lines).toEqual({ type: "array", items: { type: "string" } });
    expect(schema.properties.path).toEqual({ type: "string", maxLength: 255 }); // within the bound: kept
    expect(schema.required).toEqual(["path", "content"]);
  });

  it("a minimum above the bound is still a 400 naming the keyword, never forwarded", async () => {
    const before = h.fake.counters.received;
    const e = await client.chat.completions
      .create({ model: MODEL, messages, response_format: { type: "json_schema", json_schema: { name: "file", schema: writeFile({ minLength: 2_000, maxLength: 100_000 }) } } })
      .catch((err: unknown) => err);
    expect(e).toBeInstanceOf(OpenAI.BadRequestError);
    expect((e as InstanceType<typeof OpenAI.BadRequestError>).param).toBe("response_format");
    expect((e as InstanceType<typeof OpenAI.BadRequestError>).message).toMatch(/'minLength' of 2000/);
    for (const minimum of [{ minItems: 1_001 }, { minProperties: 1_001 }]) {
      const bad = await client.chat.completions
        .create({ model: MODEL, messages, response_format: { type: "json_schema", json_schema: { name: "x", schema: { type: "object", properties: { a: { type: "array", ...minimum } } } } } })
        .catch((err: unknown) => err);
      expect(bad, JSON.stringify(minimum)).toBeInstanceOf(OpenAI.BadRequestError);
    }
    expect(h.fake.counters.received).toBe(before);
  });

  it("a maximum at the bound is forwarded untouched: the client's bytes, no header", async () => {
    // Written by hand, with what JSON.stringify would not write back (spacing, 1.0, a seed past 2^53).
    const text = `{"model":"${MODEL}", "seed": 12345678901234567891, "temperature": 1.0, "messages":[{"role":"user","content":"hi"}],
      "response_format": {"type":"json_schema","json_schema":{"name":"x","schema":{"type":"string","maxLength": 1000}}}}`;
    const res = await h.post(key, "/v1/chat/completions", text);
    expect(res.status).toBe(200);
    expect(res.headers.get("x-schema-relaxed")).toBeNull();
    expect(h.fake.requests.at(-1)!.body).toBe(text);
  });

  it("only the member holding the schema is written again: the rest stays the client's bytes", async () => {
    const text = `{"model":"${MODEL}", "seed": 12345678901234567891, "temperature": 1.0, "messages":[{"role":"user","content":"hi"}],
      "response_format": {"type":"json_schema","json_schema":{"name":"x","schema":{"type":"string","maxLength": 1001}}}}`;
    const res = await h.post(key, "/v1/chat/completions", text);
    expect(res.status).toBe(200);
    expect(res.headers.get("x-schema-relaxed")).toBe("maxLength");
    expect(h.fake.requests.at(-1)!.body).toBe(text.replace(/"response_format": .*\}\}$/s, `"response_format": {"type":"json_schema","json_schema":{"name":"x","schema":{"type":"string"}}}}`));
  });

  it("a strict tool's parameters (chat and a Responses namespace) lose the maximum; a tool vLLM does not compile keeps it", async () => {
    const loose = { type: "object", properties: { note: { type: "string", maxLength: 50_000 } } };
    const { response } = await client.chat.completions
      .create({
        model: MODEL,
        messages,
        tools: [
          { type: "function", function: { name: "write_file", strict: true, parameters: writeFile({ maxLength: 100_000 }) } },
          { type: "function", function: { name: "note", strict: false, parameters: loose } },
        ],
      })
      .withResponse();
    expect(response.status).toBe(200);
    expect(response.headers.get("x-schema-relaxed")).toBe("maxLength, maxItems");
    const tools = received().tools;
    expect(tools[0].function.parameters.properties.content).toEqual({ type: "string" });
    expect(tools[0].function.parameters.properties.lines.maxItems).toBeUndefined();
    expect(tools[1].function.parameters).toEqual(loose); // strict: false under "auto": not compiled, sent as it was

    const r = await client.responses
      .create({
        model: MODEL,
        input: "write the file",
        text: { format: { type: "json_schema", name: "out", schema: { type: "object", properties: { files: { type: "object", additionalProperties: { type: "string" }, maxProperties: 10_000 } } } } },
        tools: [{ type: "namespace", name: "fs", tools: [{ type: "function", name: "write_file", strict: true, parameters: writeFile({ maxLength: 100_000 }) }] }],
      } as never)
      .withResponse();
    expect(r.response.status).toBe(200);
    expect(r.response.headers.get("x-schema-relaxed")).toBe("maxLength, maxItems, maxProperties");
    const body = received();
    expect(body.text.format.schema.properties.files).toEqual({ type: "object", additionalProperties: { type: "string" } });
    expect(body.tools[0].tools[0].parameters.properties.content).toEqual({ type: "string" });
  });

  it("vLLM's own members, JSON text or objects (guided_json, structured_outputs.json, a structural tag), lose it too", async () => {
    const schema = { type: "object", properties: { s: { type: "string", maxLength: 5_000 } } };
    const asText = JSON.stringify(schema);
    const tag = { type: "structural_tag", structures: [{ begin: "<f>", schema, end: "</f>" }], triggers: ["<f>"] };
    const cases: [Record<string, unknown>, (b: Record<string, any>) => unknown][] = [
      [{ guided_json: asText }, (b) => JSON.parse(b.guided_json)],
      [{ guided_json: schema }, (b) => b.guided_json],
      [{ structured_outputs: { json: asText } }, (b) => JSON.parse(b.structured_outputs.json)],
      [{ structured_outputs: { structural_tag: JSON.stringify(tag) } }, (b) => JSON.parse(b.structured_outputs.structural_tag).structures[0].schema],
      [{ response_format: tag }, (b) => b.response_format.structures[0].schema],
    ];
    for (const [extra, schemaOf] of cases) {
      const { response } = await client.chat.completions.create({ model: MODEL, messages, ...extra } as never).withResponse();
      expect(response.headers.get("x-schema-relaxed"), JSON.stringify(extra)).toBe("maxLength");
      expect(schemaOf(received()), JSON.stringify(extra)).toEqual({ type: "object", properties: { s: { type: "string" } } });
    }
  });

  it("a stream's head carries the header too", async () => {
    const { response } = await client.chat.completions
      .create({ model: MODEL, messages, stream: true, response_format: { type: "json_schema", json_schema: { name: "f", schema: writeFile({ maxLength: 100_000 }) } } })
      .withResponse();
    expect(response.headers.get("x-schema-relaxed")).toBe("maxLength, maxItems");
    expect(received().response_format.json_schema.schema.properties.content).toEqual({ type: "string" });
    expect(received().stream_options).toEqual({ include_usage: true });
  });

  it("a request without a large maximum has no header", async () => {
    const { response } = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 2 }).withResponse();
    expect(response.headers.get("x-schema-relaxed")).toBeNull();
  });
});

describe("with maxRepetition off", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startShim({ file: { structuredOutputs: { maxRepetition: null } } });
  });
  afterAll(async () => h.close());

  it("nothing is removed: the schema goes as sent", async () => {
    const { key } = await h.createKey({ credits: 10 });
    const schema = { type: "string", maxLength: 100_000 };
    const { response } = await h.client(key).chat.completions.create({ model: MODEL, messages, response_format: { type: "json_schema", json_schema: { name: "x", schema } } }).withResponse();
    expect(response.headers.get("x-schema-relaxed")).toBeNull();
    expect(JSON.parse(h.fake.requests.at(-1)!.body).response_format.json_schema.schema).toEqual(schema);
  });
});
