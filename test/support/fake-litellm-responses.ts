import type { IncomingMessage, ServerResponse } from "node:http";
import { loopbackServer } from "./shim-process.ts";

/**
 * LiteLLM's proxy answering `/v1/responses` for a `hosted_vllm/<name>` model, as the deployed stack
 * runs it (templates/litellm.yaml: no model_info, so the model is not in LiteLLM's price map).
 * Established from BerriAI/litellm's source (docs/api-shim/responses-api.md cites the files):
 *
 * - Non-streamed: vLLM's body re-serialized from LiteLLM's pydantic ResponsesAPIResponse: its `id`
 *   re-encoded with LiteLLM's deployment (`resp_` + base64, so that a `previous_response_id` it
 *   decodes goes back to the same deployment), `model` the name the client asked for, members the
 *   model declares present as `null`; usage as vLLM reported it.
 * - Streamed: `supports_native_streaming` is false for a model outside the price map, so LiteLLM
 *   fakes the stream (OpenAIResponsesAPIConfig.should_fake_stream): it asks vLLM without `stream`,
 *   then writes events built from the whole answer (MockResponsesAPIStreamingIterator): `data:`
 *   lines only (no `event:`), `type` first, no `sequence_number` on most, `response.created` and
 *   `response.in_progress` carrying the final usage already, the text in 5-character deltas, then
 *   `response.completed` and `data: [DONE]`.
 * - The body vLLM would get (vllmBodies): only the Responses members LiteLLM declares, then the
 *   request's `extra_body` merged over them (vllmBody).
 * - Errors: vLLM's refusal as an HTTP status with `{"error":{"message":"litellm.BadRequestError:
 *   Hosted_vllmException - …","type","param","code":"400"}}` (code a string), before any event even
 *   when streamed (create_response reads the first chunk first); one raised mid-stream as a
 *   `data: {"error":{…,"code":"500"}}` event, the stream then ended without [DONE].
 */
export type LitellmResponsesMode =
  /** The answer (whole, or its faked stream). */
  | "answer"
  /** vLLM refused the request (400), before anything was written. */
  | "refused"
  /** An error raised after created/in_progress, before any output (LiteLLM's in-stream error body). */
  | "error-before-output"
  /** The connection dropped after three deltas: no final event, no error. */
  | "cut"
  /** The faked stream written 100 ms apart (for a client that leaves), noting when the shim hangs up. */
  | "slow";

export interface FakeLitellmResponses {
  readonly url: string;
  mode: LitellmResponsesMode;
  /**
   * A provider's model, answered by LiteLLM's Responses-to-chat bridge (litellm/responses/
   * litellm_completion_transformation/streaming_iterator.py, LiteLLMCompletionStreamingIterator):
   * a stream converted chunk by chunk as the provider's chat stream comes, its `response.created`
   * and `response.in_progress` without usage (built before any chunk), the usage only in
   * `response.completed` (stream_chunk_builder over the chunks, the include_usage one among them).
   */
  bridged: boolean;
  /** The answer's text and usage. */
  text: string;
  usage: { input_tokens: number; output_tokens: number };
  /** Request bodies received (parsed). */
  readonly bodies: Record<string, unknown>[];
  /** The body LiteLLM would send vLLM for each (vllmBody). */
  readonly vllmBodies: Record<string, unknown>[];
  /** The shim hung up before the answer's end (mode "slow"). */
  readonly abortedEarly: boolean;
  close(): Promise<void>;
}

const MODEL_ID = "6b1c0e3b2f5a4c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d";

export async function startFakeLitellmResponses(): Promise<FakeLitellmResponses> {
  let abortedEarly = false;
  const bodies: Record<string, unknown>[] = [];
  const vllmBodies: Record<string, unknown>[] = [];
  const server = await loopbackServer((req, res) => {
    let raw = "";
    req.on("data", (c: Buffer) => (raw += c.toString()));
    req.on("end", () => {
      const body = JSON.parse(raw) as Record<string, unknown>;
      bodies.push(body);
      vllmBodies.push(vllmBody(body));
      if (fake.mode === "refused") return refuse(res);
      const response = responseObject(String(body.model), body, fake.text, fake.usage);
      if (body.stream !== true) return void res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(response));
      void stream(req, res, response, fake).then((early) => (abortedEarly ||= early));
    });
  });
  const fake: FakeLitellmResponses = {
    url: server.url,
    mode: "answer",
    bridged: false,
    text: "Hello there, friend",
    usage: { input_tokens: 9, output_tokens: 4 },
    bodies,
    vllmBodies,
    get abortedEarly() {
      return abortedEarly;
    },
    close: () => server.close(),
  };
  return fake;
}

/**
 * OpenAI's Responses members, as LiteLLM's ResponsesAPIOptionalRequestParams declares them (the
 * ones a test here sends, and the rest of that TypedDict's): the only top-level members its
 * native path passes on.
 */
const RESPONSES_MEMBERS = new Set([
  "model", "input", "include", "instructions", "max_output_tokens", "max_tool_calls", "metadata", "parallel_tool_calls",
  "previous_response_id", "prompt", "prompt_cache_key", "reasoning", "safety_identifier", "service_tier", "store", "background",
  "stream", "stream_options", "temperature", "text", "tool_choice", "tools", "top_logprobs", "top_p", "truncation", "user",
  "context_management", "conversation",
]);

/**
 * What LiteLLM sends vLLM for a `hosted_vllm/` model's `/v1/responses` request (BerriAI/litellm,
 * read from its source; docs/api-shim/request-bodies.md cites the lines): litellm/responses/main.py
 * `responses()` keeps only the members ResponsesAPIOptionalRequestParams declares
 * (responses/utils.py get_requested_response_api_optional_param, whose
 * base_pre_process_non_default_params filters on `k in default_param_values`), so a member it
 * does not know, vLLM's `cache_salt` or `top_k`, is dropped without an error; then
 * llm_http_handler.py response_api_handler merges the request's `extra_body` over the body
 * (`if extra_body: data.update(extra_body)`), so a member sent inside `extra_body` reaches vLLM at
 * the top level.
 */
function vllmBody(body: Record<string, unknown>): Record<string, unknown> {
  const kept = Object.fromEntries(Object.entries(body).filter(([k]) => RESPONSES_MEMBERS.has(k)));
  const extra = body.extra_body;
  return typeof extra === "object" && extra !== null ? { ...kept, ...(extra as Record<string, unknown>) } : kept;
}

/** vLLM's 400, in LiteLLM's frame: the exception's name and the provider's body in the message, the status as a string. */
function refuse(res: ServerResponse): void {
  const vllm = { error: { message: "'max_output_tokens' must be at least 1, got 0.", type: "BadRequestError", param: null, code: 400 } };
  const error = { message: `litellm.BadRequestError: Hosted_vllmException - ${JSON.stringify(vllm)}`, type: null, param: null, code: "400" };
  res.writeHead(400, { "content-type": "application/json" }).end(JSON.stringify({ error }));
}

/** The response as LiteLLM's ResponsesAPIResponse serializes it: declared members null when unset, the id re-encoded. */
function responseObject(model: string, req: Record<string, unknown>, text: string, usage: { input_tokens: number; output_tokens: number }) {
  const vllmId = "resp_8f2e4c1a9b7d4e6f";
  const id = `resp_${Buffer.from(`litellm:custom_llm_provider:hosted_vllm;model_id:${MODEL_ID};response_id:${vllmId}`).toString("base64")}`;
  const message = { id: "msg_1", content: [{ annotations: [], text, type: "output_text", logprobs: null }], role: "assistant", status: "completed", type: "message" };
  return {
    id, created_at: 1_760_000_000, error: null, incomplete_details: null, instructions: req.instructions ?? null, metadata: null, model,
    object: "response", output: [message], parallel_tool_calls: true, temperature: 1.0, tool_choice: "auto", tools: [], top_p: 1.0,
    max_output_tokens: req.max_output_tokens ?? null, previous_response_id: req.previous_response_id ?? null, reasoning: null,
    status: "completed", text: null, truncation: "disabled",
    usage: { input_tokens: usage.input_tokens, input_tokens_details: { cached_tokens: 0 }, output_tokens: usage.output_tokens, output_tokens_details: { reasoning_tokens: 0 }, total_tokens: usage.input_tokens + usage.output_tokens },
    user: null, store: false,
  };
}

/** The faked stream, as the mode has it; resolves whether the shim hung up before its end. */
async function stream(req: IncomingMessage, res: ServerResponse, response: ReturnType<typeof responseObject>, fake: FakeLitellmResponses): Promise<boolean> {
  let gone = false;
  res.on("close", () => (gone = !res.writableFinished));
  const inProgress = { ...response, status: "in_progress", output: [], ...(fake.bridged ? { usage: null } : {}) };
  const item = response.output[0]!;
  const text = item.content[0]!.text;
  const at = { item_id: item.id, output_index: 0, content_index: 0 };
  const deltas = Array.from({ length: Math.ceil(text.length / 5) }, (_, i) => ({ type: "response.output_text.delta", ...at, delta: text.slice(i * 5, i * 5 + 5) }));
  const events: object[] = [
    { type: "response.created", response: inProgress },
    { type: "response.in_progress", response: inProgress },
  ];
  if (fake.mode === "error-before-output") {
    events.push({ error: { message: "litellm.APIConnectionError: Hosted_vllmException - Server disconnected", type: null, param: null, code: "500" } });
  } else {
    events.push(
      { type: "response.output_item.added", output_index: 0, item: { ...item, status: "in_progress", content: [] } },
      { type: "response.content_part.added", ...at, part: { annotations: [], text: "", type: "output_text" } },
      ...(fake.mode === "cut" ? deltas.slice(0, 3) : deltas),
    );
    if (fake.mode !== "cut") {
      events.push(
        { type: "response.output_text.done", ...at, text },
        { type: "response.content_part.done", ...at, part: item.content[0] },
        { type: "response.output_item.done", output_index: 0, sequence_number: 1, item },
        { type: "response.completed", response },
      );
    }
  }
  res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8" });
  for (const e of events) {
    if (gone) return true;
    res.write(`data: ${JSON.stringify(e)}\n\n`);
    if (fake.mode === "slow") await new Promise((r) => setTimeout(r, 100));
  }
  // Dropped once what was written has gone out (a destroy at once would discard it unsent).
  if (fake.mode === "cut") return void setTimeout(() => req.socket.destroy(), 50), false;
  if (fake.mode === "error-before-output") return void res.end(), false;
  res.end("data: [DONE]\n\n");
  return gone;
}
