import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MAX_N, parseInferenceRequest } from "../../api-shim/src/requests/inference-request.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";

/**
 * Found by a mutation review of inference-request.ts.
 * - vLLM's StreamOptions has `include_usage: Optional[bool] = True`: a `stream_options` without
 *   it asks for the usage chunk, and the client that sent it gets that chunk.
 * - `n` up to OpenAI's own limit (128) is taken.
 */
// One shim and key (100 credits) for the requests below; the echo test counts the fake's requests from its own start.
let h: Harness;
let key: string;
beforeAll(async () => {
  h = await startShim();
  key = (await h.createKey({ credits: 100 })).key;
});
afterAll(async () => h.close());

describe("stream_options without include_usage", () => {
  it("is read as vLLM reads it: the client gets the usage chunk", async () => {
    const res = await h.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 4, stream: true, stream_options: {} });
    expect(res.status).toBe(200);
    const chunks = (await res.text()).split("\n\n").filter((e) => e.startsWith("data: {")).map((e) => JSON.parse(e.slice(6)) as { choices: unknown[]; usage?: { completion_tokens: number } | null });
    const usage = chunks.filter((c) => c.choices.length === 0 && c.usage);
    expect(usage).toHaveLength(1);
    expect(usage[0]!.usage!.completion_tokens).toBeGreaterThan(0);
  });
});

describe("echo of a message with an image", () => {
  it("is refused 400 naming echo, before anything is forwarded (vLLM would fail after generating the whole answer)", async () => {
    const before = h.fake.requests.length;
    const res = await h.post(key, "/v1/chat/completions", {
      model: "qwen2.5-7b",
      echo: true,
      max_tokens: 4,
      messages: [{ role: "user", content: "describe it" }, { role: "assistant", content: [{ type: "text", text: "It shows " }, { type: "image_url", image_url: { url: "https://example.com/cat.png" } }] }],
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { param: string } }).error.param).toBe("echo");
    expect(h.fake.requests.length).toBe(before);
  });
});

describe("n", () => {
  it(`is taken up to ${MAX_N}, OpenAI's own limit, and refused above it`, () => {
    const body = (n: number) => ({ model: "m", messages: [{ role: "user", content: "hi" }], n, max_tokens: 1 });
    expect(parseInferenceRequest("chat", body(MAX_N)).n).toBe(128);
    expect(() => parseInferenceRequest("chat", body(MAX_N + 1))).toThrow(/'n' must be an integer from 1 to 128/);
  });
});

describe("a streamed /v1/completions request", () => {
  // Found by a mutation review of admission.ts: forwarding a completions body as the client sent
  // it (as a Responses one is) passed every test, yet vLLM sends a stream's usage only when asked.
  it("is forwarded with stream_options.include_usage, so its charge comes from vLLM's usage, and the client that did not ask gets no usage chunk", async () => {
    const before = h.fake.requests.length;
    const res = await h.post(key, "/v1/completions", { model: "qwen2.5-7b", prompt: "hi", max_tokens: 4, stream: true });
    expect(res.status).toBe(200);
    const text = await res.text();
    const sent = h.fake.requests.slice(before).find((r) => r.path === "/v1/completions")!;
    expect((JSON.parse(String(sent.body)) as { stream_options?: { include_usage?: boolean } }).stream_options?.include_usage).toBe(true);
    const chunks = text.split("\n\n").filter((e) => e.startsWith("data: {")).map((e) => JSON.parse(e.slice(6)) as { choices: unknown[] });
    expect(chunks.some((c) => c.choices.length === 0)).toBe(false);
  });
});
