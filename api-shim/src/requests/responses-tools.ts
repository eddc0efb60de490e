import { invalidParam } from "../errors.ts";

/** A Responses API `namespace`'s members: function tools under one name (Codex CLI's MCP and agent tools). */
const NAMESPACE_MEMBERS = ["type", "name", "description", "tools"];

/** One of a request's tools, with the path a refusal names; one inside a namespace also with its namespace's path and `name`. */
export interface ToolEntry {
  at: string;
  tool: unknown;
  namespace?: { at: string; name: unknown };
}

/**
 * A Responses request's tools as vLLM reads them, each `namespace` replaced by its own tools (one
 * level: vLLM names them `namespace__name`), each with the path a refusal names
 * (`tools[1].tools[0]`). The one walk of them: the server-tool check (responses-request.ts), a
 * provider's billed-tool check (provider-surcharges.ts) and a stream's tool names
 * (stream-silences.ts, chat's tools too) all read this. A namespace that is not
 * `{type, name, description?, tools: [...]}` is refused here.
 */
export function responsesTools(tools: unknown): ToolEntry[] {
  if (!Array.isArray(tools)) return [];
  return tools.flatMap((tool: unknown, i): ToolEntry[] => {
    if (tool === null || typeof tool !== "object" || (tool as { type?: unknown }).type !== "namespace") return [{ at: `tools[${i}]`, tool }];
    for (const k in tool) {
      if (!NAMESPACE_MEMBERS.includes(k)) throw invalidParam(`tools[${i}] has '${k.slice(0, 64)}', which a 'namespace' of function tools does not take (${NAMESPACE_MEMBERS.map((m) => `'${m}'`).join(", ")}).`, "tools");
    }
    const inner = (tool as { tools?: unknown }).tools;
    if (!Array.isArray(inner)) throw invalidParam(`A 'namespace' tool groups function tools in its own 'tools' list: tools[${i}].tools is not a list.`, "tools");
    const namespace = { at: `tools[${i}]`, name: (tool as { name?: unknown }).name };
    return inner.map((t: unknown, j) => ({ at: `tools[${i}].tools[${j}]`, tool: t, namespace }));
  });
}
