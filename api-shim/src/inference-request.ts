import { ShimError } from "./errors.ts";

/**
 * Checks the few fields metering depends on and builds the body sent upstream. Everything else
 * (unknown OpenAI parameters included) passes through: a non-streamed body is forwarded byte for
 * byte; a streamed one gains `stream_options.include_usage` (and `continuous_usage_stats` when
 * the model's upstream supports it).
 */
export type InferenceKind = "chat" | "completions" | "embeddings";

export interface InferenceRequest {
  model: string;
  stream: boolean;
  maxTokens: number | undefined;
  /** The client asked for the usage chunk (vLLM semantics: stream_options present, include_usage not false). */
  clientWantsUsage: boolean;
  clientWantsContinuous: boolean;
}

const invalid = (message: string, param: string) => new ShimError("invalid_request", { message, param });

export function parseInferenceRequest(kind: InferenceKind, body: unknown): InferenceRequest {
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new ShimError("invalid_request", { message: "Request body must be a JSON object." });
  }
  const b = body as Record<string, unknown>;
  if (typeof b.model !== "string" || b.model.trim() === "") throw invalid("'model' is required and must be a non-empty string.", "model");
  if (b.model.length > 256) throw invalid("'model' is too long.", "model");
  if (kind === "chat" && (!Array.isArray(b.messages) || b.messages.length === 0)) {
    throw invalid("'messages' is required and must be a non-empty array.", "messages");
  }
  if (kind === "completions" && b.prompt === undefined) throw invalid("'prompt' is required.", "prompt");
  if (kind === "embeddings" && b.input === undefined) throw invalid("'input' is required.", "input");
  let maxTokens: number | undefined;
  for (const param of ["max_completion_tokens", "max_tokens"] as const) {
    const v = b[param];
    if (v === undefined || v === null) continue;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) throw invalid(`'${param}' must be a non-negative integer.`, param);
    maxTokens ??= v;
  }
  let stream = false;
  if (kind !== "embeddings" && b.stream !== undefined && b.stream !== null) {
    if (typeof b.stream !== "boolean") throw invalid("'stream' must be a boolean.", "stream");
    stream = b.stream;
  }
  const so = b.stream_options;
  if (so !== undefined && so !== null && (typeof so !== "object" || Array.isArray(so))) throw invalid("'stream_options' must be an object.", "stream_options");
  const opts = (so ?? null) as Record<string, unknown> | null;
  if (opts && opts.include_usage !== undefined && typeof opts.include_usage !== "boolean") throw invalid("'stream_options.include_usage' must be a boolean.", "stream_options");
  return {
    model: b.model,
    stream,
    maxTokens,
    clientWantsUsage: opts !== null && opts.include_usage !== false,
    clientWantsContinuous: opts !== null && opts.include_usage !== false && opts.continuous_usage_stats === true,
  };
}

/** The body to forward: the client's bytes, or for streams the parsed body with usage requested. */
export function upstreamBody(raw: Buffer, body: Record<string, unknown>, req: InferenceRequest, continuous: boolean): Buffer | string {
  if (!req.stream) return raw;
  const options: Record<string, unknown> = { ...(body.stream_options as Record<string, unknown> | undefined), include_usage: true };
  if (continuous) options.continuous_usage_stats = true;
  return JSON.stringify({ ...body, stream_options: options });
}
