import OpenAI, { NotFoundError } from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FakeVllm } from "../support/fake-vllm.ts";

/** The test upstream itself: vLLM's wire format (0.33.0, the stack's default image, and 0.31.0 before it) (see /tmp research notes in docs/api-shim/compatibility.md, Tests). */
describe("fake vLLM speaks vLLM's dialect", () => {
  let fake: FakeVllm;
  const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
    fetch(fake.url + path, { method: "POST", headers: { authorization: "Bearer up", "content-type": "application/json", ...headers }, body: typeof body === "string" ? body : JSON.stringify(body) });
  beforeAll(async () => {
    fake = await new FakeVllm({ apiKey: "up" }).start();
  });
  afterAll(() => fake.close());

  it("lists models with vLLM's card fields", async () => {
    const res = await fetch(`${fake.url}/models`, { headers: { authorization: "Bearer up" } });
    const body = (await res.json()) as { object: string; data: Record<string, unknown>[] };
    expect(body.object).toBe("list");
    expect(Object.keys(body.data[0]!)).toEqual(["id", "object", "created", "owned_by", "root", "parent", "max_model_len", "permission"]);
    expect(body.data[0]).toMatchObject({ id: "qwen2.5-7b", object: "model", owned_by: "vllm", parent: null });
  });

  it("answers /v1/responses as vLLM does: a response object, usage in the Responses names, no stored responses", async () => {
    const body = (await (await post("/responses", { model: "qwen2.5-7b", instructions: "be brief", input: "hi", max_output_tokens: 2 })).json()) as Record<string, unknown>;
    expect(Object.keys(body).slice(0, 8)).toEqual(["id", "created_at", "incomplete_details", "instructions", "metadata", "model", "object", "output"]);
    expect(body).toMatchObject({ object: "response", status: "incomplete", incomplete_details: { reason: "max_output_tokens" }, instructions: "be brief" });
    expect(body.output).toEqual([{ id: expect.stringMatching(/^msg_/), content: [{ annotations: [], text: "t1 t2", type: "output_text", logprobs: null }], role: "assistant", status: "completed", type: "message" }]);
    // 3 template tokens + "be brief" + "hi".
    expect(body.usage).toEqual({ input_tokens: 6, input_tokens_details: { cached_tokens: 0 }, output_tokens: 2, output_tokens_details: { reasoning_tokens: 0 }, total_tokens: 8 });
    const sdk = new OpenAI({ apiKey: "up", baseURL: fake.url });
    expect((await sdk.responses.create({ model: "qwen2.5-7b", input: "hi", max_output_tokens: 3 })).output_text).toBe("t1 t2 t3");
    const stored = await post("/responses", { model: "qwen2.5-7b", input: "hi", previous_response_id: "resp_x" });
    expect(stored.status).toBe(404);
    expect(((await stored.json()) as { error: { param: string } }).error.param).toBe("response_id");
    expect((await post("/responses", { model: "qwen2.5-7b", input: "hi", background: true })).status).toBe(400);
  });

  it("streams /v1/responses as `event: <type>` and one data line each, sequence numbers in order, ending with response.completed and no [DONE]", async () => {
    const res = await post("/responses", { model: "qwen2.5-7b", input: "hi", max_output_tokens: 2, stream: true });
    expect(res.headers.get("content-type")).toBe("text/event-stream; charset=utf-8");
    const events = (await res.text()).split("\n\n").filter(Boolean).map((e) => {
      const [event, data] = e.split("\n") as [string, string];
      return { type: event.slice(7), data: JSON.parse(data.slice(6)) as Record<string, unknown> };
    });
    expect(events.map((e) => e.type)).toEqual(["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added", "response.output_text.delta", "response.output_text.delta", "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"]);
    expect(events.map((e) => e.data.sequence_number)).toEqual(events.map((_, i) => i));
    for (const e of events) expect(e.data.type).toBe(e.type);
    expect(events[4]!.data).toEqual({ content_index: 0, delta: "t1", item_id: expect.stringMatching(/^msg_/), logprobs: [], output_index: 0, sequence_number: 4, type: "response.output_text.delta" });
    expect((events.at(-1)!.data.response as { usage: unknown }).usage).toMatchObject({ input_tokens: 4, output_tokens: 2 });
  });

  it("answers chat in pydantic field order with usage total before completion", async () => {
    const text = await (await post("/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 2 })).text();
    expect(text).toMatch(/^\{"id":"chatcmpl-[0-9a-f]{32}","object":"chat\.completion","created":\d+,"model":"qwen2\.5-7b","choices":\[\{"index":0,"message":\{"role":"assistant","content":"t1 t2","refusal":null,"annotations":null,"audio":null,"function_call":null,"tool_calls":\[\],"reasoning_content":null\},"logprobs":null,"finish_reason":"length","stop_reason":null\}\],"service_tier":null,"system_fingerprint":null,"usage":\{"prompt_tokens":5,"total_tokens":7,"completion_tokens":2,"prompt_tokens_details":null\},"prompt_logprobs":null,"kv_transfer_params":null\}$/);
  });

  it("streams chat with no usage key unless stream_options is present (even {})", async () => {
    const res = await post("/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 2, stream: true });
    expect(res.headers.get("content-type")).toBe("text/event-stream; charset=utf-8");
    const events = (await res.text()).split("\n\n");
    expect(events.at(-1)).toBe("");
    expect(events.at(-2)).toBe("data: [DONE]");
    expect(events.slice(0, -2).every((e) => e.startsWith("data: {") && !e.includes('"usage"'))).toBe(true);
    // vLLM 0.11 writes the members it sets explicitly, null or not (return_token_ids is off).
    expect(Object.keys(JSON.parse(events[0]!.slice(6)))).toEqual(["id", "object", "created", "model", "choices", "prompt_token_ids"]);
    expect(JSON.parse(events[0]!.slice(6)).choices[0]).toEqual({ index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null });
    expect(JSON.parse(events[1]!.slice(6)).choices[0]).toEqual({ index: 0, delta: { content: "t1" }, logprobs: null, finish_reason: null, token_ids: null });
    // max_tokens cut it (the fake's answers are 8 tokens): "length", as vLLM says, streamed or not.
    expect(JSON.parse(events[2]!.slice(6)).choices[0]).toEqual({ index: 0, delta: { content: " t2" }, logprobs: null, finish_reason: "length", stop_reason: null, token_ids: null });
    const whole = (await (await post("/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], stream: true })).text()).split("\n\n");
    expect(JSON.parse(whole.at(-3)!.slice(6)).choices[0]).toMatchObject({ delta: { content: " t8" }, finish_reason: "stop" });
    const cutCompletion = (await (await post("/completions", { model: "qwen2.5-7b", prompt: "a", max_tokens: 2, stream: true })).text()).split("\n\n");
    expect(JSON.parse(cutCompletion.at(-3)!.slice(6)).choices[0]).toMatchObject({ text: " t2", finish_reason: "length" });

    const withUsage = (await (await post("/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 2, stream: true, stream_options: {} })).text()).split("\n\n");
    expect(JSON.parse(withUsage.at(-3)!.slice(6))).toMatchObject({ choices: [], usage: { prompt_tokens: 5, total_tokens: 7, completion_tokens: 2 } });
    const off = await (await post("/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 2, stream: true, stream_options: { include_usage: false } })).text();
    expect(off).not.toContain('"usage"');
    // include_usage is Optional[bool] = True, tested for truth: null means no usage chunk, like false.
    const nullUsage = await (await post("/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 2, stream: true, stream_options: { include_usage: null } })).text();
    expect(nullUsage).toContain("data: [DONE]");
    expect(nullUsage).not.toContain('"usage"');
  });

  it("streams completions with usage:null in every chunk and no role chunk", async () => {
    const events = (await (await post("/completions", { model: "qwen2.5-7b", prompt: "a", max_tokens: 2, stream: true })).text()).split("\n\n").filter((e) => e.startsWith("data: {"));
    expect(events).toHaveLength(2);
    for (const e of events) expect(JSON.parse(e.slice(6)).usage).toBeNull();
    // Written with every member (exclude_unset=False): the token ids' members too, null.
    expect(JSON.parse(events[0]!.slice(6)).choices[0]).toEqual({ index: 0, text: "t1", logprobs: null, finish_reason: null, stop_reason: null, prompt_token_ids: null, token_ids: null });
  });

  it("reports cached prompt tokens only when there are some (vLLM: `if … and num_cached_tokens:`); none in a stream's usage chunk is no member at all", async () => {
    const lastUsage = async () => {
      const events = (await (await post("/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 2, stream: true, stream_options: {} })).text()).split("\n\n");
      return JSON.parse(events.at(-3)!.slice(6)).usage as Record<string, unknown>;
    };
    try {
      fake.set({ cachedTokens: 0 });
      expect(await lastUsage()).toEqual({ prompt_tokens: 5, total_tokens: 7, completion_tokens: 2 });
      fake.set({ cachedTokens: 4 });
      expect(await lastUsage()).toEqual({ prompt_tokens: 5, total_tokens: 7, completion_tokens: 2, prompt_tokens_details: { cached_tokens: 4 } });
    } finally {
      fake.set({ cachedTokens: null });
    }
  });

  it("answers errors with vLLM's bodies", async () => {
    const notFound = await post("/chat/completions", { model: "gpt-4", messages: [] });
    expect(notFound.status).toBe(404);
    expect(await notFound.json()).toEqual({ error: { message: "The model `gpt-4` does not exist.", type: "NotFoundError", param: null, code: 404 } });
    const invalid = await post("/chat/completions", { model: "qwen2.5-7b" });
    expect(invalid.status).toBe(400);
    expect(((await invalid.json()) as { error: { type: string } }).error.type).toBe("BadRequestError");
    expect((await post("/chat/completions", { model: "qwen2.5-7b", messages: [], stream_options: { include_usage: true } })).status).toBe(400);
    const unauth = await fetch(`${fake.url}/models`);
    expect(unauth.status).toBe(401);
    expect(await unauth.json()).toEqual({ error: "Unauthorized" });
    const health = await fetch(fake.url.replace("/v1", "/health"));
    expect(health.status).toBe(200);
    expect(await health.text()).toBe("");
  });

  it("the official SDK talks to it directly", async () => {
    const c = new OpenAI({ apiKey: "up", baseURL: fake.url, maxRetries: 0 });
    expect((await c.embeddings.create({ model: "qwen2.5-7b", input: ["a b", "c"] })).usage).toEqual({ prompt_tokens: 3, total_tokens: 3, completion_tokens: 0, prompt_tokens_details: null });
    await expect(c.chat.completions.create({ model: "nope", messages: [{ role: "user", content: "x" }] })).rejects.toBeInstanceOf(NotFoundError);
  });

  // vLLM's serving_completion.py: the prompt text comes first (prompt_text + output.text), in
  // each output's first streamed chunk; the tokens counted are the generated ones only.
  it("echoes the completions prompt before the generated text, streamed (each output's first chunk) or not", async () => {
    const whole = (await (await post("/completions", { model: "qwen2.5-7b", prompt: "a b", echo: true, max_tokens: 2 })).json()) as { choices: { text: string }[]; usage: Record<string, number> };
    expect(whole.choices[0]!.text).toBe("a bt1 t2");
    expect(whole.usage).toMatchObject({ prompt_tokens: 2, completion_tokens: 2 });
    // A prompt of token IDs comes back detokenized: the fake's token n reads "n".
    const ids = (await (await post("/completions", { model: "qwen2.5-7b", prompt: [5, 7], echo: true, max_tokens: 1 })).json()) as { choices: { text: string }[] };
    expect(ids.choices[0]!.text).toBe("5 7t1");
    const events = (await (await post("/completions", { model: "qwen2.5-7b", prompt: ["a b", "c"], n: 2, echo: true, max_tokens: 2, stream: true })).text()).split("\n\n").filter((e) => e.startsWith("data: {")).map((e) => JSON.parse(e.slice(6)) as { choices: { index: number; text: string }[] });
    const texts = events.map((e) => [e.choices[0]!.index, e.choices[0]!.text]);
    expect(texts).toEqual([[0, "a bt1"], [1, "a bt1"], [2, "ct1"], [3, "ct1"], [0, " t2"], [1, " t2"], [2, " t2"], [3, " t2"]]);
  });

  // protocol.py: echo_without_generation (echo and max_tokens == 0) sets max_tokens to 1; the
  // answer's text is the prompt alone, and the token generated is counted, one per output.
  it("answers echo with max_tokens 0 with the prompt alone and one counted token per output", async () => {
    const whole = (await (await post("/completions", { model: "qwen2.5-7b", prompt: ["a b", "c"], n: 2, echo: true, max_tokens: 0 })).json()) as { choices: { text: string; finish_reason: string }[]; usage: Record<string, number> };
    expect(whole.choices.map((c) => [c.text, c.finish_reason])).toEqual([["a b", "length"], ["a b", "length"], ["c", "length"], ["c", "length"]]);
    expect(whole.usage).toMatchObject({ prompt_tokens: 3, total_tokens: 7, completion_tokens: 4 });
    const events = (await (await post("/completions", { model: "qwen2.5-7b", prompt: "a b", n: 2, echo: true, max_tokens: 0, stream: true, stream_options: { include_usage: true } })).text()).split("\n\n").filter((e) => e.startsWith("data: {")).map((e) => JSON.parse(e.slice(6)) as { choices: Record<string, unknown>[]; usage: unknown });
    expect(events.map((e) => e.choices[0] && [e.choices[0].index, e.choices[0].text, e.choices[0].finish_reason])).toEqual([[0, "a b", "length"], [1, "a b", "length"], undefined]);
    expect(events.at(-1)!.usage).toEqual({ prompt_tokens: 2, total_tokens: 4, completion_tokens: 2 });
  });

  // vLLM: suffix is refused (its renderer), max_tokens below 1 by SamplingParams, both 400
  // BadRequestError; best_of is no field of its CompletionRequest after 0.11 (ignored: n outputs).
  it("refuses on /v1/completions what vLLM refuses, with its messages, and ignores best_of", async () => {
    const refusal = async (body: Record<string, unknown>) => {
      const res = await post("/completions", { model: "qwen2.5-7b", prompt: "x", ...body });
      return [res.status, await res.json()];
    };
    const bad = (message: string) => [400, { error: { message, type: "BadRequestError", param: null, code: 400 } }];
    expect(await refusal({ suffix: "y" })).toEqual(bad("suffix is not currently supported"));
    expect(await refusal({ suffix: "y", stream: true })).toEqual(bad("suffix is not currently supported"));
    expect(await refusal({ max_tokens: 0 })).toEqual(bad("max_tokens must be at least 1, got 0."));
    expect(await refusal({ max_tokens: 0, echo: false, stream: true })).toEqual(bad("max_tokens must be at least 1, got 0."));
    // What vLLM takes: a null suffix; best_of of any value, n outputs generated.
    expect((await post("/completions", { model: "qwen2.5-7b", prompt: "x", suffix: null, best_of: 1, max_tokens: 1 })).status).toBe(200);
    const ignored = (await (await post("/completions", { model: "qwen2.5-7b", prompt: "x", n: 2, best_of: 1, max_tokens: 1 })).json()) as { choices: unknown[] };
    expect(ignored.choices).toHaveLength(2);
    expect(await refusal({ n: 1, best_of: 3, max_tokens: 1 })).toEqual([200, expect.objectContaining({ object: "text_completion" })]);
  });

  // serving_chat.py takes `max_completion_tokens or max_tokens`; SamplingParams refuses 0 (found by
  // review: the fake answered 200 with no tokens, which no vLLM sends), naming it in `param`
  // (VLLMValidationError's parameter, as a deployed vLLM answers it).
  it("refuses a chat whose max_completion_tokens, or max_tokens without it, is 0, streamed or not, as vLLM does", async () => {
    for (const limits of [{ max_tokens: 0 }, { max_completion_tokens: 0, max_tokens: 0 }, { max_completion_tokens: 0, max_tokens: 2 }, { max_completion_tokens: 0 }]) {
      for (const stream of [false, true]) {
        const res = await post("/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], stream, ...limits });
        expect([res.status, await res.json()], JSON.stringify({ ...limits, stream })).toEqual([400, { error: { message: "max_tokens must be at least 1, got 0.", type: "BadRequestError", param: "max_tokens", code: 400 } }]);
      }
    }
    // A null max_completion_tokens is unset: max_tokens is read (none: the model's length).
    for (const limits of [{ max_completion_tokens: null, max_tokens: 2 }, { max_completion_tokens: null }]) {
      const res = await post("/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], ...limits });
      expect(res.status, JSON.stringify(limits)).toBe(200);
      await res.body?.cancel();
    }
  });

  // serving_completion.py: with use_beam_search it does not stream; a streamed request gets
  // fake_stream_generator's one event (the whole CompletionResponse, usage included whatever
  // stream_options says), then [DONE].
  it("answers a streamed use_beam_search request with one event holding the whole response, then [DONE]", async () => {
    for (const so of [{}, { stream_options: { include_usage: false } }, { stream_options: { include_usage: true } }]) {
      const res = await post("/completions", { model: "qwen2.5-7b", prompt: "a b", n: 2, max_tokens: 3, stream: true, use_beam_search: true, ...so });
      expect(res.headers.get("content-type")).toBe("text/event-stream; charset=utf-8");
      const events = (await res.text()).split("\n\n");
      expect(events.slice(1)).toEqual(["data: [DONE]", ""]);
      expect(events[0]).toMatch(/^data: \{"id":"cmpl-[0-9a-f]{32}","object":"text_completion","created":\d+,"model":"qwen2\.5-7b","choices":\[\{"index":0,"text":"t1 t2 t3","logprobs":null,"finish_reason":"length","stop_reason":null,"prompt_logprobs":null\},\{"index":1,.*\],"service_tier":null,"system_fingerprint":null,"usage":\{"prompt_tokens":2,"total_tokens":8,"completion_tokens":6,"prompt_tokens_details":null\},"kv_transfer_params":null\}$/);
    }
  });

  // serving_embedding.py: base64 is the float32 vector's bytes (little-endian on vLLM's hosts).
  it("answers embeddings with encoding_format base64 as base64 of little-endian float32", async () => {
    type Answer = { data: { embedding: number[] | string }[] };
    const floats = (await (await post("/embeddings", { model: "qwen2.5-7b", input: ["a", "b"] })).json()) as Answer;
    const packed = (await (await post("/embeddings", { model: "qwen2.5-7b", input: ["a", "b"], encoding_format: "base64" })).json()) as Answer;
    expect(packed.data).toHaveLength(2);
    for (const [i, item] of packed.data.entries()) {
      expect(typeof item.embedding).toBe("string");
      const bytes = Buffer.from(item.embedding as string, "base64");
      const values = Array.from({ length: bytes.length / 4 }, (_, d) => bytes.readFloatLE(d * 4));
      expect(values).toEqual((floats.data[i]!.embedding as number[]).map(Math.fround));
    }
    const explicit = (await (await post("/embeddings", { model: "qwen2.5-7b", input: "a", encoding_format: "float" })).json()) as Answer;
    expect(Array.isArray(explicit.data[0]!.embedding)).toBe(true);
  });

  it("controls: failure status, hang with the abort counted, per-token delay", async () => {
    fake.set({ failStatus: 500 });
    const r500 = await post("/chat/completions", { model: "qwen2.5-7b", messages: [] });
    expect(r500.status).toBe(500);
    expect(await r500.text()).toBe(""); // vLLM's engine-dead 500 has an empty body
    fake.set({ failStatus: null, hang: true });
    const aborted = fake.counters.aborted;
    const received = fake.counters.received;
    const ac = new AbortController();
    const req = fetch(`${fake.url}/chat/completions`, { method: "POST", signal: ac.signal, headers: { authorization: "Bearer up", "content-type": "application/json" }, body: "{}" }).catch(() => "aborted");
    await fake.until((c) => c.received > received);
    ac.abort();
    expect(await req).toBe("aborted");
    await fake.until((c) => c.aborted > aborted);
    fake.reset();
    fake.set({ tokenDelayMs: 30 });
    const t0 = performance.now();
    await (await post("/completions", { model: "qwen2.5-7b", prompt: "a", max_tokens: 4, stream: true })).text();
    expect(performance.now() - t0).toBeGreaterThanOrEqual(110);
    fake.reset();
  });
});
