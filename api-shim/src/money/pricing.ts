import { heldAtDefaultMaxTokens, type ModelConfig, type Pricing } from "../config.ts";
import { promptCost } from "./cache-reads.ts";
import { type CacheLifetime, type CacheWrites, cacheWriteHold, cacheWriteSurcharge } from "./cache-writes.ts";
import { tokenCost } from "./money.ts";
import { type PriceRecord, priceRecords } from "./price-record.ts";

/**
 * What a request may cost (the hold, reserved before forwarding) and what it did cost (settled
 * from the upstream's usage). All amounts are µc. The cost is capped at the hold, so a balance
 * can never go below zero even if an upstream reports more tokens than it was allowed.
 */

/** Completion bound (and a prompt's, when its bytes do not bound it) when neither max_tokens, the model's maxModelLen nor its maxOutputTokens is known. */
export const DEFAULT_MAX_COMPLETION_TOKENS = 32_768;

/**
 * Tokens a chat template may add that the body does not carry: role markers per message, a
 * default system prompt, tool-use instructions (Qwen 2.5's and Llama 3.1's add ~20-150).
 */
export const CHAT_TEMPLATE_TOKENS = 256;

/**
 * The most tokens one byte of JSON the chat template prints again (tools, documents, tool calls)
 * may become, its bytes counted as JSON.stringify writes it. Printed with Python's json.dumps
 * spacing and indentation, a byte is at most about 4 tokens as a BPE tokenizer pre-splits text
 * (digits one by one, a space before each; an enum of digits 1.5 per byte, ordinary schemas
 * about 1; arrays nested 120 deep printed with indent=4, about 4, measured with Llama 3's
 * tokenizer). Deeper nesting grows further (11-16 per byte at 600-900 levels), which the shim
 * refuses anyway (json-shape.ts: 128 levels). Ten covers a template that prints tools twice. A bound this close to the bytes, not the model's whole context, lets a key with a
 * modest balance use tools on a long-context model; the charge is still the usage.
 */
export const RENDERED_JSON_TOKENS_PER_BYTE = 10;

/**
 * Prompt tokens guessed from the request body's size, for the tokens/min bucket at admission
 * (corrected at settlement): about four bytes per token for English text and JSON. What is
 * charged when the upstream's count never comes is a TokenEstimate instead, made from the prompt
 * fields only (inference-request.ts, promptTokens).
 */
export function estimatePromptTokens(bodyBytes: number): number {
  return Math.ceil(bodyBytes / 4);
}

/**
 * Tokens guessed from JSON text, where the upstream's count never came: a prompt (its fields'
 * JSON) or the text a stream generated (its string values, as they pass). An ASCII digit and a
 * non-ASCII code point are a token each (Qwen's tokenizer splits digits one by one; a CJK
 * character is about one), the other bytes four to a token (English text and JSON). A JSON
 * escape counts as the character it stands for (LiteLLM may write every non-ASCII character as
 * `\uXXXX`). One pass over the text's UTF-16 code units, no allocation; a parsed value (a
 * prompt) is counted as its JSON text without that text being written (addValue).
 */
export class TokenEstimate {
  /** Digits and non-ASCII code points seen. */
  private ones = 0;
  /** Other (ASCII) bytes seen. */
  private bytes = 0;

  get tokens(): number {
    return this.ones + Math.ceil(this.bytes / 4);
  }

  /** Counts `json` whole. */
  add(json: string): void {
    this.scan(json, 0, false);
  }

  /**
   * Counts a parsed JSON value as `add(JSON.stringify(value))` would, without writing that text:
   * each string is read once, where it is (the body nests at most 128 levels, json-shape.ts).
   */
  addValue(value: unknown): void {
    this.value(value, false);
  }

  /**
   * Counts a parsed JSON value that is not text (an image's or a video's data URL, audio's base64)
   * four characters of its JSON to a token, digits and non-ASCII included: the rule the whole
   * prompt had before digits counted one each, as a base64 digit is no token of the model's.
   * Strings are measured, not read. `atLeast`: the fewest tokens it counts (a media part's floor).
   */
  addPayload(value: unknown, atLeast = 0): void {
    // A payload adds only `bytes` (four to a token), so the floor is that many bytes.
    const before = this.bytes;
    this.value(value, true);
    this.bytes = Math.max(this.bytes, before + atLeast * 4);
  }

  /** Counts ASCII bytes of JSON that are neither digits nor text (a list's brackets and commas), four to a token. */
  addBytes(count: number): void {
    this.bytes += count;
  }

  /** Counts tokens known as such (a prompt's token IDs). */
  addTokens(count: number): void {
    this.ones += count;
  }

  /**
   * Counts the JSON string value whose text starts at `from` (just past its opening quote) up to
   * its closing, unescaped quote; returns the index past that quote (the text's length when it has none).
   */
  addString(json: string, from: number): number {
    return this.scan(json, from, true);
  }

  /**
   * The walk behind addValue and addPayload, as JSON.stringify writes a parsed value: `undefined`
   * is left out of an object and written `null` in a list.
   */
  private value(v: unknown, payload: boolean): void {
    if (typeof v === "string") {
      this.bytes += 2;
      if (payload) this.bytes += v.length;
      else this.text(v);
    } else if (typeof v === "number") {
      const s = Number.isFinite(v) ? String(v) : "null";
      if (payload) this.bytes += s.length;
      else this.text(s);
    } else if (typeof v === "boolean") {
      this.bytes += v ? 4 : 5;
    } else if (Array.isArray(v)) {
      this.bytes += 1 + Math.max(v.length, 1); // brackets and commas
      for (const item of v) this.value(item ?? null, payload);
    } else if (v !== null && typeof v === "object") {
      let members = 0;
      for (const key in v) {
        const item = (v as Record<string, unknown>)[key];
        if (item === undefined) continue;
        members++;
        this.bytes += 3; // quotes and colon
        if (payload) this.bytes += key.length;
        else this.text(key);
        this.value(item, payload);
      }
      this.bytes += 1 + Math.max(members, 1); // braces and commas
    } else if (v === null) {
      this.bytes += 4;
    }
  }

  /**
   * Counts `s`'s characters as scan counts them once JSON escapes are read: the text of a parsed
   * string. The rule is written out here and in scan, not shared: a function both call (measured
   * 2026-12-04) doubled the cost of a stream event's text, 55 to 108 ns, and of a prompt's walk.
   */
  private text(s: string): void {
    let ones = 0;
    let bytes = 0;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x30 && c <= 0x39) ones++;
      else if (c < 0x80) bytes++;
      else if (c < 0xdc00 || c > 0xdfff) ones++;
    }
    this.ones += ones;
    this.bytes += bytes;
  }

  /**
   * Adds the larger of `a` and `b` (unrounded: four bytes to a token) and empties both: two
   * estimates of what may be the same text written twice, which counts once.
   */
  addLarger(a: TokenEstimate, b: TokenEstimate): void {
    const larger = a.ones * 4 + a.bytes >= b.ones * 4 + b.bytes ? a : b;
    this.ones += larger.ones;
    this.bytes += larger.bytes;
    a.ones = a.bytes = b.ones = b.bytes = 0;
  }

  private scan(json: string, from: number, toQuote: boolean): number {
    let ones = 0;
    let bytes = 0;
    let i = from;
    for (; i < json.length; i++) {
      let c = json.charCodeAt(i);
      if (c === 0x22 && toQuote) break;
      if (c === 0x5c) {
        // \uXXXX stands for one UTF-16 unit; any other escape for one ASCII character.
        if (json.charCodeAt(i + 1) === 0x75) {
          c = hex4(json, i + 2);
          i += 5;
        } else {
          c = 0x20;
          i += 1;
        }
      }
      if (c >= 0x30 && c <= 0x39) ones++;
      else if (c < 0x80) bytes++;
      else if (c < 0xdc00 || c > 0xdfff) ones++; // a low surrogate ends a code point already counted
    }
    this.ones += ones;
    this.bytes += bytes;
    return toQuote && i < json.length ? i + 1 : i;
  }
}

/** The value of the four hex digits at `at` (0 when they are not). */
function hex4(text: string, at: number): number {
  let v = 0;
  for (let k = at; k < at + 4; k++) {
    const c = text.charCodeAt(k) | 0x20; // lower case
    const d = c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x61 && c <= 0x66 ? c - 0x57 : -1;
    if (d < 0) return 0;
    v = v * 16 + d;
  }
  return v;
}

export interface Usage {
  promptTokens: number;
  completionTokens: number;
  /** Prompt-cache writes a provider reported (through LiteLLM), counted in promptTokens too: charged a surcharge on top. */
  cacheWrites?: CacheWrites;
  /** Prompt tokens read from a prompt cache (cache-reads.ts), counted in promptTokens too: charged the model's cachedPromptPer1k. */
  cachedTokens?: number;
}

export interface HoldInput {
  model: string;
  batch: boolean;
  /** Size of the request body in bytes: a text token is at least one byte, so it bounds the prompt. */
  bodyBytes: number;
  /**
   * The bytes the tokenizer's Unicode normalization may add to the prompt (a token is at least
   * one byte of the normalized text); called only when the bytes bound the prompt.
   */
  normalizationGrowth?: () => number;
  /** The prompt goes through a chat template: CHAT_TEMPLATE_TOKENS more. */
  templated: boolean;
  /**
   * Parts of the prompt its bytes do not bound (each non-text part, and a request's own chat
   * template): each holds a context's worth on top of the text, unless the model's context bounds
   * the prompt, which is then held whole. 0: the bytes bound the prompt.
   */
  unboundedParts: number;
  /** Bytes of the body that the chat template prints again as JSON: RENDERED_JSON_TOKENS_PER_BYTE tokens each. */
  renderedJsonBytes?: number;
  /** Bytes of text the prompt renders more often than the body carries it (repeated-text.ts): one token at most each, as the body's. */
  repeatedTextBytes?: number;
  /** The model's context does not bound a prompt (embeddings, which vLLM may embed in pieces): its bytes do, plus a context's worth per unbounded part. */
  promptMayExceedContext?: boolean;
  /** max_completion_tokens / max_tokens from the request, when given: the bound of each output. */
  maxTokens: number | undefined;
  /**
   * maxTokens is vLLM's completions default, not the client's. It bounds only a model vLLM serves
   * (its context known, not marked `provider`); a provider's behind LiteLLM gets the bound of a
   * request without max_tokens (LiteLLM makes its text completion a chat call, without that default).
   */
  defaultMaxTokens?: boolean;
  /** Independent prompts (a batched `prompt`/`input`): each may be as long as the model allows. */
  prompts: number;
  /** Sequences generated (prompts × `n`; 0 for embeddings). */
  outputs: number;
  /** The prompt-cache lifetime the request asked for (cache-writes.ts): the hold's prompt part covers writing all of it. */
  cacheLifetime?: CacheLifetime;
}

export class Pricer {
  private readonly pricing: Pricing;
  private readonly models: ReadonlyMap<string, ModelConfig> | null;
  /** Each model's price record (price-record.ts), made once here: a request reads its id from a map. */
  private readonly prices: ReturnType<typeof priceRecords>;

  constructor(pricing: Pricing, models: ReadonlyMap<string, ModelConfig> | null) {
    this.pricing = pricing;
    this.models = models;
    this.prices = priceRecords(pricing);
  }

  /** The price `model`'s requests are charged at, which their ledger rows name (price_id). */
  price(model: string): PriceRecord {
    return this.prices.models.get(model) ?? this.prices.unpriced;
  }

  requestPrice(batch: boolean): number {
    return batch ? this.pricing.batchRequest : this.pricing.request;
  }

  /**
   * The most tokens one output may generate: the request's limit, within the model's context.
   * Without a limit, the smaller of the context and its maxOutputTokens (a provider's longest
   * answer); when neither is known, DEFAULT_MAX_COMPLETION_TOKENS (an answer past it is charged
   * the hold). maxOutputTokens does not lower a request's own limit: the shim does not send it
   * upstream, so one set below what the provider writes would cap the charge below the usage.
   */
  outputBound(input: Pick<HoldInput, "model" | "maxTokens" | "defaultMaxTokens">): number {
    const model = this.models?.get(input.model);
    const maxLen = model?.maxModelLen ?? null;
    const asked = this.outputLimit(input);
    if (asked !== undefined) return Math.min(asked, maxLen ?? Infinity);
    const ceiling = Math.min(maxLen ?? Infinity, model?.maxOutputTokens ?? Infinity);
    return ceiling === Infinity ? DEFAULT_MAX_COMPLETION_TOKENS : ceiling;
  }

  /**
   * The limit on each output that bounds it (the request's max_tokens, or vLLM's completions
   * default where that is held); undefined: none does, and the model's ceiling does (outputBound).
   */
  outputLimit(input: Pick<HoldInput, "model" | "maxTokens" | "defaultMaxTokens">): number | undefined {
    // The completions default bounds only where it is held (and sent): elsewhere there is no limit.
    return input.defaultMaxTokens && !heldAtDefaultMaxTokens(input.defaultMaxTokens, this.models?.get(input.model)) ? undefined : input.maxTokens;
  }

  /**
   * The most prompt tokens a request can be charged: the whole context per prompt where the
   * model's maxModelLen bounds it, else the text's bound plus a context's worth per unbounded
   * part. The hold reserves it; a prompt estimate (a client gone before any usage) is capped at
   * it, so a data URL's base64 is never charged as more prompt than vLLM accepts.
   */
  promptBound(input: HoldInput): number {
    const maxLen = this.models?.get(input.model)?.maxModelLen ?? null;
    // A known maxModelLen is a true ceiling per prompt (not for embeddings, which vLLM may embed
    // in pieces); without one, each unbounded part (an image, a request's own template) adds a
    // context's worth on top of the text (an image in a long prompt must not lower the hold below
    // the text's): the model's when known, else DEFAULT_MAX_COMPLETION_TOKENS.
    const context = maxLen === null || input.promptMayExceedContext ? Infinity : maxLen * input.prompts;
    const unbounded = input.unboundedParts > 0;
    if (context !== Infinity && unbounded) return context;
    // JSON printed again counts RENDERED_JSON_TOKENS_PER_BYTE per byte; normalization's growth
    // once (a grown byte is in a string, which templates print as is: one token at most); not for
    // embeddings with media on a model whose maxModelLen is known, each part holding a context.
    const rendered = (input.renderedJsonBytes ?? 0) * (RENDERED_JSON_TOKENS_PER_BYTE - 1);
    let textBound = input.bodyBytes + (input.repeatedTextBytes ?? 0) + rendered + (input.templated ? CHAT_TEMPLATE_TOKENS : 0);
    if (input.normalizationGrowth && (maxLen === null || (!unbounded && textBound < context))) textBound += input.normalizationGrowth();
    return context !== Infinity ? Math.min(textBound, context) : textBound + input.unboundedParts * (maxLen ?? DEFAULT_MAX_COMPLETION_TOKENS);
  }

  /** `promptBound`: this.promptBound(input), when the caller has it already. */
  hold(input: HoldInput, promptBound = this.promptBound(input)): number {
    const base = this.requestPrice(input.batch);
    const price = this.pricing.models.get(input.model);
    if (!price) return base;
    // A request is bounded per sequence, not as a whole: a batch of prompts may hold
    // maxModelLen tokens each, and every one of the `outputs` sequences may reach maxTokens.
    const completion = input.outputs * this.outputBound(input);
    // A prompt with cache_control may be written to a provider's cache whole, at up to twice its
    // price. Every prompt token is held at promptPer1k, a cached one too: which are read from a
    // cache is known only from the usage, and cachedPromptPer1k is never above it (config-file.ts).
    const prompt = tokenCost(promptBound, price.promptPer1k) + cacheWriteHold(promptBound, price.promptPer1k, input.cacheLifetime ?? null);
    // Bounded so that it stays an exact integer; a hold this large is refused (402) anyway.
    return Math.min(base + prompt + tokenCost(completion, price.completionPer1k), Number.MAX_SAFE_INTEGER);
  }

  /**
   * The charge for `usage`, capped at the hold; `capped` when the usage was worth more than the
   * hold. `cacheLifetime`: the one the request asked for, the rate of writes reported unsplit.
   * Cached prompt tokens are charged cachedPromptPer1k (at most promptPer1k, which the hold used).
   */
  cost(model: string, batch: boolean, usage: Usage, hold: number, cacheLifetime: CacheLifetime = null): { cost: number; capped: boolean } {
    const price = this.pricing.models.get(model);
    let total = this.requestPrice(batch);
    if (price) {
      total += promptCost(usage.promptTokens, usage.cachedTokens ?? 0, price) + tokenCost(usage.completionTokens, price.completionPer1k);
      total += cacheWriteSurcharge(usage.cacheWrites, usage.promptTokens, price.promptPer1k, cacheLifetime);
    }
    return total > hold ? { cost: hold, capped: true } : { cost: total, capped: false };
  }
}
