/**
 * An upstream's refusals as the shim's own errors: an error status and its body (vLLM's,
 * LiteLLM's with its frame, an SSE error event), or an error body where an answer was expected.
 * A client's own mistake keeps the upstream's message, made fit for a client (no secrets, no
 * internal addresses or paths, no LiteLLM frame, at most 500 characters); the rest never leak the
 * upstream's internals.
 */
import { ERROR_TABLE, retryAfterSeconds, ShimError } from "../errors.ts";
import { eventData } from "../metering/sse.ts";
import { redactUpstreamSecrets, type SecretHider } from "../observability/redaction.ts";
import { hideInternalDetails } from "./internal-details.ts";

const MAX_UPSTREAM_MESSAGE = 500;
// The client learns that the endpoint is misconfigured, not how it is configured; the log tells
// the operator which setting (the /ready probe, routes/health.ts).
const UPSTREAM_ROUTE_MISSING = "The model server has no such route (404): this endpoint is misconfigured.";

/** The longest wait relayed from an upstream's Retry-After, in seconds. */
const MAX_RELAYED_RETRY_AFTER_S = 86_400;

/**
 * An upstream's Retry-After (seconds, possibly fractional, or an HTTP-date) as the shim's own
 * answers give one (retryAfterSeconds): "0" made OpenAI's SDKs retry twice at once into the same
 * refusal, and a wait rounded down (or an unread date taken as 1 s) retried too early.
 */
function relayedRetryAfter(value: string | string[] | undefined): number {
  if (typeof value !== "string") return 1;
  const trimmed = value.trim();
  const ms = /^\d+(\.\d+)?$/.test(trimmed) ? Number(trimmed) * 1000 : Date.parse(trimmed) - Date.now();
  return Number.isFinite(ms) ? Math.min(MAX_RELAYED_RETRY_AFTER_S, retryAfterSeconds(ms)) : 1;
}

/**
 * An upstream error status and body, as one of our errors. Never leaks 5xx bodies or auth
 * failures. `hideSecrets` (ctx.hideSecrets) hides the deployment's own secrets in a message
 * relayed: an upstream refusing the key the shim sent may quote it.
 */
export function upstreamStatusError(status: number, bodyText: string, model: string | undefined, retryAfter: string | string[] | undefined, hideSecrets: SecretHider): ShimError {
  if (status === 400 || status === 422 || status === 501) {
    const message = upstreamMessage(bodyText);
    // vLLM 0.10-0.11 answer any exception as a 400, a dead engine's too (before a stream's first
    // chunk, in the stream): the server failed, not the request. Told as a 400, a client would
    // not retry, and the SDKs' retries would find the engine restarted.
    if (message !== undefined && withoutLitellmFrame(message).startsWith(ENGINE_DEAD_MESSAGE)) return new ShimError("upstream_error");
    if (status === 501) {
      // What the server does not implement, in its words (vLLM after 0.11 answers a
      // NotImplementedError so; llama.cpp embeddings it was not started with): a 400, since a
      // retry, which SDKs make of a 5xx, meets the same refusal. Logged as not_implemented and
      // counted as the upstream's failure (isUpstreamFault): it may be the operator's to fix. A
      // bare 501 (a web server's page) says nothing about the request.
      if (message === undefined) return new ShimError("upstream_error");
      return new ShimError("invalid_request", { ...clientMessage(message, model ?? "", hideSecrets), logCode: NOT_IMPLEMENTED });
    }
    const param = upstreamParam(bodyText, model ?? "", hideSecrets);
    return new ShimError("invalid_request", { ...(param ? { param } : {}), ...(message ? clientMessage(message, model ?? "", hideSecrets) : {}) });
  }
  if (status === 404) {
    // vLLM and LiteLLM name the model in an OpenAI-shaped error body. A bare 404 (FastAPI's
    // {"detail":"Not Found"}, an HTML page) is a route the upstream does not have: the operator's
    // SHIM_UPSTREAM_URL is wrong, usually missing its /v1, which is no fault of the client's model.
    // (A server that answered an unknown model with a bare 404 would get a 502 too: neither vLLM
    // nor LiteLLM does.)
    const message = upstreamMessage(bodyText, false);
    if (message === undefined) return new ShimError("upstream_error", { message: UPSTREAM_ROUTE_MISSING });
    // A Responses request's previous_response_id the server does not have (vLLM keeps none unless
    // started with VLLM_ENABLE_RESPONSES_API_STORE=1), in LiteLLM's frame too: the response is
    // missing, not the model.
    if (withoutLitellmFrame(message).startsWith("Response with id ")) return new ShimError("not_found", { ...clientMessage(message, model ?? "", hideSecrets), param: "previous_response_id" });
    return modelNotFound(model ?? "");
  }
  if (status === 413) return new ShimError("request_too_large");
  if (status === 429 || status === 503) {
    return new ShimError("service_unavailable", { headers: { "retry-after": String(relayedRetryAfter(retryAfter)) } });
  }
  if (status === 408 || status === 504) return new ShimError("upstream_timeout");
  // 424 Failed Dependency is a server's failure, not the request's: TGI's GenerationError (CUDA
  // out of memory, a failure mid-generation), which SDKs would not retry as a 400.
  if (status >= 400 && status < 500 && status !== 401 && status !== 403 && status !== 424) return new ShimError("invalid_request");
  // 401/403: our upstream credentials are wrong (our misconfiguration, not the client's); 5xx: theirs.
  return new ShimError("upstream_error");
}

/** The log code of an upstream's 501 told to the client as a 400 (upstreamStatusError). */
const NOT_IMPLEMENTED = "not_implemented";

/**
 * Whether an upstream refusal told to the client (`err`) is the upstream's or the operator's to
 * fix, counted as a failure: a 5xx, or a 501 told as a 400 (what the server does not implement).
 */
export const isUpstreamFault = (err: ShimError): boolean => err.status >= 500 || err.logCode === NOT_IMPLEMENTED;

/**
 * An error body that came where an answer was expected (an event inside a stream, or a 2xx
 * answer), as the error its status would be. vLLM sends `{"error": {"message", "type", "param",
 * "code": 500}}` (then `[DONE]` in a stream); LiteLLM (the deployed upstream) sends the status as
 * a string, `"code": "400"`.
 */
export function upstreamErrorBody(data: string, model: string | undefined, hideSecrets: SecretHider): ShimError {
  let code: unknown;
  try {
    const body = JSON.parse(data) as { error?: { code?: unknown } };
    code = body.error?.code;
  } catch {}
  const n = typeof code === "string" && /^\d{3}$/.test(code) ? Number(code) : code;
  const status = typeof n === "number" && Number.isInteger(n) && n >= 400 && n <= 599 ? n : 500;
  return upstreamStatusError(status, data, model, undefined, hideSecrets);
}

export function modelNotFound(model: string): ShimError {
  return new ShimError("model_not_found", {
    param: "model",
    message: `The model '${model.slice(0, 200)}' does not exist or you do not have access to it.`,
  });
}

/**
 * The message of an OpenAI/vLLM error body (nested or flat), if it is a string; with
 * `stringError`, TGI's too, whose `error` is the message itself (not for a 404: a bare
 * `{"error":"Not Found"}` is a route's absence, not a model's).
 */
function upstreamMessage(text: string, stringError = true): string | undefined {
  try {
    const body = JSON.parse(firstEventData(text)) as { error?: { message?: unknown } | unknown; message?: unknown };
    const nested = body.error && typeof body.error === "object" ? (body.error as { message?: unknown }).message : stringError && typeof body.error === "string" ? body.error : undefined;
    const msg = nested ?? body.message;
    return typeof msg === "string" && msg !== "" ? msg : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The member an upstream's refusal names in its `param` (vLLM's VLLMValidationError fills it:
 * `max_tokens` for a `max_tokens` of 0), so that the client's SDK shows it as OpenAI's would; a
 * message's own (LiteLLM's unsupported parameters, clientMessage) wins. Only a member's name or
 * path (`messages[0].content`): LiteLLM writes "None" there, and a long or odd one is not a name.
 * Nor one the message's secret hiders would touch: a provider's key (`hf_…`, `gsk_…`, `AKIA…`) or
 * the deployment's own secret can have a name's shape, and the param is shown whole, not redacted.
 */
function upstreamParam(text: string, model: string, hideSecrets: SecretHider): string | undefined {
  try {
    const body = JSON.parse(firstEventData(text)) as { error?: { param?: unknown } | unknown; param?: unknown };
    const param = body.error && typeof body.error === "object" ? (body.error as { param?: unknown }).param : body.param;
    if (typeof param !== "string" || param === "None" || param.length > 100 || !MEMBER_PATH.test(param)) return undefined;
    return redactUpstreamSecrets(param, model, hideSecrets) === param ? param : undefined;
  } catch {
    return undefined;
  }
}

/** A member's name, or its path: `tools[0].function.name`. */
const MEMBER_PATH = /^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*$/;

/**
 * An error body's JSON. LiteLLM refuses a stream that fails at its first chunk (a provider
 * called lazily: Anthropic, Gemini; vLLM's error before its first chunk) with the error's status
 * and its SSE error event as the body (proxy/common_request_processing.py,
 * create_streaming_response): then its first event's data. Any other body as it is.
 */
function firstEventData(text: string): string {
  if (!text.startsWith("data:")) return text;
  const end = text.indexOf("\n\n");
  return eventData(end === -1 ? text : text.slice(0, end)) ?? text;
}

/**
 * LiteLLM's message as the client is told it. LiteLLM (the deployed upstream) prefixes its
 * exception class (`litellm.BadRequestError: `, sometimes the class again), the provider
 * (`Hosted_vllmException - `, `AnthropicException - `) and, when its router answered, appends the
 * model group (`. Received Model Group=smart\nAvailable Model Group Fallbacks=None`, maybe
 * `\nError doing the fallback: …`); a provider's own error body may be quoted whole (vLLM's
 * JSON). Its refusal of a parameter the provider does not take names the provider's model behind
 * the client's alias and advises settings (`drop_params`, `allowed_openai_params`) the shim
 * refuses: it is said again with the model the client asked for. Messages that are not LiteLLM's
 * (vLLM's own, when it is the upstream) pass otherwise unchanged. Any message goes without URL
 * queries and providers' keys (redactUpstreamSecrets): LiteLLM quotes a Gemini call's URL, its
 * `?key=…` included, when the call fails, and the deployment's own secrets (`hideSecrets`).
 */
function clientMessage(message: string, model: string, hideSecrets: SecretHider): { message: string; param?: string } {
  const unsupported = /^litellm\.UnsupportedParamsError: .*? does not support parameters: ([[{][\s\S]*?[\]}]), for model=/.exec(message);
  const names = unsupported ? parameterNames(unsupported[1]!) : [];
  if (names.length > 0) {
    const list = names.map((n) => `'${n}'`).join(", ");
    return { message: `${list} ${names.length === 1 ? "is" : "are"} not supported by model '${model.slice(0, 200)}'.`, param: names[0]! };
  }
  if (!LITELLM_PREFIX.test(message)) return { message: forClient(message, model, hideSecrets) };
  return { message: forClient(withoutLitellmFrame(message).trim() || ERROR_TABLE.invalid_request.message, model, hideSecrets) };
}

/** LiteLLM's exception class and provider before its message (clientMessage). */
const LITELLM_PREFIX = /^(?:litellm\.\w+: )+(?:\w+Error: )?(?:\w+Exception(?: \w+)? - )?/;

/** A message without LiteLLM's prefix, its model group suffix and the JSON body it may quote (clientMessage): the provider's own words. Other messages unchanged. */
function withoutLitellmFrame(message: string): string {
  const prefix = LITELLM_PREFIX.exec(message)?.[0];
  if (prefix === undefined) return message;
  const text = message.slice(prefix.length).replace(/\.? ?Received Model Group=[\s\S]*$/, "");
  return upstreamMessage(text) ?? text;
}

/** vLLM's EngineDeadError (vllm/v1/engine/exceptions.py): the engine process died; vLLM exits and is restarted. */
const ENGINE_DEAD_MESSAGE = "EngineCore encountered an issue.";

/**
 * Secrets hidden before the cut, so none is left half shown: the deployment's own wherever they
 * are, the others by shape except within the request's own model name. Then the deployment's
 * internal addresses, file paths and any traceback (internal-details.ts); a message that was
 * nothing else is told as the shim's own.
 */
const forClient = (message: string, model: string, hideSecrets: SecretHider) =>
  (hideInternalDetails(redactUpstreamSecrets(message, model, hideSecrets), model) || ERROR_TABLE.invalid_request.message).slice(0, MAX_UPSTREAM_MESSAGE);

/**
 * The parameter names in LiteLLM's Python rendering of them: a list (`['logit_bias', 'n']`) or a
 * dict of their values (`{'dimensions': 1024}`), whose keys at the top level are the names.
 */
function parameterNames(python: string): string[] {
  const names: string[] = [];
  const dict = python.startsWith("{");
  let depth = 0;
  for (let i = 0; i < python.length; i++) {
    const c = python[i]!;
    if (c === "'" || c === '"') {
      const end = python.indexOf(c, i + 1);
      if (end < 0) break;
      const word = python.slice(i + 1, end);
      if (depth === 1 && /^[A-Za-z_]\w{0,63}$/.test(word) && (!dict || python[end + 1] === ":")) names.push(word);
      i = end;
    } else if ("[{(".includes(c)) depth++;
    else if ("]})".includes(c)) depth--;
  }
  return names;
}
