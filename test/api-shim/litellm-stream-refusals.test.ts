import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startShim, type Harness } from "../support/shim-harness.ts";
import { loopbackServer } from "../support/shim-process.ts";

/**
 * An upstream answering exactly as LiteLLM's proxy does (BerriAI/litellm), scripted per test.
 * litellm/proxy/common_request_processing.py create_streaming_response(): for a stream it awaits
 * the generator's first item; when that is an error event (async_data_generator's except branch:
 * `data: {"error": ProxyException.to_dict()}`, code a string), the response keeps
 * media_type "text/event-stream" and that SSE body, and only its status is set to the code.
 * That is the path of every error raised at the first __anext__ (a provider fetched lazily via
 * make_call: Anthropic, Gemini; vLLM's in-stream error before its first chunk).
 */
let script: { status: number; type: string; body: string } = { status: 200, type: "text/event-stream", body: "" };

describe("LiteLLM answering as its proxy does (scripted)", () => {
  let h: Harness;
  let upstream: { url: string; close(): Promise<void> };
  let key: string;
  beforeAll(async () => {
    upstream = await loopbackServer((req, res) => {
      req.resume();
      req.on("end", () => res.writeHead(script.status, { "content-type": script.type }).end(script.body));
    });
    h = await startShim({ file: { models: [{ name: "smart" }] }, env: { SHIM_UPSTREAM_URL: upstream.url } });
    ({ key } = await h.createKey({ credits: 1000 }));
  });
  afterAll(async () => {
    await h.close();
    await upstream.close();
  });
  const chat = { model: "smart", messages: [{ role: "user", content: "hi" }], max_tokens: 5, stream: true };
  const sseError = (message: string, code: string) => `data: ${JSON.stringify({ error: { message, type: "None", param: "None", code } })}\n\n`;

  it("a provider's 400 raised at the stream's first chunk keeps its message (as the same refusal in JSON does)", async () => {
    const message = "litellm.BadRequestError: AnthropicException - prompt is too long: 250000 tokens > 200000 maximum. Received Model Group=smart\nAvailable Model Group Fallbacks=None";
    script = { status: 400, type: "text/event-stream", body: sseError(message, "400") };
    const sse = await h.post(key, "/v1/chat/completions", chat);
    const sseBody = (await sse.json()) as { error: { message: string } };
    script = { status: 400, type: "application/json", body: JSON.stringify({ error: { message, type: null, param: null, code: "400" } }) };
    const json = await h.post(key, "/v1/chat/completions", chat);
    const jsonBody = (await json.json()) as { error: { message: string } };
    expect(jsonBody.error.message).toBe("prompt is too long: 250000 tokens > 200000 maximum");
    expect(sse.status).toBe(400);
    expect(sseBody.error.message).toBe(jsonBody.error.message);
  });

  it("a dead vLLM engine's 400 at the stream's first chunk, framed by LiteLLM, is upstream_error (502), not the client's 400", async () => {
    const message = "litellm.BadRequestError: Hosted_vllmException - EngineCore encountered an issue. See stack trace (above) for the root cause.";
    script = { status: 400, type: "text/event-stream", body: sseError(message, "400") };
    const count = async (metric: string) => Number(new RegExp(`^${metric}\\{reason="status_400"\\} (\\d+)$`, "m").exec(await (await fetch(`${h.url}/metrics`)).text())?.[1] ?? 0);
    const [failures, refusals] = [await count("shim_upstream_failures_total"), await count("shim_upstream_refusals_total")];
    const res = await h.post(key, "/v1/chat/completions", chat);
    expect(res.status).toBe(502); // not 400 invalid_request, which SDKs do not retry
    // The operator's to look into (the docs list status_400 as the dead engine), not a client's mistake.
    expect([await count("shim_upstream_failures_total"), await count("shim_upstream_refusals_total")]).toEqual([failures + 1, refusals]);
  });

  it("a provider's 404 at the stream's first chunk is not told as the shim's own misconfigured route", async () => {
    const message = "litellm.NotFoundError: Vertex_ai_betaException - models/gemini-9-pro is not found for API version v1beta. Received Model Group=smart";
    script = { status: 404, type: "text/event-stream", body: sseError(message, "404") };
    const res = await h.post(key, "/v1/chat/completions", chat);
    const body = (await res.json()) as { error: { message: string } };
    expect(body.error.message).not.toMatch(/no such route/);
  });

  /** A 200 stream of LiteLLM's chunks (id, created, model, object as LiteLLM writes them), then [DONE]. */
  const litellmStream = (...chunks: object[]) => {
    const frame = { id: "chatcmpl-1", created: 1, model: "smart", object: "chat.completion.chunk" };
    script = { status: 200, type: "text/event-stream", body: chunks.map((c) => `data: ${JSON.stringify({ ...frame, ...c })}\n\n`).join("") + "data: [DONE]\n\n" };
  };

  it("LiteLLM's finish chunk, its stripped usage chunk and its own usage chunk after the finish (choice kept, finish_reason dropped by exclude_none)", async () => {
    litellmStream(
      { choices: [{ index: 0, delta: { content: "ok", role: "assistant" } }] },
      { choices: [{ index: 0, delta: {}, finish_reason: "stop" }] },
      { choices: [{ index: 0, delta: {} }] },
      { choices: [{ index: 0, delta: {} }], usage: { prompt_tokens: 1000, completion_tokens: 5, total_tokens: 1005, prompt_tokens_details: { cached_tokens: 0 }, completion_tokens_details: { reasoning_tokens: 0 } } },
    );
    const { id, key: k } = await h.createKey({ credits: 1000 });
    const res = await h.post(k, "/v1/chat/completions", chat);
    const text = await res.text();
    expect(text).not.toContain('"usage"'); // the client did not ask
    expect(text).toContain("data: [DONE]");
    // From 2000, not the default current month: a month turning after the request would report none of it.
    const report = (await (await fetch(`${h.url}/v1/usage?from=2000-01-01`, { headers: { authorization: `Bearer ${k}` } })).json()) as { usage: { total_tokens: number } };
    expect(report.usage.total_tokens).toBe(1005);
    expect((await h.store.getKey(id))!.held).toBe(0);
  });

  it("n=2 through LiteLLM (one finish_reason, index 0, then its usage chunk) is charged the usage", async () => {
    litellmStream(
      { choices: [{ index: 0, delta: { content: "a", role: "assistant" } }] },
      { choices: [{ index: 1, delta: { content: "b" } }] },
      { choices: [{ index: 0, delta: {}, finish_reason: "stop" }] },
      { choices: [{ index: 0, delta: {} }], usage: { prompt_tokens: 100, completion_tokens: 8, total_tokens: 108 } },
    );
    const { key: k } = await h.createKey({ credits: 1000 });
    const res = await h.post(k, "/v1/chat/completions", { ...chat, n: 2, stream_options: { include_usage: true } });
    const text = await res.text();
    expect(text).toContain('"prompt_tokens":100');
    const report = (await (await fetch(`${h.url}/v1/usage?from=2000-01-01`, { headers: { authorization: `Bearer ${k}` } })).json()) as { usage: { total_tokens: number } };
    expect(report.usage.total_tokens).toBe(108);
  });
});

/**
 * LiteLLM's streamed text completion (found by review; litellm_core_utils/streaming_handler.py):
 * every chunk keeps choice index 0 whatever `n` is, one finish comes for all outputs, then its
 * usage chunk, which keeps a choice. A stream whose body ends after that usage chunk, its
 * `data: [DONE]` lost, is whole: the shim asked for no running usage, so that usage can only be
 * the whole request's. It was whole for n = 1 and not for n = 2 (one finish for two outputs).
 */
describe("LiteLLM's streamed text completion, its body ending after the usage chunk", () => {
  let h: Harness;
  let upstream: { url: string; close(): Promise<void> };
  beforeAll(async () => {
    const frame = { id: "cmpl-1", object: "text_completion", created: 1, model: "qwen2.5-7b" };
    const data = (o: object) => `data: ${JSON.stringify({ ...frame, ...o })}\n\n`;
    upstream = await loopbackServer((req, res) => {
      req.resume();
      req.on("end", () => {
        res.writeHead(200, { "content-type": "text/event-stream" });
        const events =
          data({ choices: [{ text: " a", index: 0 }] }) +
          data({ choices: [{ text: " b", index: 0 }] }) +
          data({ choices: [{ index: 0, finish_reason: "length" }] }) +
          data({ choices: [{ index: 0 }], usage: { prompt_tokens: 10, completion_tokens: 2, total_tokens: 12 } });
        res.write(events, () => setTimeout(() => res.destroy(), 50));
      });
    });
    h = await startShim({
      env: { SHIM_UPSTREAM_URL: upstream.url },
      file: { pricing: { request: 1, models: { "qwen2.5-7b": { promptPer1k: 1000, completionPer1k: 1000 } } }, models: [{ name: "qwen2.5-7b", maxModelLen: 8192, continuousUsage: false, tokenPrompts: false }] },
    });
  });
  afterAll(async () => {
    await h.close();
    await upstream.close();
  });

  // A client's continuous_usage_stats asks for running usage, which LiteLLM never sends (it strips
  // usage from every chunk but its last): its usage chunk still comes after the output's finish.
  for (const [n, streamOptions] of [[1, undefined], [2, undefined], [2, { include_usage: true, continuous_usage_stats: true }]] as const) {
    it(`n = ${n}${streamOptions ? ", running usage asked by the client" : ""}: answered whole, charged its usage (the prompt included), no error event`, async () => {
      const { id, key } = await h.createKey({ credits: 1000 });
      const res = await h.post(key, "/v1/completions", { model: "qwen2.5-7b", prompt: "hi", max_tokens: 5, n, stream: true, ...(streamOptions ? { stream_options: streamOptions } : {}) });
      const text = await res.text();
      const charged = Number(/^: credits_charged=(\S+) /m.exec(text)?.[1]);
      const spent = 1000 - (await h.store.getKey(id))!.balance / 1_000_000;
      // 1 for the request, 10 prompt and 2 completion tokens at 1 credit each.
      expect({ error: text.includes('"error"'), charged, spent }).toEqual({ error: false, charged: 13, spent: 13 });
      expect(text.trimEnd().endsWith("data: [DONE]")).toBe(true);
    });
  }
});
