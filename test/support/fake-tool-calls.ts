/**
 * The tool call a chat request forces, for the fake vLLM: `tool_choice` "required" (the first
 * tool; a model would pick one) or a named function, with `tools` given. vLLM forces these with
 * guided decoding, so it needs no tool parser; "auto" does (--enable-auto-tool-choice and
 * --tool-call-parser): the fake answers "auto" (and no tool_choice) with text, a model's choice
 * under a parser, or refuses it as vLLM without one does (Behaviour.autoToolChoice false), and
 * "none" with text.
 */
export interface ForcedCall {
  name: string;
  /** A named function: vLLM (PR #25054, as OpenAI) finishes it with "stop", "required" with "tool_calls". */
  named: boolean;
  /** The arguments the fake "generates": each required property, strings "x", numbers 1. */
  arguments: Record<string, unknown>;
}

interface FunctionTool {
  type?: unknown;
  function?: { name?: unknown; parameters?: { properties?: Record<string, { type?: unknown }>; required?: unknown } };
}

export function forcedCall(request: Record<string, unknown>): ForcedCall | undefined {
  const tools = Array.isArray(request.tools) ? (request.tools as FunctionTool[]).filter((t) => t !== null && typeof t === "object" && typeof t.function?.name === "string") : [];
  if (tools.length === 0) return undefined;
  const choice = request.tool_choice as { type?: unknown; function?: { name?: unknown } } | string | undefined;
  const named = typeof choice === "object" && choice !== null && choice.type === "function" ? choice.function?.name : undefined;
  // A named function not among the tools: vLLM refuses it; the fake leaves it to the text answer.
  const tool = choice === "required" ? tools[0] : tools.find((t) => t.function!.name === named);
  if (tool === undefined) return undefined;
  return { name: tool.function!.name as string, named: choice !== "required", arguments: requiredArguments(tool.function!.parameters) };
}

/**
 * The JSON a chat request's `response_format` forces, for the fake vLLM: vLLM's chat request turns
 * `json_schema` into guided decoding with `json_schema.schema`, and `json_object` into any JSON
 * object (protocol.py, ChatCompletionRequest.to_sampling_params: guided_json / guided_json_object;
 * docs/features/structured_outputs.md). The fake "generates" each required property, as for a call;
 * undefined when the request forces no JSON ("text", none).
 */
export function forcedJson(request: Record<string, unknown>): Record<string, unknown> | undefined {
  const format = request.response_format as { type?: unknown; json_schema?: { schema?: FunctionParameters } } | null | undefined;
  if (format?.type === "json_object") return {};
  if (format?.type === "json_schema") return requiredArguments(format.json_schema?.schema);
  return undefined;
}

/**
 * The same two for a Responses request, whose function tools are flat (`{type: "function", name,
 * parameters}`) and whose named choice is `{type: "function", name}`: read as chat's, so the call
 * and the JSON are "generated" as chat's are. vLLM's Responses API forces the call with the same
 * JSON schema from the tools (tool_parsers/abstract_tool_parser.py, adjust_request: the schema set
 * as `text.format`), answered as a function_call item (engine/serving.py,
 * _parse_tool_calls_from_content). Its `text.format` constrains only `json_schema`
 * (responses/protocol.py, to_sampling_params): json_object and "text" leave the answer free text.
 */
export function forcedResponsesCall(request: Record<string, unknown>): ForcedCall | undefined {
  const tools = Array.isArray(request.tools) ? request.tools.map((t: { type?: unknown; name?: unknown; parameters?: unknown } | null) => (t?.type === "function" ? { type: "function", function: { name: t.name, parameters: t.parameters } } : t)) : undefined;
  const choice = request.tool_choice as { type?: unknown; name?: unknown } | string | undefined;
  const named = typeof choice === "object" && choice !== null && choice.type === "function" ? { type: "function", function: { name: choice.name } } : choice;
  return forcedCall({ tools, tool_choice: named });
}

export function forcedResponsesJson(request: Record<string, unknown>): Record<string, unknown> | undefined {
  const format = (request.text as { format?: { type?: unknown; schema?: unknown } } | null | undefined)?.format;
  return format?.type === "json_schema" ? forcedJson({ response_format: { type: "json_schema", json_schema: { schema: format.schema } } }) : undefined;
}

type FunctionParameters = NonNullable<FunctionTool["function"]>["parameters"];

/** Each required property with a value of its type: strings "x", numbers 1 (kept simple on purpose). */
function requiredArguments(parameters: FunctionParameters): Record<string, unknown> {
  const required = Array.isArray(parameters?.required) ? (parameters.required as unknown[]).filter((p): p is string => typeof p === "string") : [];
  const sample: Record<string, unknown> = { number: 1, integer: 1, boolean: true, array: [], object: {}, null: null };
  return Object.fromEntries(required.map((p) => {
    const type = parameters?.properties?.[p]?.type;
    return [p, typeof type === "string" && type in sample ? sample[type] : "x"];
  }));
}
