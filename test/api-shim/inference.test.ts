import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IMAGE_TOKENS } from "../support/fake-vllm.ts";
import { startShim, type Harness, moneyInvariants } from "../support/shim-harness.ts";

/** The happy paths through the official SDK: every route, headers, body splice, pass-through. */
describe("inference through the shim with the OpenAI SDK", () => {
  let h: Harness;
  let key: string;
  let keyId: string;

  beforeAll(async () => {
    h = await startShim({
      file: {
        pricing: { request: 1, batchRequest: 2, models: { "qwen2.5-7b": { promptPer1k: 0.1, completionPer1k: 0.2 } } },
        models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }, { name: "bge-m3", maxModelLen: 8192 }],
      },
    });
    ({ key, id: keyId } = await h.createKey({ credits: 1000, tier: "developer" }));
  });
  afterAll(() => h.close());
  /** The sum of a metric's samples on /metrics. */
  const metric = async (name: string) => {
    const text = await (await fetch(`${h.url}/metrics`)).text();
    return text.split("\n").filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `)).reduce((sum, l) => sum + Number(l.split(" ").at(-1)), 0);
  };

  it("chat: upstream body and usage come back, with the credits spliced in and headers set", async () => {
    const before = h.fake.counters.completed;
    const { data, response } = await h.client(key).chat.completions
      .create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hello there" }], max_tokens: 5 })
      .withResponse();
    expect(data.choices[0]!.message.content).toBe("t1 t2 t3 t4 t5");
    // The fake counts words: "user hello there" + 3 per chat = 6 prompt tokens.
    expect(data.usage).toMatchObject({ prompt_tokens: 6, completion_tokens: 5, total_tokens: 11 });
    // 1 credit + ceil(6 × 0.1 credits / 1000) + ceil(5 × 0.2 / 1000) = 1 + 0.0006 + 0.001
    const extra = data as unknown as { credits_charged: number; credits_remaining: number; batch_request: boolean };
    expect(extra.credits_charged).toBe(1.0016);
    expect(extra.credits_remaining).toBe(998.9984);
    expect(extra.batch_request).toBe(false);
    expect(response.headers.get("x-credits-charged")).toBe("1.0016");
    expect(response.headers.get("x-credits-remaining")).toBe("998.9984");
    expect(response.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
    expect(response.headers.get("x-ratelimit-limit-requests")).toBe("100");
    expect(response.headers.get("x-ratelimit-remaining-requests")).toMatch(/^\d+$/);
    expect(response.headers.get("x-ratelimit-reset-requests")).toMatch(/^(\d+ms|\d+s|\d+m\d+s)$/);
    expect(response.headers.get("x-ratelimit-limit-tokens")).toBe("100000");
    expect(response.headers.get("X-RateLimit-Limit")).toBe("100");
    expect(Number(response.headers.get("X-RateLimit-Reset"))).toBeGreaterThanOrEqual(Math.floor(Date.now() / 1000));
    expect(h.fake.counters.completed).toBe(before + 1);
  });

  it("forwards the client's bytes untouched (unknown parameters included) and uses the upstream's own key", async () => {
    const body = '{"model":"qwen2.5-7b","messages":[{"role":"user","content":"x"}],"max_tokens":1,"top_k":40,"repetition_penalty":1.10,"guided_json":{"type":"object"},"big":12345678901234567890}';
    const res = await h.post(key, "/v1/chat/completions", body);
    expect(res.status).toBe(200);
    const seen = h.fake.requests.at(-1)!;
    expect(seen.body).toBe(body);
    expect(seen.headers.authorization).toBe("Bearer upstream-secret");
    expect(seen.headers["x-request-id"]).toBe(res.headers.get("x-request-id"));
  });

  it("one request id across the hops: nginx's (from SHIM_TRUST_PROXY) is kept, a client's own is replaced", async () => {
    // No proxy trusted here: a client could pass for another request in the log, and vLLM
    // refuses an id that is already running.
    const own = await h.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "x" }], max_tokens: 1 }, { "x-request-id": "nginx-abc123" });
    expect(own.status).toBe(200);
    const replaced = own.headers.get("x-request-id")!;
    expect(replaced).toMatch(/^[0-9a-f-]{36}$/);
    expect(h.fake.requests.at(-1)!.headers["x-request-id"]).toBe(replaced);
    expect((await h.waitForRequestLog((l) => l.reqId === replaced)).status).toBe(200);

    const proxied = await startShim({ env: { SHIM_TRUST_PROXY: "10.0.0.0/8,127.0.0.1" } });
    try {
      const k = (await proxied.createKey({ credits: 10 })).key;
      const res = await proxied.post(k, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "x" }], max_tokens: 1 }, { "x-request-id": "nginx-abc123" });
      expect(res.status).toBe(200);
      expect(res.headers.get("x-request-id")).toBe("nginx-abc123");
      expect(proxied.fake.requests.at(-1)!.headers["x-request-id"]).toBe("nginx-abc123");
      expect((await proxied.waitForRequestLog((l) => l.path === "/v1/chat/completions")).reqId).toBe("nginx-abc123");
    } finally {
      await proxied.close();
    }
  });

  it("a streamed body keeps the client's bytes too, with stream_options spliced in only where needed", async () => {
    const send = async (body: string) => {
      const res = await h.post(key, "/v1/chat/completions", body);
      expect(res.status).toBe(200);
      await res.text();
      return h.fake.requests.at(-1)!.body;
    };
    const rest = '"model":"qwen2.5-7b","messages":[{"role":"user","content":"x"}],"max_tokens":1,"stream":true,"seed":12345678901234567890,"repetition_penalty":1.10';
    // No stream_options: ours goes first, the client's bytes follow unchanged (the seed is not rounded).
    expect(await send(`{${rest}}`)).toBe(`{"stream_options":{"include_usage":true},${rest}}`);
    // Already asking for usage: forwarded as sent.
    const asking = `{${rest},"stream_options":{"include_usage":true}}`;
    expect(await send(asking)).toBe(asking);
    // Any other stream_options (not asking for usage, null, or only include_obfuscation, which the
    // OpenAI SDKs send): only its value is replaced; the client's other bytes go as they were (the
    // client will not see the usage chunk; metering needs it).
    for (const [given, ours] of [
      ['{"include_usage":false}', '{"include_usage":true}'],
      ["null", '{"include_usage":true}'],
      ['{"include_obfuscation":false}', '{"include_obfuscation":false,"include_usage":true}'],
      ['{"include_usage":null,"x":1.0}', '{"include_usage":true,"x":1}'],
    ]) {
      expect(await send(`{${rest},"stream_options":${given},"vllm_xargs":{"w":1.0}}`)).toBe(`{${rest},"stream_options":${ours},"vllm_xargs":{"w":1.0}}`);
    }
    // Spacing kept, and a key written with an escape is the same member (as JSON.parse reads it).
    expect(await send(`{ "stream\\u005foptions" : {"include_usage":false} ,${rest}}`)).toBe(`{ "stream\\u005foptions" : {"include_usage":true} ,${rest}}`);
    // Members of that name elsewhere (nested, or text) are not it; of two, the last counts (as
    // JSON.parse and Python's json read them), so that one is replaced.
    const nested = `"metadata":{"stream_options":{"include_usage":false}},"user":"\\"stream_options\\":null"`;
    expect(await send(`{${nested},"stream_options":{"include_usage":true},${rest},"stream_options":null}`)).toBe(`{${nested},"stream_options":{"include_usage":true},${rest},"stream_options":{"include_usage":true}}`);
  });

  it("streams chat chunk by chunk; the extra usage chunk is hidden from a client that did not ask", async () => {
    const stream = await h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 4, stream: true });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    expect(chunks.map((c) => c.choices[0]?.delta.content ?? "").join("")).toBe("t1 t2 t3 t4");
    expect(chunks.every((c) => c.choices.length === 1 && c.usage == null)).toBe(true);
    const forwarded = JSON.parse(h.fake.requests.at(-1)!.body);
    expect(forwarded.stream_options).toEqual({ include_usage: true });
  });

  it("include_usage: null is accepted and read as vLLM reads it (no usage chunk), and still charged from the hidden one", async () => {
    const res = await h.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 3, stream: true, stream_options: { include_usage: null } });
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).not.toContain('"usage"');
    expect(text).toContain(": credits_charged=1.0011 "); // 1 + 5 × 0.0001 + 3 × 0.0002
    expect(JSON.parse(h.fake.requests.at(-1)!.body).stream_options).toEqual({ include_usage: true });
  });

  it("streams with include_usage: the usage chunk carries the final credits", async () => {
    const stream = await h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 3, stream: true, stream_options: { include_usage: true } });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    const last = chunks.at(-1)! as unknown as { choices: unknown[]; usage: { prompt_tokens: number; completion_tokens: number }; credits_charged: number };
    expect(last.choices).toEqual([]);
    expect(last.usage).toMatchObject({ prompt_tokens: 5, completion_tokens: 3 });
    expect(last.credits_charged).toBe(1.0011); // 1 + 5 × 0.0001 + 3 × 0.0002
  });

  it("streams the raw SSE with the right headers, the credits comment and [DONE]", async () => {
    const res = await h.post(key, "/v1/completions", { model: "qwen2.5-7b", prompt: "a b", max_tokens: 2, stream: true });
    expect(res.headers.get("content-type")).toBe("text/event-stream; charset=utf-8");
    expect(res.headers.get("cache-control")).toBe("no-cache");
    expect(res.headers.get("x-accel-buffering")).toBe("no");
    expect(res.headers.get("x-credits-reserved")).toMatch(/^\d+(\.\d+)?$/);
    expect(res.headers.get("x-credits-remaining")).toMatch(/^\d+(\.\d+)?$/);
    const text = await res.text();
    const events = text.split("\n\n").filter(Boolean);
    expect(events.at(-1)).toBe("data: [DONE]");
    expect(events.at(-2)).toMatch(/^: credits_charged=1\.0006 credits_remaining=\d+(\.\d+)?$/);
    expect(events.filter((e) => e.startsWith("data: {")).length).toBe(2); // no usage chunk
  });

  it("completions and embeddings work and are metered from the upstream's usage", async () => {
    const c = await h.client(key).completions.create({ model: "qwen2.5-7b", prompt: "The capital of France is", max_tokens: 3 });
    expect(c.choices[0]!.text).toBe("t1 t2 t3");
    expect(c.usage).toMatchObject({ prompt_tokens: 5, completion_tokens: 3 });
    const e = await h.client(key).embeddings.create({ model: "bge-m3", input: ["one two", "three"] });
    expect(e.data).toHaveLength(2);
    expect(e.data[0]!.embedding).toHaveLength(4);
    expect(e.usage).toMatchObject({ prompt_tokens: 3, total_tokens: 3 });
    expect((e as unknown as { credits_charged: number }).credits_charged).toBe(1); // bge-m3 has no token price
    // vLLM takes token-ID prompts, and so does a model not configured otherwise (`tokenPrompts`).
    const tokens = await h.client(key).completions.create({ model: "qwen2.5-7b", prompt: [[1, 2, 3], [4, 5]], max_tokens: 2 });
    expect(tokens.choices).toHaveLength(2);
    expect(JSON.parse(h.fake.requests.at(-1)!.body).prompt).toEqual([[1, 2, 3], [4, 5]]);
  });

  it("a large embeddings answer (MBs) arrives whole, with its usage metered and the credit members added", async () => {
    h.fake.set({ embeddingDims: 4096 });
    try {
      const input = Array.from({ length: 64 }, (_, i) => `passage ${i}`);
      const { data: e, response } = await h.client(key).embeddings.create({ model: "bge-m3", input, encoding_format: "float" }).withResponse();
      expect(Number(response.headers.get("content-length"))).toBeGreaterThan(2 * 1024 * 1024);
      expect(e.data).toHaveLength(64);
      expect(e.data[63]!.embedding).toHaveLength(4096);
      expect(e.data[63]!.embedding[3]).toBeCloseTo(6.3, 6);
      expect(e.usage).toEqual({ prompt_tokens: 128, total_tokens: 128, completion_tokens: 0, prompt_tokens_details: null });
      expect((e as unknown as { credits_charged: number }).credits_charged).toBe(1);
      expect(response.headers.get("x-credits-charged")).toBe("1");
      const log = await h.waitForRequestLog((l) => l.reqId === response.headers.get("x-request-id"));
      expect(log.tokens).toBe(128);
    } finally {
      h.fake.set({ embeddingDims: 4 });
    }
  });

  // A 413, not a 502 (found by review): it is charged, and clients other than OpenAI's SDKs (the
  // AI SDK, LangChain) ignore x-should-retry and retry any 5xx, paying for it again each time.
  it("an answer past SHIM_MAX_ANSWER_BYTES is a 413 no client retries, that says how to fit, charged from the usage at its end (the work was done), with the charge in its headers", async () => {
    const small = await startShim({
      env: { SHIM_MAX_ANSWER_BYTES: "65536" },
      file: {
        pricing: { request: 1, models: { "bge-m3": { promptPer1k: 1, completionPer1k: 0 }, "qwen2.5-7b": { promptPer1k: 1, completionPer1k: 1 } } },
        models: [{ name: "bge-m3", maxModelLen: 8192 }, { name: "qwen2.5-7b", maxModelLen: 8192 }],
      },
    });
    try {
      small.fake.set({ embeddingDims: 4096 });
      const { key: k, id } = await small.createKey({ credits: 100 });
      const input = Array.from({ length: 64 }, (_, i) => `passage ${i}`);
      // With the SDK's default retries: the charged 413 (x-should-retry: false too) is not repeated.
      const received = small.fake.counters.received;
      const err = await new OpenAI({ apiKey: k, baseURL: `${small.url}/v1` }).embeddings.create({ model: "bge-m3", input, encoding_format: "float" }).catch((e: unknown) => e);
      expect(small.fake.counters.received - received).toBe(1);
      const apiError = err as InstanceType<typeof OpenAI.APIError>;
      expect(apiError.status).toBe(413);
      expect(apiError.error).toMatchObject({
        type: "invalid_request_error", code: "request_too_large", message: "The answer was larger than the 65536 bytes this endpoint relays; send fewer inputs per request or ask for encoding_format 'base64'.",
      });
      const prompt = small.fake.usages.at(-1)!.prompt_tokens;
      const log = await small.waitForRequestLog((l) => l.keyId === id);
      expect(log).toMatchObject({ status: 413, error: "answer_too_large", tokens: prompt, cost: (1000 + prompt) / 1000, cause: "answer_too_large" }); // counted, so named on its line
      expect((await small.store.getKey(id))!).toMatchObject({ balance: 100_000_000 - 1_000_000 - prompt * 1000, held: 0 });
      // The headers say what the ledger says.
      expect(apiError.headers!.get("x-credits-charged")).toBe(String((1000 + prompt) / 1000));
      expect(apiError.headers!.get("x-credits-remaining")).toBe(String((99_000 - prompt) / 1000));
      expect(await (await fetch(`${small.url}/metrics`)).text()).toMatch(/shim_upstream_failures_total\{reason="answer_too_large"\} 1\n/);

      // A chat whose many outputs make the answer too large pays for what was generated.
      const chatter = await small.createKey({ credits: 100 });
      small.fake.set({ defaultTokens: 300 });
      const chatErr = await small.client(chatter.key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "go" }], n: 60, max_tokens: 300 }, { maxRetries: 0 }).catch((e: unknown) => e);
      expect((chatErr as InstanceType<typeof OpenAI.APIError>).status).toBe(413);
      const used = small.fake.usages.at(-1)!;
      expect(used.completion_tokens).toBe(60 * 300);
      expect((await small.store.getKey(chatter.id))!.balance).toBe(100_000_000 - 1_000_000 - (used.prompt_tokens + used.completion_tokens) * 1000);

      // Under the limit, the same request is answered and charged from its usage.
      small.fake.set({ embeddingDims: 16 });
      expect((await small.client(k).embeddings.create({ model: "bge-m3", input, encoding_format: "float" })).data).toHaveLength(64);
    } finally {
      await small.close();
    }
  });

  it("the hold counts what the tokenizer's Unicode normalization may add to a prompt", async () => {
    const reserved = async (content: string) => {
      const { response, data } = await h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content }], max_tokens: 1, stream: true }).withResponse();
      for await (const _ of data);
      return Number(response.headers.get("x-credits-reserved"));
    };
    // 600 bytes each; U+FDFA becomes 33 bytes under NFKC: 6,000 more bytes at 0.1 credits per 1k tokens
    // (within the model's 8,192-token context, which bounds any prompt).
    const ascii = await reserved("a".repeat(600));
    expect(await reserved("\uFDFA".repeat(200))).toBeCloseTo(ascii + 0.6, 6);
  });

  it("?batch=1 is charged the batch price", async () => {
    const res = await h.post(key, "/v1/embeddings?batch=1", { model: "bge-m3", input: "x" });
    expect(res.status).toBe(200);
    expect(res.headers.get("x-credits-charged")).toBe("2");
    expect(await res.json()).toMatchObject({ credits_charged: 2, batch_request: true });
  });

  it("?batch=0 is the standard price; any other batch value is refused 400 naming it, charged nothing", async () => {
    const standard = await h.post(key, "/v1/embeddings?batch=0", { model: "bge-m3", input: "x" });
    expect(standard.status).toBe(200);
    expect(await standard.json()).toMatchObject({ credits_charged: 1, batch_request: false });
    const { key: other, id } = await h.createKey({ credits: 10 });
    for (const query of ["batch=true", "batch=2", "batch=", "batch=1&batch=1"]) {
      const res = await h.post(other, `/v1/embeddings?${query}`, { model: "bge-m3", input: "x" });
      expect(res.status, query).toBe(400);
      expect(await res.json(), query).toMatchObject({ error: { type: "invalid_request_error", param: "batch" } });
    }
    // The SDK's own query option: its BadRequestError.
    const err = await h.client(other).embeddings.create({ model: "bge-m3", input: "x" }, { query: { batch: "true" } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((await h.store.getKey(id))!.balance).toBe(10 * 1_000_000);
  });

  it("models: the upstream list filtered to configured models and the key's allow-list, charged nothing", async () => {
    const all = await h.client(key).models.list();
    expect(all.data.map((m) => m.id).sort()).toEqual(["bge-m3", "qwen2.5-7b"]);
    const limited = await h.createKey({ models: ["bge-m3"] });
    const { data, response } = await h.client(limited.key).models.list().withResponse();
    expect(data.data.map((m) => m.id)).toEqual(["bge-m3"]);
    expect(response.headers.get("x-credits-charged")).toBe("0");
    const raw = await (await fetch(`${h.url}/v1/models`, { headers: { authorization: `Bearer ${limited.key}` } })).json();
    expect(raw).toMatchObject({ object: "list", credits_charged: 0, credits_remaining: 100 });
  });

  it("an image by URL: its tokens are not bounded by its bytes, so the hold is the model's context and the charge is exact", async () => {
    const { data, response } = await h.client(key).chat.completions
      .create({ model: "qwen2.5-7b", messages: [{ role: "user", content: [{ type: "text", text: "what is this" }, { type: "image_url", image_url: { url: "https://x.test/a.png" } }] }], max_tokens: 2 })
      .withResponse();
    // The fake counts an image as IMAGE_TOKENS, as a vision model does: far above the body's bytes.
    expect(data.usage!.prompt_tokens).toBeGreaterThan(IMAGE_TOKENS);
    const charged = Number(response.headers.get("x-credits-charged"));
    // 1 credit + 0.1 per 1k prompt tokens + 0.2 per 1k completion tokens, each rounded up to the µc.
    expect(charged).toBe(1 + Math.ceil(data.usage!.prompt_tokens * 100) / 1e6 + Math.ceil(2 * 200) / 1e6);
    expect(await metric("shim_charges_capped_total")).toBe(0);
  });

  it("usage worth more than the hold is charged the hold, counted and logged for the operator", async () => {
    h.fake.set({ templateTokens: 20_000 }); // a chat template far longer than any allowance
    try {
      const { data, response } = await h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 1 }).withResponse();
      expect(data.usage!.prompt_tokens).toBeGreaterThan(20_000);
      const full = 1 + Math.ceil(data.usage!.prompt_tokens * 100) / 1e6 + Math.ceil(200) / 1e6;
      expect(Number(response.headers.get("x-credits-charged"))).toBeLessThan(full);
      expect(await metric("shim_charges_capped_total")).toBe(1);
      expect(h.logs.some((l) => l.includes('"msg":"charge capped at the hold"') && l.includes(response.headers.get("x-request-id")!))).toBe(true);
    } finally {
      h.fake.reset();
    }
  });

  it("every request left balance = ledger and no hold", async () => {
    const rows = await moneyInvariants(h.store);
    for (const r of rows) expect(r).toMatchObject({ balance: r.ledgerSum, held: 0, reservations: 0 });
    expect(rows.find((r) => r.keyId === keyId)!.balance).toBeLessThan(1000_000_000);
  });
});
