import OpenAI, { NotFoundError } from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FakeVllm } from "../support/fake-vllm.ts";

/** The test upstream itself: vLLM 0.10.1's wire format (see /tmp research notes in docs/api-shim.md). */
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
    expect(JSON.parse(events[0]!.slice(6)).choices[0].delta).toEqual({ role: "assistant", content: "" });
    // max_tokens cut it (the fake's answers are 8 tokens): "length", as vLLM says, streamed or not.
    expect(JSON.parse(events[2]!.slice(6)).choices[0]).toEqual({ index: 0, delta: { content: " t2" }, logprobs: null, finish_reason: "length", stop_reason: null });
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
