// `pulumi up` asks Hugging Face about model.id before the GPU instance exists: a repository vLLM
// could not download (a misspelt id, a gated one without hfToken) stops the deployment unbilled,
// a maxModelLen above the model's context is a warning, and an unreachable Hub only a warning.
import * as pulumi from "@pulumi/pulumi";
import { describe, expect, it } from "vitest";
import { validateConfig } from "../../infra/config.ts";
import { findPlan, type GpuPlan } from "../../infra/catalog.ts";
import { parallelLayout } from "../../infra/config/vllm.ts";
import { askHub, type CheckedModel, hubDisagreements, type HubAnswers } from "../../infra/hub-check.ts";
import { loggedDeploy } from "../support/logged-deploy.ts";
import { type FakeHub, OPEN_MODEL } from "../support/pulumi-mocks.ts";

const QWEN = { id: "Qwen/Qwen2.5-7B-Instruct", maxModelLen: 8192 };
const LLAMA = { id: "meta-llama/Llama-3.1-8B-Instruct", maxModelLen: 8192 };
const NO_SUCH_REPO = "model.id Qwen/Qwen2.5-7B-Instruc: no such repository on Hugging Face (check the spelling; a private one needs hfToken)";
const NO_SUCH_REVISION = "model.extraArgs --revision v9: no such revision of model.id Qwen/Qwen2.5-7B-Instruct on Hugging Face " +
  "(a branch, tag or commit of https://huggingface.co/Qwen/Qwen2.5-7B-Instruct)";

/** Answers with a model info (`gated`) and a config.json. */
const answers = (gated: unknown, config: Record<string, unknown> | number = { max_position_embeddings: 32768 }): HubAnswers => ({
  info: { status: 200, body: { id: "x", gated } },
  config: typeof config === "number" ? { status: config } : { status: 200, body: config },
});

describe("hubDisagreements (the Hub's answers, judged)", () => {
  it("finds nothing wrong with an ungated model whose context holds maxModelLen", () => {
    expect(hubDisagreements(QWEN, false, answers(false))).toEqual({ warnings: [], blockers: [] });
  });

  it("refuses a repository the Hub does not know (404), or hides from an anonymous caller (401)", () => {
    const misspelt = { ...QWEN, id: "Qwen/Qwen2.5-7B-Instruc" };
    for (const status of [404, 401]) {
      expect(hubDisagreements(misspelt, false, { info: { status }, config: { status } })).toEqual({ warnings: [], blockers: [NO_SUCH_REPO] });
    }
    expect(hubDisagreements(misspelt, true, { info: { status: 404 }, config: { status: 404 } }).blockers).toEqual([NO_SUCH_REPO]);
  });

  it("refuses a gated model without hfToken, saying how to set one after accepting its terms", () => {
    for (const gated of ["auto", "manual", true]) {
      const { warnings, blockers } = hubDisagreements(LLAMA, false, answers(gated, 401));
      expect(warnings).toEqual([]);
      expect(blockers).toHaveLength(1);
      expect(blockers[0]).toMatch(/^model\.id meta-llama\/Llama-3\.1-8B-Instruct is gated: /);
      expect(blockers[0]).toContain("https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct");
      expect(blockers[0]).toContain("printenv HF_TOKEN | pulumi config set --secret");
      expect(blockers[0]).toContain("gpu-sandbox:hfToken");
    }
  });

  it("takes the Hub's own word for a gated model refused to an anonymous caller (401, X-Error-Code GatedRepo): gated, not 'no such repository'", async () => {
    const gatedRefusal = async () => new Response(JSON.stringify({ error: "Access to model meta-llama/Llama-3.1-8B-Instruct is restricted." }), { status: 401, headers: { "x-error-code": "GatedRepo" } });
    const { warnings, blockers } = hubDisagreements(LLAMA, false, await askHub(LLAMA, undefined, gatedRefusal));
    expect(warnings).toEqual([]);
    expect(blockers).toEqual([expect.stringMatching(/^model\.id meta-llama\/Llama-3\.1-8B-Instruct is gated: /)]);
  });

  it("refuses a revision the Hub says the repository does not have (404, X-Error-Code RevisionNotFound), naming it and model.extraArgs", () => {
    const missing = { status: 404, body: { error: "Invalid rev id: v9" }, errorCode: "RevisionNotFound" };
    for (const hasToken of [false, true]) {
      expect(hubDisagreements({ ...QWEN, revision: "v9" }, hasToken, { info: missing, config: missing })).toEqual({ warnings: [], blockers: [NO_SUCH_REVISION] });
    }
  });

  it("with a revision, a 404 that does not name the revision (RepoNotFound, another code, none) is the repository missing, as it is for main", () => {
    const misspelt = { id: "Qwen/Qwen2.5-7B-Instruc", maxModelLen: 8192, revision: "v9" };
    for (const errorCode of ["RepoNotFound", "EntryNotFound", undefined]) {
      const info = { status: 404, ...(errorCode ? { errorCode } : {}) };
      expect(hubDisagreements(misspelt, false, { info, config: info })).toEqual({ warnings: [], blockers: [NO_SUCH_REPO] });
    }
  });

  it("passes a gated model with a token that can read it", () => {
    expect(hubDisagreements(LLAMA, true, answers("manual"))).toEqual({ warnings: [], blockers: [] });
  });

  it("refuses a token the Hub turns away (invalid, or the model's terms not accepted)", () => {
    const refused = [
      hubDisagreements(LLAMA, true, { info: { status: 401 }, config: { status: 401 } }),
      hubDisagreements(LLAMA, true, answers("manual", 403)),
    ];
    for (const { blockers } of refused) {
      expect(blockers).toHaveLength(1);
      expect(blockers[0]).toMatch(/^hfToken was refused for model\.id meta-llama\/Llama-3\.1-8B-Instruct \(HTTP 40[13]\)/);
      expect(blockers[0]).toMatch(/not accepted the model's terms/);
    }
  });

  it("a 403 on the model info is the token refused with hfToken set, and with none (no token to blame) only a warning", () => {
    expect(hubDisagreements(LLAMA, true, { info: { status: 403 }, config: { status: 403 } }).blockers)
      .toEqual([expect.stringMatching(/^hfToken was refused for model\.id meta-llama\/Llama-3\.1-8B-Instruct \(HTTP 403\)/)]);
    const anonymous = hubDisagreements(QWEN, false, { info: { status: 403 }, config: { status: 403 } });
    expect(anonymous.blockers).toEqual([]);
    expect(anonymous.warnings).toEqual([expect.stringMatching(/^could not check model\.id Qwen\/Qwen2\.5-7B-Instruct on Hugging Face \(HTTP 403\)/)]);
  });

  it("only warns when the Hub cannot be asked or fails, and does not judge the model", () => {
    for (const info of [{ failed: "no answer within 10 s" }, { status: 503 }, { status: 429 }]) {
      const { warnings, blockers } = hubDisagreements(QWEN, false, { info, config: { failed: "x" } });
      expect(blockers).toEqual([]);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(/^could not check model\.id Qwen\/Qwen2\.5-7B-Instruct on Hugging Face \(.+\), so it was not checked before the instance/);
    }
  });

  it("warns, naming both numbers, when maxModelLen is above the model's context", () => {
    expect(hubDisagreements({ ...QWEN, maxModelLen: 65536 }, false, answers(false)).warnings).toEqual([
      "model.maxModelLen 65536 is more than model Qwen/Qwen2.5-7B-Instruct's config.json allows (max_position_embeddings 32768): " +
      "vLLM will likely refuse to start; lower model.maxModelLen to 32768 or less",
    ]);
    // A multimodal model keeps its language model's length under text_config.
    expect(hubDisagreements({ ...QWEN, maxModelLen: 65536 }, false, answers(false, { text_config: { max_position_embeddings: 8192 } })).warnings)
      .toEqual([expect.stringMatching(/^model\.maxModelLen 65536 is more than .*\(max_position_embeddings 8192\)/)]);
  });

  it("counts a rope_scaling factor in, and stays silent without a readable config.json", () => {
    const yarn = { max_position_embeddings: 32768, rope_scaling: { type: "yarn", factor: 4 } };
    expect(hubDisagreements({ ...QWEN, maxModelLen: 131072 }, false, answers(false, yarn))).toEqual({ warnings: [], blockers: [] });
    expect(hubDisagreements({ ...QWEN, maxModelLen: 262144 }, false, answers(false, yarn)).warnings)
      .toEqual([expect.stringContaining("(max_position_embeddings 32768 × rope_scaling.factor 4 = 131072)")]);
    expect(hubDisagreements({ ...QWEN, maxModelLen: 1048576 }, false, answers(false, 404))).toEqual({ warnings: [], blockers: [] });
    expect(hubDisagreements({ ...QWEN, maxModelLen: 1048576 }, false, { ...answers(false), config: { failed: "x" } })).toEqual({ warnings: [], blockers: [] });
  });
});

/**
 * config.json as Hugging Face serves it (the fields the KV-cache check reads, values as published):
 * Llama-3.1-8B-Instruct, Qwen2.5-7B-Instruct (a sliding_window it does not use), Qwen2.5-VL-7B-Instruct
 * as transformers ≥ 4.53 writes it (the language model under text_config), Mistral-7B-v0.1 (a 4,096
 * sliding window) and an MLA model (DeepSeek-V2-Lite's attention, which Moonlight-16B-A3B shares).
 */
const CONFIGS = {
  llama31_8b: {
    architectures: ["LlamaForCausalLM"], model_type: "llama", hidden_size: 4096, intermediate_size: 14336, num_attention_heads: 32,
    num_hidden_layers: 32, num_key_value_heads: 8, max_position_embeddings: 131072, rope_theta: 500000.0, torch_dtype: "bfloat16",
    rope_scaling: { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192, rope_type: "llama3" },
  },
  qwen25_7b: {
    architectures: ["Qwen2ForCausalLM"], model_type: "qwen2", hidden_size: 3584, intermediate_size: 18944, max_position_embeddings: 32768,
    max_window_layers: 28, num_attention_heads: 28, num_hidden_layers: 28, num_key_value_heads: 4, rope_theta: 1000000.0,
    sliding_window: 131072, use_sliding_window: false, torch_dtype: "bfloat16", vocab_size: 152064,
  },
  qwen25vl_7b: {
    architectures: ["Qwen2_5_VLForConditionalGeneration"], model_type: "qwen2_5_vl", torch_dtype: "bfloat16",
    text_config: {
      model_type: "qwen2_5_vl_text", hidden_size: 3584, max_position_embeddings: 128000, max_window_layers: 28, num_attention_heads: 28,
      num_hidden_layers: 28, num_key_value_heads: 4, sliding_window: null, use_sliding_window: false, vocab_size: 152064,
      layer_types: Array.from({ length: 28 }, () => "full_attention"), rope_scaling: { mrope_section: [16, 24, 24], rope_type: "default", type: "default" },
    },
    vision_config: { depth: 32, hidden_size: 1280, fullatt_block_indexes: [7, 15, 23, 31] },
  },
  mistral_7b_v01: {
    architectures: ["MistralForCausalLM"], model_type: "mistral", hidden_size: 4096, intermediate_size: 14336, max_position_embeddings: 32768,
    num_attention_heads: 32, num_hidden_layers: 32, num_key_value_heads: 8, rope_theta: 10000.0, sliding_window: 4096, torch_dtype: "bfloat16",
  },
  mla: {
    model_type: "deepseek_v3", hidden_size: 2048, num_hidden_layers: 27, num_attention_heads: 16, num_key_value_heads: 16,
    kv_lora_rank: 512, q_lora_rank: null, qk_nope_head_dim: 128, qk_rope_head_dim: 64, v_head_dim: 128, max_position_embeddings: 163840,
  },
};

/** The model as a stack serves it: the plan's GPUs split as the kit splits them, gpuMemoryUtilization 0.9. */
function served(id: string, maxModelLen: number, planId = "g2-gpu-rtx4000a1-s", extraArgs: string[] = []): CheckedModel {
  const plan = findPlan(planId) as GpuPlan;
  return { id, maxModelLen, served: { plan, gpuMemoryUtilization: 0.9, extraArgs, ...parallelLayout(plan.gpuCount) } };
}
const LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct";

describe("hubDisagreements: does one request of maxModelLen fit the KV cache the plan leaves?", () => {
  it("finds nothing when it fits (Qwen2.5-7B's 32,768 on one 20 GB card), the sliding_window Qwen does not use notwithstanding", () => {
    expect(hubDisagreements(served("Qwen/Qwen2.5-7B-Instruct", 32768), false, answers(false, CONFIGS.qwen25_7b))).toEqual({ warnings: [], blockers: [] });
    // DeepSeek-R1-Distill-Qwen-7B's config.json: a 4,096 sliding_window, unused too; its 131,072 context is judged as full attention.
    const distill = { ...CONFIGS.qwen25_7b, max_position_embeddings: 131072, sliding_window: 4096, use_sliding_window: false };
    expect(hubDisagreements(served("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", 65536), false, answers(false, distill)).warnings)
      .toEqual([expect.stringMatching(/^model\.maxModelLen 65536 needs about 3\.8 GB of KV cache a GPU /)]);
  });

  it("warns when it does not quite fit, with the numbers and what would: the maxModelLen that fits, an fp8 KV cache, the cheapest plan that holds it", () => {
    // 2 × 32 layers × 8 KV heads × 128 × 2 bytes = 131,072 bytes a token; 16,384 tokens: 2.1 GB; left: 18 − 16 − 0.5 = 1.5 GB.
    const { warnings, blockers } = hubDisagreements(served(LLAMA_8B, 16384), true, answers(false, CONFIGS.llama31_8b));
    expect(blockers).toEqual([]);
    expect(warnings).toEqual([
      "model.maxModelLen 16384 needs about 2.1 GB of KV cache a GPU (131,072 bytes a token: 2 (K and V) × 32 layers × 8 KV heads × 128 × 2 bytes), " +
      "more than the about 1.5 GB model.id meta-llama/Llama-3.1-8B-Instruct leaves a GPU on g2-gpu-rtx4000a1-s " +
      "(20 GB × gpuMemoryUtilization 0.9 − about 16 GB of weights − 0.5 GB for activations): vLLM will likely refuse to start " +
      "(\"…KV cache is needed, which is larger than the available KV cache memory\"), after the host has started billing; " +
      "set model.maxModelLen to 11264 or less, add \"--kv-cache-dtype\", \"fp8\" to model.extraArgs (halves the KV cache; 22528 tokens would fit), " +
      "or choose a plan with more GPU memory (g2-gpu-rtx4000a2-s, $1.05/hour, is the cheapest that holds it)",
    ]);
    // The default 8,192 fits beside the same weights (1.07 GB).
    expect(hubDisagreements(served(LLAMA_8B, 8192), true, answers(false, CONFIGS.llama31_8b))).toEqual({ warnings: [], blockers: [] });
  });

  it("does not create the instance when it needs more than twice what is left (Llama-3.1-8B's 65,536 tokens: 8.6 GB for 1.5)", () => {
    const { warnings, blockers } = hubDisagreements(served(LLAMA_8B, 65536), true, answers(false, CONFIGS.llama31_8b));
    expect(warnings).toEqual([]);
    expect(blockers).toEqual([expect.stringMatching(/^model\.maxModelLen 65536 needs about 8\.6 GB of KV cache a GPU .* about 1\.5 GB .*: vLLM cannot start with it .*; set model\.maxModelLen to 11264 or less, /)]);
  });

  it("counts an fp8 KV cache (--kv-cache-dtype fp8… in model.extraArgs) at half: what warned fits, and fp8 is not suggested again", () => {
    for (const extraArgs of [["--kv-cache-dtype", "fp8"], ["--kv_cache_dtype=fp8_e4m3"]]) {
      expect(hubDisagreements(served(LLAMA_8B, 16384, undefined, extraArgs), true, answers(false, CONFIGS.llama31_8b))).toEqual({ warnings: [], blockers: [] });
    }
    const { warnings } = hubDisagreements(served(LLAMA_8B, 32768, undefined, ["--kv-cache-dtype", "fp8"]), true, answers(false, CONFIGS.llama31_8b));
    expect(warnings).toEqual([expect.stringContaining("(65,536 bytes a token: 2 (K and V) × 32 layers × 8 KV heads × 128 × 1 bytes)")]);
    expect(warnings[0]).not.toContain("--kv-cache-dtype");
  });

  it("splits it over the GPUs: on two cards (tensor parallel) each holds half the KV heads (and half the weights), on three (pipeline parallel) a third of the layers", () => {
    // 2 × 20 GB: per GPU 18 − 8 − 0.5 = 9.5 GB left, and 65,536 bytes a token: 65,536 tokens need 4.3 GB.
    expect(hubDisagreements(served(LLAMA_8B, 65536, "g2-gpu-rtx4000a2-s"), true, answers(false, CONFIGS.llama31_8b))).toEqual({ warnings: [], blockers: [] });
    const { warnings } = hubDisagreements(served(LLAMA_8B, 131072 + 65536, "g2-gpu-rtx4000a2-s"), true, answers(false, CONFIGS.llama31_8b));
    expect(warnings).toEqual([expect.stringContaining("(65,536 bytes a token: 2 (K and V) × 32 layers × 4 KV heads of 8 (tensor parallel 2) × 128 × 2 bytes)")]);
    // Three cards run pipeline parallel 3: each GPU keeps its 11 of the 32 layers (45,056 bytes a token; 262,144 tokens: 11.8 GB of 15.8).
    expect(hubDisagreements(served(LLAMA_8B, 262144, "g1-gpu-rtx6000-3"), true, answers(false, CONFIGS.llama31_8b))).toEqual({ warnings: [], blockers: [] });
  });

  it("reads a multimodal model's language model under text_config (Qwen2.5-VL)", () => {
    // 57,344 bytes a token × 65,536 = 3.8 GB; 18 − 14 − 0.5 = 3.5 GB left.
    const { warnings } = hubDisagreements(served("Qwen/Qwen2.5-VL-7B-Instruct", 65536), false, answers(false, CONFIGS.qwen25vl_7b));
    expect(warnings).toEqual([expect.stringMatching(/^model\.maxModelLen 65536 needs about 3\.8 GB .*\(57,344 bytes a token: 2 \(K and V\) × 28 layers × 4 KV heads × 128 × 2 bytes\)/)]);
  });

  it("counts an MLA model's one latent a layer (kv_lora_rank + qk_rope_head_dim), not split by tensor parallelism", () => {
    const moonlight = "moonshotai/Moonlight-16B-A3B-Instruct"; // about 32 GB: 16 a GPU on two cards, 1.5 GB left
    // 27 × (512 + 64) × 2 = 31,104 bytes a token: 32,768 tokens need 1.0 GB (as 16 heads of 128, 3.6 GB: refused).
    expect(hubDisagreements(served(moonlight, 32768, "g2-gpu-rtx4000a2-s"), false, answers(false, CONFIGS.mla))).toEqual({ warnings: [], blockers: [] });
    const { warnings, blockers } = hubDisagreements(served(moonlight, 65536, "g2-gpu-rtx4000a2-s"), false, answers(false, CONFIGS.mla));
    expect(blockers).toEqual([]);
    expect(warnings).toEqual([expect.stringContaining("(31,104 bytes a token: 27 layers × (kv_lora_rank 512 + qk_rope_head_dim 64) × 2 bytes, MLA's one latent a layer)")]);
    expect(warnings[0]).toContain("set model.maxModelLen to 48128 or less");
  });

  it("skips models whose KV cache keeps less than every token of every layer (a sliding window, hybrids) rather than warn wrongly", () => {
    const mistral = "mistralai/Mistral-7B-v0.1";
    // As full attention, 32,768 tokens would need 4.3 GB of the 3.5 left; its 4,096-token window needs far less.
    expect(hubDisagreements(served(mistral, 32768), false, answers(false, CONFIGS.mistral_7b_v01))).toEqual({ warnings: [], blockers: [] });
    expect(hubDisagreements(served(mistral, 32768), false, answers(false, { ...CONFIGS.mistral_7b_v01, sliding_window: null })).warnings).toHaveLength(1);
    const hybrids = [
      { layer_types: ["sliding_attention", "full_attention"] }, { attention_chunk_size: 8192 }, { mamba_d_state: 16 }, { full_attention_interval: 4 },
    ];
    for (const extra of hybrids) {
      expect(hubDisagreements(served(LLAMA_8B, 65536), true, answers(false, { ...CONFIGS.llama31_8b, ...extra }))).toEqual({ warnings: [], blockers: [] });
    }
  });

  it("stays quiet when config.json lacks the fields, the id no size, or model.extraArgs size the KV cache themselves", () => {
    const { num_hidden_layers: _, ...noLayers } = CONFIGS.llama31_8b;
    for (const config of [noLayers, { max_position_embeddings: 131072 }, 404]) {
      expect(hubDisagreements(served(LLAMA_8B, 65536), true, answers(false, config))).toEqual({ warnings: [], blockers: [] });
    }
    expect(hubDisagreements(served("acme/chat-model", 1048576), true, answers(false, CONFIGS.llama31_8b)).blockers).toEqual([]);
    // Weights that leave nothing (Qwen2.5-32B-AWQ, about 18 GB of 18) are the size warning's finding, a guess from the name: not a blocker here.
    const qwen32 = { ...CONFIGS.qwen25_7b, hidden_size: 5120, num_attention_heads: 40, num_hidden_layers: 64, num_key_value_heads: 8 };
    expect(hubDisagreements(served("Qwen/Qwen2.5-32B-Instruct-AWQ", 8192), false, answers(false, qwen32))).toEqual({ warnings: [], blockers: [] });
    expect(hubDisagreements(served(LLAMA_8B, 65536, undefined, ["--kv-cache-memory-bytes", "20000000000"]), true, answers(false, CONFIGS.llama31_8b)).blockers).toEqual([]);
    // Weights offloaded to the CPU or quantized at load, or a block count given: the estimate's numbers are not vLLM's, so
    // what would block in bf16 (above) is left alone rather than refused.
    for (const extraArgs of [["--cpu-offload-gb", "8"], ["--quantization", "fp8"], ["-q", "fp8"], ["--quantization=fp8"], ["--num-gpu-blocks-override", "4096"]]) {
      expect(hubDisagreements(served(LLAMA_8B, 65536, undefined, extraArgs), true, answers(false, CONFIGS.llama31_8b)), extraArgs.join(" ")).toEqual({ warnings: [], blockers: [] });
    }
  });
});

describe("hubDisagreements: the KV-cache check's edges", () => {
  const llama = (maxModelLen: number, planId?: string, extraArgs?: string[], config: Record<string, unknown> = CONFIGS.llama31_8b) =>
    hubDisagreements(served(LLAMA_8B, maxModelLen, planId, extraArgs), true, answers(false, config));

  it("blocks from twice what is left, and only warns below it (Llama-3.1-8B on one card: 1.5 GB left)", () => {
    expect(llama(24576).blockers).toEqual([expect.stringMatching(/^model\.maxModelLen 24576 needs about 3\.2 GB/)]); // 2.15 times
    const { warnings, blockers } = llama(22528); // 1.97 times
    expect(blockers).toEqual([]);
    expect(warnings).toEqual([expect.stringMatching(/^model\.maxModelLen 22528 needs about 3 GB/)]);
  });

  it("reads the last --kv-cache-dtype, as vLLM's argparse keeps it", () => {
    expect(llama(16384, undefined, ["--kv-cache-dtype", "fp8", "--kv-cache-dtype", "auto"]).warnings).toEqual([expect.stringContaining("× 2 bytes)")]);
    expect(llama(16384, undefined, ["--kv-cache-dtype", "auto", "--kv-cache-dtype=fp8"])).toEqual({ warnings: [], blockers: [] });
  });

  it("reads the KV heads under each name config.json gives them, a multi-query model's one kept on each GPU", () => {
    const { num_key_value_heads: _, ...noKvHeads } = CONFIGS.llama31_8b;
    for (const named of [{ num_kv_heads: 8 }, { multi_query_group_num: 8 }]) {
      expect(llama(16384, undefined, [], { ...noKvHeads, ...named }).warnings, JSON.stringify(named)).toEqual([expect.stringContaining("× 8 KV heads × 128 × 2 bytes)")]);
    }
    // One KV head (16,384 bytes a token): 65,536 tokens fit in 1.5 GB, where 32 heads would need 34 GB.
    expect(llama(65536, undefined, [], { ...noKvHeads, multi_query: true })).toEqual({ warnings: [], blockers: [] });
    // On two cards the one KV head is on both: 1,048,576 tokens need 17.2 GB a GPU of 9.5, not nothing.
    expect(llama(1048576, "g2-gpu-rtx4000a2-s", [], { ...CONFIGS.llama31_8b, num_key_value_heads: 1 }).warnings)
      .toEqual([expect.stringContaining("(16,384 bytes a token: 2 (K and V) × 32 layers × 1 KV heads of 1 (tensor parallel 2) × 128 × 2 bytes)")]);
  });

  it("takes head_dim from config.json over hidden_size / num_attention_heads (Qwen3-4B: 128, not 80)", () => {
    const qwen3_4b = { model_type: "qwen3", hidden_size: 2560, head_dim: 128, num_attention_heads: 32, num_hidden_layers: 36, num_key_value_heads: 8, torch_dtype: "bfloat16" };
    // 2 × 36 × 8 × 128 × 2 = 147,456 bytes a token: 65,536 tokens need 9.7 GB of the 9.5 left (as 80, 6 GB: fits).
    expect(hubDisagreements(served("Qwen/Qwen3-4B", 65536), false, answers(false, qwen3_4b)).warnings).toEqual([expect.stringContaining("(147,456 bytes a token:")]);
  });

  it("gives the busiest pipeline-parallel GPU its layers rounded up (11 of 32 on three cards)", () => {
    expect(llama(393216, "g1-gpu-rtx6000-3").warnings)
      .toEqual([expect.stringContaining("(45,056 bytes a token: 2 (K and V) × 32 layers × 8 KV heads × 128 × 2 bytes, 11 of 32 layers a GPU)")]);
  });

  it("suggests a plan that holds it with the plan's own split (two cards: tensor parallel, half the KV heads each)", () => {
    // 131,072 tokens: 17.2 GB on one card; on two, 8.6 GB a GPU of the 9.5 left.
    expect(llama(131072).blockers).toEqual([expect.stringContaining("or choose a plan with more GPU memory (g2-gpu-rtx4000a2-s, ")]);
  });

  it("suggests no maxModelLen when what is left holds not even a token", () => {
    const m = served(LLAMA_8B, 8192);
    // 20 GB × 0.825005 − 16 − 0.5: about 100,000 bytes left, less than one token's 131,072.
    const { blockers } = hubDisagreements({ ...m, served: { ...m.served!, gpuMemoryUtilization: 0.825005 } }, true, answers(false, CONFIGS.llama31_8b));
    expect(blockers).toHaveLength(1);
    expect(blockers[0]).not.toContain("set model.maxModelLen to");
    expect(blockers[0]).toContain("add \"--kv-cache-dtype\", \"fp8\"");
  });
});

describe("askHub", () => {
  it("asks for the model info and config.json, with the token as a Bearer header when there is one", async () => {
    const seen: [string, string | null][] = [];
    const fake = async (url: string | URL | Request, init?: RequestInit) => {
      seen.push([String(url), new Headers(init?.headers).get("authorization")]);
      return String(url).endsWith("config.json") ? Response.json({ max_position_embeddings: 4096 }) : Response.json({ gated: "auto" });
    };
    expect(await askHub(LLAMA, "hf_secret", fake)).toEqual({
      info: { status: 200, body: { gated: "auto" } }, config: { status: 200, body: { max_position_embeddings: 4096 } },
    });
    expect(seen.sort()).toEqual([
      ["https://huggingface.co/api/models/meta-llama/Llama-3.1-8B-Instruct", "Bearer hf_secret"],
      ["https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct/resolve/main/config.json", "Bearer hf_secret"],
    ]);
    seen.length = 0;
    await askHub(LLAMA, undefined, fake);
    expect(seen.map(([, auth]) => auth)).toEqual([null, null]);
  });

  it("asks about the revision vLLM downloads, URL-encoded as huggingface_hub does (quote(revision, safe=\"\")), and about main as before", async () => {
    const seen: string[] = [];
    const fake = async (url: string | URL | Request) => { seen.push(String(url)); return Response.json({}); };
    await askHub({ id: QWEN.id, revision: "refs/pr/1" }, undefined, fake);
    expect(seen.sort()).toEqual([
      "https://huggingface.co/Qwen/Qwen2.5-7B-Instruct/resolve/refs%2Fpr%2F1/config.json",
      "https://huggingface.co/api/models/Qwen/Qwen2.5-7B-Instruct/revision/refs%2Fpr%2F1",
    ]);
    seen.length = 0;
    // Python's quote escapes what encodeURIComponent leaves alone: ! ' ( ) *.
    await askHub({ id: QWEN.id, revision: "v1.0(beta)!*'~" }, undefined, fake);
    expect(seen.sort()).toEqual([
      "https://huggingface.co/Qwen/Qwen2.5-7B-Instruct/resolve/v1.0%28beta%29%21%2A%27~/config.json",
      "https://huggingface.co/api/models/Qwen/Qwen2.5-7B-Instruct/revision/v1.0%28beta%29%21%2A%27~",
    ]);
    seen.length = 0;
    await askHub({ id: QWEN.id, revision: "main" }, undefined, fake);
    expect(seen.sort()).toEqual([
      "https://huggingface.co/Qwen/Qwen2.5-7B-Instruct/resolve/main/config.json",
      "https://huggingface.co/api/models/Qwen/Qwen2.5-7B-Instruct",
    ]);
  });

  it("takes an answer for the Hub's only when it is JSON or carries the Hub's X-Error-Code: a proxy's page in between (a 200 login page, a 403 block page) leaves the model unchecked", async () => {
    const page = (status: number) => async () => new Response("<html>Access denied by policy</html>", { status, headers: { "content-type": "text/html" } });
    for (const status of [200, 403, 404]) {
      const asked = await askHub(LLAMA, "hf_secret", page(status));
      expect(asked.info).toEqual({ failed: `HTTP ${status} with an answer that is not Hugging Face's (a proxy in between?)` });
      const { warnings, blockers } = hubDisagreements(LLAMA, true, asked);
      expect(blockers).toEqual([]);
      expect(warnings).toEqual([`could not check model.id ${LLAMA.id} on Hugging Face (HTTP ${status} with an answer that is not Hugging Face's (a proxy in between?)), so it was not checked before the instance`]);
    }
    // The Hub's own refusal of a gated file is text, with its error code in a header: still the Hub's.
    const gatedFile = async () => new Response("Access to model meta-llama/Llama-3.1-8B-Instruct is restricted.", { status: 403, headers: { "x-error-code": "GatedRepo" } });
    expect((await askHub(LLAMA, "hf_secret", gatedFile)).config).toEqual({ status: 403, body: undefined, errorCode: "GatedRepo" });
  });

  it("names the network's reason when it cannot ask (fetch's cause: DNS, a refused connection)", async () => {
    const asked = await askHub({ id: "a/b" }, undefined, async () => { throw new TypeError("fetch failed", { cause: new Error("getaddrinfo ENOTFOUND huggingface.co") }); });
    expect(asked.info).toEqual({ failed: "fetch failed: getaddrinfo ENOTFOUND huggingface.co" });
  });

  it("gives up after its timeout, and says so", async () => {
    const silent = (_url: string | URL | Request, init?: RequestInit) => new Promise<Response>((_, reject) => {
      init?.signal?.addEventListener("abort", () => reject(init.signal!.reason));
    });
    const started = Date.now();
    const asked = await askHub(QWEN, undefined, silent, 100);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(asked.info).toEqual({ failed: "no answer within 0.1 s" });
  });
});

describe("pulumi up with the model checked on Hugging Face", () => {
  /** Runs the whole tenant program against `hub`; what it registered, warned, and failed with. */
  async function deploy(hub: FakeHub, settings: Record<string, unknown> = {}) {
    const validated = validateConfig({ region: "us-ord", adminCidrs: ["81.2.69.7/32"], ...settings }, { stack: "acme" });
    if (!validated.ok) throw new Error(JSON.stringify(validated.problems));
    const { resources, ...logged } = await loggedDeploy(validated.config, { hub });
    return { names: resources.map((r) => r.name), ...logged };
  }
  const notFound: FakeHub = () => Response.json({ error: "Repository not found" }, { status: 404, headers: { "x-error-code": "RepoNotFound" } });
  /** A gated model: its info is public; its files need a token (any token, here). */
  const gated: FakeHub = (url) => url.pathname.startsWith("/api/models/") ? Response.json({ gated: "manual" }) : OPEN_MODEL(url);

  it("does not create the instance for a repository Hugging Face does not know", async () => {
    const { names, errors, failures } = await deploy(notFound, { model: { id: "Qwen/Qwen2.5-7B-Instruc" } });
    expect(names).not.toContain("acme-instance");
    expect(names).not.toContain("acme-host-ready");
    expect(failures.length).toBeGreaterThan(0);
    expect(failures.every((e) => e instanceof pulumi.ResourceError)).toBe(true);
    expect(errors).toEqual([`not creating the GPU instance: ${NO_SUCH_REPO}.`]);
  });

  it("does not create the instance for a gated model without hfToken", async () => {
    const { names, errors, failures } = await deploy(gated, { model: { id: LLAMA.id } });
    expect(names).not.toContain("acme-instance");
    expect(failures.length).toBeGreaterThan(0);
    expect(errors).toEqual([expect.stringMatching(/^not creating the GPU instance: model\.id meta-llama\/Llama-3\.1-8B-Instruct is gated: .*printenv HF_TOKEN/)]);
  });

  it("creates it for a gated model with hfToken, sending the token to the Hub and logging it nowhere", async () => {
    const { names, errors, failures, warnings, hubRequests } = await deploy(gated, { model: { id: LLAMA.id }, hfToken: "hf_tenant_token" });
    expect(failures).toEqual([]);
    expect(errors).toEqual([]);
    expect(names).toEqual(expect.arrayContaining(["acme-instance", "acme-host-ready"]));
    expect(hubRequests.map((r) => r.authorization)).toEqual(["Bearer hf_tenant_token", "Bearer hf_tenant_token"]);
    expect(warnings.join("\n")).not.toContain("hf_tenant_token");
  });

  it("does not create the instance for a --revision the repository does not have, and creates it for one it has", async () => {
    /** A repository with a tag v1.0 besides main; any other revision is the Hub's RevisionNotFound. */
    const tagged: FakeHub = (url) => {
      const rev = /^\/api\/models\/[^/]+\/[^/]+\/revision\/([^/]+)$/.exec(url.pathname)?.[1] ?? /^\/[^/]+\/[^/]+\/resolve\/([^/]+)\//.exec(url.pathname)?.[1];
      if (rev === undefined || rev === "main" || rev === "v1.0") return OPEN_MODEL(url);
      return Response.json({ error: `Invalid rev id: ${rev}` }, { status: 404, headers: { "x-error-code": "RevisionNotFound" } });
    };
    const bad = await deploy(tagged, { model: { extraArgs: ["--revision", "nosuch"] } });
    expect(bad.names).not.toContain("acme-instance");
    expect(bad.names).not.toContain("acme-host-ready");
    expect(bad.failures.length).toBeGreaterThan(0);
    expect(bad.errors).toEqual(["not creating the GPU instance: model.extraArgs --revision nosuch: no such revision of model.id Qwen/Qwen2.5-7B-Instruct " +
      "on Hugging Face (a branch, tag or commit of https://huggingface.co/Qwen/Qwen2.5-7B-Instruct)."]);

    const good = await deploy(tagged, { model: { extraArgs: ["--revision=v1.0"] } });
    expect(good.failures).toEqual([]);
    expect(good.errors).toEqual([]);
    expect(good.names).toEqual(expect.arrayContaining(["acme-instance", "acme-host-ready"]));
    expect(good.hubRequests.map((r) => r.url).sort()).toEqual([
      "https://huggingface.co/Qwen/Qwen2.5-7B-Instruct/resolve/v1.0/config.json",
      "https://huggingface.co/api/models/Qwen/Qwen2.5-7B-Instruct/revision/v1.0",
    ]);
  });

  it("creates it, with a warning, when maxModelLen is above the model's context", async () => {
    const short: FakeHub = (url) => url.pathname.endsWith("/config.json") ? Response.json({ max_position_embeddings: 4096 }) : OPEN_MODEL(url);
    const { names, warnings, failures } = await deploy(short, { model: { maxModelLen: 8192 } });
    expect(failures).toEqual([]);
    expect(names).toContain("acme-instance");
    expect(warnings).toContain("model.maxModelLen 8192 is more than model Qwen/Qwen2.5-7B-Instruct's config.json allows (max_position_embeddings 4096): " +
      "vLLM will likely refuse to start; lower model.maxModelLen to 4096 or less");
  });

  it("does not create the instance when maxModelLen's KV cache clearly cannot fit beside the weights, and creates it, with a warning, when it likely cannot", async () => {
    const llama: FakeHub = (url) => url.pathname.endsWith("/config.json") ? Response.json(CONFIGS.llama31_8b) : OPEN_MODEL(url);
    const blocked = await deploy(llama, { model: { id: LLAMA_8B, maxModelLen: 65536 } });
    expect(blocked.names).not.toContain("acme-instance");
    expect(blocked.failures.length).toBeGreaterThan(0);
    expect(blocked.errors).toEqual([expect.stringMatching(/^not creating the GPU instance: model\.maxModelLen 65536 needs about 8\.6 GB of KV cache a GPU .*on g2-gpu-rtx4000a1-s .*set model\.maxModelLen to 11264 or less/)]);

    const warned = await deploy(llama, { model: { id: LLAMA_8B, maxModelLen: 16384 } });
    expect(warned.failures).toEqual([]);
    expect(warned.names).toContain("acme-instance");
    expect(warned.warnings).toEqual(expect.arrayContaining([expect.stringMatching(/^model\.maxModelLen 16384 needs about 2\.1 GB of KV cache a GPU /)]));

    // The plan's GPUs and the stack's extraArgs reach the check: two cards, or an fp8 KV cache, hold what one card in bf16 did not.
    for (const settings of [{ plan: "g2-gpu-rtx4000a2-s" }, { model: { id: LLAMA_8B, maxModelLen: 16384, extraArgs: ["--kv-cache-dtype", "fp8"] } }]) {
      const fits = await deploy(llama, { model: { id: LLAMA_8B, maxModelLen: 16384 }, ...settings });
      expect(fits.failures).toEqual([]);
      expect(fits.warnings.filter((w) => w.includes("KV cache a GPU"))).toEqual([]);
    }
  });

  it("creates it, with a warning, when Hugging Face cannot be reached", async () => {
    const { names, warnings, errors, failures } = await deploy(() => { throw new TypeError("fetch failed"); });
    expect(failures).toEqual([]);
    expect(errors).toEqual([]);
    expect(names).toEqual(expect.arrayContaining(["acme-instance", "acme-host-ready"]));
    expect(warnings).toContain("could not check model.id Qwen/Qwen2.5-7B-Instruct on Hugging Face (fetch failed), so it was not checked before the instance");
  });
});
