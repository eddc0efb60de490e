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
import { setsVllmFlag, vllmFlag } from "./vllm.ts";

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
  // "Hermes Models": NousResearch/Hermes-2-Pro-*, Hermes-2-Theta-*, and "all Nous Research
  // Hermes-series models newer than Hermes 2 Pro" (Hermes-3-*, Hermes-4-*).
  { name: /^hermes-(?:2-pro|2-theta|[3-9])-/i, parser: "hermes" },
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

/**
 * What `model.extraArgs` says of tool calling: auto tool choice turned off (`--no-…`), turned on,
 * or neither; and whether it names a parser. The kit completes the pair and never overrides a flag.
 */
function operatorChoice(extraArgs: readonly string[]): { off: boolean; on: boolean; parser: boolean } {
  const off = extraArgs.some((arg) => vllmFlag(arg.split("=")[0]!) === `--no-${AUTO_TOOL_CHOICE.slice(2)}`);
  return { off, on: !off && setsVllmFlag(extraArgs, AUTO_TOOL_CHOICE), parser: setsVllmFlag(extraArgs, TOOL_CALL_PARSER) };
}

/**
 * The flags the kit adds to vLLM's command so that tool_choice "auto" works: auto tool choice and
 * the model's parser, each unless `model.extraArgs` sets it, never one without the other (vLLM
 * exits at start on auto tool choice without a parser, cli_args.py validate_parsed_serve_args; a
 * parser without it still refuses "auto"), and nothing when `model.extraArgs` turns it off.
 */
export function toolCallingVllmFlags(extraArgs: readonly string[], modelId: string): string[] {
  const chosen = operatorChoice(extraArgs);
  const parser = toolCallParser(modelId);
  if (chosen.off || (!chosen.parser && parser === undefined)) return [];
  return [...(chosen.on ? [] : [AUTO_TOOL_CHOICE]), ...(chosen.parser ? [] : [TOOL_CALL_PARSER, parser!])];
}

/** Embedding and reranking models by their repository's name: Qwen3-Embedding, bge-m3, multilingual-e5-…, gte-…, …-reranker. */
const POOLING_NAME = /embed|(?:^|[-_.])(?:bge|e5|gte)(?=$|[-_.])|rerank/i;
/** vLLM's flags that make it pool rather than generate (`--task` is their older spelling). */
const POOLING_FLAGS: Readonly<Record<string, readonly string[]>> = {
  "--runner": ["pooling"],
  "--convert": ["embed", "classify", "reward"],
  "--task": ["embed", "embedding", "classify", "score", "reward"],
};

/**
 * Whether vLLM will run the model to pool (embeddings, scores) rather than generate: it then serves
 * no chat, so tool calling means nothing for it. From the name (vLLM picks the pooling runner from
 * the architecture, which the name tells) or from a pooling flag in model.extraArgs.
 */
function poolingModel(modelId: string, extraArgs: readonly string[]): boolean {
  if (POOLING_NAME.test(modelId.split("/").at(-1) ?? modelId)) return true;
  return extraArgs.some((arg, i) => {
    const eq = arg.indexOf("=");
    const values = POOLING_FLAGS[vllmFlag(eq < 0 ? arg : arg.slice(0, eq))];
    const value = eq < 0 ? extraArgs[i + 1] : arg.slice(eq + 1);
    return values !== undefined && value !== undefined && values.includes(value);
  });
}

/** The warning (for `pulumi up` and the plan) when vLLM will refuse tool_choice "auto" for the served model. */
export function toolCallingWarnings(config: TenantConfig): string[] {
  const { id, extraArgs } = config.model;
  const chosen = operatorChoice(extraArgs);
  if (chosen.off || chosen.parser || toolCallParser(id) !== undefined || poolingModel(id, extraArgs)) return [];
  const add = `with the parser vLLM's tool-calling docs name for the model, or use "--no-enable-auto-tool-choice"`;
  if (chosen.on) {
    return [
      `model.extraArgs turns on ${AUTO_TOOL_CHOICE} for model.id ${id} without a ${TOOL_CALL_PARSER}, and the kit knows none for it: ` +
      `vLLM exits at start ("${AUTO_TOOL_CHOICE} requires ${TOOL_CALL_PARSER}"); add ["${TOOL_CALL_PARSER}", "<parser>"] to model.extraArgs ${add}`,
    ];
  }
  return [
    `model.id ${id} has no tool-call parser the kit knows: vLLM will refuse chat requests with tools and tool_choice "auto" ` +
    "(the default with tools, which the AI SDK, LangChain and OpenAI's Agents SDK send) with a 400, \"auto\" tool choice requires " +
    `${AUTO_TOOL_CHOICE} and ${TOOL_CALL_PARSER} to be set; add ["${AUTO_TOOL_CHOICE}", "${TOOL_CALL_PARSER}", "<parser>"] ` +
    `to model.extraArgs with the parser vLLM's tool-calling docs name for the model, or "--no-enable-auto-tool-choice" to say it stays off`,
  ];
}
