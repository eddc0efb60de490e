import type { FastifyRequest } from "fastify";
import { tokensSpent, type TokensCounted } from "../limits/refusals.ts";
import { batchAsked } from "./batch-query.ts";
import type { CacheLifetime } from "../money/cache-writes.ts";
import { heldAtDefaultMaxTokens, type ModelConfig, mayBeProviders } from "../config.ts";
import type { ShimContext } from "../context.ts";
import { ShimError } from "../errors.ts";
import { type InferenceKind, type InferenceRequest, normalizationGrowth, parseInferenceRequest, promptTokens, upstreamBody } from "./inference-request.ts";
import { parseResponsesRequest } from "./responses-request.ts";
import { refuseChosenSilences } from "./stream-silences.ts";
import { refuseOversizedStructures } from "./structured-limits.ts";
import { type Relaxation, relaxedBody } from "./schema-maxima.ts";
import { keySalt, refuseBadCacheSalt, saltedBody, saltsRequests } from "./cache-salt.ts";
import { refuseNonTextPrompt } from "../providers/upstream-controls.ts";
import { estimatePromptTokens, type HoldInput } from "../money/pricing.ts";
import { refuseUnlistedProviderParams } from "../providers/provider-params.ts";
import { refuseProviderSurcharges } from "../providers/provider-surcharges.ts";
import type { KeyRecord } from "../store/store.ts";
import { modelNotFound } from "../upstream/upstream-errors.ts";
import { modelNamed } from "./model-aliases.ts";
import { spliceMemberValue } from "./json-splice.ts";

/**
 * What an inference request needs of its body (routes/inference.ts): its checks, its tokens/min
 * estimate and credit hold, and the body the upstream gets. Taken once, after which the body's
 * bytes and parsed object are let go.
 */

const MAX_TOKENS_ESTIMATE = 2 ** 40;

/** What checked() found: the request, its model's configuration, and what admission() needs of them. */
export interface Checked {
  req: InferenceRequest;
  modelConfig: ModelConfig | undefined;
  batch: boolean;
  /** The prompt-cache lifetime the request asked for (cache-writes.ts): held for, and the rate of writes reported unsplit. */
  cacheLifetime: CacheLifetime;
  /** The schema maxima removed from the parsed body (schema-maxima.ts), whose members the upstream's body writes again; null: none. */
  relaxation: Relaxation | null;
}

/** The request's checks that need its parsed body: what it asks for, and whether its key and the served models allow it. */
export function checked(ctx: ShimContext, kind: InferenceKind, request: FastifyRequest): Checked {
  const auth = request.auth!;
  const batch = batchAsked(request);
  const body = request.body as Record<string, unknown>;
  const parsed = kind === "responses" ? parseResponsesRequest(body) : parseInferenceRequest(kind, body);
  // An alias is its model from here on (model-aliases.ts): priced, held, allowed, forwarded and reported as the model.
  // A copy only then: a request naming its model (almost all) allocates nothing more.
  const model = modelNamed(ctx.config, parsed.model);
  const req = model === parsed.model ? parsed : { ...parsed, model };
  request.shim.model = req.model;
  const refusal = modelRefusal(ctx, auth.key, req.model);
  // The refusals quote the name the client sent, as OpenAI's do.
  if (refusal === "not_served") throw modelNotFound(parsed.model);
  if (refusal === "not_allowed") throw modelNotAllowed(parsed.model);
  const modelConfig = ctx.config.models?.get(req.model);
  // Parameters with which a client has vLLM generate without chunks: on every streamed route.
  if (req.stream) refuseChosenSilences(body, modelConfig?.provider !== true, (req.maxTokens ?? Infinity) * req.outputs);
  // Schemas, regexes and grammars vLLM compiles on the host's CPU before the first token; a
  // provider's model compiles them on the provider's, under its own limits.
  // A schema's maximum past maxRepetition is removed instead (schema-maxima.ts), the answer's
  // x-schema-relaxed naming it, so that a developer sees why an output ran past their maxLength.
  const relaxation = kind !== "embeddings" && modelConfig?.provider !== true ? refuseOversizedStructures(body, ctx.config.structuredOutputs) : null;
  if (relaxation !== null) request.shim.schemaRelaxed = relaxation.header();
  if (kind === "completions" && modelConfig?.tokenPrompts === false) refuseNonTextPrompt(body, req.model);
  // What a provider bills beyond the model's price, for a model that may be a provider's; the same
  // walk reads the cache lifetime asked. vLLM's model gets them (it ignores them) and no walk.
  const lifetime = mayBeProviders(modelConfig) ? refuseProviderSurcharges(body, kind === "responses") : null;
  // Only a model configured `provider: true` has its members allow-listed (provider-params.ts):
  // narrower than mayBeProviders, as an unconfigured model, or one without maxModelLen, may be
  // vLLM's, whose clients send its extra parameters (top_k, guided_json…), which it takes.
  // On the Responses route too: its own check refuses every tool but `function` for any model, and
  // the allow-list keeps out what a provider's Responses API (or LiteLLM's bridge to its chat) bills
  // beyond the usage (docs/decisions.md).
  if (modelConfig?.provider === true) refuseUnlistedProviderParams(kind, body, req.model);
  // Under `key` cache isolation vLLM sees the shim's salt only: the client's is refused where vLLM would refuse it.
  if (saltsRequests(ctx.config.cacheIsolation, modelConfig)) refuseBadCacheSalt(body);
  // Embeddings cache nothing: a cache_control there widens no hold.
  return { req, modelConfig, batch, cacheLifetime: kind === "embeddings" ? null : lifetime, relaxation };
}

/**
 * Why `key` may not use `model` here, or null when it may: the model is not among the configured
 * ones (`not_served`; no list configured: any is), or not in the key's allow-list
 * (`not_allowed`). The one rule for inference, which answers each its own error, and for the
 * model routes, which show only the models a key may use (routes/models.ts).
 */
export function modelRefusal(ctx: ShimContext, key: KeyRecord, name: string): "not_served" | "not_allowed" | null {
  // An alias is allowed with its model (allow-lists keep models' names: admin.ts, config-file.ts).
  const model = modelNamed(ctx.config, name);
  if (ctx.config.models && !ctx.config.models.has(model)) return "not_served";
  if (key.models && !key.models.includes(model)) return "not_allowed";
  return null;
}

/** The 403 for a model the key's allow-list does not have: at admission, and at the hold (a PATCH narrowed it meanwhile). */
export const modelNotAllowed = (model: string): ShimError =>
  new ShimError("model_not_allowed", { param: "model", message: `This key may not use the model '${model.slice(0, 200)}'.` });

/** What a request needs of its body once admitted: the rest of its bytes and parsed object are let go. */
export interface Admission {
  estimate: number;
  hold: number;
  /** The prompt-cache lifetime the request asked for (cache-writes.ts): held for, and the rate of writes reported unsplit. */
  cacheLifetime: CacheLifetime;
  /** The prompt's estimated tokens (promptTokens), for an answer whose usage never came. */
  promptTokens: number;
  /** The most completion tokens the outputs may generate (outputs × the hold's bound): an estimate of them is never charged more. */
  completionBound: number;
  /** The body for the upstream, until it is handed over (forwarded()). */
  upstreamBody: Buffer | string | null;
}

/**
 * The tokens/min check and the credit hold, from the body, and the body the upstream gets. The
 * request's bytes and parsed object are then dropped: a request waiting on the upstream (up to
 * SHIM_UPSTREAM_TIMEOUT_MS) held both, about 2.6 times its body, and now holds only what is
 * forwarded, until it is sent (docs/api-shim/operations.md, "Request bodies in memory").
 */
export function admission(ctx: ShimContext, kind: InferenceKind, request: FastifyRequest, { req, modelConfig, batch, cacheLifetime, relaxation }: Checked): Admission {
  const auth = request.auth!;
  const raw = request.rawBody!;
  const body = request.body as Record<string, unknown>;
  const continuous = modelConfig?.continuousUsage === true;
  // The request's own bounds (InferenceRequest names them as HoldInput does) and what only the route knows.
  const holdInput: HoldInput = { ...req, batch, bodyBytes: raw.length, normalizationGrowth: () => normalizationGrowth(kind, body, raw), cacheLifetime };
  // Tokens per minute, counted as OpenAI counts them at admission: the prompt estimate plus the
  // most the outputs may generate, taken when the bucket is positive and corrected to the real
  // usage at settlement. Counting the prompt alone let ten requests with a large max_tokens
  // through at once, four times a free key's minute. Taken whole, even over the minute's budget
  // (the request still runs; the next waits for that debt): capping it at the budget let a key
  // start another such request each minute while the earlier ones ran, many times its budget.
  // The auth hook refused a key whose budget was spent before its body was read; checked again
  // here, as other requests may have spent it while this one's body arrived.
  const tokens = auth.buckets.tokens;
  const completionBound = req.outputs * ctx.pricer.outputBound(holdInput);
  // The prompt's bound once (it may walk the body for normalization's growth): the hold's prompt,
  // the charged estimate's cap (which also caps a media part's floor, the model's mediaPartTokens),
  // and the tokens/min estimate's prompt where the body's bytes do not bound it (media, a previous
  // response's turns, a template of the request's own): counted as bytes / 4, six images by URL
  // took ~100 tokens each and a free key's ten started at once, seven times its minute.
  const promptBound = ctx.pricer.promptBound(holdInput);
  const promptEstimate = req.unboundedParts > 0 ? promptBound : estimatePromptTokens(raw.length);
  // At most 2^40 (far above any tier's minute): an unbounded max_tokens × n × prompts past 2^53
  // would round every other request's correction, and the refill, away while it ran.
  const estimate = tokens ? Math.min(MAX_TOKENS_ESTIMATE, promptEstimate + completionBound) : 0;
  if (tokens) {
    const r = tokens.takeEstimate(estimate, ctx.clock.monotonic());
    if (!r.ok) throw tokensSpent(ctx, auth, r.retryMs, { estimate, unbounded: unboundedOutputs(ctx, kind, req, holdInput) });
  }
  // Rare: a schema lost a maximum, and only the members holding it are written again. An alias
  // sent is replaced by its model's name: the upstream serves the model under that name only.
  const relaxed = relaxation === null ? raw : relaxedBody(raw, body, relaxation);
  const sent = body.model === req.model ? relaxed : renamedModel(relaxed, body, req.model);
  const forwarded = kind === "responses" ? sent : upstreamBody(sent, body, req, continuous, heldAtDefaultMaxTokens(req.defaultMaxTokens, modelConfig));
  // The key's own part of vLLM's prefix cache (cache-salt.ts); under `shared` the body is left as it is.
  const salted = saltsRequests(ctx.config.cacheIsolation, modelConfig) ? saltedBody(forwarded, body, keySalt(auth.key.id, body.cache_salt as string | null | undefined), kind === "responses") : forwarded;
  const admission: Admission = { estimate, cacheLifetime, hold: ctx.pricer.hold(holdInput, promptBound), promptTokens: Math.min(promptTokens(kind, body, modelConfig?.mediaPartTokens ?? 0), promptBound), completionBound, upstreamBody: salted };
  request.rawBody = undefined;
  request.body = undefined;
  return admission;
}

/**
 * For a tokens/min refusal: the limit the client did not send, when the model's ceiling, not a
 * limit, bounds the request's outputs (none for embeddings, which generate nothing).
 */
function unboundedOutputs(ctx: ShimContext, kind: InferenceKind, req: InferenceRequest, holdInput: HoldInput): TokensCounted["unbounded"] {
  if (req.outputs === 0 || ctx.pricer.outputLimit(holdInput) !== undefined) return null;
  return { param: kind === "responses" ? "max_output_tokens" : "max_tokens", perOutput: ctx.pricer.outputBound(holdInput), outputs: req.outputs };
}

/** `raw` with its `model` member's value replaced by `model`, the rest of its bytes as they were. */
function renamedModel(raw: Buffer, body: Record<string, unknown>, model: string): Buffer {
  const pieces = spliceMemberValue(raw, "model", JSON.stringify(model));
  // Null only were the walk to miss a member JSON.parse read: the request then goes re-serialized.
  return pieces ? Buffer.concat(pieces) : Buffer.from(JSON.stringify({ ...body, model }));
}

/** The upstream's body, handed over once: the request keeps no reference to it while it waits. */
export function forwarded(admission: Admission): Buffer | string {
  const body = admission.upstreamBody!;
  admission.upstreamBody = null;
  return body;
}
