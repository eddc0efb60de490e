import { DEFAULT_REQUEST_PRICES, DEFAULT_TIERS as SHIM_DEFAULT_TIERS } from "../../api-shim/src/config.ts";
import { creditsNumber } from "../../api-shim/src/money/money.ts";
import type { EdgeLimits, Images, Pricing, Tier } from "./types.ts";

export const DEFAULT_PLAN = "g2-gpu-rtx4000a1-s";
export const DEFAULT_IMAGE = "linode/ubuntu24.04";

/** An ungated, Apache-2.0 model that fits the default plan's 20 GB card with room for KV cache. */
export const DEFAULT_MODEL_ID = "Qwen/Qwen2.5-7B-Instruct";
/**
 * vLLM otherwise reserves KV cache for the model's full context (32k for most 7B models), which
 * does not fit next to the weights on a 20 GB card and makes vLLM refuse to start.
 */
export const DEFAULT_MAX_MODEL_LEN = 8192;
export const DEFAULT_GPU_MEMORY_UTILIZATION = 0.9;

/** Open to everyone: the endpoint is protected by API keys and TLS, not by source address. */
export const DEFAULT_ALLOWED_CIDRS: readonly string[] = ["0.0.0.0/0", "::/0"];

/**
 * Rate-limit tiers as the AI Hub API documents them (seed 004), `null` = unlimited: the shim's
 * own defaults, so the kit and the shim cannot disagree on what "developer" means.
 */
export const DEFAULT_TIERS: Readonly<Record<string, Tier>> = Object.freeze(Object.fromEntries(SHIM_DEFAULT_TIERS));

/** The shim's request prices (1 credit, 2 with `?batch=1`); no token prices unless configured. */
export const DEFAULT_PRICING: Pricing = {
  request: creditsNumber(DEFAULT_REQUEST_PRICES.request),
  batchRequest: creditsNumber(DEFAULT_REQUEST_PRICES.batchRequest),
  models: {},
};

/** nginx limits from the LiteLLM + nginx setup (seed 003): 10 r/s per IP, burst 20, 100 parallel. */
export const DEFAULT_LIMITS: EdgeLimits = { requestsPerSecond: 10, burst: 20, connections: 100, maxBodyMb: 8 };

export const DEFAULT_VOLUME_SIZE_GB = 100;
export const DEFAULT_READY_TIMEOUT_MINUTES = 30;
/** The longest readyTimeoutMinutes: vLLM's health check gives a first start this long (render/compose.ts). */
export const MAX_READY_TIMEOUT_MINUTES = 240;

/**
 * Image references. Tags are resolved to digests at deploy time (`@pulumi/docker`'s registry
 * lookup) so an image update shows up as an explicit diff; a `name@sha256:…` reference is used
 * as it is.
 */
export const DEFAULT_IMAGES: Images = {
  // Past 0.32.0's fixes for CVE-2026-115911 and CVE-2026-115918 (docs/decisions.md, "The default
  // vLLM is a current release", says what was checked against vLLM before it moved).
  vllm: "vllm/vllm-openai:v0.33.0",
  // LiteLLM's rolling pointer to its newest stable release (`main-stable` was deprecated in 2026).
  litellm: "ghcr.io/berriai/litellm-non_root:latest",
  nginx: "nginx:1.30-alpine",
  certbot: "certbot/certbot:v5.10.0",
  node: "node:24-slim",
};
