import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_FILE, startShim, type Harness } from "../support/shim-harness.ts";

/**
 * A forced function call and a JSON schema text format on /v1/responses, through the shim with
 * OpenAI's SDK against the fake vLLM (which answers them as vLLM's Responses API does): the call or
 * the JSON arrives whole, and the key pays exactly the usage the upstream reported (1 credit a
 * request, 1 per 1k prompt tokens, 10 per 1k output tokens).
 */
describe("POST /v1/responses: forced function calls and text.format json_schema through the shim", () => {
  let h: Harness;
  const weather = { type: "function" as const, name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" }, days: { type: "integer" } }, required: ["city", "days"] }, strict: true };
  beforeAll(async () => {
    h = await startShim({ file: { ...DEFAULT_FILE, pricing: { request: 1, models: { "qwen2.5-7b": { promptPer1k: 1, completionPer1k: 10 } } } } });
  });
  afterAll(() => h.close());
  const charged = async (id: string) => 100_000_000 - (await h.store.getKey(id))!.balance;
  const owed = () => {
    const u = h.fake.usages.at(-1)!;
    return 1_000_000 + u.prompt_tokens * 1000 + u.completion_tokens * 10_000;
  };

  it("non-streamed: the forced call is the output, charged the fake's usage", async () => {
    const { key, id } = await h.createKey({ credits: 100 });
    const r = await h.client(key).responses.create({ model: "qwen2.5-7b", input: "Weather in Paris?", tools: [weather], tool_choice: "required" });
    expect(r.output).toMatchObject([{ type: "function_call", name: "get_weather", arguments: '{"city": "x", "days": 1}', call_id: expect.stringMatching(/^call_/) }]);
    expect(JSON.parse((r.output[0] as { arguments: string }).arguments)).toEqual({ city: "x", days: 1 });
    expect(r.usage!.output_tokens).toBe(h.fake.usages.at(-1)!.completion_tokens);
    expect(await charged(id)).toBe(owed());
  });

  it("streamed, a named function: the SDK sees the call's events and the completed response holds it, charged the fake's usage", async () => {
    const { key, id } = await h.createKey({ credits: 100 });
    const stream = await h.client(key).responses.create({ model: "qwen2.5-7b", input: "Weather in Paris?", tools: [weather], tool_choice: { type: "function", name: "get_weather" }, stream: true });
    let args = "";
    let done: { arguments: string; name: string } | undefined;
    let completed: { output: unknown[]; usage?: { output_tokens: number } | null } | undefined;
    for await (const e of stream) {
      if (e.type === "response.function_call_arguments.delta") args += e.delta;
      if (e.type === "response.output_item.done" && e.item.type === "function_call") done = e.item;
      if (e.type === "response.completed") completed = e.response;
    }
    expect(args).toBe('{"city": "x", "days": 1}');
    expect(done).toMatchObject({ name: "get_weather", arguments: args });
    expect(completed!.output).toMatchObject([{ type: "function_call", name: "get_weather", arguments: args }]);
    expect(completed!.usage!.output_tokens).toBe(h.fake.usages.at(-1)!.completion_tokens);
    expect(await charged(id)).toBe(owed());
  });

  it("text.format json_schema: output_text is the JSON, streamed and not, charged the fake's usage", async () => {
    const { key, id } = await h.createKey({ credits: 100 });
    const text = { format: { type: "json_schema" as const, name: "weather", schema: { type: "object", properties: { city: { type: "string" }, celsius: { type: "integer" } }, required: ["city", "celsius"] }, strict: true } };
    const r = await h.client(key).responses.create({ model: "qwen2.5-7b", input: "Weather in Paris as JSON", text });
    expect(JSON.parse(r.output_text)).toEqual({ city: "x", celsius: 1 });
    expect(await charged(id)).toBe(owed());
    const before = await charged(id);
    const stream = await h.client(key).responses.create({ model: "qwen2.5-7b", input: "Weather in Paris as JSON", text, stream: true });
    let streamed = "";
    for await (const e of stream) if (e.type === "response.output_text.delta") streamed += e.delta;
    expect(JSON.parse(streamed)).toEqual({ city: "x", celsius: 1 });
    expect((await charged(id)) - before).toBe(owed());
  });
});
