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
        pricing: { request: 1, batchRequest: 2, models: { "qwen2.5-7b": { promptPer1k: PROMPT, completionPer1k: COMPLETION }, "bge-m3": { promptPer1k: EMBED, completionPer1k: 0 } } },
        models: [{ name: "qwen2.5-7b", maxModelLen: 64 }, { name: "bge-m3", maxModelLen: 64 }],
      },
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
    const last = chunks.at(-1)! as unknown as { usage: { prompt_tokens: number; completion_tokens: number }; credits_charged: number };
    expect(last.usage).toMatchObject({ prompt_tokens: 5, completion_tokens: 90 });
    expect(last.credits_charged).toBeCloseTo(price(5, 90), 6);
  });

  it("a key without credits for n outputs is refused before anything is generated", async () => {
    const poor = await h.createKey({ credits: 1.5, tier: "developer" });
    const completed = h.fake.counters.completed;
    // One output of 40 tokens would be held at 1 + 0.02 + 0.08; 8 outputs need 1 + 0.02 + 0.64 ≤ 1.5 — 16 do not.
    const ok = await fetch(`${h.url}/v1/chat/completions`, { method: "POST", headers: { authorization: `Bearer ${poor.key}`, "content-type": "application/json" }, body: JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "x" }], max_tokens: 40, n: 16 }) });
    expect(ok.status).toBe(402);
    expect(((await ok.json()) as { error: { message: string } }).error.message).toMatch(/^Insufficient credits\. Required: /);
    expect(h.fake.counters.completed).toBe(completed);
  });

  it("n must be a positive integer", async () => {
    const res = await fetch(`${h.url}/v1/chat/completions`, { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body: JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "x" }], n: 0 }) });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: unknown }).error).toMatchObject({ param: "n", type: "invalid_request_error" });
  });

  it("left balance = ledger and no hold", async () => {
    for (const r of await moneyInvariants(h.store)) expect(r).toMatchObject({ balance: r.ledgerSum, held: 0, reservations: 0 });
  });
});
