import { BadRequestError } from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_FAKE, startShim, type Harness } from "../support/shim-harness.ts";
import { failure } from "../support/api-failure.ts";

/**
 * A paid provider's model (configured under `providers`, `provider: true` in the shim's config)
 * takes only an allow-list of request members (provider-params.ts). Found by review: LiteLLM puts
 * every member that is not an OpenAI parameter into a non-OpenAI provider's body unchanged
 * (add_provider_specific_params_to_optional_params; AnthropicConfig.transform_request spreads them
 * and adds beta headers), so `mcp_servers` reached Anthropic's MCP connector, `inference_geo`
 * its 1.1x-priced US inference, and whatever the provider adds next. The model vLLM serves keeps
 * taking its own extra parameters.
 */

const vllm = { model: "qwen2.5-7b", messages: [{ role: "user" as const, content: "hi" }], max_tokens: 2 };
const claude = { ...vllm, model: "claude" };

describe("members of a request for a provider's model", () => {
  let h: Harness;
  let key: string;
  beforeAll(async () => {
    h = await startShim({
      file: { models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }, { name: "bge-m3", maxModelLen: 8192 }, { name: "claude", provider: true, maxModelLen: 200_000, maxOutputTokens: 8192 }] },
      fake: { ...DEFAULT_FAKE, models: [...DEFAULT_FAKE.models!, { name: "claude" }] },
    });
    ({ key } = await h.createKey({ credits: 1000 }));
  });
  afterAll(() => h.close());

  /** The 400 a body gets, after checking nothing reached the upstream. */
  const refused = async (path: "chat" | "completions" | "embeddings", body: Record<string, unknown>) => {
    const c = h.client(key);
    const received = h.fake.counters.received;
    const call = path === "chat" ? () => c.chat.completions.create(body as never) : path === "completions" ? () => c.completions.create(body as never) : () => c.embeddings.create(body as never);
    const e = await failure(call);
    expect(e, JSON.stringify(body)).toBeInstanceOf(BadRequestError);
    expect(e.error).toMatchObject({ type: "invalid_request_error", code: "invalid_request" });
    expect(h.fake.counters.received, JSON.stringify(body)).toBe(received);
    return e;
  };

  it("BYPASS (review): members LiteLLM forwards verbatim to Anthropic (MCP connector, US inference, containers, context management, anything unknown) are refused, naming the member", async () => {
    for (const extra of [
      { mcp_servers: [{ type: "url", url: "https://mcp.example.com/sse", name: "x" }] },
      { inference_geo: "us" },
      { container: "container_abc" },
      { context_management: { edits: [{ type: "clear_tool_uses_20250919" }] } },
      { foo: 1 },
      // OpenAI's own, but not bounded by what the shim holds and prices (provider-params.ts).
      { audio: { voice: "alloy", format: "wav" } },
      { prediction: { type: "content", content: "a long file" } },
      { prompt_cache_retention: "24h" },
      // vLLM's, which a provider has no use for.
      { min_p: 0.1 },
      { guided_json: { type: "object" } },
    ]) {
      const e = await refused("chat", { ...claude, ...extra });
      const member = Object.keys(extra)[0];
      expect(e.param).toBe(member);
      expect(e.message).toContain(`'${member}'`);
      expect(e.message).toContain("claude");
      expect(e.message).toContain("temperature"); // it says what such a model takes
    }
    // Audio or image output: billed at other rates than the text the model is priced at.
    for (const modalities of [["text", "audio"], ["image", "text"], "audio"]) {
      const e = await refused("chat", { ...claude, modalities });
      expect([e.param, e.message]).toEqual(["modalities", expect.stringContaining('["text"]')]);
    }
    // An unknown member is refused even as null; OpenAI's own unbounded ones pass as null (unset).
    expect((await refused("chat", { ...claude, mcp_servers: null })).param).toBe("mcp_servers");
  });

  it("content parts other than OpenAI's are refused (Anthropic's container_upload makes LiteLLM add the code execution tool)", async () => {
    for (const part of [{ type: "container_upload", file_id: "file_1" }, { type: "document", source: { type: "text", data: "x" } }, "bare string", { text: "no type" }]) {
      const e = await refused("chat", { ...claude, messages: [{ role: "user", content: [{ type: "text", text: "hi" }, part] }] });
      expect(e.param, JSON.stringify(part)).toBe("messages");
    }
  });

  it("a message's members are OpenAI's and what LiteLLM reads for Anthropic; its thinking_blocks only thinking (found by review: LiteLLM put them into Anthropic's content as they came)", async () => {
    const withAssistant = (extra: Record<string, unknown>) => ({ ...claude, messages: [{ role: "user", content: "hi" }, { role: "assistant", content: "ok", ...extra }, { role: "user", content: "go on" }] });
    for (const extra of [
      { thinking_blocks: [{ type: "container_upload", file_id: "file_1" }] },
      { thinking_blocks: [{ type: "document", source: { type: "url", url: "https://example.com/300-pages.pdf" } }] },
      // A cache_control there would be seen by neither the ttl check nor the hold.
      { thinking_blocks: [{ type: "thinking", thinking: "t", signature: "s", cache_control: { type: "ephemeral", ttl: "1h" } }] },
      // One block not the model's among its own: each block is checked, not any one (found by mutation review).
      { thinking_blocks: [{ type: "thinking", thinking: "t", signature: "s" }, { type: "container_upload", file_id: "file_1" }] },
      { thinking_blocks: "not a list" },
      { provider_specific_fields: { compaction_blocks: [{ type: "container_upload", file_id: "file_1" }] } },
      { prefix: true },
    ]) {
      const e = await refused("chat", withAssistant(extra));
      expect(e.param, JSON.stringify(extra)).toBe("messages");
    }
    // The thinking an answer carried, handed back as the SDKs and LiteLLM's clients do; a message's own members.
    const back = withAssistant({ thinking_blocks: [{ type: "thinking", thinking: "t", signature: "s" }, { type: "redacted_thinking", data: "d" }], reasoning_content: "t", cache_control: { type: "ephemeral" }, name: "a" });
    await h.client(key).chat.completions.create(back as never);
    expect(JSON.parse(h.fake.requests.at(-1)!.body).messages).toEqual(back.messages);
    const tools = { messages: [{ role: "user", content: "hi" }, { role: "assistant", content: null, tool_calls: [{ id: "t1", type: "function", function: { name: "f", arguments: "{}" } }] }, { role: "tool", tool_call_id: "t1", content: "r" }] };
    await h.client(key).chat.completions.create({ ...claude, ...tools } as never);
  });

  it("OpenAI's parameters and the vetted extras (top_k, thinking, cache_control) pass as sent", async () => {
    const c = h.client(key);
    const fn = { type: "function", function: { name: "f", parameters: { type: "object", properties: {} } } };
    const accepted: Record<string, unknown>[] = [
      {
        frequency_penalty: 0, presence_penalty: 0, logit_bias: { "1": 1 }, logprobs: true, top_logprobs: 2, max_completion_tokens: 4, metadata: { team: "a" },
        n: 1, parallel_tool_calls: false, prompt_cache_key: "k", reasoning_effort: "low", response_format: { type: "text" }, safety_identifier: "s",
        seed: 7, service_tier: "default", stop: ["x"], store: false, temperature: 0.5, tool_choice: "auto", tools: [fn], top_p: 1, user: "u", verbosity: "low",
        stream_options: null, modalities: ["text"],
      },
      { functions: [{ name: "f", parameters: {} }], function_call: "auto", modalities: null, audio: null, prediction: null },
      // What provider-surcharges.ts lets through of these, a provider's model takes too (found by review).
      { speed: "standard", web_search_options: null },
      { top_k: 5, thinking: { type: "enabled", budget_tokens: 1024 }, cache_control: { type: "ephemeral" } },
      { messages: [{ role: "user", content: [{ type: "text", text: "hi" }, { type: "image_url", image_url: { url: "https://example.com/a.png" } }, { type: "input_audio", input_audio: { data: "AAAA", format: "wav" } }, { type: "file", file: { file_id: "f" } }] }, { role: "assistant", content: [{ type: "refusal", refusal: "no" }] }, { role: "user", content: "go on" }] },
    ];
    for (const extra of accepted) {
      await c.chat.completions.create({ ...claude, ...extra } as never);
      expect(JSON.parse(h.fake.requests.at(-1)!.body), JSON.stringify(extra)).toMatchObject(extra);
    }
    // Streamed: the stream_options the shim adds itself.
    const stream = await c.chat.completions.create({ ...claude, stream: true, stream_options: { include_usage: true } });
    for await (const _ of stream);
  });

  it("(no false refusal) the bodies common clients send with tools and caching pass as sent", async () => {
    const params = { type: "object", properties: { q: { type: "string" } }, required: ["q"], additionalProperties: false };
    const c = h.client(key);
    for (const b of [
      { tools: [{ type: "function", function: { name: "f", strict: true, parameters: params, description: "d" } }], parallel_tool_calls: false, tool_choice: { type: "function", function: { name: "f" } } },
      { messages: [{ role: "system", content: [{ type: "text", text: "sys", cache_control: { type: "ephemeral", ttl: "1h" } }] }, { role: "user", content: [{ type: "text", text: "hi", cache_control: { type: "ephemeral" } }] }] },
      { messages: [{ role: "user", content: "hi" }, { role: "assistant", content: null, tool_calls: [{ id: "c1", type: "function", function: { name: "f", arguments: "{}" } }] }, { role: "tool", tool_call_id: "c1", content: [{ type: "text", text: "r" }] }], tools: [{ type: "function", function: { name: "f", parameters: params } }] },
      { service_tier: null, tools: null, stop: null, response_format: { type: "json_schema", json_schema: { name: "x", schema: params, strict: true } } },
    ]) {
      await c.chat.completions.create({ ...claude, ...b } as never);
      expect(JSON.parse(h.fake.requests.at(-1)!.body), JSON.stringify(b)).toMatchObject(b);
    }
  });

  it("/v1/completions and /v1/embeddings take their own OpenAI lists", async () => {
    const c = h.client(key);
    await c.completions.create({ model: "claude", prompt: "hi", max_tokens: 2, echo: false, logprobs: 1, stop: "x", seed: 1, user: "u", top_k: 3 } as never);
    await c.embeddings.create({ model: "claude", input: "hi", dimensions: 8, encoding_format: "float", user: "u" });
    expect((await refused("completions", { model: "claude", prompt: "hi", max_tokens: 2, best_of: 4 })).param).toBe("best_of");
    expect((await refused("completions", { model: "claude", prompt: "hi", max_tokens: 2, mcp_servers: [] })).param).toBe("mcp_servers");
    expect((await refused("embeddings", { model: "claude", input: "hi", task_type: "RETRIEVAL_QUERY" })).param).toBe("task_type");
    // Chat's own parameters are not the embeddings route's.
    expect((await refused("embeddings", { model: "claude", input: "hi", temperature: 0 })).param).toBe("temperature");
  });

  it("a completions prompt list of several prompts is refused: LiteLLM sends them as one chat, answered once (found by review), held and charged as several", async () => {
    const c = h.client(key);
    const e = await refused("completions", { model: "claude", prompt: ["a", "b"], max_tokens: 2 });
    expect(e.param).toBe("prompt");
    expect((e.error as { message: string }).message).toMatch(/^A list of several prompts is not supported by this endpoint for model 'claude': its provider answers them as one conversation, with one answer\. Send one prompt per request\.$/);
    // One prompt, alone or in a list, is one chat and passes; vLLM's model takes a real batch.
    await c.completions.create({ model: "claude", prompt: ["a"], max_tokens: 2 });
    await c.completions.create({ model: "claude", prompt: [15339, 1917], max_tokens: 2 }); // token IDs: one prompt (a model left at tokenPrompts' default)
    expect((await refused("completions", { model: "claude", prompt: [[1, 2], [3]], max_tokens: 2 })).param).toBe("prompt");
    // Without max_tokens a provider's completion is held as chat (its provider's own default), so
    // none is added for it; vLLM's model is held at 16 and is sent its 16.
    await c.completions.create({ model: "claude", prompt: "a" });
    expect(JSON.parse(h.fake.requests.at(-1)!.body)).not.toHaveProperty("max_tokens");
    await c.completions.create({ model: "qwen2.5-7b", prompt: "a" });
    expect(JSON.parse(h.fake.requests.at(-1)!.body)).toMatchObject({ max_tokens: 16 });
    const batch = await c.completions.create({ model: "qwen2.5-7b", prompt: ["a", "b"], max_tokens: 2 });
    expect(batch.choices.map((x) => x.index)).toEqual([0, 1]);
  });

  it("the model vLLM serves is unaffected: its own parameters and any content part pass", async () => {
    const c = h.client(key);
    const extra = { top_k: 5, min_p: 0.1, guided_json: { type: "object" }, repetition_penalty: 1.1, foo: 1, inference_geo: "us" };
    await c.chat.completions.create({ ...vllm, ...extra } as never);
    expect(JSON.parse(h.fake.requests.at(-1)!.body)).toMatchObject(extra);
    await c.chat.completions.create({ ...vllm, messages: [{ role: "user", content: [{ type: "text", text: "hi" }, { type: "input_text", text: "x" }] }] } as never);
    await c.completions.create({ model: "qwen2.5-7b", prompt: "hi", max_tokens: 2, min_tokens: 1 } as never);
    await c.embeddings.create({ model: "bge-m3", input: "hi", truncate_prompt_tokens: 8 } as never);
  });
});
