import { eachMessagePart } from "../requests/content-parts.ts";
import { invalidParam } from "../errors.ts";
import { ANSWER_MEMBERS, isModelThinking, refuseUnsafeAnswerMembers, THINKING_MEMBERS } from "./answer-members.ts";
import type { InferenceKind } from "../requests/inference-request.ts";
import { refuseUnlistedResponsesInput } from "./provider-responses-input.ts";

/**
 * The request members a paid provider's model (configured under `providers`: `provider: true`)
 * takes: an allow-list, where the model vLLM serves takes anything (its extra sampling and
 * structured-output parameters). Found by review: LiteLLM puts every member that is not an OpenAI
 * parameter into a non-OpenAI provider's request as it came (utils.py,
 * add_provider_specific_params_to_optional_params; AnthropicConfig.transform_request spreads
 * them into the body and adds the beta headers they need), and sends an OpenAI-compatible
 * provider's in `extra_body`. So `mcp_servers` reached Anthropic's MCP connector (refused as a
 * tool by provider-surcharges.ts), `inference_geo: "us"` its 1.1x-priced US inference, and
 * `container`, `context_management` or whatever a provider adds next would too: block-lists
 * (upstream-controls.ts, provider-surcharges.ts) cannot keep up with the providers, an
 * allow-list can. Those two still run first (LiteLLM's controls for every model, the surcharges
 * for any that may be a provider's, this one included) and name their own reasons.
 */

/**
 * OpenAI's chat completions parameters (the openai SDK's ChatCompletionCreateParamsBase), less
 * those whose cost the shim cannot bound or price:
 * - `audio`, and `modalities` other than text (checked below): audio or image output, which
 *   LiteLLM asks Gemini for (responseModalities, speechConfig) and counts in completion_tokens
 *   (candidatesTokenCount), but which providers bill at several times the text rate the model is
 *   priced at (OpenAI's audio models likewise).
 * - `prediction`: OpenAI bills the prediction's rejected tokens as completion tokens, and nothing
 *   says `max_completion_tokens` bounds them: the hold, sized by it, is no bound of the charge.
 * - `prompt_cache_retention`, `prompt_cache_options`: cache lifetimes the shim does not price
 *   (cache-writes.ts prices Anthropic's two).
 * - `moderation`: a provider's moderation run on the request, outside the model's tokens.
 * - `web_search_options`: refused by provider-surcharges.ts, with its reason.
 */
const CHAT = [
  "model", "messages", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs", "max_completion_tokens", "max_tokens",
  "metadata", "modalities", "n", "parallel_tool_calls", "presence_penalty", "prompt_cache_key", "reasoning_effort", "response_format",
  "safety_identifier", "seed", "service_tier", "stop", "store", "stream", "stream_options", "temperature", "tool_choice", "tools",
  "top_logprobs", "top_p", "user", "verbosity",
];
const CHAT_UNBOUNDED = ["audio", "prediction", "prompt_cache_retention", "prompt_cache_options", "moderation"];
/**
 * OpenAI's /v1/completions parameters (CompletionCreateParamsBase), less `best_of`: that many
 * outputs generated per prompt and billed, where the hold counts `n`.
 */
const COMPLETIONS = ["model", "prompt", "echo", "frequency_penalty", "logit_bias", "logprobs", "max_tokens", "n", "presence_penalty", "seed", "stop", "stream", "stream_options", "suffix", "temperature", "top_p", "user"];
const COMPLETIONS_UNBOUNDED = ["best_of"];
/** OpenAI's /v1/embeddings parameters (EmbeddingCreateParams). */
const EMBEDDINGS = ["model", "input", "dimensions", "encoding_format", "user"];

/**
 * OpenAI's Responses API parameters (the openai SDK's ResponseCreateParamsBase), less those whose
 * cost the shim cannot bound or price. For a non-OpenAI provider LiteLLM's Responses-to-chat
 * bridge (BerriAI/litellm, litellm/responses/main.py: no Responses config for the provider, so
 * litellm_completion_transformation_handler.response_api_handler(**kwargs)) maps the ones it knows
 * to chat's (transformation.py transform_responses_api_request_to_chat_completion_request:
 * max_output_tokens to max_tokens, reasoning to reasoning_effort, text.format to response_format)
 * and hands every other member to litellm.completion as a keyword, which puts it into the
 * provider's request as chat's path does (above); OpenAI's models get the members as sent.
 * `background` passes only unset or false (responses-request.ts refuses the rest), and
 * `service_tier` only at the standard prices (provider-surcharges.ts). `include` is checked below.
 * Left out:
 * - `previous_response_id`, `conversation`: turns stored at the provider, in the operator's account
 *   that every key shares (one key could continue another's conversation by its id); LiteLLM's
 *   bridge reads them from its own session store, which this stack runs without.
 * - `prompt`: a prompt template stored in the operator's account, a prompt the body does not carry.
 * - `prompt_cache_retention`, `prompt_cache_options`, `moderation`: as on chat (above).
 * - `context_management`: server-side compaction (the bridge passes it on as chat's, Anthropic's
 *   context management): the provider summarizes the conversation in a pass of its own.
 * - `stream_options`: the bridge asks for the usage itself (`stream_options: {include_usage: true}`,
 *   which the shim's charge reads), and a client's would be handed to litellm.completion beside it.
 * - `access_programs`, `image`: newer than LiteLLM's bridge, which would hand them to a provider
 *   as its own members; what they change at OpenAI (a program's models, image processing) is not vetted.
 * - `cache_control` (LiteLLM's extra on chat): the bridge's Responses usage keeps a provider's cache
 *   reads but not its writes (_transform_chat_completion_usage_to_responses_usage), which would
 *   be charged at the prompt price the provider bills 1.25 or 2 times.
 */
const RESPONSES = [
  "model", "input", "background", "include", "instructions", "max_output_tokens", "max_tool_calls", "metadata", "parallel_tool_calls",
  "prompt_cache_key", "reasoning", "safety_identifier", "service_tier", "store", "stream", "temperature", "text", "tool_choice", "tools",
  "top_logprobs", "top_p", "truncation", "user",
];
const RESPONSES_UNBOUNDED = ["previous_response_id", "conversation", "prompt", "prompt_cache_retention", "prompt_cache_options", "moderation", "context_management", "stream_options", "access_programs", "image"];
/**
 * The `include` values that add nothing billed: encrypted reasoning, for a client that keeps no
 * response stored (the AI SDK with store: false), and the output's logprobs. The others are the
 * results of tools the provider runs, which this route refuses, or URLs of the input's images.
 */
const INCLUDABLE: readonly unknown[] = ["reasoning.encrypted_content", "message.output_text.logprobs"];

/**
 * LiteLLM's documented cross-provider extras, vetted as billed in the tokens the shim charges:
 * - `top_k`: a sampling parameter (Anthropic's, Gemini's topK).
 * - `thinking`: Anthropic's extended thinking (Gemini's thinkingConfig through LiteLLM). Thinking
 *   is output: Anthropic's `output_tokens` counts it, which LiteLLM makes `completion_tokens`
 *   (AnthropicConfig.calculate_usage), and Gemini's thoughtsTokenCount is added to them
 *   (VertexGeminiConfig._calculate_usage); Anthropic's `max_tokens` bounds thinking and answer together.
 * - `cache_control` (on the body): Anthropic's prompt caching, whose writes the shim holds and
 *   charges (cache-writes.ts), with the lifetimes provider-surcharges.ts allows.
 * - `speed`: Anthropic's, `standard` alone (provider-surcharges.ts refuses its fast mode).
 */
const EXTRAS = ["top_k", "thinking", "speed"];
const CHAT_EXTRAS = [...EXTRAS, "cache_control"];

const ALLOWED: Record<InferenceKind, ReadonlySet<string>> = {
  chat: new Set([...CHAT, ...CHAT_EXTRAS]),
  completions: new Set([...COMPLETIONS, "top_k"]),
  embeddings: new Set(EMBEDDINGS),
  // The bridge hands the extras to litellm.completion as chat's path takes them.
  responses: new Set([...RESPONSES, ...EXTRAS]),
};
/**
 * OpenAI's own parameters left out above, which pass when null: the SDKs type them nullable, and
 * null is how a client sends one it leaves unset. LiteLLM drops an OpenAI parameter it knows
 * when None (utils.py, _get_non_default_params); one it does not know reaches the provider as
 * null, unset there too.
 */
const UNSET_WHEN_NULL: Record<InferenceKind, readonly string[]> = { chat: [...CHAT_UNBOUNDED, "web_search_options"], completions: COMPLETIONS_UNBOUNDED, embeddings: [], responses: RESPONSES_UNBOUNDED };

/**
 * OpenAI's content part types (ChatCompletionContentPart, and the assistant's refusal). Any
 * other reaches the provider as its own: LiteLLM passes Anthropic's (a `container_upload` part
 * makes it add the code execution tool, billed per hour; `document`, `search_result`…).
 */
const PART_TYPES: readonly unknown[] = ["text", "image_url", "input_audio", "file", "refusal"];

/**
 * A 400 naming the first member of `body` (an inference request for `model`, a provider's) that
 * is not in the route's allow-list, a completions prompt list of more than one prompt, a
 * `modalities` asking for more than text, a message's member, content part or thinking block
 * not in theirs, or a Responses `include` or input item (provider-responses-input.ts) not in theirs.
 */
export function refuseUnlistedProviderParams(kind: InferenceKind, body: Record<string, unknown>, model: string): void {
  const allowed = ALLOWED[kind];
  const name = model.slice(0, 200);
  for (const k in body) {
    if (allowed.has(k) || (body[k] === null && UNSET_WHEN_NULL[kind].includes(k))) continue;
    const member = k.slice(0, 64);
    throw invalidParam(`'${member}' is not accepted for model '${name}', a provider's model: it takes ${[...allowed].join(", ")}.`, member);
  }
  // LiteLLM's text completion makes a chat provider's chat of a prompt list, one user message per
  // prompt (main.py text_completion): one answer where the client asked for one per prompt, and
  // the shim, as vLLM would answer, held and charged one per prompt. Found by review. (A list of
  // token IDs is one prompt; its numbers are not prompts.)
  if (kind === "completions" && Array.isArray(body.prompt) && body.prompt.length > 1 && typeof body.prompt[0] !== "number") {
    throw invalidParam(`A list of several prompts is not supported by this endpoint for model '${name}': its provider answers them as one conversation, with one answer. Send one prompt per request.`, "prompt");
  }
  if (kind === "responses") {
    // OpenAI's request takes a string; LiteLLM's bridge makes any value the system message as it
    // came (transformation.py transform_instructions_to_system_message), whose parts no check here
    // walks: Anthropic's cache_control on one is a cache write its Responses usage leaves out.
    if (body.instructions !== undefined && body.instructions !== null && typeof body.instructions !== "string") {
      throw invalidParam(`'instructions' must be a string for model '${name}', a provider's model.`, "instructions");
    }
    const include = body.include;
    if (include !== undefined && include !== null && !(Array.isArray(include) && include.every((v) => INCLUDABLE.includes(v)))) {
      throw invalidParam(`'include' may only list ${INCLUDABLE.map((v) => `'${v}'`).join(", ")} for model '${name}', a provider's model: the others are results of tools the provider runs, which this endpoint does not offer.`, "include");
    }
    return refuseUnlistedResponsesInput(body.input, name);
  }
  if (kind !== "chat") return;
  // `modalities` is chat's alone: the allow-list above refused it on the other routes.
  const modalities = body.modalities;
  if (modalities !== undefined && modalities !== null && !(Array.isArray(modalities) && modalities.every((m) => m === "text"))) {
    throw invalidParam(`'modalities' may only be ["text"] for model '${name}': audio and image output are billed at other rates than the text this endpoint charges for.`, "modalities");
  }
  eachMessagePart(body.messages, (item, from) => {
    if (from === null) refuseUnlistedMessageMembers(item as Record<string, unknown>, name);
    else if (from === "content" && !(item !== null && typeof item === "object" && PART_TYPES.includes((item as { type?: unknown }).type))) {
      throw invalidParam(`A message's content parts for model '${name}' must be objects of type ${PART_TYPES.map((t) => `'${t}'`).join(", ")}.`, "messages");
    }
  });
}

/**
 * A message's members: OpenAI's (ChatCompletionMessageParam's, every role's), what LiteLLM reads
 * for Anthropic and the shim meters (`cache_control`, cache-writes.ts) or checks below
 * (`thinking_blocks`, the signed thinking a client hands back; `reasoning_content`, text), and the
 * members of LiteLLM's own answer message, checked by answer-members.ts. Found by review: LiteLLM
 * puts a message's `thinking_blocks` (and `provider_specific_fields`' compaction blocks) into
 * Anthropic's content as they come, so any block type the content-part check refuses
 * (`container_upload`, a `document` Anthropic fetches from a URL) went past it.
 */
const MESSAGE_MEMBERS = ["role", "content", "name", "tool_calls", "tool_call_id", "function_call", "refusal", "audio", "cache_control", "thinking_blocks", "reasoning_content", ...ANSWER_MEMBERS];

/** A 400 for a message's member not in MESSAGE_MEMBERS, thinking blocks that are not the model's, or an answer's member in a value that is not inert (its content parts: refuseUnlistedProviderParams). */
function refuseUnlistedMessageMembers(m: Record<string, unknown>, name: string): void {
  for (const k in m) {
    if (!MESSAGE_MEMBERS.includes(k)) throw invalidParam(`A message's member '${k.slice(0, 64)}' is not accepted for model '${name}', a provider's model: a message takes ${MESSAGE_MEMBERS.join(", ")}.`, "messages");
  }
  const blocks = m.thinking_blocks;
  if (blocks !== undefined && blocks !== null && !isModelThinking(blocks)) {
    throw invalidParam(`A message's thinking_blocks for model '${name}' must be the thinking blocks the model answered with: type 'thinking' or 'redacted_thinking', with only ${THINKING_MEMBERS.join(", ")}.`, "messages");
  }
  refuseUnsafeAnswerMembers(m, name);
}
