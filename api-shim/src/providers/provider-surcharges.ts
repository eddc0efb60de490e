import { type CacheLifetime, eachCacheControl } from "../money/cache-writes.ts";
import { invalidParam } from "../errors.ts";
import { responsesTools } from "../requests/responses-tools.ts";

/**
 * What a request may ask of a paid provider that the provider bills beyond the tokens in its
 * usage, or above the price the operator set for the model: the shim charges the key by usage
 * tokens at that price, so the rest would be the operator's to pay. Each is refused (400 naming
 * the member) before anything is held or forwarded, for a model that may be a provider's
 * (config.ts mayBeProviders; admission.ts). The model vLLM serves gets them as sent: vLLM ignores
 * or refuses every one of them itself, and walking every message, part and tool for them cost
 * its requests a quarter more parse time for nothing. (Found by review, in LiteLLM's source.)
 */

/**
 * OpenAI's `service_tier` values billed at the standard price. `priority` (and `scale`, a
 * contract's) cost more at OpenAI; `auto` is what LiteLLM sends Gemini as its priority tier.
 */
const STANDARD_TIERS = ["default", "flex"];

/**
 * Cache lifetimes as Anthropic takes them (`cache_control.ttl`; none is 5 minutes). LiteLLM's
 * Gemini path made a context cache of a prompt's marked messages, living as long as a
 * `"<seconds>s"` lifetime said, billed by Google per token-hour and in no usage; the rendered
 * LiteLLM config turns that path off (templates/litellm.yaml), and Anthropic takes no other.
 */
const CACHE_LIFETIMES = ["5m", "1h"];

/**
 * The tools a client runs itself: OpenAI's `function` and `custom` (vLLM takes `function`). Any
 * other type is one the provider runs and bills per call (LiteLLM passes Anthropic's
 * `web_search_*`, `code_execution_*`, `bash_*`, `text_editor_*`, `computer_*` on as such, and makes
 * `mcp` and `url` MCP servers).
 */
const CLIENT_TOOL_TYPES = ["function", "custom"];
/**
 * The members of a tool (and of a legacy `functions` entry) that describe a client's function.
 * LiteLLM's Gemini mapping turns a tool's other keys (`googleSearch`, `urlContext`,
 * `code_execution`, `enterpriseWebSearch`, in either case) into Google's tools, whatever its type.
 */
const TOOL_MEMBERS = ["type", "function", "custom", "cache_control"];
const FUNCTION_MEMBERS = ["name", "description", "parameters", "strict"];
/** A Responses API function tool is flat: its type beside the function's own members (responses-request.ts admits no other type). */
const RESPONSES_TOOL_MEMBERS = ["type", ...FUNCTION_MEMBERS];

/**
 * A 400 for the first member of `body` a provider would bill beyond the model's price; else the
 * cache lifetime `body` asks for (cache-writes.ts), read in the same walk of its `cache_control`s:
 * "1h" if any asks for an hour, "5m" for any other (Anthropic's default), null for none.
 */
export function refuseProviderSurcharges(body: Record<string, unknown>, responses = false): CacheLifetime {
  const { service_tier: tier, speed } = body;
  if (tier !== undefined && tier !== null && !STANDARD_TIERS.includes(tier as string)) {
    throw invalidParam(`'service_tier' '${shown(tier, 32)}' is not offered: this endpoint's prices are for the standard tier. Send 'default' or 'flex', or leave it out.`, "service_tier");
  }
  // Anthropic's fast mode (LiteLLM passes `speed` on, with its beta header): six times the price.
  if (speed !== undefined && speed !== null && speed !== "standard") {
    throw invalidParam(`'speed' '${shown(speed, 32)}' is not offered: this endpoint's prices are for the standard speed. Send 'standard', or leave it out.`, "speed");
  }
  if (body.web_search_options !== undefined && body.web_search_options !== null) {
    throw invalidParam("'web_search_options' is not offered: a provider's web search is billed per search, outside the tokens this endpoint charges for.", "web_search_options");
  }
  // A Responses namespace's tools each in its place (responses-tools.ts).
  refuseHostedTools(responses ? responsesTools(body.tools) : entries(body.tools, "tools"), "tools", responses ? RESPONSES_TOOL_MEMBERS : TOOL_MEMBERS);
  refuseHostedTools(entries(body.functions, "functions"), "functions", FUNCTION_MEMBERS);
  let asked: CacheLifetime = null;
  eachCacheControl(body, (control, member) => {
    if (control.ttl !== undefined && control.ttl !== null && !CACHE_LIFETIMES.includes(control.ttl as string)) {
      throw invalidParam("A cache_control 'ttl' must be '5m' or '1h' (or left out): longer cache lifetimes are billed to this endpoint's operator, not by the tokens you are charged for.", member ?? "cache_control");
    }
    if (asked !== "1h") asked = control.ttl === "1h" ? "1h" : "5m";
  });
  return asked;
}

/** `list`'s entries with the path a refusal names (`tools[2]`); none when it is not a list. */
function entries(list: unknown, param: string): { at: string; tool: unknown }[] {
  return Array.isArray(list) ? list.map((tool: unknown, i) => ({ at: `${param}[${i}]`, tool })) : [];
}

/**
 * A 400 naming `param` if one of the entries is not a client's own function: not an object,
 * a tool of a type the provider runs (`tools` only: a legacy `functions` entry has no type), or
 * with a member other than `members`. The message names the entry and what is wrong with it.
 */
function refuseHostedTools(list: readonly { at: string; tool: unknown }[], param: "tools" | "functions", members: readonly string[]): void {
  const billed = "billed per call, outside the tokens this endpoint charges for";
  const takes = members.map((m) => `'${m}'`).join(", ");
  for (const { at: path, tool } of list) {
    const at = `'${path}'`;
    if (tool === null || typeof tool !== "object" || Array.isArray(tool)) throw invalidParam(`${at} is not a function of your own: an object with ${takes}.`, param);
    const type = (tool as { type?: unknown }).type;
    if (param === "tools" && type !== undefined && !CLIENT_TOOL_TYPES.includes(type as string)) {
      throw invalidParam(`${at} is a tool the provider runs itself (${shown(type, 64)}): a provider's web search, URL fetch, code execution or MCP server is ${billed}. Send your own functions (type 'function' or 'custom').`, param);
    }
    for (const k in tool) {
      if (!members.includes(k)) throw invalidParam(`${at} has '${k.slice(0, 64)}', which a function of your own does not take (${takes}): a provider reads it as a tool it runs itself (web search, URL fetch, code execution), ${billed}.`, param);
    }
  }
}

/**
 * A client's value as a message may quote it, at most `max` characters: a string as it is, anything
 * else as JSON (String() throws for an object whose toString is not callable: a 500, not the 400).
 */
function shown(v: unknown, max: number): string {
  return (typeof v === "string" ? v : JSON.stringify(v)).slice(0, max);
}
