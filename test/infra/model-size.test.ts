import { describe, expect, it } from "vitest";
import { validateConfig, type TenantConfig } from "../../infra/config.ts";
import { modelSizeWarnings, weightsGb } from "../../infra/config/model-size.ts";
import { formatPlan, planFor } from "../../infra/plan.ts";

const base = { region: "us-ord", allowedCidrs: ["0.0.0.0/0"], adminCidrs: ["81.2.69.160/32"] };
function config(raw: Record<string, unknown>): TenantConfig {
  const result = validateConfig({ ...base, ...raw }, { stack: "acme" });
  if (!result.ok) throw new Error(JSON.stringify(result.problems));
  return result.config;
}

describe("a model that looks too large for the plan or the volume", () => {
  it("is sized from its id: parameters, experts and quantization", () => {
    expect(weightsGb("Qwen/Qwen2.5-7B-Instruct")).toBe(14);
    expect(weightsGb("meta-llama/Llama-3.3-70B-Instruct")).toBe(140);
    expect(weightsGb("mistralai/Mixtral-8x7B-Instruct-v0.1")).toBe(112);
    // 4 bits a weight plus group-128 scales and the embeddings left in 16 bits: about 0.55 bytes.
    expect(weightsGb("Qwen/Qwen2.5-72B-Instruct-AWQ")).toBeCloseTo(39.6);
    expect(weightsGb("Qwen/Qwen2.5-32B-Instruct-AWQ")).toBeCloseTo(17.6);
    expect(weightsGb("neuralmagic/Meta-Llama-3.1-8B-Instruct-FP8")).toBe(8);
    expect(weightsGb("Qwen/Qwen2.5-0.5B-Instruct")).toBe(1);
    expect(weightsGb("Qwen/Qwen2.5-72B-Instruct-GPTQ-Int8")).toBe(72);
    expect(weightsGb("openai/gpt-oss-20b")).toBeCloseTo(11); // MXFP4
    expect(weightsGb("unsloth/gpt-oss-20b-BF16")).toBe(40);
    expect(weightsGb("Qwen/Qwen3-30B-A3B")).toBe(60);
    expect(weightsGb("meta-llama/Llama-4-Scout-17B-16E-Instruct")).toBeNull(); // 17B active of 109B: no guess
    expect(weightsGb("BAAI/bge-m3")).toBeNull(); // no size in the name: no guess
  });

  it("is warned about in the plan before anything bills; the default model on the default plan is not", () => {
    expect(modelSizeWarnings(config({}))).toEqual([]);
    // Llama 3.1: a model whose tool-call parser the kit knows, so the size warnings are the only ones.
    const big = config({ model: { id: "meta-llama/Llama-3.1-70B-Instruct" } });
    const warnings = planFor(big).lines.filter(([label]) => label === "Warning").map(([, text]) => text);
    expect(warnings).toEqual([
      expect.stringMatching(/^model\.id meta-llama\/Llama-3\.1-70B-Instruct looks like about 140 GB of weights, more than the 18 GB of GPU memory vLLM may use on g2-gpu-rtx4000a1-s .*it may not load.*choose a plan with more GPU memory, a smaller model, or a quantized one/),
      expect.stringMatching(/more than the 100 GB volume holds with room to spare: the download would fill it; raise volumeSizeGb$/),
    ]);
    expect(formatPlan(planFor(big))).toContain("Warning");
    // A quantized 70B model on a plan whose GPUs hold it, with a volume large enough: no warning.
    const fits = config({ model: { id: "Qwen/Qwen2.5-72B-Instruct-AWQ" }, plan: "g2-gpu-rtx4000a4-m" });
    expect(modelSizeWarnings(fits)).toEqual([]);
  });

  it("is warned about when its weights fit the GPU memory but leave no room for vLLM's KV cache", () => {
    // A 32B AWQ model (about 18 GB on the Hub) on one 20 GB card: the weights alone fit in the 18 GB
    // vLLM may use, but vLLM refuses to start without KV cache for one request of maxModelLen tokens.
    const tight = config({ model: { id: "Qwen/Qwen2.5-32B-Instruct-AWQ" } });
    expect(modelSizeWarnings(tight)).toEqual([
      expect.stringMatching(/^model\.id Qwen\/Qwen2\.5-32B-Instruct-AWQ looks like about 18 GB of weights, which leave about 0\.4 GB of the 18 GB of GPU memory vLLM may use on g2-gpu-rtx4000a1-s .* for the KV cache and activations, under the 2 GB a GPU it needs at least: .*choose a plan with more GPU memory/),
    ]);
    // The same model over two cards, and an 8B model in bf16 on one (16 GB of 18: 2 GB left), are not warned about.
    expect(modelSizeWarnings(config({ model: { id: "Qwen/Qwen2.5-32B-Instruct-AWQ" }, plan: "g2-gpu-rtx4000a2-s" }))).toEqual([]);
    expect(modelSizeWarnings(config({ model: { id: "meta-llama/Llama-3.1-8B-Instruct" } }))).toEqual([]);
  });

  it("counts that room per GPU: each card of a tensor-parallel plan needs its own KV cache and activations", () => {
    // A 34B model in bf16 (68 GB) on four 20 GB cards (72 GB vLLM may use): 4 GB left in all, 1 GB a card.
    const perGpu = config({ model: { id: "codellama/CodeLlama-34b-Instruct-hf" }, plan: "g2-gpu-rtx4000a4-m", volumeSizeGb: 200 });
    expect(modelSizeWarnings(perGpu)).toEqual([
      expect.stringMatching(/^model\.id codellama\/CodeLlama-34b-Instruct-hf looks like about 68 GB of weights, which leave about 4 GB of the 72 GB of GPU memory vLLM may use on g2-gpu-rtx4000a4-m \(4 × 20 GB/),
    ]);
    // The same plan with a 32B model in bf16 (64 GB: 2 GB a card) starts.
    expect(modelSizeWarnings(config({ model: { id: "Qwen/Qwen2.5-32B-Instruct" }, plan: "g2-gpu-rtx4000a4-m", volumeSizeGb: 200 }))).toEqual([]);
  });
});
