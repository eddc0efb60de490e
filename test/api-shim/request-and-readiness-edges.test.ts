import { describe, expect, it } from "vitest";
import { ShimError } from "../../api-shim/src/errors.ts";
import { parseInferenceRequest, upstreamBody } from "../../api-shim/src/requests/inference-request.ts";
import { startShim } from "../support/shim-harness.ts";
import { failure } from "../support/api-failure.ts";
import { answeringUpstream } from "../support/shim-process.ts";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { overrideStore } from "../support/shim-harness.ts";
import { manualClock } from "../support/clocks.ts";

/**
 * Found by a mutation review of the request readers, /v1/models and /ready: behaviour the code
 * had right but no test pinned, each test failing under its mutant. What a client or operator
 * would notice otherwise: invalid bodies forwarded, a false 402 from a prompt of token IDs, a
 * usage chunk lost, /ready saying ready with a model not served or a store hung.
 */
const refusal = (f: () => unknown): unknown => {
  try {
    f();
  } catch (e) {
    return e;
  }
  return undefined;
};

describe("embeddings prompt: input or messages", () => {
  const messages = [{ role: "user", content: [{ type: "image_url", image_url: { url: "https://img.example/y.png" } }] }];

  it("refuses both at once, naming messages (vLLM could render the messages, whose images the hold of `input` does not count)", () => {
    const e = refusal(() => parseInferenceRequest("embeddings", { model: "m", input: "x", messages }));
    expect(e).toBeInstanceOf(ShimError);
    expect(e).toMatchObject({ status: 400, code: "invalid_request", param: "messages" });
    // Each alone is taken: messages as vLLM's chat embeddings (templated, its image counted).
    expect(parseInferenceRequest("embeddings", { model: "m", input: "x" }).templated).toBe(false);
    expect(parseInferenceRequest("embeddings", { model: "m", messages })).toMatchObject({ templated: true, unboundedParts: 1 });
  });

  it("refuses chat embeddings whose messages are empty or not a list, naming messages", () => {
    for (const m of [[], "hi", { role: "user" }, null]) {
      const e = refusal(() => parseInferenceRequest("embeddings", { model: "m", messages: m }));
      expect(e, JSON.stringify(m)).toBeInstanceOf(ShimError);
      expect(e).toMatchObject({ status: 400, code: "invalid_request", param: "messages" });
    }
  });
});


describe("GET /v1/models: the upstream busy or slow is retryable as on inference", () => {
  it("an upstream 429 or 503 is 503 service_unavailable with Retry-After, a 408 or 504 is 504 upstream_timeout (not 502)", async () => {
    const upstream = await answeringUpstream();
    const h = await startShim({ env: { SHIM_UPSTREAM_URL: upstream.url } });
    try {
      const { key } = await h.createKey();
      for (const [status, expected, code] of [[429, 503, "service_unavailable"], [503, 503, "service_unavailable"], [408, 504, "upstream_timeout"], [504, 504, "upstream_timeout"]] as const) {
        upstream.answer = { status, body: "" };
        const e = await failure(() => h.client(key).models.list());
        expect([e.status, (e.error as { code?: string }).code], String(status)).toEqual([expected, code]);
        if (expected === 503) expect(e.headers?.get("retry-after"), String(status)).toMatch(/^\d+$/);
      }
    } finally {
      await h.close();
      await upstream.close();
    }
  });
});

describe("GET /v1/models: credits_remaining", () => {
  it("is what the key has left after its open holds, as on every other answer", async () => {
    const h = await startShim();
    try {
      const { key, id } = await h.createKey({ credits: 100 });
      expect((await h.store.reserve({ reservationId: "r-open", keyId: id, amount: 30_000_000, at: Date.now() })).ok).toBe(true);
      const res = await fetch(`${h.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
      expect(res.headers.get("x-credits-remaining")).toBe("70");
      expect(await res.json()).toMatchObject({ object: "list", credits_charged: 0, credits_remaining: 70 });
      const one = (await h.client(key).models.retrieve("qwen2.5-7b")) as unknown as { credits_remaining: number };
      expect(one.credits_remaining).toBe(70);
    } finally {
      await h.close();
    }
  });
});

describe("GET /v1/models/{id}: the id as the list spells it", () => {
  it("another case of a listed id is not that model: 404 model_not_found (vLLM's and LiteLLM's ids are case-sensitive)", async () => {
    const h = await startShim();
    try {
      const { key } = await h.createKey();
      expect((await h.client(key).models.retrieve("qwen2.5-7b")).id).toBe("qwen2.5-7b");
      const e = await failure(() => h.client(key).models.retrieve("QWEN2.5-7B"));
      expect([e.status, (e.error as { code?: string }).code]).toEqual([404, "model_not_found"]);
    } finally {
      await h.close();
    }
  });
});


async function statusServer(status: { code: number }): Promise<{ server: Server; url: string }> {
  const server = createServer((_req, res) => res.writeHead(status.code).end());
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/health` };
}

describe("/ready: every part must be ready", () => {
  it("a model server answering 2xx does not hide a configured model the upstream does not list", async () => {
    const status = { code: 200 };
    const { server, url } = await statusServer(status);
    const h = await startShim({ env: { SHIM_READY_URL: url }, file: { models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }, { name: "later", maxModelLen: 8192 }] } });
    try {
      const res = await fetch(`${h.url}/ready`);
      expect({ status: res.status, body: await res.json() }).toEqual({ status: 503, body: { status: "not_ready", store: "ok", upstream: "models not served yet: later" } });
    } finally {
      await h.close();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it("a model server answering 4xx is not ready (only 2xx is)", async () => {
    const status = { code: 404 };
    const { server, url } = await statusServer(status);
    const h = await startShim({ env: { SHIM_READY_URL: url } });
    try {
      const res = await fetch(`${h.url}/ready`);
      expect({ status: res.status, body: await res.json() }).toEqual({ status: 503, body: { status: "not_ready", store: "ok", upstream: "model server: status 404" } });
    } finally {
      await h.close();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it("an upstream answering its model list with something that is not one (an HTML page, a 2xx other than 200) is not ready", async () => {
    const upstream = await answeringUpstream();
    const clock = manualClock();
    const h = await startShim({ clock, env: { SHIM_UPSTREAM_URL: upstream.url } });
    try {
      upstream.answer = { status: 200, body: "<html>" };
      let res = await fetch(`${h.url}/ready`);
      expect({ status: res.status, body: await res.json() }).toEqual({ status: 503, body: { status: "not_ready", store: "ok", upstream: "invalid model list" } });
      clock.advance(3000); // past the 2 s probe cache
      upstream.answer = { status: 203, body: JSON.stringify({ object: "list", data: [{ id: "qwen2.5-7b" }] }) };
      res = await fetch(`${h.url}/ready`);
      expect({ status: res.status, body: await res.json() }).toEqual({ status: 503, body: { status: "not_ready", store: "ok", upstream: "status 203" } });
    } finally {
      await h.close();
      await upstream.close();
    }
  });

  it("a store whose ping never answers is unavailable within the 5 s /ready's callers wait", async () => {
    const h = await startShim({ wrapStore: (s) => overrideStore(s, { ping: () => new Promise<void>(() => {}) }) });
    try {
      const started = performance.now();
      const res = await fetch(`${h.url}/ready`, { signal: AbortSignal.timeout(10_000) });
      expect(performance.now() - started).toBeLessThan(5000);
      expect({ status: res.status, body: await res.json() }).toEqual({ status: 503, body: { status: "not_ready", store: "unavailable", upstream: "ok" } });
    } finally {
      await h.close();
    }
  });
});

describe("the bounds of model and n, at their edges", () => {
  const chat = (extra: Record<string, unknown>) => parseInferenceRequest("chat", { model: "m", messages: [{ role: "user", content: "x" }], ...extra });

  it("takes a model name of 256 characters, refuses 257 naming model", () => {
    expect(chat({ model: "m".repeat(256) }).model).toHaveLength(256);
    expect(refusal(() => chat({ model: "m".repeat(257) }))).toMatchObject({ status: 400, code: "invalid_request", param: "model" });
  });

  it("takes n = 128 (OpenAI's own limit) and holds for 128 outputs; refuses 129 naming n", () => {
    expect(chat({ n: 128 })).toMatchObject({ n: 128, outputs: 128 });
    expect(parseInferenceRequest("completions", { model: "m", prompt: ["a", "b"], n: 128 })).toMatchObject({ n: 128, prompts: 2, outputs: 256 });
    expect(refusal(() => chat({ n: 129 }))).toMatchObject({ status: 400, code: "invalid_request", param: "n" });
  });
});

describe("what the hold is read from", () => {
  it("a prompt of token IDs (one list of numbers) is one prompt, not a batch of as many as its tokens", () => {
    expect(parseInferenceRequest("completions", { model: "m", prompt: [1, 2, 3, 4], n: 2 })).toMatchObject({ prompts: 1, outputs: 2 });
    expect(parseInferenceRequest("completions", { model: "m", prompt: [[1, 2], [3, 4], [5]] })).toMatchObject({ prompts: 3, outputs: 3 });
    expect(parseInferenceRequest("embeddings", { model: "m", input: [1, 2, 3, 4] })).toMatchObject({ prompts: 1 });
  });

  it("refuses a stream that is not a boolean, naming stream (it decides how the answer is metered)", () => {
    for (const stream of ["true", 1, {}, []]) {
      const e = refusal(() => parseInferenceRequest("chat", { model: "m", messages: [{ role: "user", content: "x" }], stream }));
      expect(e, JSON.stringify(stream)).toMatchObject({ status: 400, code: "invalid_request", param: "stream" });
    }
    expect(parseInferenceRequest("chat", { model: "m", messages: [{ role: "user", content: "x" }], stream: null }).stream).toBe(false);
  });
});

describe("stream_options read as vLLM reads them", () => {
  const chat = (stream_options: unknown) => parseInferenceRequest("chat", { model: "m", messages: [{ role: "user", content: "x" }], stream: true, stream_options });

  it("an include_usage left out means yes (StreamOptions.include_usage defaults to True): the client gets its usage chunk; null or false means no", () => {
    expect(chat({})).toMatchObject({ clientWantsUsage: true, clientWantsContinuous: false });
    expect(chat({ continuous_usage_stats: true })).toMatchObject({ clientWantsUsage: true, clientWantsContinuous: true });
    expect(chat({ include_usage: true })).toMatchObject({ clientWantsUsage: true });
    for (const include_usage of [null, false]) expect(chat({ include_usage })).toMatchObject({ clientWantsUsage: false, clientWantsContinuous: false });
    expect(chat(undefined)).toMatchObject({ clientWantsUsage: false });
  });

  it("a continuous_usage_stats forwarded counts as asked (the upstream may send running usage) even when the client is not shown usage", () => {
    expect(chat({ include_usage: false, continuous_usage_stats: true })).toMatchObject({ clientWantsContinuous: false, continuousAsked: true });
    expect(chat({ continuous_usage_stats: "yes" })).toMatchObject({ continuousAsked: true });
    for (const continuous_usage_stats of [undefined, null, false]) expect(chat({ continuous_usage_stats })).toMatchObject({ continuousAsked: false });
  });
});

describe("a request that cannot succeed is refused before it is forwarded", () => {
  it("chat with an empty messages list, naming messages", () => {
    expect(refusal(() => parseInferenceRequest("chat", { model: "m", messages: [] }))).toMatchObject({ status: 400, code: "invalid_request", param: "messages" });
  });
});

describe("the streamed body forwarded to an upstream with continuous usage", () => {
  it("gains continuous_usage_stats even when the client's stream_options already asks for include_usage", () => {
    const body = { model: "m", messages: [{ role: "user", content: "x" }], stream: true, stream_options: { include_usage: true } };
    const raw = Buffer.from(JSON.stringify(body));
    const req = parseInferenceRequest("chat", body);
    expect(JSON.parse(String(upstreamBody(raw, body, req, true))).stream_options).toEqual({ include_usage: true, continuous_usage_stats: true });
    // Without continuous usage, the client's bytes go as sent.
    expect(upstreamBody(raw, body, req, false)).toBe(raw);
  });
});

describe("a completions body without max_tokens, held at the default of 16", () => {
  const forwarded = (body: Record<string, unknown>, send: boolean, continuous = false) => {
    const raw = Buffer.from(JSON.stringify(body));
    return JSON.parse(String(upstreamBody(raw, body, parseInferenceRequest("completions", body), continuous, send))) as Record<string, unknown>;
  };

  it("is sent max_tokens 16 first, beside the usage asked of a stream, whether the client's stream_options is absent or replaced", () => {
    expect(forwarded({ model: "m", prompt: "x" }, true)).toEqual({ max_tokens: 16, model: "m", prompt: "x" });
    expect(forwarded({ model: "m", prompt: "x", stream: true }, true)).toEqual({ max_tokens: 16, stream_options: { include_usage: true }, model: "m", prompt: "x", stream: true });
    expect(forwarded({ model: "m", prompt: "x", stream: true, stream_options: { include_usage: false } }, true, true)).toEqual({ max_tokens: 16, model: "m", prompt: "x", stream: true, stream_options: { include_usage: true, continuous_usage_stats: true } });
  });

  it("keeps the client's bytes around it (leading whitespace, a byte order mark) and is sent whatever else the body asks (echo, a batch, n, a null max_completion_tokens), but not beside a limit of the client's", () => {
    const send = (text: string) => {
      const raw = Buffer.from(text);
      const body = JSON.parse(text.replace(/^\uFEFF/, "")) as Record<string, unknown>;
      const req = parseInferenceRequest("completions", body);
      return String(upstreamBody(raw, body, req, false, req.defaultMaxTokens));
    };
    expect(send(' \n {"model":"m","prompt":"x"}')).toBe(' \n {"max_tokens":16,"model":"m","prompt":"x"}');
    expect(send('\uFEFF{"model":"m","prompt":"x"}')).toBe('\uFEFF{"max_tokens":16,"model":"m","prompt":"x"}');
    expect(JSON.parse(send('{"model":"m","prompt":["a","b"],"n":3,"echo":true}'))).toMatchObject({ max_tokens: 16 });
    expect(JSON.parse(send('{"model":"m","prompt":"x","max_completion_tokens":null}'))).toMatchObject({ max_tokens: 16 });
    expect(JSON.parse(send('{"model":"m","prompt":"x","max_completion_tokens":5}'))).not.toHaveProperty("max_tokens");
    expect(send('{"model":"m","prompt":"x","max_tokens":null}')).toBe('{"model":"m","prompt":"x","max_tokens":null}');
  });

  it("is kept by the re-serialized fallback (a stream_options the splice cannot find)", () => {
    const body = { model: "m", prompt: "x", stream: true, stream_options: { include_usage: false } };
    const out = upstreamBody(Buffer.from('{"model":"m","prompt":"x","stream":true}'), body, parseInferenceRequest("completions", body), false, true);
    expect(JSON.parse(String(out))).toMatchObject({ max_tokens: 16, stream_options: { include_usage: true } });
  });

  it("is sent as it came when the hold was not the default's (a model that may be a provider's: held as chat)", () => {
    const body = { model: "m", prompt: "x" };
    const raw = Buffer.from(JSON.stringify(body));
    expect(upstreamBody(raw, body, parseInferenceRequest("completions", body), false, false)).toBe(raw);
  });
});
