import { timingSafeEqual } from "node:crypto";
import { describe, expect, it, vi } from "vitest";
import pino from "pino";
import { manualClock } from "../support/clocks.ts";
import { Inflight } from "../../api-shim/src/inflight.ts";
import { createLogger, requestLogger, type RequestLine } from "../../api-shim/src/observability/logger.ts";
import { generateKey, hashKey, parseKeyId, randomBase62, secretsEqual, verifyKey, bearerToken } from "../../api-shim/src/auth/keys.ts";
import { loggedModel, redactedPath, redactKeys, secretRedactor, type SecretHider } from "../../api-shim/src/observability/redaction.ts";
import { UsageScanner, usageOfBody } from "../../api-shim/src/metering/answer-body.ts";
import { spliceJson, spliceJsonBytes, spliceMemberValue } from "../../api-shim/src/requests/json-splice.ts";
import { StreamMeter } from "../../api-shim/src/metering/metering.ts";
import { storedUsage } from "../../api-shim/src/metering/usage-json.ts";
import { ceilDiv, creditsInput, creditsNumber, formatCredits, parseCredits, tokenCost } from "../../api-shim/src/money/money.ts";
import { normalizationGrowth, parseInferenceRequest } from "../../api-shim/src/requests/inference-request.ts";
import { normalizationGrowthOf } from "../../api-shim/src/requests/normalization.ts";
import { parsePeriod, readInstant, showPeriod } from "../../api-shim/src/requests/period.ts";
import { CHAT_TEMPLATE_TOKENS, DEFAULT_MAX_COMPLETION_TOKENS, Pricer } from "../../api-shim/src/money/pricing.ts";
import { durationString, MAX_TRACKED_ADDRESSES, RateLimiter, rateLimitHeaders, TokenBucket } from "../../api-shim/src/limits/rate-limit.ts";
import { rateLimited, requestsSpent } from "../../api-shim/src/limits/refusals.ts";
import { eventData, EventTooLargeError, replaceEventData, sseEvents } from "../../api-shim/src/metering/sse.ts";
import { modelNotFound, upstreamErrorBody, upstreamStatusError } from "../../api-shim/src/upstream/upstream-errors.ts";

/** No deployment secrets to hide in an upstream's message (the shim without SHIM_ADMIN_TOKEN or SHIM_UPSTREAM_API_KEY). */
const noSecrets: SecretHider = (text) => text;

// keys.ts's timingSafeEqual, spied on (it still compares): the "keys" tests check that it decides.
vi.mock("node:crypto", async (importOriginal) => {
  const crypto = await importOriginal<typeof import("node:crypto")>();
  return { ...crypto, timingSafeEqual: vi.fn(crypto.timingSafeEqual) };
});

describe("money", () => {
  it.each([
    [1, 1_000_000], [0.1, 100_000], ["0.1", 100_000], [0.000001, 1], ["1.5", 1_500_000], ["-2.25", -2_250_000], [0, 0],
    [1e-7, undefined], ["1.0000001", undefined], ["1e3", undefined], [Number.NaN, undefined], ["", undefined], [null, undefined], [1e21, undefined],
    // Past 2^53 µc an amount cannot be exact: refused, not rounded (a SHIM_CONFIG price; found by mutation review).
    ["999999999999999.999999", undefined], ["9007199254.740993", undefined], ["9007199254.740991", Number.MAX_SAFE_INTEGER],
  ] as const)("parseCredits(%j) = %j", (input, micro) => {
    expect(parseCredits(input)).toBe(micro);
  });

  it("0.1 + 0.2 credits is exactly 0.3 (no floating point)", () => {
    expect(formatCredits(parseCredits(0.1)! + parseCredits(0.2)!)).toBe("0.3");
    expect(creditsNumber(parseCredits("0.1")! * 3)).toBe(0.3);
    // The largest grant or top-up is a billion credits, that one included (found by hand mutation).
    expect(creditsInput("1000000000", "positive")).toEqual({ micro: 1e15 });
    expect(creditsInput("1000000000.000001", "positive")).toEqual({ must: "at most 1000000000 credits" });
  });

  it.each([[1_500_000, "1.5"], [1, "0.000001"], [-1_000_001, "-1.000001"], [0, "0"], [123_456_789_000_000, "123456789"]])("formatCredits(%j) = %j", (micro, text) => {
    expect(formatCredits(micro)).toBe(text);
  });

  it("ceil division and token cost are exact", () => {
    expect(ceilDiv(10, 3)).toBe(4);
    expect(ceilDiv(9, 3)).toBe(3);
    expect(ceilDiv(0, 3)).toBe(0);
    expect(tokenCost(1, 1)).toBe(1); // a thousandth of a µc rounds up to 1 µc
    expect(tokenCost(1000, 1)).toBe(1);
    expect(tokenCost(1001, 1)).toBe(2);
    expect(tokenCost(3, 100_000)).toBe(300);
    expect(tokenCost(9_000_000, 9_000_000_000)).toBe(81_000_000_000_000);
  });
});

describe("pricing", () => {
  const pricer = new Pricer(
    { request: 1_000_000, batchRequest: 2_000_000, models: new Map([["m", { promptPer1k: 100_000, completionPer1k: 200_000 }]]) },
    new Map([["m", { name: "m", maxModelLen: 1000, continuousUsage: false, tokenPrompts: true }]]),
  );
  /** A prompt of plain text, with no chat template (a completions request). */
  const text = { templated: false, unboundedParts: 0 };
  it("the hold bounds the prompt by body bytes and the completion by max_tokens or maxModelLen", () => {
    expect(pricer.hold({ ...text, model: "m", batch: false, bodyBytes: 100, maxTokens: 10, prompts: 1, outputs: 1 })).toBe(1_000_000 + 10_000 + 2_000);
    expect(pricer.hold({ ...text, model: "m", batch: false, bodyBytes: 100, maxTokens: undefined, prompts: 1, outputs: 1 })).toBe(1_000_000 + 10_000 + 200_000);
    expect(pricer.hold({ ...text, model: "m", batch: true, bodyBytes: 5000, maxTokens: 5000, prompts: 1, outputs: 1 })).toBe(2_000_000 + 100_000 + 200_000);
    expect(pricer.hold({ ...text, model: "m", batch: false, bodyBytes: 100, maxTokens: 10, prompts: 1, outputs: 0 })).toBe(1_010_000);
    expect(pricer.hold({ ...text, model: "other", batch: false, bodyBytes: 100, maxTokens: 10, prompts: 1, outputs: 1 })).toBe(1_000_000);
  });
  it("the hold bounds a batch per prompt and per output, not as one sequence", () => {
    // n: 4 → four outputs of up to max_tokens each.
    expect(pricer.hold({ ...text, model: "m", batch: false, bodyBytes: 100, maxTokens: 10, prompts: 1, outputs: 4 })).toBe(1_000_000 + 10_000 + 8_000);
    // Three prompts of up to maxModelLen (1000) each: 5000 body bytes bound the prompt at 3000, not 1000.
    expect(pricer.hold({ ...text, model: "m", batch: false, bodyBytes: 5000, maxTokens: 10, prompts: 3, outputs: 6 })).toBe(1_000_000 + 300_000 + 12_000);
  });
  it("a chat template's tokens are held on top of the bytes; media parts hold the model's whole context", () => {
    const chat = { model: "m", batch: false, bodyBytes: 100, maxTokens: 10, prompts: 1, outputs: 1 };
    expect(pricer.hold({ ...chat, templated: true, unboundedParts: 0 })).toBe(1_000_000 + (100 + CHAT_TEMPLATE_TOKENS) * 100 + 2_000);
    // A 30-byte image URL can be 1,000+ tokens: the bound is maxModelLen (1000 here), per prompt.
    expect(pricer.hold({ ...chat, templated: true, unboundedParts: 1 })).toBe(1_000_000 + 1000 * 100 + 2_000);
    // Without a known context length, the default bound.
    const unknownModel = new Pricer({ request: 0, batchRequest: 0, models: new Map([["x", { promptPer1k: 1_000_000, completionPer1k: 0 }]]) }, null);
    expect(unknownModel.hold({ ...chat, model: "x", templated: true, unboundedParts: 1 })).toBe((100 + CHAT_TEMPLATE_TOKENS + DEFAULT_MAX_COMPLETION_TOKENS) * 1000);
    // An image never lowers the hold below the text's: a long prompt keeps its bytes' bound.
    const long = { ...chat, model: "x", bodyBytes: 400_000, templated: true };
    expect(unknownModel.hold({ ...long, unboundedParts: 1 })).toBeGreaterThan(unknownModel.hold({ ...long, unboundedParts: 0 }));
  });
  it("vLLM's completions default of 16 tokens bounds the model vLLM serves, not a provider behind LiteLLM", () => {
    const withProvider = new Pricer(
      { request: 0, batchRequest: 0, models: new Map([["m", { promptPer1k: 0, completionPer1k: 1_000_000 }], ["gpt-4o", { promptPer1k: 0, completionPer1k: 1_000_000 }]]) },
      new Map([["m", { name: "m", maxModelLen: 1000, continuousUsage: false, tokenPrompts: true }], ["gpt-4o", { name: "gpt-4o", maxModelLen: null, continuousUsage: false, tokenPrompts: true }]]),
    );
    const hold = (model: string, body: Record<string, unknown>) => {
      const r = parseInferenceRequest("completions", { model, prompt: "x", ...body });
      return withProvider.hold({ ...text, model, batch: false, bodyBytes: 10, maxTokens: r.maxTokens, defaultMaxTokens: r.defaultMaxTokens, prompts: r.prompts, outputs: r.outputs });
    };
    expect(hold("m", {})).toBe(16 * 1000);
    // LiteLLM turns a provider's text completion into a chat call with no limit of 16.
    expect(hold("gpt-4o", {})).toBe(DEFAULT_MAX_COMPLETION_TOKENS * 1000);
    expect(hold("gpt-4o", { max_tokens: 50 })).toBe(50 * 1000);
    expect(hold("gpt-4o", { max_completion_tokens: 40 })).toBe(40 * 1000);
  });
  it("a provider's maxOutputTokens bounds an output without max_tokens, not a request's own; unset, the default bound stays", () => {
    const withProviders = new Pricer(
      { request: 0, batchRequest: 0, models: new Map([["gemini-pro", { promptPer1k: 0, completionPer1k: 1_000_000 }], ["gpt-4o", { promptPer1k: 0, completionPer1k: 1_000_000 }]]) },
      new Map([
        ["gemini-pro", { name: "gemini-pro", maxModelLen: null, maxOutputTokens: 65_536, continuousUsage: false, tokenPrompts: false }],
        ["gpt-4o", { name: "gpt-4o", maxModelLen: null, continuousUsage: false, tokenPrompts: false }],
      ]),
    );
    const bound = (model: string, maxTokens: number | undefined, defaultMaxTokens = false) => withProviders.outputBound({ model, maxTokens, defaultMaxTokens });
    expect(bound("gemini-pro", undefined)).toBe(65_536);
    expect(bound("gemini-pro", 1000)).toBe(1000);
    // The shim does not send the limit upstream: set below what the provider writes, it must not
    // hold (and cap the charge at) less than the client asked for.
    expect(bound("gemini-pro", 100_000)).toBe(100_000);
    expect(bound("gemini-pro", 16, true)).toBe(65_536); // vLLM's completions default is not the provider's
    expect(bound("gpt-4o", undefined)).toBe(DEFAULT_MAX_COMPLETION_TOKENS);
    expect(bound("gpt-4o", 100_000)).toBe(100_000);
    const hold = (maxTokens: number | undefined) => withProviders.hold({ ...text, model: "gemini-pro", batch: false, bodyBytes: 10, maxTokens, prompts: 1, outputs: 2 });
    expect(hold(undefined)).toBe(2 * 65_536 * 1000);
    expect(hold(100_000)).toBe(2 * 100_000 * 1000);
    // A known context still bounds a request's own limit.
    const served = new Pricer(
      { request: 0, batchRequest: 0, models: new Map() },
      new Map([["q", { name: "q", maxModelLen: 8192, maxOutputTokens: 1000, continuousUsage: false, tokenPrompts: true }]]),
    );
    expect(served.outputBound({ model: "q", maxTokens: 100_000 })).toBe(8192);
    expect(served.outputBound({ model: "q", maxTokens: 4000 })).toBe(4000);
    expect(served.outputBound({ model: "q", maxTokens: undefined })).toBe(1000);
  });
  it("completions with echo and max_tokens 0 are bounded by one token per output, as vLLM generates one", () => {
    const bound = (extra: Record<string, unknown>) => parseInferenceRequest("completions", { model: "m", prompt: ["a", "b"], n: 3, ...extra }).maxTokens;
    expect(bound({ echo: true, max_tokens: 0 })).toBe(1);
    expect(bound({ max_tokens: 0 })).toBe(0);
    expect(bound({ echo: true, max_tokens: 7 })).toBe(7);
    expect(bound({ echo: true })).toBe(16);
  });
  it("completions count each prompt_embeds entry as a prompt with its own outputs (vLLM --enable-prompt-embeds)", () => {
    const parsed = (extra: Record<string, unknown>) => {
      const r = parseInferenceRequest("completions", { model: "m", n: 2, max_tokens: 10, ...extra });
      return [r.prompts, r.outputs];
    };
    expect(parsed({ prompt: "x" })).toEqual([1, 2]);
    expect(parsed({ prompt: "x", prompt_embeds: "AAAA" })).toEqual([2, 4]);
    expect(parsed({ prompt: ["x", "y"], prompt_embeds: ["AAAA", "BBBB", "CCCC"] })).toEqual([5, 10]);
    expect(parsed({ prompt_embeds: Array(50).fill("AAAA") })).toEqual([50, 100]);
    expect(parsed({ prompt: null, prompt_embeds: "AAAA" })).toEqual([1, 2]);
    // Neither: vLLM refuses it, and so does the shim, before holding anything.
    for (const extra of [{ prompt: null }, { prompt_embeds: [] }, {}]) expect(() => parsed(extra), JSON.stringify(extra)).toThrow("'prompt' is required.");
  });
  it("a prompt's bound counts the bytes Unicode normalization may add (a tokenizer's NFC or NFKC), and nothing for ASCII", () => {
    const growth = (content: string) => {
      const body = { model: "m", messages: [{ role: "user", content }] };
      return normalizationGrowth("chat", body, Buffer.from(JSON.stringify(body)));
    };
    expect(growth("hello there")).toBe(0);
    expect(growth("你好世界")).toBe(0); // CJK does not decompose
    expect(growth("\u{1D160}".repeat(1000))).toBe(8000); // 4 bytes each → 12 under NFC
    expect(growth("\uFDFA".repeat(1000))).toBe(30_000); // 3 bytes each → 33 under NFKC
    const body = { model: "m", input: ["\uFDFA", "ok"] };
    expect(normalizationGrowth("embeddings", body, Buffer.from(JSON.stringify(body)))).toBe(30);
    // The same characters spelt as JSON escapes, in an all-ASCII body: the same growth.
    const chat = { model: "m", messages: [{ role: "user", content: "\uFDFA".repeat(1000) }] };
    const escaped = Buffer.from(JSON.stringify(chat).replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`));
    expect(escaped.every((b) => b < 0x80)).toBe(true);
    expect(normalizationGrowth("chat", JSON.parse(escaped.toString()) as Record<string, unknown>, escaped)).toBe(30_000);
    // An image's data URL (ASCII) beside French text: only the text grows ("é" gains a byte under NFD).
    const vision = { model: "m", messages: [{ role: "user", content: [{ type: "text", text: "Décris" }, { type: "image_url", image_url: { url: `data:image/png;base64,${"A".repeat(100_000)}` } }] }] };
    expect(normalizationGrowth("chat", vision, Buffer.from(JSON.stringify(vision)))).toBe(1);
    // Text that merely starts like a data URL is still text.
    const prefixed = { model: "m", input: [`data:${"\uFDFA".repeat(1000)}`] };
    expect(normalizationGrowth("embeddings", prefixed, Buffer.from(JSON.stringify(prefixed)))).toBe(30_000);
    // Keys count too: a tool's JSON schema, property names included, goes into the prompt.
    const tools = { model: "m", messages: [{ role: "user", content: "hi" }], tools: [{ type: "function", function: { name: "f", parameters: { type: "object", properties: { ["\uFDFA".repeat(1000)]: { type: "string" } } } } }] };
    expect(normalizationGrowth("chat", tools, Buffer.from(JSON.stringify(tools)))).toBe(30_000);
  });
  it("normalization growth, bounded one code point at a time, is never below what any normalization of the whole text adds", () => {
    const grows = (s: string) => Math.max(...(["NFC", "NFD", "NFKC", "NFKD"] as const).map((form) => Buffer.byteLength(s.normalize(form)) - Buffer.byteLength(s)));
    // Text a tokenizer meets: combining marks, Hangul, compatibility ligatures, astral symbols,
    // mixed with ASCII and a lone surrogate (sent as U+FFFD, 3 bytes, like itself).
    const pools = [[0x20, 0x7f], [0x300, 0x370], [0xc0, 0x250], [0xac00, 0xd7a4], [0xfb00, 0xfb50], [0xfdf0, 0xfe00], [0x1d100, 0x1d250], [0x3000, 0x3100]];
    let seed = 7;
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    for (let round = 0; round < 2000; round++) {
      let s = "";
      for (let j = rand(40); j >= 0; j--) {
        const [lo, hi] = pools[rand(pools.length)]!;
        s += String.fromCodePoint(lo! + rand(hi! - lo!));
      }
      if (rand(10) === 0) s += "\ud800";
      expect(normalizationGrowthOf(s), JSON.stringify(s)).toBeGreaterThanOrEqual(Math.max(0, grows(s)));
    }
    // Exact where nothing shrinks or reorders: one decomposition per character.
    expect(normalizationGrowthOf("Ça va, l'été ?")).toBe(3);
    expect(normalizationGrowthOf("\u{1D160}x\uFDFA")).toBe(8 + 30);
    expect(normalizationGrowthOf("\udc00\ud800")).toBe(0);
    // Two low surrogates are no pair (each is sent as U+FFFD): a number, not NaN (found by mutation review).
    expect(normalizationGrowthOf("\udc00\udc00\uFDFA")).toBe(30);
  });
  it("normalization growth never normalizes a whole text: canonical reordering of a long run of combining marks is quadratic", () => {
    // 80,000 marks took ~1.3 s per form as one string (a body of them froze the shim for minutes).
    const marks = `a${"\u0316\u0301".repeat(40_000)}`;
    const normalize = vi.spyOn(String.prototype, "normalize");
    try {
      expect(normalizationGrowthOf(marks)).toBe(0); // both marks are already decomposed
      expect(normalize.mock.contexts.every((s) => String(s).length <= 2)).toBe(true);
    } finally {
      normalize.mockRestore();
    }
  });
  it("normalization growth is worked out only when the body's bytes bound the prompt", () => {
    let calls = 0;
    const growth = () => (calls++, 500);
    const chat = { model: "m", batch: false, templated: true, maxTokens: 10, prompts: 1, outputs: 1, normalizationGrowth: growth };
    // 100 bytes + 256 + 500 under maxModelLen 1000: counted.
    expect(pricer.hold({ ...chat, bodyBytes: 100, unboundedParts: 0 })).toBe(1_000_000 + 856 * 100 + 2_000);
    expect(calls).toBe(1);
    // Bytes already past the context, or media (the context is the bound): not worked out.
    expect(pricer.hold({ ...chat, bodyBytes: 5000, unboundedParts: 0 })).toBe(1_000_000 + 1000 * 100 + 2_000);
    expect(pricer.hold({ ...chat, bodyBytes: 100, unboundedParts: 1 })).toBe(1_000_000 + 1000 * 100 + 2_000);
    expect(calls).toBe(1);
  });
  it("the cost never exceeds the hold, and says when the hold capped it", () => {
    const hold = pricer.hold({ ...text, model: "m", batch: false, bodyBytes: 10, maxTokens: 1, prompts: 1, outputs: 1 });
    expect(pricer.cost("m", false, { promptTokens: 5, completionTokens: 1 }, hold)).toEqual({ cost: 1_000_000 + 500 + 200, capped: false });
    expect(pricer.cost("m", false, { promptTokens: 500, completionTokens: 500 }, hold)).toEqual({ cost: hold, capped: true });
  });
});

describe("keys", () => {
  it("generates sk-gs-<12>_<32> keys whose id parses back and whose hash verifies", () => {
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const { id, key, hash } = generateKey();
      expect(key).toMatch(/^sk-gs-[0-9A-Za-z]{12}_[0-9A-Za-z]{32}$/);
      expect(parseKeyId(key)).toBe(id);
      expect(hash).toBe(hashKey(key));
      expect(hash).toMatch(/^sha256:[0-9a-f]{64}$/);
      expect(verifyKey(key, hash)).toBe(true);
      expect(verifyKey(`${key.slice(0, -1)}${key.endsWith("a") ? "b" : "a"}`, hash)).toBe(false);
      seen.add(key);
    }
    expect(seen.size).toBe(200);
  });
  it("uses the whole base62 alphabet", () => {
    expect(new Set(randomBase62(5000)).size).toBe(62);
  });
  it("rejects strings that are not keys", () => {
    for (const s of ["", "sk-gs-", "sk-gs-abc_def", `sk-xx-${"a".repeat(12)}_${"b".repeat(32)}`, `sk-gs-${"a".repeat(12)}_${"b".repeat(31)}!`]) expect(parseKeyId(s)).toBeUndefined();
  });
  it("compares secrets of any length in constant time, and parses Bearer headers", () => {
    expect(secretsEqual("a", "a")).toBe(true);
    expect(secretsEqual("a", "ab")).toBe(false);
    expect(secretsEqual("a", "b")).toBe(false);
    expect(bearerToken("Bearer abc12345")).toBe("abc12345");
    expect(bearerToken("bearer   abc12345 ")).toBe("abc12345");
    expect(bearerToken("Basic abc")).toBeUndefined();
    expect(bearerToken(undefined)).toBeUndefined();
  });
  it("crypto's timingSafeEqual decides, for a match and a mismatch, for keys and the admin token (no === on the secrets)", () => {
    const { key, hash } = generateKey();
    const other = generateKey().key;
    const compare = vi.mocked(timingSafeEqual);
    // Its answer is the answer: turned round, a match fails and a mismatch passes.
    const cases: [(presented: string, expected: string) => boolean, [string, string], [string, string]][] = [
      [verifyKey, [key, hash], [other, hash]],
      [secretsEqual, ["adm-token", "adm-token"], ["adm-token", "adm-tokem"]],
    ];
    for (const [equal, same, differ] of cases) {
      compare.mockClear();
      expect(equal(...same)).toBe(true);
      expect(equal(...differ)).toBe(false);
      expect(compare).toHaveBeenCalledTimes(2);
      compare.mockReturnValueOnce(false);
      expect(equal(...same)).toBe(false);
      compare.mockReturnValueOnce(true);
      expect(equal(...differ)).toBe(true);
    }
  });
  it("redacts key-shaped text", () => {
    const { key } = generateKey();
    expect(redactKeys(`/v1/${key}/x`)).toBe("/v1/sk-gs-[redacted]/x");
  });
  it("keeps a key without its prefix, or its secret alone, out of logged paths and model names: the prefix is public, the rest is the key", () => {
    const { id, key } = generateKey();
    const bare = key.slice("sk-gs-".length);
    const secret = bare.slice(id.length + 1);
    const none = (t: string) => t;
    expect(redactedPath(`/${bare}/v1/models`, none)).toBe("/[redacted]/v1/models");
    expect(loggedModel(`x-${secret}.y`, none)).toBe("x-[redacted].y");
    expect(redactedPath(`/${bare}/${key}`, none)).toBe("/[redacted]/sk-gs-[redacted]");
    // What is not a key stays: model names, a key id alone, 40-hex commit hashes, shorter runs, and
    // 32 lowercase hex digits (an Azure fine-tune's id, a UUID without hyphens), which a base62
    // secret is with a chance of (16/62)^32, about 1e-19.
    for (const text of ["meta-llama/Llama-3.1-8B-Instruct", `keys/${id}`, "a".repeat(40), `Qwen2.5-VL-72B-Instruct-AWQ_${"b".repeat(31)}`,
      "gpt-4o-mini-2024-07-18.ft-0ab3f80e4f2242929258fff45b56a9ce", "qwen2.5-7b-lora-3f2a9c1e7b8d4e6fa0c1b2d3e4f5a6b7"]) {
      expect(loggedModel(text, none)).toBe(text);
      expect(redactedPath(`/v1/files/${text}`, none)).toBe(`/v1/files/${text}`);
    }
  });

  it("keeps a key's bare form glued to letters or digits out of logs, and leaves hashes, one-case words and mixed-case names with separators", () => {
    const { id, key } = generateKey();
    const bare = key.slice("sk-gs-".length);
    const secret = bare.slice(id.length + 1);
    const none = (t: string) => t;
    // Glued on either side: the whole run of letters and digits is hidden, what is glued with it.
    expect(redactedPath(`/v1/models/${bare}x`, none)).toBe("/v1/models/[redacted]");
    expect(redactedPath(`/v1/models/abc${bare}/x`, none)).toBe("/v1/models/[redacted]/x");
    expect(loggedModel(`org.${bare}0`, none)).toBe("org.[redacted]");
    // Two keys glued: neither shows.
    expect(redactedPath(`/v1/${bare}${secret}`, none)).toBe("/v1/[redacted]");
    // The secret alone glued: the whole run too, as which 32 are the secret cannot be told.
    expect(redactedPath(`/v1/models/x${secret}`, none)).toBe("/v1/models/[redacted]");
    expect(loggedModel(`ft:${secret}v2`, none)).toBe("ft:[redacted]");
    // Not keys: hashes (any case, after a word and a `_` too), long one-case words, digits, and
    // names whose mixed-case runs are short.
    const sha1 = "3f2a9c1e7b8d4e6fa0c1b2d3e4f5a6b7c8d9e0f1";
    for (const text of [`mycheckpoint_${sha1}`, `model-${sha1.toUpperCase()}`, `v${sha1}`, "m".repeat(40), "LLAMA".repeat(8), "7".repeat(40),
      `sha256:${sha1}${sha1.slice(0, 24)}`, "TheBloke/Mistral-7B-Instruct-v0.2-GGUF", "Meta-Llama-3.1-405B-Instruct-Turbo_FP8QuantizedWeights"]) {
      expect(loggedModel(text, none)).toBe(text);
      expect(redactedPath(`/v1/models/${text}`, none)).toBe(`/v1/models/${text}`);
    }
  });

  // Found by review: `<12+>_<32+>` hid one-case snake_case names, and a served name in both
  // cases without separators (a LoRA's, model.servedName) was `[redacted]` on every line.
  it("leaves one-case names with long `_`-joined runs, and the names the configuration serves, as they are; a key with or glued to a served name is still hidden", () => {
    const none = (t: string) => t;
    const { id, key } = generateKey();
    const bare = key.slice("sk-gs-".length);
    const secret = bare.slice(id.length + 1);
    for (const text of ["llama31instruct_customersupportfinetunemerged0102", "MISTRAL7BINSTRUCT_CUSTOMERSUPPORTFINETUNEMERGED0102", `qwen25coder7b_${"q".repeat(40)}`, `org/${"m".repeat(12)}_${"x".repeat(32)}v2`]) {
      expect(loggedModel(text, none)).toBe(text);
      expect(redactedPath(`/v1/models/${text}`, none)).toBe(`/v1/models/${text}`);
    }
    const lora = "AcmeCustomerSupportAdapterV2Final";
    const served = new Map([[lora, {}], [`org/${lora}-v2`, {}]]);
    // Not served (or no model list): a run this long in both cases is some token, as before.
    expect(loggedModel(lora, none)).toBe("[redacted]");
    expect(loggedModel(`${lora}x`, none, served)).toBe("[redacted]");
    for (const name of served.keys()) {
      expect(loggedModel(name, none, served)).toBe(name);
      expect(redactedPath(`/v1/models/${name}`, none, served)).toBe(`/v1/models/${name}`);
    }
    // A client's key next to a served name, glued to one, or in place of one, never shows.
    for (const text of [`${lora}${secret}`, `${lora}_${bare}`, `org/${bare}-v2`, `${lora}/${bare}`, bare, secret]) {
      expect(loggedModel(text, none, served), text).not.toContain(secret);
      expect(redactedPath(`/v1/models/${text}`, none, served), text).not.toContain(secret);
    }
    expect(redactedPath(`/v1/models/${lora}/${bare}`, none, served)).toBe(`/v1/models/${lora}/[redacted]`);
  });

  it("shows no part of a key cut where a model name or a path is cut before redaction (400 characters, or what is encoded too deeply)", () => {
    const none = (t: string) => t;
    const { id, key } = generateKey();
    const bare = key.slice("sk-gs-".length); // <id>_<secret>
    const secret = bare.slice(id.length + 1);
    // Six keys before it shrink to sk-gs-[redacted] once redacted, bringing what stood at 400 within
    // the 200 logged: a bare key cut to 31 of its 32 secret characters matched no key pattern.
    const others = Array.from({ length: 6 }, () => generateKey().key).join(" ");
    const pad = " ".repeat(400 - others.length - (id.length + 1) - 31);
    const cutInSecret = loggedModel(`${others}${pad}${bare}`, none);
    expect(cutInSecret).not.toContain(secret.slice(0, 8));
    expect(cutInSecret.startsWith(Array(6).fill("sk-gs-[redacted]").join(" "))).toBe(true);
    // Cut inside a percent-encoding that would have ended the secret: `%4` decodes to nothing.
    const encodedEnd = `${others}${pad.slice(1)}${bare.slice(0, -2)}%${bare.charCodeAt(bare.length - 2).toString(16)}`;
    expect(encodedEnd.length).toBe(401);
    expect(loggedModel(encodedEnd, none)).not.toContain(secret.slice(0, 8));
    // The secret's last character encoded four times: what three layers of decoding leave is cut there.
    let deep = `%${bare.charCodeAt(bare.length - 1).toString(16)}`;
    for (let i = 0; i < 3; i++) deep = encodeURIComponent(deep);
    const spelt = `${bare.slice(0, -1)}${deep}`;
    expect(redactedPath(`/v1/models/${spelt}`, none)).toBe("/v1/models/[encoded too deeply]");
    expect(loggedModel(`x-${spelt}`, none)).toBe("x-[encoded too deeply]");
  });

  it("logs a long model name with no key in it as its first 200 characters: the key characters a cut falls in are dropped only when redacting changed the text", () => {
    const none = (t: string) => t;
    // 401 letters: the whole 400 looked at is one run of key characters, which was dropped ("").
    const plain = "m".repeat(401);
    expect(loggedModel(plain, none)).toBe(plain.slice(0, 200));
    // A separator early: more than its first word ("ft:").
    const ft = `ft:${"a".repeat(450)}`;
    expect(loggedModel(ft, none)).toBe(ft.slice(0, 200));
    // Encoded, but with no key or secret in it: as sent, as a short one is.
    const encoded = `qwen%20${"b".repeat(420)}`;
    expect(loggedModel(encoded, none)).toBe(encoded.slice(0, 200));
  });

  it("shows no part of the deployment's upstream key when the 400-character cut falls in it and keys before it shrink once redacted", () => {
    // An upstream key with a '-' (an operator's own LiteLLM master key): the run of key characters
    // the cut falls in ends at the '-', and what is before it matches no secret form.
    const upstream = `lm-${"Q".repeat(88)}-${"Z".repeat(30)}`;
    const hide = secretRedactor([null, upstream]);
    const others = Array.from({ length: 5 }, () => generateKey().key).join(" "); // 259 characters, 84 once redacted
    const pad = " ".repeat(398 - 91 - others.length);
    const model = `${others}${pad}${upstream}`;
    expect(model.indexOf(`-${"Z".repeat(30)}`)).toBe(398); // not "-Z" alone: a random key id may begin with Z after its sk-gs-
    expect(loggedModel(model, hide)).not.toContain("Q".repeat(20));
    // Alone, with nothing else redacted: the beginning the cut leaves is hidden all the same.
    const alone = `${"m".repeat(151)} ${upstream.replaceAll("Q", "%51")}`;
    expect(alone.slice(395, 400)).toBe("%51%5"); // the cut falls in a %51
    expect(loggedModel(alone, hide)).toBe(`${"m".repeat(151)} [redacted]`);
    // The end of a path encoded too deeply is cut there: what precedes it is the key's beginning.
    let deep = "%5A";
    for (let i = 0; i < 3; i++) deep = encodeURIComponent(deep);
    expect(redactedPath(`/v1/models/lm-${"Q".repeat(88)}-${deep}`, hide)).toBe("/v1/models/[redacted][encoded too deeply]");
    // A secret (or its beginning) inside the 400 looked at, before a long run of key characters.
    const token = "T0k3n".repeat(10);
    const hideToken = secretRedactor([token, null]);
    expect(loggedModel(`ft:${token}${"a".repeat(400)}`, hideToken)).not.toContain("T0k3n");
    expect(loggedModel(`ft:${token.slice(0, 20)}-${"a".repeat(400)}`, hideToken)).toBe(`ft:${token.slice(0, 20)}-${"a".repeat(176)}`);
  });

  it("leaves a model name alone in the messages a client sees: a bare-key shape is redacted in logs only", () => {
    const azure = "gpt-4o-mini-2024-07-18.ft-0ab3f80e4f2242929258fff45b56a9ce";
    const base62 = `org-${"Ab3".repeat(10)}xY`; // 32 letters and digits, not hex
    for (const model of [azure, base62]) {
      expect(modelNotFound(model).message).toBe(`The model '${model}' does not exist or you do not have access to it.`);
      const body = JSON.stringify({ error: { message: `model '${model}' does not support tools`, type: "BadRequestError", code: 400 } });
      expect(upstreamStatusError(400, body, model, undefined, noSecrets).message).toBe(`model '${model}' does not support tools`);
    }
  });
  /** `text` with its first character percent-encoded, then the whole encoded `layers - 1` more times. */
  const encoded = (text: string, layers: number) => {
    if (layers === 0) return text;
    let spelt = `%${text.charCodeAt(0).toString(16)}${text.slice(1)}`;
    for (let i = 1; i < layers; i++) spelt = encodeURIComponent(spelt);
    return spelt;
  };
  it("keeps keys and the deployment's secrets out of logged paths and model names, however deeply encoded", () => {
    const token = "s3cretpassphrase-2024";
    const hide = secretRedactor([token, null]);
    const { key } = generateKey();
    for (let times = 0; times <= 6; times++) {
      for (const path of [`/v1/models/${encoded(token, times)}`, `/v1/models/${encoded(key, times)}`]) {
        const logged = redactedPath(path, hide);
        expect(logged, path).not.toMatch(/3cretpassphrase|[A-Za-z0-9]{32}/);
        expect(logged, path).toMatch(/^\/v1\/models\//);
        const model = loggedModel(path.slice("/v1/models/".length), hide);
        expect(model, path).not.toMatch(/3cretpassphrase|[A-Za-z0-9]{32}/);
      }
    }
    // Nothing to hide: as before (the path decoded, a model name as sent).
    expect(redactedPath("/v1/models/qwen%2520coder?x=1", hide)).toBe("/v1/models/qwen coder");
    expect(loggedModel("qwen2.5-7b", hide)).toBe("qwen2.5-7b");
  });
  it("hides a configured secret in every decoded form, however short that form", () => {
    // A 21-character token (long enough to be one) whose decoded form is 7 characters.
    const hide = secretRedactor(["%41%42%43%44%45%46%47", null]);
    expect(redactedPath("/v1/x/ABCDEFG", hide)).not.toContain("ABCDEFG");
    expect(redactedPath("/v1/x/%41%42%43%44%45%46%47", hide)).not.toContain("ABCDEFG");
  });
  it("hides a secret that holds the other (an upstream key that starts with the admin token) whole, not leaving its tail", () => {
    const token = "s3cretpassphrase-2024";
    const hide = secretRedactor([token, `${token}-upstream-tail`]);
    expect(redactedPath(`/v1/models/${token}-upstream-tail`, hide)).toBe("/v1/models/[redacted]");
    expect(loggedModel(`${token}-upstream-tail`, hide)).toBe("[redacted]");
  });
  it("hides an admin token holding a tab (allowed) that a client spelt %09 in a path", () => {
    const hide = secretRedactor(["s3cret\tpassphrase-2024", null]);
    expect(redactedPath("/v1/models/s3cret%09passphrase-2024", hide)).toBe("/v1/models/[redacted]");
  });
  it("does not decode a URL far longer than any nginx passes, and says what it was", () => {
    const hide = secretRedactor(["s3cretpassphrase-2024", null]);
    const logged = redactedPath(`/v1/models/${"%2541".repeat(20_000)}`, hide);
    expect(logged).toBe("[a URL of 100011 characters, not logged]");
  });
});

describe("rate limits", () => {
  it("a bucket holds `capacity`, refills continuously and says when to retry", () => {
    const b = new TokenBucket(60, 0); // 1 per second
    for (let i = 0; i < 60; i++) expect(b.take(1, 0).ok).toBe(true);
    expect(b.take(1, 0)).toEqual({ ok: false, retryMs: 1000 });
    expect(b.take(1, 500).ok).toBe(false);
    expect(b.take(1, 1000).ok).toBe(true);
    // A minute's refill, and a second more for the room held for the caller refused at 500 (told 2 s).
    expect(b.msUntilFull(1000)).toBe(61_000);
    expect(b.remaining(61_000)).toBe(60);
  });
  it("callers refused together are told turns a refill apart, no further ahead than 59 s (the SDK retries a wait under 60 s); a turn passed unused is not carried on", () => {
    const b = new TokenBucket(60, 0); // 1 per second
    for (let i = 0; i < 60; i++) b.take(1, 0);
    const told = Array.from({ length: 100 }, () => (b.take(1, 0) as { retryMs: number }).retryMs);
    expect(told.slice(0, 3)).toEqual([1000, 2000, 3000]);
    expect(told.slice(57)).toEqual([58_000, ...Array(42).fill(59_000)]);
    // Long after: the room is back, and the next refusal is told the bucket's own wait again.
    for (let i = 0; i < 60; i++) b.take(1, 200_000);
    expect(b.take(1, 200_000)).toEqual({ ok: false, retryMs: 1000 });
  });
  it("a tier change forgets the turns told at the old rate: a key moved from 1 to 60 requests/min that spends its new room is told 1 s, not the old minute's turn", () => {
    const b = new TokenBucket(1, 0);
    expect(b.take(1, 0).ok).toBe(true);
    expect(b.take(1, 0)).toEqual({ ok: false, retryMs: 60_000 });
    b.resize(60, 0);
    for (let i = 0; i < 59; i++) expect(b.take(1, 0).ok).toBe(true);
    expect(b.take(1, 0)).toEqual({ ok: false, retryMs: 1000 });
  });
  it("the tokens bucket admits while positive and is corrected afterwards", () => {
    const b = new TokenBucket(1000, 0);
    expect(b.takeIfPositive(1500, 0).ok).toBe(true); // overdraws
    expect(b.takeIfPositive(1, 0).ok).toBe(false);
    b.adjust(-1000, 0); // the real usage was 500
    expect(b.remaining(0)).toBe(500);
  });
  it("per-IP buckets for unauthenticated traffic; null = unlimited", () => {
    const clock = manualClock();
    const limiter = new RateLimiter(clock, 2);
    expect(limiter.takeIp("1.1.1.1").ok).toBe(true);
    expect(limiter.takeIp("1.1.1.1").ok).toBe(true);
    expect(limiter.takeIp("1.1.1.1").ok).toBe(false);
    expect(limiter.takeIp("2.2.2.2").ok).toBe(true);
    clock.advance(30_000);
    expect(limiter.takeIp("1.1.1.1").ok).toBe(true);
    expect(new RateLimiter(clock, null).takeIp("1.1.1.1").ok).toBe(true);
  });
  it("an address that spent its failed-admin budget keeps it spent while it keeps asking, however many other addresses come", () => {
    const limiter = new RateLimiter(manualClock(), 2);
    limiter.takeIp("198.51.100.1", "admin");
    limiter.takeIp("198.51.100.1", "admin");
    let unlocked = -1;
    for (let i = 0; i < 3 * MAX_TRACKED_ADDRESSES; i++) {
      limiter.takeIp(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
      if (i % 1000 === 0 && unlocked < 0 && limiter.takeIp("198.51.100.1", "admin").ok) unlocked = i;
    }
    expect(unlocked).toBe(-1);
  });
  it("a key whose limits change keeps what it spent, at most the new capacity, debts and in-flight estimates included", () => {
    const clock = manualClock();
    const limiter = new RateLimiter(clock, 60);
    const now = clock.monotonic();
    const before = limiter.forKey("k", { rpm: 100, tpm: 1000, concurrency: null });
    before.requests!.take(40, now);
    before.tokens!.takeIfPositive(1500, now); // an in-flight estimate: 500 in debt
    const after = limiter.forKey("k", { rpm: 50, tpm: 2000, concurrency: null });
    expect(after.requests!.capacity).toBe(50);
    expect(after.requests!.remaining(now)).toBe(10); // 40 spent of 100 is 40 spent of 50 (not 60 left, clamped to a fresh 50)
    expect(after.tokens!.capacity).toBe(2000);
    expect(after.tokens!.takeIfPositive(1, now).ok).toBe(false); // still in debt
    before.tokens!.adjust(-1400, now); // the request settles through the buckets it was admitted with: it used 100
    expect(after.tokens!.remaining(now)).toBe(900);
    const unlimited = limiter.forKey("k", { rpm: null, tpm: 1000, concurrency: null });
    expect(unlimited.requests).toBeNull();
    expect(unlimited.tokens!.remaining(now)).toBe(0); // 1,100 spent of 2,000: all of the new 1,000
  });
  it("a limit lifted then set again keeps its bucket: requests in flight settle into it, and what was spent stays spent", () => {
    const clock = manualClock();
    const limiter = new RateLimiter(clock, null);
    const now = clock.monotonic();
    const first = limiter.forKey("k", { rpm: null, tpm: 100, concurrency: null });
    first.tokens!.takeEstimate(1000, now); // in flight: 900 in debt
    expect(limiter.forKey("k", { rpm: null, tpm: null, concurrency: null }).tokens).toBeNull();
    const again = limiter.forKey("k", { rpm: null, tpm: 100, concurrency: null });
    expect(again.tokens).toBe(first.tokens);
    expect(again.tokens!.takeEstimate(1, now).ok).toBe(false);
  });
  it("a debt made of estimates still running says to retry in a second, not after it refills; a settled debt, its real wait", () => {
    const b = new TokenBucket(10_000, 0); // 10,000 a minute
    expect(b.takeEstimate(16 * 131_072, 0).ok).toBe(true); // no max_tokens, n 16: about 2 M tokens estimated
    const refused = b.takeEstimate(10, 0);
    expect(refused).toEqual({ ok: false, retryMs: 1000 });
    // OpenAI's reset header agrees: the estimates running are counted as coming back.
    expect(rateLimitHeaders({ requests: null, tokens: b }, 0, 0, true)["x-ratelimit-reset-tokens"]).toBe("1s");
    b.settleEstimate(16 * 131_072, 12_000, 1); // it used 12,000: 2,000 in debt, 12 s to pay
    const later = b.takeEstimate(10, 1);
    expect(later.ok).toBe(false);
    expect(later.ok === false && later.retryMs).toBeGreaterThan(11_000);
    expect(later.ok === false && later.retryMs).toBeLessThan(13_000);
  });
  it("does not say the tokens budget is full again (0s) while remaining-tokens is below the limit and an estimate runs", () => {
    const b = new TokenBucket(10_000, 0);
    expect(b.takeEstimate(4_000, 0).ok).toBe(true); // about what the request will use: full again in 24 s if it does
    let h = rateLimitHeaders({ requests: null, tokens: b }, 0, 0, true);
    expect(h["x-ratelimit-remaining-tokens"]).toBe("6000");
    expect(h["x-ratelimit-reset-tokens"]).toBe("24s");
    const c = new TokenBucket(10_000, 0);
    expect(c.takeEstimate(9_999.5, 0).ok).toBe(true); // remaining floors to 0
    h = rateLimitHeaders({ requests: null, tokens: c }, 0, 0, true);
    expect(h["x-ratelimit-remaining-tokens"]).toBe("0");
    expect(h["x-ratelimit-reset-tokens"]).not.toBe("0s");
  });
  it("builds both header families; unlimited dimensions are omitted", () => {
    const clock = manualClock();
    const limiter = new RateLimiter(clock, 60);
    const b = limiter.forKey("k", { rpm: 100, tpm: null, concurrency: null });
    b.requests!.take(1, clock.monotonic());
    const h = rateLimitHeaders(b, clock.monotonic(), clock.now(), true);
    expect(h).toMatchObject({ "X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "99", "x-ratelimit-limit-requests": "100", "x-ratelimit-reset-requests": "600ms" });
    expect(Number(h["X-RateLimit-Reset"])).toBe(Math.ceil((clock.now() + 600) / 1000));
    expect(h).not.toHaveProperty("x-ratelimit-limit-tokens");
    expect(rateLimitHeaders(limiter.forKey("e", { rpm: null, tpm: null, concurrency: null }), 0, 0, true)).toEqual({});
  });
  it("seed 004's family says nothing remains, until the tokens budget admits again, while it admits nothing", () => {
    const clock = manualClock();
    const b = new RateLimiter(clock, 60).forKey("k", { rpm: 1000, tpm: 1000, concurrency: null });
    const now = clock.monotonic();
    b.requests!.take(1, now); // the requests budget is nearly full: it alone would reset in 60 ms
    b.tokens!.takeIfPositive(1500, now); // the tokens budget is 500 in debt: 30 s until it admits
    const h = rateLimitHeaders(b, now, clock.now(), true);
    expect(h["X-RateLimit-Remaining"]).toBe("0");
    expect(Number(h["X-RateLimit-Reset"])).toBe(Math.ceil((clock.now() + b.tokens!.msUntilPositive(now)) / 1000));
    expect(b.tokens!.msUntilPositive(now)).toBeGreaterThan(30_000);
    expect(h["x-ratelimit-remaining-requests"]).toBe("999"); // OpenAI's family reports each dimension itself
    // A route the tokens budget does not hold back (models, usage) says the requests left.
    const other = rateLimitHeaders(b, now, clock.now(), false);
    expect(other["X-RateLimit-Remaining"]).toBe("999");
    expect(Number(other["X-RateLimit-Reset"])).toBe(Math.ceil((clock.now() + b.requests!.msUntilFull(now)) / 1000));
    // Once the tokens budget admits again, the seed's family reports requests as before.
    clock.advance(31_000);
    expect(rateLimitHeaders(b, clock.monotonic(), clock.now(), true)["X-RateLimit-Remaining"]).toBe("1000");
  });
  it("a 429's message is seed 004's, in seconds, rounded up, grammatical at one", () => {
    expect(rateLimited(300, {}).message).toBe("Rate limit exceeded. Try again in 1 second.");
    expect(rateLimited(59_001, {}).message).toBe("Rate limit exceeded. Try again in 60 seconds.");
    expect(rateLimited(59_001, {}).headers).toEqual({ "retry-after": "60" });
  });
  it("a requests/min 429 names the tier's figure, and the tokens/min budget when its Retry-After waits for that too", () => {
    const free = { rpm: 10, tpm: 10_000, concurrency: null };
    expect(requestsSpent(6000, {}, free, false).message).toBe("Rate limit exceeded. Try again in 6 seconds. Requests per minute: this key's tier allows 10.");
    expect(requestsSpent(6000, {}, free, true).message).toBe("Rate limit exceeded. Try again in 6 seconds. Requests per minute: this key's tier allows 10, and its tokens per minute (10000) are spent too.");
  });
  it.each([[6000, "6s"], [60_000, "1m0s"], [90_500, "1m31s"], [250, "250ms"], [0, "0s"], [4_500_000, "1h15m0s"], [3_600_000, "1h0m0s"]])("durationString(%j) = %j", (ms, s) => {
    expect(durationString(ms)).toBe(s);
  });
});

describe("SSE splitting and metering", () => {
  async function* chunks(...parts: string[]) {
    for (const p of parts) yield new TextEncoder().encode(p);
  }
  it("yields whole events however the bytes are split, and drops an unterminated tail", async () => {
    const events: string[] = [];
    for await (const e of sseEvents(chunks('data: {"a"', ':1}\n', "\ndata: [DO", "NE]\r\n\r\n", "data: {\"cut"))) events.push(e);
    expect(events).toEqual(['data: {"a":1}', "data: [DONE]"]);
  });
  it("finds blank lines split between chunks, CRLF included, and one large event in many chunks", async () => {
    const read = async (...parts: string[]) => {
      const events: string[] = [];
      for await (const e of sseEvents(chunks(...parts))) events.push(e);
      return events;
    };
    expect(await read("data: a\n", "\n", "data: b\n", "\ndata: c\n\n")).toEqual(["data: a", "data: b", "data: c"]);
    expect(await read("data: a\r", "\n\r", "\n", "data: b\r\n\r\n")).toEqual(["data: a", "data: b"]);
    expect(await read("data: a\r", "\r", "data: b\r\r")).toEqual(["data: a", "data: b"]);
    expect(await read("data: a\r", "", "\ndata: x\n", "\n")).toEqual(["data: a\ndata: x"]);
    expect(await read(": c\n\n\n", "\ndata: a\n\n")).toEqual([": c", "data: a"]);
    const big = `data: {"x":"${"y".repeat(300_000)}"}`;
    const parts = [...big.matchAll(/[\s\S]{1,4096}/g)].map((m) => m[0]);
    expect(await read(...parts, "\n\ndata: [DONE]\n\n")).toEqual([big, "data: [DONE]"]);
  });
  it("refuses an event that grows past its limit (an upstream that never ends one), and passes one within it", async () => {
    const read = async (limit: number, ...parts: string[]) => {
      const events: string[] = [];
      for await (const e of sseEvents(chunks(...parts), limit)) events.push(e);
      return events;
    };
    const piece = "y".repeat(4096);
    await expect(read(10_000, "data: ", piece, piece, piece)).rejects.toBeInstanceOf(EventTooLargeError);
    expect(await read(10_000, "data: ", piece, piece, "\n\n", "data: [DONE]\n\n")).toEqual([`data: ${piece}${piece}`, "data: [DONE]"]);
  });
  it("splits a multi-byte character across chunks correctly", async () => {
    const bytes = new TextEncoder().encode('data: {"t":"é"}\n\n');
    const events: string[] = [];
    async function* split() {
      yield bytes.slice(0, 13);
      yield bytes.slice(13);
    }
    for await (const e of sseEvents(split())) events.push(e);
    expect(events).toEqual(['data: {"t":"é"}']);
  });
  it("reads data lines and ignores comments", () => {
    expect(eventData("data: x")).toBe("x");
    expect(eventData("data:x\ndata: y")).toBe("x\ny");
    expect(eventData(": comment")).toBeNull();
  });
  it("replaces an event's data keeping its other lines, one data: line per line of data", () => {
    expect(replaceEventData('data: {"a":1}', '{"b":2}')).toBe('data: {"b":2}');
    expect(replaceEventData('data: {"a":\ndata:1}', '{"b":\n2}')).toBe('data: {"b":\ndata: 2}');
    expect(replaceEventData('id: 7\nevent: message\ndata: {"a":\ndata: 1}\nretry: 10\n: c', '{"b":2}')).toBe('id: 7\nevent: message\ndata: {"b":2}\nretry: 10\n: c');
  });
  it("meters usage chunks, hides them when not asked, counts content chunks as a fallback", () => {
    const m = new StreamMeter({ clientWantsUsage: false, hideContinuous: true, outputsPerPrompt: 1, outputs: 1 });
    expect(m.process('data: {"choices":[{"delta":{"role":"assistant","content":""}}],"usage":{"prompt_tokens":3,"completion_tokens":0}}')).toEqual({ kind: "chunk", forward: 'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}' });
    m.process('data: {"choices":[{"delta":{"content":"a"}}],"usage":{"prompt_tokens":3,"completion_tokens":1}}');
    m.process('data: {"choices":[{"text":"b"}]}');
    expect(m.generated).toBe(2);
    // The running usage said 1, but two chunks carried content: a running count is never taken below that.
    expect(m.usage()).toEqual({ promptTokens: 3, completionTokens: 2 });
    expect(m.process('data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}')).toEqual({ kind: "usage", forward: null, data: '{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}' });
    expect(m.usage()).toEqual({ promptTokens: 3, completionTokens: 2 });
    expect(m.process("data: [DONE]")).toEqual({ kind: "done" });
    expect(m.process('data: {"error": {"message": "x"}}').kind).toBe("error");
  });
  it("hides usage it cannot read as it hides usage it can: by the chunk's shape", () => {
    const m = new StreamMeter({ clientWantsUsage: false, hideContinuous: false, outputsPerPrompt: 1, outputs: 1 });
    expect(m.process('data: {"choices":[{"delta":{"content":"a"}}],"usage":{"prompt_tokens":null,"completion_tokens":1}}')).toEqual({ kind: "chunk", forward: 'data: {"choices":[{"delta":{"content":"a"}}]}' });
    expect(m.process('data: {"choices":[],"usage":{}}')).toMatchObject({ kind: "usage", forward: null });
    expect(m.promptReported).toBe(false);
    expect(m.usage(true, () => 7)).toEqual({ promptTokens: 7, completionTokens: 1 });
  });
  it("a usage-only chunk that ends the answer is charged as it says; one content followed is never below the content chunks, its prompt only when owed", () => {
    const m = new StreamMeter({ clientWantsUsage: false, hideContinuous: false, outputsPerPrompt: 1, outputs: 1 });
    for (const t of ["a", "b"]) m.process(`data: {"choices":[{"delta":{"content":"${t}"}}]}`);
    m.process('data: {"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":1}}');
    m.process(": keep-alive"); // not data: the usage chunk is still the last word
    expect(m.complete).toBe(true);
    expect(m.usage(false)).toEqual({ promptTokens: 4, completionTokens: 1 });
    m.process('data: {"choices":[{"delta":{"content":"c"}}]}');
    expect(m.complete).toBe(false);
    expect(m.usage(true)).toEqual({ promptTokens: 4, completionTokens: 3 });
    expect(m.usage(false)).toEqual({ promptTokens: 0, completionTokens: 3 }); // an upstream failure: the content only
    m.process('data: {"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":5}}');
    expect(m.usage(false)).toEqual({ promptTokens: 4, completionTokens: 5 }); // the last usage chunk wins
  });
  it("splices members into a JSON object's text without reformatting it", () => {
    expect(spliceJson('{"a": 1.0, "b" : [ ]}\n', { c: "2" })).toBe('{"a": 1.0, "b" : [ ],"c":2}\n');
    expect(spliceJson("{}", { c: "2" })).toBe('{"c":2}');
  });
});

describe("usage periods", () => {
  const now = Date.UTC(2024, 11, 15, 10, 0, 0);
  it("defaults to the current UTC month, shown as seed 004 shows it", () => {
    expect(showPeriod(parsePeriod({}, now))).toEqual({ start: "2024-12-01T00:00:00Z", end: "2024-12-31T23:59:59Z" });
  });
  it("takes years 0000-0099 as written (Date.UTC reads 0-99 as 1900-1999)", () => {
    expect(() => parsePeriod({ from: "0050-01-01", to: "2024-12-02" }, now)).not.toThrow();
    expect(parsePeriod({ from: "0001-01-01T00:00:00Z", to: "2024-12-02" }, now).from).toBe(Date.parse("0001-01-01T00:00:00Z"));
    expect(() => parsePeriod({ from: "0050-02-30", to: "2024-12-02" }, now)).toThrow("0050-02-30 is not a day: February 0050 has 28 days");
  });
  it("a 'to' alone in years 0000-0099 reports its own month, not 'to must be after from'", () => {
    expect(parsePeriod({ to: "0050-03-15" }, now)).toEqual({ from: Date.parse("0050-03-01T00:00:00Z"), to: Date.parse("0050-03-16T00:00:00Z") });
    expect(parsePeriod({ to: "0100-01-01T00:00:00Z" }, now)).toEqual({ from: Date.parse("0099-12-01T00:00:00Z"), to: Date.parse("0100-01-01T00:00:00Z") });
  });
  it("a period running past 9999 ends at 10000-01-01, so its shown end is one the API reads back", () => {
    const shown = showPeriod(parsePeriod({ from: "9999-12-31T00:00:01Z" }, now));
    expect(shown.end).toBe("9999-12-31T23:59:59Z");
    expect(readInstant(shown.end)).toEqual({ ms: Date.UTC(10000, 0, 1) - 1000 });
    // Bounds past 10000-01-01 in UTC (a negative offset on 9999-12-31) keep their period, and are not refused.
    expect(parsePeriod({ from: "9999-12-31T20:00:00-10:00", to: "9999-12-31T22:00:00-10:00" }, now)).toEqual({ from: Date.UTC(10000, 0, 1, 6), to: Date.UTC(10000, 0, 1, 8) });
    expect(() => parsePeriod({ from: "9999-12-31T20:00:00-10:00" }, now)).not.toThrow();
  });
  it("accepts dates (to includes that day) and timestamps", () => {
    expect(parsePeriod({ from: "2024-12-02", to: "2024-12-02" }, now)).toEqual({ from: Date.UTC(2024, 11, 2), to: Date.UTC(2024, 11, 3) });
    expect(parsePeriod({ from: "2024-12-02T10:00:00Z", to: "2024-12-02T11:00:00Z" }, now).to).toBe(Date.UTC(2024, 11, 2, 11));
  });
  it("a 'to' alone reports the month it falls in; a sub-second period does not end before it starts", () => {
    expect(showPeriod(parsePeriod({ to: "2024-11-30" }, now))).toEqual({ start: "2024-11-01T00:00:00Z", end: "2024-11-30T23:59:59Z" });
    expect(showPeriod(parsePeriod({ to: "2024-12-01T00:00:00Z" }, now))).toEqual({ start: "2024-11-01T00:00:00Z", end: "2024-11-30T23:59:59Z" });
    expect(showPeriod(parsePeriod({ from: "2024-12-02T12:00:00Z", to: "2024-12-02T12:00:00.500Z" }, now))).toEqual({ start: "2024-12-02T12:00:00.000Z", end: "2024-12-02T12:00:00.499Z" });
    expect(parsePeriod({ from: "2024-02-29" }, now).from).toBe(Date.UTC(2024, 1, 29)); // a leap day exists
  });
  it("a 'from' alone runs at least one day past it, even at or after the month's end (found by mutation review)", () => {
    expect(parsePeriod({ from: "2024-12-31T12:00:00Z" }, now)).toEqual({ from: Date.UTC(2024, 11, 31, 12), to: Date.UTC(2025, 0, 1, 12) });
    expect(parsePeriod({ from: "2025-01-05" }, now)).toEqual({ from: Date.UTC(2025, 0, 5), to: Date.UTC(2025, 0, 6) });
  });
  it("takes negative offsets and Python's isoformat() with microseconds (found by mutation review)", () => {
    expect(parsePeriod({ from: "2024-12-01T00:00:00-05:00", to: "2024-12-02T00:00:00-0500" }, now)).toEqual({ from: Date.UTC(2024, 11, 1, 5), to: Date.UTC(2024, 11, 2, 5) });
    expect(parsePeriod({ from: "2024-12-01T00:00:00.123456+00:00", to: "2024-12-02T00:00:00.000000+00:00" }, now).from).toBe(Date.UTC(2024, 11, 1, 0, 0, 0, 123));
  });
  it("refuses an empty period: 'to' equal to 'from' (found by mutation review)", () => {
    expect(() => parsePeriod({ from: "2024-12-02T10:00:00Z", to: "2024-12-02T10:00:00Z" }, now)).toThrow(/after 'from'/);
  });
  it("a date-shaped value whose day does not exist is refused saying so, not as a value of the wrong shape", () => {
    expect(() => parsePeriod({ to: "2026-11-31" }, now)).toThrow("'to': 2026-11-31 is not a day: November 2026 has 30 days.");
    expect(() => parsePeriod({ from: "2025-02-29T10:00:00Z" }, now)).toThrow("'from': 2025-02-29 is not a day: February 2025 has 28 days.");
    expect(() => parsePeriod({ from: "2024-13-01" }, now)).toThrow("'from': 2024-13-01 is not a day: the month is 01 to 12.");
    expect(() => parsePeriod({ from: "2024-00-10" }, now)).toThrow("'from': 2024-00-10 is not a day: the month is 01 to 12.");
    expect(() => parsePeriod({ from: "2024-12-00" }, now)).toThrow("'from': 2024-12-00 is not a day: December 2024 has 31 days.");
    expect(() => parsePeriod({ from: "yesterday" }, now)).toThrow("'from' must be an ISO date (2026-01-31) or timestamp (2026-01-31T12:00:00Z).");
  });
  it.each([
    [{ from: "yesterday" }], [{ to: "2024-13-45" }], [{ from: "2024-12-05", to: "2024-12-01" }], [{ from: ["x"] }],
    // Dates that do not exist, which Date.parse would roll over into the next month.
    [{ from: "2026-02-30" }], [{ from: "2025-02-29" }], [{ to: "2024-04-31T10:00:00Z" }], [{ from: "2024-00-10" }],
  ])("rejects %j", (q) => {
    expect(() => parsePeriod(q as never, now)).toThrow();
  });
});

describe("usage of a non-streamed body", () => {
  it("is stored with each count clamped to what a usage row holds, sums over outputs included", () => {
    expect(storedUsage({ promptTokens: 4_000_000_000, completionTokens: 2 * 2_000_000_000 })).toEqual({ promptTokens: 2 ** 31 - 1, completionTokens: 2 ** 31 - 1 });
    expect(storedUsage({ promptTokens: 5, completionTokens: 7 })).toEqual({ promptTokens: 5, completionTokens: 7 });
    // Cache writes are charged from it (settlement.ts): kept, though no store row holds them.
    const cacheWrites = { fiveMinute: 1, oneHour: 2, unsplit: 0 };
    expect(storedUsage({ promptTokens: 5, completionTokens: 7, cacheWrites })).toEqual({ promptTokens: 5, completionTokens: 7, cacheWrites });
  });
  const bytes = (text: string) => Buffer.from(text);
  it("reads usage from small and large bodies, and says whether members can be spliced in", () => {
    expect(usageOfBody(bytes('{"a":1,"usage":{"prompt_tokens":3,"total_tokens":5,"completion_tokens":2}}\n'))).toEqual({ usage: { promptTokens: 3, completionTokens: 2 }, isObject: true });
    const big = JSON.stringify({ data: [{ embedding: Array.from({ length: 20_000 }, (_, i) => i / 7) }], note: '"usage":{"prompt_tokens":999}', usage: { prompt_tokens: 7, total_tokens: 7, completion_tokens: 0, prompt_tokens_details: null } });
    expect(big.length).toBeGreaterThan(64 * 1024);
    expect(usageOfBody(bytes(big))).toEqual({ usage: { promptTokens: 7, completionTokens: 0 }, isObject: true });
    // A member written with a space before its colon is the answer's usage too (found by the scan, not only by parsing the whole).
    const spaced = big.replace('"usage":{"prompt_tokens":7', '"usage" :{"prompt_tokens":7');
    expect(spaced).not.toBe(big);
    expect(usageOfBody(bytes(spaced))).toEqual({ usage: { promptTokens: 7, completionTokens: 0 }, isObject: true });
    const scanner = new UsageScanner();
    scanner.push(bytes(spaced));
    expect(scanner.usage()).toEqual({ promptTokens: 7, completionTokens: 0 });
    // Only the answer's own member counts: a nested object that reads as usage (a client's JSON
    // schema echoed in vLLM's input_messages, after the answer's usage) does not.
    const forged = JSON.stringify({ ...JSON.parse(big), input_messages: [{ tools: [{ parameters: { usage: { prompt_tokens: 0, completion_tokens: 0 } } }] }] });
    expect(usageOfBody(bytes(forged))).toEqual({ usage: { promptTokens: 7, completionTokens: 0 }, isObject: true });
    expect(usageOfBody(bytes("[1,2]"))).toEqual({ usage: null, isObject: false });
    expect(usageOfBody(bytes("not json"))).toEqual({ usage: null, isObject: false });
    expect(usageOfBody(bytes('{"no":"usage"}'))).toEqual({ usage: null, isObject: true });
  });
  // Found by a mutation review of json-splice.ts (isJsonSpace without "\r" survived): CR is JSON's
  // whitespace, and a body or request written with CRLF line endings (a pretty-printing proxy, a
  // client on Windows) must still be metered from its usage, get its credit members, and have its
  // stream_options replaced.
  it("takes CR as JSON whitespace: a CRLF-ended answer is read and spliced, a CRLF request's member replaced", () => {
    const crlf = bytes('{\r\n  "usage": {"prompt_tokens": 3, "completion_tokens": 2}\r\n}\r\n');
    expect(usageOfBody(crlf)).toEqual({ usage: { promptTokens: 3, completionTokens: 2 }, isObject: true });
    expect(Buffer.concat(spliceJsonBytes(bytes('{\r\n}\r\n'), { c: "1" })).toString()).toBe('{\r\n"c":1}\r\n');
    const pieces = spliceMemberValue(bytes('{\r\n"stream": true,\r\n"stream_options": null\r\n}'), "stream_options", '{"include_usage":true}');
    expect(pieces && Buffer.concat(pieces).toString()).toBe('{\r\n"stream": true,\r\n"stream_options": {"include_usage":true}\r\n}');
  });
  it("splices members into the body's bytes without reformatting or copying it", () => {
    const join = (pieces: Buffer[]) => Buffer.concat(pieces).toString();
    expect(join(spliceJsonBytes(bytes('{"a": 1.0, "b" : [ ]}\n'), { c: "2" }))).toBe('{"a": 1.0, "b" : [ ],"c":2}\n');
    expect(join(spliceJsonBytes(bytes("{ }"), { c: "2", d: '"x"' }))).toBe('{ "c":2,"d":"x"}');
    expect(join(spliceJsonBytes(bytes('{"a":{}}'), { c: "2" }))).toBe('{"a":{},"c":2}');
    const raw = bytes('{"é":"ü"}');
    const pieces = spliceJsonBytes(raw, { c: "2" });
    expect(join(pieces)).toBe('{"é":"ü","c":2}');
    raw[1] = 0x20; // the pieces are views of the body's own memory, not a copy
    expect(join(pieces)).toBe('{ é":"ü","c":2}');
  });
  it("replaces the value of an object's own member, the last of that name, leaving every other byte", () => {
    const replaced = (text: string) => {
      const pieces = spliceMemberValue(bytes(text), "so", "{}");
      return pieces && Buffer.concat(pieces).toString();
    };
    expect(replaced('{"a":1.0,"so":null,"b":[1,{"so":2}]}')).toBe('{"a":1.0,"so":{},"b":[1,{"so":2}]}');
    expect(replaced(' {\n "so" :\t[ "]", {"x":"}\\\\"} ] }\n')).toBe(' {\n "so" :\t{} }\n');
    // Written with escapes, it is the same name (JSON.parse's reading); of two, the last is the one read.
    expect(replaced('{"s\\u006f":1,"s\\\\o":2,"x":"\\"so\\":3","so":true}')).toBe('{"s\\u006f":1,"s\\\\o":2,"x":"\\"so\\":3","so":{}}');
    expect(replaced('{"so":"a very long string, past the 32 bytes walked one by one: \\" \\\\","so" : -1e5}')).toBe('{"so":"a very long string, past the 32 bytes walked one by one: \\" \\\\","so" : {}}');
    // The last, escaped, is the one JSON.parse (and the upstream) reads: it is replaced, not the plain one before it (found by mutation review).
    expect(replaced('{"so":{"a":1},"s\\u006f":null}')).toBe('{"so":{"a":1},"s\\u006f":{}}');
    // Nested or inside text only: not the object's own member.
    expect(replaced('{"a":{"so":1},"b":"\\"so\\":1"}')).toBeNull();
    // Space before a comma (a pretty-printer's `true ,`) still leads to the next member: missed, the
    // request went re-serialized, its big seed rounded and 1.10 written 1.1 (found by mutation review).
    expect(replaced('{"a":true ,"b" : 1.10\t,\n"c":"x" ,"so":null}')).toBe('{"a":true ,"b" : 1.10\t,\n"c":"x" ,"so":{}}');
    const raw = bytes('{"é":"ü","so":0}');
    const pieces = spliceMemberValue(raw, "so", "1")!;
    raw[1] = 0x20; // views of the body's own memory, as spliceJsonBytes's
    expect(Buffer.concat(pieces).toString()).toBe('{ é":"ü","so":1}');
  });
});

describe("metering fast path", () => {
  it("counts content-bearing chunks without parsing, and never counts empty or role-only chunks", () => {
    const m = new StreamMeter({ clientWantsUsage: true, hideContinuous: false, outputsPerPrompt: 1, outputs: 1 });
    const events = [
      'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}',
      'data: {"choices":[{"index":0,"delta":{"content":"a \\"usage\\":{ \\"error\\""},"finish_reason":null}]}',
      'data: {"choices":[{"index":0,"text":"b","finish_reason":null}],"usage":null}',
      'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{"}}]}}]}',
      'data: {"choices":[{"index":0,"delta":{"content":""},"finish_reason":"stop","stop_reason":null}]}',
    ];
    for (const e of events) expect(m.process(e)).toEqual({ kind: "chunk", forward: e });
    expect(m.generated).toBe(3);
    // The text's estimate (`a "usage":{ "error"`, `b`, `{`: 21 bytes, 6 tokens) is more than the 3 chunks.
    expect(m.usage()).toEqual({ promptTokens: 0, completionTokens: 6 });
    expect(m.usage(true, () => 7)).toEqual({ promptTokens: 7, completionTokens: 6 }); // a client that left owes its prompt
    expect(m.usage(false, () => 7)).toEqual({ promptTokens: 0, completionTokens: 6 }); // an upstream failure: the content only
  });
});

describe("running usage of several outputs", () => {
  it("vLLM's role chunk carries the prompt's usage, but is not content: nothing is owed for it", () => {
    const m = new StreamMeter({ clientWantsUsage: false, hideContinuous: true, outputsPerPrompt: 1, outputs: 1 });
    m.process('data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":{"prompt_tokens":12,"completion_tokens":0,"total_tokens":12}}');
    expect(m.sawUsage).toBe(true);
    expect(m.contentSeen).toBe(false);
    expect(m.usage(false, () => 99)).toEqual({ promptTokens: 0, completionTokens: 0 }); // a client that left now, or a failure
    expect(m.usage(true, () => 99)).toEqual({ promptTokens: 12, completionTokens: 0 }); // a stream that ended whole owes its prompt
  });

  // vLLM's continuous usage is per output: its own completion tokens, its own prompt's tokens.
  const chunk = (index: number, prompt: number, completion: number) =>
    `data: {"choices":[{"index":${index},"text":"x","finish_reason":null}],"usage":{"prompt_tokens":${prompt},"completion_tokens":${completion},"total_tokens":${prompt + completion}}}`;

  it("sums each output's latest completion tokens and each prompt's tokens once (n = 2, two prompts)", () => {
    const m = new StreamMeter({ clientWantsUsage: false, hideContinuous: true, outputsPerPrompt: 2, outputs: 4 });
    // Outputs 0 and 1 share prompt 0 (10 tokens); outputs 2 and 3 share prompt 1 (20 tokens).
    for (const [i, p] of [[0, 10], [1, 10], [2, 20], [3, 20]] as const) m.process(chunk(i, p, 1));
    for (const [i, p] of [[0, 10], [1, 10], [2, 20]] as const) m.process(chunk(i, p, 2));
    m.process(chunk(0, 10, 3));
    expect(m.usage(true, () => 999)).toEqual({ promptTokens: 30, completionTokens: 3 + 2 + 2 + 1 });
    expect(m.usage(false)).toEqual({ promptTokens: 0, completionTokens: 3 + 2 + 2 + 1 }); // an upstream failure: the content only
  });

  it("chat with n = 3: the one prompt counted once", () => {
    const m = new StreamMeter({ clientWantsUsage: false, hideContinuous: true, outputsPerPrompt: 3, outputs: 3 });
    for (let k = 1; k <= 4; k++) for (let i = 0; i < 3; i++) m.process(chunk(i, 12, k));
    expect(m.usage()).toEqual({ promptTokens: 12, completionTokens: 12 });
  });
});

describe("metering through LiteLLM", () => {
  // LiteLLM drops vLLM's usage-only chunk and sends its own final chunk, which keeps a choice;
  // depending on its version the JSON is written with spaces, as Python's json.dumps does.
  const spaced = [
    'data: {"id": "c1", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]}',
    'data: {"id": "c1", "choices": [{"index": 0, "delta": {"content": "lo"}}]}',
    'data: {"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0}]}}]}',
    'data: {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}}',
  ];

  it("charges the usage on LiteLLM's final chunk, spaced or not", () => {
    for (const events of [spaced, spaced.map((e) => e.replaceAll(": ", ":").replaceAll(", ", ","))]) {
      const m = new StreamMeter({ clientWantsUsage: true, hideContinuous: false, outputsPerPrompt: 1, outputs: 1 });
      for (const e of events) m.process(e);
      expect(m.generated).toBe(3);
      expect(m.usage()).toEqual({ promptTokens: 11, completionTokens: 3 });
    }
  });

  it("takes the answer as whole once its finish and its usage came, whichever chunk carries them, spaced or not", () => {
    const separate = [...spaced.slice(0, 3), 'data: {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}', 'data: {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": null}], "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}}'];
    for (const events of [spaced, separate]) {
      for (const text of [events, events.map((e) => e.replaceAll(": ", ":").replaceAll(", ", ","))]) {
        const m = new StreamMeter({ clientWantsUsage: false, hideContinuous: false, outputsPerPrompt: 1, outputs: 1 });
        for (const e of text.slice(0, -1)) m.process(e);
        expect(m.complete).toBe(false);
        m.process(text.at(-1)!);
        expect(m.complete).toBe(true);
        expect(m.usage()).toEqual({ promptTokens: 11, completionTokens: 3 });
      }
    }
  });

  it("shows that usage to a client that asked for it, and hides it (keeping the choice) from one that did not", () => {
    const asked = new StreamMeter({ clientWantsUsage: true, hideContinuous: false, outputsPerPrompt: 1, outputs: 1 });
    // Held as a usage chunk (stream.ts), for the credit figures if it is the last: the whole request's, nothing generated on it.
    expect(asked.process(spaced[3]!)).toEqual({ kind: "usage", forward: spaced[3], data: spaced[3]!.slice("data: ".length) });
    const notAsked = new StreamMeter({ clientWantsUsage: false, hideContinuous: false, outputsPerPrompt: 1, outputs: 1 });
    const out = notAsked.process(spaced[3]!);
    expect(out.kind).toBe("chunk");
    const forwarded = JSON.parse((out as { forward: string }).forward.slice("data: ".length));
    expect(forwarded).toEqual({ id: "c1", choices: [{ index: 0, delta: {}, finish_reason: "stop" }] });
    expect(notAsked.usage()).toEqual({ promptTokens: 11, completionTokens: 3 });
  });

  it("counts spaced content chunks for the disconnect fallback, with the prompt estimate once the answer began", () => {
    const m = new StreamMeter({ clientWantsUsage: false, hideContinuous: false, outputsPerPrompt: 1, outputs: 1 });
    expect(m.usage(true, () => 7)).toEqual({ promptTokens: 0, completionTokens: 0 }); // nothing came: no prompt owed
    // Data without a choice says nothing of the answer: an empty object, Azure's prompt filter results.
    m.process("data: {}");
    m.process('data: {"id": "c1", "choices": [], "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]}');
    m.process('data: {"id":"c1","choices":[ ],"prompt_filter_results":[]}');
    expect(m.answerBegan).toBe(false);
    expect(m.usage(true, () => 7)).toEqual({ promptTokens: 0, completionTokens: 0 });
    m.process('data: {"id": "c1", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}');
    expect(m.answerBegan).toBe(true);
    expect(m.contentSeen).toBe(false);
    expect(m.usage(true, () => 7)).toEqual({ promptTokens: 7, completionTokens: 0 }); // the role chunk: the prompt was processed
    for (const e of spaced.slice(0, 3)) m.process(e);
    expect(m.usage(true, () => 7)).toEqual({ promptTokens: 7, completionTokens: 3 });
  });
});

describe("in-stream error events", () => {
  it("are told apart from chunks with a null error member", () => {
    const m = new StreamMeter({ clientWantsUsage: false, hideContinuous: false, outputsPerPrompt: 1, outputs: 1 });
    const withNull = 'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"a"}}],"error":null}';
    expect(m.process(withNull)).toEqual({ kind: "chunk", forward: withNull });
    expect(m.process('data: {"error": {"message": "boom", "code": 500}}').kind).toBe("error");
  });

  it.each([
    // vLLM: the status as a number; a 5xx's message is the engine's internals and is not passed on.
    ['{"error": {"message": "Engine loop has died", "type": "InternalServerError", "param": null, "code": 500}}', 502, "upstream_error", undefined],
    // LiteLLM (the deployed upstream): the status as a string.
    ['{"error": {"message": "ctx too long", "type": "invalid_request_error", "param": null, "code": "400"}}', 400, "invalid_request", "ctx too long"],
    ['{"error": {"message": "slow down", "type": "rate_limit_error", "code": "429"}}', 503, "service_unavailable", undefined],
    ['{"error": {"message": "what", "code": "abc"}}', 502, "upstream_error", undefined],
  ] as const)("%s → %i %s", (data, status, code, message) => {
    const e = upstreamErrorBody(data, "m", noSecrets);
    expect({ status: e.status, code: e.code }).toEqual({ status, code });
    if (message) expect(e.message).toBe(message);
    else expect(e.message).not.toMatch(/Engine|slow down|what/);
  });
});

describe("request log line", () => {
  const capture = () => {
    const lines: string[] = [];
    return { lines, logger: createLogger({ level: "info", pretty: false, destination: { write: (l: string) => void lines.push(l) } }) };
  };
  const cases: RequestLine[] = [
    { reqId: "5b0c1a2e-3f4d-4e5f-8a9b-0c1d2e3f4a5b", method: "POST", path: "/v1/chat/completions", status: 200, ms: 1.23, keyId: "AbC123xyz789", model: "qwen2.5-7b", tokens: 30, cost: 1.0016 },
    { reqId: "r", method: "GET", path: '/v1/"odd"\\path\u0001\u2028', status: 401, ms: 0, keyId: null, model: null, tokens: null, cost: null, error: "invalid_api_key" },
    { reqId: "r2", method: "POST", path: "/v1/completions", status: 499, ms: 12.5, keyId: "k", model: "m\ud800\n", tokens: 0, cost: 0, error: "client_closed_request" },
    { reqId: "r3", method: "POST", path: "/v1/chat/completions", status: 502, ms: 3, keyId: "k", model: "m", tokens: 0, cost: 0, error: "upstream_error", cause: "ECONNREFUSED" },
    { reqId: "r4", method: "POST", path: "/v1/chat/completions", status: 401, ms: 0.5, keyId: "AbC123xyz789", model: null, tokens: null, cost: null, error: "invalid_api_key", keyRefused: "revoked" },
  ];
  it.each(cases)("is what pino itself writes for logger.info(line, 'request'): %j", (line) => {
    const fast = capture();
    const slow = capture();
    const now = Date.now;
    Date.now = () => 1_763_766_061_000; // pino's time field
    try {
      requestLogger(fast.logger)(line);
      slow.logger.info(line, "request");
    } finally {
      Date.now = now;
    }
    expect(fast.lines).toHaveLength(1);
    expect(JSON.parse(fast.lines[0]!)).toEqual(JSON.parse(slow.lines[0]!));
    expect(Object.keys(JSON.parse(fast.lines[0]!))).toEqual(Object.keys(JSON.parse(slow.lines[0]!)));
    expect(fast.lines[0]!.endsWith("}\n")).toBe(true);
  });
  it("hides an Authorization header should a line ever carry a request's headers, with or without the request", () => {
    const { lines, logger } = capture();
    logger.warn({ headers: { authorization: "Bearer sk-gs-AbC123xyz789_secret" } }, "h");
    logger.warn({ req: { headers: { authorization: "Bearer sk-gs-AbC123xyz789_secret" } } }, "r");
    expect(lines).toHaveLength(2);
    for (const line of lines) expect(line).toContain('"authorization":"[redacted]"');
  });
  it("writes nothing below the logger's level, and falls back to pino when the logger is not plain", () => {
    const quiet = { lines: [] as string[] };
    requestLogger(createLogger({ level: "warn", pretty: false, destination: { write: (l: string) => void quiet.lines.push(l) } }))(cases[0]!);
    expect(quiet.lines).toEqual([]);
    const lines: string[] = [];
    const mixed = pino({ mixin: () => ({ extra: 1 }) }, { write: (l: string) => void lines.push(l) });
    requestLogger(mixed)(cases[0]!);
    expect(JSON.parse(lines[0]!)).toMatchObject({ extra: 1, reqId: cases[0]!.reqId, msg: "request" });
  });
});

describe("Inflight", () => {
  it("counts registrations, reuses freed slots, and a done function works once", () => {
    const f = new Inflight();
    const a = f.add(() => {});
    const b = f.add(() => {});
    expect(f.size).toBe(2);
    a();
    a();
    expect(f.size).toBe(1);
    const c = f.add(() => {});
    expect(f.size).toBe(2);
    b();
    c();
    expect(f.size).toBe(0);
  });

  it("drain waits for requests to finish, then aborts the rest with reason 'drain'", async () => {
    const f = new Inflight();
    const reasons: string[] = [];
    const quick = f.add(() => reasons.push("quick"));
    let slowDone = () => {};
    slowDone = f.add((reason) => {
      reasons.push(reason);
      slowDone();
    });
    setTimeout(quick, 5);
    expect(await f.drain(50)).toEqual({ aborted: 1 });
    expect(reasons).toEqual(["drain"]);
    expect(f.size).toBe(0);
    expect(f.draining).toBe(true);
    expect(await new Inflight().drain(10)).toEqual({ aborted: 0 });
  });

  it("after the cut, a request that finishes before its abort's turn comes is not aborted, nor is another put in its slot", async () => {
    const f = new Inflight();
    f.abortAll("drain");
    const reasons: string[] = [];
    const done = f.add((reason) => reasons.push(`first ${reason}`));
    done(); // over at once (answered from memory, refused), before the queued abort runs
    const second = f.add((reason) => reasons.push(`second ${reason}`)); // takes the freed slot
    await Promise.resolve();
    await Promise.resolve();
    expect(reasons).toEqual(["second drain"]);
    expect(f.aborted).toBe(1);
    second();
    expect(f.size).toBe(0);
  });

  it("a drain emptied early by abortAll (a second signal, a store failure) ends then, counting each request it cut once", async () => {
    const f = new Inflight();
    const reasons: string[] = [];
    const dones: (() => void)[] = [];
    for (let i = 0; i < 2; i++) {
      const done = f.add((reason) => {
        reasons.push(reason);
        setTimeout(done, 5); // it settles a little later, as a cut stream does
      });
      dones.push(done);
    }
    const started = performance.now();
    const drained = f.drain(10_000);
    f.abortAll("drain");
    f.abortAll("drain"); // again before they settled: nothing aborted twice
    expect(await drained).toEqual({ aborted: 2 });
    expect(performance.now() - started).toBeLessThan(1000);
    expect(reasons).toEqual(["drain", "drain"]);
    expect(f.size).toBe(0);
  });
});

describe("an upstream's 400 message, as the client gets it", () => {
  // LiteLLM's gemini/ provider sends its key in the URL's query, and httpx's error quotes the URL (LiteLLM issue #24902).
  const geminiKey = "AIzaSyD-THE-OPERATORS-GEMINI-KEY-0123456";
  const gemini = `litellm.BadRequestError: GeminiException BadRequestError - Client error '400 Bad Request' for url 'https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:generateContent?key=${geminiKey}'. Received Model Group=gemini-pro`;
  const body = (message: string) => JSON.stringify({ error: { message, type: null, param: null, code: "400" } });

  it("keeps a URL's scheme, host and path and drops its query, answered or streamed", () => {
    const shown = "Client error '400 Bad Request' for url 'https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:generateContent?…'";
    for (const e of [upstreamStatusError(400, body(gemini), "gemini-pro", undefined, noSecrets), upstreamErrorBody(body(gemini), "gemini-pro", noSecrets)]) {
      expect({ status: e.status, code: e.code }).toEqual({ status: 400, code: "invalid_request" });
      expect(e.message).toBe(shown);
      expect(e.message).not.toContain("AIza");
    }
    // A 422, and a message that is not LiteLLM's, alike; credentials in a URL go too.
    const plain = upstreamStatusError(422, body(`bad request to http://user:pw@api.example.test/v1/x?api_key=${geminiKey}&a=1#frag, retry`), undefined, undefined, noSecrets);
    expect(plain.message).toBe("bad request to http://api.example.test/v1/x?…, retry");
  });

  it("hides providers' key shapes outside URLs, and leaves the rest readable", () => {
    const keys = [
      ["sk-proj-Abc123_def456-GHI789jkl012MNO345", "sk-[redacted]"], // OpenAI
      ["sk-ant-api03-AbCdEf0123456789-xyz_ABC", "sk-[redacted]"], // Anthropic
      ["sk-1234567890abcdef1234567890abcdef", "sk-[redacted]"], // DeepSeek, a LiteLLM master key
      [geminiKey, "AIza[redacted]"], // Google
      [`gsk_${"AbCdEf0123456789".repeat(3)}AbCd`, "gsk_[redacted]"], // Groq: 52 after the prefix
      [`xai-${"AbCdEf0123456789".repeat(5)}`, "xai-[redacted]"], // xAI: 80
      ["sk-gs-AbC123xyz789_abcdefghijABCDEFGHIJ0123456789ab", "sk-gs-[redacted]"], // ours
    ];
    for (const [key, hidden] of keys) {
      const e = upstreamStatusError(400, body(`litellm.AuthenticationError: OpenAIException - Incorrect API key provided: ${key}. You can find your API key at https://platform.openai.com/account/api-keys.`), "m", undefined, noSecrets);
      expect(e.message, key).toBe(`Incorrect API key provided: ${hidden}. You can find your API key at https://platform.openai.com/account/api-keys.`);
    }
    const readable = "max_tokens is too large: 100000. This model supports at most 16384 completion tokens, whereas you provided 100000. See the task-sketch, risk-free and sk-learn docs.";
    expect(upstreamStatusError(400, body(`litellm.BadRequestError: OpenAIException - ${readable}`), "m", undefined, noSecrets).message).toBe(readable);
  });
});

describe("an upstream error body whose message is empty", () => {
  const empty = JSON.stringify({ error: { message: "", type: "BadRequestError", param: null, code: 400 } });
  it("gives the client the table's message, not an empty one; as a 404 it is a route the upstream lacks, not the model", () => {
    expect(upstreamStatusError(400, empty, "m", undefined, noSecrets).message).toBe("Invalid request.");
    expect(upstreamErrorBody(empty, "m", noSecrets).message).toBe("Invalid request.");
    expect(upstreamStatusError(404, empty, "m", undefined, noSecrets)).toMatchObject({ status: 502, code: "upstream_error" });
  });
});

// Found by review: an upstream 429/503's Retry-After was relayed as given when it was whole
// seconds ("0" too: OpenAI's SDK then retries twice at once into the same refusal) and as 1 s
// otherwise (a fractional "2.5", or an HTTP-date, made the SDK retry too early).
describe("an upstream's Retry-After, as the client gets it", () => {
  const relayed = (value: string | undefined, status = 429) => upstreamStatusError(status, "", "m", value, noSecrets).headers!["retry-after"];

  it("never says less than 1 s, and rounds fractional seconds up", () => {
    expect(relayed("0")).toBe("1");
    expect(relayed("2.5")).toBe("3");
    expect(relayed("7", 503)).toBe("7");
    expect(relayed(undefined)).toBe("1");
    expect(relayed("soon")).toBe("1");
  });

  it("turns an HTTP-date into the seconds until then", () => {
    const inTenSeconds = new Date(Date.now() + 10_000).toUTCString();
    expect(Number(relayed(inTenSeconds))).toBeGreaterThanOrEqual(9);
    expect(Number(relayed(inTenSeconds))).toBeLessThanOrEqual(11);
    expect(relayed(new Date(Date.now() - 60_000).toUTCString())).toBe("1");
  });

  it("caps a wait longer than a day", () => {
    expect(relayed("99999999")).toBe("86400");
  });
});
