import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FakeVllm } from "../support/fake-vllm.ts";
import { postText, sseDataEvents } from "../support/tools.ts";

/**
 * The fake's structured output, as vLLM answers a chat `response_format` (protocol.py's
 * ChatCompletionRequest.to_sampling_params: json_schema is guided decoding with its schema,
 * json_object any JSON object; docs/features/structured_outputs.md): the JSON is the content,
 * generated one token a piece as a forced call's arguments are.
 */
describe("fake vLLM answers a json_schema or json_object response_format with JSON", () => {
  let fake: FakeVllm;
  const schema = { type: "object", properties: { city: { type: "string" }, celsius: { type: "integer" }, note: { type: "string" } }, required: ["city", "celsius"] };
  const ask = { model: "qwen2.5-7b", messages: [{ role: "user", content: "weather in Paris as JSON" }], response_format: { type: "json_schema", json_schema: { name: "weather", schema } } };
  const post = (body: unknown) => postText(`${fake.url}/chat/completions`, body);
  const events = sseDataEvents;
  beforeAll(async () => {
    fake = await new FakeVllm().start();
  });
  afterAll(() => fake.close());

  it("json_schema: the required properties as JSON content, finish_reason stop, its tokens counted", async () => {
    const body = JSON.parse(await post(ask));
    expect(body.choices[0].message).toMatchObject({ role: "assistant", content: '{"city": "x", "celsius": 1}', tool_calls: [] });
    expect(body.choices[0].finish_reason).toBe("stop");
    // `{"` `city` `":` ` "` `x` `",` ` "` `celsius` `":` ` ` `1` `}`: 12 pieces.
    expect(body.usage.completion_tokens).toBe(12);
  });

  it("streamed: one piece a chunk, the same JSON; max_tokens cuts it with finish_reason length", async () => {
    const chunks = events(await post({ ...ask, stream: true, stream_options: { include_usage: true } }));
    expect(chunks.map((c) => c.choices[0]?.delta.content ?? "").join("")).toBe('{"city": "x", "celsius": 1}');
    expect(chunks.at(-2)!.choices[0].finish_reason).toBe("stop");
    expect(chunks.at(-1)!.usage.completion_tokens).toBe(12);
    const cut = JSON.parse(await post({ ...ask, max_tokens: 3 }));
    expect([cut.choices[0].message.content, cut.choices[0].finish_reason]).toEqual(['{"city":', "length"]);
  });

  it('json_object: "{}"; "text" or no response_format: text as before', async () => {
    expect(JSON.parse(await post({ ...ask, response_format: { type: "json_object" } })).choices[0].message.content).toBe("{}");
    for (const response_format of [{ type: "text" }, undefined]) {
      expect(JSON.parse(await post({ ...ask, response_format, max_tokens: 2 })).choices[0].message.content).toBe("t1 t2");
    }
  });
});
