import { BadRequestError } from "openai";
import { beforeAll, describe, expect, it } from "vitest";
import { failure } from "../support/api-failure.ts";
import type { FakeLitellmResponses } from "../support/fake-litellm-responses.ts";
import { litellmResponsesShim } from "../support/litellm-responses-shim.ts";
import type { Harness } from "../support/shim-harness.ts";

/**
 * A provider's model on /v1/responses: every listed input item and content part member passes,
 * and what the docs say is refused is (docs/api-shim/request-bodies.md,
 * "Members refused for providers' models"; provider-responses-input.ts, provider-params.ts).
 */
const FILE = {
  pricing: { request: 1, models: { claude: { promptPer1k: 1, completionPer1k: 1000 } } },
  models: [{ name: "claude", provider: true, maxModelLen: 200_000, maxOutputTokens: 8192 }],
};

describe("a provider's model on /v1/responses: the allow-list, member by member", () => {
  const f = litellmResponsesShim(FILE, true);
  let h: Harness;
  let litellm: FakeLitellmResponses;
  beforeAll(() => void ({ h, litellm } = f));

  const passes = async (body: Record<string, unknown>) => {
    const { key } = await h.createKey({ credits: 1000 });
    const res = await h.client(key).responses.create({ model: "claude", max_output_tokens: 16, ...body } as never);
    expect(res.output_text, JSON.stringify(body)).toBe("Hello there, friend");
    expect(litellm.bodies.at(-1), JSON.stringify(body)).toEqual({ model: "claude", max_output_tokens: 16, ...body });
  };
  const refused = async (body: Record<string, unknown>) => {
    const { key } = await h.createKey({ credits: 1000 });
    const before = litellm.bodies.length;
    const e = await failure(() => h.client(key).responses.create({ model: "claude", max_output_tokens: 16, ...body } as never));
    expect(e, JSON.stringify(body)).toBeInstanceOf(BadRequestError);
    expect(litellm.bodies.length, JSON.stringify(body)).toBe(before);
    return e;
  };

  it("every listed item member and part type passes (each one alone, so a dropped entry is seen)", async () => {
    const user = (part: Record<string, unknown>) => [{ role: "user", content: [part] }];
    for (const input of [
      [{ type: "message", role: "assistant", id: "msg_1", status: "completed", phase: "final_answer", content: [{ type: "output_text", text: "hi", annotations: [{ type: "url_citation", url: "https://example.com", title: "x", start_index: 0, end_index: 1 }], logprobs: [] }] }],
      [{ type: "message", role: "assistant", content: [{ type: "refusal", refusal: "no" }] }],
      [{ type: "function_call", call_id: "c1", name: "f", arguments: "{}", namespace: "ns" }, { type: "function_call_output", id: "fco_1", call_id: "c1", output: "42", status: "completed", name: "f", namespace: "ns" }],
      [{ type: "function_call", call_id: "c1", name: "f", arguments: "{}" }, { type: "function_call_output", call_id: "c1", output: [{ type: "input_text", text: "42" }] }],
      [{ type: "reasoning", id: "rs_1", role: "assistant", summary: [{ type: "summary_text", text: "t" }], content: [{ type: "reasoning_text", text: "thinking" }], encrypted_content: "gAAA", status: "completed" }, { role: "user", content: "go on" }],
      user({ type: "input_image", file_id: "file-abc", detail: "low" }),
      user({ type: "input_file", file_id: "file-abc" }),
      user({ type: "input_file", file_data: "data:application/pdf;base64,JVBERi0=", filename: "a.pdf" }),
      user({ type: "input_audio", input_audio: { data: "UklGRg==", format: "wav" } }),
    ]) {
      await passes({ input });
    }
  });

  it("the listed top-level members pass as the docs say (background false, truncation, max_tool_calls, top_logprobs, include of logprobs, instructions as a string or null)", async () => {
    for (const extra of [{ background: false }, { truncation: "auto" }, { max_tool_calls: 2 }, { top_logprobs: 2 }, { include: ["message.output_text.logprobs"] }, { include: null }, { instructions: null }, { instructions: "Be terse." }, { previous_response_id: null }, { image: null }, { top_k: 5 }, { thinking: { type: "enabled", budget_tokens: 1024 } }, { speed: "standard" }]) {
      await passes({ input: "hi", ...extra });
    }
  });

  it("what the docs say is refused is refused, naming input", async () => {
    for (const input of [
      // OpenAI's explicit cache writes on a part (docs: not prompt_cache_breakpoint).
      [{ role: "user", content: [{ type: "input_text", text: "hi", prompt_cache_breakpoint: { ttl: "1h" } }] }],
      // A reasoning summary: summary_text parts with type and text only, in a list.
      [{ type: "reasoning", id: "rs_1", summary: [{ type: "summary_text", text: "t", cache_control: { type: "ephemeral" } }] }],
      [{ type: "reasoning", id: "rs_1", summary: [{ type: "container_upload", text: "t" }] }],
      [{ type: "reasoning", id: "rs_1", summary: "t" }],
      // An item that is not an object.
      ["hi"],
      [[{ role: "user", content: "hi" }]],
      // An answer's members in values that are not inert (answer-members.ts), on an item and on a part.
      [{ type: "function_call", call_id: "c1", name: "f", arguments: "{}", provider_specific_fields: { compaction_blocks: [{ type: "compaction", content: "x" }] } }],
      [{ role: "assistant", content: [{ type: "output_text", text: "hi", annotations: [{ type: "container_file_citation", file_id: "cfile_1" }] }] }],
      // A type named as Object.prototype's member: a 400, not a 500.
      [{ type: "constructor" }],
    ]) {
      const e = await refused({ input });
      expect(e.status, JSON.stringify(input)).toBe(400);
    }
  });

  // The AI SDK's second turn, with its default store on, refers to the first answer's message.
  it("an item_reference is refused with the AI SDK's option that sends the item itself", async () => {
    const e = await refused({ input: [{ role: "user", content: "Hello" }, { type: "item_reference", id: "msg_1" }, { role: "user", content: "And?" }] });
    expect(e.param).toBe("input");
    expect(e.message).toContain("input[1] is an item_reference");
    expect(e.message).toContain("providerOptions: { openai: { store: false } }");
  });

  it("a streamed request is checked as one that is not", async () => {
    const e = await refused({ input: [{ type: "item_reference", id: "msg_1" }], stream: true });
    expect(e.param).toBe("input");
    expect((await refused({ input: "hi", include: ["file_search_call.results"], stream: true })).param).toBe("include");
  });

  // LiteLLM's bridge makes `instructions` the system message as it came, and
  // AnthropicConfig.translate_system_message keeps a block's cache_control: a cache write billed
  // at up to 2x that the bridge's usage does not report.
  it("`instructions` that is not a string is refused: as a list of parts it would carry Anthropic's cache_control past the part checks", async () => {
    const e = await refused({ input: "hi", instructions: [{ type: "text", text: "You are terse.", cache_control: { type: "ephemeral", ttl: "1h" } }] });
    expect(e.param).toBe("instructions");
  });
});
