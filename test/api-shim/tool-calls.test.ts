import { APIError } from "openai";
import type OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { balanceOf, expectLedgerMatches, startShim, type Harness } from "../support/shim-harness.ts";

/**
 * OpenAI's tool-calling loop (its function-calling guide) through the shim and the official SDK,
 * against the fake's forced tool calls: the model calls a function, the client runs it and sends
 * the call and the result back, the model answers. Each turn is charged from its own usage.
 */
describe("the tool-calling loop through the shim with the OpenAI SDK", () => {
  let h: Harness;
  let key: string;
  let keyId: string;
  const tools: OpenAI.Chat.Completions.ChatCompletionTool[] = [{
    type: "function",
    function: { name: "get_weather", description: "Current weather in a city", parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"], additionalProperties: false } },
  }];
  /** Micro-credits a request costs at this pricing: 1 credit, 0.1 per 1k prompt tokens, 0.2 per 1k completion tokens. */
  const cost = (u: { prompt_tokens: number; completion_tokens: number }) => 1_000_000 + u.prompt_tokens * 100 + u.completion_tokens * 200;

  beforeAll(async () => {
    h = await startShim({ file: { pricing: { request: 1, models: { "qwen2.5-7b": { promptPer1k: 0.1, completionPer1k: 0.2 } } }, models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }] } });
    ({ key, id: keyId } = await h.createKey({ credits: 1000, tier: "developer" }));
  });
  afterAll(() => h.close());

  it('tool_choice "required" gets a call; the call and its result sent back get a text answer; each turn charged its usage', async () => {
    const client = h.client(key);
    const start = await balanceOf(h.store, keyId);
    const messages: OpenAI.Chat.Completions.ChatCompletionMessageParam[] = [{ role: "user", content: "What is the weather like in Paris today?" }];
    const completion = await client.chat.completions.create({ model: "qwen2.5-7b", messages, tools, tool_choice: "required" });
    expect(completion.choices[0]!.finish_reason).toBe("tool_calls");
    const call = completion.choices[0]!.message.tool_calls![0]!;
    if (call.type !== "function") throw new Error(`expected a function call, got ${call.type}`);
    expect(call.function.name).toBe("get_weather");
    expect(JSON.parse(call.function.arguments)).toEqual({ city: "x" });
    const first = h.fake.usages.at(-1)!;
    expect(completion.usage).toMatchObject(first);
    expect((completion as unknown as { credits_charged: number }).credits_charged * 1e6).toBeCloseTo(cost(first), 6);

    messages.push(completion.choices[0]!.message);
    messages.push({ role: "tool", tool_call_id: call.id, content: "18C, sunny" });
    const answer = await client.chat.completions.create({ model: "qwen2.5-7b", messages, tools, tool_choice: "auto", max_tokens: 4 });
    expect(answer.choices[0]!.message.content).toBe("t1 t2 t3 t4");
    expect(answer.choices[0]!.message.tool_calls ?? []).toEqual([]);
    // The second turn's prompt holds the call (its arguments rendered by the template) and the result.
    const upstream = JSON.parse(h.fake.requests.at(-1)!.body) as { messages: { role: string; tool_call_id?: string }[] };
    expect(upstream.messages.map((m) => m.role)).toEqual(["user", "assistant", "tool"]);
    expect(upstream.messages[2]!.tool_call_id).toBe(call.id);
    const second = h.fake.usages.at(-1)!;
    expect(second.prompt_tokens).toBeGreaterThan(first.prompt_tokens);
    expect(answer.usage).toMatchObject(second);

    expect(start - (await balanceOf(h.store, keyId))).toBe(cost(first) + cost(second));
    await expectLedgerMatches(h.store, keyId);
  });

  it("a streamed tool call: the SDK's accumulated deltas give the name and arguments, and the call is charged from its usage chunk", async () => {
    const start = await balanceOf(h.store, keyId);
    const stream = h.client(key).chat.completions.stream({ model: "qwen2.5-7b", messages: [{ role: "user", content: "Weather in Oslo?" }], tools, tool_choice: { type: "function", function: { name: "get_weather" } } });
    const done = await stream.finalChatCompletion();
    const call = done.choices[0]!.message.tool_calls![0]!;
    if (call.type !== "function") throw new Error(`expected a function call, got ${call.type}`);
    expect(call.id).toMatch(/^chatcmpl-tool-[0-9a-f]{32}$/);
    expect(call.function).toMatchObject({ name: "get_weather", arguments: '{"city": "x"}' });
    expect(done.choices[0]!.finish_reason).toBe("stop");
    const usage = h.fake.usages.at(-1)!;
    // {"  city  ":  "  x  "}: the arguments' 6 tokens; the shim asked for the usage chunk the client did not.
    expect(usage.completion_tokens).toBe(6);
    const seen = h.fake.requests.at(-1)!;
    expect(JSON.parse(seen.body).stream_options).toEqual({ include_usage: true });
    // The charge is settled when the request's line is logged (the shim's id travels upstream).
    await h.waitForRequestLog((l) => l.reqId === seen.headers["x-request-id"]);
    expect(start - (await balanceOf(h.store, keyId))).toBe(cost(usage));
    await expectLedgerMatches(h.store, keyId);
  });
  // The agent frameworks' ordinary call (the AI SDK, LangChain, OpenAI's Agents SDK): tools, and
  // tool_choice "auto" or none at all. The kit starts vLLM with a tool parser for a model it knows
  // (the fake's default); without one, vLLM refuses it, and the client gets vLLM's 400 whole.
  it('tools with tool_choice "auto" or none are answered where vLLM has a tool parser, and refused with vLLM\'s 400 where it has none', async () => {
    const client = h.client(key);
    const messages: OpenAI.Chat.Completions.ChatCompletionMessageParam[] = [{ role: "user", content: "What is the weather like in Paris today?" }];
    for (const choice of [{ tool_choice: "auto" as const }, {}]) {
      const answer = await client.chat.completions.create({ model: "qwen2.5-7b", messages, tools, ...choice, max_tokens: 2 });
      expect(answer.choices[0]!.message.content).toBe("t1 t2");
    }
    h.fake.set({ autoToolChoice: false });
    try {
      for (const choice of [{ tool_choice: "auto" as const }, {}]) {
        const refused = await client.chat.completions.create({ model: "qwen2.5-7b", messages, tools, ...choice, max_tokens: 2 }).catch((e: unknown) => e);
        expect(refused).toBeInstanceOf(APIError);
        expect((refused as APIError).status).toBe(400);
        expect((refused as APIError).message).toContain('"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set');
      }
      // A forced call needs no parser.
      const forced = await client.chat.completions.create({ model: "qwen2.5-7b", messages, tools, tool_choice: "required" });
      expect(forced.choices[0]!.finish_reason).toBe("tool_calls");
    } finally {
      h.fake.reset();
    }
    await expectLedgerMatches(h.store, keyId);
  });
});
