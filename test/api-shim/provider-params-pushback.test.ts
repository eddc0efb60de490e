import { BadRequestError } from "openai";
import type { ChatCompletionMessageParam } from "openai/resources/chat/completions";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startShim, type Harness } from "../support/shim-harness.ts";
import { loopbackServer } from "../support/shim-process.ts";
import { failure } from "../support/api-failure.ts";

/**
 * The tool-calling loop of OpenAI's own docs pushes the answer's message back:
 * `messages.push(completion.choices[0].message)`. For a provider's model that message is LiteLLM's
 * (BerriAI/litellm litellm/types/utils.py `class Message`; convert_dict_to_response.py
 * convert_to_model_response_object; llms/anthropic/chat/transformation.py): OpenAI's models answer
 * `annotations: []`, and `refusal`, not a member of LiteLLM's Message, lands in
 * `provider_specific_fields: {"refusal": null}`; Anthropic's answer carries `reasoning_content`,
 * `thinking_blocks` and `provider_specific_fields: {citations, thinking_blocks}`. Found by review:
 * the allow-list of a message's members (provider-params.ts) refused every one of these, so the
 * loop's second turn got a 400.
 */

const thinking = { type: "thinking", thinking: "The user wants the weather.", signature: "EqoBCkgIARAB" };
const call = { id: "call_1", type: "function", function: { name: "weather", arguments: '{"city":"Paris"}' } };
/** The message LiteLLM's proxy answers with, per model, as its pydantic Message serializes. */
const ANSWERS: Record<string, Record<string, unknown>> = {
  gpt: { content: null, role: "assistant", tool_calls: [call], function_call: null, annotations: [], provider_specific_fields: { refusal: null } },
  claude: {
    content: "Let me check.", role: "assistant", tool_calls: [{ ...call, index: 1 }], function_call: null,
    reasoning_content: thinking.thinking, thinking_blocks: [thinking], provider_specific_fields: { citations: null, thinking_blocks: [thinking] },
  },
};
const tools = [{ type: "function" as const, function: { name: "weather", parameters: { type: "object", properties: { city: { type: "string" } } } } }];

describe("a provider model's answer message pushed back by the client", () => {
  let h: Harness;
  let key: string;
  let upstream: { url: string; close(): Promise<void> };
  const bodies: Record<string, unknown>[] = [];
  beforeAll(async () => {
    upstream = await loopbackServer((req, res) => {
      let raw = "";
      req.on("data", (c: Buffer) => (raw += c.toString()));
      req.on("end", () => {
        const b = JSON.parse(raw) as { model: string };
        bodies.push(b);
        const message = ANSWERS[b.model] ?? { role: "assistant", content: "ok" };
        const usage = { prompt_tokens: 20, completion_tokens: 5, total_tokens: 25 };
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ id: "chatcmpl-1", created: 1, model: b.model, object: "chat.completion", choices: [{ finish_reason: "tool_calls", index: 0, message }], usage }));
      });
    });
    const provider = { provider: true, maxModelLen: 200_000, maxOutputTokens: 8192 };
    h = await startShim({ env: { SHIM_UPSTREAM_URL: upstream.url }, file: { models: [{ name: "claude", ...provider }, { name: "gpt", ...provider }] } });
    ({ key } = await h.createKey({ credits: 1000 }));
  });
  afterAll(async () => {
    await h.close();
    await upstream.close();
  });

  /** The second turn's body as the shim sent it on, for `assistant` pushed back after a user turn. */
  const secondTurn = async (model: string, assistant: Record<string, unknown>) => {
    const messages = [{ role: "user", content: "Weather in Paris?" }, assistant, { role: "tool", tool_call_id: "call_1", content: "18C, sunny" }];
    await h.client(key).chat.completions.create({ model, messages: messages as never, tools, max_tokens: 50 });
    return (bodies.at(-1) as { messages: unknown[] }).messages;
  };
  const refused = async (model: string, assistant: Record<string, unknown>) => {
    const sent = bodies.length;
    const e = await failure(() => secondTurn(model, assistant));
    expect(e, JSON.stringify(assistant)).toBeInstanceOf(BadRequestError);
    expect(bodies.length, JSON.stringify(assistant)).toBe(sent);
    expect(e.param).toBe("messages");
    return e.message;
  };

  it("the loop of OpenAI's docs, through the openai SDK: the answer's message pushed back with the tool's result is sent on as it came", async () => {
    for (const model of ["gpt", "claude"]) {
      const c = h.client(key);
      const messages: ChatCompletionMessageParam[] = [{ role: "user", content: "Weather in Paris?" }];
      const completion = await c.chat.completions.create({ model, messages, tools, max_tokens: 50 });
      const message = completion.choices[0]!.message;
      expect(message, model).toMatchObject(ANSWERS[model]!);
      messages.push(message);
      messages.push({ role: "tool", tool_call_id: message.tool_calls![0]!.id, content: "18C, sunny" });
      const next = await c.chat.completions.create({ model, messages, tools, max_tokens: 50 });
      expect(next.choices[0]!.message.role, model).toBe("assistant");
      expect((bodies.at(-1) as { messages: unknown[] }).messages[1], model).toEqual(ANSWERS[model]);
    }
  });

  it("members LiteLLM answers with pass in the values it answers them with", async () => {
    const base = { role: "assistant", content: "ok" };
    for (const extra of [
      { annotations: null },
      { annotations: [{ type: "url_citation", url_citation: { start_index: 0, end_index: 2, title: "Paris", url: "https://example.com/paris" } }] },
      // Absent from LiteLLM's answer unless set; empty, nothing reaches the provider.
      { images: null, reasoning_items: [] },
      { images: [], reasoning_items: null },
      { provider_specific_fields: null },
      { provider_specific_fields: {} },
      { provider_specific_fields: { refusal: "I can't help with that." } },
      { provider_specific_fields: { citations: [[{ type: "char_location", cited_text: "x", document_index: 0, start_char_index: 0, end_char_index: 1 }]], thinking_blocks: null } },
      // Gemini's thought signatures, which LiteLLM's Gemini converter puts back on the text part (opaque, checked by Gemini).
      { provider_specific_fields: { thought_signatures: ["CiQB0e2Kb3dFq"] } },
      // OpenRouter's reasoning, which LiteLLM moves there from an OpenAI-compatible provider's message: text or opaque.
      { provider_specific_fields: { reasoning: "Step 1", reasoning_details: [{ type: "reasoning.text", text: "Step 1", format: "google-gemini-v1" }, { type: "reasoning.encrypted", data: "gAAAA", format: "anthropic-claude-v1" }, { type: "reasoning.summary", summary: "s" }] } },
      // What LiteLLM would make content, when empty: nothing to add.
      { provider_specific_fields: { compaction_blocks: null, web_search_results: [], tool_results: null } },
    ]) {
      const sent = await secondTurn("claude", { ...base, ...extra });
      expect(sent[1], JSON.stringify(extra)).toEqual({ ...base, ...extra });
    }
  });

  it("provider_specific_fields with what LiteLLM puts into the provider's request as content is refused, naming the member and saying to drop it", async () => {
    const base = { role: "assistant", content: "ok" };
    for (const fields of [
      // anthropic_messages_pt puts these blocks into Anthropic's content as they come.
      { compaction_blocks: [{ type: "container_upload", file_id: "file_1" }] },
      { compaction_blocks: [{ type: "compaction", content: "a summary the key wrote" }] },
      { web_search_results: [{ type: "web_search_tool_result", tool_use_id: "srvtoolu_1", content: [] }] },
      { tool_results: [{ type: "code_execution_tool_result", tool_use_id: "srvtoolu_1", content: {} }] },
      // Not LiteLLM's: refused until vetted.
      { container: { id: "container_1" } },
      // Its copy of the thinking blocks: only thinking, as the member's own.
      { thinking_blocks: [{ type: "document", source: { type: "url", url: "https://example.com/300-pages.pdf" } }] },
      { refusal: { type: "text" } },
      { reasoning_details: [{ type: "document", source: { type: "url", url: "https://example.com/x.pdf" } }] },
      { reasoning_details: [{ type: "reasoning.text", text: "t", source: { type: "url", url: "https://example.com/x.pdf" } }] },
      { reasoning: [{ type: "image_url", image_url: { url: "https://example.com/x.png" } }] },
      // Named as Object.prototype's members: unknown all the same (found by review: they passed, or got a 500).
      { constructor: [{ type: "document", source: { type: "url", url: "https://example.com/a.pdf" } }] },
      { toString: [{ type: "document", source: { type: "url", url: "https://example.com/a.pdf" } }] },
      { hasOwnProperty: [{ type: "document", source: { type: "url", url: "https://example.com/a.pdf" } }] },
      { valueOf: [{ type: "document", source: { type: "url", url: "https://example.com/a.pdf" } }] },
      { isPrototypeOf: [{ type: "document", source: { type: "url", url: "https://example.com/a.pdf" } }] },
      { thought_signatures: [{ type: "document", source: { type: "url", url: "https://example.com/x.pdf" } }] },
    ]) {
      const message = await refused("claude", { ...base, provider_specific_fields: fields });
      const member = Object.keys(fields)[0]!;
      expect(message, member).toContain(`provider_specific_fields.${member}`);
      expect(message, member).toMatch(/drop .*provider_specific_fields.* before sending .* back/i);
    }
    for (const fields of ["x", [{ compaction_blocks: [] }]]) {
      expect(await refused("claude", { ...base, provider_specific_fields: fields })).toContain("provider_specific_fields");
    }
  });

  it("images, reasoning items and annotations other than LiteLLM's are refused: LiteLLM may send them on as input the hold does not count", async () => {
    const base = { role: "assistant", content: "ok" };
    for (const extra of [
      { images: [{ type: "image_url", image_url: { url: "data:image/png;base64,AAAA" }, index: 0 }] },
      { reasoning_items: [{ id: "rs_1", type: "reasoning", summary: [], encrypted_content: "gAAAA" }] },
      { annotations: [{ type: "file_citation", file_id: "file_1" }] },
      { annotations: "x" },
    ]) {
      const member = Object.keys(extra)[0]!;
      const message = await refused("claude", { ...base, ...extra });
      expect(message, member).toContain(`'${member}'`);
      expect(message, member).toMatch(/drop it before sending the message back/i);
    }
  });
});
