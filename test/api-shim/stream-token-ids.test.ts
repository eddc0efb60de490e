import type { IncomingMessage, ServerResponse } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StreamMeter } from "../../api-shim/src/metering/metering.ts";
import { CREDIT, type ScriptedUpstream, startScriptedShim } from "../support/responses-events.ts";
import { balanceOf, type Harness } from "../support/shim-harness.ts";

/**
 * What a cut stream is charged for the tokens it delivered as ids (vLLM's `return_token_ids`) and
 * for a tool call's generated name. vLLM's source (vllm-project/vllm,
 * entrypoints/openai/chat_completion/serving.py chat_completion_stream_generator): "If
 * return_token_ids or logprobs are enabled, we still need to send a chunk even if delta_message is
 * None", `token_ids=as_list(output.token_ids)` on each choice (the output's ids only), the prompt's
 * as the first chunk's top-level `prompt_token_ids`; completion/serving.py: the choice's
 * `prompt_token_ids` on each output's first chunk, `token_ids` the output's, echo or not; vLLM 0.11
 * writes `"token_ids":null` on every chunk when it was not asked (test/support/fake-vllm.ts).
 */
const meter = (options: { echo?: boolean; maxCompletion?: number; outputs?: number } = {}) =>
  new StreamMeter({ clientWantsUsage: false, hideContinuous: false, outputsPerPrompt: 1, outputs: options.outputs ?? 1, ...options });
const chat = (choice: Record<string, unknown>, top: Record<string, unknown> = {}) =>
  `data: ${JSON.stringify({ id: "chatcmpl-1", object: "chat.completion.chunk", created: 1, model: "m", choices: [{ index: 0, logprobs: null, finish_reason: null, ...choice }], ...top })}`;
const text = (choice: Record<string, unknown>) =>
  `data: ${JSON.stringify({ id: "cmpl-1", object: "text_completion", created: 1, model: "m", choices: [{ index: 0, logprobs: null, finish_reason: null, stop_reason: null, ...choice }] })}`;
const ids = (n: number, from = 3000) => Array.from({ length: n }, (_, i) => from + i);

describe("a stream's token ids", () => {
  it("counts each id vLLM delivers, in chunks whose delta it held back (`delta: {}`) and in chunks that merged several tokens", () => {
    const m = meter();
    m.process(chat({ delta: { role: "assistant", content: "" } }));
    for (let i = 0; i < 40; i++) m.process(chat({ delta: {}, token_ids: [3000 + i] }));
    expect(m.contentSeen).toBe(true);
    expect(m.usage(false).completionTokens).toBe(40);
    // One chunk of one short word that carried 25 ids (a lagging consumer's merged outputs).
    m.process(chat({ delta: { content: "a" }, token_ids: ids(25) }));
    expect(m.usage(false).completionTokens).toBe(65);
    // Written with spaces (Python's json.dumps), and on a chunk the meter parses anyway (a finish).
    const spaced = meter();
    spaced.process(chat({ delta: {}, token_ids: ids(7) }).replaceAll(":", ": ").replaceAll(",", ", "));
    spaced.process(chat({ delta: {}, token_ids: ids(3), finish_reason: "length" }));
    expect(spaced.usage(false).completionTokens).toBe(10);
  });

  it("does not count the prompt's ids: chat's first chunk's prompt_token_ids, a completion choice's, the echoed chunk's", () => {
    const c = meter();
    c.process(chat({ delta: { role: "assistant", content: "" } }, { prompt_token_ids: ids(5000) }));
    expect(c.usage(false).completionTokens).toBe(0);
    expect(c.contentSeen).toBe(false);
    c.process(chat({ delta: { content: "hi" }, token_ids: [7] }));
    expect(c.usage(false).completionTokens).toBe(1);

    const t = meter();
    t.process(text({ text: "hi", prompt_token_ids: ids(5000), token_ids: [7, 8] }));
    expect(t.usage(false).completionTokens).toBe(2);

    // With echo the first chunk is the prompt and the first token (with return_token_ids vLLM
    // leaves the prompt's text out); a server that wrote the prompt's ids with it in `token_ids`
    // (vLLM writes the output's only) is charged the one token it carried, not them.
    const echoed = meter({ echo: true });
    echoed.process(text({ text: "Hi", prompt_token_ids: ids(5000), token_ids: [...ids(5000), 7] }));
    expect(echoed.usage(false).completionTokens).toBe(1);
    echoed.process(text({ text: " a", token_ids: [8, 9, 10] }));
    expect(echoed.usage(false).completionTokens).toBe(4);
  });

  it("reads vLLM 0.11's `token_ids: null` as no ids, and ids never above the most the request may generate", () => {
    const nulls = meter();
    nulls.process(text({ text: "a", prompt_token_ids: null, token_ids: null }));
    expect(nulls.usage(false).completionTokens).toBe(1);
    const bounded = meter({ maxCompletion: 100 });
    bounded.process(chat({ delta: {}, token_ids: ids(5000) }));
    expect(bounded.usage(false).completionTokens).toBe(100);
  });

  it("never charges a cut stream's running usage below the ids delivered", () => {
    // LiteLLM's whole-request usage came early (content followed), or a stale running count.
    const m = meter();
    m.process(chat({ delta: {}, token_ids: ids(30) }, { usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 } }));
    m.process(chat({ delta: {}, token_ids: ids(30) }));
    expect(m.usage(true).completionTokens).toBe(60);
  });
});

describe("a chunk whose generated text is empty: a token vLLM held back", () => {
  // vLLM's incremental detokenizer holds back an incomplete UTF-8 sequence, and vLLM
  // (chat_completion/serving.py chat_completion_stream_generator, no parser) still writes one
  // chunk per token: a character that is 4 tokens (Linear B, CJK Extension B, most emoji under a
  // byte-level BPE) comes as three chunks of `"content":""` and one with the character.
  const astral = (i: number) => String.fromCodePoint(0x10000 + (i % 90));

  it("counts each empty `content`, `text` or reasoning chunk as a token, and a character above U+FFFF as four", () => {
    const c = meter();
    c.process(chat({ delta: { role: "assistant", content: "" } }));
    for (let i = 0; i < 10; i++) for (const content of ["", "", "", astral(i)]) c.process(chat({ delta: { content } }));
    expect(c.usage(false).completionTokens).toBe(40);
    const t = meter();
    for (let i = 0; i < 10; i++) for (const s of ["", "", "", astral(i)]) t.process(text({ text: s }));
    expect(t.usage(false).completionTokens).toBe(40);
    // Written with spaces (Python's json.dumps), and reasoning (a reasoning parser's deltas).
    const r = meter();
    for (let i = 0; i < 10; i++) r.process(chat({ delta: { reasoning: "" } }).replaceAll(":", ": "));
    expect(r.usage(false).completionTokens).toBe(10);
    // In a chunk the meter parses (a list of token_ids, here empty).
    r.process(chat({ delta: { content: "" }, token_ids: [] }));
    expect(r.usage(false).completionTokens).toBe(11);
  });

  it("counts no token for vLLM's role chunk or a finish chunk with empty content, nor for a chunk without generated text", () => {
    const m = meter();
    m.process(chat({ delta: { role: "assistant", content: "" } }));
    m.process(chat({ delta: { role: "assistant", content: "" } }).replaceAll(":", ": "));
    m.process(chat({ delta: {} }));
    m.process(chat({ delta: { content: null } }));
    // An empty refusal (OpenAI's member) is no token, read as it comes or parsed.
    m.process(chat({ delta: { refusal: "" } }));
    m.process(chat({ delta: { refusal: "" }, token_ids: [] }));
    m.process(chat({ delta: { role: "assistant", content: "" }, token_ids: [] }));
    expect(m.contentSeen).toBe(false);
    m.process(chat({ delta: { content: "" }, finish_reason: "stop" }));
    m.process(text({ text: "", finish_reason: "length" }));
    expect(m.usage(false).completionTokens).toBe(0);
  });

  it("leaves an ordinary stream's count as it was: a chunk a token, or its text's estimate", () => {
    const m = meter();
    m.process(chat({ delta: { role: "assistant", content: "" } }));
    for (let i = 0; i < 30; i++) m.process(chat({ delta: { content: "word" } }));
    m.process(chat({ delta: { content: "" }, finish_reason: "stop" }));
    expect(m.usage(false).completionTokens).toBe(30);
    const merged = meter();
    merged.process(chat({ delta: { content: "x".repeat(400) } }));
    expect(merged.usage(false).completionTokens).toBe(100);
  });
});

describe("a client that leaves a stream of characters that are four tokens each", () => {
  let h: Harness;
  let upstream: ScriptedUpstream;
  let close: () => Promise<void>;
  beforeAll(async () => ({ h, upstream, close } = await startScriptedShim()));
  afterAll(() => close());

  it("is charged for the tokens it received, not one per character (review hext, case a)", async () => {
    // Byte-level BPE (Qwen's and Llama 3's, as cl100k_base and o200k_base) has no token for a rare
    // code point: Linear B is 4 tokens a character. vLLM writes three chunks of `"content":""`
    // and one with the character; the client reads 1,000 characters and leaves before the usage.
    const CHARS = 1000;
    const events = [chat({ delta: { role: "assistant", content: "" } })];
    for (let i = 0; i < CHARS; i++) events.push(...Array.from({ length: 3 }, () => chat({ delta: { content: "" } })), chat({ delta: { content: String.fromCodePoint(0x10000 + (i % 90)) } }));
    upstream.script = streamThenHang(events); // 4,000 tokens generated; vLLM is still generating
    const { key, id } = await h.createKey({ credits: 100_000 });
    const ac = new AbortController();
    const res = await fetch(`${h.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "m", stream: true, max_tokens: 4096, messages: [{ role: "user", content: "Write in Linear B." }] }),
      signal: ac.signal,
    });
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let received = 0;
    let buffered = "";
    while (received < CHARS) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      const events = buffered.split("\n\n");
      buffered = events.pop()!;
      for (const e of events) if (e.startsWith("data: {")) for (const c of (JSON.parse(e.slice(6)) as { choices: { delta: { content?: string } }[] }).choices) received += [...(c.delta.content ?? "")].length;
    }
    ac.abort();
    const log = await h.waitForRequestLog((l) => l.keyId === id);
    const charged = (100_000 * CREDIT - (await balanceOf(h.store, id))) / CREDIT;
    // PRICED_FILE: 1 credit a request, 1 a completion token, 0.001 a prompt token.
    expect({ status: log.status, received, completionCredits: Math.floor(charged - 1) }).toEqual({ status: 499, received: CHARS, completionCredits: 4000 });
  });
});

describe("a tool call's name", () => {
  it("counts as generated text, in vLLM's order (name first) and LiteLLM's (arguments first), in a legacy function_call too", () => {
    const name = "x".repeat(400); // 100 tokens
    const chunks = [
      chat({ delta: { tool_calls: [{ id: "call_1", type: "function", index: 0, function: { name, arguments: "" } }] } }),
      chat({ delta: { tool_calls: [{ id: "call_1", type: "function", index: 0, function: { arguments: "", name } }] } }).replaceAll(":", ": ").replaceAll(",", ", "),
      chat({ delta: { function_call: { name } } }),
      chat({ delta: { tool_calls: [{ index: 0, function: { name } }] }, finish_reason: "tool_calls" }),
    ];
    for (const chunk of chunks) {
      const m = meter();
      m.process(chunk);
      expect(m.usage(false).completionTokens, chunk).toBe(100);
    }
  });

  it("is the only `name` counted: one elsewhere in a chunk is not generated text", () => {
    const name = "x".repeat(400);
    const m = meter();
    m.process(chat({ delta: { role: "assistant", name, content: "" } }));
    m.process(chat({ delta: { content: "a", provider_specific_fields: { tool: { name } } } }));
    m.process(chat({ delta: { tool_calls: [{ index: 0, function: { arguments: "{}", extra: { name } } }] } }));
    expect(m.usage(false).completionTokens).toBe(2);
  });
});

/**
 * The hostile-tenant cases (review `hoss`, gpt-oss on chat): a client that leaves a stream early
 * is charged what it received. Prices: 1 credit a request, 1 a prompt token, 1 a completion token.
 */
const MODEL = "gpt-oss-120b";
const FILE = {
  pricing: { request: 1, models: { [MODEL]: { promptPer1k: 1000, completionPer1k: 1000 } } },
  models: [{ name: MODEL, maxModelLen: 131072 }],
};

/** Writes `events` as vLLM's stream would, then keeps generating (no more chunks) until the shim aborts it. */
const streamThenHang = (events: string[]) => (_req: IncomingMessage, res: ServerResponse) => {
  res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8" });
  for (const e of events) res.write(`${e}\n\n`);
};

describe("a client that leaves a gpt-oss stream early", () => {
  let h: Harness;
  let upstream: ScriptedUpstream;
  let close: () => Promise<void>;
  beforeAll(async () => ({ h, upstream, close } = await startScriptedShim(FILE)));
  afterAll(() => close());

  /** Streams `body` with the SDK, leaves after `chunks` chunks; returns the credits charged. */
  const streamAndLeave = async (body: Record<string, unknown>, chunks: number) => {
    const { key, id } = await h.createKey({ credits: 1_000_000 });
    const { data: stream, response } = await h.client(key).chat.completions.create({ model: MODEL, stream: true, ...body } as never).withResponse();
    let seen = 0;
    for await (const _c of stream as unknown as AsyncIterable<unknown>) if (++seen === chunks) break;
    const log = await h.waitForRequestLog((e) => e.reqId === response.headers.get("x-request-id"));
    expect(log).toMatchObject({ status: 499, error: "client_closed_request" });
    return (1_000_000 * CREDIT - (await balanceOf(h.store, id))) / CREDIT;
  };

  it("pays for the ids of `delta: {}` chunks it received with return_token_ids (harmony's header, a tool parser holding text back)", async () => {
    const silent = Array.from({ length: 500 }, (_, i) => chat({ delta: {}, token_ids: [3000 + i] }));
    upstream.script = streamThenHang([chat({ delta: { role: "assistant", content: "" }, token_ids: [] }), ...silent]);
    const charged = await streamAndLeave({ messages: [{ role: "user", content: "hi" }], max_tokens: 4000, return_token_ids: true }, 501);
    expect(charged).toBeGreaterThanOrEqual(1 + 500);
  });

  it("pays for a prompt sent as top-level prompt_token_ids (an RL framework's token-in rollout), one token an id, when it leaves before the usage", async () => {
    // Newer vLLM releases give the engine these ids in place of the rendered messages; the shim
    // refused them once (a hostile review's find), but RL frameworks send them (Strands Agents, to
    // /v1/completions with a one-space prompt), so they are counted instead.
    const ids = Array.from({ length: 20_000 }, (_, i) => 1000 + (i % 5000));
    upstream.script = streamThenHang([chat({ delta: { role: "assistant", content: "" } }), ...Array.from({ length: 5 }, (_, i) => chat({ delta: { content: ` w${i}` } }))]);
    const charged = await streamAndLeave({ messages: [{ role: "user", content: "hi" }], max_tokens: 4000, prompt_token_ids: ids }, 6);
    expect(charged).toBeGreaterThanOrEqual(1 + ids.length + 5);
  });

  it("pays for a tool call's generated name (gpt-oss writes the recipient in its header; vLLM sends it once, whole)", async () => {
    const name = "the_answer_is_".concat("lorem_ipsum_dolor_sit_amet_".repeat(150)); // ~4,000 bytes, ~1,000 tokens
    upstream.script = streamThenHang([
      chat({ delta: { role: "assistant", content: "" } }),
      chat({ delta: { tool_calls: [{ id: "call_1", type: "function", index: 0, function: { name, arguments: "" } }] } }),
    ]);
    const tools = [{ type: "function", function: { name: "f", parameters: { type: "object" } } }];
    const charged = await streamAndLeave({ messages: [{ role: "user", content: "hi" }], max_tokens: 4000, tools }, 2);
    expect(charged).toBeGreaterThanOrEqual(1 + name.length / 4);
  });
});
