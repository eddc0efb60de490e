import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Harness } from "../support/shim-harness.ts";
import { CREDIT, type ScriptedUpstream, sse, startScriptedShim } from "../support/responses-events.ts";

/**
 * The shim against vLLM's Responses dialect as vllm-project/vllm writes it
 * (vllm/entrypoints/openai/responses/serving.py, streaming_events.py, protocol.py, api_router.py):
 * `event: <type>` + model_dump_json, sequence numbers from 0, a reasoning item
 * (reasoning_part.added / reasoning_text.delta), a function call (function_call_arguments.delta),
 * `response.completed` (status "incomplete" too) with vLLM's ResponseUsage (per-turn arrays,
 * tool_output_tokens), and a GenerationError mid-stream, which vLLM turns into a pydantic
 * ValidationError: the ASGI app raises after the headers, and the connection is dropped.
 */

// 1 credit a request, 0.001 credit a prompt token (0 for a cached one), 1 credit an output token.
const FILE = {
  pricing: { request: 1, models: { m: { promptPer1k: 1, completionPer1k: 1000, cachedPromptPer1k: 0 } } },
  models: [{ name: "m", maxModelLen: 8192 }],
};

let seq = 0;
const ev = (fields: Record<string, unknown>) => `event: ${String(fields.type)}\ndata: ${JSON.stringify({ ...fields, sequence_number: seq++, type: fields.type })}\n\n`;

/** vLLM's ResponseUsage (protocol.py): cached_tokens always there (num_cached_tokens), per-turn arrays. */
const vllmUsage = (input: number, cached: number, output: number, reasoning = 0) => ({
  input_tokens: input,
  input_tokens_details: { cached_tokens: cached, input_tokens_per_turn: [input], cached_tokens_per_turn: [cached] },
  output_tokens: output,
  output_tokens_details: { reasoning_tokens: reasoning, tool_output_tokens: 0, output_tokens_per_turn: [output], tool_output_tokens_per_turn: [0] },
  total_tokens: input + output,
});
const resp = (status: string, output: unknown[], usage: unknown) => ({
  id: "resp_abc", created_at: 1, incomplete_details: status === "incomplete" ? { reason: "max_output_tokens" } : null, instructions: null, metadata: null, model: "m", object: "response", output,
  parallel_tool_calls: true, temperature: 1, tool_choice: "auto", tools: [], top_p: 1, background: false, max_output_tokens: 64, max_tool_calls: null, previous_response_id: null, prompt: null, reasoning: null,
  service_tier: "auto", status, text: null, top_logprobs: null, truncation: "disabled", usage, user: null, input_messages: null, output_messages: null,
});

/** A reasoning item, then a function call, as SimpleStreamingEventProcessor emits them. */
function vllmStream(finalStatus: string, usage: unknown): string[] {
  seq = 0;
  const out = [ev({ response: resp("in_progress", [], null), type: "response.created" }), ev({ response: resp("in_progress", [], null), type: "response.in_progress" })];
  out.push(ev({ item: { id: "msg_r", summary: [], type: "reasoning", status: "in_progress" }, output_index: 0, type: "response.output_item.added" }));
  out.push(ev({ content_index: 0, item_id: "msg_r", output_index: 0, part: { text: "", type: "reasoning_text" }, type: "response.reasoning_part.added" }));
  for (const d of ["Let", " me", " think"]) out.push(ev({ content_index: 0, delta: d, item_id: "msg_r", output_index: 0, type: "response.reasoning_text.delta" }));
  out.push(ev({ content_index: 0, item_id: "msg_r", output_index: 0, text: "Let me think", type: "response.reasoning_text.done" }));
  out.push(ev({ content_index: 0, item_id: "msg_r", output_index: 0, part: { text: "Let me think", type: "reasoning_text" }, type: "response.reasoning_part.done" }));
  out.push(ev({ item: { id: "msg_r", summary: [], type: "reasoning", content: [{ text: "Let me think", type: "reasoning_text" }], encrypted_content: null, status: "completed" }, output_index: 0, type: "response.output_item.done" }));
  out.push(ev({ item: { arguments: "", call_id: "call_1", name: "get_weather", type: "function_call", id: "fc_1", status: "in_progress" }, output_index: 1, type: "response.output_item.added" }));
  for (const d of ['{"city"', ': "Paris"}']) out.push(ev({ delta: d, item_id: "fc_1", output_index: 1, type: "response.function_call_arguments.delta" }));
  out.push(ev({ arguments: '{"city": "Paris"}', item_id: "fc_1", name: "get_weather", output_index: 1, type: "response.function_call_arguments.done" }));
  out.push(ev({ item: { arguments: '{"city": "Paris"}', call_id: "call_1", name: "get_weather", type: "function_call", id: "fc_1", status: "completed" }, output_index: 1, type: "response.output_item.done" }));
  out.push(ev({ response: resp(finalStatus, [], usage), type: "response.completed" }));
  return out;
}

describe("vLLM's own Responses dialect", () => {
  let h: Harness;
  let upstream: ScriptedUpstream;
  let close: () => Promise<void>;
  beforeAll(async () => ({ h, upstream, close } = await startScriptedShim(FILE)));
  afterAll(() => close());
  const spent = async (id: string) => 1000 * CREDIT - (await h.store.getKey(id))!.balance;
  /** A streamed request the upstream answers with `events` whole: what the client read, and what its key was charged. */
  const streamed = async (events: string[]) => {
    upstream.script = (_q, res) => {
      sse(res);
      for (const e of events) res.write(e);
      res.end();
    };
    const { key, id } = await h.createKey({ credits: 1000 });
    const text = await (await h.post(key, "/v1/responses", { model: "m", input: "weather?", max_output_tokens: 64, stream: true })).text();
    return { text, charged: await spent(id) };
  };

  it("a stream with a reasoning item and a function call is charged its response.completed usage exactly, and relayed whole", async () => {
    const events = vllmStream("completed", vllmUsage(50, 0, 9, 3));
    const { text, charged } = await streamed(events);
    // 1 request + 50 × 0.001 + 9 output tokens.
    expect(charged).toBe(CREDIT + 50_000 + 9 * CREDIT);
    for (const e of events.slice(0, -1)) expect(text).toContain(e);
    expect(text).toMatch(/event: response\.completed\ndata: \{.*"credits_charged"/);
  });

  // vLLM's Responses usage reports prompt-cache hits always (cached_tokens: num_cached_tokens),
  // where chat needs --enable-prompt-tokens-details: those are charged the cached price.
  it("cached input tokens are charged at cachedPromptPer1k (here 0)", async () => {
    // 1 request + (50 − 40) × 0.001 + 9 output tokens.
    expect((await streamed(vllmStream("completed", vllmUsage(50, 40, 9)))).charged).toBe(CREDIT + 10_000 + 9 * CREDIT);
  });

  it("status incomplete arrives as response.completed (vLLM sends no response.incomplete): charged its usage", async () => {
    expect((await streamed(vllmStream("incomplete", vllmUsage(50, 0, 64)))).charged).toBe(CREDIT + 50_000 + 64 * CREDIT);
  });

  it("a GenerationError mid-stream is a dropped connection (no error event, no final event): the client is told, charged the deltas delivered", async () => {
    const events = vllmStream("completed", vllmUsage(50, 0, 9)).slice(0, 8); // created … the reasoning deltas, then the drop
    upstream.script = (_q, res) => {
      sse(res);
      for (const e of events) res.write(e);
      setTimeout(() => res.destroy(), 50);
    };
    const { key, id } = await h.createKey({ credits: 1000 });
    const text = await (await h.post(key, "/v1/responses", { model: "m", input: "weather?", max_output_tokens: 64, stream: true })).text();
    expect(text).toMatch(/event: error\ndata: \{"type":"error","code":"upstream_error"/);
    // An upstream failure after content: the request price and the content only (3 reasoning deltas, at least a token each), no prompt.
    const charged = await spent(id);
    expect(charged).toBeGreaterThanOrEqual(CREDIT + 3 * CREDIT);
    expect(charged).toBeLessThanOrEqual(CREDIT + 64 * CREDIT);
  });
});
