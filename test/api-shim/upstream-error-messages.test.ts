import { describe, expect, it } from "vitest";
import { type SecretHider, secretRedactor } from "../../api-shim/src/observability/redaction.ts";
import { hideInternalDetails } from "../../api-shim/src/upstream/internal-details.ts";
import { upstreamStatusError } from "../../api-shim/src/upstream/upstream-errors.ts";

const noSecrets: SecretHider = (text) => text;

/**
 * Found by a mutation review of the upstream seam: an upstream's 400 in vLLM's older,
 * flat ErrorResponse (`{"object":"error","message":…,"type":…,"param":…,"code":400}`, no `error`
 * wrapper) keeps its message for the client, as the nested form's does.
 */
describe("an upstream 400 with a flat error body", () => {
  it("is told with the upstream's own message, not the generic one", () => {
    const body = JSON.stringify({ object: "error", message: "temperature must be non-negative, got -1.0.", type: "BadRequestError", param: null, code: 400 });
    const err = upstreamStatusError(400, body, "qwen2.5-7b", undefined, noSecrets);
    expect(err.status).toBe(400);
    expect(err.message).toBe("temperature must be non-negative, got -1.0.");
  });
});

describe("an upstream 400's message as the client is told it", () => {
  it("is cut to 500 characters, however long the upstream's (docs/api-shim/errors.md: at most 500)", () => {
    const long = `Input validation error: ${"the prompt repeats itself ".repeat(200)}`;
    const err = upstreamStatusError(400, JSON.stringify({ error: { message: long, type: "BadRequestError", param: null, code: 400 } }), "qwen2.5-7b", undefined, noSecrets);
    expect(err.status).toBe(400);
    expect(err.message.length).toBeLessThanOrEqual(500);
    expect(err.message.startsWith("Input validation error: the prompt repeats")).toBe(true);
  });

  it("LiteLLM's unsupported parameters given as a dict name its keys only, not a string value beside them", () => {
    const message = "litellm.UnsupportedParamsError: mistral does not support parameters: {'dimensions': 1024, 'encoding_format': 'base64'}, for model=mistral-embed. To drop these, set `litellm.drop_params=True` or for proxy:\n\n`litellm_settings:\n drop_params: true`\n";
    const err = upstreamStatusError(400, JSON.stringify({ error: { message, type: "invalid_request_error", param: null, code: "400" } }), "embed", undefined, noSecrets);
    expect(err.message).toBe("'dimensions', 'encoding_format' are not supported by model 'embed'.");
    expect(err.param).toBe("dimensions");
  });
});

describe("the deployment's insides in an upstream message (hideInternalDetails)", () => {
  it("a compose container's name with '_' and its port is hidden (aiohttp's 'Cannot connect to host')", () => {
    const text = hideInternalDetails("Cannot connect to host gpu-sandbox_vllm_1:8000 ssl:default [Connection refused]", "qwen2.5-7b");
    expect(text).not.toContain("gpu-sandbox_vllm_1");
    expect(text).toContain("[internal address]");
  });

  it("a path under /models (the model directory on the host) is hidden", () => {
    const text = hideInternalDetails("Can't load tokenizer from /models/Qwen2.5-7B-Instruct/tokenizer_config.json.", "qwen2.5-7b");
    expect(text).not.toContain("/models/");
    expect(text).toContain("[path]");
  });
});

describe("the member an upstream's 400 names in `param`", () => {
  const refusal = (param: unknown, message = "max_tokens must be at least 1, got 0.") => JSON.stringify({ error: { message, type: "BadRequestError", param, code: 400 } });

  it("is kept, a name or a path, so the SDK's error names the member (vLLM's VLLMValidationError fills it)", () => {
    expect(upstreamStatusError(400, refusal("max_tokens"), "qwen2.5-7b", undefined, noSecrets).param).toBe("max_tokens");
    expect(upstreamStatusError(400, refusal("messages[0].content"), "qwen2.5-7b", undefined, noSecrets).param).toBe("messages[0].content");
    const flat = JSON.stringify({ object: "error", message: "bad", type: "BadRequestError", param: "temperature", code: 400 });
    expect(upstreamStatusError(400, flat, "qwen2.5-7b", undefined, noSecrets).param).toBe("temperature");
  });

  it("is not LiteLLM's \"None\", nor what is no member's name", () => {
    for (const param of ["None", null, 3, "", "max tokens", "http://10.0.0.7:8000/v1", "x".repeat(101)]) {
      expect(upstreamStatusError(400, refusal(param), "qwen2.5-7b", undefined, noSecrets).param, JSON.stringify(param)).toBeNull();
    }
  });

  // Found by review: the message went through the secret hiders, the param did not, and a
  // provider's key or the deployment's own secret has a member name's shape.
  it("is not a secret: a provider's key by its shape, or the deployment's own (the upstream's key, the admin token)", () => {
    const hide = secretRedactor(["AdminToken0123456789abcdefXYZ", "sk-litellm-master-0123456789"]);
    for (const param of ["hf_" + "a1B2".repeat(9), "gsk_" + "a1B2".repeat(11), "AKIAABCDEFGHIJKLMNOP", "AdminToken0123456789abcdefXYZ"]) {
      expect(upstreamStatusError(400, refusal(param), "qwen2.5-7b", undefined, hide).param, param).toBeNull();
    }
    expect(upstreamStatusError(400, refusal("max_tokens"), "qwen2.5-7b", undefined, hide).param).toBe("max_tokens");
  });

  it("gives way to the member LiteLLM's unsupported-parameters message names", () => {
    const message = "litellm.UnsupportedParamsError: mistral does not support parameters: ['logit_bias'], for model=mistral-small.";
    expect(upstreamStatusError(400, refusal("n", message), "small", undefined, noSecrets).param).toBe("logit_bias");
  });
});
