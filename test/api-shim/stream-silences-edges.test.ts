import OpenAI, { BadRequestError } from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startShim, type Harness } from "../support/shim-harness.ts";
import { type StreamRoute, streamedRequestError } from "../support/streamed-requests.ts";

/**
 * The stream refusals (requests/stream-silences.ts) at their edges: values pydantic coerces, the
 * bounds, completions batches, namespaces. Cases a mutation review found no test reached.
 */
describe("stream silences: lax values, bounds, which tool name is read, namespaces", () => {
  let h: Harness;
  let client: OpenAI;
  beforeAll(async () => {
    h = await startShim();
    const k = await h.createKey({ credits: 1000 });
    client = new OpenAI({ baseURL: `${h.url}/v1`, apiKey: k.key, maxRetries: 0 });
  });
  afterAll(() => h.close());
  const messages = [{ role: "user" as const, content: "hi" }];

  const refused = async (route: StreamRoute, extra: Record<string, unknown>, param: string) => {
    const before = h.fake.counters.received;
    const err = await streamedRequestError(client, route, extra);
    expect(err, JSON.stringify(extra).slice(0, 120)).toBeInstanceOf(BadRequestError);
    expect((err as BadRequestError).param).toBe(param);
    expect(h.fake.counters.received).toBe(before);
  };
  const streamsChat = async (extra: Record<string, unknown>) => {
    const chunks = await client.chat.completions.create({ model: "qwen2.5-7b", messages, stream: true, ...extra } as never);
    let text = "";
    for await (const c of chunks as unknown as AsyncIterable<{ choices: { delta?: { content?: string | null } }[] }>) text += c.choices[0]?.delta?.content ?? "";
    return text;
  };

  it("reads include_reasoning as pydantic does: \"false\", \"off\" and 0 hide the reasoning too", async () => {
    await refused("chat", { include_reasoning: "false" }, "include_reasoning");
    await refused("chat", { include_reasoning: 0 }, "include_reasoning");
  });

  it("reads include_stop_str_in_output and skip_special_tokens as pydantic does: \"true\" / \"false\" stream", async () => {
    expect(await streamsChat({ stop: "x".repeat(200), include_stop_str_in_output: "true" })).not.toBe("");
    expect(await streamsChat({ logit_bias: { "151643": 100 }, skip_special_tokens: "false" })).not.toBe("");
    expect(await streamsChat({ ignore_eos: true, skip_special_tokens: 0 })).not.toBe("");
  });

  it("counts every prompt of a completions batch at vLLM's default of 16 tokens each", async () => {
    await refused("completions", { prompt: ["a", "b"], logit_bias: { "151643": 100 } }, "logit_bias");
    await refused("completions", { prompt: [[1, 2], [3, 4]], ignore_eos: true }, "ignore_eos");
    await refused("completions", { n: 2, ignore_eos: true }, "ignore_eos");
  });

  it("takes a stream whose outputs stay within 16 tokens together", async () => {
    const chunks = await client.completions.create({ model: "qwen2.5-7b", prompt: "hi", stream: true, ignore_eos: true } as never);
    let text = "";
    for await (const c of chunks as unknown as AsyncIterable<{ choices: { text?: string }[] }>) text += c.choices[0]?.text ?? "";
    expect(text).not.toBe("");
    expect(await streamsChat({ logit_bias: { "151643": 100 }, max_tokens: 8, n: 2 })).not.toBe("");
  });

  it("reads a chat's bound as vLLM 0.11 does (max_completion_tokens or max_tokens): a 0 falls through to max_tokens", async () => {
    await refused("chat", { max_completion_tokens: 0, max_tokens: 4000, ignore_eos: true }, "ignore_eos");
  });

  it("refuses 'stream_interval' 2 and other small batches", async () => {
    await refused("chat", { stream_interval: 2 }, "stream_interval");
  });

  it("refuses a logit_bias of 1025 banned tokens and bad_words of 1025 words, takes 1024 words", async () => {
    await refused("chat", { logit_bias: Object.fromEntries(Array.from({ length: 1025 }, (_, i) => [String(i), -100])) }, "logit_bias");
    await refused("chat", { bad_words: Array.from({ length: 1025 }, (_, i) => `w${i}`) }, "bad_words");
    expect(await streamsChat({ bad_words: Array.from({ length: 1024 }, (_, i) => `w${i}`) })).not.toBe("");
  });

  it("refuses a stop string list whose long string is not the first, and a long stop on completions", async () => {
    await refused("completions", { stop: ["\n", "y".repeat(65)] }, "stop");
  });

  it("refuses allowed_token_ids of any size, and a long tool name in a chat tool", async () => {
    await refused("chat", { allowed_token_ids: [1] }, "allowed_token_ids");
    await refused("chat", { allowed_token_ids: [] }, "allowed_token_ids");
  });

  it("refuses a namespace whose own name makes the generated tool name long (vLLM names its tools namespace__name)", async () => {
    await refused("responses", { tools: [{ type: "namespace", name: "n".repeat(6000), tools: [{ type: "function", name: "f", parameters: {} }] }] }, "tools");
  });

  it("refuses Responses' own spellings of the silences: a positive logit_bias under max_output_tokens 17, and one tool within a namespace past 64", async () => {
    await refused("responses", { logit_bias: { "151643": 100 }, max_output_tokens: 17 }, "logit_bias");
    await refused("responses", { tools: [{ type: "function", name: "g", parameters: {} }, { type: "namespace", name: "ns", tools: [{ type: "function", name: "ok", parameters: {} }, { type: "function", name: "f".repeat(65), parameters: {} }] }] }, "tools");
  });

  it("reads a chat tool's function.name (what vLLM reads), not a stray top-level name", async () => {
    const err = await client.chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], stream: true, tools: [{ type: "function", name: "f", function: { name: "g".repeat(65), parameters: {} } }], tool_choice: "required" } as never).then(() => null, (e: unknown) => e);
    expect((err as BadRequestError).param).toBe("tools");
  });
  it("refuses a namespace with a member other than type, name, description and tools", async () => {
    const err = await client.responses.create({ model: "qwen2.5-7b", input: "hi", tools: [{ type: "namespace", name: "ns", tools: [{ type: "function", name: "f", parameters: {} }], server_url: "http://x" }] } as never).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(BadRequestError);
    expect((err as BadRequestError).param).toBe("tools");
  });
});
