import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { parse } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { validateConfig } from "../../infra/config.ts";
import { renderBundle } from "../../infra/render/bundle.ts";
import { Secret } from "../../infra/secret.ts";
import { DEFAULT_FAKE, startShim, type Harness } from "../support/shim-harness.ts";

/**
 * The shim in front of LiteLLM, the deployed upstream (templates/compose.yaml). The fake below
 * answers as LiteLLM's proxy does (BerriAI/litellm): errors as ProxyException.to_dict(),
 * `{"error":{"message","type","param","code":"<status>"}}` with that HTTP status; messages
 * prefixed by the exception class (`litellm.BadRequestError: `, exceptions.py) and the
 * provider (`Hosted_vllmException - `, exception_mapping_utils.py), and suffixed by the router
 * (`. Received Model Group=<alias>\nAvailable Model Group Fallbacks=None`, router.py).
 */
interface FakeLiteLLM {
  server: Server;
  url: string;
  bodies: Record<string, unknown>[];
  /** The next answers' status and message; null: a text completion. */
  refuse: { status: number; message: string } | null;
}

async function fakeLiteLLM(): Promise<FakeLiteLLM> {
  const fake: FakeLiteLLM = { server: createServer(), url: "", bodies: [], refuse: null };
  fake.server.on("request", (req, res) => {
    let raw = "";
    req.setEncoding("utf8");
    req.on("data", (c: string) => (raw += c));
    req.on("end", () => {
      const body = JSON.parse(raw) as Record<string, unknown>;
      fake.bodies.push(body);
      const send = (status: number, json: unknown) => res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(json));
      if (fake.refuse) return send(fake.refuse.status, { error: { message: fake.refuse.message, type: null, param: null, code: String(fake.refuse.status) } });
      // main.py text_completion(): a prompt neither a string nor a list of strings (token IDs, or
      // none beside prompt_embeds) raises "Unmapped prompt format" for hosted_vllm; unmapped, it
      // becomes APIConnectionError (500), or a RateLimitError (429) when the echoed prompt holds
      // a standalone 429 (exception_mapping_utils.py).
      const prompt = body.prompt;
      const text = typeof prompt === "string" || (Array.isArray(prompt) && typeof prompt[0] === "string");
      if (req.url === "/v1/completions" && !text) {
        const error = `Unmapped prompt format. Your prompt is neither a list of strings nor a string. prompt=${JSON.stringify(prompt ?? null).replaceAll(",", ", ")}. File an issue - https://github.com/BerriAI/litellm/issues`;
        const status = /\b429\b/.test(error) ? 429 : 500;
        const message = status === 429 ? `litellm.RateLimitError: RateLimitError: Hosted_vllmException - ${error}` : `litellm.APIConnectionError: ${error}`;
        return send(status, { error: { message: message + GROUP, type: null, param: null, code: String(status) } });
      }
      send(200, { id: "cmpl-1", object: "text_completion", created: 1, model: body.model, choices: [{ text: " ok", index: 0, logprobs: null, finish_reason: "stop" }], usage: { completion_tokens: 1, prompt_tokens: 3, total_tokens: 4 } });
    });
  });
  await new Promise<void>((r) => fake.server.listen(0, "127.0.0.1", r));
  fake.url = `http://127.0.0.1:${(fake.server.address() as AddressInfo).port}/v1`;
  return fake;
}

const GROUP = ". Received Model Group=smart\nAvailable Model Group Fallbacks=None";

describe("LiteLLM's own refusals, as the client sees them", () => {
  let h: Harness;
  let fake: FakeLiteLLM;
  let key: string;
  const chat = { model: "smart", messages: [{ role: "user", content: "hi" }], max_tokens: 2 };
  /** SHIM_UPSTREAM_API_KEY: an operator's own LiteLLM master key, its punctuation no key shape takes. */
  const masterKey = "lm-master-2024!Winter!Prod!Key";
  /** The shim's answer to `body` when LiteLLM refuses it with `status` and `message`. */
  const refusedWith = async (status: number, message: string, body: object = chat, path = "/v1/chat/completions") => {
    fake.refuse = { status, message };
    const res = await h.post(key, path, body);
    return { status: res.status, text: await res.text() };
  };

  beforeAll(async () => {
    fake = await fakeLiteLLM();
    h = await startShim({ file: { models: [{ name: "smart" }] }, env: { SHIM_UPSTREAM_URL: fake.url, SHIM_UPSTREAM_API_KEY: masterKey } });
    h.secrets.add(masterKey); // and no log line may hold it (checked at close)
    ({ key } = await h.createKey({ credits: 1000 }));
  });
  afterAll(async () => {
    await h.close();
    fake.server.close();
  });

  // Found by review: a refusal quoting the credential the shim sent reached the client, as only
  // the shapes of keys were hidden from it.
  it("a refusal that quotes the key the shim sent the upstream is relayed without it", async () => {
    for (const message of [`Invalid API key: ${masterKey}`, `litellm.BadRequestError: Authorization header 'Bearer ${masterKey}' rejected${GROUP}`]) {
      const res = await refusedWith(400, message);
      expect(res.status).toBe(400);
      expect(res.text, message).toContain("[redacted]");
      expect(res.text, message).not.toContain("Prod!Key");
    }
  });

  it("an unsupported parameter is named with the model the client asked for, not the provider's model behind it, and without advice the shim refuses", async () => {
    // litellm/utils.py _check_valid_arg (drop_params: false, as rendered).
    const unsupported = "litellm.UnsupportedParamsError: anthropic does not support parameters: ['logit_bias'], for model=claude-3-5-sonnet-20241022. To drop these, set `litellm.drop_params=True` or for proxy:\n\n`litellm_settings:\n drop_params: true`\n. \n If you want to use these params dynamically send allowed_openai_params=['logit_bias'] in your request.";
    const one = await refusedWith(400, unsupported + GROUP, { ...chat, logit_bias: { "1": 5 } });
    expect(one.status).toBe(400);
    expect(JSON.parse(one.text).error).toEqual({ message: "'logit_bias' is not supported by model 'smart'.", type: "invalid_request_error", param: "logit_bias", code: "invalid_request" });
    for (const hidden of ["claude", "anthropic", "drop_params", "allowed_openai_params", "Model Group"]) expect(one.text).not.toContain(hidden);
    // Several at once; and the embeddings' form, a dict of the values.
    const two = await refusedWith(400, unsupported.replaceAll("['logit_bias']", "['logit_bias', 'top_logprobs']") + GROUP);
    expect(JSON.parse(two.text).error).toMatchObject({ message: "'logit_bias', 'top_logprobs' are not supported by model 'smart'.", param: "logit_bias" });
    const dict = "litellm.UnsupportedParamsError: mistral does not support parameters: {'dimensions': 1024, 'encoding_format': {'a': 1}}, for model=mistral-embed. To drop these, set `litellm.drop_params=True` or for proxy:\n\n`litellm_settings:\n drop_params: true`\n";
    const embeds = await refusedWith(400, dict + GROUP, { model: "smart", input: "hi", dimensions: 1024 }, "/v1/embeddings");
    expect(JSON.parse(embeds.text).error).toMatchObject({ message: "'dimensions', 'encoding_format' are not supported by model 'smart'.", param: "dimensions" });
  });

  it("other messages come without LiteLLM's exception and provider prefixes and the router's model-group text", async () => {
    const vllmBody = JSON.stringify({ error: { message: "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens.", type: "BadRequestError", param: null, code: 400 } });
    const cases: [string, string][] = [
      // vLLM's own error body, as LiteLLM's httpx handler quotes it.
      [`litellm.BadRequestError: Hosted_vllmException - ${vllmBody}${GROUP}`, "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens."],
      [`litellm.ContextWindowExceededError: ContextWindowExceededError: AnthropicException - prompt is too long: 250000 tokens > 200000 maximum${GROUP}\nError doing the fallback: none`, "prompt is too long: 250000 tokens > 200000 maximum"],
      [`litellm.BadRequestError: OpenAIException - Invalid 'temperature': decimal above maximum value.${GROUP}`, "Invalid 'temperature': decimal above maximum value."],
    ];
    for (const [message, shown] of cases) {
      const res = await refusedWith(400, message);
      expect(res.status).toBe(400);
      expect(JSON.parse(res.text).error.message, message).toBe(shown);
    }
    // Gemini's key is in the URL LiteLLM quotes (LiteLLM issue #24902): the client gets the URL without its query.
    const geminiKey = "AIzaSyD-THE-OPERATORS-GEMINI-KEY-0123456";
    h.secrets.add(geminiKey); // and no log line may hold it (checked at close)
    const gemini = await refusedWith(400, `litellm.BadRequestError: GeminiException BadRequestError - Client error '400 Bad Request' for url 'https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:generateContent?key=${geminiKey}'${GROUP}`);
    expect(gemini.status).toBe(400);
    expect(gemini.text).not.toContain("AIza");
    expect(JSON.parse(gemini.text).error.message).toBe("Client error '400 Bad Request' for url 'https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:generateContent?…'");
    // A message that is not LiteLLM's (vLLM's, directly) is passed on as it is.
    const plain = "1 validation error for ChatCompletionRequest: Received Model Group is a phrase here";
    expect(JSON.parse((await refusedWith(400, plain)).text).error.message).toBe(plain);
  });
});

describe("prompts that are not text on /v1/completions, for a model whose upstream takes only text (tokenPrompts: false)", () => {
  let h: Harness;
  let fake: FakeLiteLLM;
  let key: string;
  let id: string;
  const completion = { model: "qwen2.5-7b", max_tokens: 4 };

  beforeAll(async () => {
    fake = await fakeLiteLLM();
    h = await startShim({ file: { models: [{ name: "qwen2.5-7b", maxModelLen: 8192, tokenPrompts: false }] }, env: { SHIM_UPSTREAM_URL: fake.url } });
    ({ key, id } = await h.createKey({ credits: 1000 }));
  });
  afterAll(async () => {
    await h.close();
    fake.server.close();
  });

  it("are a 400 naming the member, before anything is held, forwarded or counted as the upstream's failure", async () => {
    const before = (await h.store.getKey(id))!.balance;
    const forwarded = fake.bodies.length;
    const cases: [Record<string, unknown>, string][] = [
      [{ prompt: [15339, 1917, 11] }, "prompt"],
      // LiteLLM reads a standalone 429 in its echo of the prompt as a rate limit: a 503 with Retry-After, retried by the SDKs.
      [{ prompt: [[40, 429, 7], [12, 13]] }, "prompt"],
      [{ prompt: ["a", 7] }, "prompt"],
      [{ prompt: [] }, "prompt"],
      [{ prompt_embeds: "AAAA" }, "prompt_embeds"],
      [{ prompt: "hello", prompt_embeds: ["AAAA"] }, "prompt_embeds"],
    ];
    for (const [extra, param] of cases) {
      const res = await h.post(key, "/v1/completions", { ...completion, ...extra });
      const body = (await res.json()) as { error: Record<string, unknown> };
      expect(res.status, JSON.stringify(extra)).toBe(400);
      expect(res.headers.get("retry-after")).toBeNull();
      expect(body.error).toMatchObject({ type: "invalid_request_error", code: "invalid_request", param });
      expect(body.error.message).toMatch(param === "prompt" ? /^Token-ID prompts are not supported by this endpoint for model 'qwen2\.5-7b': send 'prompt' as text \(a string or a list of strings\)\.$/ : /^'prompt_embeds' is not supported by this endpoint for model 'qwen2\.5-7b': send 'prompt' as text/);
    }
    expect(fake.bodies.length).toBe(forwarded);
    expect((await h.store.getKey(id))!.balance).toBe(before);
    const metrics = await (await fetch(`${h.url}/metrics`)).text();
    expect(metrics).not.toMatch(/^shim_upstream_failures_total\{.*\} [1-9]/m); // each reason is exported at 0 from the start: none counted
  });

  it("text prompts, one or a batch, still pass", async () => {
    for (const prompt of ["hello", ["a", "b"]]) {
      const res = await h.post(key, "/v1/completions", { ...completion, prompt });
      expect(res.status, JSON.stringify(prompt)).toBe(200);
      expect(fake.bodies.at(-1)!.prompt).toEqual(prompt);
    }
  });
});

describe("a provider's answer longer than the default bound, with the shim config the stack renders", () => {
  /** The shim config rendered for a stack with a gemini provider priced 1 credit per 1k completion tokens. */
  const rendered = (provider: Record<string, unknown>) => {
    const result = validateConfig({
      region: "us-ord", model: { id: "Qwen/Qwen2.5-7B-Instruct", servedName: "qwen2.5-7b" },
      providers: [{ name: "gemini-pro", model: "gemini/gemini-2.5-pro", apiKey: Secret.of("AIza-test"), ...provider }],
      pricing: { models: { "gemini-pro": { promptPer1k: 0, completionPer1k: 1 } } },
    }, { stack: "acme" });
    if (!result.ok) throw new Error(JSON.stringify(result.problems));
    return parse(renderBundle(result.config, { images: result.config.images, bootstrapKeys: [] }).get("shim/config.yaml")!) as Record<string, unknown>;
  };
  /** What a chat without max_tokens is charged when the provider writes 40,000 tokens. */
  const charged = async (provider: Record<string, unknown>) => {
    const h = await startShim({ file: rendered(provider), fake: { ...DEFAULT_FAKE, models: [...DEFAULT_FAKE.models!, { name: "gemini-pro" }] } });
    try {
      h.fake.set({ defaultTokens: 40_000 });
      const { key } = await h.createKey({ credits: 1000 });
      const res = await h.post(key, "/v1/chat/completions", { model: "gemini-pro", messages: [{ role: "user", content: "write at length" }] });
      expect(res.status).toBe(200);
      const body = (await res.json()) as { usage: { completion_tokens: number } };
      expect(body.usage.completion_tokens).toBe(40_000);
      const metrics = await (await fetch(`${h.url}/metrics`)).text();
      return { credits: Number(res.headers.get("x-credits-charged")), capped: /^shim_charges_capped_total\{model="gemini-pro"\} 1$/m.test(metrics) };
    } finally {
      await h.close();
    }
  };

  it("is charged in full when the provider's maxOutputTokens is set", async () => {
    expect(await charged({ maxOutputTokens: 65_536 })).toEqual({ credits: 1 + 40, capped: false });
  });

  it("is charged at most the hold without it: 32,768 completion tokens, counted as capped (as documented)", async () => {
    expect(await charged({})).toEqual({ credits: 1 + 32.768, capped: true });
  });
});
