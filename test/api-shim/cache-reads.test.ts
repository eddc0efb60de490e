// Prompt-cache reads: counted in prompt_tokens by LiteLLM (Anthropic, OpenAI, Gemini, DeepSeek) and
// by vLLM, reported in prompt_tokens_details.cached_tokens (and Anthropic's cache_read_input_tokens,
// the same tokens). A model's optional cachedPromptPer1k prices them; without it they are charged
// the prompt price, as before. The hold stays at the prompt price; the usage rows keep prompt_tokens.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readCachedTokens } from "../../api-shim/src/money/cache-reads.ts";
import { CHAT_TEMPLATE_TOKENS, Pricer } from "../../api-shim/src/money/pricing.ts";
import { DEFAULT_FAKE, startShim, type Harness } from "../support/shim-harness.ts";
import { chargedFor, type FakeLitellm, shimOnFakeLitellm, type UsageShape } from "../support/fake-litellm.ts";

const CREDIT = 1_000_000;
/**
 * 1 credit per 1k prompt and completion tokens (1,000 µc a token), no request price. Cached prompt
 * tokens: 0.1 credits per 1k for claude (Anthropic's 0.1x), 0.5 for gpt (OpenAI's 0.5x), none set
 * for full (the prompt price, as before).
 */
const FILE = {
  models: [
    { name: "claude", provider: true, maxModelLen: 200_000, maxOutputTokens: 1000 },
    { name: "gpt", provider: true, maxModelLen: 200_000, maxOutputTokens: 1000 },
    { name: "full", provider: true, maxModelLen: 200_000, maxOutputTokens: 1000 },
  ],
  pricing: {
    request: 0,
    models: {
      claude: { promptPer1k: 1, completionPer1k: 1, cachedPromptPer1k: 0.1 },
      gpt: { promptPer1k: 1, completionPer1k: 1, cachedPromptPer1k: 0.5 },
      full: { promptPer1k: 1, completionPer1k: 1 },
    },
  },
};

/** LiteLLM's usage of an Anthropic answer (AnthropicConfig.calculate_usage): prompt_tokens = input + writes + reads; cached_tokens is cache_read_input_tokens. */
function anthropicUsage(input: number, w5: number, read: number, completion = 5): Record<string, unknown> {
  const prompt = input + w5 + read;
  const details = { cached_tokens: read, text_tokens: input, cache_creation_tokens: w5, cache_creation_token_details: { ephemeral_5m_input_tokens: w5, ephemeral_1h_input_tokens: 0 } };
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion, prompt_tokens_details: details, cache_creation_input_tokens: w5, cache_read_input_tokens: read };
}

/** OpenAI's (and Gemini's, DeepSeek's through LiteLLM) usage: the cached tokens in prompt_tokens_details only. */
function openaiUsage(prompt: number, cached: unknown, completion = 5): Record<string, unknown> {
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion, prompt_tokens_details: { cached_tokens: cached, audio_tokens: 0 } };
}

describe("cache reads through LiteLLM", () => {
  let h: Harness;
  let upstream: FakeLitellm;
  let close: () => Promise<void>;
  beforeAll(async () => {
    ({ h, upstream, close } = await shimOnFakeLitellm(FILE));
  });
  afterAll(() => close());

  // Long enough that the prompt's bound (its bytes) covers the 2,010 prompt tokens reported.
  const messages = [{ role: "user", content: [{ type: "text", text: "long prefix ".repeat(400), cache_control: { type: "ephemeral" } }] }];

  const charged = (shape: UsageShape, model: string) => chargedFor(h, shape, model, messages);

  // 1,010 prompt tokens (1,000 of them read from the cache), 5 completion tokens.
  const cases: { name: string; model: string; usage: () => Record<string, unknown>; credits: number; promptTokens?: number }[] = [
    // 10 × 1,000 + 1,000 × 100 + 5 × 1,000 µc: cache_read_input_tokens and cached_tokens are the same tokens, counted once.
    { name: "Anthropic's reads at cachedPromptPer1k (0.1x), counted once", model: "claude", usage: () => anthropicUsage(10, 0, 1000), credits: 0.115 },
    // (2,010 − 1,000) × 1,000 + 1,000 × 100 + 5,000, and the 5-minute writes' surcharge as before (1,000 × 250).
    { name: "Anthropic's reads and writes: the write surcharge unchanged", model: "claude", usage: () => anthropicUsage(10, 1000, 1000), credits: 1.365, promptTokens: 2010 },
    { name: "OpenAI's cached_tokens at cachedPromptPer1k (0.5x)", model: "gpt", usage: () => openaiUsage(1010, 1000), credits: 0.515 },
    { name: "a model without cachedPromptPer1k: reads at the prompt price, as before", model: "full", usage: () => anthropicUsage(10, 0, 1000), credits: 1.015 },
    { name: "more cached tokens than prompt tokens: no more than the prompt's", model: "gpt", usage: () => openaiUsage(1010, 5000), credits: 0.51 },
    { name: "no cache reads", model: "claude", usage: () => openaiUsage(1010, 0), credits: 1.015 },
    ...([null, "1000", -1000, 1.5, { n: 1000 }] as unknown[]).map((cached) => (
      { name: `cached_tokens ${JSON.stringify(cached)}: none read`, model: "gpt", usage: () => openaiUsage(1010, cached), credits: 1.015 })),
    { name: "prompt_tokens_details null (vLLM without --enable-prompt-tokens-details)", model: "claude", usage: () => ({ prompt_tokens: 1010, completion_tokens: 5, total_tokens: 1015, prompt_tokens_details: null }), credits: 1.015 },
  ];
  for (const shape of ["json", "usage-only", "litellm"] as const) {
    for (const c of cases) {
      it(`${shape}: ${c.name}`, async () => {
        upstream.usage = c.usage();
        // prompt_tokens is kept as the upstream reported it; only the cost is lower.
        expect(await charged(shape, c.model)).toEqual({ credits: c.credits, promptTokens: c.promptTokens ?? 1010 });
      });
    }
  }

  it("holds the full prompt price: a cachedPromptPer1k lowers no hold", async () => {
    const required = async (model: string) => {
      const { key } = await h.createKey({ credits: 0.000001 });
      const res = await h.post(key, "/v1/chat/completions", { model, messages, max_tokens: 5 });
      expect(res.status).toBe(402);
      return ((await res.json()) as { credits_required: number }).credits_required;
    };
    // The prompt's bound (its bytes and the chat template's tokens) at the prompt price, 1.25x for
    // the 5-minute cache_control, and the 5 completion tokens: as for a model without the price.
    for (const model of ["claude", "full"]) {
      const bound = Buffer.byteLength(JSON.stringify({ model, messages, max_tokens: 5 })) + CHAT_TEMPLATE_TOKENS;
      expect(Math.round((await required(model)) * CREDIT), model).toBe(bound * 1250 + 5000);
    }
  });
});

describe("cache reads from vLLM (started with --enable-prompt-tokens-details)", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startShim({
      file: {
        models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }, { name: "bge-m3", maxModelLen: 8192 }],
        pricing: { request: 0, models: { "qwen2.5-7b": { promptPer1k: 1, completionPer1k: 2, cachedPromptPer1k: 0.25 }, "bge-m3": { promptPer1k: 1, completionPer1k: 0 } } },
      },
      fake: DEFAULT_FAKE,
    });
  });
  afterAll(() => h.close());

  const bodies = {
    chat: { model: "qwen2.5-7b", messages: [{ role: "user", content: "one two three four five six seven eight nine ten" }], max_tokens: 4 },
    completions: { model: "qwen2.5-7b", prompt: "one two three four five six seven eight nine ten", max_tokens: 4 },
  };
  for (const route of ["chat", "completions"] as const) {
    for (const stream of [false, true]) {
      it(`${route}${stream ? ", streamed" : ""}: the cached prompt tokens at cachedPromptPer1k, the rest at promptPer1k`, async () => {
        h.fake.behaviour.cachedTokens = 8;
        const { id, key } = await h.createKey({ credits: 1000 });
        const path = route === "chat" ? "/v1/chat/completions" : "/v1/completions";
        const res = await h.post(key, path, { ...bodies[route], ...(stream ? { stream: true } : {}) });
        expect(res.status).toBe(200);
        const text = await res.text();
        const credits = stream ? Number(/^: credits_charged=(\S+) /m.exec(text)![1]) : Number(res.headers.get("x-credits-charged"));
        const u = h.fake.usages.at(-1)!;
        expect(u.prompt_tokens).toBeGreaterThan(8);
        // (prompt − 8) × 1,000 + 8 × 250 + completion × 2,000 µc.
        const expected = (u.prompt_tokens - 8) * 1000 + 8 * 250 + u.completion_tokens * 2000;
        expect(Math.round(credits * CREDIT)).toBe(expected);
        expect((await h.store.getKey(id))!.balance).toBe(1000 * CREDIT - expected);
        // The usage report keeps the upstream's prompt tokens.
        // From 2000, not the default current month: a month turning after the request would report none of it.
        const report = (await (await fetch(`${h.url}/v1/usage?from=2000-01-01`, { headers: { authorization: `Bearer ${key}` } })).json()) as { usage: { total_tokens: number } };
        expect(report.usage.total_tokens).toBe(u.prompt_tokens + u.completion_tokens);
      });
    }
  }

  it("without cached tokens reported, charges every prompt token the prompt price (as before)", async () => {
    h.fake.behaviour.cachedTokens = null;
    const { key } = await h.createKey({ credits: 1000 });
    const res = await h.post(key, "/v1/chat/completions", bodies.chat);
    const u = h.fake.usages.at(-1)!;
    expect(Math.round(Number(res.headers.get("x-credits-charged")) * CREDIT)).toBe(u.prompt_tokens * 1000 + u.completion_tokens * 2000);
  });
});

describe("cache-read arithmetic", () => {
  it("reads cached_tokens or cache_read_input_tokens (the same tokens, once), and nothing that is not a count", () => {
    expect(readCachedTokens({ prompt_tokens: 5 })).toBe(0);
    expect(readCachedTokens({ prompt_tokens: 5, prompt_tokens_details: null })).toBe(0);
    expect(readCachedTokens({ prompt_tokens: 5, prompt_tokens_details: { cached_tokens: 3 } })).toBe(3);
    expect(readCachedTokens({ cache_read_input_tokens: 3, prompt_tokens_details: { cached_tokens: 3 } })).toBe(3);
    expect(readCachedTokens({ cache_read_input_tokens: 3 })).toBe(3);
    for (const bad of [null, -1, 1.5, "3", true, {}, Number.NaN, 2 ** 53]) {
      expect(readCachedTokens({ prompt_tokens_details: { cached_tokens: bad } }), String(bad)).toBe(0);
      expect(readCachedTokens({ cache_read_input_tokens: bad }), String(bad)).toBe(0);
    }
    expect(readCachedTokens({ prompt_tokens_details: "x" })).toBe(0);
  });

  const pricer = (cachedPromptPer1k?: number) =>
    new Pricer({ request: 0, batchRequest: 0, models: new Map([["m", { promptPer1k: 1, completionPer1k: 0, ...(cachedPromptPer1k === undefined ? {} : { cachedPromptPer1k }) }]]) }, null);

  it("without cachedPromptPer1k charges exactly what it did: one rounding over the whole prompt", () => {
    // 1 µc per 1k tokens: 1,000 prompt tokens are 1 µc, 500 of them cached or not.
    expect(pricer().cost("m", false, { promptTokens: 1000, completionTokens: 0, cachedTokens: 500 }, 1e9)).toEqual({ cost: 1, capped: false });
    expect(pricer(1).cost("m", false, { promptTokens: 1000, completionTokens: 0, cachedTokens: 500 }, 1e9)).toEqual({ cost: 1, capped: false });
    expect(pricer().cost("m", false, { promptTokens: 1001, completionTokens: 0 }, 1e9)).toEqual({ cost: 2, capped: false });
  });

  it("rounds the prompt's charge up once, in exact µc, and counts no more cached tokens than prompt tokens", () => {
    const p = new Pricer({ request: 0, batchRequest: 0, models: new Map([["m", { promptPer1k: 1000, completionPer1k: 0, cachedPromptPer1k: 1 }]]) }, null);
    // 1 uncached token (1 µc) + 999 cached at 1 µc per 1k (0.999 µc): 2 µc.
    expect(p.cost("m", false, { promptTokens: 1000, completionTokens: 0, cachedTokens: 999 }, 1e9)).toEqual({ cost: 2, capped: false });
    expect(p.cost("m", false, { promptTokens: 1000, completionTokens: 0, cachedTokens: 5000 }, 1e9)).toEqual({ cost: 1, capped: false });
    expect(p.cost("m", false, { promptTokens: 1000, completionTokens: 0, cachedTokens: 0 }, 1e9)).toEqual({ cost: 1000, capped: false });
    expect(p.cost("m", false, { promptTokens: 0, completionTokens: 0, cachedTokens: 10 }, 1e9)).toEqual({ cost: 0, capped: false });
  });
});
