import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Harness } from "../support/shim-harness.ts";
import { CREDIT, type ScriptedUpstream, startScriptedShim } from "../support/responses-events.ts";

/**
 * A hostile key holder against POST /v1/responses, non-streamed: vLLM's ResponsesResponse
 * (vllm/entrypoints/openai/responses/protocol.py) writes `usage`, then `user`, then — when the
 * request sets vLLM's extra parameter `enable_response_messages: true` — `input_messages` and
 * `output_messages`. For gpt-oss (harmony) `input_messages` is `context.messages[:num_init_messages]`
 * (responses/serving.py, responses_full_generator), each serialized with openai_harmony's
 * Message.to_dict(): the developer message's DeveloperContent.model_dump() carries every function
 * tool's `parameters` as the client sent them (ToolDescription.parameters: dict). So a client-chosen
 * JSON object with a `usage` key lands AFTER the real usage. A body of 64 KiB or more is scanned for
 * its usage rather than parsed whole (answer-body.ts): the answer's own member must be the one read,
 * where a search for the last `"usage":{…}` anywhere charged the client's (found by a hostile-tenant review).
 */

const FILE = {
  pricing: { request: 1, models: { m: { promptPer1k: 1, completionPer1k: 1000 } } },
  models: [{ name: "m", maxModelLen: 131072 }],
};

describe("hostile tenant: a forged usage after the real one in a large Responses answer", () => {
  let h: Harness;
  let upstream: ScriptedUpstream;
  let close: () => Promise<void>;
  beforeAll(async () => ({ h, upstream, close } = await startScriptedShim(FILE)));
  afterAll(() => close());

  it("is charged the real usage, not the client's tool-schema 'usage' echoed in input_messages", async () => {
    // What the client sends: an ordinary function tool whose JSON schema carries an extra `usage` member
    // (JSON Schema allows unknown keywords; vLLM's FunctionTool.parameters is a free dict), long
    // instructions (echoed twice: `instructions`, and in input_messages), and vLLM's extra flag.
    const forged = { input_tokens: 0, output_tokens: 0, total_tokens: 0 };
    const tool = { type: "function", name: "lookup", description: "", parameters: { type: "object", properties: { q: { type: "string" } }, usage: forged } };
    const instructions = "Answer briefly. ".repeat(2500); // 40 KB
    const request = { model: "m", input: "Write a long essay.", instructions, tools: [tool], max_output_tokens: 4000, enable_response_messages: true };

    // What vLLM answers (field order of ResponsesResponse; harmony's Message.to_dict for the messages):
    // 10,000 prompt tokens and 4,000 output tokens really generated, the essay delivered in `output`.
    const essay = "lorem ipsum ".repeat(1500);
    upstream.script = (_q, res, body) => {
      const b = JSON.parse(body) as typeof request;
      const answer = {
        id: "resp_1", created_at: 1, incomplete_details: null, instructions: b.instructions, metadata: null, model: "m", object: "response",
        output: [{ id: "msg_1", content: [{ annotations: [], text: essay, type: "output_text", logprobs: null }], role: "assistant", status: "completed", type: "message" }],
        parallel_tool_calls: true, temperature: 1, tool_choice: "auto", tools: b.tools, top_p: 1, background: false, max_output_tokens: 4000, max_tool_calls: null,
        previous_response_id: null, prompt: null, reasoning: null, service_tier: "auto", status: "completed", text: null, top_logprobs: null, truncation: "disabled",
        usage: { input_tokens: 10_000, input_tokens_details: { cached_tokens: 0 }, output_tokens: 4000, output_tokens_details: { reasoning_tokens: 0 }, total_tokens: 14_000 },
        user: null,
        input_messages: [
          { role: "system", name: null, content: [{ type: "system_content", model_identity: "You are ChatGPT, a large language model trained by OpenAI.", reasoning_effort: "Medium", conversation_start_date: "2026-12-06", knowledge_cutoff: "2024-06", channel_config: { valid_channels: ["analysis", "commentary", "final"], channel_required: true } }] },
          { role: "developer", name: null, content: [{ type: "developer_content", instructions: b.instructions, tools: { functions: { name: "functions", tools: b.tools.map((t) => ({ name: t.name, description: t.description, parameters: t.parameters })) } } }] },
          { role: "user", name: null, content: [{ type: "text", text: b.input }] },
        ],
        output_messages: [{ role: "assistant", name: null, content: [{ type: "text", text: essay }], channel: "final" }],
      };
      const text = JSON.stringify(answer);
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
      res.end(text);
    };

    const { key, id } = await h.createKey({ credits: 100_000 });
    const before = (await h.store.getKey(id))!.balance;
    const res = await h.post(key, "/v1/responses", request);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { output: { content: { text: string }[] }[]; credits_charged: string };
    expect(body.output[0]!.content[0]!.text).toBe(essay); // the client has the whole essay
    const charged = before - (await h.store.getKey(id))!.balance;
    // 1 request + 10,000 × 0.001 + 4,000 × 1 credit = 4,011 credits (the forged usage made it 1, the request price alone).
    expect(charged).toBe(CREDIT + 10 * CREDIT + 4000 * CREDIT);
  });
});
