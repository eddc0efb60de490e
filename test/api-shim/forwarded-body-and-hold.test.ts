import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startShim, type Harness } from "../support/shim-harness.ts";

/**
 * Found by a mutation review of inference-request.ts: what the upstream is asked for,
 * and what is held, for requests the existing suites did not send.
 */
const CREDIT = 1_000_000;
const FILE = {
  pricing: { request: 1, models: { "qwen2.5-7b": { promptPer1k: 1, completionPer1k: 1000 }, "qwen-cont": { promptPer1k: 1, completionPer1k: 1000 } } },
  models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }, { name: "qwen-cont", maxModelLen: 8192, continuousUsage: true }],
};
const FAKE = { models: [{ name: "qwen2.5-7b" }, { name: "qwen-cont" }] };

describe("the body forwarded and the hold", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startShim({ file: FILE, fake: FAKE });
  });
  afterAll(async () => h.close());

  it("a continuousUsage model's stream whose client asked for include_usage alone still asks the upstream for running usage", async () => {
    const { key } = await h.createKey({ credits: 100 });
    const res = await h.post(key, "/v1/chat/completions", { model: "qwen-cont", messages: [{ role: "user", content: "hi" }], max_tokens: 3, stream: true, stream_options: { include_usage: true } });
    expect(res.status).toBe(200);
    await res.text();
    const sent = JSON.parse(h.fake.requests.at(-1)!.body) as { stream_options: Record<string, unknown> };
    expect(sent.stream_options).toEqual({ include_usage: true, continuous_usage_stats: true });
  });

  it("a completions prompt of token IDs is one prompt: held for one output, not one per token (no 402 for a key that covers it)", async () => {
    const { id, key } = await h.createKey({ credits: 1000 });
    // 300 token IDs, max_tokens 100 at 1 credit a token: about 101 credits held for one prompt; 30,000 were it 300 prompts.
    const res = await h.post(key, "/v1/completions", { model: "qwen2.5-7b", prompt: Array.from({ length: 300 }, (_, i) => 100 + i), max_tokens: 100 });
    expect(res.status).toBe(200);
    await res.text();
    expect((await h.store.getKey(id))!.balance).toBeLessThan(1000 * CREDIT);
  });
});
