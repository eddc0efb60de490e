import { parse } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { validateConfig } from "../../infra/config.ts";
import { renderBundle } from "../../infra/render/bundle.ts";
import { Secret } from "../../infra/secret.ts";
import { parseShimConfig } from "../../api-shim/src/config.ts";
import { CHAT_TEMPLATE_TOKENS, DEFAULT_MAX_COMPLETION_TOKENS, Pricer, TokenEstimate } from "../../api-shim/src/money/pricing.ts";
import { DEFAULT_FAKE, startShim, type Harness } from "../support/shim-harness.ts";
import { IMAGE_TOKENS } from "../support/fake-vllm.ts";

/** The shim config a stack renders with a gemini provider priced 1 credit per 1k tokens (prompt and completion), `provider` its extra settings. */
function rendered(provider: Record<string, unknown> = {}): Record<string, unknown> {
  const result = validateConfig({
    region: "us-ord", model: { id: "Qwen/Qwen2.5-7B-Instruct", servedName: "qwen2.5-7b" },
    providers: [{ name: "gemini-pro", model: "gemini/gemini-2.5-pro", apiKey: Secret.of("AIza-test"), ...provider }],
    pricing: { models: { "gemini-pro": { promptPer1k: 1, completionPer1k: 1 }, "qwen2.5-7b": { promptPer1k: 1, completionPer1k: 1 } } },
  }, { stack: "acme" });
  if (!result.ok) throw new Error(JSON.stringify(result.problems));
  return parse(renderBundle(result.config, { images: result.config.images, bootstrapKeys: [] }).get("shim/config.yaml")!) as Record<string, unknown>;
}

/** The shim's Pricer for a rendered config, as app.ts builds it. */
function pricerOf(file: Record<string, unknown>): Pricer {
  const config = parseShimConfig({ SHIM_UPSTREAM_URL: "http://litellm:4000/v1", SHIM_CONFIG: "/app/config.yaml" }, () => JSON.stringify(file));
  return new Pricer(config.pricing, config.models);
}

describe("the hold of a prompt its bytes do not bound (media parts, a request's own chat template)", () => {
  const price = { promptPer1k: 1_000_000, completionPer1k: 0 }; // 1,000 µc a prompt token
  const pricer = new Pricer(
    { request: 0, batchRequest: 0, models: new Map([["provider", price], ["served", price]]) },
    new Map([
      ["provider", { name: "provider", maxModelLen: null, continuousUsage: false, tokenPrompts: false }],
      ["served", { name: "served", maxModelLen: 100_000, continuousUsage: false, tokenPrompts: true }],
    ]),
  );
  const chat = { batch: false, bodyBytes: 1000, templated: true, maxTokens: 1, prompts: 1, outputs: 1 };

  it("holds a context's worth per part when the context is not known: three images, three allowances", () => {
    expect(pricer.hold({ ...chat, model: "provider", unboundedParts: 0 })).toBe((1000 + CHAT_TEMPLATE_TOKENS) * 1000);
    expect(pricer.hold({ ...chat, model: "provider", unboundedParts: 1 })).toBe((1000 + CHAT_TEMPLATE_TOKENS + DEFAULT_MAX_COMPLETION_TOKENS) * 1000);
    expect(pricer.hold({ ...chat, model: "provider", unboundedParts: 3 })).toBe((1000 + CHAT_TEMPLATE_TOKENS + 3 * DEFAULT_MAX_COMPLETION_TOKENS) * 1000);
  });

  it("holds the whole context, once, when the context is known", () => {
    expect(pricer.hold({ ...chat, model: "served", unboundedParts: 1 })).toBe(100_000 * 1000);
    expect(pricer.hold({ ...chat, model: "served", unboundedParts: 3000 })).toBe(100_000 * 1000);
  });

  it("holds the model's context per part for embeddings, whose context does not bound a prompt", () => {
    const embeddings = { ...chat, outputs: 0, maxTokens: undefined, promptMayExceedContext: true };
    expect(pricer.hold({ ...embeddings, model: "served", unboundedParts: 3 })).toBe((1000 + CHAT_TEMPLATE_TOKENS + 3 * 100_000) * 1000);
    expect(pricer.hold({ ...embeddings, model: "provider", unboundedParts: 2 })).toBe((1000 + CHAT_TEMPLATE_TOKENS + 2 * DEFAULT_MAX_COMPLETION_TOKENS) * 1000);
  });

  // Found by review: Pricer.promptBound (2cc3ea8) added normalization's growth here, which the hold before it did not.
  it("adds no normalization growth for embeddings with a part held at the model's context, as before promptBound", () => {
    const embeddings = { ...chat, outputs: 0, maxTokens: undefined, promptMayExceedContext: true, normalizationGrowth: () => 30_000 };
    expect(pricer.hold({ ...embeddings, model: "served", unboundedParts: 1 })).toBe((1000 + CHAT_TEMPLATE_TOKENS + 100_000) * 1000);
    expect(pricer.hold({ ...embeddings, model: "served", unboundedParts: 0 })).toBe((1000 + CHAT_TEMPLATE_TOKENS + 30_000) * 1000);
    expect(pricer.hold({ ...embeddings, model: "provider", unboundedParts: 1 })).toBe((1000 + CHAT_TEMPLATE_TOKENS + 30_000 + DEFAULT_MAX_COMPLETION_TOKENS) * 1000);
  });
});

describe("a provider's context (providers[].maxModelLen), as the stack renders it", () => {
  it("bounds a completion without max_tokens by the smaller of the context and maxOutputTokens, on /v1/completions too (vLLM's default of 16 is not a provider's)", () => {
    const bound = (file: Record<string, unknown>, model: string, route: "chat" | "completions") =>
      pricerOf(file).outputBound(route === "chat" ? { model, maxTokens: undefined } : { model, maxTokens: 16, defaultMaxTokens: true });
    const withContext = rendered({ maxModelLen: 1_048_576 });
    const withBoth = rendered({ maxModelLen: 1_048_576, maxOutputTokens: 65_536 });
    expect(bound(withContext, "gemini-pro", "chat")).toBe(1_048_576);
    expect(bound(withContext, "gemini-pro", "completions")).toBe(1_048_576);
    expect(bound(withBoth, "gemini-pro", "chat")).toBe(65_536);
    expect(bound(withBoth, "gemini-pro", "completions")).toBe(65_536);
    // Without a context: as before.
    expect(bound(rendered(), "gemini-pro", "completions")).toBe(DEFAULT_MAX_COMPLETION_TOKENS);
    // The model vLLM serves keeps vLLM's default.
    expect(bound(withBoth, "qwen2.5-7b", "completions")).toBe(16);
  });
});

const fake = { ...DEFAULT_FAKE, models: [...DEFAULT_FAKE.models!, { name: "gemini-pro" }] };
const images = (n: number) => Array.from({ length: n }, (_, i) => ({ type: "image_url", image_url: { url: `https://x.test/${i}.png` } }));
/** A chat of `n` image parts to gemini-pro, max_tokens 1: its status, body, and the price of the usage it reports. */
async function askImages(h: Harness, key: string, n: number) {
  const res = await h.post(key, "/v1/chat/completions", { model: "gemini-pro", messages: [{ role: "user", content: images(n) }], max_tokens: 1 });
  const body = (await res.json()) as { usage: { prompt_tokens: number; completion_tokens: number }; credits_charged: number; error?: { message: string } };
  return { status: res.status, body, price: res.ok ? 1 + (body.usage.prompt_tokens + body.usage.completion_tokens) / 1000 : NaN };
}

describe("a provider's media prompt, its context not known (as the stack renders a provider without maxModelLen)", () => {
  let h: Harness;
  beforeAll(async () => (h = await startShim({ file: rendered(), fake })));
  afterAll(() => h.close());

  it("is charged its usage: 40 images (48,000 tokens) hold 32,768 tokens each, not one allowance for all", async () => {
    const { key } = await h.createKey({ credits: 2000, tier: "developer" });
    const { status, body, price } = await askImages(h, key, 40);
    expect(status).toBe(200);
    expect(body.usage.prompt_tokens).toBeGreaterThanOrEqual(40 * IMAGE_TOKENS);
    expect(body.credits_charged).toBe(price);
  });
});

describe("a provider's media prompt with providers[].maxModelLen", () => {
  let h: Harness;
  beforeAll(async () => (h = await startShim({ file: rendered({ maxModelLen: 1_048_576 }), fake })));
  afterAll(() => h.close());

  it("holds the whole context, as the model vLLM serves does, and is charged its usage", async () => {
    const poor = await h.createKey({ credits: 1000, tier: "developer" });
    const refused = await askImages(h, poor.key, 40);
    expect(refused.status).toBe(402);
    // The request price, 1,048,576 prompt tokens and 1 completion token at 1 credit per 1k.
    expect(refused.body.error!.message).toBe("Insufficient credits. Required: 1049.577, Available: 1000");
    const { key } = await h.createKey({ credits: 2000, tier: "developer" });
    const { status, body, price } = await askImages(h, key, 40);
    expect(status).toBe(200);
    expect(body.credits_charged).toBe(price);
  });
});

describe("the token estimate of a prompt or of generated text (JSON text)", () => {
  const estimate = (json: string) => {
    const e = new TokenEstimate();
    e.add(json);
    return e.tokens;
  };
  it("counts each ASCII digit and each non-ASCII code point as a token, the other bytes four to a token", () => {
    expect(estimate("")).toBe(0);
    expect(estimate("abcd")).toBe(1);
    expect(estimate("abcde")).toBe(2);
    // Qwen's tokenizer splits digits one by one: "1 1 1 1" is at least four tokens, not two.
    expect(estimate("1 1 1 1")).toBe(4 + 1);
    expect(estimate("0123456789")).toBe(10);
    expect(estimate("你好世界")).toBe(4);
    expect(estimate("😀😀")).toBe(2); // a code point, not its two UTF-16 units or four bytes
    expect(estimate("é!")).toBe(1 + 1);
  });
  it("reads JSON escapes as the characters they stand for", () => {
    expect(estimate(JSON.stringify("a\"b\\c\nd"))).toBe(Math.ceil(('"' + 'a"b\\c\nd' + '"').length / 4));
    // LiteLLM writes JSON with Python's ensure_ascii: each non-ASCII character as \uXXXX (a pair for 😀).
    expect(estimate('"\\u4f60\\u597d"')).toBe(2 + 1);
    expect(estimate('"\\ud83d\\ude00"')).toBe(1 + 1);
    expect(estimate('"\\u0041\\u0001"')).toBe(1);
  });
  it("counts a JSON string from after its opening quote to its closing unescaped quote, across calls", () => {
    const e = new TokenEstimate();
    const data = '{"content":"12 \\"ab\\" 你","x":"99"}';
    const from = data.indexOf('"12') + 1;
    const end = e.addString(data, from);
    expect(data.slice(end)).toBe(',"x":"99"}');
    expect(e.tokens).toBe(2 + 1 + Math.ceil(6 / 4)); // "12", "你"; ` "ab" ` is 6 bytes with the escapes read
    e.addString('"1"', 1);
    expect(e.tokens).toBe(3 + 1 + 2);
    expect(e.addString('"open', 1)).toBe(5); // no closing quote: to the end
  });
  it("counts a parsed JSON value as its JSON text, without writing that text", () => {
    const values: unknown[] = [
      null, true, false, 0, -12.5e-7, 1e21, "", "a\"b\\c\n\u0001d", "你好😀 12", "\ud800 lone", "\udc00",
      [], {}, [1, "x", null, [[]], { a: [true] }], { "k 1": "v", "你": { n: 123, s: ["é", 4] }, e: [] },
      [{ role: "user", content: [{ type: "text", text: "Call 555 0100" }, { type: "image_url", image_url: { url: "https://x.test/1.png" } }] }],
    ];
    for (const v of values) {
      const e = new TokenEstimate();
      e.addValue(v);
      expect(e.tokens, JSON.stringify(v)).toBe(estimate(JSON.stringify(v)));
    }
  });
  it("counts a payload that is not text (media) four characters of its JSON to a token, digits and non-ASCII included", () => {
    const e = new TokenEstimate();
    e.addPayload({ url: "data:image/png;base64,0123456789" });
    expect(e.tokens).toBe(Math.ceil('{"url":"data:image/png;base64,0123456789"}'.length / 4));
    e.addTokens(7);
    expect(e.tokens).toBe(7 + Math.ceil('{"url":"data:image/png;base64,0123456789"}'.length / 4));
  });
});

describe("a streamed answer without usage whose client leaves is charged its prompt's estimate", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startShim({
      // Prompt tokens only (1 credit per 1k): the charge tells the prompt tokens charged.
      // qwen-ids takes token-ID prompts (tokenPrompts, the default).
      file: {
        pricing: { request: 1, models: { "qwen2.5-7b": { promptPer1k: 1, completionPer1k: 0 }, "qwen-ids": { promptPer1k: 1, completionPer1k: 0 } } },
        models: [{ name: "qwen2.5-7b", maxModelLen: 32768, continuousUsage: false, tokenPrompts: false }, { name: "qwen-ids", maxModelLen: 32768 }],
      },
      fake: { ...DEFAULT_FAKE, models: [...DEFAULT_FAKE.models!, { name: "qwen-ids", root: "Qwen/Qwen2.5-7B-Instruct", maxModelLen: 32768 }] },
    });
  });
  afterAll(() => h.close());

  /**
   * The prompt tokens charged to a client that leaves once the second token came. The answer has
   * 48 more to go at 100 ms each, so a loaded machine cannot finish it before the client leaves.
   */
  async function promptCharged(path: string, body: Record<string, unknown>): Promise<number> {
    h.fake.set({ tokenDelayMs: 100, defaultTokens: 50 });
    const { id, key } = await h.createKey({ credits: 100, tier: "developer" });
    const ac = new AbortController();
    const res = await fetch(`${h.url}${path}`, { method: "POST", signal: ac.signal, headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body: JSON.stringify({ stream: true, max_tokens: 50, ...body }) });
    const reader = res.body!.getReader();
    let text = "";
    while (!text.includes("t2")) text += new TextDecoder().decode((await reader.read()).value);
    ac.abort();
    const line = await h.waitForRequestLog((l) => l.keyId === id);
    expect(line.status).toBe(499);
    return Math.round(((line.cost as number) - 1) * 1000);
  }

  // Found by review: 1,000 five-digit IDs were charged 5,323 prompt tokens, a token per digit of their JSON.
  it("a prompt of token IDs: one token per ID", async () => {
    const ids = Array.from({ length: 1000 }, (_, i) => 10_000 + i * 97);
    expect(await promptCharged("/v1/completions", { model: "qwen-ids", prompt: ids })).toBe(1000);
    expect(await promptCharged("/v1/completions", { model: "qwen-ids", prompt: [ids, ids.slice(0, 500)] })).toBe(1500);
  });

  // Found by review: a 4,000-character function description was charged nothing.
  it("a chat's legacy functions: counted as the hold counts them", async () => {
    const messages = [{ role: "user", content: "hi" }];
    const functions = [{ name: "lookup", description: "d".repeat(4000), parameters: { type: "object", properties: {} } }];
    const e = new TokenEstimate();
    e.add(JSON.stringify(messages));
    e.add(JSON.stringify(functions));
    expect(await promptCharged("/v1/chat/completions", { model: "qwen2.5-7b", messages, functions })).toBe(e.tokens);
  });

  // Found by review: a 100 KB JPEG as a data URL was charged 49,057 tokens, 33,368 at bytes / 4.
  it("an image's data URL: at most four bytes to a token", async () => {
    const base64 = Buffer.from(Array.from({ length: 75_000 }, (_, i) => (i * 7919) % 256)).toString("base64");
    const messages = [{ role: "user", content: [{ type: "image_url", image_url: { url: `data:image/jpeg;base64,${base64}` } }] }];
    expect(await promptCharged("/v1/chat/completions", { model: "qwen2.5-7b", messages })).toBeLessThanOrEqual(Math.ceil(Buffer.byteLength(JSON.stringify(messages)) / 4));
  });

  it("a prompt of digits: one token each (Qwen's tokenizer splits them), not a quarter of their bytes", async () => {
    h.fake.set({ tokenDelayMs: 100, defaultTokens: 50 });
    const { id, key } = await h.createKey({ credits: 100, tier: "developer" });
    const messages = [{ role: "user", content: "1 ".repeat(20_000) }];
    const ac = new AbortController();
    const res = await fetch(`${h.url}/v1/chat/completions`, { method: "POST", signal: ac.signal, headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body: JSON.stringify({ model: "qwen2.5-7b", stream: true, max_tokens: 50, messages }) });
    const reader = res.body!.getReader();
    let text = "";
    while (!text.includes("t2")) text += new TextDecoder().decode((await reader.read()).value);
    ac.abort(); // 48 tokens before the answer ends: it cannot end first, even on a loaded machine
    const line = await h.waitForRequestLog((l) => l.keyId === id);
    expect(line.status).toBe(499);
    // 20,000 digits, and the rest of the messages' JSON (the spaces, the roles) at 4 bytes a token.
    const json = JSON.stringify(messages).length;
    expect(line.cost).toBe(1 + (20_000 + Math.ceil((json - 20_000) / 4)) / 1000);
  });
});
