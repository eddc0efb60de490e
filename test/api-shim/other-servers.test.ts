import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startShim, type Harness } from "../support/shim-harness.ts";
import { upstreamStatusError } from "../../api-shim/src/upstream/upstream-errors.ts";

/**
 * The shim in front of servers other than vLLM and LiteLLM (README: "any OpenAI-compatible
 * server"), each scripted as its source answers (found by review):
 * - Ollama: middleware/openai.go (CompleteWriter.writeResponse sets `c.Usage = &openai.Usage{}` on
 *   EVERY /v1/completions chunk when stream_options.include_usage is set, then a usage chunk with
 *   `choices: []`, then [DONE]; ChatWriter: usage-only chunk with `choices: []`), openai/openai.go
 *   (NewError: `{"error":{"message","type","param":null,"code":null}}`; ToListCompletion: `var data
 *   []Model` is `null` when no model is pulled).
 * - llama.cpp: tools/server/server-task.cpp (to_json_oaicompat: a completions stream's final chunk
 *   keeps its choice and always carries `usage` and `timings`; to_json_oaicompat_chat_stream: a
 *   usage-only chunk with `timings` when include_usage), server.cpp format_error_response
 *   (`{"error":{"code":400,"message","type":"exceed_context_size_error"}}`, 503 "Loading model"),
 *   n_predict default -1 (no 16-token default on /v1/completions; Ollama's num_predict is -1 too).
 * - TGI: router/src/server.rs, `impl From<InferError> for (StatusCode, Json<ErrorResponse>)`:
 *   GenerationError → 424, ValidationError → 422, body `{"error":"<string>","error_type":"…"}`.
 */
type Handler = (req: IncomingMessage, body: Record<string, unknown>, res: ServerResponse) => void;
let handler: Handler = (_req, _b, res) => res.writeHead(500).end();
const received: Record<string, unknown>[] = [];
let server: Server;

const sse = (res: ServerResponse) => res.writeHead(200, { "content-type": "text/event-stream" });
const json = (res: ServerResponse, status: number, body: unknown) => res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
const OLLAMA_MODELS = { object: "list", data: [{ id: "llama3.2:latest", object: "model", created: 1, owned_by: "library" }] };

let h: Harness;
beforeAll(async () => {
  server = createServer((req, res) => {
    let raw = "";
    req.setEncoding("utf8");
    req.on("data", (c: string) => (raw += c));
    req.on("end", () => {
      const body = raw ? (JSON.parse(raw) as Record<string, unknown>) : {};
      if (req.method === "POST") received.push(body);
      if (req.url === "/v1/models" && req.method === "GET" && !handlesModels) return json(res, 200, OLLAMA_MODELS);
      handler(req, body, res);
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  h = await startShim({
    env: { SHIM_UPSTREAM_URL: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, SHIM_UPSTREAM_API_KEY: "" },
    // As docs/api-shim/shim-config.md's own example: a served model with its context, token prices.
    file: { models: [{ name: "llama3.2:latest", maxModelLen: 8192 }], pricing: { request: 0, models: { "llama3.2:latest": { promptPer1k: 1, completionPer1k: 10 } } } },
  });
});
let handlesModels = false;
afterEach(() => {
  handlesModels = false;
});
afterAll(async () => {
  await h.close();
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

const CREDIT = 1_000_000;
const charged = (text: string) => Math.round(Number(/^: credits_charged=(\S+) /m.exec(text)![1]) * CREDIT);

describe("Ollama", () => {
  const chunk = (text: string, finish: string | null, withZeroUsage: boolean) =>
    `data: ${JSON.stringify({ id: "cmpl-1", object: "text_completion", created: 1, choices: [{ text, index: 0, finish_reason: finish }], model: "llama3.2:latest", system_fingerprint: "fp_ollama", ...(withZeroUsage ? { usage: { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 } } : {}) })}\n\n`;

  it("/v1/completions stream cut by the upstream before its end is told as an error (as it is without Ollama's zero usage)", async () => {
    // Ollama, asked include_usage (the shim always asks): every chunk has a zeroed usage object.
    handler = (_req, _b, res) => {
      sse(res);
      res.write(chunk(" one", null, true));
      res.write(chunk(" two", null, true));
      setTimeout(() => res.destroy(), 50); // Ollama's runner dies mid-generation
    };
    const { key } = await h.createKey({ credits: 100 });
    const prompt = "word ".repeat(2000);
    const res = await h.post(key, "/v1/completions", { model: "llama3.2:latest", prompt, max_tokens: 200, stream: true });
    const text = await res.text();
    // Expected: an upstream_error event and no [DONE] (what the shim does for the same cut without the zero usage).
    expect(text).toContain("upstream_error");
    expect(text).not.toContain("data: [DONE]");
  });

  it("/v1/completions stream the client leaves early is charged its prompt (estimate), as without Ollama's zero usage", async () => {
    const costs: number[] = [];
    for (const zero of [false, true]) {
      handler = (_req, _b, res) => {
        sse(res);
        res.write(chunk(" one", null, zero));
      };
      const { id, key } = await h.createKey({ credits: 100 });
      const ac = new AbortController();
      const res = await fetch(`${h.url}/v1/completions`, { method: "POST", signal: ac.signal, headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body: JSON.stringify({ model: "llama3.2:latest", prompt: "word ".repeat(2000), max_tokens: 200, stream: true }) });
      const reader = res.body!.getReader();
      await reader.read();
      ac.abort();
      await h.waitForRequestLog((e) => e.status === 499 && e.keyId === id);
      costs.push(100 * CREDIT - (await h.store.getKey(id))!.balance);
    }
    // Without the zero usage: request + ~2000 prompt tokens + 1 token. With it: the prompt is free.
    expect(costs[0]).toBeGreaterThan(1_000_000);
    expect(costs[1]).toBe(costs[0]);
  });

  it("/v1/completions without max_tokens is sent OpenAI's and vLLM's default of 16, which the hold counted (Ollama's num_predict and llama.cpp's n_predict default to the end of the context)", async () => {
    handler = (_req, b, res) => {
      if (!b.stream) return json(res, 200, { id: "cmpl-1", object: "text_completion", created: 1, model: "llama3.2:latest", system_fingerprint: "fp_ollama", choices: [{ text: " short", index: 0, finish_reason: "length" }], usage: { prompt_tokens: 5, completion_tokens: 16, total_tokens: 21 } });
      sse(res);
      res.end(`data: ${JSON.stringify({ id: "cmpl-1", object: "text_completion", created: 1, model: "llama3.2:latest", choices: [{ text: " short", index: 0, finish_reason: "length" }] })}\n\ndata: ${JSON.stringify({ id: "cmpl-1", object: "text_completion", created: 1, model: "llama3.2:latest", choices: [], usage: { prompt_tokens: 5, completion_tokens: 16, total_tokens: 21 } })}\n\ndata: [DONE]\n\n`);
    };
    const { key } = await h.createKey({ credits: 100 });
    const res = await h.post(key, "/v1/completions", { model: "llama3.2:latest", prompt: "Tell me a story" });
    expect(res.status).toBe(200);
    expect(received.at(-1)).toEqual({ max_tokens: 16, model: "llama3.2:latest", prompt: "Tell me a story" });
    // 5 × 1,000 µc + 16 × 10,000 µc: the usage, within the hold.
    expect(Math.round(Number(res.headers.get("x-credits-charged")) * CREDIT)).toBe(5 * 1000 + 16 * 10_000);
    const stream = await h.post(key, "/v1/completions", { model: "llama3.2:latest", prompt: "Tell me a story", stream: true });
    expect(charged(await stream.text())).toBe(5 * 1000 + 16 * 10_000);
    expect(received.at(-1)).toEqual({ max_tokens: 16, stream_options: { include_usage: true }, model: "llama3.2:latest", prompt: "Tell me a story", stream: true });
    // A limit of the client's own (null: none) goes as sent.
    for (const max_tokens of [40, null]) {
      await (await h.post(key, "/v1/completions", { model: "llama3.2:latest", prompt: "x", max_tokens })).text();
      expect(received.at(-1)).toEqual({ model: "llama3.2:latest", prompt: "x", max_tokens });
    }
  });

  it("an Ollama with no model pulled yet lists `data: null`: /ready says which model is missing, not 'invalid model list'", async () => {
    handlesModels = true;
    handler = (_req, _b, res) => json(res, 200, { object: "list", data: null });
    const res = await fetch(`${h.url}/ready`);
    const body = (await res.json()) as { upstream: string };
    expect(res.status).toBe(503);
    expect(body.upstream).toBe("models not served yet: llama3.2:latest");
  });

  it("chat stream: usage-only chunk charged and hidden from a client that did not ask (sound)", async () => {
    handler = (_req, b, res) => {
      sse(res);
      const base = { id: "chatcmpl-1", object: "chat.completion.chunk", created: 1, model: "llama3.2:latest", system_fingerprint: "fp_ollama" };
      res.write(`data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta: { role: "assistant", content: "Hi" }, finish_reason: null }] })}\n\n`);
      res.write(`data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: "stop" }] })}\n\n`);
      if ((b.stream_options as { include_usage?: boolean } | undefined)?.include_usage) res.write(`data: ${JSON.stringify({ ...base, choices: [], usage: { prompt_tokens: 30, completion_tokens: 2, total_tokens: 32 } })}\n\n`);
      res.end("data: [DONE]\n\n");
    };
    const { key } = await h.createKey({ credits: 100 });
    const res = await h.post(key, "/v1/chat/completions", { model: "llama3.2:latest", messages: [{ role: "user", content: "hi" }], stream: true });
    const text = await res.text();
    expect(text).not.toContain('"usage"');
    expect(charged(text)).toBe(30 * 1000 + 2 * 10_000);
  });
});

describe("llama.cpp llama-server", () => {
  it("/v1/completions stream: the final chunk's usage (with its choice and timings) is charged and hidden (sound)", async () => {
    handler = (_req, _b, res) => {
      sse(res);
      const base = { created: 1, model: "llama3.2:latest", system_fingerprint: "b6097", object: "text_completion", id: "chatcmpl-x" };
      res.write(`data: ${JSON.stringify({ choices: [{ text: " hi", index: 0, logprobs: null, finish_reason: null }], ...base })}\n\n`);
      res.write(`data: ${JSON.stringify({ choices: [{ text: "", index: 0, logprobs: null, finish_reason: "stop" }], ...base, usage: { completion_tokens: 2, prompt_tokens: 40, total_tokens: 42 }, timings: { prompt_n: 40, predicted_n: 2 } })}\n\n`);
      res.end("data: [DONE]\n\n");
    };
    const { key } = await h.createKey({ credits: 100 });
    const res = await h.post(key, "/v1/completions", { model: "llama3.2:latest", prompt: "x", max_tokens: 5, stream: true });
    const text = await res.text();
    expect(text).not.toContain('"usage"');
    expect(charged(text)).toBe(40 * 1000 + 2 * 10_000);
  });

  it("400 exceed_context_size_error keeps llama.cpp's message; 503 Loading model is a retryable 503 (sound)", async () => {
    handler = (_req, _b, res) => json(res, 400, { error: { code: 400, message: "the request exceeds the available context size, try increasing it", type: "exceed_context_size_error", n_prompt_tokens: 9000, n_ctx: 8192 } });
    const { key } = await h.createKey({ credits: 100 });
    const c = h.client(key);
    await expect(c.chat.completions.create({ model: "llama3.2:latest", messages: [{ role: "user", content: "x" }] })).rejects.toMatchObject({ status: 400, message: expect.stringContaining("exceeds the available context size") });
    handler = (_req, _b, res) => json(res, 503, { error: { message: "Loading model", type: "unavailable_error", code: 503 } });
    await expect(c.chat.completions.create({ model: "llama3.2:latest", messages: [{ role: "user", content: "x" }] })).rejects.toMatchObject({ status: 503 });
  });

  it("/v1/models: llama.cpp's Ollama-style `models` member is not relayed past the shim's filter", async () => {
    handlesModels = true;
    handler = (_req, _b, res) =>
      json(res, 200, { models: [{ name: "/srv/private/other-model.gguf", model: "/srv/private/other-model.gguf" }], object: "list", data: [{ id: "llama3.2:latest", object: "model", owned_by: "llamacpp" }, { id: "/srv/private/other-model.gguf", object: "model", owned_by: "llamacpp" }] });
    const { key } = await h.createKey({ credits: 100 });
    const res = await fetch(`${h.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
    const text = await res.text();
    expect(JSON.parse(text).data.map((m: { id: string }) => m.id)).toEqual(["llama3.2:latest"]);
    expect(text).not.toContain("other-model");
  });
});

describe("Hugging Face TGI", () => {
  it("424 (GenerationError: the server failed during generation) is the upstream's failure, not the client's 400", async () => {
    handler = (_req, _b, res) => json(res, 424, { error: "Request failed during generation: Server error: CUDA out of memory", error_type: "generation" });
    const { key } = await h.createKey({ credits: 100 });
    await expect(h.client(key).chat.completions.create({ model: "llama3.2:latest", messages: [{ role: "user", content: "x" }] })).rejects.toMatchObject({ status: 502 });
  });

  it("an error event in a stream (its `error` a string) ends the stream with the shim's upstream_error, its internal message not relayed", async () => {
    handler = (_req, _b, res) => {
      sse(res);
      res.write(`data: ${JSON.stringify({ object: "chat.completion.chunk", id: "", created: 1, model: "llama3.2:latest", system_fingerprint: "3.3.6-native", choices: [{ index: 0, delta: { role: "assistant", content: "Hi" }, logprobs: null, finish_reason: null }], usage: null })}\n\n`);
      res.end(`data: ${JSON.stringify({ error: "Request failed during generation: Server error: CUDA out of memory. Tried to allocate 2.00 GiB on /srv/tgi", error_type: "generation" })}\n\n`);
    };
    const { key } = await h.createKey({ credits: 100 });
    const text = await (await h.post(key, "/v1/chat/completions", { model: "llama3.2:latest", messages: [{ role: "user", content: "x" }], stream: true })).text();
    expect(text).toContain('"code":"upstream_error"');
    expect(text).not.toContain("CUDA");
  });

  it("a string error is redacted as any message is, and a 404's (a route the server lacks) still says the endpoint is misconfigured", () => {
    const same = ((t: string) => t) as never;
    const e = upstreamStatusError(400, JSON.stringify({ error: "bad call https://x.example/v1?key=AIzaSyA1234567890abcdefghijklmnopqrstu sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123", error_type: "validation" }), "m", undefined, same);
    expect(e.message).toContain("bad call https://x.example/v1?…");
    expect(e.message).not.toContain("AIzaSy");
    expect(e.message).not.toContain("sk-ant-api03-abcdef");
    expect(upstreamStatusError(404, JSON.stringify({ error: "Not Found" }), "m", undefined, same).code).toBe("upstream_error");
  });

  it("422 validation error keeps TGI's message (its `error` is a string)", async () => {
    handler = (_req, _b, res) => json(res, 422, { error: "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 4000 `inputs` tokens and 500 `max_new_tokens`", error_type: "validation" });
    const { key } = await h.createKey({ credits: 100 });
    await expect(h.client(key).chat.completions.create({ model: "llama3.2:latest", messages: [{ role: "user", content: "x" }] })).rejects.toMatchObject({ status: 400, message: expect.stringContaining("max_new_tokens") });
  });
});

describe("Ollama's zeroed usage on its finish chunk (its real usage follows in a chunk of its own; found by review)", () => {
  const chunk = (text: string, finish: string | null, withZeroUsage: boolean) =>
    `data: ${JSON.stringify({ id: "cmpl-1", object: "text_completion", created: 1, choices: [{ text, index: 0, finish_reason: finish }], model: "llama3.2:latest", system_fingerprint: "fp_ollama", ...(withZeroUsage ? { usage: { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 } } : {}) })}\n\n`;

  it("a /v1/completions stream cut after the finish chunk (zero usage on it) and before the usage-only chunk ends and is charged as without the zero usage", async () => {
    const outcomes: { error: boolean; done: boolean; cost: number; madeUsageChunk: boolean }[] = [];
    for (const zero of [false, true]) {
      handler = (_req, _b, res) => {
        sse(res);
        res.write(chunk(" one", null, zero));
        res.write(chunk(" two", "length", zero)); // Ollama's Done chunk: finish_reason, and the zeroed usage
        setTimeout(() => res.destroy(), 50); // cut before `data: {…"choices":[],"usage":{real}}` and [DONE]
      };
      const { id, key } = await h.createKey({ credits: 100 });
      const res = await h.post(key, "/v1/completions", { model: "llama3.2:latest", prompt: "word ".repeat(2000), max_tokens: 2, stream: true, stream_options: { include_usage: true } });
      const text = await res.text();
      outcomes.push({ error: text.includes("upstream_error"), done: text.includes("data: [DONE]"), cost: 100 * CREDIT - (await h.store.getKey(id))!.balance, madeUsageChunk: text.includes('"choices":[],"usage"') });
    }
    // Without the zero usage: upstream_error, charged the content. With it: a whole stream, a
    // usage chunk made up as {"prompt_tokens":0,…} shown to the client, and no prompt charged.
    expect(outcomes[1]).toEqual(outcomes[0]);
  });
});

describe("a client that stops at Ollama's finish chunk", () => {
  const chunk = (text: string, finish: string | null, withZeroUsage: boolean) =>
    `data: ${JSON.stringify({ id: "cmpl-1", object: "text_completion", created: 1, choices: [{ text, index: 0, finish_reason: finish }], model: "llama3.2:latest", system_fingerprint: "fp_ollama", ...(withZeroUsage ? { usage: { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 } } : {}) })}\n\n`;

  it("pays its prompt's estimate, as without the zero usage on that chunk", async () => {
    const costs: number[] = [];
    for (const zero of [false, true]) {
      handler = (_req, _b, res) => {
        sse(res);
        res.write(chunk(" one", "length", zero)); // the Done chunk; its real usage chunk comes later
        setTimeout(() => { if (!res.destroyed) res.end(`data: ${JSON.stringify({ id: "cmpl-1", object: "text_completion", created: 1, model: "llama3.2:latest", choices: [], usage: { prompt_tokens: 2001, completion_tokens: 1, total_tokens: 2002 } })}\n\ndata: [DONE]\n\n`); }, 1000);
      };
      const { id, key } = await h.createKey({ credits: 100 });
      const ac = new AbortController();
      const res = await fetch(`${h.url}/v1/completions`, { method: "POST", signal: ac.signal, headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body: JSON.stringify({ model: "llama3.2:latest", prompt: "word ".repeat(2000), max_tokens: 1, stream: true }) });
      const reader = res.body!.getReader();
      await reader.read(); // the finish chunk: an SDK loop that stops at finish_reason leaves here
      ac.abort();
      await h.waitForRequestLog((e) => e.status === 499 && e.keyId === id);
      costs.push(100 * CREDIT - (await h.store.getKey(id))!.balance);
    }
    expect(costs[0]).toBeGreaterThan(1_000_000); // prompt estimate + 1 token
    expect(costs[1]).toBe(costs[0]);
  });
});
