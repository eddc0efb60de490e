import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FakeVllm } from "../support/fake-vllm.ts";
import { postText, sseDataEvents } from "../support/tools.ts";

/**
 * The fake's forced tool calls, as vLLM answers them (vllm/entrypoints/openai/chat_completion/serving.py
 * and protocol.py; finish reasons as vLLM PR #25054 aligned them with OpenAI's).
 */
describe("fake vLLM answers a forced tool call as vLLM does", () => {
  let fake: FakeVllm;
  const weather = { type: "function", function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" }, days: { type: "integer" }, unit: { type: "string" } }, required: ["city", "days"] } } };
  const clock = { type: "function", function: { name: "get_time", parameters: { type: "object", properties: {} } } };
  const ask = { model: "qwen2.5-7b", messages: [{ role: "user", content: "weather in Paris?" }], tools: [weather, clock] };
  const post = (body: unknown) => postText(`${fake.url}/chat/completions`, body);
  const events = sseDataEvents;
  beforeAll(async () => {
    fake = await new FakeVllm().start();
  });
  afterAll(() => fake.close());

  it('tool_choice "required": the first tool called with its required properties, content "", finish_reason "tool_calls", the arguments\' tokens counted', async () => {
    const text = await post({ ...ask, tool_choice: "required" });
    const body = JSON.parse(text);
    const call = body.choices[0].message.tool_calls[0];
    expect(call).toEqual({ id: expect.stringMatching(/^chatcmpl-tool-[0-9a-f]{32}$/), type: "function", function: { name: "get_weather", arguments: '{"city": "x", "days": 1}' } });
    expect(Object.keys(call)).toEqual(["id", "type", "function"]);
    expect(body.choices[0].message).toMatchObject({ role: "assistant", content: "" });
    expect(body.choices[0].finish_reason).toBe("tool_calls");
    // `{"` `city` `":` ` "` `x` `",` ` "` `days` `":` ` ` `1` `}`: Qwen2's pre-tokenizer's 12 pieces.
    expect(body.usage).toMatchObject({ completion_tokens: 12 });
    expect(fake.usages.at(-1)!.completion_tokens).toBe(12);
  });

  it('a named function: that function, finish_reason "stop" (as OpenAI and vLLM say for a named call); no required properties give "{}"', async () => {
    const body = JSON.parse(await post({ ...ask, tool_choice: { type: "function", function: { name: "get_time" } } }));
    expect(body.choices[0].message.tool_calls).toEqual([{ id: expect.stringMatching(/^chatcmpl-tool-[0-9a-f]{32}$/), type: "function", function: { name: "get_time", arguments: "{}" } }]);
    expect(body.choices[0].finish_reason).toBe("stop");
    expect(body.usage.completion_tokens).toBe(1);
  });

  it('"auto", "none" or no tool_choice, or no tools: text as before', async () => {
    for (const choice of [{ tool_choice: "auto" }, { tool_choice: "none" }, {}]) {
      const body = JSON.parse(await post({ ...ask, ...choice, max_tokens: 2 }));
      expect(body.choices[0].message).toMatchObject({ content: "t1 t2", tool_calls: [] });
    }
    const { tools: _, ...noTools } = ask;
    expect(JSON.parse(await post({ ...noTools, tool_choice: "required", max_tokens: 2 })).choices[0].message.content).toBe("t1 t2");
  });

  // vLLM without --enable-auto-tool-choice and --tool-call-parser: a request with tools and no
  // tool_choice is "auto" (protocol.py, check_tool_usage), which serving.py refuses with a 400.
  it('without a tool parser (autoToolChoice false): "auto" and tools without tool_choice refused with vLLM\'s 400; "none", "required", a named function and no tools answered', async () => {
    fake.set({ autoToolChoice: false });
    try {
      for (const choice of [{ tool_choice: "auto" }, {}, { stream: true }]) {
        const res = await fetch(`${fake.url}/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ ...ask, ...choice }) });
        expect(res.status, JSON.stringify(choice)).toBe(400);
        expect(await res.json()).toEqual({ error: { message: '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set', type: "BadRequestError", param: null, code: 400 } });
      }
      expect(JSON.parse(await post({ ...ask, tool_choice: "none", max_tokens: 2 })).choices[0].message.content).toBe("t1 t2");
      expect(JSON.parse(await post({ ...ask, tool_choice: "required" })).choices[0].message.tool_calls[0].function.name).toBe("get_weather");
      expect(JSON.parse(await post({ ...ask, tool_choice: { type: "function", function: { name: "get_time" } } })).choices[0].finish_reason).toBe("stop");
      const { tools: _, ...noTools } = ask;
      expect(JSON.parse(await post({ ...noTools, max_tokens: 2 })).choices[0].message.content).toBe("t1 t2");
    } finally {
      fake.reset();
    }
  });

  it("n > 1: each choice its own call; max_tokens cuts the arguments, finish_reason \"length\"", async () => {
    const body = JSON.parse(await post({ ...ask, tool_choice: "required", n: 2 }));
    const [a, b] = body.choices.map((c: any) => c.message.tool_calls[0]);
    expect(a.function).toEqual(b.function);
    expect(a.id).not.toBe(b.id);
    expect(body.usage.completion_tokens).toBe(24);
    const cut = JSON.parse(await post({ ...ask, tool_choice: "required", max_tokens: 3 }));
    expect(cut.choices[0].message.tool_calls[0].function.arguments).toBe('{"city":');
    expect(cut.choices[0].finish_reason).toBe("length");
    expect(cut.usage.completion_tokens).toBe(3);
  });

  it("streams the call: first delta with id, type, index and name, then argument pieces, the usage chunk counting them", async () => {
    const chunks = events(await post({ ...ask, tool_choice: "required", stream: true, stream_options: { include_usage: true } }));
    expect(chunks[0]!.choices[0].delta).toEqual({ role: "assistant", content: "" });
    const deltas = chunks.slice(1, -1).map((c) => c.choices[0]);
    expect(deltas[0].delta).toEqual({ tool_calls: [{ id: expect.stringMatching(/^chatcmpl-tool-[0-9a-f]{32}$/), type: "function", index: 0, function: { name: "get_weather", arguments: '{"' } }] });
    for (const d of deltas.slice(1)) expect(Object.keys(d.delta.tool_calls[0])).toEqual(["index", "function"]);
    expect(deltas.map((d) => d.delta.tool_calls[0].function.arguments).join("")).toBe('{"city": "x", "days": 1}');
    expect(deltas.map((d) => d.finish_reason)).toEqual([...Array(11).fill(null), "tool_calls"]);
    expect(chunks.at(-1)).toMatchObject({ choices: [], usage: { completion_tokens: 12 } });

    const named = events(await post({ ...ask, tool_choice: { type: "function", function: { name: "get_weather" } }, stream: true, n: 2 }));
    const firsts = named.filter((c) => c.choices[0].delta.tool_calls?.[0].id);
    expect(firsts.map((c) => c.choices[0].index)).toEqual([0, 1]);
    expect(firsts[0]!.choices[0].delta.tool_calls[0].id).not.toBe(firsts[1]!.choices[0].delta.tool_calls[0].id);
    expect(named.at(-1)!.choices[0].finish_reason).toBe("stop");
  });
});
