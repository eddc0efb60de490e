// Whether one request of model.maxModelLen tokens fits the KV cache vLLM can allocate beside the
// weights, judged from the config.json hub-check.ts already fetched, before the instance exists:
// vLLM checks it only once the host has billed for its boot, the download and the load, and then
// exits ("To serve at least one request with the models's max seq len (N), (X GiB KV cache is
// needed, which is larger than the available KV cache memory (Y GiB)…", vllm/v1/core/kv_cache_utils.py,
// on each GPU's worker).
import { GPU_PLANS, type GpuPlan } from "./catalog.ts";
import { gb, gpuRoom } from "./config/model-size.ts";
import type { ModelConfig } from "./config/types.ts";
import { lastFlagValue, parallelLayout, setsVllmFlag } from "./config/vllm.ts";

/**
 * GB a GPU kept for what vLLM allocates beside the weights and the KV cache (activations of its
 * profiling run, CUDA graphs, the sampler's buffers), on top of the size estimate (model-size.ts),
 * which already reads the card's GiB as GB (about 1.3 GB more on a 20 GB card): docs/decisions.md.
 */
export const ACTIVATION_MARGIN_GB = 0.5;

/** Past this many times what is left, vLLM cannot start whatever the guesses got wrong: a blocker. */
const BLOCK_RATIO = 2;

/** The model and how the stack serves it: everything the check reads besides config.json. */
export interface ServedModel extends Pick<ModelConfig, "id" | "maxModelLen" | "gpuMemoryUtilization" | "extraArgs" | "tensorParallelSize" | "pipelineParallelSize"> {
  readonly plan: Pick<GpuPlan, "id" | "gpuCount" | "vramGbPerGpu">;
}

/** As hubDisagreements': what to warn about, and reasons not to create the instance. */
export interface KvFitFindings {
  readonly warnings: string[];
  readonly blockers: string[];
}

/** A token's KV cache as config.json describes it: per layer, and how tensor parallelism splits it. */
interface KvShape {
  readonly layers: number;
  /** Values a layer keeps a token, before the dtype: 2 × KV heads × head size, or MLA's one latent. */
  readonly valuesPerLayer: (tensorParallelSize: number) => number;
  /** How the numbers were read, for the message. */
  readonly how: (tensorParallelSize: number, bytes: number) => string;
}

/**
 * Flags that make the size estimate's numbers wrong for vLLM (the KV cache sized in bytes rather
 * than from gpuMemoryUtilization, weights offloaded to the CPU or quantized at load time): the
 * check is then skipped rather than warn wrongly.
 */
const SIZING_FLAGS = new Set(["--kv-cache-memory-bytes", "--cpu-offload-gb", "--quantization", "-q", "--num-gpu-blocks-override"]);

/** Judges model.maxModelLen against the KV cache the plan leaves; nothing when it cannot tell. */
export function kvFitFindings(model: ServedModel, configJson: unknown): KvFitFindings {
  const none: KvFitFindings = { warnings: [], blockers: [] };
  const shape = kvShape(configJson);
  if (shape === undefined || [...SIZING_FLAGS].some((flag) => setsVllmFlag(model.extraArgs, flag))) return none;
  const bytes = kvCacheBytes(model.extraArgs);
  const fit = fitOn(model, model.plan, model.tensorParallelSize, model.pipelineParallelSize, shape, bytes);
  // Weights that leave nothing are the size warning's finding (modelSizeWarnings), a guess from the name: not judged twice.
  if (fit === undefined || fit.leftGb <= 0 || fit.needGb <= fit.leftGb) return none;
  const what = `model.maxModelLen ${model.maxModelLen} needs about ${gb(fit.needGb)} GB of KV cache a GPU ` +
    `(${fit.perToken.toLocaleString("en-US")} bytes a token: ${shape.how(model.tensorParallelSize, bytes)}${model.pipelineParallelSize > 1 ? `, ${fit.layers} of ${shape.layers} layers a GPU` : ""}), ` +
    `more than the about ${gb(fit.leftGb)} GB model.id ${model.id} leaves a GPU on ${model.plan.id} ` +
    `(${model.plan.vramGbPerGpu} GB × gpuMemoryUtilization ${model.gpuMemoryUtilization} − about ${gb(fit.weightsGb)} GB of weights − ${ACTIVATION_MARGIN_GB} GB for activations)`;
  const blocked = fit.needGb > BLOCK_RATIO * fit.leftGb;
  const outcome = blocked
    ? `: vLLM cannot start with it ("…KV cache is needed, which is larger than the available KV cache memory"), and would find out only after the host has started billing`
    : `: vLLM will likely refuse to start ("…KV cache is needed, which is larger than the available KV cache memory"), after the host has started billing`;
  const message = `${what}${outcome}; ${remedies(model, shape, bytes, fit.leftGb)}`;
  return blocked ? { ...none, blockers: [message] } : { ...none, warnings: [message] };
}

/** What would fit: a shorter maxModelLen, an fp8 KV cache (when not already), the cheapest plan that holds it. */
function remedies(model: ServedModel, shape: KvShape, bytes: number, leftGb: number): string {
  const perToken = (b: number) => bytesPerTokenPerGpu(shape, b, model.tensorParallelSize, model.pipelineParallelSize);
  const fits = fittingLength(leftGb, perToken(bytes));
  // Room for not even a token (weights that leave a few MB) has no length to suggest.
  const out = fits > 0 ? [`set model.maxModelLen to ${fits} or less`] : [];
  if (bytes > 1) {
    out.push(`add "--kv-cache-dtype", "fp8" to model.extraArgs (halves the KV cache; ${fittingLength(leftGb, perToken(1))} tokens would fit)`);
  }
  const bigger = GPU_PLANS.filter((p) => p.id !== model.plan.id)
    .filter((p) => {
      const { tensorParallelSize, pipelineParallelSize } = parallelLayout(p.gpuCount);
      const fit = fitOn(model, p, tensorParallelSize, pipelineParallelSize, shape, bytes);
      return fit !== undefined && fit.needGb <= fit.leftGb;
    })
    .sort((a, b) => a.hourlyUsd - b.hourlyUsd)[0];
  out.push(bigger ? `or choose a plan with more GPU memory (${bigger.id}, $${bigger.hourlyUsd}/hour, is the cheapest that holds it)` : "or choose a smaller model");
  return out.join(", ");
}

/** What maxModelLen tokens need and what is left, a GPU, on `plan`; undefined when the id says no size. */
function fitOn(model: ServedModel, plan: ServedModel["plan"], tensorParallelSize: number, pipelineParallelSize: number, shape: KvShape, bytes: number) {
  const room = gpuRoom(plan, model);
  if (room === null) return undefined;
  const perToken = bytesPerTokenPerGpu(shape, bytes, tensorParallelSize, pipelineParallelSize);
  return {
    perToken,
    layers: Math.ceil(shape.layers / pipelineParallelSize),
    weightsGb: room.weightsGbPerGpu,
    leftGb: room.roomGbPerGpu - ACTIVATION_MARGIN_GB,
    needGb: (model.maxModelLen * perToken) / 1e9,
  };
}

/** Pipeline parallelism gives each GPU its layers (the busiest GPU its share rounded up). */
function bytesPerTokenPerGpu(shape: KvShape, bytes: number, tensorParallelSize: number, pipelineParallelSize: number): number {
  return Math.ceil(shape.layers / pipelineParallelSize) * shape.valuesPerLayer(tensorParallelSize) * bytes;
}

/** The longest context that fits, in whole 1,024s once there are a few (a value to copy into the config). */
function fittingLength(leftGb: number, perToken: number): number {
  const tokens = Math.floor((leftGb * 1e9) / perToken);
  return tokens >= 2048 ? Math.floor(tokens / 1024) * 1024 : tokens;
}

/**
 * Bytes a KV-cache value: 1 with `--kv-cache-dtype fp8…` in model.extraArgs (the last one, as
 * argparse keeps it), else 2: vLLM's `auto` keeps the model's bf16/fp16.
 */
export function kvCacheBytes(extraArgs: readonly string[]): number {
  const dtype = lastFlagValue(extraArgs, (flag) => flag === "--kv-cache-dtype") ?? "auto";
  return dtype.startsWith("fp8") ? 1 : 2;
}

/**
 * A token's KV cache from config.json (a multimodal model's language model under text_config), or
 * undefined when the check cannot tell or must not judge: fields missing, or attention that does
 * not keep every token in every layer (a sliding window, Gemma's and gpt-oss's interleaved local
 * layers, Llama 4's chunked attention, Mamba and linear-attention hybrids), whose KV cache is
 * smaller than the formula says: skipped rather than warned about wrongly.
 */
function kvShape(configJson: unknown): KvShape | undefined {
  const root = record(configJson);
  const text = record(root?.text_config);
  const c = text && positive(text.num_hidden_layers) !== undefined ? text : root;
  if (c === undefined) return undefined;
  const layers = positive(c.num_hidden_layers);
  if (layers === undefined || notEveryToken(c)) return undefined;
  // MLA (DeepSeek V2/V3, Kimi): one compressed latent and its rope part a layer, the same on every GPU.
  const latent = positive(c.kv_lora_rank);
  if (latent !== undefined) {
    const rope = positive(c.qk_rope_head_dim);
    if (rope === undefined) return undefined;
    return { layers, valuesPerLayer: () => latent + rope, how: (_tp, b) => `${layers} layers × (kv_lora_rank ${latent} + qk_rope_head_dim ${rope}) × ${b} bytes, MLA's one latent a layer` };
  }
  const heads = positive(c.num_attention_heads);
  if (heads === undefined) return undefined;
  // Falcon and GPT-BigCode say multi-query with a flag; ChatGLM names its KV groups.
  const kvHeads = positive(c.num_key_value_heads) ?? positive(c.num_kv_heads) ?? positive(c.multi_query_group_num) ?? (c.multi_query === true ? 1 : heads);
  const hidden = positive(c.hidden_size);
  const headDim = positive(c.head_dim) ?? (hidden === undefined ? undefined : hidden / heads);
  if (headDim === undefined) return undefined;
  // vLLM gives each GPU its share of the KV heads, and at least one (replicated past that).
  const perGpu = (tp: number) => Math.max(1, Math.floor(kvHeads / tp));
  return {
    layers,
    valuesPerLayer: (tp) => 2 * perGpu(tp) * headDim,
    how: (tp, b) => `2 (K and V) × ${layers} layers × ${perGpu(tp)} KV heads${tp > 1 ? ` of ${kvHeads} (tensor parallel ${tp})` : ""} × ${headDim} × ${b} bytes`,
  };
}

/** Attention whose KV cache does not hold every token of every layer (see kvShape). */
function notEveryToken(c: Record<string, unknown>): boolean {
  // Qwen2 configs carry a sliding_window they do not use (use_sliding_window false).
  const window = positive(c.sliding_window) !== undefined && c.use_sliding_window !== false;
  const layerTypes = Array.isArray(c.layer_types) && c.layer_types.some((t) => t !== "full_attention");
  return window || layerTypes || positive(c.attention_chunk_size) !== undefined ||
    Object.keys(c).some((k) => /^(mamba|ssm|linear_|hybrid|attn_layer_|full_attention_interval|sliding_window_pattern)/.test(k));
}

function positive(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) && v > 0 ? v : undefined;
}

function record(value: unknown): Record<string, unknown> | undefined {
  return value !== null && typeof value === "object" && !Array.isArray(value) ? value as Record<string, unknown> : undefined;
}
