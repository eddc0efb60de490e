import type { GpuPlan } from "../catalog.ts";
import type { ModelConfig, TenantConfig } from "./types.ts";

/**
 * A model's weights guessed from its Hugging Face id, for a warning before anything bills: a
 * model too large for the plan's GPUs or for the volume is otherwise found out only when vLLM
 * fails to load it, 15 to 75 billed minutes later. A guess from the name (`Qwen2.5-7B`,
 * `Mixtral-8x7B`, `-AWQ`), so it warns and never refuses; ids without a size say nothing.
 */
export function weightsGb(id: string): number | null {
  const name = id.split("/").at(-1) ?? id;
  // `-16E` (Llama 4's experts): the size in the name is the active parameters, not the weights.
  if (/(?:^|[-_.])\d+E(?=$|[-_.])/.test(name)) return null;
  const size = /(?:^|[-_.])(?:(\d+)x)?(\d+(?:\.\d+)?)[bB](?=$|[-_.])/.exec(name);
  if (size === null) return null;
  const billions = Number(size[2]) * (size[1] === undefined ? 1 : Number(size[1]));
  // Quantized weights: 8-bit (FP8, INT8: `GPTQ-Int8` is 8-bit) or 4-bit (AWQ, GPTQ, MXFP4 as in
  // gpt-oss, …) unless the name says BF16/FP16; otherwise bf16, 2 bytes each. A 4-bit model is
  // more than half a byte a weight: each group of 128 has its scales (and zeros), and the
  // embeddings stay 16-bit, so Qwen2.5-32B-Instruct-AWQ is about 18 GB, not 16.
  const bytes = /bf16|fp16/i.test(name) ? 2 : /fp8|int8|8bit|w8a8/i.test(name) ? 1 : /awq|gptq|int4|4bit|w4a16|bnb|gguf|q4|fp4|gpt-oss/i.test(name) ? FOUR_BIT_BYTES : 2;
  return billions * bytes;
}

/** Bytes a weight of a 4-bit model: 4 bits, group-128 scales and zeros, 16-bit embeddings. */
const FOUR_BIT_BYTES = 0.55;

/**
 * The least GPU memory (GB) a GPU needs beside its share of the weights: vLLM refuses to start
 * unless its KV cache holds one request of model.maxModelLen tokens (a 7B-8B model's 8,192 take
 * 0.5-1 GB), and each GPU keeps its activations and CUDA graphs too. Llama-3.1-8B in bf16 (16 GB
 * of the 18 vLLM may use on a 20 GB card) starts with this much; a 32B AWQ model there does not.
 */
const HEADROOM_GB_PER_GPU = 2;

/** A size for a message: whole GB, or tenths under 10. */
export const gb = (n: number) => (n < 10 ? Math.round(n * 10) / 10 : Math.round(n));

/**
 * What the guessed weights leave a GPU, in the GB of the size warning below (the one estimate of
 * it; the KV-cache check in kv-fit.ts takes its numbers from here): the GPU memory vLLM may use
 * (the card's GB × gpuMemoryUtilization) less the GPU's share of the weights (tensor and pipeline
 * parallelism spread them over every GPU). null when the id says no size.
 */
export interface GpuRoom {
  readonly weightsGb: number;
  readonly usableGbPerGpu: number;
  readonly weightsGbPerGpu: number;
  readonly roomGbPerGpu: number;
}

export function gpuRoom(plan: Pick<GpuPlan, "gpuCount" | "vramGbPerGpu">, model: Pick<ModelConfig, "id" | "gpuMemoryUtilization">): GpuRoom | null {
  const weights = weightsGb(model.id);
  if (weights === null) return null;
  const usableGbPerGpu = plan.vramGbPerGpu * model.gpuMemoryUtilization;
  const weightsGbPerGpu = weights / plan.gpuCount;
  return { weightsGb: weights, usableGbPerGpu, weightsGbPerGpu, roomGbPerGpu: usableGbPerGpu - weightsGbPerGpu };
}

/** Warnings when the model's guessed weights cannot fit the plan's GPU memory or the volume. */
export function modelSizeWarnings(config: TenantConfig): string[] {
  const { plan } = config;
  const room = gpuRoom(plan, config.model);
  if (room === null) return [];
  const weights = room.weightsGb;
  const usable = plan.gpuCount * room.usableGbPerGpu;
  const about = `model.id ${config.model.id} looks like about ${Math.round(weights)} GB of weights`;
  const warnings: string[] = [];
  const memory = `the ${Math.round(usable)} GB of GPU memory vLLM may use on ${plan.id} (${plan.gpuCount} × ${plan.vramGbPerGpu} GB × gpuMemoryUtilization ${config.model.gpuMemoryUtilization})`;
  if (weights > usable) {
    warnings.push(`${about}, more than ${memory}: it may not load, and that shows only after the host has started billing; choose a plan with more GPU memory, a smaller model, or a quantized one (AWQ, GPTQ, FP8)`);
  } else if (room.roomGbPerGpu < HEADROOM_GB_PER_GPU) {
    warnings.push(`${about}, which leave about ${gb(usable - weights)} GB of ${memory} for the KV cache and activations, under the ${HEADROOM_GB_PER_GPU} GB a GPU it needs at least: ` +
      `vLLM refuses to start without KV cache for one request of model.maxModelLen (${config.model.maxModelLen}) tokens, and that shows only after the host has started billing; ` +
      "choose a plan with more GPU memory, a smaller model, or a quantized one (AWQ, GPTQ, FP8)");
  }
  if (weights > config.volumeSizeGb * 0.9) {
    warnings.push(`${about}, more than the ${config.volumeSizeGb} GB volume holds with room to spare: the download would fill it; raise volumeSizeGb`);
  }
  return warnings;
}
