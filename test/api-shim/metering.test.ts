import { createServer, type Server } from "node:http";
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseInferenceRequest } from "../../api-shim/src/requests/inference-request.ts";
import { usageOfBody } from "../../api-shim/src/metering/answer-body.ts";
import { StreamMeter } from "../../api-shim/src/metering/metering.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";

const meter = (echo = false) => new StreamMeter({ clientWantsUsage: false, hideContinuous: false, outputsPerPrompt: 1, outputs: 1, echo });
const delta = (d: unknown, extra: Record<string, unknown> = {}) => `data: ${JSON.stringify({ id: "c1", object: "chat.completion.chunk", choices: [{ index: 0, delta: d, finish_reason: null, ...extra }] })}`;

describe("the completion count of a stream without usage", () => {
  it("counts deltas of function_call, refusal and audio as generated content, as content and tool_calls are", () => {
    for (const d of [{ function_call: { arguments: "{" } }, { function_call: { name: "f" } }, { refusal: "no" }, { audio: { id: "a", data: "AAAA" } }, { tool_calls: [{ index: 0 }] }, { content: "a" }]) {
      const m = meter();
      m.process(delta({ role: "assistant", content: null }));
      expect(m.contentSeen, JSON.stringify(d)).toBe(false);
      m.process(delta(d));
      expect(m.contentSeen, JSON.stringify(d)).toBe(true);
      expect(m.usage(false).completionTokens, JSON.stringify(d)).toBe(1);
      // The same in a chunk the meter parses (it carries a finish), and written with spaces (LiteLLM).
      const parsed = meter();
      parsed.process(delta(d, { finish_reason: "stop" }).replaceAll(":", ": ").replaceAll(",", ", "));
      expect(parsed.usage(false).completionTokens, JSON.stringify(d)).toBe(1);
    }
    // Empty or null ones are not content (an empty `content` is a token vLLM held back:
    // stream-token-ids.test.ts).
    const m = meter();
    for (const d of [{ refusal: "" }, { refusal: null }, { function_call: null }, { audio: null }, { content: null }]) m.process(delta(d));
    expect(m.contentSeen).toBe(false);
  });

  it("is the generated text's estimate when one chunk carries many tokens (vLLM merges outputs when its consumer lags)", () => {
    const m = meter();
    // 5,000 digits in one chunk: 5,000 tokens at least for Qwen's tokenizer, one chunk.
    m.process(delta({ content: "7".repeat(5000) }));
    expect(m.usage(false).completionTokens).toBe(5000);
    // Each kind of generated text counts, escapes read as characters: `say "hi"` is 8 bytes.
    const kinds = meter();
    kinds.process(delta({ content: "abcd" }));
    kinds.process(delta({ reasoning_content: "abcd" }));
    kinds.process(delta({ tool_calls: [{ index: 0, function: { name: "f", arguments: "{\"q\":\"12\"}" } }] }));
    kinds.process(delta({ function_call: { arguments: "say \"hi\"" } }));
    kinds.process(delta({ refusal: "你好" }));
    kinds.process(delta({ audio: { id: "a", data: "AAAA", transcript: "abcd" } }));
    // Digits and non-ASCII characters: 1 2 你 好 (4); other bytes: 4 + 4 + 1 (the call's name `f`) +
    // 8 (`{"q":""}`) + 8 + 4 = 29 → 8.
    expect(kinds.usage(false).completionTokens).toBe(4 + 8);
    // Never below the chunks: six chunks of one letter each.
    const short = meter();
    for (let i = 0; i < 6; i++) short.process(delta({ content: "a" }));
    expect(short.usage(false).completionTokens).toBe(6);
  });

  it("counts the text of every choice of a chunk, in chunks the meter parses too, and LiteLLM's escapes of non-ASCII text", () => {
    const m = new StreamMeter({ clientWantsUsage: false, hideContinuous: false, outputsPerPrompt: 2, outputs: 2, echo: false });
    m.process(`data: {"choices":[{"index":0,"delta":{"content":"${"1".repeat(300)}"}},{"index":1,"delta":{"content":"${"2".repeat(300)}"}}]}`);
    m.process(`data: {"choices": [{"index": 0, "delta": {"content": "\\u4f60\\u597d"}, "finish_reason": "stop"}]}`);
    expect(m.usage(false).completionTokens).toBe(600 + 2);
  });

  it("never takes the text's estimate above the most the outputs may generate (the hold's bound), nor the count below the chunks", () => {
    const m = new StreamMeter({ clientWantsUsage: false, hideContinuous: false, outputsPerPrompt: 1, outputs: 1, maxCompletion: 100 });
    m.process(delta({ content: "7".repeat(5000) }));
    expect(m.usage(false).completionTokens).toBe(100);
    const chunks = new StreamMeter({ clientWantsUsage: false, hideContinuous: false, outputsPerPrompt: 1, outputs: 1, maxCompletion: 2 });
    for (let i = 0; i < 3; i++) chunks.process(delta({ content: "a" }));
    expect(chunks.usage(false).completionTokens).toBe(3);
  });

  it("is not raised above the upstream's own count", () => {
    const m = meter();
    m.process(delta({ content: "9".repeat(500) }));
    m.process('data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":100}}');
    expect(m.usage(false)).toEqual({ promptTokens: 3, completionTokens: 100 });
  });

  it("counts reasoning once when a delta carries it as both `reasoning` and `reasoning_content` (vLLM from PR #27752 until #33402)", () => {
    const text = "Let me think about this step by step. ".repeat(100); // 3,800 ASCII bytes: 950 tokens
    for (const parsed of [false, true]) {
      const extra = parsed ? { finish_reason: "stop" } : {}; // a finish: the meter parses the chunk
      const both = meter();
      both.process(delta({ reasoning: text, reasoning_content: text }, extra));
      expect(both.usage(false).completionTokens, `parsed ${parsed}`).toBe(950);
      // The larger of the two when they differ, and the content beside them still counts.
      const uneven = meter();
      uneven.process(delta({ reasoning_content: "abcd", reasoning: "abcdefgh", content: "abcd" }, extra));
      expect(uneven.usage(false).completionTokens, `parsed ${parsed}`).toBe(3);
    }
    // Per event, not per stream: events carrying one member each are different text, all counted.
    const alternating = meter();
    for (let i = 0; i < 10; i++) alternating.process(delta(i % 2 ? { reasoning: "abcdefgh" } : { reasoning_content: "abcdefgh" }));
    expect(alternating.usage(false).completionTokens).toBe(20);
  });
});

describe("the completion count of a stream without usage, with `echo`", () => {
  const echoMeter = (outputs = 1, maxCompletion?: number) => new StreamMeter({ clientWantsUsage: false, hideContinuous: false, outputsPerPrompt: outputs, outputs, echo: true, maxCompletion });
  const text = (index: number, t: string, finish: string | null = null) => `data: ${JSON.stringify({ id: "cmpl-1", object: "text_completion", choices: [{ index, text: t, logprobs: null, finish_reason: finish }] })}`;

  it("leaves out each output's first text (vLLM's prompt and first token: the token counts one) and counts the text after it", () => {
    const m = echoMeter();
    m.process(text(0, `${"9".repeat(500)} and`)); // the prompt echoed, then the first token
    expect(m.usage(false).completionTokens).toBe(1);
    // A lagging consumer's 1,000 tokens merged into one chunk (" word" × 1,000: 5,000 bytes, 1,250 tokens).
    m.process(text(0, " word".repeat(1000)));
    expect(m.usage(false).completionTokens).toBe(1 + 1250);
    // Within the most the outputs may generate.
    const capped = echoMeter(1, 100);
    capped.process(text(0, "Hi"));
    capped.process(text(0, " word".repeat(1000)));
    expect(capped.usage(false).completionTokens).toBe(100);
  });

  it("leaves out the first text of every output, each in its own chunk or parsed with a finish, and nothing after", () => {
    const m = echoMeter(2);
    m.process(text(0, "9".repeat(400)));
    m.process(text(0, " more")); // output 0's own text: 2
    m.process(text(1, "9".repeat(400), "length")); // output 1's prompt, in a chunk the meter parses
    m.process(text(1, "9".repeat(8))); // 8
    m.process(text(0, "9".repeat(400))); // output 0 already echoed: generated text
    expect(m.usage(false).completionTokens).toBe(2 + 2 + 8 + 400);
  });

  it("in chat, leaves out the echoed last message, which comes after the role's chunk (its content is empty)", () => {
    const m = echoMeter();
    m.process(delta({ role: "assistant", content: "" }));
    m.process(delta({ content: "9".repeat(400) })); // the last message, echoed
    m.process(delta({ content: " word".repeat(100) })); // 500 bytes: 125
    // The echo carries no token (vLLM's chat sends the last message alone): only the text after it counts.
    expect(m.usage(false).completionTokens).toBe(125);
  });

  // Found by review: the echo chunk counted as a token, so a stream cut with running usage only was charged one more per output.
  it("in chat, charges running usage as reported: the echo chunk is no generated token", () => {
    const m = echoMeter();
    const usage = (c: number) => ({ usage: { prompt_tokens: 10, completion_tokens: c, total_tokens: 10 + c } });
    const chunk = (d: unknown, c: number) => `data: ${JSON.stringify({ id: "c1", object: "chat.completion.chunk", choices: [{ index: 0, delta: d, finish_reason: null }], ...usage(c) })}`;
    m.process(chunk({ role: "assistant", content: "" }, 0));
    m.process(chunk({ content: "echoed last message" }, 0));
    for (let k = 1; k <= 5; k++) m.process(chunk({ content: "w" }, k));
    expect(m.usage(true)).toEqual({ promptTokens: 10, completionTokens: 5 });
  });

  // Found by review: a last message of a plain string part was not known as echoed (inference-request's echo), and its text charged as generated.
  it("in chat, leaves out a last message vLLM reads as text from a string part, as the request's echo reads it", () => {
    const req = parseInferenceRequest("chat", { model: "m", messages: [{ role: "user", content: "q" }, { role: "assistant", content: ["9".repeat(2000)] }], echo: true, stream: true, max_tokens: 4096 });
    const m = new StreamMeter({ clientWantsUsage: false, hideContinuous: false, outputsPerPrompt: 1, outputs: 1, echo: req.echo, maxCompletion: 4096 });
    m.process(delta({ role: "assistant", content: "" }));
    m.process(delta({ content: "9".repeat(2000) })); // the echo
    m.process(delta({ content: " Once" })); // one generated token
    expect(m.usage(true, () => 10).completionTokens).toBe(2); // " Once": 5 bytes, 2 tokens by the estimate
  });
});

/** An upstream (as LiteLLM streams a provider's answer: no running usage) writing 50 deltas of one shape, then stalling or breaking. */
let shape: "content" | "function_call" | "refusal" | "audio" | "coalesced" | "reasoning" = "content";
let breakAfter = false;
let upstream: Server;
async function startUpstream(): Promise<string> {
  upstream = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      const send = (d: unknown) => res.write(`${delta(d)}\n\n`);
      send({ role: "assistant", content: shape === "content" ? "" : null });
      for (let i = 0; i < 50; i++) {
        if (shape === "content") send({ content: ` word${i}` });
        else if (shape === "coalesced") send({ content: Array.from({ length: 100 }, (_, j) => ` word${i}_${j}`).join("") });
        else if (shape === "function_call") send({ function_call: { arguments: ` "word${i}",` } });
        else if (shape === "refusal") send({ refusal: ` word${i}` });
        // vLLM from PR #27752 until #33402 writes every reasoning delta in both members.
        else if (shape === "reasoning") send({ reasoning: ` word${i}`, reasoning_content: ` word${i}` });
        else send({ audio: { id: "a", data: "AAAA".repeat(100), transcript: ` word${i}` } });
      }
      if (breakAfter) setTimeout(() => res.destroy(), 50);
    });
  });
  upstream.listen(0, "127.0.0.1");
  await once(upstream, "listening");
  return `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1`;
}

/**
 * Completion tokens of the 50 deltas of each shape, as the estimate counts them: the numbers
 * 0-49 are 90 digits; ` word` is 5 bytes (250 in all: 63 tokens), ` "word",` 8 (400: 100).
 * Coalesced, 100 pieces ` word<i>_<j>` a chunk: 100 × 90 + 50 × 190 digits, 6 bytes each (30,000: 7,500).
 */
const COMPLETION = { content: 90 + 63, refusal: 90 + 63, audio: 90 + 63, reasoning: 90 + 63, function_call: 90 + 100, coalesced: 18_500 + 7_500 };
/** The prompt's estimate: `[{"role":"user","content":"hi"}]`, 32 bytes. */
const PROMPT = 8;

describe("a streamed answer whose usage never comes, as the shim charges it", () => {
  let h: Harness;
  beforeAll(async () => {
    const url = await startUpstream();
    h = await startShim({
      // 1 credit a request, 1 per 1k prompt tokens, 10 per 1k completion tokens.
      file: { pricing: { request: 1, models: { "gpt-4o": { promptPer1k: 1, completionPer1k: 10 } } }, models: [{ name: "gpt-4o", continuousUsage: false, tokenPrompts: false }] },
      env: { SHIM_UPSTREAM_URL: url },
    });
  });
  afterAll(async () => {
    await h.close();
    upstream.closeAllConnections();
    upstream.close();
  });

  for (const s of ["content", "function_call", "refusal", "audio", "coalesced", "reasoning"] as const) {
    it(`${s}: the client leaves after 50 chunks: charged the request, its prompt's estimate and the generated text's`, async () => {
      shape = s;
      const { id, key } = await h.createKey({ credits: 2000, tier: "developer" });
      const ac = new AbortController();
      const res = await fetch(`${h.url}/v1/chat/completions`, {
        method: "POST", signal: ac.signal,
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body: JSON.stringify({ model: "gpt-4o", stream: true, max_tokens: 100_000, messages: [{ role: "user", content: "hi" }] }),
      });
      const reader = res.body!.getReader();
      let text = "";
      while ((text.match(/word/g) ?? []).length < ({ coalesced: 5000, reasoning: 100 }[s as string] ?? 50)) text += new TextDecoder().decode((await reader.read()).value);
      ac.abort();
      const line = await h.waitForRequestLog((l) => l.keyId === id);
      expect(line.status).toBe(499);
      expect(line.tokens).toBe(PROMPT + COMPLETION[s]);
      expect(line.cost).toBe((1_000_000 + PROMPT * 1000 + COMPLETION[s] * 10_000) / 1e6); // in µc, then credits
    });
  }

  it("function_call: the upstream breaks after 50 chunks: charged the content delivered, as for content", async () => {
    shape = "function_call";
    breakAfter = true;
    try {
      const { id, key } = await h.createKey({ credits: 1000, tier: "developer" });
      const res = await h.post(key, "/v1/chat/completions", { model: "gpt-4o", stream: true, max_tokens: 1000, messages: [{ role: "user", content: "hi" }] });
      const text = await res.text();
      expect(text).toContain('"code":"upstream_error"');
      const line = await h.waitForRequestLog((l) => l.keyId === id);
      expect(line.tokens).toBe(COMPLETION.function_call);
      expect(line.cost).toBe((1_000_000 + COMPLETION.function_call * 10_000) / 1e6);
    } finally {
      breakAfter = false;
    }
  });
});

/**
 * Found by mutation review: the prompt-cache reads of a stream charged from its running usage
 * (cut short, no usage-only chunk) or from a usage-only chunk whose prompt count is missing.
 * Summing the groups' cached tokens as their largest alone, adding them per output rather than
 * per prompt, or letting one group's nonsense count (more cached than its prompt) discount
 * another group's tokens, all passed every other test; so did discounting a prompt estimate.
 */
describe("the cached prompt tokens a stream is charged for", () => {
  /** A chunk of output `index` with running usage: its prompt's tokens, `cached` of them read from a cache. */
  const running = (index: number, prompt: number, cached: number, completion: number) =>
    `data: ${JSON.stringify({ id: "c1", object: "text_completion", choices: [{ index, text: "w", finish_reason: null }], usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion, prompt_tokens_details: { cached_tokens: cached } } })}`;

  it("from running usage: each prompt's cached tokens once, summed over the prompts (2 prompts × n = 2)", () => {
    const m = new StreamMeter({ clientWantsUsage: false, hideContinuous: false, outputsPerPrompt: 2, outputs: 4 });
    // Prompt 0 (outputs 0, 1): 1,000 tokens, 800 cached; prompt 1 (outputs 2, 3): 500 tokens, 300 cached.
    for (let k = 1; k <= 3; k++) for (const [index, prompt, cached] of [[0, 1000, 800], [1, 1000, 800], [2, 500, 300], [3, 500, 300]]) m.process(running(index!, prompt!, cached!, k));
    expect(m.usage(true)).toEqual({ promptTokens: 1500, completionTokens: 12, cachedTokens: 1100 });
    // The prompt not owed: no prompt, so no cached tokens either.
    expect(m.usage(false)).toEqual({ promptTokens: 0, completionTokens: 12 });
  });

  it("from running usage: a prompt's cached tokens beyond its own prompt's count discount no other prompt's", () => {
    const m = new StreamMeter({ clientWantsUsage: false, hideContinuous: false, outputsPerPrompt: 1, outputs: 2 });
    m.process(running(0, 100, 5000, 1)); // upstream nonsense: more cached than the prompt
    m.process(running(1, 100, 0, 1));
    expect(m.usage(true)).toEqual({ promptTokens: 200, completionTokens: 2, cachedTokens: 100 });
  });

  it("from a usage-only chunk without a prompt count: the prompt's estimate is charged in full, its cached tokens not applied to it", () => {
    const m = meter();
    m.process(delta({ content: "a" }));
    m.process('data: {"choices":[],"usage":{"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":40}}}');
    expect(m.usage(true, () => 50)).toEqual({ promptTokens: 50, completionTokens: 1 });
  });
});

// Pinned by a mutation review of the metering (each fails under its mutant).
describe("usage read at its edges", () => {
  const asked = () => new StreamMeter({ clientWantsUsage: true, hideContinuous: true, outputsPerPrompt: 1, outputs: 1 });

  // U1 (usage-json.ts:35): an answer whose usage has no completion_tokens (OpenAI-shaped embeddings) is still charged its prompt.
  it("reads usage without completion_tokens as 0 completion tokens", () => {
    const body = Buffer.from('{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1]}],"usage":{"prompt_tokens":7,"total_tokens":7}}');
    expect(usageOfBody(body).usage).toEqual({ promptTokens: 7, completionTokens: 0 });
  });

  // U4 (token-count.ts:6): a negative count is no count (else the cost goes negative: credits given).
  it("refuses negative token counts", () => {
    expect(usageOfBody(Buffer.from('{"choices":[],"usage":{"prompt_tokens":-1000000,"completion_tokens":5}}')).usage).toBeNull();
  });

  // M24 (metering.ts:268): a usage-only chunk (an empty answer's: content filter) is something to charge.
  it("counts a usage-only chunk as content seen, though no chunk carried text", () => {
    const m = asked();
    m.process('data: {"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}');
    m.process('data: {"id":"c","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":0}}');
    expect(m.contentSeen).toBe(true);
  });

  // M7 (metering.ts:125): a client shown the usage-only chunk gets no second, made-up one.
  it("makes no usage chunk for a client already shown the upstream's", () => {
    const m = asked();
    m.process('data: {"id":"c","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":1}}');
    m.process('data: {"id":"c","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2}}');
    expect(m.complete).toBe(true);
    expect(m.missingUsageChunk()).toBeNull();
  });
});

describe("when a stream's usage is the whole answer's (its [DONE] may be lost)", () => {
  const ev = (o: object) => `data: ${JSON.stringify({ id: "c", object: "chat.completion.chunk", created: 1, model: "m", ...o })}`;
  const used = (completion: number) => ({ usage: { prompt_tokens: 5, completion_tokens: completion, total_tokens: 5 + completion } });
  const twoOutputs = (runningUsage?: boolean) => new StreamMeter({ clientWantsUsage: false, hideContinuous: false, outputsPerPrompt: 2, outputs: 2, ...(runningUsage === undefined ? {} : { runningUsage }) });

  it("running usage (the default: asked) before every output finished is not: the stream may still be cut", () => {
    const m = twoOutputs();
    m.process(ev({ choices: [{ index: 0, delta: { content: "a" }, finish_reason: "stop" }], ...used(1) }));
    m.process(ev({ choices: [{ index: 1, delta: { content: "b" }, finish_reason: null }], ...used(1) }));
    expect(m.complete).toBe(false);
  });

  it("usage on a chunk when no running usage was asked is, once an output finished, whatever other finishes came; before any finish it is not", () => {
    const m = twoOutputs(false);
    m.process(ev({ choices: [{ index: 0, delta: { content: "a" }, finish_reason: null }], ...used(4) }));
    expect(m.complete).toBe(false);
    m.process(ev({ choices: [{ index: 0, delta: { content: "b" }, finish_reason: "stop" }], ...used(4) }));
    expect(m.complete).toBe(true);
  });

  it("a running usage with completion tokens and no prompt's before any finish is a figure (only all zeros say nothing)", () => {
    const m = twoOutputs();
    m.process(ev({ choices: [{ index: 0, delta: { content: "a" }, finish_reason: null }], usage: { prompt_tokens: 0, completion_tokens: 3, total_tokens: 3 } }));
    expect(m.promptReported).toBe(true);
  });

  it("a zeroed usage on a chunk before any finish (Ollama's on every completions chunk) is no figure: the prompt is still not reported", () => {
    const m = twoOutputs(false);
    m.process(ev({ choices: [{ index: 0, delta: { content: "a" }, finish_reason: null }], ...used(0), usage: { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 } }));
    expect(m.promptReported).toBe(false);
    expect(m.complete).toBe(false);
  });

  it("usage on a chunk after its output's finish is (LiteLLM's last chunk, one finish for all of n), even with running usage asked", () => {
    const m = twoOutputs(true);
    m.process(ev({ choices: [{ index: 0, delta: { content: "a" }, finish_reason: null }] }));
    m.process(ev({ choices: [{ index: 0, delta: {}, finish_reason: "stop" }] }));
    expect(m.complete).toBe(false);
    m.process(ev({ choices: [{ index: 0, delta: {} }], ...used(4) }));
    expect(m.complete).toBe(true);
  });
});
