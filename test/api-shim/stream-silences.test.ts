import OpenAI, { BadRequestError } from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_FAKE, startShim, type Harness } from "../support/shim-harness.ts";
import { type StreamRoute, streamedRequestError } from "../support/streamed-requests.ts";

/**
 * Parameters with which a client has vLLM generate without writing chunks: `stream_interval`
 * (vLLM's extra parameter: "Number of tokens to batch into each streamed chunk … The first and last
 * chunks are always sent immediately"), a streamed chat `use_beam_search` (vLLM's beam search
 * yields its answer once, whole) and `include_reasoning: false` (the reasoning is generated, its
 * deltas dropped). A client that leaves a stream pays what it was sent, and the upstream is aborted
 * without telling what it generated: with one of these, a client leaving just before the end had
 * hundreds of tokens generated and paid for one. So they are refused on streams, where a leaving
 * client is metered by what it received, and left to non-streamed requests, charged from vLLM's usage.
 *
 * So are a stop string longer than 64 characters (vLLM's detokenizer holds back the last
 * len(stop) - 1 characters of the output until the request finishes: vllm/v1/engine/detokenizer.py,
 * stop_buffer_length) and, while `skip_special_tokens` decodes special tokens to "", what can force
 * them: a positive `logit_bias`, one banning more than 1024 tokens, `allowed_token_ids`, and
 * `bad_words` of more than 1024 words. The Responses route refuses the same.
 */
/** A bias banning 2,000 tokens: enough of them and only special tokens are left to sample. */
const BANNED = Object.fromEntries(Array.from({ length: 2000 }, (_, i) => [String(i), -100]));
const WORDS = Array.from({ length: 2000 }, (_, i) => `w${i}`);

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

  const refusals: [StreamRoute, Record<string, unknown>, string][] = [
    ["chat", { stream_interval: 1_000_000 }, "stream_interval"],
    ["completions", { stream_interval: 50 }, "stream_interval"],
    ["chat", { use_beam_search: true }, "use_beam_search"],
    ["chat", { use_beam_search: "yes" }, "use_beam_search"], // pydantic's lax bool
    ["chat", { include_reasoning: false }, "include_reasoning"],
    // Held back until the finish: 20,000 characters make every chunk empty.
    ["chat", { stop: ["\n\nHuman:", "\u0001".repeat(20_000)] }, "stop"],
    ["chat", { stop: "x".repeat(65) }, "stop"],
    ["completions", { stop: "\u0001".repeat(20_000) }, "stop"],
    ["chat", { stop: "😀".repeat(65) }, "stop"], // 65 characters as Python counts them (130 UTF-16 units)
    ["chat", { stop: "x".repeat(100), include_stop_str_in_output: "no" }, "stop"],
    // Special tokens forced while skip_special_tokens decodes them to "".
    ["chat", { logit_bias: { "151643": 100 }, ignore_eos: true }, "logit_bias"],
    ["chat", { logit_bias: { "1": -5, "151645": 0.5 } }, "logit_bias"],
    ["completions", { logit_bias: { "151643": "100" }, max_tokens: 4000 }, "logit_bias"], // pydantic's lax float
    ["chat", { logit_bias: { "151643": true } }, "logit_bias"], // read as 1.0
    ["chat", { logit_bias: BANNED, ignore_eos: true }, "logit_bias"], // every other token banned
    ["chat", { logit_bias: { "151643": 100 }, skip_special_tokens: "true" }, "logit_bias"],
    ["chat", { allowed_token_ids: [151643, 151645], ignore_eos: true }, "allowed_token_ids"],
    ["completions", { allowed_token_ids: [151643], max_tokens: null }, "allowed_token_ids"],
    ["chat", { bad_words: WORDS, ignore_eos: true }, "bad_words"],
    // Past its end, a model samples end-of-text tokens again and again (nothing, decoded).
    ["chat", { ignore_eos: true, max_tokens: 4000 }, "ignore_eos"],
    // A small answer bounds what can go unseen (16 tokens at most, all outputs together), a larger one does not.
    ["chat", { logit_bias: { "151643": 100 }, max_tokens: 17 }, "logit_bias"],
    ["chat", { logit_bias: { "151643": 100 }, max_tokens: 16, n: 2 }, "logit_bias"],
    // (Completions without max_tokens: vLLM's default of 16, so within the bound.)
    ["completions", { ignore_eos: "1", max_tokens: 4000 }, "ignore_eos"],
    // The Responses route: vLLM's ResponsesRequest takes stop, logit_bias, include_reasoning.
    ["responses", { stop: ["\u0001".repeat(20_000)] }, "stop"],
    ["responses", { logit_bias: { "151643": 100 }, ignore_eos: true }, "logit_bias"],
    ["responses", { include_reasoning: false }, "include_reasoning"],
    ["responses", { ignore_eos: true }, "ignore_eos"],
    // A grammar can name special tokens (llguidance's `<|im_start|>` or `<[151644]>`), the fallback
    // of vLLM's default structured-output backend.
    ["chat", { structured_outputs: { grammar: "start: <|im_start|>{3000}" } }, "structured_outputs"],
    ["completions", { guided_grammar: "start: <[151644]>{3000}", max_tokens: 4000 }, "guided_grammar"],
    // With tool_choice "required" vLLM writes nothing until the call's name is whole; a name is
    // one of the request's own tools', and OpenAI's are at most 64 characters.
    ["chat", { tools: [{ type: "function", function: { name: "f".repeat(65), parameters: { type: "object" } } }], tool_choice: "required" }, "tools"],
    ["responses", { tools: [{ type: "namespace", name: "ns", tools: [{ type: "function", name: "9".repeat(6000), parameters: {} }] }] }, "tools"],
    // vLLM names a namespace's tools `<namespace>__<name>` and has the model generate that whole.
    ["responses", { tools: [{ type: "namespace", name: "n".repeat(6000), description: "", tools: [{ type: "function", name: "f", parameters: {} }] }], tool_choice: "required" }, "tools"],
    ["responses", { stream_interval: 50 }, "stream_interval"],
  ];
  for (const [route, extra, param] of refusals) {
    it(`a streamed ${route} request with ${JSON.stringify(extra).slice(0, 100)} is refused with a 400 naming ${param}, before anything is held or forwarded`, async () => {
      const before = h.fake.counters.received;
      const balance = (await h.store.getKey(keyId))!.balance;
      const err = await streamedRequestError(client, route, extra);
      expect(err).toBeInstanceOf(BadRequestError);
      expect((err as BadRequestError).param).toBe(param);
      expect((err as BadRequestError).message).toMatch(/cannot be metered/);
      expect(h.fake.counters.received).toBe(before);
      expect((await h.store.getKey(keyId))!.balance).toBe(balance);
    });
  }

  it("a tool name over 64 characters is refused naming where it is: a chat function's, a Responses function's, a namespace's own", async () => {
    const long = "n".repeat(65);
    const fn = { type: "function", name: "f", parameters: { type: "object" } };
    const refused = async (route: "chat" | "responses", tools: unknown[]) => {
      const request = route === "chat"
        ? client.chat.completions.create({ model: "qwen2.5-7b", messages, stream: true, tools } as never)
        : client.responses.create({ model: "qwen2.5-7b", input: "hi", stream: true, tools } as never);
      const err = (await request.then(() => null, (e: unknown) => e)) as BadRequestError;
      expect(err.param).toBe("tools");
      return err.message;
    };
    expect(await refused("chat", [{ type: "function", function: { name: "f", parameters: {} } }, { type: "function", function: { name: long, parameters: {} } }])).toContain("'tools[1].function.name'");
    expect(await refused("responses", [fn, { type: "namespace", name: "ns", tools: [fn, { ...fn, name: long }] }])).toContain("'tools[1].tools[1].name'");
    expect(await refused("responses", [fn, { type: "namespace", name: long, description: "", tools: [fn] }])).toContain("'tools[1].name'");
  });

  it("streams Codex CLI's MCP namespaces, whose namespace and tool names fit 64 characters together (vLLM's `__` between them makes 66)", async () => {
    // Codex (codex-rs/codex-mcp/src/mcp_tool_names.rs) keeps `mcp__<server>__` + the tool's name within 64 bytes, hashing longer ones to fit.
    const tool = { type: "function", name: "create_or_update_file_contents_in_a_repository_0123", description: "", strict: false, parameters: { type: "object", properties: {} } };
    const namespace = { type: "namespace", name: "mcp__github__", description: "GitHub", tools: [tool] };
    expect(namespace.name.length + tool.name.length).toBe(64);
    let text = "";
    const events = await client.responses.create({ model: "qwen2.5-7b", input: "hi", stream: true, tools: [namespace] } as never);
    for await (const e of events as unknown as AsyncIterable<{ type: string; delta?: string }>) if (e.type === "response.output_text.delta") text += e.delta;
    expect(text).not.toBe("");
  });

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

  it("streams ordinary values: short stop strings (64 characters at most), negative biases on up to 1024 tokens, a few bad words, and biases or allowed ids that skip_special_tokens: false makes visible text", async () => {
    const streamed = async (extra: Record<string, unknown>) => {
      const chunks = await client.chat.completions.create({ model: "qwen2.5-7b", messages, stream: true, ...extra } as never);
      let text = "";
      // A forced tool call (tool_choice "required") streams its arguments, not content.
      for await (const c of chunks as unknown as AsyncIterable<{ choices: { delta?: { content?: string | null; tool_calls?: { function?: { arguments?: string } }[] } }[] }>) {
        text += (c.choices[0]?.delta?.content ?? "") + (c.choices[0]?.delta?.tool_calls?.[0]?.function?.arguments ?? "");
      }
      return text;
    };
    const ordinary: Record<string, unknown>[] = [
      { stop: ["<|im_end|>", "\n\nHuman:"] },
      { stop: "x".repeat(64) },
      { stop: "😀".repeat(64) },
      { stop: null, logit_bias: null, allowed_token_ids: null, bad_words: null },
      { stop: "x".repeat(20_000), include_stop_str_in_output: true }, // nothing held back
      { logit_bias: { "1": -100, "2": 0, "3": "-1.5", "4": "0" } }, // "0" is pydantic's 0.0, not a positive bias (found by mutation review)
      { logit_bias: Object.fromEntries(Array.from({ length: 1024 }, (_, i) => [String(i), -100])) },
      { bad_words: ["darn", "heck"] },
      { structured_outputs: { grammar: "start: <|im_start|>{3}" }, skip_special_tokens: false },
      // The classifier pattern: a yes/no answer pushed by a positive bias, one token long.
      { logit_bias: { "9454": 100, "2822": 100 }, max_tokens: 1 },
      { ignore_eos: true, allowed_token_ids: [9454, 2822], max_completion_tokens: 16 },
      { structured_outputs: { regex: "[a-z]+" }, response_format: { type: "json_object" } },
      { tools: [{ type: "function", function: { name: "get_weather_in_a_city_with_a_long_but_ordinary_name_of_64_chars", parameters: { type: "object" } } }], tool_choice: "required" },
      { logit_bias: { "151643": 100 }, allowed_token_ids: [151643], bad_words: WORDS, ignore_eos: true, skip_special_tokens: false },
    ];
    for (const extra of ordinary) expect(await streamed(extra), JSON.stringify(extra).slice(0, 80)).not.toBe("");
    expect(JSON.parse(h.fake.requests.at(-1)!.body)).toMatchObject({ logit_bias: { "151643": 100 }, skip_special_tokens: false });

    let text = "";
    const events = await client.responses.create({ model: "qwen2.5-7b", input: "hi", stream: true, stop: ["<|im_end|>"], logit_bias: { "1": -100 } } as never);
    for await (const e of events as unknown as AsyncIterable<{ type: string; delta?: string }>) if (e.type === "response.output_text.delta") text += e.delta;
    expect(text).not.toBe("");
  });

  it("passes each on untouched without stream (charged from vLLM's usage), on chat, completions and the Responses route", async () => {
    const silencing = { stop: ["\u0001".repeat(20_000)], logit_bias: { "151643": 100 }, allowed_token_ids: [151643], bad_words: WORDS, ignore_eos: true };
    const chat = await client.chat.completions.create({ model: "qwen2.5-7b", messages, ...silencing } as never);
    expect(chat.usage?.completion_tokens).toBeGreaterThan(0);
    expect(JSON.parse(h.fake.requests.at(-1)!.body)).toMatchObject(silencing);
    const completion = await client.completions.create({ model: "qwen2.5-7b", prompt: "hi", ...silencing } as never);
    expect(completion.usage?.completion_tokens).toBeGreaterThan(0);
    const responsesParams = { stop: ["\u0001".repeat(20_000)], logit_bias: { "151643": 100 }, include_reasoning: false, ignore_eos: true };
    const response = await client.responses.create({ model: "qwen2.5-7b", input: "hi", ...responsesParams } as never);
    expect(response.usage?.output_tokens).toBeGreaterThan(0);
    expect(JSON.parse(h.fake.requests.at(-1)!.body)).toMatchObject(responsesParams);
  });
});

describe("a provider's model (provider: true) is not vLLM's detokenizer", () => {
  let h: Harness;
  afterAll(() => h?.close());
  it("streams a positive logit_bias (no special tokens decoded to nothing), and refuses a long stop string as any stream does", async () => {
    h = await startShim({
      file: { models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }, { name: "gpt", provider: true, maxModelLen: 200_000, maxOutputTokens: 1000 }] },
      fake: { ...DEFAULT_FAKE, models: [...DEFAULT_FAKE.models!, { name: "gpt", root: "gpt", maxModelLen: 200_000 }] },
    });
    const { key } = await h.createKey({ credits: 1000 });
    const client = new OpenAI({ baseURL: `${h.url}/v1`, apiKey: key, maxRetries: 0 });
    const messages = [{ role: "user" as const, content: "hi" }];
    let text = "";
    const chunks = await client.chat.completions.create({ model: "gpt", messages, stream: true, logit_bias: { "9642": 5 } });
    for await (const c of chunks) text += c.choices[0]?.delta?.content ?? "";
    expect(text).not.toBe("");
    const err = await client.chat.completions.create({ model: "gpt", messages, stream: true, stop: "x".repeat(65) }).then(() => null, (e: unknown) => e);
    expect((err as BadRequestError).param).toBe("stop");
  });
});
