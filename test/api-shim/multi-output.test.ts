import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { moneyInvariants, startShim, type Harness } from "../support/shim-harness.ts";

/**
 * Requests that are bounded per sequence, not as a whole: `n` outputs, a batch of prompts, a
 * batch of embedding inputs. Each may use many times maxModelLen tokens in all; the charge must
 * still be the price of the upstream's usage, never capped at a one-sequence hold.
 */
describe("multi-output and batched requests are charged their full usage", () => {
  let h: Harness;
  let key: string;
  // Prices in credits per 1k tokens; a small maxModelLen so that every batch below exceeds it.
  const PROMPT = 1;
  const COMPLETION = 2;
  const EMBED = 0.5;
  const price = (prompt: number, completion: number, perPrompt = PROMPT) => 1 + (prompt * perPrompt + completion * COMPLETION) / 1000;

  beforeAll(async () => {
    h = await startShim({
      file: {
        pricing: {
          request: 1, batchRequest: 2,
          models: { "qwen2.5-7b": { promptPer1k: PROMPT, completionPer1k: COMPLETION }, "qwen-cont": { promptPer1k: PROMPT, completionPer1k: COMPLETION }, "bge-m3": { promptPer1k: EMBED, completionPer1k: 0 } },
        },
        // qwen-cont: the upstream sends running usage (vLLM's continuous_usage_stats), per output.
        models: [{ name: "qwen2.5-7b", maxModelLen: 64 }, { name: "qwen-cont", maxModelLen: 64, continuousUsage: true }, { name: "bge-m3", maxModelLen: 64 }],
      },
      fake: { models: [{ name: "qwen2.5-7b" }, { name: "qwen-cont" }, { name: "bge-m3" }] },
    });
    h.fake.set({ defaultTokens: 40 });
    ({ key } = await h.createKey({ credits: 10_000, tier: "developer" }));
  });
  afterAll(() => h.close());

  const words = (count: number, tag: string) => Array.from({ length: count }, (_, i) => `${tag}${i}`).join(" ");

  it("chat with n: 4 is charged four outputs", async () => {
    const { data, response } = await h.client(key).chat.completions
      .create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hello" }], max_tokens: 40, n: 4 })
      .withResponse();
    expect(data.choices).toHaveLength(4);
    expect(data.usage).toMatchObject({ prompt_tokens: 5, completion_tokens: 160 }); // 4 × 40 > maxModelLen
    expect(Number(response.headers.get("x-credits-charged"))).toBeCloseTo(price(5, 160), 6);
  });

  it("completions with a batch of 20 prompts is charged every prompt and every output", async () => {
    const prompt = Array.from({ length: 20 }, (_, i) => words(30, `p${i}-`));
    const { data, response } = await h.client(key).completions.create({ model: "qwen2.5-7b", prompt, max_tokens: 10, n: 2 }).withResponse();
    expect(data.choices).toHaveLength(40);
    expect(data.usage).toMatchObject({ prompt_tokens: 600, completion_tokens: 400 });
    expect(Number(response.headers.get("x-credits-charged"))).toBeCloseTo(price(600, 400), 6);
  });

  it("embeddings of 50 inputs are charged every input's tokens", async () => {
    const input = Array.from({ length: 50 }, (_, i) => words(40, `e${i}-`));
    const { data, response } = await h.client(key).embeddings.create({ model: "bge-m3", input }).withResponse();
    expect(data.usage).toMatchObject({ prompt_tokens: 2000 });
    expect(Number(response.headers.get("x-credits-charged"))).toBeCloseTo(price(2000, 0, EMBED), 6);
  });

  it("a streamed chat with n: 3 reports the full charge in its usage chunk", async () => {
    const stream = await h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 30, n: 3, stream: true, stream_options: { include_usage: true } });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    // As vLLM: a role chunk per output first, then each output's text.
    expect(chunks.slice(0, 3).map((c) => [c.choices[0]!.index, c.choices[0]!.delta.role])).toEqual([[0, "assistant"], [1, "assistant"], [2, "assistant"]]);
    for (const index of [0, 1, 2]) expect(chunks.filter((c) => c.choices[0]?.index === index).map((c) => c.choices[0]!.delta.content).join("")).toMatch(/^t1 t2 .* t30$/);
    const last = chunks.at(-1)! as unknown as { usage: { prompt_tokens: number; completion_tokens: number }; credits_charged: number };
    expect(last.usage).toMatchObject({ prompt_tokens: 5, completion_tokens: 90 });
    expect(last.credits_charged).toBeCloseTo(price(5, 90), 6);
  });

  const post = (k: string, path: string, body: Record<string, unknown>) => h.post(k, path, body);

  it("holds n outputs: a key with credits for 8 is admitted with n: 8 and refused with n: 16 before anything is generated", async () => {
    // The hold per output of 40 tokens is 0.08; the prompt (body bytes, at most maxModelLen 64) at most 0.064.
    // n: 8 needs at most 1 + 0.064 + 0.64 ≤ 2; n: 16 needs at least 1 + 1.28 > 2.
    const poor = await h.createKey({ credits: 2, tier: "developer" });
    const eight = await post(poor.key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "x" }], max_tokens: 40, n: 8 });
    expect(eight.status).toBe(200);
    const completed = h.fake.counters.completed;
    const sixteen = await post(poor.key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "x" }], max_tokens: 40, n: 16 });
    expect(sixteen.status).toBe(402);
    expect(((await sixteen.json()) as { error: { message: string } }).error.message).toMatch(/^Insufficient credits\. Required: /);
    expect(h.fake.counters.completed).toBe(completed);
  });

  it("max_completion_tokens: 0 is passed on for vLLM to judge (0.11 read it as no limit, or max_tokens; later ones refuse it): a 400 with vLLM's words, charged nothing", async () => {
    for (const limits of [{ max_completion_tokens: 0 }, { max_completion_tokens: 0, max_tokens: 30 }, { max_completion_tokens: 0, n: 3 }]) {
      const res = await post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hello" }], ...limits });
      expect(res.status, JSON.stringify(limits)).toBe(400);
      // vLLM's `param` is kept: the SDK's BadRequestError.param names the member, as OpenAI's does.
      expect(((await res.json()) as { error: { message: string; param: unknown } }).error).toMatchObject({ message: "max_tokens must be at least 1, got 0.", param: "max_tokens" });
      expect(res.headers.get("x-credits-charged"), JSON.stringify(limits)).toBe("0");
    }
  });

  it("completions without max_tokens are held at vLLM's default of 16 tokens per output, not the model's length", async () => {
    // 20 prompts × n 2 = 40 outputs: 16 tokens each hold 1.28 credits, maxModelLen (64) each would hold 5.12.
    const modest = await h.createKey({ credits: 4, tier: "developer" });
    const res = await post(modest.key, "/v1/completions", { model: "qwen2.5-7b", prompt: Array.from({ length: 20 }, (_, i) => `p${i}`), n: 2 });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { usage: { prompt_tokens: number; completion_tokens: number } };
    expect(body.usage.completion_tokens).toBe(40 * 16);
    expect(Number(res.headers.get("x-credits-charged"))).toBeCloseTo(price(body.usage.prompt_tokens, body.usage.completion_tokens), 6);
  });

  it("a multi-output stream cut short by the upstream is charged every output's running usage, not the last one's, and no prompt", async () => {
    h.fake.set({ stopAfterTokens: 30, stopMode: "cut" });
    try {
      const res = await post(key, "/v1/chat/completions", { model: "qwen-cont", messages: [{ role: "user", content: "go on" }], max_tokens: 40, n: 4, stream: true });
      const text = await res.text();
      expect(text).toContain('"code":"upstream_error"');
      const charged = Number(/: credits_charged=([\d.]+)/.exec(text)![1]);
      expect(charged).toBeCloseTo(price(0, 4 * 30), 6); // the upstream failed: the content delivered only
    } finally {
      h.fake.set({ stopAfterTokens: null });
    }
  });

  it("a stream cut short whose client asked for running usage it is not shown (include_usage: false) still ends with an error, not as whole", async () => {
    h.fake.set({ stopAfterTokens: 3, stopMode: "cut" });
    try {
      // The model is not configured continuousUsage: the running usage comes because the client's
      // continuous_usage_stats is forwarded, so a usage on a chunk is not the whole request's.
      const res = await post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "go on" }], max_tokens: 40, stream: true, stream_options: { include_usage: false, continuous_usage_stats: true } });
      const text = await res.text();
      expect(text).toContain('"code":"upstream_error"');
      expect(text).not.toContain('"usage"');
    } finally {
      h.fake.set({ stopAfterTokens: null });
    }
  });

  it("a multi-output stream its client leaves is charged every output's running usage and the prompt once", async () => {
    h.fake.set({ tokenDelayMs: 150 });
    const { key: k, id } = await h.createKey({ credits: 1000 });
    try {
      const ac = new AbortController();
      const res = await fetch(`${h.url}/v1/chat/completions`, { method: "POST", signal: ac.signal, headers: { authorization: `Bearer ${k}`, "content-type": "application/json" }, body: JSON.stringify({ model: "qwen-cont", messages: [{ role: "user", content: "go on" }], max_tokens: 40, n: 4, stream: true }) });
      const reader = res.body!.getReader();
      let seen = "";
      // Every output's third token (vLLM interleaves them: the last output's comes last).
      while ((seen.match(/ t3"/g) ?? []).length < 4) seen += new TextDecoder().decode((await reader.read()).value);
      ac.abort();
      await h.waitForRequestLog((e) => e.keyId === id);
      const key = (await h.store.getKey(id))!;
      expect((1000 * 1_000_000 - key.balance) / 1_000_000).toBeCloseTo(price(6, 4 * 3), 6); // "user go on" + 3 = 6 prompt tokens, once
    } finally {
      h.fake.set({ tokenDelayMs: 0 });
    }
  });

  // vLLM does not stream beam search: a streamed request gets one event, the whole response, at
  // the end. A client leaving before it paid the request price for the whole generation, so a
  // streamed one is refused (stream-silences.ts); without `stream` it is charged vLLM's usage, exactly.
  it("a use_beam_search completion is charged its usage exactly, and refused on a stream", async () => {
    const { key: k, id } = await h.createKey({ credits: 1000 });
    const streamed = await post(k, "/v1/completions", { model: "qwen2.5-7b", prompt: "a b c", max_tokens: 3, n: 2, stream: true, use_beam_search: true });
    expect(streamed.status).toBe(400);
    expect(((await streamed.json()) as { error: unknown }).error).toMatchObject({ param: "use_beam_search", type: "invalid_request_error" });
    const res = await post(k, "/v1/completions", { model: "qwen2.5-7b", prompt: "a b c", max_tokens: 3, n: 2, use_beam_search: true });
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('"text":"t1 t2 t3"');
    await h.waitForRequestLog((e) => e.keyId === id);
    const charged = (1000 * 1_000_000 - (await h.store.getKey(id))!.balance) / 1_000_000;
    expect(charged).toBeCloseTo(price(3, 2 * 3), 6);
  });

  it("n must be an integer from 1 to 128", async () => {
    for (const n of [0, 129, 1e12, 2.5]) {
      const res = await post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "x" }], n });
      expect(res.status, String(n)).toBe(400);
      expect(((await res.json()) as { error: unknown }).error).toMatchObject({ param: "n", type: "invalid_request_error", message: "'n' must be an integer from 1 to 128." });
    }
  });

  it("left balance = ledger and no hold", async () => {
    for (const r of await moneyInvariants(h.store)) expect(r).toMatchObject({ balance: r.ledgerSum, held: 0, reservations: 0 });
  });
});
