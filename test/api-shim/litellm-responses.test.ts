import { APIError, BadRequestError } from "openai";
import { beforeAll, describe, expect, it } from "vitest";
import type { FakeLitellmResponses } from "../support/fake-litellm-responses.ts";
import { leaveResponsesStreamAtFirstDelta, litellmResponsesShim } from "../support/litellm-responses-shim.ts";
import { type Harness, balanceOf, expectLedgerMatches } from "../support/shim-harness.ts";

const CREDIT = 1_000_000;
// 1 credit per request, 0.001 credit per prompt token, 1 credit per output token: charges easy to read.
const FILE = {
  pricing: { request: 1, models: { "qwen2.5-7b": { promptPer1k: 1, completionPer1k: 1000 } } },
  models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }],
};
const cost = (input: number, output: number) => CREDIT + input * 1000 + output * CREDIT;

/**
 * The Responses API through LiteLLM's proxy, as the deployed stack runs it (compose.yaml: the
 * shim's upstream is LiteLLM, which forwards a `hosted_vllm/` model to vLLM), with the official
 * SDK: LiteLLM's dialect (test/support/fake-litellm-responses.ts) answered whole and charged exactly.
 */
describe("POST /v1/responses through LiteLLM", () => {
  const f = litellmResponsesShim(FILE);
  let h: Harness;
  let litellm: FakeLitellmResponses;
  beforeAll(() => void ({ h, litellm } = f));

  const balance = (id: string) => balanceOf(h.store, id);
  const ledgerMatches = (id: string) => expectLedgerMatches(h.store, id);

  it("non-streamed: LiteLLM's body (re-encoded id, null members) reaches the SDK whole, charged exactly from its usage", async () => {
    const { key, id } = await h.createKey({ credits: 1000 });
    const { data, response } = await h.client(key).responses.create({ model: "qwen2.5-7b", input: "greet me", max_output_tokens: 16 }).withResponse();
    expect(data.output_text).toBe("Hello there, friend");
    expect(data.id).toMatch(/^resp_/);
    expect(data.usage).toMatchObject({ input_tokens: 9, output_tokens: 4, total_tokens: 13 });
    const charged = cost(9, 4);
    expect((data as unknown as { credits_charged: number }).credits_charged).toBe(charged / CREDIT);
    expect(response.headers.get("x-credits-charged")).toBe(String(charged / CREDIT));
    expect(await balance(id)).toBe(1000 * CREDIT - charged);
    await ledgerMatches(id);
  });

  it("streamed: LiteLLM's data-only events (no event: lines, no sequence numbers, then [DONE]) reach the SDK whole, charged exactly", async () => {
    const { key, id } = await h.createKey({ credits: 1000 });
    const stream = await h.client(key).responses.create({ model: "qwen2.5-7b", input: "greet me", max_output_tokens: 16, stream: true });
    const types: string[] = [];
    let text = "";
    let final: { usage?: unknown; credits_charged?: number } | undefined;
    for await (const e of stream) {
      types.push(e.type);
      if (e.type === "response.output_text.delta") text += e.delta;
      if (e.type === "response.completed") final = { ...e.response, credits_charged: (e as unknown as { credits_charged: number }).credits_charged };
    }
    expect(text).toBe("Hello there, friend");
    expect(types[0]).toBe("response.created");
    expect(types.at(-1)).toBe("response.completed");
    const charged = cost(9, 4);
    expect(final).toMatchObject({ usage: { input_tokens: 9, output_tokens: 4 }, credits_charged: charged / CREDIT });
    expect(await balance(id)).toBe(1000 * CREDIT - charged);
    await ledgerMatches(id);
  });

  it("streamed: the raw stream ends at the final event and its credit comment; LiteLLM's [DONE] is not relayed", async () => {
    const { key } = await h.createKey({ credits: 1000 });
    const res = await h.post(key, "/v1/responses", { model: "qwen2.5-7b", input: "greet me", max_output_tokens: 16, stream: true });
    const text = await res.text();
    expect(text).not.toContain("[DONE]");
    expect(text).not.toContain("event: error");
    expect(text.trimEnd()).toMatch(/^: credits_charged=\S+ credits_remaining=\S+$/m);
  });

  for (const stream of [false, true]) {
    it(`vLLM's refusal in LiteLLM's frame (${stream ? "streamed" : "non-streamed"}): the SDK's BadRequestError, vLLM's words without the frame, nothing charged`, async () => {
      litellm.mode = "refused";
      const { key, id } = await h.createKey({ credits: 1000 });
      const err = await h.client(key).responses.create({ model: "qwen2.5-7b", input: "greet me", max_output_tokens: 16, stream }).then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(BadRequestError);
      expect((err as BadRequestError).message).toContain("'max_output_tokens' must be at least 1");
      expect((err as BadRequestError).message).not.toContain("litellm.");
      expect(await balance(id)).toBe(1000 * CREDIT);
      await ledgerMatches(id);
    });
  }

  it("LiteLLM's in-stream error body before any output: the SDK throws an APIError, nothing charged", async () => {
    litellm.mode = "error-before-output";
    const { key, id } = await h.createKey({ credits: 1000 });
    const stream = await h.client(key).responses.create({ model: "qwen2.5-7b", input: "greet me", max_output_tokens: 16, stream: true });
    const err = await (async () => {
      for await (const _ of stream);
    })().then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(APIError);
    expect(await balance(id)).toBe(1000 * CREDIT);
    await ledgerMatches(id);
  });

  it("a stream LiteLLM cuts after three deltas: the SDK throws an APIError, charged what was delivered", async () => {
    litellm.mode = "cut";
    const { key, id } = await h.createKey({ credits: 1000 });
    const stream = await h.client(key).responses.create({ model: "qwen2.5-7b", input: "greet me", max_output_tokens: 16, stream: true });
    let text = "";
    const err = await (async () => {
      for await (const e of stream) if (e.type === "response.output_text.delta") text += e.delta;
    })().then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(APIError);
    expect(text).toBe("Hello there, fr");
    const charged = 1000 * CREDIT - (await balance(id));
    // At least the request price and a token a delta, at most the request's bound of 16 tokens (and its prompt).
    expect(charged).toBeGreaterThanOrEqual(cost(0, 3));
    expect(charged).toBeLessThanOrEqual(cost(8192, 16));
    await ledgerMatches(id);
  });

  it("a client that leaves mid-stream: LiteLLM's request is aborted, the key charged what was delivered", async () => {
    const { key, id } = await h.createKey({ credits: 1000 });
    await leaveResponsesStreamAtFirstDelta(f, { key, id }, "qwen2.5-7b");
    const charged = 1000 * CREDIT - (await balance(id));
    expect(charged).toBeGreaterThanOrEqual(cost(0, 1));
    expect(charged).toBeLessThanOrEqual(cost(8192, 16));
    await ledgerMatches(id);
  });
});
