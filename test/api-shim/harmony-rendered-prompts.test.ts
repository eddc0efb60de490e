import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseInferenceRequest } from "../../api-shim/src/requests/inference-request.ts";
import { parseResponsesRequest } from "../../api-shim/src/requests/responses-request.ts";
import { CREDIT, type ScriptedUpstream, startScriptedShim } from "../support/responses-events.ts";
import { balanceOf, type Harness } from "../support/shim-harness.ts";

/**
 * gpt-oss, served through vLLM's harmony path, renders some text of the body more than once into
 * the prompt, past the hold's bound (the body's bytes, a token being at least one, plus a
 * template's tokens), which capped the charge below vLLM's usage ("charge capped at the hold"):
 * - each tool output is authored `functions.<name>`, the name of the call it answers
 *   (responses/harmony.py response_input_to_harmony finds the `function_call` by `call_id`;
 *   parser/harmony_utils.py parse_chat_input_to_harmony_message the assistant's tool call by
 *   `tool_call_id`): one long name, sent once, is in the prompt once per output;
 * - on the Responses route the first `system` input item is the system message's model identity
 *   (responses/serving.py _extract_system_message_from_request) and a developer message again.
 *
 * gpt-oss's tokenizer (o200k_harmony) makes "1a1a1a…" one token per byte, the bound the hold
 * assumes; the scripted upstream reports the input tokens vLLM would: the repeated text at one
 * token a byte, plus 4 tokens of framing a message.
 */
const MODEL = "gpt-oss-120b";
const FILE = {
  pricing: { request: 1, models: { [MODEL]: { promptPer1k: 1000, completionPer1k: 1000 } } }, // 1 credit a token either way
  models: [{ name: MODEL, maxModelLen: 131072 }],
};

const responsesAnswer = (input: number) => ({
  id: "resp_1", object: "response", created_at: 1, model: MODEL, status: "completed",
  output: [{ id: "msg_1", type: "message", role: "assistant", status: "completed", content: [{ type: "output_text", text: "ok", annotations: [] }] }],
  usage: { input_tokens: input, input_tokens_details: { cached_tokens: 0 }, output_tokens: 1, output_tokens_details: { reasoning_tokens: 0 }, total_tokens: input + 1 },
});
const chatAnswer = (input: number) => ({
  id: "chatcmpl-1", object: "chat.completion", created: 1, model: MODEL,
  choices: [{ index: 0, message: { role: "assistant", content: "ok" }, finish_reason: "stop" }],
  usage: { prompt_tokens: input, completion_tokens: 1, total_tokens: input + 1 },
});

describe("text gpt-oss's harmony path renders more than once is held for", () => {
  let h: Harness;
  let upstream: ScriptedUpstream;
  let close: () => Promise<void>;
  beforeAll(async () => ({ h, upstream, close } = await startScriptedShim(FILE)));
  afterAll(() => close());
  const capped = () => h.logs.filter((l) => l.includes('"msg":"charge capped at the hold"')).length;

  /** Sends `body` to `path`, non-streamed, the upstream answering `answer`; returns what the key was charged (credits). */
  const charge = async (path: string, body: object, answer: object) => {
    upstream.script = (_q, res) => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(answer));
    const { key, id } = await h.createKey({ credits: 1_000_000 });
    const res = await h.post(key, path, body);
    expect(res.status).toBe(200);
    return (1_000_000 * CREDIT - (await balanceOf(h.store, id))) / CREDIT;
  };

  it("Responses: 100 function_call_outputs of one call with a 1,000-byte name are charged the name 101 times, as vLLM's usage says", async () => {
    const name = "1a".repeat(500);
    const outputs = Array.from({ length: 100 }, () => ({ type: "function_call_output", call_id: "c", output: "ok" }));
    const body = { model: MODEL, input: [{ type: "function_call", call_id: "c", name, arguments: "{}" }, ...outputs, { role: "user", content: "go" }], max_output_tokens: 16 };
    const input = 101 * 1000 + 102 * 4;
    const before = capped();
    expect(await charge("/v1/responses", body, responsesAnswer(input))).toBe(1 + input + 1);
    expect(capped()).toBe(before);
  });

  it("Responses: the first system item, 60,000 bytes, is charged twice (model identity, then developer instructions)", async () => {
    const body = { model: MODEL, input: [{ role: "system", content: "1a".repeat(30_000) }, { role: "user", content: "go" }], max_output_tokens: 16 };
    const input = 2 * 60_000 + 3 * 4 + 40; // twice, the framing, the system message's own text
    const before = capped();
    expect(await charge("/v1/responses", body, responsesAnswer(input))).toBe(1 + input + 1);
    expect(capped()).toBe(before);
  });

  it("chat: 100 tool messages answering one call with a 1,000-byte name are charged the name 101 times", async () => {
    const name = "1a".repeat(500);
    const call = { role: "assistant", content: null, tool_calls: [{ id: "c", type: "function", function: { name, arguments: "{}" } }] };
    const tools = Array.from({ length: 100 }, () => ({ role: "tool", tool_call_id: "c", content: "ok" }));
    const body = { model: MODEL, messages: [{ role: "user", content: "go" }, call, ...tools], max_tokens: 16 };
    const input = 101 * 1000 + 102 * 4;
    const before = capped();
    expect(await charge("/v1/chat/completions", body, chatAnswer(input))).toBe(1 + input + 1);
    expect(capped()).toBe(before);
  });
});

describe("what the hold counts again, on ordinary requests", () => {
  it("is each output's call name and the first system item's text on the Responses route, a few bytes for a tool loop", () => {
    const body = {
      model: "m",
      input: [
        { role: "system", content: [{ type: "input_text", text: "Be brief." }] },
        { role: "user", content: "Weather in Paris?" },
        { type: "function_call", call_id: "call_1", name: "get_weather", arguments: '{"city":"Paris"}' },
        { type: "function_call_output", call_id: "call_1", output: "18C" },
        { type: "function_call_output", call_id: "call_unknown", output: "from a previous response" },
        { role: "system", content: "A later system item is rendered once." },
      ],
    };
    expect(parseResponsesRequest(body).repeatedTextBytes).toBe("Be brief.".length + "get_weather".length);
    expect(parseResponsesRequest({ model: "m", input: "hi" }).repeatedTextBytes).toBe(0);
  });

  it("is each tool message's call name in chat, and not the system message, which vLLM's harmony chat renders once (extract_instructions_from_messages)", () => {
    const messages = [
      { role: "system", content: "You are terse.".repeat(100) },
      { role: "user", content: "Weather in Paris and Rome?" },
      { role: "assistant", content: null, tool_calls: [{ id: "a", type: "function", function: { name: "get_weather", arguments: "{}" } }, { id: "b", type: "function", function: { name: "get_time", arguments: "{}" } }] },
      { role: "tool", tool_call_id: "a", content: "18C" },
      { role: "tool", tool_call_id: "b", content: "noon" },
      { role: "tool", tool_call_id: "nowhere", content: "?" },
    ];
    expect(parseInferenceRequest("chat", { model: "m", messages }).repeatedTextBytes).toBe("get_weather".length + "get_time".length);
    // vLLM looks a tool message up by tool_call_id, "" when it has none (chat_msg.get("tool_call_id", "")),
    // and files a call under its id, None when it has none: a call whose id is "" answers the tool
    // messages without one, and a call without an id answers none (found by a hostile-tenant review).
    const unnamed = [
      { role: "assistant", content: null, tool_calls: [{ id: "", type: "function", function: { name: "looked_up_by_empty_id", arguments: "{}" } }, { type: "function", function: { name: "without_id", arguments: "{}" } }] },
      { role: "tool", content: "1" },
      { role: "tool", content: "2" },
      { role: "tool", tool_call_id: null, content: "3" },
    ];
    expect(parseInferenceRequest("chat", { model: "m", messages: unnamed }).repeatedTextBytes).toBe(2 * "looked_up_by_empty_id".length + "without_id".length);
    expect(parseInferenceRequest("completions", { model: "m", prompt: "hi" }).repeatedTextBytes).toBe(0);
  });
});
