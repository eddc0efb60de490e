import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseInferenceRequest } from "../../api-shim/src/inference-request.ts";
import { pythonJson, renderedJsonTokens } from "../support/fake-vllm.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";

/**
 * Prompts whose tokens are not bounded by the bytes of the body: JSON the chat template prints
 * again, less compactly (tools, earlier tool calls), and prompts longer than the model's context
 * that vLLM embeds in pieces. The hold must stay an upper bound, so the charge is the price of
 * the upstream's usage, never capped below it.
 */
describe("prompts the template or the embedder makes longer than the body", () => {
  let h: Harness;
  let key: string;
  const price = (prompt: number, completion: number, perPrompt = 1) => 1 + (prompt * perPrompt + completion * 2) / 1000;
  const capped = () => h.logs.filter((l) => l.includes('"msg":"charge capped at the hold"')).length;

  beforeAll(async () => {
    h = await startShim({
      file: {
        pricing: { request: 1, batchRequest: 2, models: { "qwen2.5-7b": { promptPer1k: 1, completionPer1k: 2 }, "bge-m3": { promptPer1k: 1, completionPer1k: 0 } } },
        models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }, { name: "bge-m3", maxModelLen: 512 }],
      },
      fake: { models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }, { name: "bge-m3", maxModelLen: 512 }] },
    });
    ({ key } = await h.createKey({ credits: 1000, tier: "developer" }));
  });
  afterAll(() => h.close());

  it("the fake prints tools as Python's json.dumps does, and counts them as Qwen2's pre-tokenizer splits them", () => {
    expect(pythonJson({ a: [0, 0, 0], b: { c: "x" } })).toBe('{"a": [0, 0, 0], "b": {"c": "x"}}');
    // `[`, then `0`, `,`, ` `, `0`, `,`, ` `, `0`, `]`: three tokens per two bytes of the compact form.
    expect(renderedJsonTokens([0, 0, 0])).toBe(9);
  });

  it("chat with a tool whose schema renders to more tokens than its bytes is charged its whole usage", async () => {
    const N = 2600;
    const tool = { type: "function" as const, function: { name: "pick", description: "Pick one.", parameters: { type: "object", properties: { x: { type: "integer", enum: new Array(N).fill(0) } } } } };
    const body = { model: "qwen2.5-7b", messages: [{ role: "user" as const, content: "pick one" }], tools: [tool], max_tokens: 8 };
    const before = capped();
    const { data, response } = await h.client(key).chat.completions.create(body).withResponse();
    // More prompt tokens than the body has bytes: the bytes were no bound.
    expect(data.usage!.prompt_tokens).toBeGreaterThan(Buffer.byteLength(JSON.stringify(body)));
    expect(Number(response.headers.get("x-credits-charged"))).toBeCloseTo(price(data.usage!.prompt_tokens, data.usage!.completion_tokens), 6);
    expect(capped()).toBe(before);
  });

  it("chat whose history has tool calls (arguments printed again by the template) is charged its whole usage", async () => {
    const args = JSON.stringify({ values: new Array(2500).fill(0) });
    const messages = [
      { role: "user" as const, content: "sum these" },
      { role: "assistant" as const, content: null, tool_calls: [{ id: "call_1", type: "function" as const, function: { name: "sum", arguments: args } }] },
      { role: "tool" as const, tool_call_id: "call_1", content: "0" },
    ];
    const before = capped();
    const { data, response } = await h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages, max_tokens: 8 }).withResponse();
    expect(data.usage!.prompt_tokens).toBeGreaterThan(args.length);
    expect(Number(response.headers.get("x-credits-charged"))).toBeCloseTo(price(data.usage!.prompt_tokens, data.usage!.completion_tokens), 6);
    expect(capped()).toBe(before);
  });

  it("an embedding input longer than the model's context (vLLM's chunked processing embeds it in pieces) is charged all its tokens", async () => {
    const input = Array.from({ length: 4000 }, (_, i) => `w${i}`).join(" ");
    const before = capped();
    const { data, response } = await h.client(key).embeddings.create({ model: "bge-m3", input }).withResponse();
    expect(data.usage.prompt_tokens).toBe(4000); // 8 × maxModelLen
    expect(Number(response.headers.get("x-credits-charged"))).toBeCloseTo(price(4000, 0), 6);
    expect(capped()).toBe(before);
  });

  it("vLLM's chat embeddings (messages instead of input) reach the upstream and are charged their usage", async () => {
    const received = h.fake.counters.received;
    const res = await h.post(key, "/v1/embeddings", { model: "bge-m3", messages: [{ role: "user", content: "hello there" }], encoding_format: "float" });
    expect(res.status).toBe(200);
    const answer = (await res.json()) as { data: unknown[]; usage: { prompt_tokens: number }; credits_charged: number };
    expect(h.fake.counters.received).toBe(received + 1);
    expect(answer.data).toHaveLength(1);
    expect(answer.credits_charged).toBeCloseTo(price(answer.usage.prompt_tokens, 0), 6);
  });

  it("an embeddings request with both input and messages, or neither, is a 400 naming the field", async () => {
    const both = await h.post(key, "/v1/embeddings", { model: "bge-m3", input: "x", messages: [{ role: "user", content: "x" }] });
    expect(both.status).toBe(400);
    expect(await both.json()).toMatchObject({ error: { param: "messages", code: "invalid_request" } });
    const neither = await h.post(key, "/v1/embeddings", { model: "bge-m3" });
    expect(neither.status).toBe(400);
    expect(await neither.json()).toMatchObject({ error: { param: "input", message: "'input' (or 'messages') is required." } });
  });

  it("which requests hold the model's whole context for their prompt", () => {
    const chat = (extra: Record<string, unknown>) => parseInferenceRequest("chat", { model: "m", messages: [{ role: "user", content: "hi" }], ...extra }).unboundedPrompt;
    expect(chat({})).toBe(false);
    expect(chat({ tools: [] })).toBe(false); // no tool: nothing rendered
    expect(chat({ tools: [{ type: "function", function: { name: "f" } }] })).toBe(true);
    expect(chat({ functions: [{ name: "f" }] })).toBe(true);
    expect(chat({ documents: [{ title: "t", text: "x" }] })).toBe(true);
    expect(parseInferenceRequest("chat", { model: "m", messages: [{ role: "assistant", tool_calls: [{ id: "c", type: "function", function: { name: "f", arguments: "{}" } }] }] }).unboundedPrompt).toBe(true);
    // Embeddings of `input` are bounded by their bytes alone; chat embeddings go through the template.
    expect(parseInferenceRequest("embeddings", { model: "m", input: "x" })).toMatchObject({ templated: false, promptMayExceedContext: true });
    expect(parseInferenceRequest("embeddings", { model: "m", messages: [{ role: "user", content: "x" }] })).toMatchObject({ templated: true, promptMayExceedContext: false, prompts: 1 });
  });
});
