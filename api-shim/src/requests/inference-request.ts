import { isAscii } from "node:buffer";
import { isTextPart, mediaParts } from "./content-parts.ts";
import { refuseUnsafeMedia } from "./media-urls.ts";
import { echoesLastMessage, echoesMedia } from "./chat-echo.ts";
import { checkEmbeddingsRequest } from "./embeddings-request.ts";
import { invalidParam } from "../errors.ts";
import { spliceMemberValue, withFirstMembers } from "./json-splice.ts";
import { normalizationGrowthOf } from "./normalization.ts";
import { repeatedTextBytes, repeatedTexts } from "./repeated-text.ts";
import { TokenEstimate } from "../money/pricing.ts";
import { inferenceBody, jsonBytes, pydanticBool, requestChatTemplate, streamFlag } from "./common-params.ts";

/**
 * Checks the few fields metering depends on and builds the body sent upstream. Everything else
 * passes through (a provider's model takes only what provider-params.ts allows): a non-streamed
 * body is forwarded byte for byte; a streamed one gains `stream_options.include_usage` (and
 * `continuous_usage_stats` when the model's upstream supports it).
 */
export type InferenceKind = "chat" | "completions" | "embeddings" | "responses";

export interface InferenceRequest {
  model: string;
  stream: boolean;
  maxTokens: number | undefined;
  /**
   * `maxTokens` is vLLM's completions default (16), not the client's: another upstream (a
   * provider behind LiteLLM, whose text completion becomes a chat call) may generate far more.
   */
  defaultMaxTokens: boolean;
  /** Independent prompts in the request: the length of a batched `prompt`/`input` (plus the entries of `prompt_embeds`), else 1. */
  prompts: number;
  /** Outputs per prompt (`n`, 1 when absent). */
  n: number;
  /** Sequences the upstream generates: prompts × `n` (0 for embeddings). Each may reach maxTokens. */
  outputs: number;
  /** The prompt is `messages` rendered by the model's chat template (chat, and vLLM's chat-style embeddings). */
  templated: boolean;
  /**
   * The parts of the prompt whose tokens the body's bytes do not bound: each non-text content part
   * of each message (an image, audio, video), and one for a chat template the request brings,
   * which can expand a few bytes into any number of tokens. 0: the bytes bound the prompt.
   */
  unboundedParts: number;
  /**
   * Bytes of JSON the chat template prints again, less compactly (tools, documents, earlier tool
   * calls' arguments): each may become up to RENDERED_JSON_TOKENS_PER_BYTE tokens. 0 when none.
   */
  renderedJsonBytes: number;
  /** Bytes of text the prompt renders more often than the body carries it (repeated-text.ts): a tool output's call name, a Responses request's first system item. */
  repeatedTextBytes: number;
  /**
   * The model's context does not bound a prompt: embeddings (of `input` or `messages`), which
   * vLLM with chunked processing (`--pooler-config` with enable_chunked_processing, through
   * `model.extraArgs`) embeds in pieces when longer than the context, counting every piece's tokens.
   */
  promptMayExceedContext: boolean;
  /**
   * The answer starts with text the client sent (`echo`, read as vLLM's pydantic reads a bool):
   * the prompt (completions), or in chat the last message, which vLLM echoes only when it has
   * content and the answer's role (see `echoesLastMessage`).
   */
  echo: boolean;
  /** The client asked for the usage chunk (vLLM semantics: stream_options present, include_usage absent or true). */
  clientWantsUsage: boolean;
  clientWantsContinuous: boolean;
  /**
   * The client's `stream_options` carry a `continuous_usage_stats` that is not absent, null or
   * false: forwarded, the upstream may send usage on every chunk, whether or not the client is
   * shown it (an `include_usage: false` beside it is replaced, the member kept).
   */
  continuousAsked: boolean;
}

/** OpenAI's own limit on `n`; it also keeps a hold's arithmetic far from 2^53. */
export const MAX_N = 128;

/** vLLM's default `max_tokens` for /v1/completions (CompletionRequest.max_tokens = 16). */
export const COMPLETIONS_DEFAULT_MAX_TOKENS = 16;

/**
 * The most tokens one output may generate, read the way vLLM reads the request (undefined: up
 * to the model's context). A bound lower than the upstream's would cap the charge below the
 * usage, so where readings differ the larger one wins.
 * - chat: `max_completion_tokens or max_tokens`, as vLLM 0.11 (Python's `or`: a 0 falls through
 *   to the other, and 0 with nothing else means no limit). Later vLLM reads `max_tokens` only when
 *   `max_completion_tokens` is None, and refuses a 0: where they differ this bound is the larger.
 * - completions: vLLM reads only `max_tokens`, 16 when absent, null for no limit; a proxy in front
 *   (LiteLLM) may map `max_completion_tokens` onto it, so that counts too when it is larger.
 */
function completionBound(kind: "chat" | "completions", b: Record<string, unknown>): number | undefined {
  const mct = b.max_completion_tokens as number | null | undefined;
  const mt = b.max_tokens as number | null | undefined;
  if (kind === "chat") return (mct || mt) ?? undefined;
  // `echo` with `max_tokens: 0` asks for the prompt back, and vLLM still generates one token per
  // output for it (echo_without_generation, then max_tokens = 1): a bound of 0 undercharged it.
  const own = mt === undefined ? COMPLETIONS_DEFAULT_MAX_TOKENS : mt === 0 && b.echo ? 1 : mt;
  if (own === null) return undefined;
  return typeof mct === "number" ? Math.max(own, mct) : own;
}

export function parseInferenceRequest(kind: Exclude<InferenceKind, "responses">, body: unknown): InferenceRequest {
  const { b, model } = inferenceBody(body);
  if (kind === "chat" && (!Array.isArray(b.messages) || b.messages.length === 0)) {
    throw invalidParam("'messages' is required and must be a non-empty array.", "messages");
  }
  // vLLM (with --enable-prompt-embeds) takes `prompt_embeds` beside or instead of `prompt`: each
  // entry is one more prompt, generating its own `n` outputs, so each is counted in the hold.
  const embeds = kind === "completions" ? embedsOf(b.prompt_embeds).length : 0;
  if (kind === "completions" && (b.prompt === undefined || b.prompt === null) && embeds === 0) throw invalidParam("'prompt' is required.", "prompt");
  // vLLM's embeddings take `input`, or `messages` rendered by the chat template (its chat
  // embeddings, for multimodal embedding models), answered in a format the shim can meter.
  const chatEmbeddings = kind === "embeddings" && rendersMessages(kind, b);
  if (kind === "embeddings") checkEmbeddingsRequest(b, chatEmbeddings);
  for (const param of ["max_completion_tokens", "max_tokens"] as const) {
    const v = b[param];
    if (v === undefined || v === null) continue;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) throw invalidParam(`'${param}' must be a non-negative integer.`, param);
  }
  let n = 1;
  if (kind !== "embeddings" && b.n !== undefined && b.n !== null) {
    if (typeof b.n !== "number" || !Number.isSafeInteger(b.n) || b.n < 1 || b.n > MAX_N) throw invalidParam(`'n' must be an integer from 1 to ${MAX_N}.`, "n");
    n = b.n;
  }
  const templated = kind === "chat" || chatEmbeddings;
  if (templated) refuseUnsafeMedia(b.messages);
  if (kind === "chat" && pydanticBool(b.echo) === true && echoesMedia(b)) {
    throw invalidParam("'echo' is not accepted when the message it would echo has a part that is not text (an image, audio, a file): the model server would fail after generating the whole answer.", "echo");
  }
  const prompts = templated ? 1 : kind === "embeddings" ? batchSize(b.input) : (b.prompt == null ? 0 : batchSize(b.prompt)) + embeds;
  const stream = kind !== "embeddings" && streamFlag(b);
  const so = b.stream_options;
  if (so !== undefined && so !== null && (typeof so !== "object" || Array.isArray(so))) throw invalidParam("'stream_options' must be an object.", "stream_options");
  const opts = (so ?? null) as Record<string, unknown> | null;
  if (opts && opts.include_usage !== undefined && opts.include_usage !== null && typeof opts.include_usage !== "boolean") throw invalidParam("'stream_options.include_usage' must be a boolean.", "stream_options");
  // vLLM's StreamOptions.include_usage is Optional[bool] = True, read as `if include_usage:`:
  // absent means yes, and an explicit null means no, like false.
  const wantsUsage = opts !== null && (opts.include_usage === undefined || opts.include_usage === true);
  return {
    model,
    stream,
    maxTokens: kind === "embeddings" ? undefined : completionBound(kind, b),
    defaultMaxTokens: kind === "completions" && b.max_tokens === undefined && typeof b.max_completion_tokens !== "number",
    prompts,
    n,
    outputs: kind === "embeddings" ? 0 : prompts * n,
    templated,
    unboundedParts: templated ? mediaParts(b.messages) + (requestChatTemplate(b) !== null ? 1 : 0) : 0,
    renderedJsonBytes: templated ? renderedJsonBytes(b) : 0,
    repeatedTextBytes: kind === "chat" ? repeatedTextBytes(kind, b) : 0,
    promptMayExceedContext: kind === "embeddings",
    echo: pydanticBool(b.echo) === true && (kind !== "chat" || echoesLastMessage(b)),
    clientWantsUsage: wantsUsage,
    clientWantsContinuous: wantsUsage && opts.continuous_usage_stats === true,
    continuousAsked: opts !== null && opts.continuous_usage_stats !== undefined && opts.continuous_usage_stats !== null && opts.continuous_usage_stats !== false,
  };
}

/**
 * The bytes of JSON the chat template prints again, as JSON.stringify writes it: tools (and the
 * legacy `functions`), documents, any object or list given in `chat_template_kwargs` (vLLM
 * merges those over the request's own), and earlier tool calls (vLLM parses their arguments into
 * objects first). Templates print
 * them with `tojson`, Python's json.dumps with ", " and ": " (Llama 3's with indent=4), so the
 * text the tokenizer reads is longer than the body's compact JSON: an enum of digits is three
 * tokens for every two bytes (`,`, ` `, `0`). An independent review found a 5 KB tools request
 * charged 24 % below its price.
 */
function renderedJsonBytes(b: Record<string, unknown>): number {
  const parts = templateJson(b);
  if (Array.isArray(b.messages)) for (const m of b.messages) if (m !== null && typeof m === "object") parts.push((m as { tool_calls?: unknown }).tool_calls);
  return jsonBytes(parts);
}

/**
 * What a chat template prints as JSON besides the messages: tools, the legacy `functions`,
 * documents, and every object or list among the template's variables (vLLM hands the template any
 * it names: Llama 3.1's takes `custom_tools` in place of `tools`, and prints them with indent=4).
 * vLLM applies chat_template_kwargs over {tools, documents}, so a kwarg of either name replaces the
 * request's own: `merged` (the estimate and normalization's growth, promptFields) counts the one
 * list the template gets; the hold (renderedJsonBytes) counts both, as holding more is harmless.
 */
function templateJson(b: Record<string, unknown>, merged = false): unknown[] {
  const kwargs = b.chat_template_kwargs !== null && typeof b.chat_template_kwargs === "object" ? (b.chat_template_kwargs as Record<string, unknown>) : {};
  const own = (name: "tools" | "documents") => (merged && Object.hasOwn(kwargs, name) ? undefined : b[name]);
  return [own("tools"), b.functions, own("documents"), ...Object.values(kwargs).filter((v) => v !== null && typeof v === "object")];
}

/** The prompt is `messages` rendered by the chat template: chat, and vLLM's chat-style embeddings (`messages` without `input`). */
function rendersMessages(kind: InferenceKind, b: Record<string, unknown>): boolean {
  return kind === "chat" || (kind === "embeddings" && b.input === undefined && b.messages !== undefined);
}

/**
 * How many prompts a `prompt`/`input` holds, as vLLM reads it: a string or one token list
 * (numbers) is one prompt; a list of strings or of token lists is a batch of that many.
 */
function batchSize(v: unknown): number {
  if (!Array.isArray(v) || v.length === 0 || typeof v[0] === "number") return 1;
  return v.length;
}

/** A completions request's `prompt_embeds` as a list of prompts: one tensor, or a list of them. */
const embedsOf = (v: unknown): unknown[] => (v === undefined || v === null ? [] : Array.isArray(v) ? v : [v]);

/**
 * The prompt's tokens estimated from the fields that carry it (promptFields), rather than the
 * whole body (a large `logit_bias` or JSON schema is not prompt): charged when the upstream's
 * count never comes. Made at admission, as the body is let go then, from the parsed body without
 * writing it out again. Text by TokenEstimate's rule, counted as its JSON; token IDs (a list of
 * numbers, or a batch of such lists) one token each; `prompt_embeds` by its size (embedsTokens);
 * a message's non-text part (an image's data URL, audio, video) four characters to a token, never
 * more than before the digit rule, and never fewer than `mediaPartTokens`, the model's own count
 * per part where configured (ModelConfig.mediaPartTokens: an image by URL is a few bytes of JSON
 * and hundreds of tokens to some models, 16 to others, so no one count is a lower bound).
 */
export function promptTokens(kind: InferenceKind, body: Record<string, unknown>, mediaPartTokens = 0): number {
  const estimate = new TokenEstimate();
  const [first, ...rest] = promptFields(kind, body);
  if (rendersMessages(kind, body) || kind === "responses") addMessages(estimate, first, mediaPartTokens);
  else addPrompt(estimate, first);
  for (const part of rest) estimate.addValue(part);
  if (kind === "completions") estimate.addTokens(embedsTokens(body.prompt_embeds));
  // vLLM's top-level `prompt_token_ids` (RL frameworks' token-in rollouts: Strands Agents sends
  // them with a one-space prompt) are the prompt where a release takes them in place of the
  // rendered one: one token each, the larger of the two where one takes the other's place.
  const ids = body.prompt_token_ids;
  return isTokenIds(ids) ? Math.max(estimate.tokens, ids.length) : estimate.tokens;
}

/**
 * A lower bound of the tokens in vLLM's `prompt_embeds` (a base64 torch.save'd seq_len × hidden
 * tensor, or a list of them), which the estimate otherwise counted as none: each entry
 * ceil(decoded bytes / EMBED_BYTES_PER_TOKEN), at least one. The dtype is not read, so a row is
 * taken at its largest: float32 (vLLM takes float32, bf16 and fp16, and its own client example
 * sends float32) of the widest common model. The tensor's header, a narrower model's rows or a
 * 2-byte dtype make the true count only larger (bf16 at 8,192 wide: twice this), never smaller.
 */
function embedsTokens(v: unknown): number {
  let tokens = 0;
  // Buffer.byteLength gives the decoded size from the text's length and padding, without decoding it.
  for (const e of embedsOf(v)) tokens += Math.max(1, Math.ceil((typeof e === "string" ? Buffer.byteLength(e, "base64") : 0) / EMBED_BYTES_PER_TOKEN));
  return tokens;
}

/** One token's row of a 16,384-wide hidden state in float32 (Llama 3.1 405B: the widest common model; Llama 3 70B and Qwen2.5 72B are 8,192). */
const EMBED_BYTES_PER_TOKEN = 16_384 * 4;

/** A completions `prompt` or an embeddings `input`: text, or token IDs as vLLM takes them (one list, or a batch of lists). */
function addPrompt(estimate: TokenEstimate, prompt: unknown): void {
  if (isTokenIds(prompt)) estimate.addTokens(prompt.length);
  else if (Array.isArray(prompt) && prompt.length > 0 && prompt.every(isTokenIds)) for (const ids of prompt) estimate.addTokens(ids.length);
  else estimate.addValue(prompt);
}

const isTokenIds = (v: unknown): v is unknown[] => Array.isArray(v) && v.every((x) => typeof x === "number");

/** Messages as their JSON, except a list content's non-text parts (content-parts.ts): payloads (TokenEstimate.addPayload), each at least `mediaPartTokens`. */
function addMessages(estimate: TokenEstimate, messages: unknown, mediaPartTokens: number): void {
  if (!Array.isArray(messages)) return estimate.addValue(messages);
  estimate.addBytes(1 + Math.max(messages.length, 1)); // brackets and commas
  for (const m of messages) {
    const content = m !== null && typeof m === "object" ? (m as { content?: unknown }).content : undefined;
    if (!Array.isArray(content)) {
      estimate.addValue(m);
      continue;
    }
    const { content: _, ...others } = m as Record<string, unknown>;
    estimate.addValue(others);
    // `"content":[`, `]`, the parts' commas, and one before "content" when other members are there.
    estimate.addBytes(11 + Math.max(content.length, 1) + (Object.keys(others).length > 0 ? 1 : 0));
    for (const part of content) {
      if (isTextPart(part)) estimate.addValue(part);
      else estimate.addPayload(part, mediaPartTokens);
    }
  }
}

/**
 * The fields that carry the prompt: `messages` (chat, vLLM's chat-style embeddings) and what the
 * template prints beside them (templateJson), completions `prompt`, embeddings `input`, the
 * Responses API's `input` (items read as messages), `instructions` and `tools`. The first is the messages or the prompt.
 */
function promptFields(kind: InferenceKind, body: Record<string, unknown>): unknown[] {
  if (rendersMessages(kind, body)) return [body.messages, ...templateJson(body, true)];
  if (kind === "responses") return [body.input, body.instructions, body.tools]; // responses-request.ts
  return [kind === "completions" ? body.prompt : body.input];
}

/**
 * How many bytes the prompt may gain when the model's tokenizer normalizes it, so the hold's
 * "a token is at least one byte" bound stays true: Qwen's tokenizer applies NFC and XLM-R's
 * (bge-m3) NFKC, under which U+1D160 goes from 4 bytes to 12 and U+FDFA from 3 to 33. The
 * decomposed forms (NFD, NFKD) are the longest a normalization makes (normalization.ts bounds them
 * one code point at a time, in one pass). Only the prompt fields'
 * strings (values and keys: a tool's schema goes into the prompt) with a non-ASCII character are
 * normalized, so the work is in proportion to the non-ASCII text, not to the images beside it
 * (an ASCII data URL costs one scan). JSON escapes spell any character in an ASCII body, so the
 * parsed strings decide.
 */
export function normalizationGrowth(kind: InferenceKind, body: Record<string, unknown>, raw: Buffer): number {
  if (isAscii(raw) && raw.indexOf(JSON_ESCAPE) < 0) return 0;
  let growth = 0;
  const text = (s: string): void => {
    if (NON_ASCII.test(s)) growth += normalizationGrowthOf(s);
  };
  const visit = (v: unknown): void => {
    if (typeof v === "string") {
      text(v);
    } else if (Array.isArray(v)) {
      for (const item of v) visit(item);
    } else if (v !== null && typeof v === "object") {
      for (const key in v) {
        text(key);
        visit((v as Record<string, unknown>)[key]);
      }
    }
  };
  visit(promptFields(kind, body));
  // Text rendered twice grows twice.
  if (kind === "chat" || kind === "responses") visit(repeatedTexts(kind, body));
  return growth;
}

const JSON_ESCAPE = Buffer.from("\\u");
const NON_ASCII = /[^\x00-\x7f]/;

/** The member spliced first into a streamed body that has no `stream_options`. */
const ASK_USAGE = Buffer.from('"stream_options":{"include_usage":true},');
const ASK_USAGE_CONTINUOUS = Buffer.from('"stream_options":{"include_usage":true,"continuous_usage_stats":true},');

/** The member spliced first into a completions body without `max_tokens` (upstreamBody). */
const DEFAULT_MAX_TOKENS = Buffer.from(`"max_tokens":${COMPLETIONS_DEFAULT_MAX_TOKENS},`);

/**
 * The body to forward: the client's bytes, with usage requested for streams. A stream without
 * `stream_options` gets ours spliced in first; one whose `stream_options` already asks for what
 * metering needs goes as sent; any other has only that member's value replaced (json-splice.ts).
 * Re-serializing the body instead would round integers above 2^53 (a `seed`), turn `1.0` into
 * `1` and reorder or drop duplicate members. `sendDefaultMaxTokens`: a completions request held
 * at vLLM's and OpenAI's default of 16 tokens gets `"max_tokens":16` first, so that a server
 * without that default (Ollama, llama.cpp: to the end of the context) stops where the hold did.
 */
export function upstreamBody(raw: Buffer, body: Record<string, unknown>, req: InferenceRequest, continuous: boolean, sendDefaultMaxTokens = false): Buffer | string {
  const first: Buffer[] = sendDefaultMaxTokens ? [DEFAULT_MAX_TOKENS] : [];
  let rest = raw;
  const given = body.stream_options as Record<string, unknown> | null | undefined;
  if (req.stream && given === undefined) first.push(continuous ? ASK_USAGE_CONTINUOUS : ASK_USAGE);
  else if (req.stream && given !== undefined && !(given !== null && given.include_usage === true && (!continuous || given.continuous_usage_stats === true))) {
    const options: Record<string, unknown> = { ...given, include_usage: true };
    if (continuous) options.continuous_usage_stats = true;
    const pieces = spliceMemberValue(raw, "stream_options", JSON.stringify(options));
    // Null only were the walk to miss a member JSON.parse read: the request then goes re-serialized, not failed.
    if (!pieces) return JSON.stringify({ ...body, stream_options: options, ...(sendDefaultMaxTokens ? { max_tokens: COMPLETIONS_DEFAULT_MAX_TOKENS } : {}) });
    rest = Buffer.concat(pieces);
  }
  // The body parsed as an object with a `model`: a member follows its `{`.
  return first.length === 0 ? rest : withFirstMembers(rest, first);
}
