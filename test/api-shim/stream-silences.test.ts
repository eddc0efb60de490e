import OpenAI, { BadRequestError } from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startShim, type Harness } from "../support/shim-harness.ts";

/**
 * Parameters with which a client has vLLM generate without writing chunks: `stream_interval`
 * (vLLM's extra parameter: "Number of tokens to batch into each streamed chunk … The first and last
 * chunks are always sent immediately"), a streamed chat `use_beam_search` (vLLM's beam search
 * yields its answer once, whole) and `include_reasoning: false` (the reasoning is generated, its
 * deltas dropped). A client that leaves a stream pays what it was sent, and the upstream is aborted
 * without telling what it generated: with one of these, a client leaving just before the end had
 * hundreds of tokens generated and paid for one. So they are refused on streams, where a leaving
 * client is metered by what it received, and left to non-streamed requests, charged from vLLM's usage.
 */
describe("parameters that silence a stream", () => {
  let h: Harness;
  let client: OpenAI;
  let keyId: string;
  beforeAll(async () => {
    h = await startShim();
    const k = await h.createKey({ credits: 1000 });
    keyId = k.id;
    client = new OpenAI({ baseURL: `${h.url}/v1`, apiKey: k.key, maxRetries: 0 });
  });
  afterAll(() => h.close());
  const messages = [{ role: "user" as const, content: "hi" }];

  const refusals: [string, Record<string, unknown>, string][] = [
    ["chat", { stream_interval: 1_000_000 }, "stream_interval"],
    ["completions", { stream_interval: 50 }, "stream_interval"],
    ["chat", { use_beam_search: true }, "use_beam_search"],
    ["chat", { use_beam_search: "yes" }, "use_beam_search"], // pydantic's lax bool
    ["chat", { include_reasoning: false }, "include_reasoning"],
  ];
  for (const [route, extra, param] of refusals) {
    it(`a streamed ${route} request with ${JSON.stringify(extra)} is refused with a 400 naming ${param}, before anything is held or forwarded`, async () => {
      const before = h.fake.counters.received;
      const balance = (await h.store.getKey(keyId))!.balance;
      const request = route === "chat"
        ? client.chat.completions.create({ model: "qwen2.5-7b", messages, stream: true, ...extra } as never)
        : client.completions.create({ model: "qwen2.5-7b", prompt: "hi", stream: true, ...extra } as never);
      const err = await request.then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(BadRequestError);
      expect((err as BadRequestError).param).toBe(param);
      expect((err as BadRequestError).message).toMatch(/cannot be metered/);
      expect(h.fake.counters.received).toBe(before);
      expect((await h.store.getKey(keyId))!.balance).toBe(balance);
    });
  }

  it("is not refused where it silences nothing: stream_interval 1 or null on a stream, and each of them on a non-streamed request (charged from vLLM's usage)", async () => {
    const streamed = async (extra: Record<string, unknown>) => {
      const chunks = await client.chat.completions.create({ model: "qwen2.5-7b", messages, stream: true, ...extra });
      let text = "";
      for await (const c of chunks) text += c.choices[0]?.delta?.content ?? "";
      return text;
    };
    expect(await streamed({ stream_interval: 1 })).not.toBe("");
    expect(await streamed({ stream_interval: null, include_reasoning: true, use_beam_search: false })).not.toBe("");
    const whole = await client.chat.completions.create({ model: "qwen2.5-7b", messages, stream_interval: 1_000_000, use_beam_search: true, include_reasoning: false } as never);
    expect(whole.usage?.completion_tokens).toBeGreaterThan(0);
    const received = JSON.parse(h.fake.requests.at(-1)!.body) as Record<string, unknown>;
    expect(received).toMatchObject({ stream_interval: 1_000_000, use_beam_search: true, include_reasoning: false }); // passed on untouched
  });
});
