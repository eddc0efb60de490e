import { invalidParam, ShimError } from "../errors.ts";

/**
 * Request members that LiteLLM (the deployed upstream) reads as its own controls, not as model
 * parameters, and that the shim therefore refuses (400 naming the member) rather than forward.
 * They are refused, not removed: the body goes upstream as the client sent it.
 *
 * The list is LiteLLM's own `all_litellm_params` (litellm/types/utils.py: what completion() keeps
 * for itself and never sends to the model), the other kwargs completion() and get_llm_provider()
 * read (organization, deployment_id, ssl_verify, initial_prompt_value, the provider credentials
 * of OPTIONAL_KWARGS_KEYS) and what the proxy reads from a body (user_config, timeout,
 * drop_params…). None of them reaches the model, so a client loses nothing by the refusal, and
 * vLLM ignores them all, so no client of a plain vLLM loses anything either. With them a client
 * could have its request answered by another model than the one the shim authorised and priced
 * (`fallbacks`, `router_settings_override`, `model_list`, `fastest_response`: a key limited to the local model reaching a paid
 * provider), sent elsewhere or with other credentials (`api_base`, `aws_*`, `organization`), with
 * HTTP headers of its choosing at the provider (`headers`, `provider_specific_header`: another
 * provider key, an anthropic-beta flag billed at a higher rate), retried (`num_retries`), cut off
 * after the work was done (`timeout`: an upstream failure is not charged), answered without the
 * model (`mock_response`), with a prompt other than the one the hold was sized by (`prompt_id`,
 * `initial_prompt_value`, `user_continue_message`), or could turn the operator's logging,
 * caching, guardrails and LiteLLM's accounting on, off or elsewhere (`langfuse_host`, `cache`,
 * `no-log`, `tags`, `input_cost_per_token`).
 *
 * Kept: OpenAI's own parameters, even those LiteLLM also reads (`metadata`, `user`, `store`,
 * `service_tier`): they are the client's, and a client of the OpenAI API sends them (but not
 * what a provider bills beyond the model's price, refused for a provider's model once the model
 * is known: provider-surcharges.ts, from admission.ts).
 */
const LITELLM_CONTROLS = new Set([
  // Which model answers: fallbacks, routing, provider selection.
  "fallbacks", "context_window_fallbacks", "content_policy_fallbacks", "context_window_fallback_dict", "max_fallbacks", "fallback_depth",
  "model_list", "routing_strategy", "specific_deployment", "order", "fastest_response", "deployment_id", "azure", "use_litellm_proxy",
  "use_chat_completions_api", "custom_llm_provider", "model_info", "base_model", "hf_model_name", "model_config", "region_name",
  "allowed_model_region", "enable_tag_filtering", "weight",
  // The proxy's per-request router settings (route_llm_request.py copies their fallbacks, retries,
  // timeout and routing into the call; it checks fallbacks against a LiteLLM key's models, and the
  // shim calls with the master key, which may call every model).
  "router_settings_override", "model_group_retry_policy", "disable_fallbacks",
  // Where it goes and as whom: endpoints, credentials, HTTP headers, TLS.
  "api_key", "api_base", "base_url", "api_version", "organization", "user_config", "headers", "provider_specific_header",
  "azure_ad_token", "azure_ad_token_provider", "tenant_id", "client_id", "client_secret", "azure_username", "azure_password", "azure_scope",
  "bucket_name", "s3_endpoint_url", "sagemaker_base_url", "deployment_url", "configurable_clientside_auth_params", "use_xai_oauth",
  "ssl_verify", "secret_fields", "shared_session", "client", "use_client",
  // Retries and timeouts.
  "num_retries", "max_retries", "retry_policy", "retry_strategy", "cooldown_time", "timeout", "request_timeout", "stream_timeout", "force_timeout",
  // The prompt LiteLLM builds (prompt management, templates, message rewriting), guardrails, tools it runs itself.
  "prompt_id", "prompt_variables", "prompt_version", "prompt_label", "initial_prompt_value", "final_prompt_value", "roles", "bos_token",
  "eos_token", "user_continue_message", "assistant_continue_message", "ensure_alternating_roles", "supports_system_message",
  "merge_reasoning_content_in_choices", "model_file_id_mapping", "disable_add_transform_inline_image_block", "guardrails",
  "search_tool_name", "enable_json_schema_validation", "max_agentic_loops",
  // What LiteLLM adds to the prompt or calls on the way: cache_control it writes into the messages
  // (a cache lifetime included, below), vector stores and knowledge bases (paid calls of their own).
  "cache_control_injection_points", "vector_store_ids", "knowledge_bases",
  // Which parameters reach the model.
  "drop_params", "additional_drop_params", "allowed_openai_params",
  // LiteLLM's caching, logging, budgets and limits (the shim does limits and accounting).
  "caching", "cache", "cache_key", "preset_cache_key", "caching_groups", "ttl", "no-log", "tags", "turn_off_message_logging",
  "rpm", "tpm", "itpm", "otpm", "max_parallel_requests", "max_budget", "budget_duration", "tiered_pricing", "output_vector_size",
  // What its proxy lists as untrusted body members (litellm_pre_call_utils.py _UNTRUSTED_ROOT_CONTROL_FIELDS):
  // callbacks appended to the worker's process-wide lists (one request would log every later
  // caller's prompts where it chose), the operator's guardrails turned off, a stream kept open past
  // the timeouts by keep-alive pings, or cut off after the work was done.
  "callbacks", "success_callback", "failure_callback", "service_callback", "input_callback", "disable_global_guardrails",
  "disable_global_guardrail", "opted_out_global_guardrails", "applied_guardrails", "applied_policies", "policy_sources",
  "pillar_response_headers", "standard_logging_object", "keepalive_seconds", "allow_client_keepalive_override",
  "ttft_timeout", "stream_idle_timeout",
  // Internal to LiteLLM's call path.
  "id", "self", "verbose", "logger_fn", "complete_response", "proxy_server_request", "use_in_pass_through",
  "acompletion", "atext_completion", "text_completion", "aimg_generation",
]);
/**
 * Families of the same: mocks, LiteLLM's own (`litellm_*`, and its internal `_litellm_*`,
 * `_agentic_*`: no OpenAI or vLLM parameter starts with `_`), provider credentials and endpoints
 * (`aws_*`, `vertex_*`), per-request logging destinations and keys, LiteLLM's custom pricing
 * (`input_cost_per_token`, `cache_read_input_token_cost`…) and its routers' settings.
 */
const LITELLM_CONTROL_PATTERN =
  /^(?:mock_|litellm_|_|aws_|vertex_|(?:langfuse|langsmith|gcs|humanloop|arize|posthog|wandb|weave|dd|phoenix)_|(?:auto|complexity|adaptive|quality)_router_|regional_processing_)|cost_per_|_token_cost/;

/**
 * The OpenAI SDKs' request options. A real SDK merges them into the request and never sends
 * them as members, but LiteLLM does the same merge on what it receives: `extra_body` members
 * override the top-level ones at vLLM, so `{"max_tokens":1,"extra_body":{"max_tokens":8000,"n":128}}`
 * was held and charged for one token while the model generated a million (and `extra_headers`
 * become the provider call's headers).
 */
const SDK_OPTIONS = ["extra_body", "extra_headers", "extra_query"];

/**
 * vLLM's members that hand its engine another prompt than the request's: a disaggregated-serving
 * router's `kv_transfer_params` (from PR #48145 its `prompt_token_ids` replace the rendered
 * messages, on any server; its other members point the engine at remote KV caches). The prompt
 * would then be none the shim estimated: a client that leaves a stream before its usage came paid
 * for a word, where vLLM processed 60,000 tokens. Only such a router sends it. (A top-level
 * `prompt_token_ids`, which RL frameworks send for token-in rollouts, is counted instead:
 * inference-request.ts promptTokens.)
 */
const ENGINE_PROMPT_CONTROLS = ["kv_transfer_params"];

/** A 400 naming the first member of `body` that is an SDK option, one of LiteLLM's controls or one of vLLM's ENGINE_PROMPT_CONTROLS, if any, or a `priority` other than 0: for every model. */
export function refuseUpstreamControls(body: Record<string, unknown>): void {
  // vLLM's `priority` orders its queue when the operator starts it with `--scheduling-policy
  // priority` (lower first; it preempts running requests for a lower one): a key could put itself
  // ahead of every other key's. 0 (vLLM's default, and what the default scheduler takes) passes.
  if (body.priority !== undefined && body.priority !== null && body.priority !== 0) {
    throw new ShimError("invalid_request", { param: "priority", message: "'priority' is not accepted: the order in which the model server runs requests is the operator's to set." });
  }
  for (const k in body) {
    if (ENGINE_PROMPT_CONTROLS.includes(k)) {
      throw new ShimError("invalid_request", { param: k, message: `'${k}' is not accepted: it is a disaggregated-serving router's, and gives the model server another prompt than the request's (send token IDs as 'prompt_token_ids', or as 'prompt' on /v1/completions).` });
    }
    if (SDK_OPTIONS.includes(k)) {
      throw new ShimError("invalid_request", { param: k, message: `'${k}' is an option of the OpenAI SDKs, which merge it into the request; send its members as the request's own.` });
    }
    if (LITELLM_CONTROLS.has(k) || LITELLM_CONTROL_PATTERN.test(k)) {
      const name = k.slice(0, 64);
      throw new ShimError("invalid_request", {
        param: name,
        message: `'${name}' is not accepted: this endpoint answers with the model you name, and routing, credentials, provider headers, retries, timeouts, caching, logging and mocks are the operator's to set.`,
      });
    }
  }
}

/**
 * For a model whose upstream takes a completions prompt only as text (`tokenPrompts: false`):
 * LiteLLM's text completion maps a string or a list of strings onto messages and raises on
 * anything else ("Unmapped prompt format"), which reached the client as a retryable 502, or a 503
 * when the echoed token IDs held a standalone 429, and counted as the upstream's failure. Such a
 * request could never succeed there, so it is the client's 400 before anything is held.
 */
export function refuseNonTextPrompt(body: Record<string, unknown>, model: string): void {
  const text = "send 'prompt' as text (a string or a list of strings).";
  const name = model.slice(0, 200);
  if (body.prompt_embeds !== undefined && body.prompt_embeds !== null) {
    throw invalidParam(`'prompt_embeds' is not supported by this endpoint for model '${name}': ${text}`, "prompt_embeds");
  }
  const p = body.prompt;
  if (typeof p === "string" || (Array.isArray(p) && p.length > 0 && p.every((x) => typeof x === "string"))) return;
  throw invalidParam(`Token-ID prompts are not supported by this endpoint for model '${name}': ${text}`, "prompt");
}
