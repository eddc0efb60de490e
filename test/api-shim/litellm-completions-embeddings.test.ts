import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type FakeLitellm, shimOnFakeLitellm } from "../support/fake-litellm.ts";
import type { Harness } from "../support/shim-harness.ts";

/**
 * `/v1/completions` and `/v1/embeddings` through an upstream answering as LiteLLM's proxy does
 * (fake-litellm.ts: its text completion chunks keep index 0, one finish for every output, a usage
 * chunk that keeps a choice; embeddings' usage with completion_tokens 0), metered as the chat path
 * is: the upstream's usage, exactly, streamed or not, shown to a client only when asked.
 */
describe("completions and embeddings through LiteLLM's shapes", () => {
  let h: Harness;
  let upstream: FakeLitellm;
  let close: () => Promise<void>;
  const CREDIT = 1_000_000;
  beforeAll(async () => {
    // 1 credit a request and 1 a token, prompt or completion: a charge is 1 + the usage's tokens.
    ({ h, upstream, close } = await shimOnFakeLitellm({
      pricing: { request: 1, models: { smart: { promptPer1k: 1000, completionPer1k: 1000 }, embed: { promptPer1k: 1000, completionPer1k: 0 } } },
      models: [{ name: "smart", maxModelLen: 8192, continuousUsage: false, tokenPrompts: false }, { name: "embed", maxModelLen: 8192, continuousUsage: false, tokenPrompts: false }],
    }));
    upstream.usage = { prompt_tokens: 7, completion_tokens: 2, total_tokens: 9 };
  });
  afterAll(() => close());

  it("a text completion, answered whole, is charged its usage", async () => {
    const { id, key } = await h.createKey({ credits: 1000 });
    const { data, response } = await h.client(key).completions.create({ model: "smart", prompt: "hi", max_tokens: 5 }).withResponse();
    expect(data.choices[0]!.text).toBe(" ok");
    expect(Number(response.headers.get("x-credits-charged"))).toBe(10);
    expect((await h.store.getKey(id))!.balance).toBe(990 * CREDIT);
  });

  for (const n of [1, 2]) {
    for (const asks of [true, false]) {
      it(`a streamed text completion (n = ${n}, usage ${asks ? "asked" : "not asked"}) is charged its usage, the usage chunk shown only when asked`, async () => {
        const { id, key } = await h.createKey({ credits: 1000 });
        const res = await h.post(key, "/v1/completions", { model: "smart", prompt: "hi", max_tokens: 5, n, stream: true, ...(asks ? { stream_options: { include_usage: true } } : {}) });
        const text = await res.text();
        expect(text).not.toContain('"error"');
        expect(/^: credits_charged=(\S+) /m.exec(text)?.[1]).toBe("10");
        expect(text.includes('"usage"')).toBe(asks);
        expect(text.trimEnd().endsWith("data: [DONE]")).toBe(true);
        expect((await h.store.getKey(id))!.balance).toBe(990 * CREDIT);
      });
    }
  }

  it("embeddings are charged their prompt tokens, the usage relayed as LiteLLM sent it", async () => {
    upstream.usage = { prompt_tokens: 7, total_tokens: 7 };
    try {
      const { id, key } = await h.createKey({ credits: 1000 });
      const { data, response } = await h.client(key).embeddings.create({ model: "embed", input: "hello" }).withResponse();
      expect(data.usage).toEqual({ completion_tokens: 0, prompt_tokens: 7, total_tokens: 7 });
      expect(Number(response.headers.get("x-credits-charged"))).toBe(8);
      expect((await h.store.getKey(id))!.balance).toBe(992 * CREDIT);
    } finally {
      upstream.usage = { prompt_tokens: 7, completion_tokens: 2, total_tokens: 9 };
    }
  });
});
