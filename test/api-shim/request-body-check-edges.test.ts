import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_FAKE, startShim, type Harness } from "../support/shim-harness.ts";
import { ShimError } from "../../api-shim/src/errors.ts";
import { jsonShapeProblem } from "../../api-shim/src/requests/json-shape.ts";
import { parseInferenceRequest } from "../../api-shim/src/requests/inference-request.ts";
import { repeatedTextBytes } from "../../api-shim/src/requests/repeated-text.ts";
import { parseResponsesRequest } from "../../api-shim/src/requests/responses-request.ts";
import { refuseNonTextPrompt, refuseUpstreamControls } from "../../api-shim/src/providers/upstream-controls.ts";

/**
 * The request-body checks at their edges: members sent as null, case and bounds, lists checked
 * entry by entry (each case found by a mutation review: a one-entry change no other test saw).
 */
const refusalOf = (fn: () => unknown): ShimError | undefined => {
  try {
    fn();
    return undefined;
  } catch (e) {
    return e as ShimError;
  }
};

describe("LiteLLM's controls: every listed member is refused, naming it", () => {
  // Every member docs/api-shim/request-bodies.md ("Members refused as LiteLLM's controls") and
  // upstream-controls.ts list: a copy on purpose, so that an entry dropped from the source fails here
  // (the other tests sample the list).
  const controls = [
    "fallbacks", "context_window_fallbacks", "content_policy_fallbacks", "context_window_fallback_dict", "max_fallbacks", "fallback_depth",
    "model_list", "routing_strategy", "specific_deployment", "order", "fastest_response", "deployment_id", "azure", "use_litellm_proxy",
    "use_chat_completions_api", "custom_llm_provider", "model_info", "base_model", "hf_model_name", "model_config", "region_name",
    "allowed_model_region", "enable_tag_filtering", "weight", "router_settings_override", "model_group_retry_policy", "disable_fallbacks",
    "api_key", "api_base", "base_url", "api_version", "organization", "user_config", "headers", "provider_specific_header",
    "azure_ad_token", "azure_ad_token_provider", "tenant_id", "client_id", "client_secret", "azure_username", "azure_password", "azure_scope",
    "bucket_name", "s3_endpoint_url", "sagemaker_base_url", "deployment_url", "configurable_clientside_auth_params", "use_xai_oauth",
    "ssl_verify", "secret_fields", "shared_session", "client", "use_client",
    "num_retries", "max_retries", "retry_policy", "retry_strategy", "cooldown_time", "timeout", "request_timeout", "stream_timeout", "force_timeout",
    "prompt_id", "prompt_variables", "prompt_version", "prompt_label", "initial_prompt_value", "final_prompt_value", "roles", "bos_token",
    "eos_token", "user_continue_message", "assistant_continue_message", "ensure_alternating_roles", "supports_system_message",
    "merge_reasoning_content_in_choices", "model_file_id_mapping", "disable_add_transform_inline_image_block", "guardrails",
    "search_tool_name", "enable_json_schema_validation", "max_agentic_loops",
    "cache_control_injection_points", "vector_store_ids", "knowledge_bases",
    "drop_params", "additional_drop_params", "allowed_openai_params",
    "caching", "cache", "cache_key", "preset_cache_key", "caching_groups", "ttl", "no-log", "tags", "turn_off_message_logging",
    "rpm", "tpm", "itpm", "otpm", "max_parallel_requests", "max_budget", "budget_duration", "tiered_pricing", "output_vector_size",
    "callbacks", "success_callback", "failure_callback", "service_callback", "input_callback", "disable_global_guardrails",
    "disable_global_guardrail", "opted_out_global_guardrails", "applied_guardrails", "applied_policies", "policy_sources",
    "pillar_response_headers", "standard_logging_object", "keepalive_seconds", "allow_client_keepalive_override",
    "ttft_timeout", "stream_idle_timeout",
    "id", "self", "verbose", "logger_fn", "complete_response", "proxy_server_request", "use_in_pass_through",
    "acompletion", "atext_completion", "text_completion", "aimg_generation",
    // The families (LITELLM_CONTROL_PATTERN), one of each.
    "mock_response", "litellm_call_id", "_litellm_x", "_agentic_loop_depth", "aws_region_name", "vertex_project", "langfuse_host",
    "langsmith_api_key", "gcs_bucket_name", "humanloop_api_key", "arize_api_key", "posthog_api_key", "wandb_project", "weave_project",
    "dd_api_key", "phoenix_api_key", "auto_router_config", "complexity_router_config", "adaptive_router_config", "quality_router_config",
    "regional_processing_x", "input_cost_per_token", "output_cost_per_second", "cache_read_input_token_cost", "cache_creation_input_token_cost",
    // SDK options, vLLM's engine prompt.
    "extra_body", "extra_headers", "extra_query", "kv_transfer_params",
  ];
  it.each(controls)("%s", (member) => {
    const e = refusalOf(() => refuseUpstreamControls({ model: "m", messages: [], [member]: 1 }));
    expect(e).toBeInstanceOf(ShimError);
    expect(e?.param).toBe(member);
  });
  it("OpenAI's and vLLM's own members pass", () => {
    for (const member of ["metadata", "user", "store", "service_tier", "top_k", "min_p", "prompt_token_ids", "seed", "max_tokens", "prompt_cache_key", "n", "priority"]) {
      expect(refusalOf(() => refuseUpstreamControls({ model: "m", [member]: member === "priority" ? 0 : 1 })), member).toBeUndefined();
    }
  });
  it("a priority other than 0 is refused naming priority (400 invalid_request)", () => {
    for (const priority of [-1, 1, "0"]) {
      const e = refusalOf(() => refuseUpstreamControls({ model: "m", priority }));
      expect([e?.status, e?.code, e?.param], String(priority)).toEqual([400, "invalid_request", "priority"]);
    }
  });
});

describe("a text-only completions upstream (tokenPrompts: false)", () => {
  it("takes prompt_embeds: null (unset) beside a text prompt, and refuses an empty prompt list", () => {
    expect(refusalOf(() => refuseNonTextPrompt({ model: "m", prompt: "hi", prompt_embeds: null }, "m"))).toBeUndefined();
    expect(refusalOf(() => refuseNonTextPrompt({ model: "m", prompt: ["a", "b"] }, "m"))).toBeUndefined();
    expect(refusalOf(() => refuseNonTextPrompt({ model: "m", prompt: [] }, "m"))?.param).toBe("prompt");
  });
});

describe("a provider's model (provider: true) over HTTP", () => {
  let h: Harness;
  let key: string;
  beforeAll(async () => {
    h = await startShim({
      file: { models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }, { name: "claude", provider: true, maxModelLen: 200_000, maxOutputTokens: 8192 }] },
      fake: { ...DEFAULT_FAKE, models: [...DEFAULT_FAKE.models!, { name: "claude" }] },
    });
    ({ key } = await h.createKey({ credits: 1000 }));
  });
  afterAll(() => h.close());
  const claude = { model: "claude", max_tokens: 2, messages: [{ role: "user", content: "hi" }] };
  /** The body reached the upstream as sent (200). */
  const passes = async (body: Record<string, unknown>) => {
    const res = await h.post(key, "/v1/chat/completions", body);
    const text = await res.text();
    expect(res.status, `${JSON.stringify(body)} -> ${text}`).toBe(200);
    expect(JSON.parse(h.fake.requests.at(-1)!.body)).toEqual(body);
  };
  const refused = async (body: Record<string, unknown>, param: string) => {
    const received = h.fake.counters.received;
    const res = await h.post(key, "/v1/chat/completions", body);
    const error = ((await res.json()) as { error: { param: string } }).error;
    expect([res.status, error.param], JSON.stringify(body)).toEqual([400, param]);
    expect(h.fake.counters.received).toBe(received);
  };

  it("an assistant turn's `audio` (OpenAI's message member, null as the SDKs' models dump it) passes", async () => {
    await passes({ ...claude, messages: [{ role: "user", content: "hi" }, { role: "assistant", content: "ok", audio: null }, { role: "user", content: "go on" }] });
  });

  it("a cache_control whose ttl is null (left unset) passes, as one without a ttl", async () => {
    await passes({ ...claude, messages: [{ role: "user", content: [{ type: "text", text: "hi", cache_control: { type: "ephemeral", ttl: null } }] }] });
  });
});

describe("/v1/responses for a model that may be a provider's (no maxModelLen)", () => {
  let h: Harness;
  let key: string;
  beforeAll(async () => {
    h = await startShim({ file: { models: [{ name: "qwen2.5-7b" }] } });
    ({ key } = await h.createKey({ credits: 1000 }));
  });
  afterAll(() => h.close());

  it("takes the OpenAI SDKs' flat function tools (type, name, description, parameters, strict) as sent", async () => {
    const tools = [{ type: "function" as const, name: "get_weather", description: "Weather", parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"], additionalProperties: false }, strict: true }];
    const r = await h.client(key).responses.create({ model: "qwen2.5-7b", input: "weather in Paris?", max_output_tokens: 5, tools });
    expect(r.object).toBe("response");
    expect(JSON.parse(h.fake.requests.at(-1)!.body).tools).toEqual(tools);
  });
});

describe("media URLs into the deployment, however the scheme is written", () => {
  it("refuses an upper-case scheme (URL parsers and vLLM's read HTTP:// as http://)", () => {
    for (const url of ["HTTP://vllm:8000/metrics", "Https://169.254.169.254/latest/meta-data/", "FILE:///etc/passwd"]) {
      const body = { model: "m", messages: [{ role: "user", content: [{ type: "text", text: "what is this?" }, { type: "image_url", image_url: { url } }] }] };
      const e = refusalOf(() => parseInferenceRequest("chat", body));
      expect(e, url).toBeInstanceOf(ShimError);
      expect(e?.param).toBe("messages");
    }
  });
});

describe("embeddings' prompt is one of input and messages", () => {
  it("refuses both (vLLM could render the messages, which the hold and the media check would not have read)", () => {
    const body = { model: "bge-m3", input: "x", messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "http://vllm:8000/metrics" } }] }] };
    const e = refusalOf(() => parseInferenceRequest("embeddings", body));
    expect(e).toBeInstanceOf(ShimError);
    expect([e?.param, e?.message]).toEqual(["messages", "Send either 'input' or 'messages', not both."]);
  });
});

describe("chat echo of a message with media", () => {
  it("is refused when any echoed part is not text, not only when all are", () => {
    const body = { model: "m", echo: true, max_tokens: 5, messages: [{ role: "user", content: "describe" }, { role: "assistant", content: [{ type: "text", text: "It shows" }, { type: "image_url", image_url: { url: "https://example.com/a.png" } }] }] };
    expect(refusalOf(() => parseInferenceRequest("chat", body))?.param).toBe("echo");
  });
});

describe("a Responses function_call_output given as parts", () => {
  const input = (part: unknown) => [
    { type: "function_call", call_id: "c1", name: "screenshot", arguments: "{}" },
    { type: "function_call_output", call_id: "c1", output: [{ type: "input_text", text: "here" }, part] },
  ];
  it("has its media URLs checked as any input item's content", () => {
    const e = refusalOf(() => parseResponsesRequest({ model: "m", input: input({ type: "input_image", image_url: "http://vllm:8000/metrics" }) }));
    expect(e).toBeInstanceOf(ShimError);
    expect(e?.param).toBe("input");
  });
  it("counts its images as media parts in the hold", () => {
    expect(parseResponsesRequest({ model: "m", input: input({ type: "input_image", image_url: "https://example.com/a.png" }) }).unboundedParts).toBe(1);
  });
});

describe("the text gpt-oss renders again per tool output", () => {
  it("of two calls under one id, holds for the longer name", () => {
    const long = "a_function_with_a_rather_long_name";
    const body = { messages: [{ role: "user", content: "go" }, { role: "assistant", content: null, tool_calls: [{ id: "c1", type: "function", function: { name: "f", arguments: "{}" } }, { id: "c1", type: "function", function: { name: long, arguments: "{}" } }] }, { role: "tool", tool_call_id: "c1", content: "r" }] };
    expect(repeatedTextBytes("chat", body)).toBe(long.length);
    const items = [{ type: "function_call", call_id: "c", name: long, arguments: "{}" }, { type: "function_call", call_id: "c", name: "f", arguments: "{}" }, { type: "function_call_output", call_id: "c", output: "r" }];
    expect(repeatedTextBytes("responses", { input: items })).toBe(long.length);
  });
  it("on /v1/responses, reads the input: a `messages` member beside it (which vLLM's Responses route ignores) does not empty the system prompt's second rendering out of the hold", () => {
    const input = [{ role: "system", content: "Be brief." }, { role: "user", content: "hi" }];
    expect(parseResponsesRequest({ model: "m", input, messages: [] }).repeatedTextBytes).toBe("Be brief.".length);
  });
  it("holds for the repeated text by its UTF-8 bytes (a token is at least one byte, not one UTF-16 unit), and for the first system item wherever it is", () => {
    const system = "Réponds en 日本語 🙂"; // 17 UTF-16 units (the emoji is 2), 26 bytes
    expect(parseResponsesRequest({ model: "m", input: [{ role: "system", content: system }, { role: "user", content: "hi" }] }).repeatedTextBytes).toBe(26);
    const name = "天気を調べる";
    const messages = [{ role: "user", content: "go" }, { role: "assistant", content: null, tool_calls: [{ id: "c1", type: "function", function: { name, arguments: "{}" } }] }, { role: "tool", tool_call_id: "c1", content: "r" }];
    expect(parseInferenceRequest("chat", { model: "m", messages }).repeatedTextBytes).toBe(Buffer.byteLength(name));
    // vLLM takes the first system item, not only a leading one.
    expect(parseResponsesRequest({ model: "m", input: [{ role: "user", content: "hi" }, { role: "system", content: "Be brief." }] }).repeatedTextBytes).toBe("Be brief.".length);
  });
});

describe("members sent as null (unset, as typed clients send them)", () => {
  it("stream: null is no stream, on chat, completions and responses", () => {
    expect(parseInferenceRequest("chat", { model: "m", stream: null, messages: [{ role: "user", content: "hi" }] }).stream).toBe(false);
    expect(parseInferenceRequest("completions", { model: "m", stream: null, prompt: "hi" }).stream).toBe(false);
    expect(parseResponsesRequest({ model: "m", stream: null, input: "hi" }).stream).toBe(false);
  });
  it("chat_template: null brings no template: not refused on /v1/responses, not held as one on chat", () => {
    expect(refusalOf(() => parseResponsesRequest({ model: "m", input: "hi", chat_template: null }))).toBeUndefined();
    const chat = { model: "m", messages: [{ role: "user", content: "hi" }] };
    expect(parseInferenceRequest("chat", { ...chat, chat_template: null }).unboundedParts).toBe(parseInferenceRequest("chat", chat).unboundedParts);
  });
});

describe("the model member", () => {
  it("is refused (400, param model) when only whitespace or longer than 256 characters; 256 passes", () => {
    const body = (model: string) => ({ model, messages: [{ role: "user", content: "hi" }] });
    expect(refusalOf(() => parseInferenceRequest("chat", body("   ")))?.param).toBe("model");
    expect(refusalOf(() => parseInferenceRequest("chat", body("m".repeat(257))))?.param).toBe("model");
    expect(parseInferenceRequest("chat", body("m".repeat(256))).model).toHaveLength(256);
  });
});

describe("vLLM's lax booleans", () => {
  it("add_generation_prompt: 0 is false (pydantic's reading): the last user message is the echoed one, and its image refused for echo", () => {
    const body = { model: "m", echo: true, add_generation_prompt: 0, max_tokens: 5, messages: [{ role: "user", content: [{ type: "text", text: "a" }, { type: "image_url", image_url: { url: "https://example.com/a.png" } }] }] };
    expect(refusalOf(() => parseInferenceRequest("chat", body))?.param).toBe("echo");
  });
  it("chat_template_kwargs whose chat_template is null brings no template", () => {
    expect(refusalOf(() => parseResponsesRequest({ model: "m", input: "hi", chat_template_kwargs: { chat_template: null, enable_thinking: false } }))).toBeUndefined();
  });
});

describe("documented refusals at their bounds", () => {
  it("a public media URL longer than 65,536 characters is refused; one of 65,536 passes", () => {
    const at = (n: number) => { const head = "https://example.com/a.png?q="; return head + "x".repeat(n - head.length); };
    const body = (url: string) => ({ model: "m", messages: [{ role: "user", content: [{ type: "image_url", image_url: { url } }] }] });
    expect(refusalOf(() => parseInferenceRequest("chat", body(at(65_536))))).toBeUndefined();
    const e = refusalOf(() => parseInferenceRequest("chat", body(at(65_537))));
    expect([e?.param, e?.message]).toEqual(["messages", expect.stringContaining("is longer than 65536 characters")]);
  });
  it("chat-style embeddings with an empty messages list are refused (param messages)", () => {
    expect(refusalOf(() => parseInferenceRequest("embeddings", { model: "bge-m3", messages: [] }))?.param).toBe("messages");
  });
});

describe("the body's JSON shape limits", () => {
  it("refuses a body of more than 100,000 object members, at 100,001, and takes 100,000", () => {
    const body = (n: number) => Buffer.from(`{${Array.from({ length: n }, (_, i) => `"k${i}":1`).join(",")}}`);
    expect(jsonShapeProblem(body(100_000))).toBeNull();
    expect(jsonShapeProblem(body(100_001))).toBe("Request body has more than 100000 JSON object members.");
  });
});
