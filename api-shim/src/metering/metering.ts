import { eventData, replaceEventData } from "./sse.ts";
import { TokenEstimate, type Usage } from "../money/pricing.ts";
import { type Counts, readCounts, toUsage, type UsageJson } from "./usage-json.ts";
import { deliveredTokens } from "./token-count.ts";
import type { Meter, MeteredEvent, UsageEvent } from "./meter.ts";
import { errorBody, type ShimError } from "../errors.ts";
import { addCallNames, carriesNothing, EMPTY_TEXT, endsOutput, GENERATED, hasContent, heldBackToken, isObject } from "./generated-content.ts";
import { A_CHOICE, ERROR_MEMBER, FINISH, NAME_MEMBER, ROLE, TOKEN_IDS, USAGE_OBJECT } from "./chunk-members.ts";
import { eventWithoutData, isDone } from "./event-kind.ts";

/**
 * Reads a streamed completion as it passes through: the upstream's usage (final usage chunk,
 * else the last continuous usage seen), the number of chunks that carried generated content and
 * an estimate of the text they carried, and which events the client gets to see. The shim asks the upstream for usage whatever the
 * client asked; the extra usage chunk (and continuous usage fields the shim added) are hidden
 * from a client that did not ask for them.
 */
export interface MeterOptions {
  /** The client asked for the usage chunk (stream_options present and include_usage not false). */
  clientWantsUsage: boolean;
  /** The shim added continuous_usage_stats and the client did not ask for it. */
  hideContinuous: boolean;
  /** Outputs per prompt (`n`): continuous usage is per output, and outputs of one prompt share its prompt tokens. */
  outputsPerPrompt: number;
  /** Outputs in all (prompts × `n`): the answer is whole once each has finished. */
  outputs: number;
  /**
   * The answer starts with text the client sent (`echo`; default no): each output's first chunk
   * with content carries it back (vLLM's completions: the prompt and the first token), so that
   * chunk's text is not counted as generated.
   */
  echo?: boolean;
  /** The most completion tokens the outputs may generate (the hold's bound; default none): the text's estimate is never taken above it. */
  maxCompletion?: number;
  /**
   * The upstream was asked for usage on every chunk (`continuous_usage_stats`, by the shim or the
   * client; default true). Without it, usage on a chunk with a choice after a finish can only be
   * the whole request's (LiteLLM's last chunk), however many of the outputs' finishes came:
   * LiteLLM sends one finish for all of `n`.
   */
  runningUsage?: boolean;
}

interface ChunkJson {
  id?: unknown;
  object?: unknown;
  created?: unknown;
  model?: unknown;
  choices?: { index?: unknown; delta?: Record<string, unknown>; text?: unknown; finish_reason?: unknown; token_ids?: unknown }[];
  usage?: UsageJson | null;
  error?: unknown;
}

export class StreamMeter implements Meter {
  /** A whole answer ends with [DONE], as vLLM's and OpenAI's do. */
  readonly endLine = "data: [DONE]\n\n";
  /** Chat's failures come as error events (process: `error`), never as a final event. */
  readonly upstreamFailed = false;
  private readonly options: MeterOptions;
  /** The last usage-only chunk's counts (`choices: []`: vLLM sends it once the answer is whole, right before [DONE]). */
  finalUsage: Counts | null = null;
  /** The last data event was a usage-only chunk: the answer is whole. Content after one means it was not the answer's last word. */
  private usageLast = false;
  /** The latest usage on a chunk with choices, by choice index: vLLM's continuous usage is per output. */
  private readonly running = new Map<number, Usage>();
  /** Choices that carried generated content: each carries at least one token. */
  generated = 0;
  /**
   * The ids of the tokens generated that the choices carried (vLLM's `token_ids`, asked with
   * `return_token_ids`): an exact count, on chunks whose delta is empty too (vLLM still writes
   * one where a tool parser or harmony's header holds text back). Never the prompt's: those are
   * chat's first chunk's `prompt_token_ids`, a completion choice's, and an echoed chunk's (left out).
   */
  private tokenIds = 0;
  /** The tokens of the generated text seen (its string values), estimated: one chunk may carry many tokens. */
  private readonly text = new TokenEstimate();
  /** An event's `reasoning` and `reasoning_content`, apart: some vLLM releases write the same text in both, which counts once. */
  private readonly reasoning = new TokenEstimate();
  private readonly reasoningContent = new TokenEstimate();
  /** With `echo`, outputs whose first chunk with content (the text echoed) came: it is left out of the text's estimate. */
  private readonly echoed = new Set<number>();
  /** Tokens the echoed chunks carried: one each in vLLM's completions (the first token rides with the prompt), none in chat. */
  private echoTokens = 0;
  /** Outputs may still echo: chunks are parsed, to tell whose first chunk each is (only the first few of a stream). */
  private echoing: boolean;
  /** Outputs whose finish_reason came: each generates nothing more. */
  private readonly finished = new Set<number>();
  /** Usage that can only be the whole answer's came: with or after the last output's finish, on a chunk after its own output's finish, or after a finish when no running usage was asked. */
  private wholeUsage = false;
  /** Whether the client was shown a usage object: the usage-only chunk, or running usage left in. */
  private usageShown = false;
  /**
   * A chunk with a choice came: the upstream began its answer (vLLM sends its first once the prompt
   * is processed). Not any data: an empty object, or a choiceless chunk such as Azure's prompt
   * filter results, says nothing of the answer.
   */
  private began = false;
  /** The last parsed chunk's id, object, created and model: a usage chunk made here wears them. */
  private frame: Pick<ChunkJson, "id" | "object" | "created" | "model"> = {};

  constructor(options: MeterOptions) {
    this.options = options;
    this.echoing = options.echo === true && options.outputs > 0;
  }

  process(event: string): MeteredEvent {
    const data = eventData(event);
    if (data === null) return eventWithoutData(event);
    if (isDone(data)) return { kind: "done" };
    this.usageLast = false;
    // Fast path for the common chunk (no usage object, no error member): no JSON.parse, only
    // whether it carried generated content (chunk-members.ts: members found unparsed). Chunks
    // with several choices count once here (the text estimate counts each one's). A finish
    // (once per output) is parsed, for which output it ends, and with `echo` each chunk until
    // every output's echo came, for whose it is. So is a chunk with token ids (each
    // choice's are counted; vLLM 0.11 writes `"token_ids":null` on every chunk, left here) and
    // one with a `name` (a call's, the first chunk of each call: its name is generated text).
    // One regex per member: faster than one regex of the alternatives (~40 ns each here).
    if (!this.echoing && !USAGE_OBJECT.test(data) && !ERROR_MEMBER.test(data) && !FINISH.test(data) && !NAME_MEMBER.test(data) && !TOKEN_IDS.test(data)) {
      if (!this.began) this.began = A_CHOICE.test(data);
      // A chunk whose text is empty is a token vLLM held back (heldBackToken), unless it is the
      // role chunk; tested only where no content came, so the common chunk pays nothing for it.
      if (this.readGenerated(data) || (EMPTY_TEXT.test(data) && !ROLE.test(data))) this.generated++;
      return { kind: "chunk", forward: event };
    }
    let chunk: ChunkJson;
    try {
      chunk = JSON.parse(data) as ChunkJson;
    } catch {
      return { kind: "chunk", forward: event };
    }
    if (chunk === null || typeof chunk !== "object") return { kind: "chunk", forward: event };
    // An error event: OpenAI's and vLLM's error object, or TGI's message string (`error_type` beside it).
    if (chunk.error !== null && (typeof chunk.error === "object" || typeof chunk.error === "string")) return { kind: "error", data };
    this.frame = { id: chunk.id, object: chunk.object, created: chunk.created, model: chunk.model };
    // A usage chunk is one by its shape, whether or not its figures can be read: shown only to a
    // client that asked (a usage-only chunk, `choices: []`, breaks `chunk.choices[0].delta`).
    const hasUsage = chunk.usage !== null && typeof chunk.usage === "object";
    const choices = Array.isArray(chunk.choices) ? chunk.choices : [];
    if (hasUsage && choices.length === 0) {
      this.finalUsage = readCounts(chunk.usage as UsageJson); // the last one wins
      this.usageLast = true;
      this.usageShown ||= this.options.clientWantsUsage;
      return { kind: "usage", forward: this.options.clientWantsUsage ? event : null, data };
    }
    if (choices.length > 0) this.began = true;
    // A chunk for an output that already finished: vLLM sends none (its running usage rides on
    // each output's chunks up to its finish), so usage on it is LiteLLM's last chunk, the whole
    // request's, though LiteLLM sent one finish for all of `n` and running usage was asked.
    const afterItsFinish = choices.length > 0 && this.finished.has(indexOf(choices[0]));
    const echoed = this.echoing ? this.readEchoed(choices) : (this.readGenerated(data), []);
    for (const c of choices) {
      const echo = echoed.includes(c);
      // A chat delta echoed is the last message alone: no token. An echoed chunk's ids are not
      // counted: vLLM writes the output's there, but the prompt's ids with it would be the
      // prompt's; `counted` takes the one token it is known to carry (echoTokens).
      if ((hasContent(c) && !(echo && isObject(c.delta))) || heldBackToken(c)) this.generated++;
      if (!echo && Array.isArray(c.token_ids)) this.tokenIds += c.token_ids.length;
      if (!echo) addCallNames(this.text, c);
      if (endsOutput(c)) this.finished.add(indexOf(c));
    }
    // Ollama, asked for usage, puts a zeroed usage on every /v1/completions chunk, its finish chunk
    // included (its real usage follows, choiceless): such a usage says nothing (vLLM's running
    // usage has the prompt's tokens from the first chunk on), and taken as figures it made a
    // client that left early pay no prompt. Zeros count only after the output's finish, on its
    // own chunk: LiteLLM's usage chunk for a provider that reported none.
    const read = toUsage(chunk.usage);
    const usage = read && (read.promptTokens > 0 || read.completionTokens > 0 || afterItsFinish) ? read : null;
    // Without running usage asked, usage on a chunk is the whole request's once an output has
    // finished (LiteLLM's last chunk); before any finish it is not (Ollama's zeroed usage).
    const whole = afterItsFinish || this.finished.size >= this.options.outputs || (this.options.runningUsage === false && this.finished.size > 0);
    if (usage && whole) this.wholeUsage = true;
    if (usage) this.running.set(indexOf(choices[0]), usage);
    if (hasUsage) {
      // Usage on a chunk that also has choices: vLLM's continuous stats (per output), or
      // LiteLLM's final usage chunk (whole-request usage that keeps a choice, unlike OpenAI's).
      // The latest per output is what to charge if no usage-only chunk follows. A client that
      // did not ask for usage does not see it.
      if (this.options.hideContinuous || !this.options.clientWantsUsage) {
        return { kind: "chunk", forward: replaceEventData(event, withoutUsage(data, chunk)) };
      }
      this.usageShown = true;
      // The whole request's usage on a chunk with nothing generated (LiteLLM's finish chunk, or its
      // own after it): held as a usage-only chunk is, to carry the credit figures if it is the last.
      if (usage && whole && choices.every(carriesNothing)) return { kind: "usage", forward: event, data };
    }
    return { kind: "chunk", forward: event };
  }

  /**
   * Whether `data` carries generated content (a member of generated text that is not empty, a
   * tool or function call, audio), and adds its generated text to the estimate: each string value
   * found is read to its closing quote without parsing the event. Inside JSON strings quotes are
   * escaped, so GENERATED matches members only. `reasoning` and `reasoning_content` are counted
   * apart and the larger added: vLLM from PR #27752 until #33402 writes every reasoning delta in
   * both. Per event, not per stream: in one event they are the same text, in two they are not.
   */
  private readGenerated(data: string): boolean {
    let content = false;
    let reasoning = false;
    GENERATED.lastIndex = 0;
    while (GENERATED.test(data)) {
      const at = GENERATED.lastIndex;
      if (data.charCodeAt(at - 1) !== 0x22) {
        content = true; // a call's or audio's object
        continue;
      }
      // The member's name ends at the quote before its value's (only ':' and spaces between).
      // Read back from there rather than captured: exec's match array cost more per event.
      let q = at - 2;
      while (data.charCodeAt(q) !== 0x22) q--;
      if (data.charCodeAt(at) !== 0x22) content = true; // a string, not empty
      let into = this.text;
      if (data.startsWith('"reasoning"', q - 10)) into = this.reasoning;
      else if (data.startsWith('"reasoning_content"', q - 18)) into = this.reasoningContent;
      if (into !== this.text) reasoning = true;
      GENERATED.lastIndex = into.addString(data, at);
    }
    if (reasoning) this.text.addLarger(this.reasoning, this.reasoningContent);
    return content;
  }

  /**
   * With `echo`, a parsed chunk's choices: an output's first with content is the text echoed
   * (with, in vLLM's completions, the first token: `counted` adds one for it; a chat delta is the
   * last message alone), left out of the estimate; the others' text is counted as `readGenerated`
   * counts it. Returns the echoed choices.
   */
  private readEchoed(choices: NonNullable<ChunkJson["choices"]>): unknown[] {
    const echoed: unknown[] = [];
    for (const c of choices) {
      const index = indexOf(c);
      if (this.echoed.has(index) || !hasContent(c)) {
        this.readGenerated(JSON.stringify(c));
        continue;
      }
      this.echoed.add(index);
      echoed.push(c);
      if (!isObject(c.delta)) this.echoTokens++;
    }
    if (this.echoed.size >= this.options.outputs) this.echoing = false;
    return echoed;
  }

  /**
   * Completion tokens where the upstream reported none: the chunks that carried content (each at
   * least one token), or the estimate of their text, or the token ids delivered, when more (vLLM
   * merges a lagging consumer's tokens into one chunk), within the most the outputs may generate
   * (the estimate may be more than the tokens). With `echo`, each output's echoed chunk counts the
   * token it carried (one in completions, where vLLM's first token rides with the prompt; none in
   * chat), not its text.
   */
  private get counted(): number {
    const estimate = Math.max(this.text.tokens, this.tokenIds) + this.echoTokens;
    return deliveredTokens(this.generated, estimate, this.options.maxCompletion ?? Infinity);
  }

  /** The fewest completion tokens the client is known to have received: the chunks with content, or the ids delivered (within the bound) when more. */
  private get delivered(): number {
    return deliveredTokens(this.generated, this.tokenIds, this.options.maxCompletion ?? Infinity);
  }

  /** A failure told inside a chat or completions stream: an event holding the error body. */
  errorEvent(failure: ShimError): string {
    return `data: ${errorBody(failure)}`;
  }

  /**
   * The usage-only chunk a client that asked for usage was not shown, for a stream that is whole
   * without it: its running usage was hidden from the client (it asked for the final figure
   * only), then the upstream's usage-only chunk and [DONE] were lost. Made as vLLM makes its own
   * (`choices: []`, the stream's id, object, created and model) from the upstream's running
   * figures, never from an estimate; null when there is nothing to add.
   */
  missingUsageChunk(): UsageEvent | null {
    if (!this.options.clientWantsUsage || this.usageShown || this.running.size === 0 || !this.complete) return null;
    const u = this.usage();
    const usage = { prompt_tokens: u.promptTokens, completion_tokens: u.completionTokens, total_tokens: u.promptTokens + u.completionTokens };
    const data = JSON.stringify({ ...this.frame, choices: [], usage });
    return { kind: "usage", forward: `data: ${data}`, data };
  }

  /** Whether the upstream reported any usage (a usage-only chunk, or running usage on a chunk). */
  get sawUsage(): boolean {
    return this.finalUsage !== null || this.running.size > 0;
  }

  /** Whether the upstream reported its prompt's tokens: else `usage()` charges the estimate. */
  get promptReported(): boolean {
    return this.finalUsage ? this.finalUsage.promptTokens !== null : this.running.size > 0;
  }

  /**
   * Whether the answer is whole, though its `data: [DONE]` may not have come (the upstream's body
   * ended or broke just before it): the usage-only chunk arrived with nothing after it (vLLM), or
   * usage that can only be the whole answer's came on a chunk (wholeUsage: LiteLLM's usage chunk
   * keeps a choice, with its finish or after it; vLLM's running usage on the last output's finish
   * chunk). `usage()` is then what the whole answer cost.
   */
  get complete(): boolean {
    return this.usageLast || this.wholeUsage;
  }

  /**
   * Whether a chunk with a choice came: vLLM writes its first (the role) once the prompt is
   * processed, then maybe nothing for long (hidden reasoning, a tool parser holding tokens back).
   * A client that leaves after it owes its prompt.
   */
  get answerBegan(): boolean {
    return this.began;
  }

  /** How many outputs (prompts × `n`) sent their finish_reason: none, some, or all. */
  get outputsFinished(): "none" | "some" | "all" {
    return this.finished.size === 0 ? "none" : this.options.outputs > 0 && this.finished.size >= this.options.outputs ? "all" : "some";
  }

  /** Whether anything was generated (not whether usage came: vLLM's first running usage has the prompt alone). */
  get contentSeen(): boolean {
    if (this.generated > 0 || this.tokenIds > 0 || this.finalUsage !== null) return true;
    for (const u of this.running.values()) if (u.completionTokens > 0) return true;
    return false;
  }

  /**
   * What to charge for: the upstream's last usage-only chunk, each count on its own (a prompt it
   * does not report is estimated as below, a completion count the content chunks seen). When it
   * ended the answer its figures are the answer's; when content came after it (it came early),
   * they are, like running usage, never taken below `delivered`, and its prompt is
   * charged only when `promptOwed`. Else (stream cut short) the running usage: each output's
   * latest completion tokens summed, each prompt's tokens once (outputs i and j share a prompt
   * when ⌊i/n⌋ = ⌊j/n⌋); else `counted`, the content-bearing chunks, the estimate of their
   * text or the token ids delivered, whichever is more, as completion tokens. A running count is
   * never taken below `delivered` (the content chunks seen, the ids). The prompt is charged only when `promptOwed` (stream.ts decides):
   * from the running usage (LiteLLM's whole-request usage on its last chunk is running usage
   * here too), else `promptEstimate()` once the answer began.
   */
  usage(promptOwed = true, promptEstimate: () => number = () => 0): Usage {
    const f = this.finalUsage;
    if (f) {
      // vLLM's usage-only chunk comes once the answer is whole, right before [DONE]: its figures
      // are what the answer cost. One that content followed was not the answer's last word.
      const whole = this.usageLast;
      const prompt = promptOwed || whole ? (f.promptTokens ?? promptEstimate()) : 0;
      const completion = f.completionTokens === null ? this.counted : whole ? f.completionTokens : Math.max(f.completionTokens, this.delivered);
      // Cached tokens count where the upstream's prompt count is charged, not an estimate of it.
      return withCache({ promptTokens: prompt, completionTokens: completion }, f.cacheWrites, f.promptTokens === null ? 0 : f.cachedTokens);
    }
    if (this.running.size === 0) return { promptTokens: promptOwed && this.began ? promptEstimate() : 0, completionTokens: this.counted };
    const prompts = new Map<number, Usage>();
    let completion = 0;
    let cacheWrites: Usage["cacheWrites"];
    for (const [index, u] of this.running) {
      completion += u.completionTokens;
      const group = Math.floor(index / this.options.outputsPerPrompt);
      // A prompt's largest count, and the cached tokens reported with it.
      const seen = prompts.get(group);
      if (!seen || u.promptTokens > seen.promptTokens) prompts.set(group, u);
      // Only a provider's (LiteLLM's whole-request usage, one output) reports them.
      cacheWrites ??= u.cacheWrites;
    }
    let prompt = 0;
    let cached = 0;
    if (promptOwed) {
      for (const p of prompts.values()) {
        prompt += p.promptTokens;
        cached += Math.min(p.cachedTokens ?? 0, p.promptTokens);
      }
    }
    return withCache({ promptTokens: prompt, completionTokens: Math.max(completion, this.delivered) }, cacheWrites, cached);
  }
}

/** `usage` with the cache writes and reads reported, when its prompt is charged (Pricer.cost counts no more of either than its prompt tokens). */
function withCache(usage: Usage, cacheWrites: Usage["cacheWrites"], cachedTokens = 0): Usage {
  if (cacheWrites && usage.promptTokens > 0) usage.cacheWrites = cacheWrites;
  if (cachedTokens > 0 && usage.promptTokens > 0) usage.cachedTokens = cachedTokens;
  return usage;
}

const indexOf = (choice: { index?: unknown } | undefined): number => (typeof choice?.index === "number" ? choice.index : 0);

/** Removes the `usage` member we asked for, without reformatting the rest when it is last. */
function withoutUsage(data: string, chunk: ChunkJson): string {
  const keys = Object.keys(chunk);
  const at = data.lastIndexOf(',"usage":');
  if (keys[keys.length - 1] === "usage" && at > 0 && data.endsWith("}")) return `${data.slice(0, at)}}`;
  const { usage: _drop, ...rest } = chunk;
  return JSON.stringify(rest);
}
