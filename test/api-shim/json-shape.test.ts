import { BadRequestError } from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jsonShapeProblem, MAX_JSON_CONTAINERS, MAX_JSON_DEPTH, MAX_JSON_MEMBERS, MAX_JSON_VALUES } from "../../api-shim/src/requests/json-shape.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";

const shape = (text: string) => jsonShapeProblem(Buffer.from(text));
const nested = (levels: number) => `{"model":"m","x":${"[".repeat(levels - 1)}${"]".repeat(levels - 1)}}`;

describe("request bodies built to be slow to parse", () => {
  it("refuses JSON nested deeper than the limit, and accepts the limit itself", () => {
    expect(shape(nested(MAX_JSON_DEPTH))).toBeNull();
    expect(shape(nested(MAX_JSON_DEPTH + 1))).toBe(`Request body nests JSON deeper than ${MAX_JSON_DEPTH} levels.`);
  });

  it("refuses more objects and arrays than the limit", () => {
    const many = (n: number) => `{"messages":[${Array.from({ length: n - 2 }, () => "{}").join(",")}]}`;
    expect(shape(many(MAX_JSON_CONTAINERS))).toBeNull();
    expect(shape(many(MAX_JSON_CONTAINERS + 1))).toBe(`Request body has more than ${MAX_JSON_CONTAINERS} JSON objects and arrays.`);
  });

  it("refuses more object members than the limit (string keys cost the most to parse)", () => {
    const members = (n: number) => `{"model":"m","logit_bias":{${Array.from({ length: n - 2 }, (_, i) => `"k${i}":1`).join(",")}}}`;
    expect(shape(members(MAX_JSON_MEMBERS))).toBeNull();
    expect(shape(members(MAX_JSON_MEMBERS + 1))).toBe(`Request body has more than ${MAX_JSON_MEMBERS} JSON object members.`);
    // Colons inside strings are text, not members.
    expect(shape(`{"content":${JSON.stringify(":".repeat(MAX_JSON_MEMBERS + 1))}}`)).toBeNull();
  });

  it("refuses more values than the limit (an 8 MB array of numbers), and accepts a big batch of token ids", () => {
    const numbers = (n: number) => `{"model":"m","input":[${"1,".repeat(n - 1)}1]}`;
    expect(shape(numbers(MAX_JSON_VALUES))).toBeNull();
    expect(shape(numbers(MAX_JSON_VALUES + 2))).toBe(`Request body has more than ${MAX_JSON_VALUES} JSON values.`);
    // 2,048 inputs of 128 token ids each: 262,144 tokens, under OpenAI's 300,000 per request.
    const batch = JSON.stringify({ model: "m", input: Array.from({ length: 2048 }, () => Array.from({ length: 128 }, (_, i) => i)) });
    expect(shape(batch)).toBeNull();
  });

  it("does not count brackets inside strings, escaped quotes and backslashes included", () => {
    const text = (s: string) => `{"messages":[{"role":"user","content":${JSON.stringify(s)}}]}`;
    expect(shape(text("[".repeat(10_000)))).toBeNull();
    expect(shape(text(`\\"${"[".repeat(10_000)}`))).toBeNull();
    expect(shape(text(`a\\\\"${"{".repeat(10_000)}`))).toBeNull();
    // Long strings (past the byte-by-byte walk) with escapes near their end.
    expect(shape(text(`${"x".repeat(100)}\\"${"[".repeat(10_000)}`))).toBeNull();
    expect(shape(`{"a":"${"x".repeat(100)}\\\\","b":${"[".repeat(MAX_JSON_DEPTH)}${"]".repeat(MAX_JSON_DEPTH)}}`)).toMatch(/deeper than/);
    // After a string that ends in an escaped backslash, brackets count again.
    expect(shape(`{"a":"x\\\\","b":${"[".repeat(MAX_JSON_DEPTH)}${"]".repeat(MAX_JSON_DEPTH)}}`)).toMatch(/deeper than/);
  });

  it("accepts what real clients send, whatever the limits are set to (found by mutation review: the tests above read the constants, so lowering one passed)", () => {
    // A structured-output or tool schema a few dozen levels deep.
    expect(shape(nested(64))).toBeNull();
    // OpenAI's embeddings cap: 300,000 token ids in one request, with its other members.
    expect(shape(JSON.stringify({ model: "m", input: Array.from({ length: 300_000 }, (_, i) => i % 1000), dimensions: 1024, encoding_format: "float", user: "u" }))).toBeNull();
    // A long conversation: 30,000 messages, 60,000 members.
    expect(shape(JSON.stringify({ model: "m", messages: Array.from({ length: 30_000 }, () => ({ role: "user", content: "x" })) }))).toBeNull();
  });

  it("an escaped quote straddling the end of the byte-by-byte walk does not end the string (found by mutation review)", () => {
    for (let pad = 24; pad < 40; pad++) {
      expect(shape(`{"a":"${"x".repeat(pad)}\\"${"[".repeat(200)}"}`), String(pad)).toBeNull();
    }
  });

  describe("through the shim", () => {
    let h: Harness;
    beforeAll(async () => {
      h = await startShim();
    });
    afterAll(() => h.close());

    it("a deep body is a 400 before anything else, even from a key without credits, and never reaches the upstream", async () => {
      const { key } = await h.createKey({ credits: 0 });
      const received = h.fake.counters.received;
      const res = await h.post(key, "/v1/chat/completions", `{"model":"qwen2.5-7b","messages":[{"role":"user","content":"hi"}],"x":${"[".repeat(500_000)}${"]".repeat(500_000)}}`);
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({ error: { type: "invalid_request_error", code: "invalid_request", message: `Request body nests JSON deeper than ${MAX_JSON_DEPTH} levels.` } });
      const e = await h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: Array.from({ length: MAX_JSON_CONTAINERS }, () => ({ role: "user" as const, content: "x" })) }).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(BadRequestError);
      expect(h.fake.counters.received).toBe(received);
    });
  });
});
