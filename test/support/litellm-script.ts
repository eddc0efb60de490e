import { startShim, type Harness } from "./shim-harness.ts";

/**
 * Pieces of a LiteLLM proxy's chat stream, for tests that script one as an upstream (its
 * `hosted_vllm/` model named "smart"), and the shim in front of it.
 */

/** A shim in front of `upstreamUrl`, "smart" priced a credit per token and one per request, so a prompt charged or not shows in the charge. */
export function tokenPricedShim(upstreamUrl: string): Promise<Harness> {
  const pricing = { request: 1, models: { smart: { promptPer1k: 1000, completionPer1k: 1000 } } };
  return startShim({ file: { models: [{ name: "smart" }], pricing }, env: { SHIM_UPSTREAM_URL: upstreamUrl } });
}

const frame = { id: "chatcmpl-1", created: 1, model: "smart", object: "chat.completion.chunk" };

/** One chat.completion.chunk event with `rest` (choices, usage) in LiteLLM's frame. */
export const chunk = (rest: object): string => `data: ${JSON.stringify({ ...frame, ...rest })}\n\n`;

/**
 * LiteLLM's error event where its usage chunk failed to be built (BerriAI/litellm#41187, from
 * v1.94.0): its ProxyException's dict, code a string.
 */
export const USAGE_FAILED = `data: ${JSON.stringify({ error: { message: "litellm.APIConnectionError: TypeError: 'MockValSer' object cannot be converted to 'SchemaSerializer'", type: "None", param: "None", code: "500" } })}\n\n`;

export const DONE = "data: [DONE]\n\n";
