import { invalidParam } from "../errors.ts";
import { isObject } from "../metering/generated-content.ts";
import { eachMessagePart } from "../requests/content-parts.ts";
import { refuseUnsafeAnswerMembers } from "./answer-members.ts";

/**
 * A Responses request's `input` for a paid provider's model (`provider: true`): the items and
 * content parts it may carry, as chat's allow-list has for messages and parts (provider-params.ts
 * MESSAGE_MEMBERS, PART_TYPES). For a non-OpenAI provider LiteLLM's Responses-to-chat bridge makes
 * chat messages of them (BerriAI/litellm, litellm/responses/litellm_completion_transformation/
 * transformation.py, _transform_responses_api_input_item_to_chat_completion_message): an item of
 * a type it does not know becomes a message of its `content`, a part of a type it does not know a
 * part of that type with its `text`, and a part's `cache_control` is copied onto Anthropic's block;
 * for OpenAI's models LiteLLM passes the items on as they came. Each list below is OpenAI's
 * (the openai SDK's ResponseInputItem, ResponseInputContent) less what the hold does not count.
 */

/**
 * The item types taken, with their members: OpenAI's, less
 * - `item_reference`, and `previous_response_id`/`conversation` at the top (provider-params.ts):
 *   an item stored at the provider, in the operator's account shared by every key;
 * - the items of tools the provider runs (`web_search_call`, `file_search_call`, `computer_call*`,
 *   `code_interpreter_call`, `mcp_*`, `shell_call*`…) and of `custom` tools, which this route does
 *   not take (responses-request.ts); LiteLLM's bridge makes some of them tool results;
 * - a function call's `caller` and `async`: a call made by a program the provider ran (programmatic
 *   tool calling), billed as its container time.
 * A message without `type` is OpenAI's EasyInputMessage. `provider_specific_fields` is what
 * LiteLLM's bridge sets on the function calls it answers with (transform_chat_completion_tools_to_responses_tools),
 * and `role` and `content` what it puts on its reasoning items (_extract_reasoning_output_items),
 * so that a client pushing the answer's output back into the next input is not refused.
 */
const ITEM_MEMBERS: Record<string, readonly string[]> = {
  message: ["type", "role", "content", "id", "status", "phase"],
  function_call: ["type", "id", "call_id", "name", "arguments", "status", "namespace", "provider_specific_fields"],
  function_call_output: ["type", "id", "call_id", "output", "status", "name", "namespace"],
  reasoning: ["type", "id", "summary", "content", "encrypted_content", "status", "role"],
};

/**
 * The content parts taken, with their members: chat's part types (provider-params.ts PART_TYPES:
 * text, image_url, input_audio, file, refusal) as Responses names them, and a reasoning item's
 * text. Left out of every part: `cache_control` (the bridge puts it on Anthropic's block, whose
 * cache writes its Responses usage leaves out: _transform_chat_completion_usage_to_responses_usage
 * keeps only cached_tokens, so a write would be charged at the prompt price the provider bills
 * 1.25 or 2 times) and `prompt_cache_breakpoint` (OpenAI's explicit cache writes, with the
 * lifetimes prompt_cache_options sets); and an image's `url`, which the bridge reads as the
 * image's URL where the media check (media-urls.ts) does not look.
 */
const PART_MEMBERS: Record<string, readonly string[]> = {
  input_text: ["type", "text"],
  output_text: ["type", "text", "annotations", "logprobs"],
  refusal: ["type", "refusal"],
  input_image: ["type", "image_url", "file_id", "detail"],
  input_file: ["type", "file_id", "file_url", "file_data", "filename", "detail"],
  input_audio: ["type", "input_audio"],
  reasoning_text: ["type", "text"],
};
const SUMMARY_MEMBERS = ["type", "text"];
/** The part types, as a refusal lists them: made once, not for every part checked. */
const PART_TYPES_LISTED = Object.keys(PART_MEMBERS).map((t) => `'${t}'`).join(", ");

/** A 400 (`param: "input"`) for an item or content part of `input` not listed above, for `name`, a provider's model. */
export function refuseUnlistedResponsesInput(input: unknown, name: string): void {
  if (!Array.isArray(input)) return; // a string, or what responses-request.ts refused
  // eachMessagePart passes over what is not an object (so its count is the items' index): an item must be one.
  const bare = input.findIndex((item) => !isObject(item) || Array.isArray(item));
  if (bare !== -1) throw invalidParam(`input[${bare}] is not an input item (an object) for model '${name}', a provider's model.`, "input");
  let index = -1;
  eachMessagePart(input, (item, from) => {
    if (from === null) return refuseUnlistedItem(item as Record<string, unknown>, ++index, name);
    if (from === "content") refuseUnlistedPart(item, index, name);
  });
}

function refuseUnlistedItem(item: Record<string, unknown>, index: number, name: string): void {
  const type = item.type ?? "message";
  const members = typeof type === "string" && Object.hasOwn(ITEM_MEMBERS, type) ? ITEM_MEMBERS[type]! : undefined;
  // The Vercel AI SDK sends an earlier answer's items by reference unless told not to store them
  // (@ai-sdk/openai convertToOpenAIResponsesInput): its users need the one option that fixes it.
  if (type === "item_reference") {
    throw invalidParam(`input[${index}] is an item_reference, an item stored at the provider, which model '${name}', a provider's model, does not take here: send the item itself (the Vercel AI SDK does with providerOptions: { openai: { store: false } }).`, "input");
  }
  if (members === undefined) {
    throw invalidParam(`input[${index}] is an item of type ${JSON.stringify(type).slice(0, 64)}, which model '${name}', a provider's model, does not take here: it takes ${Object.keys(ITEM_MEMBERS).join(", ")} items (an item stored at the provider, or of a tool it runs, is billed outside the tokens this endpoint charges for).`, "input");
  }
  for (const k in item) {
    if (!members.includes(k)) throw invalidParam(`input[${index}] has '${k.slice(0, 64)}', which a ${String(type)} item for model '${name}', a provider's model, does not take (${members.join(", ")}).`, "input");
  }
  // A function call's provider_specific_fields as LiteLLM answers them (answer-members.ts).
  refuseUnsafeAnswerMembers(item, name);
  const summary = item.summary;
  if (summary !== undefined && !(Array.isArray(summary) && summary.every((s) => isObject(s) && s.type === "summary_text" && Object.keys(s).every((k) => SUMMARY_MEMBERS.includes(k))))) {
    throw invalidParam(`input[${index}]'s reasoning summary for model '${name}' must be a list of summary_text parts, with only ${SUMMARY_MEMBERS.join(", ")}.`, "input");
  }
}

function refuseUnlistedPart(part: unknown, index: number, name: string): void {
  const type = isObject(part) ? part.type : undefined;
  const members = typeof type === "string" && Object.hasOwn(PART_MEMBERS, type) ? PART_MEMBERS[type]! : undefined;
  if (members === undefined) throw invalidParam(`input[${index}]'s content parts for model '${name}', a provider's model, must be objects of type ${PART_TYPES_LISTED}.`, "input");
  for (const k in part as object) {
    if (!members.includes(k)) throw invalidParam(`input[${index}] has a part of type '${String(type)}' with '${k.slice(0, 64)}', which model '${name}', a provider's model, does not take (${members.join(", ")}).`, "input");
  }
  // An output_text part's annotations, as an answer carried them (answer-members.ts).
  refuseUnsafeAnswerMembers(part as Record<string, unknown>, name);
}
