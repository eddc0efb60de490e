import { mediaParts } from "./content-parts.ts";
import { invalidParam } from "../errors.ts";
import type { InferenceRequest } from "./inference-request.ts";
import { refuseUnsafeMedia } from "./media-urls.ts";
import { repeatedTextBytes } from "./repeated-text.ts";
import { responsesTools } from "./responses-tools.ts";
import { inferenceBody, jsonBytes, requestChatTemplate, streamFlag } from "./common-params.ts";

/**
 * OpenAI's Responses API (`POST /v1/responses`, served by vLLM and LiteLLM): the members metering
 * depends on, read into the InferenceRequest the chat path holds and charges by. The body is
 * forwarded byte for byte: a Responses answer always reports its usage (the body's `usage`, the
 * stream's `response.completed`), so nothing needs asking for.
 *
 * The prompt is `instructions`, the `input` (a string, or items: messages whose content is a
 * string or parts, function calls and their outputs, reasoning items) and the `tools`, rendered by
 * the model's chat template as a chat's messages are: the estimate reads `input`'s items as
 * messages (inference-request.ts, promptFields and addMessages), media parts (`input_image`,
 * `input_file`, audio) as chat's media parts, and the hold counts a template's tokens and the JSON
 * it prints again (tools, earlier calls' arguments) as chat's does, and the text gpt-oss's harmony
 * path renders twice (repeated-text.ts: each output's call name, the first system item) once more.
 */
export function parseResponsesRequest(body: unknown): InferenceRequest {
  const { b, model } = inferenceBody(body);
  const input = b.input;
  if (typeof input !== "string" && !(Array.isArray(input) && input.length > 0)) {
    throw invalidParam("'input' is required and must be a string or a non-empty array.", "input");
  }
  // A background response is generated after this request has returned: nothing would meter it,
  // and the hold could not last until it ends (docs/decisions.md).
  if (b.background !== undefined && b.background !== null && b.background !== false) {
    throw invalidParam("'background' responses are not supported by this endpoint: a response is generated while its request is open, so that it can be metered. Send the request without 'background' (stream it for a long answer).", "background");
  }
  const max = b.max_output_tokens;
  if (max !== undefined && max !== null && (typeof max !== "number" || !Number.isSafeInteger(max) || max < 1)) {
    throw invalidParam("'max_output_tokens' must be a positive integer.", "max_output_tokens");
  }
  // vLLM 0.16 to 0.31 renders a Responses request's own Jinja template whatever the server's
  // --trust-request-chat-template says (CVE-2026-115918, fixed in 0.32.0): a loop in it takes the
  // model server's CPU and memory from every key, and its output is a prompt the body does not
  // bound. OpenAI's Responses API has no such member, so no OpenAI client sends one.
  const template = requestChatTemplate(b);
  if (template !== null) {
    throw invalidParam(`A chat template in the request ('${template === "chat_template" ? "chat_template" : "chat_template_kwargs.chat_template"}') is not accepted on this endpoint: the model's own template renders the input.`, template);
  }
  const stream = streamFlag(b);
  refuseServerTools(b.tools);
  refuseUnsafeMedia(input, "input");
  return {
    model,
    stream,
    // Without it vLLM generates up to the model's context, as a chat without max_tokens.
    maxTokens: typeof max === "number" ? max : undefined,
    defaultMaxTokens: false,
    prompts: 1,
    n: 1,
    outputs: 1,
    templated: true,
    // An earlier response or conversation the server adds to the prompt (vLLM with its store
    // enabled) is one more part the body's bytes do not bound, as a chat template a request brings.
    unboundedParts: mediaParts(input) + (b.previous_response_id != null || b.conversation != null ? 1 : 0),
    renderedJsonBytes: renderedJsonBytes(b.tools, input),
    repeatedTextBytes: repeatedTextBytes("responses", b),
    promptMayExceedContext: false,
    echo: false,
    // Chat's stream_options: a Responses stream always ends with its usage, and none is hidden.
    clientWantsUsage: false,
    clientWantsContinuous: false,
    continuousAsked: false,
  };
}

/**
 * Only `function` tools, which the client runs, alone or grouped in a `namespace` (Codex CLI sends
 * its MCP tools so; vLLM names them `namespace__name`): a tool the server runs itself (vLLM's
 * `code_interpreter`, `web_search_preview`, `mcp` with its --tool-server) makes it generate turn
 * after turn inside one request, each turn's output bounded by the model's context rather than
 * `max_output_tokens` (vLLM's _generate_with_builtin_tools), so no hold could bound the request.
 * vLLM refuses other types itself (its Harmony path: "tool type … not supported").
 */
function refuseServerTools(tools: unknown): void {
  for (const { at, tool } of responsesTools(tools)) {
    const type = tool !== null && typeof tool === "object" ? (tool as { type?: unknown }).type : undefined;
    if (type !== "function") {
      throw invalidParam(`Only 'function' tools are supported on this endpoint (alone or in a 'namespace'): ${at} has type ${JSON.stringify(type ?? null)?.slice(0, 100)}. (Tools the server runs itself, such as code_interpreter, web_search or mcp, generate several turns in one request, which its credit hold cannot bound.)`, "tools");
    }
  }
}

/**
 * The bytes of JSON the chat template prints again (Pricer.promptBound counts each as several
 * tokens): the tools, and the earlier function calls among the input items (vLLM makes each an
 * assistant turn's tool call, its arguments printed with `tojson`), as chat's tools and tool_calls.
 */
function renderedJsonBytes(tools: unknown, input: unknown): number {
  const calls = Array.isArray(input) ? input.filter((item) => item !== null && typeof item === "object" && (item as { type?: unknown }).type === "function_call") : [];
  return jsonBytes([tools, ...calls]);
}
