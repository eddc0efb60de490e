import { BadRequestError } from "openai";
import { beforeAll, describe, expect, it } from "vitest";
import { failure } from "../support/api-failure.ts";
import type { FakeLitellmResponses } from "../support/fake-litellm-responses.ts";
import { leaveResponsesStreamAtFirstDelta, litellmResponsesShim } from "../support/litellm-responses-shim.ts";
import { balanceOf, expectLedgerMatches, type Harness } from "../support/shim-harness.ts";

const CREDIT = 1_000_000;
// 1 credit per request, 0.001 credit per prompt token, 1 credit per output token: charges easy to read.
const FILE = {
  pricing: { request: 1, models: { claude: { promptPer1k: 1, completionPer1k: 1000 } } },
  models: [{ name: "claude", provider: true, maxModelLen: 200_000, maxOutputTokens: 8192 }],
};
const cost = (input: number, output: number) => CREDIT + input * 1000 + output * CREDIT;

/**
 * A provider's model (`provider: true`) on /v1/responses, which the Vercel AI SDK's openai(model)
 * and LangChain's useResponsesApi call: served as on chat, behind an allow-list of the Responses
 * members (provider-params.ts; LiteLLM's Responses-to-chat bridge hands every member it does not
 * know to litellm.completion, which puts it into a non-OpenAI provider's request), its input items
 * and content parts checked (provider-responses-input.ts). Upstream: LiteLLM's proxy as its bridge
 * answers a provider's model (test/support/fake-litellm-responses.ts, `bridged`).
 */
describe("a provider's model on /v1/responses", () => {
  const f = litellmResponsesShim(FILE, true);
  let h: Harness;
  let litellm: FakeLitellmResponses;
  beforeAll(() => void ({ h, litellm } = f));

  const balance = (id: string) => balanceOf(h.store, id);

  /** The 400 a body gets, after checking nothing reached LiteLLM. */
  const refused = async (body: Record<string, unknown>) => {
    const { key } = await h.createKey({ credits: 100 });
    const before = litellm.bodies.length;
    const e = await failure(() => h.client(key).responses.create(body as never));
    expect(e, JSON.stringify(body)).toBeInstanceOf(BadRequestError);
    expect(e.error).toMatchObject({ type: "invalid_request_error" });
    expect(litellm.bodies.length, JSON.stringify(body)).toBe(before);
    return e;
  };

  it("non-streamed: forwarded as sent, charged exactly the usage at the provider's prices", async () => {
    const { key, id } = await h.createKey({ credits: 1000 });
    const body = { model: "claude", instructions: "be brief", input: "greet me", max_output_tokens: 16, temperature: 0.2, reasoning: { effort: "low" }, text: { format: { type: "text" } }, store: false, include: ["reasoning.encrypted_content"], metadata: { app: "x" } };
    const { data, response } = await h.client(key).responses.create(body as never).withResponse();
    expect(data.output_text).toBe("Hello there, friend");
    expect(litellm.bodies.at(-1)).toEqual(body);
    const charged = cost(9, 4);
    expect(response.headers.get("x-credits-charged")).toBe(String(charged / CREDIT));
    expect(await balance(id)).toBe(1000 * CREDIT - charged);
    await expectLedgerMatches(h.store, id);
  });

  it("streamed (the bridge's stream: no usage before response.completed): relayed, charged exactly the final usage", async () => {
    const { key, id } = await h.createKey({ credits: 1000 });
    const stream = await h.client(key).responses.create({ model: "claude", input: "greet me", max_output_tokens: 16, stream: true });
    let text = "";
    let final: { usage?: unknown; credits_charged?: number } | undefined;
    for await (const e of stream) {
      if (e.type === "response.output_text.delta") text += e.delta;
      if (e.type === "response.completed") final = { ...e.response, credits_charged: (e as unknown as { credits_charged: number }).credits_charged };
    }
    expect(text).toBe("Hello there, friend");
    const charged = cost(9, 4);
    expect(final).toMatchObject({ usage: { input_tokens: 9, output_tokens: 4 }, credits_charged: charged / CREDIT });
    expect(await balance(id)).toBe(1000 * CREDIT - charged);
    await expectLedgerMatches(h.store, id);
  });

  it("a client that leaves mid-stream is charged what was delivered, and LiteLLM's request is aborted", async () => {
    const { key, id } = await h.createKey({ credits: 1000 });
    await leaveResponsesStreamAtFirstDelta(f, { key, id }, "claude");
    const charged = 1000 * CREDIT - (await balance(id));
    expect(charged).toBeGreaterThanOrEqual(cost(0, 1));
    expect(charged).toBeLessThan(cost(1000, 4));
    await expectLedgerMatches(h.store, id);
  });

  it("BYPASS (review): members LiteLLM's bridge hands to the provider, or the shim cannot bound or price, are refused 400 naming them, nothing forwarded", async () => {
    const base = { model: "claude", input: "hi", max_output_tokens: 16 };
    for (const extra of [
      { inference_geo: "us" },
      { container: "container_abc" },
      { mcp_servers: [{ type: "url", url: "https://mcp.example.com/sse", name: "x" }] },
      { foo: 1 },
      // OpenAI's own, not bounded or priced here (provider-params.ts says why, each).
      { prompt: { id: "pmpt_1" } },
      { previous_response_id: "resp_1" },
      { conversation: "conv_1" },
      { context_management: [{ type: "compaction" }] },
      { prompt_cache_retention: "24h" },
      { prompt_cache_options: { ttl: "12h" } },
      { moderation: { model: "omni-moderation-latest" } },
      { stream_options: { include_obfuscation: false } },
      { cache_control: { type: "ephemeral" } },
    ]) {
      const e = await refused({ ...base, ...extra });
      const member = Object.keys(extra)[0]!;
      expect(e.param, member).toBe(member);
      expect(e.message).toContain(`'${member}'`);
      expect(e.message).toContain("claude");
      expect(e.message).toContain("max_output_tokens"); // it says what such a model takes
    }
    // LiteLLM's controls are refused first, for every model, with their own reason (upstream-controls.ts).
    for (const control of ["mock_response", "use_chat_completions_api"]) expect((await refused({ ...base, [control]: "x" })).param).toBe(control);
    // OpenAI's own left out pass as null, the SDKs' unset; an unknown one does not.
    expect((await refused({ ...base, inference_geo: null })).param).toBe("inference_geo");
    // `include` only for what adds no billed output.
    expect((await refused({ ...base, include: ["reasoning.encrypted_content", "file_search_call.results"] })).param).toBe("include");
    // A priority tier, as on chat (provider-surcharges.ts).
    expect((await refused({ ...base, service_tier: "priority" })).param).toBe("service_tier");
  });

  it("a built-in tool is still refused (a provider's web search or MCP server is billed per call)", async () => {
    for (const tool of [{ type: "web_search" }, { type: "mcp", server_label: "x", server_url: "https://mcp.example.com" }, { type: "file_search", vector_store_ids: ["vs_1"] }, { type: "code_interpreter", container: { type: "auto" } }]) {
      expect((await refused({ model: "claude", input: "hi", tools: [tool] })).param).toBe("tools");
    }
  });

  it("an input image passes as on chat; items and parts the provider would take as more than the hold counts are refused, naming input", async () => {
    const { key } = await h.createKey({ credits: 1000 });
    const image = { type: "input_image", image_url: "data:image/png;base64,iVBORw0KGgo=", detail: "auto" };
    const input = [{ role: "user", content: [{ type: "input_text", text: "what is this?" }, image] }];
    const res = await h.client(key).responses.create({ model: "claude", input, max_output_tokens: 16 } as never);
    expect(res.output_text).toBe("Hello there, friend");
    expect(litellm.bodies.at(-1)!.input).toEqual(input);
    for (const bad of [
      // Anthropic's prompt caching through the bridge: its writes are in no Responses usage.
      [{ role: "user", content: [{ type: "input_text", text: "hi", cache_control: { type: "ephemeral" } }] }],
      // A part type that is no OpenAI input (LiteLLM's bridge makes any part with text a part of its type).
      [{ role: "user", content: [{ type: "container_upload", file_id: "file_1" }] }],
      [{ role: "user", content: [{ type: "input_image", url: "http://169.254.169.254/latest" }] }],
      // Items stored at the provider (shared by every key) or of tools the provider runs.
      [{ type: "item_reference", id: "msg_1" }],
      [{ type: "web_search_call", id: "ws_1", status: "completed", action: { type: "search", query: "x" } }],
      [{ type: "function_call", call_id: "c1", name: "f", arguments: "{}", caller: { type: "program" } }],
      // A file named by a URL into the deployment, where LiteLLM's bridge fetches it (its file_id).
      [{ role: "user", content: [{ type: "input_file", file_id: "http://127.0.0.1:4000/metrics" }] }],
    ]) {
      expect((await refused({ model: "claude", input: bad })).param, JSON.stringify(bad)).toBe("input");
    }
  });

  it("a previous answer's output items pushed back as input pass (the AI SDK's and the Agents SDK's next turn)", async () => {
    const { key } = await h.createKey({ credits: 1000 });
    const first = await h.client(key).responses.create({ model: "claude", input: "greet me", max_output_tokens: 16 });
    const call = { type: "function_call", id: "fc_1", call_id: "toolu_1", name: "lookup", arguments: "{}", status: "completed", provider_specific_fields: { thought_signatures: ["sig"] } };
    const reasoning = { type: "reasoning", id: "rs_1", summary: [{ type: "summary_text", text: "thinking" }], encrypted_content: null };
    const input = [{ role: "user", content: "greet me" }, reasoning, ...first.output, call, { type: "function_call_output", call_id: "toolu_1", output: "42" }, { role: "user", content: "and again" }];
    const tools = [{ type: "function", name: "lookup", parameters: { type: "object", properties: {} }, strict: false }];
    const res = await h.client(key).responses.create({ model: "claude", input, tools, max_output_tokens: 16 } as never);
    expect(res.output_text).toBe("Hello there, friend");
  });

  it("the hold takes the provider's output bound (maxOutputTokens) when the request sets none", async () => {
    const required = async (extra: Record<string, unknown>) => {
      const { key } = await h.createKey({ credits: 0.000001 });
      const res = await h.post(key, "/v1/responses", { model: "claude", input: "greet me", ...extra });
      expect(res.status).toBe(402);
      return Math.round(((await res.json()) as { credits_required: number }).credits_required * CREDIT);
    };
    const unbounded = await required({});
    const bounded = await required({ max_output_tokens: 16 });
    // The same prompt bound less the bytes of `,"max_output_tokens":16`; the outputs 8192 against 16.
    expect(unbounded - bounded).toBe((8192 - 16) * CREDIT - Buffer.byteLength(',"max_output_tokens":16') * 1000);
  });
});
