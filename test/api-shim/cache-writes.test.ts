// Prompt-cache writes (Anthropic's, through LiteLLM): counted in prompt_tokens, billed by the
// provider at 1.25x (5 minutes) or 2x (1 hour) the input price. The shim charges the surcharge
// from the usage's split, for streamed and non-streamed answers, and holds for it.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cacheWriteSurcharge, readCacheWrites } from "../../api-shim/src/money/cache-writes.ts";
import { CHAT_TEMPLATE_TOKENS, Pricer } from "../../api-shim/src/money/pricing.ts";
import { refuseProviderSurcharges } from "../../api-shim/src/providers/provider-surcharges.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";
import { chargedFor, type FakeLitellm, shimOnFakeLitellm, type UsageShape } from "../support/fake-litellm.ts";

const CREDIT = 1_000_000;
/** 1 credit per 1k tokens either way (1,000 µc a token), no request price: a charge reads as tokens. */
const FILE = {
  models: [{ name: "claude", provider: true, maxModelLen: 200_000, maxOutputTokens: 1000 }, { name: "qwen2.5-7b", maxModelLen: 8192 }],
  pricing: { request: 0, models: { claude: { promptPer1k: 1, completionPer1k: 1 }, "qwen2.5-7b": { promptPer1k: 1, completionPer1k: 1 } } },
};

/** LiteLLM's usage of an Anthropic answer (AnthropicConfig.calculate_usage): prompt_tokens = input + writes + reads. */
function litellmUsage(input: number, w5: number, w1: number, read = 0, completion = 5, split = true): Record<string, unknown> {
  const writes = w5 + w1;
  const prompt = input + writes + read;
  const details: Record<string, unknown> = { cached_tokens: read, text_tokens: input };
  if (split) Object.assign(details, { cache_creation_tokens: writes, cache_creation_token_details: { ephemeral_5m_input_tokens: w5, ephemeral_1h_input_tokens: w1 } });
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion, prompt_tokens_details: details, cache_creation_input_tokens: writes, cache_read_input_tokens: read };
}

describe("cache writes through LiteLLM", () => {
  let h: Harness;
  let upstream: FakeLitellm;
  let close: () => Promise<void>;
  beforeAll(async () => {
    ({ h, upstream, close } = await shimOnFakeLitellm(FILE));
  });
  afterAll(() => close());

  // Long enough that the prompt's bound (its bytes) covers the 1,010 prompt tokens reported.
  const prefix = "long prefix ".repeat(200);
  const ttl1h = [{ role: "user", content: [{ type: "text", text: prefix, cache_control: { type: "ephemeral", ttl: "1h" } }] }];
  const ttl5m = [{ role: "user", content: [{ type: "text", text: prefix, cache_control: { type: "ephemeral" } }] }];
  const plain = [{ role: "user", content: prefix }];

  const charged = (shape: UsageShape, messages: unknown[], model = "claude") => chargedFor(h, shape, model, messages);

  // The review's case (provider-billing.test.ts): 100,000 tokens written for an hour, 10 not.
  it("charges a 1-hour cache write at least what Anthropic bills for it (2x the input price)", async () => {
    upstream.usage = litellmUsage(10, 0, 100_000, 0, 1);
    const { key } = await h.createKey({ credits: 1000 });
    const messages = [{ role: "user", content: [{ type: "text", text: "word ".repeat(100_000), cache_control: { type: "ephemeral", ttl: "1h" } }] }];
    const res = await h.post(key, "/v1/chat/completions", { model: "claude", messages, max_tokens: 1 });
    expect(res.status).toBe(200);
    expect(Number(res.headers.get("x-credits-charged"))).toBe(200.011);
  });

  // 1,010 prompt tokens (10 plain), 5 completion tokens: 1.015 credits without a surcharge.
  const cases: { name: string; usage: () => Record<string, unknown>; messages: unknown[]; credits: number }[] = [
    { name: "1-hour writes (+1x each)", usage: () => litellmUsage(10, 0, 1000), messages: ttl1h, credits: 2.015 },
    { name: "5-minute writes (+0.25x each)", usage: () => litellmUsage(10, 1000, 0), messages: ttl5m, credits: 1.265 },
    { name: "mixed writes", usage: () => litellmUsage(10, 400, 600), messages: ttl1h, credits: 1.715 },
    { name: "no writes, reads only (charged at the prompt price)", usage: () => litellmUsage(10, 0, 0, 1000), messages: ttl1h, credits: 1.015 },
    { name: "a total without the split, a request asking for 1h (the 1h rate)", usage: () => litellmUsage(10, 0, 1000, 0, 5, false), messages: ttl1h, credits: 2.015 },
    { name: "a total without the split, a request asking for 5m only (the 5m rate)", usage: () => litellmUsage(10, 1000, 0, 0, 5, false), messages: ttl5m, credits: 1.265 },
  ];
  for (const shape of ["json", "usage-only", "litellm"] as const) {
    for (const c of cases) {
      it(`${shape}: ${c.name}`, async () => {
        upstream.usage = c.usage();
        // prompt_tokens is reported as the upstream gave it; only the cost carries the surcharge.
        expect(await charged(shape, c.messages)).toEqual({ credits: c.credits, promptTokens: 1010 });
      });
    }
    it(`${shape}: a vLLM answer (no cache members) is charged as before`, async () => {
      upstream.usage = { prompt_tokens: 1010, completion_tokens: 5, total_tokens: 1015, prompt_tokens_details: null };
      expect(await charged(shape, plain, "qwen2.5-7b")).toEqual({ credits: 1.015, promptTokens: 1010 });
      expect(await charged(shape, ttl1h, "qwen2.5-7b")).toEqual({ credits: 1.015, promptTokens: 1010 });
    });
  }

  describe("the hold covers writing the whole prompt", () => {
    const body = (messages: unknown[], model = "claude") => ({ model, messages, max_tokens: 5 });
    /** The prompt's bound for this body: its bytes and the chat template's tokens (ASCII: no normalization growth). */
    const bound = (messages: unknown[], model = "claude") => Buffer.byteLength(JSON.stringify(body(messages, model))) + CHAT_TEMPLATE_TOKENS;
    const required = async (messages: unknown[], model = "claude") => {
      const { key } = await h.createKey({ credits: 0.000001 });
      const res = await h.post(key, "/v1/chat/completions", body(messages, model));
      expect(res.status).toBe(402);
      return Math.round(((await res.json()) as { credits_required: number }).credits_required * CREDIT);
    };

    it("2x the prompt's bound with a 1-hour cache_control, 1.25x with a 5-minute one, 1x without", async () => {
      expect(await required(ttl1h)).toBe(bound(ttl1h) * 2000 + 5000);
      expect(await required(ttl5m)).toBe(bound(ttl5m) * 1250 + 5000);
      expect(await required(plain)).toBe(bound(plain) * 1000 + 5000);
      // On a tool, and on a tool's function (where LiteLLM reads it too).
      const tool = { type: "function", function: { name: "f", parameters: {} }, cache_control: { type: "ephemeral", ttl: "1h" } };
      expect(refuseProviderSurcharges({ messages: plain, tools: [tool] })).toBe("1h");
      expect(refuseProviderSurcharges({ messages: plain, tools: [{ type: "function", function: { name: "f", cache_control: { type: "ephemeral" } } }] })).toBe("5m");
      expect(refuseProviderSurcharges({ messages: [{ role: "system", content: "s", cache_control: { type: "ephemeral" } }, ...ttl1h] })).toBe("1h");
      expect(refuseProviderSurcharges({ messages: plain })).toBe(null);
      // A model vLLM serves ignores cache_control: nothing more is held.
      expect(await required(ttl1h, "qwen2.5-7b")).toBe(bound(ttl1h, "qwen2.5-7b") * 1000 + 5000);
    });

    it("a key with exactly the hold is admitted and charged a whole prompt written for an hour; one with 1 µc less is refused up front", async () => {
      const hold = await required(ttl1h);
      const pb = bound(ttl1h);
      upstream.usage = litellmUsage(0, 0, pb);
      const before = upstream.received;
      const poor = await h.createKey({ credits: (hold - 1) / CREDIT });
      const refused = await h.post(poor.key, "/v1/chat/completions", body(ttl1h));
      expect(refused.status).toBe(402);
      expect(upstream.received).toBe(before);
      const exact = await h.createKey({ credits: hold / CREDIT });
      const res = await h.post(exact.key, "/v1/chat/completions", body(ttl1h));
      expect(res.status).toBe(200);
      expect(Math.round(Number(res.headers.get("x-credits-charged")) * CREDIT)).toBe(hold);
      expect(await h.store.getKey(exact.id)).toMatchObject({ balance: 0, held: 0 });
      const metrics = await (await fetch(`${h.url}/metrics`)).text();
      expect(metrics).not.toMatch(/^shim_charges_capped_total\{model="claude"\} [1-9]/m);
    });
  });

  // Found by review: LiteLLM copies a tool call's cache_control onto Anthropic's tool_use block
  // (convert_to_anthropic_tool_invoke), which the shim did not look at.
  describe("a cache_control on an assistant turn's tool call", () => {
    const toolCall = (ttl: string) => [
      { role: "user", content: prefix },
      { role: "assistant", content: null, tool_calls: [{ id: "t1", type: "function", function: { name: "f", arguments: "{}" }, cache_control: { type: "ephemeral", ttl } }] },
      { role: "tool", tool_call_id: "t1", content: "result" },
    ];
    const tools = [{ type: "function", function: { name: "f", parameters: { type: "object" } } }];

    it("asks for its lifetime: writes reported as a total are charged the hour's rate, and held for", async () => {
      expect(refuseProviderSurcharges({ messages: toolCall("1h") })).toBe("1h");
      upstream.usage = litellmUsage(10, 0, 1000, 0, 5, false);
      const { id, key } = await h.createKey({ credits: 1000 });
      const res = await h.post(key, "/v1/chat/completions", { model: "claude", messages: toolCall("1h"), tools, max_tokens: 5 });
      expect(res.status).toBe(200);
      // 1,010 prompt + 5 completion + 1,000 one-hour writes at +1x.
      expect(Number(res.headers.get("x-credits-charged"))).toBe(2.015);
      expect((await h.store.getKey(id))!.balance).toBe(1000 * CREDIT - 2_015_000);
      // The hold has the hour's room, as for the same lifetime on a message (a little more: the
      // chat template prints a tool call's JSON again, its cache_control too).
      const onMessage = toolCall("1h") as Record<string, unknown>[];
      delete (onMessage[1]!.tool_calls as Record<string, unknown>[])[0]!.cache_control;
      onMessage[0]!.cache_control = { type: "ephemeral", ttl: "1h" };
      const needs = async (messages: unknown[]) => {
        const poor = await h.createKey({ credits: 0.000001 });
        const r = await h.post(poor.key, "/v1/chat/completions", { model: "claude", messages, tools, max_tokens: 5 });
        expect(r.status).toBe(402);
        return ((await r.json()) as { credits_required: number }).credits_required;
      };
      expect(await needs(toolCall("1h"))).toBeGreaterThanOrEqual(await needs(onMessage));
    });

    it("with a lifetime other than Anthropic's two is refused, as on a message", async () => {
      const { key } = await h.createKey({ credits: 1000 });
      const before = upstream.received;
      const res = await h.post(key, "/v1/chat/completions", { model: "claude", messages: toolCall("24h"), tools, max_tokens: 5 });
      expect([res.status, ((await res.json()) as { error: { param: string } }).error.param]).toEqual([400, "messages"]);
      expect(upstream.received).toBe(before);
    });
  });
});

describe("an embeddings request's cache_control, with no model list (a shim in front of any OpenAI-compatible server)", () => {
  it("widens no hold: embeddings cache nothing", async () => {
    const h = await startShim({ file: { pricing: { request: 0, models: { "bge-m3": { promptPer1k: 1, completionPer1k: 0 } } } } });
    try {
      const { key } = await h.createKey({ credits: 0.000001 });
      const plainBody = { model: "bge-m3", input: "hello world" };
      const marked = { ...plainBody, cache_control: { type: "ephemeral", ttl: "1h" } };
      const required = async (b: object) => ((await (await h.post(key, "/v1/embeddings", b)).json()) as { credits_required: number }).credits_required;
      // A token per byte of body at most: the marked body's bytes, not twice them.
      expect(await required(marked)).toBe(Buffer.byteLength(JSON.stringify(marked)) / 1000);
      expect(await required(marked)).toBeGreaterThan(await required(plainBody));
    } finally {
      await h.close();
    }
  });
});

describe("cache-write arithmetic", () => {
  it("reads the split, the total, and nothing from a vLLM usage", () => {
    expect(readCacheWrites({ prompt_tokens: 5, completion_tokens: 1 })).toBeUndefined();
    expect(readCacheWrites({ prompt_tokens: 5, prompt_tokens_details: null })).toBeUndefined();
    expect(readCacheWrites({ prompt_tokens: 5, prompt_tokens_details: { cached_tokens: 3 } })).toBeUndefined();
    expect(readCacheWrites(litellmUsage(1, 2, 3))).toEqual({ fiveMinute: 2, oneHour: 3, unsplit: 0 });
    expect(readCacheWrites(litellmUsage(1, 2, 3, 0, 5, false))).toEqual({ fiveMinute: 0, oneHour: 0, unsplit: 5 });
    expect(readCacheWrites({ prompt_tokens_details: { cache_creation_tokens: 7 } })).toEqual({ fiveMinute: 0, oneHour: 0, unsplit: 7 });
    expect(readCacheWrites({ cache_creation_input_tokens: 0, prompt_tokens_details: { cache_creation_token_details: { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 0 } } })).toBeUndefined();
  });

  it("charges exact µc, rounded up, never for more writes than prompt tokens", () => {
    // 1 µc per 1k tokens: 4,000 5-minute writes are 1 µc, one more is 2.
    expect(cacheWriteSurcharge({ fiveMinute: 4000, oneHour: 0, unsplit: 0 }, 10_000, 1, null)).toBe(1);
    expect(cacheWriteSurcharge({ fiveMinute: 4001, oneHour: 0, unsplit: 0 }, 10_000, 1, null)).toBe(2);
    expect(cacheWriteSurcharge({ fiveMinute: 0, oneHour: 3000, unsplit: 0 }, 10_000, 1, null)).toBe(3);
    expect(cacheWriteSurcharge({ fiveMinute: 0, oneHour: 0, unsplit: 1000 }, 10_000, 1000, "1h")).toBe(1000);
    expect(cacheWriteSurcharge({ fiveMinute: 0, oneHour: 0, unsplit: 1000 }, 10_000, 1000, "5m")).toBe(250);
    expect(cacheWriteSurcharge({ fiveMinute: 0, oneHour: 5000, unsplit: 0 }, 1000, 1000, "1h")).toBe(1000);
    expect(cacheWriteSurcharge({ fiveMinute: 0, oneHour: 5000, unsplit: 0 }, 0, 1000, "1h")).toBe(0);
  });

  it("a charge for writes the request did not ask for is capped at its hold", () => {
    const pricing = { request: 0, batchRequest: 0, models: new Map([["m", { promptPer1k: 1000, completionPer1k: 1000 }]]) };
    const pricer = new Pricer(pricing, null);
    const usage = { promptTokens: 100, completionTokens: 0, cacheWrites: { fiveMinute: 0, oneHour: 100, unsplit: 0 } };
    expect(pricer.cost("m", false, usage, 1_000_000)).toEqual({ cost: 200, capped: false });
    expect(pricer.cost("m", false, usage, 150)).toEqual({ cost: 150, capped: true });
  });
});

// Pinned by a mutation review of the cache prices (each fails under its mutant; the code was right).
const splitPricer = new Pricer({ request: 0, batchRequest: 0, models: new Map([["m", { promptPer1k: 1_000_000, completionPer1k: 0 }]]) }, null);

describe("cache writes: a usage with only the split (no cache_creation total)", () => {
  const usage = { prompt_tokens: 1010, completion_tokens: 0, prompt_tokens_details: { cache_creation_token_details: { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 1000 } } };
  it("reads no unsplit writes and charges the hour's surcharge once (2x for 1,000 tokens)", () => {
    expect(readCacheWrites(usage)).toEqual({ fiveMinute: 0, oneHour: 1000, unsplit: 0 });
    const u = { promptTokens: 1010, completionTokens: 0, cacheWrites: readCacheWrites(usage) };
    // 1,010 × 1,000 µc + 1,000 × 1,000 µc surcharge.
    expect(splitPricer.cost("m", false, u, 10 ** 12, "1h")).toEqual({ cost: 2_010_000, capped: false });
  });
});

describe("cache writes reported as a total for a request without cache_control", () => {
  it("are charged the 5-minute rate (+0.25x), not the hour's", () => {
    expect(cacheWriteSurcharge({ fiveMinute: 0, oneHour: 0, unsplit: 1000 }, 10_000, 1000, null)).toBe(250);
    const u = { promptTokens: 1010, completionTokens: 0, cacheWrites: { fiveMinute: 0, oneHour: 0, unsplit: 1000 } };
    expect(splitPricer.cost("m", false, u, 10 ** 12, null)).toEqual({ cost: 1_260_000, capped: false });
  });
});
