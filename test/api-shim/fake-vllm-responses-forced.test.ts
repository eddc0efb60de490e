import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FakeVllm } from "../support/fake-vllm.ts";
import { postText, sseDataEvents } from "../support/tools.ts";

/**
 * The fake's /v1/responses with a forced function tool or a JSON schema text format, as vLLM's
 * Responses API answers them (vllm/entrypoints/openai/responses/: serving.py's
 * _make_response_output_items, engine/serving.py's _parse_tool_calls_from_content,
 * simple_streaming_events.py's function-call events, protocol.py's to_sampling_params).
 */
describe("fake vLLM /v1/responses: forced function calls and text.format", () => {
  let fake: FakeVllm;
  // The Responses API's flat function tool.
  const weather = { type: "function", name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" }, days: { type: "integer" } }, required: ["city", "days"] }, strict: true };
  const clock = { type: "function", name: "get_time", parameters: { type: "object", properties: {} } };
  const ask = { model: "qwen2.5-7b", input: "weather in Paris?", tools: [weather, clock] };
  const schema = { type: "object", properties: { city: { type: "string" }, celsius: { type: "integer" } }, required: ["city", "celsius"] };
  const post = (body: unknown) => postText(`${fake.url}/responses`, body);
  const events = sseDataEvents;
  beforeAll(async () => {
    fake = await new FakeVllm().start();
  });
  afterAll(() => fake.close());

  it('tool_choice "required": one function_call item (fc_/call_ ids) with the first tool\'s required properties, no message, its argument tokens counted', async () => {
    const body = JSON.parse(await post({ ...ask, tool_choice: "required" }));
    expect(body.status).toBe("completed");
    expect(body.output).toEqual([{ arguments: '{"city": "x", "days": 1}', call_id: expect.stringMatching(/^call_[0-9a-f]{32}$/), name: "get_weather", type: "function_call", id: expect.stringMatching(/^fc_[0-9a-f]{32}$/), status: "completed" }]);
    expect(Object.keys(body.output[0])).toEqual(["arguments", "call_id", "name", "type", "id", "status"]);
    // `{"` `city` `":` ` "` `x` `",` ` "` `days` `":` ` ` `1` `}`: 12 pieces, as chat counts a forced call.
    expect(body.usage.output_tokens).toBe(12);
    expect(fake.usages.at(-1)).toEqual({ prompt_tokens: body.usage.input_tokens, completion_tokens: 12, total_tokens: body.usage.input_tokens + 12 });
  });

  it("a named function ({type: function, name}): that function; max_output_tokens cuts its arguments and the response is incomplete", async () => {
    const named = JSON.parse(await post({ ...ask, tool_choice: { type: "function", name: "get_time" } }));
    expect(named.output).toMatchObject([{ type: "function_call", name: "get_time", arguments: "{}" }]);
    expect(named.usage.output_tokens).toBe(1);
    const cut = JSON.parse(await post({ ...ask, tool_choice: { type: "function", name: "get_weather" }, max_output_tokens: 3 }));
    expect(cut).toMatchObject({ status: "incomplete", incomplete_details: { reason: "max_output_tokens" }, output: [{ type: "function_call", arguments: '{"city":' }], usage: { output_tokens: 3 } });
  });

  it('"auto", "none", no tool_choice, or a name no tool has: text as before', async () => {
    for (const choice of [{ tool_choice: "auto" }, { tool_choice: "none" }, {}, { tool_choice: { type: "function", name: "nope" } }]) {
      const body = JSON.parse(await post({ ...ask, ...choice, max_output_tokens: 2 }));
      expect(body.output).toMatchObject([{ type: "message", content: [{ type: "output_text", text: "t1 t2" }] }]);
    }
  });

  it("streams the call: output_item.added (in_progress, the first piece), one arguments delta a token, arguments.done, output_item.done, then response.completed with the call and its usage", async () => {
    const all = events(await post({ ...ask, tool_choice: "required", stream: true }));
    expect(all.map((e) => e.type)).toEqual(["response.created", "response.in_progress", "response.output_item.added", ...Array(12).fill("response.function_call_arguments.delta"), "response.function_call_arguments.done", "response.output_item.done", "response.completed"]);
    expect(all.map((e) => e.sequence_number)).toEqual(all.map((_, i) => i));
    const [added, ...rest] = all.slice(2);
    expect(added).toMatchObject({ output_index: 0, item: { arguments: '{"', name: "get_weather", type: "function_call", status: "in_progress" } });
    const itemId = added!.item.id;
    const deltas = rest.slice(0, 12);
    expect(deltas.map((d) => d.delta).join("")).toBe('{"city": "x", "days": 1}');
    for (const d of deltas) expect(d).toMatchObject({ item_id: itemId, output_index: 0 });
    expect(rest[12]).toMatchObject({ arguments: '{"city": "x", "days": 1}', item_id: itemId, name: "get_weather", output_index: 0 });
    expect(rest[13]).toMatchObject({ output_index: 0, item: { arguments: '{"city": "x", "days": 1}', call_id: added!.item.call_id, name: "get_weather", type: "function_call", id: itemId, status: "completed" } });
    const done = rest[14]!.response;
    expect(done).toMatchObject({ status: "completed", output: [{ type: "function_call", name: "get_weather", arguments: '{"city": "x", "days": 1}' }], usage: { output_tokens: 12 } });
    expect(fake.usages.at(-1)!.completion_tokens).toBe(12);
  });

  it("text.format json_schema: the schema's required properties as the message's JSON text, streamed one piece a delta; max_output_tokens cuts it", async () => {
    const text = { format: { type: "json_schema", name: "weather", schema, strict: true } };
    const body = JSON.parse(await post({ model: "qwen2.5-7b", input: "weather as JSON", text }));
    expect(body.output).toMatchObject([{ type: "message", content: [{ type: "output_text", text: '{"city": "x", "celsius": 1}' }] }]);
    expect(body.usage.output_tokens).toBe(12);
    const streamed = events(await post({ model: "qwen2.5-7b", input: "weather as JSON", text, stream: true }));
    expect(streamed.filter((e) => e.type === "response.output_text.delta").map((e) => e.delta).join("")).toBe('{"city": "x", "celsius": 1}');
    expect(streamed.at(-1)!.response.usage.output_tokens).toBe(12);
    const cut = JSON.parse(await post({ model: "qwen2.5-7b", input: "weather as JSON", text, max_output_tokens: 3 }));
    expect(cut).toMatchObject({ status: "incomplete", output: [{ content: [{ text: '{"city":' }] }], usage: { output_tokens: 3 } });
  });

  it('text.format json_object or "text": text as before (vLLM\'s Responses API constrains only json_schema)', async () => {
    for (const format of [{ type: "json_object" }, { type: "text" }]) {
      const body = JSON.parse(await post({ model: "qwen2.5-7b", input: "x", text: { format }, max_output_tokens: 2 }));
      expect(body.output[0].content[0].text).toBe("t1 t2");
    }
  });
});
