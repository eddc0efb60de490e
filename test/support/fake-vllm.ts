import { randomUUID } from "node:crypto";
import { EventEmitter, once } from "node:events";
import { METRICS_CONTENT_TYPE, vllmMetrics } from "./fake-vllm-metrics.ts";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { urlHost } from "../../scripts/lib/url-host.ts";
import { cacheSaltRefusal, PrefixCache, promptWords } from "./fake-prefix-cache.ts";
import { type ForcedCall, forcedCall, forcedJson, forcedResponsesCall, forcedResponsesJson } from "./fake-tool-calls.ts";

/**
 * A test upstream that speaks vLLM's OpenAI dialect (v0.33.0, the stack's default image, and 0.31.0
 * before it; nested errors; vLLM 0.10–0.11's dead-engine 400 on request) byte for byte where
 * it matters to clients and to metering: compact JSON in pydantic field order, SSE events
 * `data: <json>\n\n` ending with `data: [DONE]`, a usage chunk only when `stream_options` asks
 * for it, continuous usage on request, vLLM's error bodies and its in-stream error event,
 * completions' echo, the completions parameters vLLM refuses, beam search's one-event
 * "stream", base64 embeddings, and the Responses API (`/v1/responses`: its response object, its
 * `event: <type>` stream ending with `response.completed`, no [DONE]; no stored responses), and a
 * forced tool call (`tool_choice` "required" or a named function: fake-tool-calls.ts) and the JSON a
 * chat `response_format` forces (json_schema, json_object: the same file), on /v1/responses too (a
 * function_call item; `text.format` json_schema), and its prefix cache with `cache_salt` and that
 * member's validation (fake-prefix-cache.ts).
 * Behaviour is switchable at run time (delay, per-token delay, failure, mid-stream stop, hang),
 * and it counts requests received, completed and aborted by the client.
 */

export interface Behaviour {
  /** ms before the response headers are sent. */
  headerDelayMs: number;
  /** ms between generated tokens (streamed and non-streamed). */
  tokenDelayMs: number;
  /** Tokens generated when the request has no max_tokens (vLLM would use the context; we keep it small). */
  defaultTokens: number;
  /** Answer every inference request with this status and vLLM's error body for it. */
  failStatus: number | null;
  /**
   * Stop a stream after this many content tokens: "cut" drops the connection, "error" sends
   * vLLM's error event (code 500); "error400" one the request caused (a JSON schema its grammar
   * backend cannot compile, found as the engine takes the request, code 400); "engineDead" a dead
   * engine's (EngineDeadError: code 500, InternalServerError); "engineDead400" the same as vLLM
   * 0.10-0.11 sent it, code 400 (BadRequestError, as they sent any exception). At 0 tokens an
   * error event comes before the role chunk, as vLLM's first step raises before it sends one; a
   * cut comes after it.
   */
  stopAfterTokens: number | null;
  stopMode: "cut" | "error" | "error400" | "engineDead" | "engineDead400";
  /** Send `failStatus`'s error body with HTTP 200, as vLLM 0.15.1 and 0.16.0 did. */
  failWith200: boolean;
  /** Never answer (headers are not sent); the client has to give up. */
  hang: boolean;
  /** Append `@<process.hrtime.bigint()>` to each streamed token (the benchmark's per-chunk clock). */
  stampTokens: boolean;
  /** Prompt tokens the chat template adds to every chat request (role markers, a system prompt). */
  templateTokens: number;
  /** Length of each embedding vector (real models: 384 to 4,096; large batches make large bodies). */
  embeddingDims: number;
  /** Stream no usage whatever `stream_options` asks (a provider behind LiteLLM that sends none). */
  ignoreIncludeUsage: boolean;
  /**
   * Prompt tokens served from the prefix cache, reported in `prompt_tokens_details.cached_tokens`
   * of chat's and completions' final usage (vLLM started with --enable-prompt-tokens-details);
   * null: `prompt_tokens_details` null or absent, as vLLM without that flag. `/v1/responses`
   * reports them in `input_tokens_details.cached_tokens` either way (0 for null), as vLLM does.
   */
  cachedTokens: number | null;
  /**
   * vLLM started with --enable-auto-tool-choice and a --tool-call-parser, as the kit starts it for
   * a model whose parser it knows: chat's tool_choice "auto" (and tools without tool_choice, which
   * vLLM reads as "auto") is answered, here with text, a model's choice. false: vLLM without them,
   * which refuses those with a 400 (chat_completion/serving.py); its Responses API refuses nothing.
   */
  autoToolChoice: boolean;
  /**
   * vLLM's prefix cache (fake-prefix-cache.ts): chat's, completions' and Responses' cached tokens are
   * the prompt's leading 16-token blocks an earlier request with the same `cache_salt` computed
   * (reported as vLLM with --enable-prompt-tokens-details reports them), in place of `cachedTokens`.
   */
  prefixCache: boolean;
  /**
   * vLLM's --max-num-seqs: the requests it holds past this many are reported waiting on /metrics,
   * the rest running (256, vLLM's default on most GPUs).
   */
  maxNumSeqs: number;
}

const DEFAULTS: Behaviour = {
  headerDelayMs: 0, tokenDelayMs: 0, defaultTokens: 8, failStatus: null, stopAfterTokens: null, stopMode: "cut", failWith200: false, hang: false, stampTokens: false, templateTokens: 3, embeddingDims: 4, ignoreIncludeUsage: false, cachedTokens: null, autoToolChoice: true, prefixCache: false, maxNumSeqs: 256,
};

export interface FakeModel {
  name: string;
  root?: string;
  maxModelLen?: number;
}

export interface FakeVllmOptions {
  models?: FakeModel[];
  /** When set, /v1/* requires `Authorization: Bearer <apiKey>` (vLLM's --api-key). */
  apiKey?: string;
  port?: number;
  host?: string;
}

export interface SeenRequest {
  method: string;
  path: string;
  headers: IncomingMessage["headers"];
  body: string;
}

export interface Counters {
  received: number;
  completed: number;
  aborted: number;
  /** Content tokens written to streams. */
  tokensSent: number;
  /** Connections the client closed (an idle keep-alive one before this server's timeout could, or an abort). */
  closedByClient: number;
}

export class FakeVllm extends EventEmitter {
  readonly models: FakeModel[];
  readonly apiKey: string | undefined;
  behaviour: Behaviour = { ...DEFAULTS };
  readonly counters: Counters = { received: 0, completed: 0, aborted: 0, tokensSent: 0, closedByClient: 0 };
  /** Inference requests as received (bounded to the last 1,000). */
  readonly requests: SeenRequest[] = [];
  /** Usage reported for each completed inference request, in order. */
  readonly usages: { prompt_tokens: number; completion_tokens: number; total_tokens: number }[] = [];
  private server: Server | undefined;
  private readonly open = new Set<ServerResponse>();
  /** Responses this fake cut on purpose: their close is not a client abort. */
  private readonly cut = new WeakSet<ServerResponse>();
  /** The prefix cache's blocks (behaviour.prefixCache), kept across requests until clear(). */
  readonly prefixCache = new PrefixCache();
  /** The cached tokens the prefix cache found for a request being answered. */
  private readonly cachedFor = new WeakMap<ServerResponse, number>();
  url = "";
  /** The headers of the last request for /metrics (what a proxy in front passed on). */
  metricsHeaders: IncomingMessage["headers"] | undefined;

  constructor(options: FakeVllmOptions = {}) {
    super();
    this.models = options.models ?? [{ name: "qwen2.5-7b", root: "Qwen/Qwen2.5-7B-Instruct", maxModelLen: 8192 }];
    this.apiKey = options.apiKey;
  }

  set(b: Partial<Behaviour>): void {
    this.behaviour = { ...this.behaviour, ...b };
  }

  reset(): void {
    this.behaviour = { ...DEFAULTS };
  }

  async start(port = 0, host = "127.0.0.1"): Promise<this> {
    // A request that fails (a client gone while its body was still arriving) loses its own
    // connection, not the server: vLLM's uvicorn keeps serving.
    this.server = createServer((req, res) => void this.handle(req, res).catch(() => res.destroy()));
    // vLLM's uvicorn closes a keep-alive connection after 5 s idle (TIMEOUT_KEEP_ALIVE = 5), as
    // uvicorn does by default (LiteLLM).
    this.server.keepAliveTimeout = 5_000;
    this.server.on("connection", (socket) => socket.on("end", () => this.bump("closedByClient")));
    this.server.listen(port, host);
    await once(this.server, "listening");
    const addr = this.server.address() as AddressInfo;
    this.url = `http://${urlHost(host)}:${addr.port}/v1`;
    return this;
  }

  async close(): Promise<void> {
    for (const res of this.open) res.destroy();
    this.server?.closeAllConnections();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }

  /** Resolves when `predicate` holds, checked after every counter change. */
  async until(predicate: (c: Counters) => boolean, timeoutMs = 10_000): Promise<void> {
    if (predicate(this.counters)) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { this.off("change", check); reject(new Error(`fake-vllm: condition not met in ${timeoutMs} ms; counters ${JSON.stringify(this.counters)}`)); }, timeoutMs);
      const check = () => {
        if (!predicate(this.counters)) return;
        clearTimeout(timer);
        this.off("change", check);
        resolve();
      };
      this.on("change", check);
    });
  }

  private bump(counter: keyof Counters): void {
    this.counters[counter]++;
    this.emit("change", this.counters);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    res.setHeader("server", "uvicorn");
    // uvicorn sends no `Keep-Alive: timeout=5` hint (Node would, and undici would then close the
    // connection early on its own): a client learns of the 5 s limit only when the socket closes.
    // Setting the connection header ourselves keeps Node from adding the hint.
    if (req.headers.connection?.toLowerCase() !== "close") res.setHeader("connection", "keep-alive");
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks).toString("utf8");
    const path = (req.url ?? "/").split("?")[0]!;

    if (path === "/health") return void res.writeHead(200, { "content-length": "0" }).end();
    if (path === "/version") return json(res, 200, { version: "0.33.0" });
    // vLLM's own metrics, which its --api-key does not guard (fake-vllm-metrics.ts).
    if (req.method === "GET" && path === "/metrics") {
      this.metricsHeaders = req.headers;
      const held = this.open.size;
      const running = Math.min(held, this.behaviour.maxNumSeqs);
      return void res.writeHead(200, { "content-type": METRICS_CONTENT_TYPE })
        .end(vllmMetrics({ modelName: this.models[0]!.name, running, waiting: held - running }));
    }
    // Not vLLM: lets a process that runs this fake elsewhere (the benchmark) switch its behaviour.
    if (path === "/_fake/behaviour" && req.method === "POST") {
      let behaviour: unknown;
      try {
        behaviour = JSON.parse(body || "{}");
      } catch (e) {
        return json(res, 400, { detail: `the body is not JSON: ${(e as Error).message}` });
      }
      if (typeof behaviour !== "object" || behaviour === null || Array.isArray(behaviour)) return json(res, 400, { detail: "the body must be a JSON object of Behaviour fields" });
      this.set(behaviour as Partial<Behaviour>);
      return json(res, 200, this.behaviour);
    }
    if (this.apiKey !== undefined && path.startsWith("/v1") && req.headers.authorization !== `Bearer ${this.apiKey}`) {
      return json(res, 401, { error: "Unauthorized" });
    }
    if (req.method === "GET" && path === "/v1/models") return json(res, 200, this.modelList());
    const route = ({ "/v1/chat/completions": "chat", "/v1/completions": "completions", "/v1/embeddings": "embeddings", "/v1/responses": "responses" } as const)[path];
    if (req.method !== "POST" || !route) return json(res, 404, { detail: "Not Found" });

    this.requests.push({ method: req.method, path, headers: req.headers, body });
    if (this.requests.length > 1000) this.requests.shift();
    this.bump("received");
    this.open.add(res);
    res.on("close", () => {
      this.open.delete(res);
      if (!res.writableFinished && !this.cut.has(res)) this.bump("aborted");
    });

    const b = this.behaviour;
    if (b.hang) return;
    if (b.headerDelayMs > 0) await sleep(b.headerDelayMs);
    if (res.destroyed) return;
    if (b.failStatus !== null && b.failWith200) return vllmError(res, b.failStatus, failMessage(b.failStatus), undefined, 200);
    if (b.failStatus !== null) return b.failStatus === 500 ? void res.writeHead(500, { "content-length": "0" }).end() : vllmError(res, b.failStatus, failMessage(b.failStatus));
    if ((req.headers["content-type"] ?? "").split(";")[0] !== "application/json") {
      return vllmError(res, 415, "Unsupported Media Type: Only 'application/json' is allowed", "Unsupported Media Type");
    }
    let request: Record<string, unknown>;
    try {
      const parsed: unknown = JSON.parse(body);
      if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("Input should be a valid dictionary");
      request = parsed as Record<string, unknown>;
    } catch (e) {
      return vllmError(res, 400, `1 validation error: ${(e as Error).message}`);
    }
    // Pydantic's validators run as the body is read, before the model is looked up.
    const saltRefused = cacheSaltRefusal(request.cache_salt);
    if (saltRefused !== undefined) return vllmError(res, 400, saltRefused, undefined, undefined, "cache_salt");
    if (b.prefixCache && route !== "embeddings") {
      const prompt = route === "chat" ? request.messages : route === "completions" ? request.prompt : [request.instructions, request.input];
      this.cachedFor.set(res, this.prefixCache.lookup(typeof request.cache_salt === "string" ? request.cache_salt : null, promptWords(prompt)));
    }
    const model = this.resolveModel(request.model);
    if (!model) return vllmError(res, 404, `The model \`${String(request.model)}\` does not exist.`, "NotFoundError");
    if (request.stream_options && !request.stream) return vllmError(res, 400, "Stream options can only be defined when `stream=True`.");
    if (route === "embeddings") return this.embeddings(res, request, model);
    if (route === "responses") return this.responses(res, request, model);
    if (route === "chat" && !Array.isArray(request.messages)) return vllmError(res, 400, "1 validation error: messages Field required");
    if (route === "completions" && request.prompt === undefined) return vllmError(res, 400, "1 validation error: prompt Field required");
    if (route === "chat" && !this.behaviour.autoToolChoice && autoToolChoice(request)) {
      return vllmError(res, 400, '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set');
    }
    const refused = route === "completions" ? completionsRefusal(request) : undefined;
    if (refused !== undefined) return vllmError(res, 400, refused);
    // As vLLM counts them: a batched prompt (list of strings or of token lists) is one prompt
    // each, prompt tokens summed; every prompt gets `n` outputs, completion tokens summed.
    const prompts: unknown[] = route === "completions" && Array.isArray(request.prompt) && request.prompt.length > 0 && typeof request.prompt[0] !== "number" ? request.prompt : [route === "chat" ? request.messages : request.prompt];
    const prompt = route === "chat" ? chatPromptTokens(request, this.behaviour.templateTokens) : promptTokens(request.prompt);
    const n = typeof request.n === "number" ? request.n : 1;
    const outputs = prompts.length * n;
    // vLLM's reading: chat takes `max_completion_tokens` unless it is None, then `max_tokens`
    // (0.11 took `max_completion_tokens or max_tokens`: a 0 fell through); completions reads only
    // `max_tokens`, 16 when absent.
    const max = (route === "chat" ? request.max_completion_tokens ?? request.max_tokens : request.max_tokens === undefined ? 16 : request.max_tokens) as number | null | undefined;
    // Chat's sampling parameters refuse what that reading leaves below 1 (completions' are above).
    // vLLM's VLLMValidationError names the member in `param` (seen: `"param":"max_tokens"`).
    if (route === "chat" && typeof max === "number" && max < 1) return vllmError(res, 400, `max_tokens must be at least 1, got ${max}.`, undefined, undefined, "max_tokens");
    // Completions' `echo` puts each output's prompt text before its generated text. With
    // max_tokens 0 (echo_without_generation) vLLM generates one token anyway (max_tokens = 1),
    // answers the prompt alone, and counts that token.
    const echo = route === "completions" && pydanticBool(request.echo);
    const echoOnly = echo && request.max_tokens === 0;
    const echoed = (index: number) => (echo ? promptText(prompts[Math.floor(index / n)]) : "");
    const sampled = echoOnly ? 1 : max;
    // A forced tool call generates its arguments' JSON, one token a piece, whole unless max_tokens cuts it.
    const call = route === "chat" ? forcedCall(request) : undefined;
    const tool = call && { call, pieces: jsonPieces(call.arguments) };
    // A response_format's JSON (structured output) is generated the same way, as the answer's content.
    const structured = route === "chat" && !tool ? forcedJson(request) : undefined;
    const forced = tool?.pieces ?? (structured && jsonPieces(structured));
    const tokens = forced ? Math.min(typeof sampled === "number" ? sampled : Infinity, forced.length) : Math.max(0, Math.min(typeof sampled === "number" ? sampled : b.defaultTokens, b.defaultTokens));
    // Continuous usage is per output, as vLLM's: the prompt of the output's own prompt (the whole
    // conversation for chat), the output's own completion tokens so far.
    const promptOf = (index: number) => (route === "chat" ? prompt : promptTokens(prompts[Math.floor(index / n)]));
    // "length" when max_tokens cut the answer, streamed or not (as vLLM says); a call forced by
    // "required" ends with "tool_calls", a named one with "stop" (vLLM since PR #25054, as OpenAI).
    const finish: Finish = typeof sampled === "number" && tokens >= sampled ? "length" : call && !call.named ? "tool_calls" : "stop";
    // vLLM does not stream beam search: a streamed request gets the whole response as one event, usage included, then [DONE].
    const oneEvent = request.stream === true && route === "completions" && pydanticBool(request.use_beam_search);
    if (request.stream === true && !oneEvent) return this.stream(res, route, request, model, prompt, tokens, finish, outputs, promptOf, echoed, echoOnly, tool, structured && forced);
    for (let i = 0; i < tokens && b.tokenDelayMs > 0; i++) await sleep(b.tokenDelayMs);
    if (res.destroyed) return;
    const usage = this.usage(prompt, tokens * outputs);
    this.usages.push(usage);
    const text = structured ? forced!.slice(0, tokens).join("") : words(tokens);
    const id = `${route === "chat" ? "chatcmpl" : "cmpl"}-${hex()}`;
    const created = Math.floor(Date.now() / 1000);
    const indexes = Array.from({ length: outputs }, (_, i) => i);
    if (route === "chat") {
      json(res, 200, {
        id, object: "chat.completion", created, model,
        // vLLM's forced call: content "", the call with its own id in each output.
        choices: indexes.map((index) => ({ index, message: { role: "assistant", content: tool ? "" : text, refusal: null, annotations: null, audio: null, function_call: null, tool_calls: tool ? [{ id: `chatcmpl-tool-${hex()}`, type: "function", function: { name: tool.call.name, arguments: tool.pieces.slice(0, tokens).join("") } }] : [], reasoning_content: null }, logprobs: null, finish_reason: finish, stop_reason: null })),
        service_tier: null, system_fingerprint: null, usage: { ...usage, prompt_tokens_details: this.promptDetails(prompt, res) }, prompt_logprobs: null, kv_transfer_params: null,
      });
    } else {
      const answer = {
        id, object: "text_completion", created, model,
        choices: indexes.map((index) => ({ index, text: echoed(index) + (echoOnly ? "" : text), logprobs: null, finish_reason: finish, stop_reason: null, prompt_logprobs: null })),
        service_tier: null, system_fingerprint: null, usage: { ...usage, prompt_tokens_details: this.promptDetails(prompt, res) }, kv_transfer_params: null,
      };
      if (oneEvent) res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "transfer-encoding": "chunked" }).end(`data: ${JSON.stringify(answer)}\n\ndata: [DONE]\n\n`);
      else json(res, 200, answer);
    }
    this.bump("completed");
  }

  private async stream(res: ServerResponse, route: "chat" | "completions", request: Record<string, unknown>, model: string, prompt: number, tokens: number, finish: Finish, outputs: number, promptOf: (index: number) => number, echoed: (index: number) => string, echoOnly: boolean, tool?: { call: ForcedCall; pieces: string[] }, jsonContent?: string[]): Promise<void> {
    const b = this.behaviour;
    const opts = (request.stream_options ?? null) as { include_usage?: boolean | null; continuous_usage_stats?: boolean } | null;
    // StreamOptions.include_usage: Optional[bool] = True, tested for truth: absent is yes, null is no.
    const includeUsage = !b.ignoreIncludeUsage && opts !== null && (opts.include_usage === undefined || opts.include_usage === true);
    const continuous = includeUsage && opts?.continuous_usage_stats === true;
    const id = `${route === "chat" ? "chatcmpl" : "cmpl"}-${hex()}`;
    const created = Math.floor(Date.now() / 1000);
    res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "transfer-encoding": "chunked" });
    const send = (o: unknown) => res.write(`data: ${JSON.stringify(o)}\n\n`);
    const live = (index: number, k: number) => (continuous ? { usage: route === "chat" ? this.usage(promptOf(index), k) : { ...this.usage(promptOf(index), k), prompt_tokens_details: null } } : {});
    // Chat chunks are written with exclude_unset: a member vLLM passes explicitly is there, null or
    // not (token_ids, the role chunk's prompt_token_ids: return_token_ids is off); completions
    // chunks with every member.
    const chunk = (choice: Record<string, unknown>, k: number, top: Record<string, unknown> = {}) =>
      route === "chat"
        ? { id, object: "chat.completion.chunk", created, model, choices: [choice], ...live(choice.index as number, k), ...top }
        : { id, object: "text_completion", created, model, choices: [{ ...choice, prompt_token_ids: null, token_ids: null }], usage: null, ...live(choice.index as number, k) };
    // vLLM's first step sends one role chunk per output (for i in range(num_choices)).
    const failsFirstStep = b.stopAfterTokens === 0 && b.stopMode !== "cut";
    // A forced call streams as vLLM's: the first delta with the call's id, type, index and name and
    // the first piece of its arguments, then one piece each (exclude_unset: no content member).
    const callIds = Array.from({ length: outputs }, () => `chatcmpl-tool-${hex()}`);
    const callDelta = (index: number, k: number, call: ForcedCall, piece: string) =>
      ({ tool_calls: [k === 1 ? { id: callIds[index], type: "function", index: 0, function: { name: call.name, arguments: piece } } : { index: 0, function: { arguments: piece } }] });
    if (route === "chat" && !failsFirstStep) for (let index = 0; index < outputs; index++) send(chunk({ index, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }, 0, { prompt_token_ids: null }));
    for (let k = 1; k <= tokens; k++) {
      const next = await this.beforeToken(res, b, k);
      if (next === "gone") return;
      if (next !== "go") {
        // vLLM's in-stream error: Python json.dumps with default (spaced) separators, then [DONE].
        res.write(`data: ${IN_STREAM_ERRORS[next]}\n\n`);
        res.end("data: [DONE]\n\n");
        return;
      }
      const last = k === tokens;
      const text = jsonContent ? jsonContent[k - 1]! : `${k === 1 ? "" : " "}t${k}${b.stampTokens ? `@${process.hrtime.bigint()}` : ""}`;
      // Several outputs (n, batched prompts): one chunk per output per step, as vLLM interleaves them.
      for (let index = 0; index < outputs; index++) {
        if (route === "chat") send(chunk({ index, delta: tool ? callDelta(index, k, tool.call, tool.pieces[k - 1]!) : { content: text }, logprobs: null, finish_reason: last ? finish : null, ...(last ? { stop_reason: null } : {}), token_ids: null }, k));
        else send(chunk({ index, text: k === 1 ? echoed(index) + (echoOnly ? "" : text) : text, logprobs: null, finish_reason: last ? finish : null, stop_reason: null }, k));
      }
      this.bump("tokensSent");
    }
    if (tokens === 0 && route === "chat") for (let index = 0; index < outputs; index++) send(chunk({ index, delta: { content: "" }, logprobs: null, finish_reason: "length", stop_reason: null, token_ids: null }, 0));
    const usage = this.usage(prompt, tokens * outputs);
    // The usage-only chunk is written with exclude_none: no prompt_tokens_details without cached tokens.
    const details = this.promptDetails(prompt, res);
    const final = details === null ? usage : { ...usage, prompt_tokens_details: details };
    if (includeUsage) send(route === "chat" ? { id, object: "chat.completion.chunk", created, model, choices: [], usage: final } : { id, object: "text_completion", created, model, choices: [], usage: final });
    res.end("data: [DONE]\n\n");
    this.usages.push(usage);
    this.bump("completed");
  }

  private embeddings(res: ServerResponse, request: Record<string, unknown>, model: string): void {
    const format = request.encoding_format === undefined ? "float" : request.encoding_format;
    if (format !== "float" && format !== "base64") return vllmError(res, 400, "1 validation error: encoding_format Input should be 'float' or 'base64'");
    // vLLM's chat embeddings: `messages` through the chat template, one embedding.
    if (request.input === undefined && Array.isArray(request.messages)) return this.embedded(res, model, 1, chatPromptTokens(request, this.behaviour.templateTokens), format);
    const input = request.input;
    const items: unknown[] = Array.isArray(input) && input.length > 0 && typeof input[0] !== "number" ? input : [input];
    if (input === undefined || !items.every((i) => typeof i === "string" || (Array.isArray(i) && i.every((n) => typeof n === "number")) || typeof i === "number")) {
      return vllmError(res, 400, "1 validation error: input Input should be a valid string");
    }
    // Each input counted whole, however long: as vLLM with chunked processing counts an input
    // longer than its context (embedded in pieces, every piece's tokens counted).
    this.embedded(res, model, items.length, items.reduce<number>((s, i) => s + promptTokens(i), 0), format);
  }

  private embedded(res: ServerResponse, model: string, count: number, prompt: number, format: "float" | "base64"): void {
    const usage = { prompt_tokens: prompt, total_tokens: prompt, completion_tokens: 0, prompt_tokens_details: null };
    const vector = (index: number) => Array.from({ length: this.behaviour.embeddingDims }, (_, d) => [0.0123, -0.0456, 0.0789, index / 10][d % 4]! + Math.floor(d / 4) / 1e6);
    json(res, 200, {
      id: `embd-${hex()}`, object: "list", created: Math.floor(Date.now() / 1000), model,
      data: Array.from({ length: count }, (_, index) => ({ index, object: "embedding", embedding: format === "base64" ? float32Base64(vector(index)) : vector(index) })),
      usage,
    });
    this.usages.push({ prompt_tokens: prompt, completion_tokens: 0, total_tokens: prompt });
    this.bump("completed");
  }

  /**
   * Before a stream's token `k`, by the behaviour the stream began with: the per-token delay, then "gone" (the client left, or the stop
   * mode is a cut: what was written is flushed and the connection dropped without finishing the
   * chunked body), the stop mode whose in-stream error is due (written in the route's dialect by
   * the caller), or "go".
   */
  private async beforeToken(res: ServerResponse, b: Behaviour, k: number): Promise<"go" | "gone" | keyof typeof IN_STREAM_ERRORS> {
    if (b.tokenDelayMs > 0) await sleep(b.tokenDelayMs);
    if (res.destroyed) return "gone";
    if (b.stopAfterTokens === null || k <= b.stopAfterTokens) return "go";
    if (b.stopMode !== "cut") return b.stopMode;
    this.cut.add(res);
    await new Promise<void>((r) => res.write("", () => r()));
    res.destroy();
    return "gone";
  }

  /**
   * vLLM's /v1/responses (serving_responses.py, SimpleContext: a text answer as one message). The
   * prompt is the instructions, the input (a string, or items: messages' content, function calls'
   * arguments, their outputs) and the tools, through the chat template. max_output_tokens bounds
   * the answer (the response is then "incomplete"). Without VLLM_ENABLE_RESPONSES_API_STORE vLLM
   * keeps no responses: a previous_response_id is not found (404), `background` refused (400).
   * A stream: response.created, response.in_progress, then on the first token output_item.added
   * and content_part.added, one response.output_text.delta per token, output_text.done,
   * content_part.done, output_item.done, and response.completed with the whole response and its
   * usage; `event: <type>` before each data line (api_router.py's _convert_stream_to_sse_events).
   * The behaviour's delays, failures and stops apply as to chat; an "error" stop sends OpenAI's
   * error event (`event: error`, `{"type":"error","code","message","param","sequence_number"}`).
   * A forced function call (`tool_choice` "required" or `{type: "function", name}`) is answered
   * with one function_call item in place of the message (serving.py, _make_response_output_items);
   * streamed, as simple_streaming_events.py writes it: output_item.added (the call in_progress, its
   * first piece of arguments), one response.function_call_arguments.delta per token,
   * function_call_arguments.done and output_item.done. `text.format` json_schema makes the
   * message's text the JSON (fake-tool-calls.ts). Both are counted, and cut by max_output_tokens,
   * as text is.
   */
  private async responses(res: ServerResponse, request: Record<string, unknown>, model: string): Promise<void> {
    const b = this.behaviour;
    if (request.input === undefined) return vllmError(res, 400, "1 validation error: input Field required");
    if (pydanticBool(request.background)) return vllmError(res, 400, "This vLLM engine does not support `store=True` and therefore does not support the background mode. To enable these features, set the environment variable `VLLM_ENABLE_RESPONSES_API_STORE=1` when launching the vLLM server.");
    if (typeof request.previous_response_id === "string") {
      return json(res, 404, { error: { message: `Response with id '${request.previous_response_id}' not found.`, type: "NotFoundError", param: "response_id", code: 404 } });
    }
    const max = typeof request.max_output_tokens === "number" ? request.max_output_tokens : null;
    // A forced call's arguments, or a json_schema's JSON, generated one token a piece as on chat.
    const call = forcedResponsesCall(request);
    const structured = call ? undefined : forcedResponsesJson(request);
    const forced = call ? jsonPieces(call.arguments) : structured && jsonPieces(structured);
    const tokens = forced ? Math.min(max ?? Infinity, forced.length) : Math.max(0, Math.min(max ?? b.defaultTokens, b.defaultTokens));
    const incomplete = max !== null && tokens >= max;
    const prompt = responsesPromptTokens(request, b.templateTokens);
    const id = `resp_${hex()}`;
    const msgId = `msg_${hex()}`;
    const createdAt = Math.floor(Date.now() / 1000);
    const cached = Math.min(this.cachedFor.get(res) ?? b.cachedTokens ?? 0, prompt);
    const usageOf = (k: number) => ({ input_tokens: prompt, input_tokens_details: { cached_tokens: cached }, output_tokens: k, output_tokens_details: { reasoning_tokens: 0 }, total_tokens: prompt + k });
    // openai's ResponseFunctionToolCall, in its field order. vLLM's ids: fc_/call_ and a uuid's hex
    // in the response; in the stream's events the item's id is the bare hex (simple_streaming_events.py).
    const functionCall = (itemId: string, callId: string, args: string, status: string) => ({ arguments: args, call_id: callId, name: call!.name, type: "function_call", id: itemId, status });
    // The answer's one output item: the call (fresh ids, as vLLM builds the final response anew), or the message.
    const item = (text: string) => (call ? functionCall(`fc_${hex()}`, `call_${hex()}`, text, "completed") : message(text, "completed"));
    const message = (text: string, status: string) => ({ id: msgId, content: text === "" && status === "in_progress" ? [] : [{ annotations: [], text, type: "output_text", logprobs: null }], role: "assistant", status, type: "message" });
    const response = (status: string, output: unknown[], usage: unknown) => ({
      id, created_at: createdAt, incomplete_details: status === "incomplete" ? { reason: "max_output_tokens" } : null, instructions: request.instructions ?? null, metadata: request.metadata ?? null, model, object: "response", output,
      parallel_tool_calls: request.parallel_tool_calls ?? true, temperature: request.temperature ?? 0.7, tool_choice: request.tool_choice ?? "auto", tools: request.tools ?? [], top_p: request.top_p ?? 1.0, background: false,
      max_output_tokens: max ?? 8192 - prompt, max_tool_calls: null, previous_response_id: null, prompt: null, reasoning: null, service_tier: "auto", status, text: null, top_logprobs: null, truncation: "disabled", usage, user: null, input_messages: null, output_messages: null,
    });
    const finalStatus = incomplete ? "incomplete" : "completed";
    if (request.stream !== true) {
      for (let i = 0; i < tokens && b.tokenDelayMs > 0; i++) await sleep(b.tokenDelayMs);
      if (res.destroyed) return;
      json(res, 200, response(finalStatus, [item(forced ? forced.slice(0, tokens).join("") : words(tokens))], usageOf(tokens)));
      this.usages.push({ prompt_tokens: prompt, completion_tokens: tokens, total_tokens: prompt + tokens });
      return void this.bump("completed");
    }
    res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "transfer-encoding": "chunked" });
    let seq = 0;
    const send = ({ type, ...rest }: Record<string, unknown>) => res.write(`event: ${String(type)}\ndata: ${JSON.stringify({ ...rest, sequence_number: seq++, type })}\n\n`);
    // vLLM's events are pydantic models of openai's types, whose fields are in alphabetical order; sequence_number and type last but one and last.
    const initial = response("in_progress", [], null);
    send({ response: initial, type: "response.created" });
    send({ response: initial, type: "response.in_progress" });
    let text = "";
    const callItemId = hex();
    const callId = `call_${hex()}`;
    for (let k = 1; k <= tokens; k++) {
      const next = await this.beforeToken(res, b, k);
      if (next === "gone") return;
      if (next !== "go") {
        // OpenAI's error event. vLLM itself (responses/serving.py) cannot send one today: its
        // GenerationError fails the stream's validation and the connection drops, which stopMode
        // "cut" plays (and responses-vllm-dialect.test.ts); vLLM PR #40418 would send response.failed.
        const error = JSON.parse(IN_STREAM_ERRORS[next]) as { error: { message: string; code: number } };
        res.end(`event: error\ndata: ${JSON.stringify({ code: String(error.error.code), message: error.error.message, param: null, sequence_number: seq++, type: "error" })}\n\n`);
        return;
      }
      const delta = forced ? forced[k - 1]! : `${k === 1 ? "" : " "}t${k}${b.stampTokens ? `@${process.hrtime.bigint()}` : ""}`;
      text += delta;
      if (call) {
        if (k === 1) send({ item: functionCall(callItemId, callId, delta, "in_progress"), output_index: 0, type: "response.output_item.added" });
        send({ delta, item_id: callItemId, output_index: 0, type: "response.function_call_arguments.delta" });
      } else {
        if (k === 1) {
          send({ item: message("", "in_progress"), output_index: 0, type: "response.output_item.added" });
          send({ content_index: 0, item_id: msgId, output_index: 0, part: { annotations: [], text: "", type: "output_text", logprobs: [] }, type: "response.content_part.added" });
        }
        send({ content_index: 0, delta, item_id: msgId, logprobs: [], output_index: 0, type: "response.output_text.delta" });
      }
      this.bump("tokensSent");
    }
    if (tokens > 0 && call) {
      send({ arguments: text, item_id: callItemId, name: call.name, output_index: 0, type: "response.function_call_arguments.done" });
      send({ item: functionCall(callItemId, callId, text, "completed"), output_index: 0, type: "response.output_item.done" });
    } else if (tokens > 0) {
      send({ content_index: 0, item_id: msgId, logprobs: [], output_index: 0, text, type: "response.output_text.done" });
      send({ content_index: 0, item_id: msgId, output_index: 0, part: { annotations: [], text, type: "output_text", logprobs: null }, type: "response.content_part.done" });
      send({ item: message(text, "completed"), output_index: 0, type: "response.output_item.done" });
    }
    res.end(`event: response.completed\ndata: ${JSON.stringify({ response: response(finalStatus, tokens > 0 ? [item(text)] : [], usageOf(tokens)), sequence_number: seq++, type: "response.completed" })}\n\n`);
    this.usages.push({ prompt_tokens: prompt, completion_tokens: tokens, total_tokens: prompt + tokens });
    this.bump("completed");
  }

  /** vLLM's prompt_tokens_details: the cached tokens (never more than the prompt's) when reported and not 0 (`if … and num_cached_tokens:`), else null. */
  private promptDetails(prompt: number, res: ServerResponse): { cached_tokens: number } | null {
    const cached = Math.min(this.cachedFor.get(res) ?? this.behaviour.cachedTokens ?? 0, prompt);
    return cached === 0 ? null : { cached_tokens: cached };
  }

  private usage(prompt: number, completion: number) {
    const u = { prompt_tokens: prompt, total_tokens: prompt + completion, completion_tokens: completion };
    return u;
  }

  private resolveModel(requested: unknown): string | undefined {
    // vLLM accepts a missing or empty model and answers with its first served name.
    if (requested === undefined || requested === null || requested === "") return this.models[0]?.name;
    return this.models.find((m) => m.name === requested)?.name;
  }

  private modelList() {
    const created = Math.floor(Date.now() / 1000);
    return {
      object: "list",
      data: this.models.map((m) => ({
        id: m.name, object: "model", created, owned_by: "vllm", root: m.root ?? m.name, parent: null, max_model_len: m.maxModelLen ?? 8192,
        permission: [{ id: `modelperm-${hex()}`, object: "model_permission", created, allow_create_engine: false, allow_sampling: true, allow_logprobs: true, allow_search_indices: false, allow_view: true, allow_fine_tuning: false, organization: "*", group: null, is_blocking: false }],
      })),
    };
  }
}

/**
 * Tokens an image part costs, whatever its size (vLLM's vision models take hundreds to thousands
 * per image: LLaVA 576, Qwen2-VL up to 16,384): far more than the bytes of its URL.
 */
export const IMAGE_TOKENS = 1200;

/** Deterministic token count: whitespace-separated words of every string, one per number, IMAGE_TOKENS per image part. */
export function promptTokens(v: unknown): number {
  if (typeof v === "string") return v.split(/\s+/).filter(Boolean).length || 1;
  if (v && typeof v === "object" && ["image_url", "input_image"].includes((v as { type?: unknown }).type as string)) return IMAGE_TOKENS;
  if (typeof v === "number") return 1;
  if (Array.isArray(v)) return v.reduce<number>((s, x) => s + promptTokens(x), 0);
  if (v && typeof v === "object") return Object.values(v).reduce<number>((s, x) => s + promptTokens(x), 0);
  return 0;
}

/**
 * A Responses request's prompt tokens as vLLM renders it into a chat: the instructions (a system
 * message), the input (a string is one user message; items are counted by their content, as
 * promptTokens counts a value, an input_image IMAGE_TOKENS), the template's own tokens and its tools.
 */
export function responsesPromptTokens(request: Record<string, unknown>, templateTokens: number): number {
  let n = templateTokens + (typeof request.instructions === "string" ? promptTokens(request.instructions) : 0);
  const input = request.input;
  if (typeof input === "string") n += promptTokens(input);
  else if (Array.isArray(input)) for (const item of input) n += promptTokens(item);
  if (Array.isArray(request.tools) && request.tools.length > 0) n += renderedJsonTokens(request.tools);
  return n;
}

/**
 * A chat prompt's tokens as the model's template renders it: the messages' words, the template's
 * own tokens, and the JSON it prints with `tojson` (tools, documents, and earlier tool calls with
 * their arguments parsed into objects, as vLLM passes them), counted as a Qwen2 tokenizer splits it
 * at least (renderedJsonTokens).
 */
export function chatPromptTokens(request: Record<string, unknown>, templateTokens: number): number {
  let n = templateTokens;
  for (const m of request.messages as unknown[]) {
    if (m === null || typeof m !== "object") {
      n += promptTokens(m);
      continue;
    }
    const { tool_calls: calls, ...rest } = m as Record<string, unknown>;
    n += promptTokens(rest);
    if (Array.isArray(calls)) n += renderedJsonTokens(calls.map((c: { function?: { arguments?: unknown } }) => ({ ...c, function: { ...c.function, arguments: parsedArguments(c.function?.arguments) } })));
  }
  // vLLM merges chat_template_kwargs over the request's own tools and documents.
  const kwargs = (request.chat_template_kwargs ?? {}) as Record<string, unknown>;
  for (const part of [kwargs.tools ?? request.tools, kwargs.documents ?? request.documents]) {
    if (Array.isArray(part) && part.length > 0) n += renderedJsonTokens(part);
  }
  return n;
}

function parsedArguments(a: unknown): unknown {
  try {
    return typeof a === "string" ? JSON.parse(a) : a;
  } catch {
    return a;
  }
}

/** Python's json.dumps with its default separators (", ", ": "): what HF templates' `tojson` prints. */
export function pythonJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(pythonJson).join(", ")}]`;
  if (v !== null && typeof v === "object") return `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}: ${pythonJson(x)}`).join(", ")}}`;
  return JSON.stringify(v);
}

/** Qwen2's pre-tokenizer split (its tokenizer.json): BPE never merges across these pieces, so their count is a lower bound on its tokens. */
const QWEN2_PRETOKENIZE = /(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+/gu;

/** The tokens of `v` printed by a template's `tojson`, at least. */
export function renderedJsonTokens(v: unknown): number {
  return jsonPieces(v).length;
}

/** `v` as Python's json.dumps prints it, in the pieces Qwen2's pre-tokenizer splits it into (a forced tool call's tokens). */
export function jsonPieces(v: unknown): string[] {
  return pythonJson(v).match(QWEN2_PRETOKENIZE) ?? [];
}

/**
 * What vLLM refuses on /v1/completions before generating, as 400 BadRequestError, in its order:
 * `suffix` (its renderer), then SamplingParams' check of max_tokens below 1 (unless
 * echo_without_generation made it 1). Beam search builds no SamplingParams. `best_of` is no
 * field of its CompletionRequest since 0.11 (0.11 refused one above 1), so it is ignored: `n`
 * outputs are generated.
 */
function completionsRefusal(request: Record<string, unknown>): string | undefined {
  if (request.suffix !== undefined && request.suffix !== null) return "suffix is not currently supported";
  if (pydanticBool(request.use_beam_search)) return undefined;
  const max = request.max_tokens;
  if (typeof max === "number" && max < 1 && !(pydanticBool(request.echo) && max === 0)) return `max_tokens must be at least 1, got ${max}.`;
  return undefined;
}

/** A bool as pydantic's lax mode reads one (true, 1, "true", "yes", "on", …). */
function pydanticBool(v: unknown): boolean {
  return v === true || v === 1 || (typeof v === "string" && ["1", "true", "t", "yes", "y", "on"].includes(v.toLowerCase()));
}

/** A prompt's text as vLLM echoes it, detokenized: the fake's token n reads "n". */
function promptText(p: unknown): string {
  return typeof p === "string" ? p : Array.isArray(p) ? p.join(" ") : "";
}

/** vLLM's base64 embedding: the float32 vector's bytes, little-endian (as on its x86 and ARM hosts). */
function float32Base64(values: number[]): string {
  const bytes = Buffer.alloc(values.length * 4);
  values.forEach((v, i) => bytes.writeFloatLE(v, i * 4));
  return bytes.toString("base64");
}

/** How a choice ended: vLLM's finish_reason. */
type Finish = "length" | "stop" | "tool_calls";

const words = (n: number) => Array.from({ length: n }, (_, i) => `t${i + 1}`).join(" ");
const hex = () => randomUUID().replaceAll("-", "");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** vLLM's in-stream error events, as Python's json.dumps writes them (spaced separators). */
const IN_STREAM_ERRORS: Record<Exclude<Behaviour["stopMode"], "cut">, string> = {
  error: `{"error": {"message": "Engine loop has died", "type": "InternalServerError", "param": null, "code": 500}}`,
  error400: `{"error": {"message": "The provided JSON schema contains features not supported by xgrammar.", "type": "BadRequestError", "param": null, "code": 400}}`,
  engineDead: `{"error": {"message": "EngineCore encountered an issue. See stack trace (above) for the root cause.", "type": "InternalServerError", "param": null, "code": 500}}`,
  engineDead400: `{"error": {"message": "EngineCore encountered an issue. See stack trace (above) for the root cause.", "type": "BadRequestError", "param": null, "code": 400}}`,
};

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) }).end(text);
}

const ERROR_TYPES: Record<number, string> = { 400: "BadRequestError", 401: "Unauthorized", 404: "NotFoundError", 413: "Request Entity Too Large", 422: "BadRequestError", 429: "Too Many Requests", 501: "NotImplementedError", 503: "Service Unavailable" };
function failMessage(status: number): string {
  if (status === 400) return "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens (1000 in the messages, 8000 in the completion). Please reduce the length of the messages or completion. None";
  // After 0.11, vLLM answers a NotImplementedError raised for the request as 501 with its words.
  if (status === 501) return "Beam search is not supported with prompt embeddings.";
  return `upstream failure ${status} at internal-host-10.0.0.7`;
}

/** A chat request with tools whose tool_choice is "auto": given so, or absent (vLLM's check_tool_usage defaults it then). */
function autoToolChoice(request: Record<string, unknown>): boolean {
  return Array.isArray(request.tools) && request.tools.length > 0 && (request.tool_choice === "auto" || !("tool_choice" in request));
}

/**
 * vLLM ≥ 0.10.1's error body: `{"error":{"message","type","param","code"}}`, sent with status =
 * code, or with `httpStatus` (vLLM 0.15.1 and 0.16.0 sent errors with 200).
 */
export function vllmError(res: ServerResponse, status: number, message: string, type = ERROR_TYPES[status] ?? "BadRequestError", httpStatus = status, param: string | null = null): void {
  if (status === 401) return json(res, 401, { error: "Unauthorized" });
  json(res, httpStatus, { error: { message, type, param, code: status } });
}
