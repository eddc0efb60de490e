import { invalidParam } from "../errors.ts";
import { isWithin } from "../names.ts";
import { pydanticBool } from "./common-params.ts";
import { responsesTools } from "./responses-tools.ts";

/**
 * The longest stop string a stream takes. vLLM's detokenizer holds back the last len(stop) - 1
 * characters of the output until the request finishes (vllm/v1/engine/detokenizer.py,
 * stop_buffer_length), so a client leaving a stream is not charged those. Real stop sequences
 * ("<|im_end|>", "\n\nHuman:", "\nObservation:") are a few characters; at 64 what goes unseen is
 * at most 63 characters per output, where 20,000 would make every chunk empty.
 */
export const MAX_STREAM_STOP_CHARS = 64;

/**
 * The most tokens a stream's `logit_bias` may ban, or `bad_words` words it may list, while special
 * tokens decode to nothing: a few hundred steer the text; banning nearly the whole vocabulary
 * (tens of thousands of ids, within the body limit) leaves only special tokens to sample.
 */
export const MAX_STREAM_BANNED_TOKENS = 1024;

/**
 * Parameters with which a client has vLLM generate without writing chunks, refused on streams.
 * A client that leaves a stream is charged what it was sent (with its prompt): the upstream is
 * aborted and tells nothing of what it generated since its last chunk. Silences of the model's own
 * (a tool parser holding tokens back) are the price of aborting; one the client chose would be
 * generation it can walk away from unpaid, just before the end (hundreds of tokens for one). On a
 * non-streamed request they are harmless, charged from vLLM's usage, and pass on untouched.
 *
 * `vllm` is false for a model configured `provider: true`, which vLLM's detokenizer does not
 * serve: there a positive `logit_bias` writes text as OpenAI's does, and is left alone.
 * `mostTokens`: the most tokens the request's outputs may generate together (Infinity unbounded).
 */
export function refuseChosenSilences(b: Record<string, unknown>, vllm: boolean, mostTokens: number): void {
  // vLLM's extra parameter: "Number of tokens to batch into each streamed chunk … The first and
  // last chunks are always sent immediately." 1 is every token, as without it.
  const interval = b.stream_interval;
  if (interval !== undefined && interval !== null && interval !== 1) {
    throw invalidParam("'stream_interval' other than 1 is not accepted on a stream: tokens generated between chunks cannot be metered if the client leaves. Leave it out, or send the request without 'stream'.", "stream_interval");
  }
  // vLLM's beam search yields its answer once, whole, at the end (completions send it as one event).
  if (pydanticBool(b.use_beam_search) === true) {
    throw invalidParam("'use_beam_search' is not accepted on a stream: the answer is written only when it is whole, so its generation cannot be metered if the client leaves. Send the request without 'stream'.", "use_beam_search");
  }
  // The reasoning is generated and its deltas dropped.
  if (pydanticBool(b.include_reasoning) === false) {
    throw invalidParam("'include_reasoning: false' is not accepted on a stream: the hidden reasoning is generated without chunks and cannot be metered if the client leaves. Leave it out and skip the reasoning deltas, or send the request without 'stream'.", "include_reasoning");
  }
  // Nothing is held back when the stop string is to be written too.
  if (pydanticBool(b.include_stop_str_in_output) !== true && !stopsWithin(b.stop, MAX_STREAM_STOP_CHARS)) {
    throw invalidParam(`A 'stop' string longer than ${MAX_STREAM_STOP_CHARS} characters is not accepted on a stream: the output's last characters are held back while they could begin it, and cannot be metered if the client leaves. Use a shorter one, or send the request without 'stream'.`, "stop");
  }
  if (!vllm) return;
  // With tool_choice "required" vLLM writes nothing until a call's name is whole, and the name is
  // one of the request's own tools': OpenAI allows 64 characters, a client could declare 6,000.
  const long = toolNames(b.tools).find(({ name }) => !isWithin(name, MAX_TOOL_NAME_CHARS));
  if (long) {
    throw invalidParam(`A tool name longer than ${MAX_TOOL_NAME_CHARS} characters ('${long.at}') is not accepted on a stream: vLLM may generate it without writing it, which cannot be metered if the client leaves.`, "tools");
  }
  // A short answer bounds what forced special tokens can hide (a yes/no classifier: a positive bias, one token).
  if (pydanticBool(b.skip_special_tokens) !== false && mostTokens > MAX_UNSEEN_TOKENS) refuseForcedSpecialTokens(b);
}

/** The most tokens a stream may generate with what can force special tokens: no more can go unpaid. */
export const MAX_UNSEEN_TOKENS = 16;

/** The longest tool name a stream takes: OpenAI's own limit (`^[a-zA-Z0-9_-]{1,64}$`). */
const MAX_TOOL_NAME_CHARS = 64;

/**
 * The function names of `tools` with their paths, as chat (`function.name`) or the Responses API
 * (`name`, a namespace's in its place: responsesTools) gives them, and each namespace's own `name`.
 * vLLM has the model generate `<namespace>__<name>` (vllm/tool_parsers/utils.py
 * flat_namespace_tool_name): each part is held to the limit, not the whole, as Codex CLI keeps its
 * MCP tools' namespace and name within 64 together (mcp_tool_names.rs), which vLLM's `__` makes 66.
 */
function toolNames(tools: unknown): { at: string; name: string }[] {
  return responsesTools(tools).flatMap(({ at, tool, namespace }) => {
    const names: { at: string; name: string }[] = [];
    if (namespace && typeof namespace.name === "string") names.push({ at: `${namespace.at}.name`, name: namespace.name });
    if (tool === null || typeof tool !== "object") return names;
    const t = tool as { name?: unknown; function?: { name?: unknown } | null };
    const own = t.function?.name != null ? { at: `${at}.function.name`, name: t.function.name } : { at: `${at}.name`, name: t.name };
    if (typeof own.name === "string") names.push({ at: own.at, name: own.name });
    return names;
  });
}

/**
 * With `skip_special_tokens` (vLLM's default) special tokens decode to "", so a request forcing
 * them (with `ignore_eos`, EOS itself) generates thousands of tokens of empty chunks. Which ids are
 * special only the tokenizer knows: a positive bias, a list of allowed ids, or a ban of nearly
 * every token can each force them. With `skip_special_tokens: false` they are visible text.
 */
function refuseForcedSpecialTokens(b: Record<string, unknown>): void {
  const unseen = `are written as nothing while 'skip_special_tokens' is on, so their generation cannot be metered if the client leaves. Send 'skip_special_tokens': false, a 'max_tokens' of ${MAX_UNSEEN_TOKENS} or less, or the request without 'stream'.`;
  const how = `can force special tokens, which ${unseen}`;
  const bias = b.logit_bias;
  if (bias !== null && typeof bias === "object" && !Array.isArray(bias)) {
    const values = Object.values(bias);
    // pydantic's float reads "5" and true too; anything but a plain non-positive number is refused.
    if (values.some((v) => !(typeof v === "number" ? v <= 0 : typeof v === "string" && Number(v) <= 0))) {
      throw invalidParam(`A positive 'logit_bias' is not accepted on a stream: it ${how}`, "logit_bias");
    }
    if (values.length > MAX_STREAM_BANNED_TOKENS) {
      throw invalidParam(`A 'logit_bias' of more than ${MAX_STREAM_BANNED_TOKENS} tokens is not accepted on a stream: it ${how}`, "logit_bias");
    }
  }
  // A grammar can name special tokens (llguidance's `<|im_start|>` or `<[151644]>`: the fallback of
  // vLLM's default structured-output backend), `guided_grammar` in older releases.
  const structured = b.structured_outputs;
  if (structured !== null && typeof structured === "object" && (structured as { grammar?: unknown }).grammar != null) {
    throw invalidParam(`A 'structured_outputs' grammar is not accepted on a stream: it ${how}`, "structured_outputs");
  }
  if (b.guided_grammar != null) throw invalidParam(`'guided_grammar' is not accepted on a stream: it ${how}`, "guided_grammar");
  if (b.allowed_token_ids !== undefined && b.allowed_token_ids !== null) {
    throw invalidParam(`'allowed_token_ids' is not accepted on a stream: it ${how}`, "allowed_token_ids");
  }
  if (Array.isArray(b.bad_words) && b.bad_words.length > MAX_STREAM_BANNED_TOKENS) {
    throw invalidParam(`'bad_words' of more than ${MAX_STREAM_BANNED_TOKENS} words is not accepted on a stream: it ${how}`, "bad_words");
  }
  // Past the answer's end the model samples its end-of-text token again and again, each one
  // generated and written as nothing. (Benchmarks stream with it: they send the flag below too.)
  if (pydanticBool(b.ignore_eos) === true) {
    throw invalidParam(`'ignore_eos' is not accepted on a stream: past its end a model writes end-of-text tokens, which ${unseen}`, "ignore_eos");
  }
}

/** Whether each of `stop`'s strings (a string or a list) has at most `max` characters, as Python counts them (isWithin). */
function stopsWithin(stop: unknown, max: number): boolean {
  const stops: unknown[] = typeof stop === "string" ? [stop] : Array.isArray(stop) ? stop : [];
  return stops.every((s) => typeof s !== "string" || isWithin(s, max));
}
