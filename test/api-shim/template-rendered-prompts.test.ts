import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseInferenceRequest } from "../../api-shim/src/requests/inference-request.ts";
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

  it("tools given in chat_template_kwargs (which vLLM merges over the request's own) are held for as tools are", async () => {
    const tool = { type: "function" as const, function: { name: "pick", parameters: { type: "object", properties: { x: { type: "integer", enum: new Array(2600).fill(0) } } } } };
    const before = capped();
    const res = await h.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "pick one" }], chat_template_kwargs: { tools: [tool] }, max_tokens: 8 });
    expect(res.status).toBe(200);
    const answer = (await res.json()) as { usage: { prompt_tokens: number; completion_tokens: number }; credits_charged: number };
    expect(answer.usage.prompt_tokens).toBeGreaterThan(3 * 2600);
    expect(answer.credits_charged).toBeCloseTo(price(answer.usage.prompt_tokens, answer.usage.completion_tokens), 6);
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

  it("chat embeddings longer than the context (chunked processing covers them too) are charged all their tokens", async () => {
    const text = Array.from({ length: 3000 }, (_, i) => `w${i}`).join(" ");
    const before = capped();
    const res = await h.post(key, "/v1/embeddings", { model: "bge-m3", messages: [{ role: "user", content: text }] });
    const answer = (await res.json()) as { usage: { prompt_tokens: number }; credits_charged: number };
    expect(answer.usage.prompt_tokens).toBeGreaterThan(3000);
    expect(answer.credits_charged).toBeCloseTo(price(answer.usage.prompt_tokens, 0), 6);
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

  it("which requests hold more than their bytes for the JSON the template prints again, and which the model's whole context", () => {
    const chat = (extra: Record<string, unknown>) => parseInferenceRequest("chat", { model: "m", messages: [{ role: "user", content: "hi" }], ...extra });
    const tool = { type: "function", function: { name: "f" } };
    expect(chat({})).toMatchObject({ renderedJsonBytes: 0, unboundedParts: 0 });
    expect(chat({ tools: [] }).renderedJsonBytes).toBe(0); // no tool: nothing printed
    expect(chat({ tools: [tool] }).renderedJsonBytes).toBe(JSON.stringify([tool]).length);
    expect(chat({ tools: [tool] }).unboundedParts).toBe(0);
    expect(chat({ functions: [{ name: "f" }] }).renderedJsonBytes).toBeGreaterThan(0);
    expect(chat({ documents: [{ title: "t", text: "x" }] }).renderedJsonBytes).toBeGreaterThan(0);
    // vLLM merges chat_template_kwargs over the request's own tools and documents.
    expect(chat({ chat_template_kwargs: { tools: [tool] } }).renderedJsonBytes).toBe(JSON.stringify([tool]).length);
    expect(chat({ chat_template_kwargs: { documents: [{ text: "x" }] } }).renderedJsonBytes).toBeGreaterThan(0);
    expect(chat({ chat_template_kwargs: { enable_thinking: false } }).renderedJsonBytes).toBe(0);
    // Any object or list the template is given: Llama 3.1's takes `custom_tools` in place of `tools`.
    expect(chat({ chat_template_kwargs: { custom_tools: [tool], enable_thinking: false } }).renderedJsonBytes).toBe(JSON.stringify([tool]).length);
    const calls = [{ id: "c", type: "function", function: { name: "f", arguments: "{}" } }];
    expect(parseInferenceRequest("chat", { model: "m", messages: [{ role: "assistant", tool_calls: calls }] }).renderedJsonBytes).toBe(JSON.stringify(calls).length);
    // Embeddings of `input` are bounded by their bytes alone; chat embeddings go through the template.
    expect(parseInferenceRequest("embeddings", { model: "m", input: "x" })).toMatchObject({ templated: false, promptMayExceedContext: true });
    expect(parseInferenceRequest("embeddings", { model: "m", messages: [{ role: "user", content: "x" }] })).toMatchObject({ templated: true, promptMayExceedContext: true, prompts: 1 });
  });

  it("a small tools request from a key with a modest balance is admitted on a long-context model (the hold follows the tools' bytes, not the whole context)", async () => {
    const long = await startShim({
      file: { pricing: { request: 1, batchRequest: 2, models: { "qwen2.5-7b": { promptPer1k: 1, completionPer1k: 1 } } }, models: [{ name: "qwen2.5-7b", maxModelLen: 131_072 }] },
      fake: { models: [{ name: "qwen2.5-7b", maxModelLen: 131_072 }] },
    });
    try {
      const { key } = await long.createKey({ credits: 100 });
      const body = { model: "qwen2.5-7b", messages: [{ role: "user", content: "weather in Paris?" }], tools: [{ type: "function", function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } } } } }], max_tokens: 16 };
      const res = await long.post(key, "/v1/chat/completions", body);
      expect(res.status).toBe(200);
      // Text that Unicode normalization may grow (Korean: NFD splits each syllable) is counted
      // once, as without a tool: the template prints it as it is.
      const korean = { ...body, messages: [{ role: "user", content: "안녕하세요".repeat(600) }] };
      expect((await long.post(key, "/v1/chat/completions", { ...korean, tools: undefined })).status).toBe(200);
      expect((await long.post(key, "/v1/chat/completions", korean)).status).toBe(200);
    } finally {
      await long.close();
    }
  });

  it("without a known maxModelLen, a large tools list is still held above what it renders to: charged its usage, not capped", async () => {
    const unknown = await startShim({
      file: { pricing: { request: 1, batchRequest: 2, models: { "qwen2.5-7b": { promptPer1k: 1, completionPer1k: 1 } } }, models: [{ name: "qwen2.5-7b" }] },
      fake: { models: [{ name: "qwen2.5-7b" }] },
    });
    try {
      const { key, id } = await unknown.createKey({ credits: 100_000 });
      const tools = [{ type: "function", function: { name: "pick", parameters: { type: "object", properties: { v: { type: "integer", enum: new Array(40_000).fill(0) } } } } }];
      const res = await unknown.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], tools, max_tokens: 1 });
      expect(res.status).toBe(200);
      const usage = unknown.fake.usages.at(-1)!;
      expect(usage.prompt_tokens).toBeGreaterThan(32_768 + Buffer.byteLength(JSON.stringify(tools))); // more than the old bound
      const log = await unknown.waitForRequestLog((e) => e.keyId === id);
      expect(log.cost).toBeCloseTo(1 + (usage.prompt_tokens + usage.completion_tokens) / 1000, 6);
      expect(unknown.logs.some((l) => l.includes('"msg":"charge capped at the hold"'))).toBe(false);
    } finally {
      await unknown.close();
    }
  });
});
