/**
 * vLLM's tool calling for the served model. A chat request with `tools` and no `tool_choice` is
 * `tool_choice: "auto"` (vLLM's ChatCompletionRequest.check_tool_usage), which is what the AI SDK,
 * LangChain and OpenAI's Agents SDK send, and vLLM refuses "auto" with a 400 unless it was started
 * with `--enable-auto-tool-choice` and a `--tool-call-parser` (chat_completion/serving.py: '"auto"
 * tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'; its Responses
 * API refuses nothing, and without a parser answers a call as text). "required" and a named
 * function need no parser (guided decoding). So the kit adds both flags for the models whose
 * parser it knows, and warns for the others.
 */
import type { TenantConfig } from "./types.ts";
import { setsVllmFlag } from "./vllm.ts";

const AUTO_TOOL_CHOICE = "--enable-auto-tool-choice";
const TOOL_CALL_PARSER = "--tool-call-parser";

/**
 * The parser for each model family, as vLLM's docs/features/tool_calling.md ("Automatic Function
 * Calling") names it, matched on the repository's name (after the organisation) so that a
 * quantized copy (`hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4`) gets its family's. Only
 * what the docs state, with the chat template the model ships: none for Qwen3 (only Qwen3-Coder
 * is listed), Llama 3 before 3.1 or Llama 4 (llama4_pythonic needs vLLM's own template), nor for
 * Mistral models beyond the one the docs confirm. A wrong parser is worse than none: vLLM runs it
 * on every request that has tools.
 */
const TOOL_CALL_PARSERS: readonly { readonly name: RegExp; readonly parser: string }[] = [
  // "Qwen Models": Qwen/Qwen2.5-*, Qwen/QwQ-32B (their chat template has Hermes-style tool use).
  { name: /^qwen2\.5-/i, parser: "hermes" },
  { name: /^qwq-32b(?:$|[-_.](?!preview))/i, parser: "hermes" },
  // "Hermes Models": NousResearch/Hermes-2-Pro-*, Hermes-2-Theta-*, Hermes-3-*.
  { name: /^hermes-(?:2-pro|2-theta|3)-/i, parser: "hermes" },
  // "Mistral Models": mistralai/Mistral-7B-Instruct-v0.3 (confirmed).
  { name: /^mistral-7b-instruct-v0\.3(?:$|[-_.])/i, parser: "mistral" },
  // "Llama Models": meta-llama/Llama-3.1-*, Llama-3.2-* (Meta-Llama-3.1-*: the 3.1 repositories' first names).
  { name: /^(?:meta-)?llama-3\.[12]-/i, parser: "llama3_json" },
  // "OpenAI OSS Models": openai/gpt-oss-20b, openai/gpt-oss-120b.
  { name: /^gpt-oss-(?:20b|120b)(?:$|[-_.])/i, parser: "openai" },
  // "Qwen3-Coder Models": Qwen/Qwen3-Coder-480B-A35B-Instruct, Qwen/Qwen3-Coder-30B-A3B-Instruct.
  { name: /^qwen3-coder-(?:480b-a35b|30b-a3b)-instruct(?:$|[-_.])/i, parser: "qwen3_xml" },
];

/** vLLM's tool-call parser for `modelId` (a Hugging Face repository id), or undefined when the kit knows none. */
export function toolCallParser(modelId: string): string | undefined {
  const name = modelId.split("/").at(-1) ?? modelId;
  return TOOL_CALL_PARSERS.find((family) => family.name.test(name))?.parser;
}

/** Whether `model.extraArgs` decides tool calling itself: a parser of its own, or auto tool choice on or off. */
function operatorChooses(extraArgs: readonly string[]): boolean {
  return setsVllmFlag(extraArgs, AUTO_TOOL_CHOICE) || setsVllmFlag(extraArgs, TOOL_CALL_PARSER);
}

/**
 * The flags the kit adds to vLLM's command so that tool_choice "auto" works: auto tool choice
 * with the model's parser, when it knows one and `model.extraArgs` decides nothing about it.
 */
export function toolCallingVllmFlags(extraArgs: readonly string[], modelId: string): string[] {
  const parser = toolCallParser(modelId);
  return parser === undefined || operatorChooses(extraArgs) ? [] : [AUTO_TOOL_CHOICE, TOOL_CALL_PARSER, parser];
}

/** The warning (for `pulumi up` and the plan) when vLLM will refuse tool_choice "auto" for the served model. */
export function toolCallingWarnings(config: TenantConfig): string[] {
  const { id, extraArgs } = config.model;
  if (toolCallParser(id) !== undefined || operatorChooses(extraArgs)) return [];
  return [
    `model.id ${id} has no tool-call parser the kit knows: vLLM will refuse chat requests with tools and tool_choice "auto" ` +
    "(the default with tools, which the AI SDK, LangChain and OpenAI's Agents SDK send) with a 400, \"auto\" tool choice requires " +
    `${AUTO_TOOL_CHOICE} and ${TOOL_CALL_PARSER} to be set; add ["${AUTO_TOOL_CHOICE}", "${TOOL_CALL_PARSER}", "<parser>"] ` +
    `to model.extraArgs with the parser vLLM's tool-calling docs name for the model, or "--no-enable-auto-tool-choice" to say it stays off`,
  ];
}
