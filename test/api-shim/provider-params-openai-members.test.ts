import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_FAKE, startShim, type Harness } from "../support/shim-harness.ts";

/**
 * Found by mutation review: OpenAI's own parameters and message members that a provider's model must
 * keep taking, which no other test sent: each was refused with a 400 by a one-token change to
 * provider-params.ts or provider-surcharges.ts, and every test still passed.
 */
const claude = { model: "claude", messages: [{ role: "user" as const, content: "hi" }], max_tokens: 2 };

describe("no false refusal of OpenAI's own members for a provider's model", () => {
  let h: Harness;
  let key: string;
  beforeAll(async () => {
    h = await startShim({
      file: { models: [{ name: "claude", provider: true, maxModelLen: 200_000, maxOutputTokens: 8192 }] },
      fake: { ...DEFAULT_FAKE, models: [...DEFAULT_FAKE.models!, { name: "claude" }] },
    });
    ({ key } = await h.createKey({ credits: 1000 }));
  });
  afterAll(() => h.close());

  it("service_tier 'flex' (billed at or below the standard price) passes as sent", async () => {
    await h.client(key).chat.completions.create({ ...claude, service_tier: "flex" } as never);
    expect(JSON.parse(h.fake.requests.at(-1)!.body)).toMatchObject({ service_tier: "flex" });
  });

  it("an assistant turn handed back as the SDKs return it (refusal: null, a legacy function_call, thinking_blocks: null) passes as sent", async () => {
    for (const messages of [
      // openai-node/python: `messages.push(completion.choices[0].message)` carries `refusal: null`.
      [{ role: "user", content: "hi" }, { role: "assistant", content: "ok", refusal: null }, { role: "user", content: "go on" }],
      // The legacy `functions` flow (allow-listed): the assistant's function_call, then the function's answer.
      [{ role: "user", content: "hi" }, { role: "assistant", content: null, function_call: { name: "f", arguments: "{}" } }, { role: "function", name: "f", content: "r" }],
      [{ role: "user", content: "hi" }, { role: "assistant", content: "ok", thinking_blocks: null }, { role: "user", content: "go on" }],
    ]) {
      const res = await h.post(key, "/v1/chat/completions", { ...claude, messages, ...("function_call" in messages[1]! ? { functions: [{ name: "f", parameters: {} }] } : {}) });
      expect(res.status, JSON.stringify(messages[1])).toBe(200);
      await res.body?.cancel();
      expect(JSON.parse(h.fake.requests.at(-1)!.body).messages).toEqual(messages);
    }
  });

  it("/v1/completions passes OpenAI's sampling parameters and streams (stream, stream_options) for a provider's model", async () => {
    const c = h.client(key);
    const sampling = { temperature: 0.5, top_p: 1, n: 1, frequency_penalty: 0, presence_penalty: 0, logit_bias: { "1": 1 } };
    await c.completions.create({ model: "claude", prompt: "hi", max_tokens: 2, ...sampling });
    expect(JSON.parse(h.fake.requests.at(-1)!.body)).toMatchObject(sampling);
    // The openai SDK's streamed completion, as a client writes it.
    const stream = await c.completions.create({ model: "claude", prompt: "hi", max_tokens: 2, stream: true, stream_options: { include_usage: true } });
    for await (const _ of stream);
    expect(JSON.parse(h.fake.requests.at(-1)!.body)).toMatchObject({ stream: true, stream_options: { include_usage: true } });
  });

  it("/v1/completions passes `suffix`, and `best_of` as null (unset), on to the provider", async () => {
    for (const extra of [{ suffix: "end" }, { best_of: null }]) {
      const received = h.fake.counters.received;
      const res = await h.post(key, "/v1/completions", { model: "claude", prompt: "hi", max_tokens: 2, ...extra });
      await res.body?.cancel();
      // Forwarded (the fake, as vLLM, may itself refuse `suffix`: the provider's answer, not the shim's 400).
      expect(h.fake.counters.received, JSON.stringify(extra)).toBe(received + 1);
      expect(JSON.parse(h.fake.requests.at(-1)!.body), JSON.stringify(extra)).toMatchObject(extra);
    }
  });
});
