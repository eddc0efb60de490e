import { APIError } from "openai";
import { createServer, request } from "node:http";
import { once } from "node:events";
import type { AddressInfo, Socket } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { promptTokens } from "../../api-shim/src/requests/inference-request.ts";
import { TokenEstimate } from "../../api-shim/src/money/pricing.ts";
import { IMAGE_TOKENS } from "../support/fake-vllm.ts";
import { StoreUnavailableError } from "../../api-shim/src/store/store.ts";
import { overrideStore, startShim, type Harness } from "../support/shim-harness.ts";

const CREDIT = 1_000_000;
// 1 credit per request, 0.001 credit per prompt token, 1 credit per completion token: charges are easy to read.
const FILE = {
  pricing: { request: 1, models: { "qwen2.5-7b": { promptPer1k: 1, completionPer1k: 1000 }, "qwen-cont": { promptPer1k: 1, completionPer1k: 1000 } } },
  models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }, { name: "qwen-cont", maxModelLen: 8192, continuousUsage: true }],
};
const FAKE = { models: [{ name: "qwen2.5-7b" }, { name: "qwen-cont" }] };
const cost = (p: number, c: number) => CREDIT + p * 1000 + c * CREDIT; // µc

describe("streaming metering", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startShim({ file: FILE, fake: FAKE });
  });
  afterEach(() => h.fake.reset());
  afterAll(() => h.close());

  const balance = async (id: string) => (await h.store.getKey(id))!.balance;
  /** The prompt tokens a client that left before any usage is charged: its messages' JSON bytes / 4 (no digits, ASCII). */
  const promptEstimate = () => Math.ceil(Buffer.byteLength(JSON.stringify((JSON.parse(h.fake.requests.at(-1)!.body) as { messages: unknown }).messages)) / 4);
  /**
   * The completion tokens a stream without usage is charged for the fake's first k tokens: the
   * estimate of their text "t1 t2 … tk" (a digit a token, other bytes four to a token), which is
   * more than the k chunks (Qwen's tokenizer makes " t12" three tokens).
   */
  const generatedEstimate = (k: number) => {
    const e = new TokenEstimate();
    e.add(Array.from({ length: k }, (_, i) => `t${i + 1}`).join(" "));
    return e.tokens;
  };

  it("charges a complete stream exactly from the upstream's usage chunk, which the client never sees", async () => {
    const { key, id } = await h.createKey({ credits: 1000 });
    const { data: stream, response } = await h.client(key).chat.completions
      .create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "count to seven please" }], max_tokens: 7, stream: true })
      .withResponse();
    let text = "";
    for await (const c of stream) {
      expect(c.usage ?? null).toBeNull();
      text += c.choices[0]?.delta.content ?? "";
    }
    expect(text).toBe("t1 t2 t3 t4 t5 t6 t7");
    const reported = h.fake.usages.at(-1)!;
    expect(reported.completion_tokens).toBe(7);
    const log = await h.waitForRequestLog((e) => e.reqId === response.headers.get("x-request-id"));
    expect(log).toMatchObject({ status: 200, tokens: reported.total_tokens });
    expect(await balance(id)).toBe(1000 * CREDIT - cost(reported.prompt_tokens, 7));
    const [audit] = (await h.store.audit()).filter((r) => r.keyId === id);
    expect(audit).toMatchObject({ ledgerSum: audit!.balance, held: 0, reservations: 0 });
  });

  it("asks for continuous usage where the model supports it and hides it from a client that did not ask", async () => {
    const { key } = await h.createKey({ credits: 1000 });
    const res = await h.post(key, "/v1/chat/completions", { model: "qwen-cont", messages: [{ role: "user", content: "hi" }], max_tokens: 3, stream: true });
    const events = (await res.text()).split("\n\n").filter((e) => e.startsWith("data: {"));
    expect(JSON.parse(h.fake.requests.at(-1)!.body).stream_options).toEqual({ include_usage: true, continuous_usage_stats: true });
    expect(events).toHaveLength(4); // role chunk + 3 tokens; the usage-only chunk is hidden
    for (const e of events) expect(JSON.parse(e.slice(6))).not.toHaveProperty("usage");

    const asked = await h.post(key, "/v1/chat/completions", { model: "qwen-cont", messages: [{ role: "user", content: "hi" }], max_tokens: 3, stream: true, stream_options: { include_usage: true, continuous_usage_stats: true } });
    const kept = (await asked.text()).split("\n\n").filter((e) => e.startsWith("data: {")).map((e) => JSON.parse(e.slice(6)));
    expect(kept).toHaveLength(5);
    expect(kept.every((c) => c.usage && typeof c.usage.completion_tokens === "number")).toBe(true);
    expect(kept.at(-1).credits_charged).toBe(cost(kept.at(-1).usage.prompt_tokens, 3) / CREDIT);
  });

  it("a client that disconnects is charged for what was generated, and the upstream request is aborted", async () => {
    const { key, id } = await h.createKey({ credits: 1000 });
    h.fake.set({ tokenDelayMs: 20, defaultTokens: 400 });
    const aborted = h.fake.counters.aborted;
    const sentBefore = h.fake.counters.tokensSent;
    const { data: stream, response } = await h.client(key).chat.completions
      .create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "a long story" }], max_tokens: 400, stream: true })
      .withResponse();
    let seen = 0;
    for await (const c of stream) {
      if (c.choices[0]?.delta.content) seen++;
      if (seen === 5) break; // leaving the loop aborts the SDK's request: the client is gone
    }
    await h.fake.until((c) => c.aborted > aborted);
    const log = await h.waitForRequestLog((e) => e.reqId === response.headers.get("x-request-id"));
    expect(log.status).toBe(499);
    const sent = h.fake.counters.tokensSent - sentBefore;
    expect(sent).toBeLessThan(400);
    const charged = 1000 * CREDIT - (await balance(id));
    // Fallback: the estimate of the text received as completion tokens (up to what was sent, at
    // least what the client saw), and the prompt estimated from the messages' bytes.
    const prompt = promptEstimate();
    const generated = (charged - CREDIT - prompt * 1000) / CREDIT;
    expect(Number.isInteger(generated)).toBe(true);
    expect(generated).toBeGreaterThanOrEqual(generatedEstimate(seen));
    expect(generated).toBeLessThanOrEqual(generatedEstimate(sent));
    expect(log.tokens).toBe(prompt + generated);
    expect((await h.store.getKey(id))!.held).toBe(0);
  });

  it("a stream whose upstream ignores include_usage costs its chunks and estimated prompt, read to the end or left early; the operator is told", async () => {
    h.fake.set({ ignoreIncludeUsage: true, defaultTokens: 20, tokenDelayMs: 5 });
    const ask = { model: "qwen2.5-7b", messages: [{ role: "user" as const, content: "w ".repeat(2000) }], max_tokens: 20, stream: true as const };
    const whole = await h.createKey({ credits: 1000 });
    let chunks = 0;
    for await (const c of await h.client(whole.key).chat.completions.create(ask)) if (c.choices[0]?.delta.content) chunks++;
    expect(chunks).toBe(20);
    const prompt = promptEstimate();
    expect(prompt).toBeGreaterThan(900);
    await h.waitForRequestLog((e) => e.keyId === whole.id);
    // The estimate of "t1 … t20" (41) is more than max_tokens: the 20 the outputs may generate.
    expect(generatedEstimate(20)).toBe(41);
    expect(1000 * CREDIT - (await balance(whole.id))).toBe(cost(prompt, 20));

    // Leaving after five chunks never costs more than reading to the end.
    const left = await h.createKey({ credits: 1000 });
    let seen = 0;
    for await (const c of await h.client(left.key).chat.completions.create(ask)) if (c.choices[0]?.delta.content && ++seen === 5) break;
    await h.waitForRequestLog((e) => e.keyId === left.id);
    const leftCost = 1000 * CREDIT - (await balance(left.id));
    expect(leftCost).toBeGreaterThanOrEqual(cost(prompt, generatedEstimate(5)));
    expect(leftCost).toBeLessThanOrEqual(cost(prompt, 20));
    expect(await (await fetch(`${h.url}/metrics`)).text()).toMatch(/shim_upstream_failures_total\{reason="no_usage"\} 1\n/);
    expect(h.logs.filter((l) => l.includes("stream ended without usage: prompt estimated, completion counted in chunks"))).toHaveLength(1);
    for (const id of [whole.id, left.id]) expect((await h.store.getKey(id))!.held).toBe(0);
  });

  it("a non-streamed request whose client leaves before the answer: the upstream keeps generating (LiteLLM, the deployed upstream, would not cancel it), and the key is charged the answer's usage", async () => {
    const { key, id } = await h.createKey({ credits: 1000 });
    h.fake.set({ tokenDelayMs: 50, defaultTokens: 40 }); // a 2 s answer
    const { aborted, completed, received } = h.fake.counters;
    const ac = new AbortController();
    const answer = h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "a long answer" }], max_tokens: 40 }, { signal: ac.signal, maxRetries: 0 });
    await h.fake.until((c) => c.received > received); // the upstream has this one
    setTimeout(() => ac.abort(), 300);
    await expect(answer).rejects.toThrow();
    const log = await h.waitForRequestLog((e) => e.keyId === id);
    expect(h.fake.counters).toMatchObject({ aborted, completed: completed + 1 });
    const usage = h.fake.usages.at(-1)!;
    expect(usage.completion_tokens).toBe(40);
    expect(log).toMatchObject({ status: 499, error: "client_closed_request", tokens: usage.prompt_tokens + 40 });
    // Hanging up before a long answer does not make its GPU time cost the request price only.
    expect(await balance(id)).toBe(1000 * CREDIT - cost(usage.prompt_tokens, 40));
    const [audit] = (await h.store.audit()).filter((r) => r.keyId === id);
    expect(audit).toMatchObject({ ledgerSum: audit!.balance, held: 0, reservations: 0 });
  });

  it("a non-streamed request whose client left, then whose upstream failed: nothing charged, one 499 line", async () => {
    const { key, id } = await h.createKey({ credits: 1000 });
    h.fake.set({ headerDelayMs: 600, failStatus: 500 });
    const { received } = h.fake.counters;
    const ac = new AbortController();
    const answer = h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 4 }, { signal: ac.signal, maxRetries: 0 });
    await h.fake.until((c) => c.received > received); // the upstream has this one
    setTimeout(() => ac.abort(), 100);
    await expect(answer).rejects.toThrow();
    const log = await h.waitForRequestLog((e) => e.keyId === id);
    h.fake.set({ headerDelayMs: 0, failStatus: null });
    expect(log).toMatchObject({ status: 499, error: "client_closed_request", cost: 0 });
    expect(h.logs.filter((l) => l.includes(`"keyId":"${id}"`) && l.includes('"msg":"request"'))).toHaveLength(1);
    expect((await h.store.getKey(id))!).toMatchObject({ balance: 1000 * CREDIT, held: 0 });
  });

  it("an upstream that cuts the stream: the client gets an error event; charged for what was delivered", async () => {
    const { key, id } = await h.createKey({ credits: 1000 });
    h.fake.set({ stopAfterTokens: 3, stopMode: "cut" });
    const stream = await h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 10, stream: true });
    let text = "";
    const err = await (async () => {
      try {
        for await (const c of stream) text += c.choices[0]?.delta.content ?? "";
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(APIError);
    expect((err as APIError).error).toMatchObject({ code: "upstream_error", type: "api_error" });
    expect(text).toBe("t1 t2 t3");
    expect(await balance(id)).toBe(1000 * CREDIT - cost(0, generatedEstimate(3))); // the upstream failed: only what was delivered
    // Counted as what it was, for the operator's alerts: a stream cut mid-way.
    expect(await (await fetch(`${h.url}/metrics`)).text()).toMatch(/shim_upstream_failures_total\{reason="stream_cut"\} [1-9]/);
  });

  /** Reads a stream to its error; returns the text before it and the error. */
  const readToError = async (stream: AsyncIterable<{ choices: { text?: string; delta?: { content?: string | null } }[] }>) => {
    let text = "";
    try {
      for await (const c of stream) text += c.choices[0]?.text ?? c.choices[0]?.delta?.content ?? "";
    } catch (e) {
      return { text, err: e };
    }
    return { text, err: undefined };
  };

  it("vLLM's in-stream error event ends the stream with our error, no internals; charged for what was delivered", async () => {
    const { key, id } = await h.createKey({ credits: 1000 });
    h.fake.set({ stopAfterTokens: 2, stopMode: "error" });
    const { data: stream, response } = await h.client(key).completions.create({ model: "qwen2.5-7b", prompt: "x", max_tokens: 10, stream: true }).withResponse();
    const { text, err } = await readToError(stream);
    expect(err).toBeInstanceOf(APIError);
    // vLLM's event has code 500: a 5xx's message is the upstream's internals, so ours goes instead.
    expect((err as APIError).error).toMatchObject({ code: "upstream_error", type: "api_error" });
    expect((err as APIError).message).not.toMatch(/Engine loop/);
    expect(text).toBe("t1 t2");
    expect(await balance(id)).toBe(1000 * CREDIT - cost(0, generatedEstimate(2)));
    const log = await h.waitForRequestLog((e) => e.reqId === response.headers.get("x-request-id"));
    // The HTTP status sent was 200 (headers go before the failure); the error says what happened.
    expect(log).toMatchObject({ status: 200, error: "upstream_error" });
  });

  /** A chat stream the fake ends with an error event after `tokens` tokens: what the client read, its error, the log line. */
  const chatStreamToError = async (tokens: number, stopMode: "error" | "error400" | "engineDead" | "engineDead400") => {
    const { key, id } = await h.createKey({ credits: 1000 });
    h.fake.set({ stopAfterTokens: tokens, stopMode });
    const { data: stream, response } = await h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 10, stream: true }).withResponse();
    const { text, err } = await readToError(stream);
    const log = await h.waitForRequestLog((e) => e.reqId === response.headers.get("x-request-id"));
    return { id, text, err: err as APIError, log };
  };

  it("an in-stream error after content is the upstream's failure whatever its code says (vLLM 0.10-0.11 send 400 for a dead engine)", async () => {
    const { id, text, err, log } = await chatStreamToError(2, "engineDead400");
    expect(text).toBe("t1 t2");
    // Not "invalid_request" with the engine's message: the client's request was fine.
    expect(err.error).toMatchObject({ code: "upstream_error", type: "api_error" });
    expect(err.message).not.toMatch(/EngineCore/);
    expect(log).toMatchObject({ status: 200, error: "upstream_error" });
    expect(1000 * CREDIT - (await balance(id))).toBe(CREDIT + generatedEstimate(2) * CREDIT); // the request and the two tokens delivered
  });

  it("an in-stream error before any content charges nothing, like a failed upstream", async () => {
    const { id, text, err, log } = await chatStreamToError(0, "error");
    expect(text).toBe("");
    expect(err.error).toMatchObject({ code: "upstream_error" });
    expect((await h.store.getKey(id))!).toMatchObject({ balance: 1000 * CREDIT, held: 0 });
    expect(log).toMatchObject({ status: 200, error: "upstream_error" });
    const metrics = await (await fetch(`${h.url}/metrics`)).text();
    expect(metrics).toMatch(/shim_upstream_failures_total\{reason="stream_error"\} [1-9]/);
  });

  it("every stream failure counted in shim_upstream_failures_total has a cause on its request's line (the operator greps '\"cause\"' for the lines behind that alert)", async () => {
    const failures = async () => {
      const text = await (await fetch(`${h.url}/metrics`)).text();
      return [...text.matchAll(/shim_upstream_failures_total\{reason="(\w+)"\} (\d+)/g)].reduce((n, m) => n + Number(m[2]), 0);
    };
    const cases = [
      // An error event before content, after content (vLLM's 500), and vLLM 0.10-0.11's 400 after content: counted as stream_error.
      [{ stopAfterTokens: 0, stopMode: "error" }, "stream_error"],
      [{ stopAfterTokens: 2, stopMode: "error" }, "stream_error"],
      [{ stopAfterTokens: 2, stopMode: "error400" }, "stream_error"],
      // A connection dropped mid-stream: the transport's code, as for an upstream not reached.
      [{ stopAfterTokens: 2, stopMode: "cut" }, /^UND_ERR_/],
      // [DONE] without the usage asked for: charged from an estimate, counted as no_usage.
      [{ ignoreIncludeUsage: true }, "no_usage"],
    ] as const;
    for (const [fake, cause] of cases) {
      h.fake.set(fake);
      const before = await failures();
      const { key, id } = await h.createKey({ credits: 1000 });
      await (await h.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 5, stream: true })).text();
      const line = await h.waitForRequestLog((e) => e.keyId === id);
      expect(await failures(), JSON.stringify(fake)).toBe(before + 1);
      expect(line.cause, JSON.stringify(fake)).toMatch(cause);
      h.fake.reset();
    }
  });
});

/**
 * With running usage (a model with continuousUsage, or a client asking for continuous_usage_stats),
 * vLLM's first chunk, the role with no content, already carries the prompt's tokens: that is not
 * content, and must not change what a failed or left stream costs.
 */
describe("a stream's charge does not depend on whether the upstream sends running usage", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startShim({ file: FILE, fake: FAKE });
  });
  afterEach(() => h.fake.reset());
  afterAll(() => h.close());
  const charged = async (id: string) => 1000 * CREDIT - (await h.store.getKey(id))!.balance;
  const ask = (model: string, extra: Record<string, unknown> = {}) => ({ model, messages: [{ role: "user", content: "hello there" }], max_tokens: 5, stream: true, ...extra });
  const runningUsage = [
    ["qwen-cont (continuousUsage: true)", ask("qwen-cont")],
    ["qwen2.5-7b with a client asking for continuous_usage_stats", ask("qwen2.5-7b", { stream_options: { include_usage: true, continuous_usage_stats: true } })],
  ] as const;

  it.each(runningUsage)("%s: an error event before any content costs nothing, and a 4xx keeps vLLM's message as it does without running usage, but a dead engine's 400 is the upstream's failure", async (_, body) => {
    for (const stopMode of ["error", "engineDead", "engineDead400", "cut"] as const) {
      h.fake.set({ stopAfterTokens: 0, stopMode });
      const { key, id } = await h.createKey({ credits: 1000 });
      const text = await (await h.post(key, "/v1/chat/completions", body)).text();
      expect(text, stopMode).toContain('"code":"upstream_error"');
      expect(text, stopMode).toContain(": credits_charged=0 ");
      expect(await charged(id), stopMode).toBe(0);
    }
    h.fake.set({ stopAfterTokens: 0, stopMode: "error400" });
    const { key } = await h.createKey({ credits: 1000 });
    const text = await (await h.post(key, "/v1/chat/completions", body)).text();
    expect(text).toContain('"type":"invalid_request_error"');
    expect(text).toContain("The provided JSON schema contains features not supported by xgrammar.");
  });

  // vLLM sends its role chunk once the prompt is processed and the first token exists (it may then
  // write nothing for a long time: reasoning hidden by include_reasoning: false, a tool parser
  // holding tokens back). A client that leaves after it owes its prompt: the reported one with
  // running usage, the estimate without, as after content.
  const leaveAfterRoleChunk = async (body: object) => {
    h.fake.set({ tokenDelayMs: 300 });
    const { key, id } = await h.createKey({ credits: 1000 });
    const ac = new AbortController();
    const res = await fetch(`${h.url}/v1/chat/completions`, { method: "POST", signal: ac.signal, headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body: JSON.stringify(body) });
    const first = new TextDecoder().decode((await res.body!.getReader().read()).value); // vLLM's role chunk: no content
    expect(first).toContain('"role":"assistant","content":""');
    ac.abort();
    await h.waitForRequestLog((e) => e.keyId === id);
    h.fake.reset();
    return charged(id);
  };
  it.each(runningUsage)("%s: a client that leaves after the role chunk, before any content, pays the request and the prompt vLLM reported", async (_, body) => {
    const charge = await leaveAfterRoleChunk(body);
    const { key } = await h.createKey({ credits: 1000 });
    await (await h.post(key, "/v1/chat/completions", body)).text(); // the same request read to its end: vLLM's prompt count
    const prompt = h.fake.usages.at(-1)!.prompt_tokens;
    expect(prompt).toBeGreaterThan(0);
    expect(charge).toBe(cost(prompt, 0));
  });
  it("without running usage, a client that leaves after the role chunk pays the request and the estimated prompt", async () => {
    const body = ask("qwen2.5-7b");
    const charge = await leaveAfterRoleChunk(body);
    expect(charge).toBe(cost(Math.ceil(Buffer.byteLength(JSON.stringify(body.messages)) / 4), 0));
  });

  it.each(runningUsage)("%s: an upstream failure after content charges the content only, as without running usage", async (_, body) => {
    h.fake.set({ stopAfterTokens: 2, stopMode: "cut" });
    const { key, id } = await h.createKey({ credits: 1000 });
    const text = await (await h.post(key, "/v1/chat/completions", body)).text();
    expect(text).toContain('"code":"upstream_error"');
    expect(await charged(id)).toBe(cost(0, 2));
  });
});

describe("a whole stream from LiteLLM with no completion tokens (a provider's content filter)", () => {
  it("is charged the prompt its usage reports, though that usage came on a chunk with a choice", async () => {
    // LiteLLM sends no usage-only chunk: its last chunk keeps a choice and carries the whole request's usage.
    const upstream = createServer((req, res) => {
      req.resume();
      req.on("end", () => {
        res.writeHead(200, { "content-type": "text/event-stream" });
        const send = (o: unknown) => res.write(`data: ${JSON.stringify(o)}\n\n`);
        send({ id: "c", object: "chat.completion.chunk", model: "m", choices: [{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }] });
        send({ id: "c", object: "chat.completion.chunk", model: "m", choices: [{ index: 0, delta: {}, finish_reason: "content_filter" }], usage: { prompt_tokens: 300, completion_tokens: 0, total_tokens: 300 } });
        res.end("data: [DONE]\n\n");
      });
    });
    await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
    const h = await startShim({
      file: { models: [{ name: "m", maxModelLen: 8192 }], pricing: { models: { m: { promptPer1k: 1, completionPer1k: 1 } } } },
      env: { SHIM_UPSTREAM_URL: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1` },
    });
    try {
      const { key, id } = await h.createKey({ credits: 1000 });
      const text = await (await h.post(key, "/v1/chat/completions", { model: "m", messages: [{ role: "user", content: "x".repeat(2000) }], max_tokens: 10, stream: true })).text();
      expect(text).toContain(": credits_charged=1.3 ");
      expect(1000 * CREDIT - (await h.store.getKey(id))!.balance).toBe(1.3 * CREDIT); // the request and 300 prompt tokens
    } finally {
      await h.close();
      upstream.close();
    }
  });
});

describe("x-credits-remaining on an answer the upstream refused", () => {
  it("is what the key has left when the answer is written, not when the key was read", async () => {
    const h = await startShim({ file: FILE, fake: FAKE });
    try {
      const { key, id } = await h.createKey({ credits: 1000 });
      // A stream holds credits while a second request waits on the upstream, which then refuses it.
      h.fake.set({ tokenDelayMs: 50, defaultTokens: 20 });
      const streamed = (await h.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "a" }], max_tokens: 20, stream: true })).text();
      h.fake.set({ failStatus: 400, headerDelayMs: 2000 });
      const refused = await h.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "b" }], max_tokens: 5 });
      await refused.text();
      await streamed;
      expect(refused.status).toBe(400);
      const k = (await h.store.getKey(id))!;
      expect(Number(refused.headers.get("x-credits-remaining"))).toBe((k.balance - k.held) / CREDIT);
    } finally {
      await h.close();
    }
  });
});

describe("stream idle timeout", () => {
  it("an upstream silent for longer than SHIM_STREAM_IDLE_TIMEOUT_MS: error event, upstream aborted, nothing charged", async () => {
    const h = await startShim({ file: FILE, fake: FAKE, env: { SHIM_STREAM_IDLE_TIMEOUT_MS: "300" } });
    try {
      const { key, id } = await h.createKey({ credits: 10 });
      h.fake.set({ tokenDelayMs: 3000 });
      const t0 = performance.now();
      const stream = await h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 3, stream: true });
      const err = await (async () => {
        try {
          for await (const _ of stream);
        } catch (e) {
          return e as APIError;
        }
      })();
      expect(err?.error).toMatchObject({ code: "upstream_timeout" });
      // 300 ms configured; the idle timeout runs on undici's 500 ms-tick timers (up to ~1 s late).
      expect(performance.now() - t0).toBeLessThan(2000);
      await h.fake.until((c) => c.aborted >= 1);
      expect((await h.store.getKey(id))!).toMatchObject({ balance: 10 * CREDIT, held: 0 });
    } finally {
      await h.close();
    }
  });
});

/** A shim whose holds wait at a gate: `reserveCalled` once a request is making its hold, `release` lets it go on. */
async function shimWithGatedHolds() {
  let reserving!: () => void;
  const reserveCalled = new Promise<void>((r) => (reserving = r));
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const h = await startShim({
    file: FILE,
    fake: FAKE,
    wrapStore: (s) => overrideStore(s, { reserve: async (input) => (reserving(), await gate, s.reserve(input)) }),
  });
  return { h, reserveCalled, release };
}

describe("a client that leaves while its request is being admitted", () => {
  it("is not sent upstream, is charged nothing, and its hold is released", async () => {
    // The hold waits until the client has gone, so the close lands between the route starting
    // and the upstream request: the window in which a missed 'close' used to send the request
    // anyway and leave the relay waiting on a dead socket.
    const { h, reserveCalled, release } = await shimWithGatedHolds();
    try {
      const { key, id } = await h.createKey({ credits: 10 });
      const received = h.fake.counters.received;
      const accepted = once(h.app.server, "connection") as Promise<[Socket]>;
      const req = request(`${h.url}/v1/chat/completions`, { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json" } });
      req.on("error", () => {});
      req.end(JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 5, stream: true }));
      const [shimSide] = await accepted;
      await reserveCalled;
      // The shim's end of the connection closes: its response's 'close' listeners (added before this one) have run.
      const closed = once(shimSide, "close");
      req.destroy();
      await closed;
      release();
      const line = await h.waitForRequestLog((l) => l.keyId === id);
      expect(line).toMatchObject({ status: 499, error: "client_closed_request" });
      await new Promise((r) => setTimeout(r, 200));
      expect(h.fake.counters.received).toBe(received);
      expect((await h.store.getKey(id))!).toMatchObject({ balance: 10 * CREDIT, held: 0 });
    } finally {
      await h.close();
    }
  });
});

describe("a drain that starts while a request's hold is being made", () => {
  it("waits for that request and turns it away with a 503, not sent upstream, its hold released", async () => {
    const { h, reserveCalled, release } = await shimWithGatedHolds();
    try {
      const { key, id } = await h.createKey({ credits: 10 });
      const received = h.fake.counters.received;
      const answer = h.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 5 });
      await reserveCalled;
      // What server.ts does on SIGTERM: the request being admitted is already in flight.
      expect(h.app.shim.inflight.size).toBe(1);
      let drained = false;
      const drain = h.app.shim.inflight.drain(0).then((r) => ((drained = true), r));
      await new Promise((r) => setTimeout(r, 50));
      expect(drained).toBe(false); // the store must not be closed under the hold being made
      release();
      const res = await answer;
      expect(res.status).toBe(503);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("service_unavailable");
      expect(await drain).toEqual({ aborted: 1 });
      expect(h.fake.counters.received).toBe(received);
      expect((await h.store.getKey(id))!).toMatchObject({ balance: 10 * CREDIT, held: 0 });
    } finally {
      await h.close();
    }
  });
});

/**
 * A shim in front of a scripted upstream, set up for the describe that calls it: each request is
 * answered with the events last `play`ed, written one at a time, then the body ends (or, with
 * `drop`, its connection drops). Model "m" costs 1 credit a request, 0.001 a prompt token and 1
 * a completion token (`cost`); "cu" is a model whose upstream sends running usage on every chunk
 * (vLLM's continuous usage stats).
 */
function scriptedUpstream() {
  let upstream: ReturnType<typeof createServer>;
  let h: Harness;
  let script: { events: string[]; drop: boolean } = { events: [], drop: false };
  beforeAll(async () => {
    upstream = createServer((req, res) => {
      req.resume();
      req.on("end", async () => {
        res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8" });
        for (const e of script.events) {
          res.write(e);
          await new Promise((r) => setTimeout(r, 20));
        }
        if (script.drop) res.destroy();
        else res.end();
      });
    });
    await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
    h = await startShim({
      file: {
        models: [{ name: "m", maxModelLen: 8192 }, { name: "cu", maxModelLen: 8192, continuousUsage: true }],
        pricing: { request: 1, models: { m: { promptPer1k: 1, completionPer1k: 1000 } } },
      },
      env: { SHIM_UPSTREAM_URL: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1` },
    });
  });
  afterAll(async () => {
    await h.close();
    upstream.close();
  });
  const streamCuts = async () => Number(/shim_upstream_failures_total\{reason="stream_cut"\} (\d+)/.exec(await (await fetch(`${h.url}/metrics`)).text())?.[1] ?? 0);
  const play = (events: string[], drop = false) => {
    script = { events, drop };
  };
  return {
    /** The shim (set once the describe's beforeAll ran). */
    get h() {
      return h;
    },
    play,
    /** Runs one streamed request against these events: what the client read, the request's log line, what it cost, and the stream_cut count it added. */
    async run(events: string[], drop = false, extra: Record<string, unknown> = {}) {
      play(events, drop);
      const cutsBefore = await streamCuts();
      const { key, id } = await h.createKey({ credits: 1000 });
      const res = await h.post(key, "/v1/chat/completions", { model: "m", messages: [{ role: "user", content: "hi" }], max_tokens: 10, stream: true, ...extra });
      const text = await res.text();
      const line = await h.waitForRequestLog((e) => e.keyId === id);
      return { text, line, charged: 1000 * CREDIT - (await h.store.getKey(id))!.balance, cuts: (await streamCuts()) - cutsBefore };
    },
  };
}

const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) => `data: ${JSON.stringify({ id: "c", object: "chat.completion.chunk", created: 1, model: "m", choices, ...extra })}\n\n`;
const choice = (delta: Record<string, unknown>, finish: string | null = null, index = 0) => ({ index, delta, logprobs: null, finish_reason: finish });
const usage = (prompt: number, completion: number) => ({ usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion } });

/**
 * The upstream's body ends (cleanly, or its connection drops) after the answer and its usage but
 * before `data: [DONE]`: LiteLLM or a worker restarting, a proxy cutting an idle connection. The
 * client has the whole answer and the usage says what it cost: it is a whole stream, not a failure.
 */
describe("a stream whose usage arrived but whose [DONE] did not", () => {
  const { run } = scriptedUpstream();
  const content = [chunk([choice({ role: "assistant", content: "" })]), chunk([choice({ content: "a" })]), chunk([choice({ content: " b" })])];

  const shapes = [
    // LiteLLM (some versions): the finish and the whole request's usage on one chunk that keeps its choice.
    ["LiteLLM, usage on its finish chunk", [...content, chunk([choice({}, "stop")], usage(500, 2))]],
    // LiteLLM (streaming_handler.py): a finish chunk, then its own usage chunk with a placeholder choice (finish_reason null).
    ["LiteLLM, usage on a chunk after its finish", [...content, chunk([choice({}, "stop")]), chunk([choice({})], usage(500, 2))]],
    ["vLLM", [...content, chunk([choice({}, "stop")]), chunk([], usage(500, 2))]],
  ] as const;
  for (const [name, events] of shapes) {
    for (const drop of [false, true]) {
      it(`${name}, body ${drop ? "dropped" : "ended cleanly"} after the usage: charged the usage, its prompt included, and told no error`, async () => {
        const { text, line, charged, cuts } = await run([...events], drop);
        expect(charged).toBe(cost(500, 2));
        expect(text).not.toContain('"error"');
        expect(text).toContain(": credits_charged=3.5 ");
        expect(text.endsWith("data: [DONE]\n\n")).toBe(true);
        expect(line.status).toBe(200);
        expect(line.error).toBeUndefined();
        // A dropped connection still says so to the operator, on the line.
        expect(line.cause !== undefined).toBe(drop);
        expect(cuts).toBe(0);
      });
    }
  }

  it("n=2 with running usage: both outputs finished, the usage-only chunk lost: charged each output and the prompt once", async () => {
    const two = [chunk([choice({ content: "a" }, null, 0)], usage(500, 1)), chunk([choice({ content: "b" }, null, 1)], usage(500, 1)), chunk([choice({ content: "c" }, "stop", 0)], usage(500, 2)), chunk([choice({ content: "d" }, "stop", 1)], usage(500, 2))];
    const { text, line, charged, cuts } = await run(two, true, { n: 2 });
    expect(charged).toBe(cost(500, 4));
    expect(text).not.toContain('"error"');
    expect(line).toMatchObject({ status: 200 });
    expect(line.error).toBeUndefined();
    expect(cuts).toBe(0);
  });

  it("running usage hidden from a client that asked for usage, the usage-only chunk lost: it still gets one usage chunk, with the upstream's figures", async () => {
    const running = [chunk([choice({ role: "assistant", content: "" })], usage(500, 0)), chunk([choice({ content: "a" })], usage(500, 1)), chunk([choice({ content: " b" }, "stop")], usage(500, 2))]
      .map((e) => e.replace('"model":"m"', '"model":"cu"'));
    for (const drop of [false, true]) {
      const { text, line } = await run(running, drop, { model: "cu", stream_options: { include_usage: true } });
      const usageChunks = text.split("\n\n").filter((e) => e.includes('"usage":{'));
      expect(usageChunks, `drop ${drop}`).toHaveLength(1);
      expect(JSON.parse(usageChunks[0]!.slice("data: ".length)), `drop ${drop}`).toEqual({
        id: "c", object: "chat.completion.chunk", created: 1, model: "cu", choices: [],
        usage: { prompt_tokens: 500, completion_tokens: 2, total_tokens: 502 }, credits_charged: 1, credits_remaining: expect.any(Number),
      });
      expect(text.endsWith("data: [DONE]\n\n"), `drop ${drop}`).toBe(true);
      expect(line.status).toBe(200);
    }
    // A client that did not ask for usage gets none.
    const { text } = await run(running, false, { model: "cu" });
    expect(text).not.toContain('"usage"');
  });

  it("LiteLLM's usage on its finish chunk, shown to a client that asked for usage: no second, made-up usage chunk", async () => {
    const litellm = [...content, chunk([choice({}, "stop")], usage(500, 2))];
    for (const drop of [false, true]) {
      const { text } = await run([...litellm], drop, { stream_options: { include_usage: true } });
      const usageChunks = text.split("\n\n").filter((e) => e.includes('"usage":{'));
      expect(usageChunks, `drop ${drop}`).toHaveLength(1);
    }
  });

  it("no running usage asked, n=2: usage on LiteLLM's one finish chunk is the whole request's, though one output's finish came", async () => {
    const { text, line, charged } = await run([...content, chunk([choice({}, "stop")], usage(500, 2))], true, { n: 2 });
    expect(charged).toBe(cost(500, 2));
    expect(text).not.toContain('"error"');
    expect(text.endsWith("data: [DONE]\n\n")).toBe(true);
    expect(line.status).toBe(200);
  });

  // Still cut short, so still failures, told so; charged the content only while no output had
  // finished, and its prompt too once one had (a whole output was delivered: behind LiteLLM, one
  // finish_reason for all of n, the whole answer). A clean close after every output's finish is
  // a whole stream without usage (sse-framing.test.ts): there only a dropped connection is a cut.
  const cutShort = [
    ["LiteLLM, connection dropped after its finish chunk, before its usage", [...content, chunk([choice({}, "stop")])], {}, "estimated"],
    // Usage on a chunk before any finish, none asked: not the whole request's (Ollama zeroes one on every completions chunk).
    ["usage on chunks before any finish, no running usage asked", [chunk([choice({ content: "a" })], usage(0, 0)), chunk([choice({ content: " b" })], usage(0, 0))], {}, 0],
    // Running usage as vLLM sends it when asked (here by the client: the model is not continuousUsage).
    ["vLLM with running usage, cut before its finish", [chunk([choice({ content: "a" })], usage(500, 1)), chunk([choice({ content: " b" })], usage(500, 2))], { stream_options: { continuous_usage_stats: true } }, 0],
    ["n=2 with running usage, one output finished, the other cut", [chunk([choice({ content: "a" }, "stop", 0)], usage(500, 1)), chunk([choice({ content: "b" }, null, 1)], usage(500, 1))], { n: 2, stream_options: { continuous_usage_stats: true } }, 500],
  ] as const;
  for (const [name, events, extra, prompt] of cutShort) {
    it(`${name}: an upstream failure, charged the content ${prompt === 0 ? "only" : "and its prompt"}`, async () => {
      // The estimated prompt: what the same events ended by [DONE] (a whole stream without usage) are charged for it.
      const promptCharge = prompt === "estimated" ? (await run([...events, "data: [DONE]\n\n"], false, extra)).charged - cost(0, 2) : cost(prompt, 0) - cost(0, 0);
      expect(promptCharge).toBeGreaterThan(prompt === 0 ? -1 : 0);
      const finished = prompt === "estimated"; // every output's finish came
      for (const drop of finished ? [true] : [false, true]) {
        const { text, line, charged, cuts } = await run([...events], drop, extra);
        expect(charged, `drop ${drop}`).toBe(cost(0, 2) + promptCharge);
        expect(text, `drop ${drop}`).toContain('"code":"upstream_error"');
        expect(text, `drop ${drop}`).not.toContain("data: [DONE]");
        expect(line, `drop ${drop}`).toMatchObject({ status: 200, error: "upstream_error" });
        expect(cuts, `drop ${drop}`).toBe(1);
        // Counted, so named on its line: a clean close without [DONE] as what it is counted under.
        expect(line.cause, `drop ${drop}`).toMatch(drop ? /^UND_ERR_/ : /^stream_cut$/);
      }
    });
  }
});

/**
 * Events the shim rewrites (usage hidden from a client that did not ask) must stay the events
 * they were, and usage-only chunks that do not end the answer must not freeze its charge.
 */
describe("usage in a stream's events, as the upstream happened to write them", () => {
  const scripted = scriptedUpstream();
  const { run } = scripted;
  const ask = { model: "m", messages: [{ role: "user" as const, content: "hi" }], max_tokens: 10, stream: true as const };
  const dataEvents = (text: string) => text.split("\n\n").filter((e) => e.startsWith("data: {")).map((e) => JSON.parse(e.slice("data: ".length)));
  // LiteLLM's finish chunk with the whole request's usage, its data over two lines (valid SSE: sse-starlette splits on newlines).
  const finish = chunk([choice({}, "stop")], usage(5, 2)).slice("data: ".length, -2);
  const cut = finish.indexOf('"choices"');
  const twoLines = `data: ${finish.slice(0, cut)}\ndata: ${finish.slice(cut)}\n\n`;

  it("an event whose data spans several lines, its usage hidden, is still one event each line of which is data (the SDK reads it)", async () => {
    scripted.play([chunk([choice({ role: "assistant", content: "a" })]), twoLines, "data: [DONE]\n\n"]);
    const { key } = await scripted.h.createKey({ credits: 1000 });
    const seen = [];
    for await (const c of await scripted.h.client(key).chat.completions.create(ask)) seen.push(c);
    expect(seen.map((c) => c.choices[0]?.finish_reason)).toEqual([null, "stop"]);
    expect(seen.every((c) => c.usage === undefined)).toBe(true);
  });

  it("an event whose usage is hidden keeps its id:, event: and retry: lines", async () => {
    const { text, charged } = await run([chunk([choice({ role: "assistant", content: "a" })]), `id: 2\nevent: message\nretry: 900\ndata: ${finish}\n\n`, "data: [DONE]\n\n"]);
    expect(text).toContain(`id: 2\nevent: message\nretry: 900\ndata: ${chunk([choice({}, "stop")]).slice("data: ".length, -2)}\n\n`);
    expect(charged).toBe(cost(5, 2));
  });

  it("a usage-only chunk the shim cannot wholly read is still a usage-only chunk: hidden from a client that did not ask, its completion count charged", async () => {
    const unread = chunk([], { usage: { prompt_tokens: null, completion_tokens: 2, total_tokens: 2 } });
    const events = [chunk([choice({ role: "assistant", content: "a b" })]), chunk([choice({}, "stop")]), unread, "data: [DONE]\n\n"];
    const { text, charged } = await run(events);
    expect(dataEvents(text).every((c) => c.choices.length > 0)).toBe(true); // `chunk.choices[0].delta` holds for every chunk
    // The prompt, unreported, is estimated as for a stream without usage: the messages' JSON bytes / 4.
    const estimate = Math.ceil(Buffer.byteLength(JSON.stringify(ask.messages)) / 4);
    expect(charged).toBe(cost(estimate, 2));
    expect(scripted.h.logs.filter((l) => l.includes("stream usage without prompt_tokens: prompt estimated"))).toHaveLength(1); // the operator is told, as for a stream without usage
    const asked = await run(events, false, { stream_options: { include_usage: true } });
    expect(dataEvents(asked.text).at(-1)).toMatchObject({ choices: [], usage: { prompt_tokens: null, completion_tokens: 2 }, credits_charged: cost(estimate, 2) / CREDIT });
  });

  it("a usage-only chunk written over several lines, with an id: line, carries the credits to a client that asked", async () => {
    const only = chunk([], usage(5, 2)).slice("data: ".length, -2);
    const at = only.indexOf('"usage"');
    const { text } = await run([chunk([choice({ role: "assistant", content: "a b" })]), chunk([choice({}, "stop")]), `id: 3\ndata: ${only.slice(0, at)}\ndata: ${only.slice(at)}\n\n`, "data: [DONE]\n\n"], false, { stream_options: { include_usage: true } });
    const event = text.split("\n\n").find((e) => e.startsWith("id: 3\n"))!;
    expect(event.split("\n").slice(1).every((l) => l.startsWith("data: "))).toBe(true);
    expect(JSON.parse(event.split("\n").slice(1).map((l) => l.slice("data: ".length)).join("\n"))).toMatchObject({ choices: [], usage: { prompt_tokens: 5, completion_tokens: 2 }, credits_charged: cost(5, 2) / CREDIT });
  });

  // vLLM sends its usage-only chunk once every output has finished, right before [DONE]. One that
  // comes earlier, or twice, is not the answer's last word.
  const early = [chunk([choice({ role: "assistant", content: "a" })]), chunk([], usage(5, 1)), ...Array.from({ length: 5 }, () => chunk([choice({ content: " b" })])), chunk([choice({}, "stop")])];

  it("content after a usage-only chunk is charged: the charge is settled at the end, not on the first usage chunk", async () => {
    const { text, charged } = await run([...early, "data: [DONE]\n\n"]);
    expect(charged).toBe(cost(5, 6)); // the usage's prompt, and at least one token for each chunk that carried content
    expect(text).toContain(`: credits_charged=${cost(5, 6) / CREDIT} `);
    // A client that asked for usage is shown that chunk as it came, without figures that were not final.
    const asked = await run([...early, "data: [DONE]\n\n"], false, { stream_options: { include_usage: true } });
    expect(asked.charged).toBe(cost(5, 6));
    const usageChunks = dataEvents(asked.text).filter((c) => c.usage);
    expect(usageChunks).toEqual([expect.objectContaining({ choices: [], usage: { prompt_tokens: 5, completion_tokens: 1, total_tokens: 6 } })]);
    expect(usageChunks[0]).not.toHaveProperty("credits_charged");
  });

  it("content after a usage-only chunk, then the finish and a clean end without [DONE]: a whole stream, charged the content after the usage", async () => {
    const { text, charged, line } = await run(early);
    expect(text).not.toContain('"error"');
    expect(text.endsWith("data: [DONE]\n\n")).toBe(true);
    expect(charged).toBe(cost(5, 6));
    expect(line).toMatchObject({ status: 200 });
    expect(line.error).toBeUndefined();
    // The connection dropped there instead: a cut stream, charged the same (the content and the usage's prompt, after the output's finish).
    const dropped = await run(early, true);
    expect(dropped.text).toContain('"code":"upstream_error"');
    expect(dropped.charged).toBe(cost(5, 6));
    expect(dropped.line).toMatchObject({ status: 200, error: "upstream_error" });
  });

  it("a comment between the usage-only chunk and [DONE] (a proxy's keep-alive) leaves the figures on the usage chunk", async () => {
    const events = [chunk([choice({ role: "assistant", content: "a b" })]), chunk([choice({}, "stop")]), chunk([], usage(5, 2)), ": ping\n\n", "data: [DONE]\n\n"];
    const { text, charged } = await run(events, false, { stream_options: { include_usage: true } });
    expect(charged).toBe(cost(5, 2));
    expect(dataEvents(text).filter((c) => c.usage)).toEqual([expect.objectContaining({ usage: { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 }, credits_charged: cost(5, 2) / CREDIT })]);
    expect(text).toContain(": ping\n\n"); // the comment is relayed all the same
  });

  it("a usage-only chunk sent twice: the last one is charged, and carries the figures to a client that asked", async () => {
    const twice = [chunk([choice({ role: "assistant", content: "a b c" })]), chunk([choice({}, "stop")]), chunk([], usage(5, 1)), chunk([], usage(5, 3)), "data: [DONE]\n\n"];
    expect((await run(twice)).charged).toBe(cost(5, 3));
    const asked = await run(twice, false, { stream_options: { include_usage: true } });
    expect(asked.charged).toBe(cost(5, 3));
    const usageChunks = dataEvents(asked.text).filter((c) => c.usage);
    expect(usageChunks.map((c) => [c.usage.completion_tokens, c.credits_charged])).toEqual([[1, undefined], [3, cost(5, 3) / CREDIT]]);
  });
});

describe("a client that leaves a streamed image request early (a data URL, no running usage)", () => {
  let h: Harness;
  // A model configured with its count per image (Gemma 3's 256): every media part is estimated at least that.
  const GEMMA_IMAGE_TOKENS = 256;
  beforeAll(async () => {
    h = await startShim({
      file: { pricing: { ...FILE.pricing, models: { ...FILE.pricing.models, "gemma-3": { promptPer1k: 1, completionPer1k: 1000 } } }, models: [...FILE.models, { name: "gemma-3", maxModelLen: 8192, mediaPartTokens: GEMMA_IMAGE_TOKENS }] },
      fake: { models: [...FAKE.models, { name: "gemma-3" }] },
    });
  });
  afterAll(() => h.close());

  it("is never charged for more prompt tokens than the model's context (8192) can hold", async () => {
    h.fake.set({ tokenDelayMs: 300 });
    const { key, id } = await h.createKey({ credits: 1000 });
    // A ~200 KB image as a data URL (as the OpenAI SDKs send local images), base64 with its digits.
    const b64 = Buffer.from(Array.from({ length: 150_000 }, (_, i) => (i * 7919) % 256)).toString("base64");
    const body = {
      model: "qwen2.5-7b", stream: true, max_tokens: 100,
      messages: [{ role: "user", content: [{ type: "text", text: "What is in this image?" }, { type: "image_url", image_url: { url: `data:image/png;base64,${b64}` } }] }],
    };
    const ac = new AbortController();
    const res = await fetch(`${h.url}/v1/chat/completions`, { method: "POST", signal: ac.signal, headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body: JSON.stringify(body) });
    expect(res.status).toBe(200);
    await res.body!.getReader().read(); // the role chunk: the answer began
    ac.abort();
    await h.waitForRequestLog((e) => e.keyId === id);
    h.fake.reset();
    const charged = 1000 * CREDIT - (await h.store.getKey(id))!.balance;
    // The most this request can cost with the answer begun and no content: the request and a
    // whole context of prompt tokens (vLLM refuses a longer prompt): 1 + 8.192 credits.
    expect(charged).toBeLessThanOrEqual(CREDIT + 8192 * 1000);
  });

  // Found by review: an image by URL was estimated as its JSON (~10 tokens), so 8 images cost 156
  // prompt tokens where vLLM counted ~9,600. Each media part of a model configured with
  // mediaPartTokens now counts at least that (the fake counts IMAGE_TOKENS = 1,200 an image).
  it("by URL, having left after the role chunk, pays at least the model's mediaPartTokens an image, not the characters of their URLs", async () => {
    const images = Array.from({ length: 8 }, (_, i) => ({ type: "image_url", image_url: { url: `https://img.example/${i}.png` } }));
    const body = { model: "gemma-3", stream: true, max_tokens: 5, messages: [{ role: "user", content: [{ type: "text", text: "Compare these." }, ...images] }] };
    // Read to the end: charged vLLM's prompt (8 images × IMAGE_TOKENS and the text).
    const whole = await h.createKey({ credits: 1000 });
    await (await h.post(whole.key, "/v1/chat/completions", body)).text();
    const prompt = h.fake.usages.at(-1)!.prompt_tokens;
    expect(prompt).toBeGreaterThan(8 * IMAGE_TOKENS);

    h.fake.set({ tokenDelayMs: 300 });
    const { key, id } = await h.createKey({ credits: 1000 });
    const ac = new AbortController();
    const res = await fetch(`${h.url}/v1/chat/completions`, { method: "POST", signal: ac.signal, headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body: JSON.stringify(body) });
    await res.body!.getReader().read(); // the role chunk: the prompt, images included, was processed
    ac.abort();
    await h.waitForRequestLog((e) => e.keyId === id);
    h.fake.reset();
    const promptCharged = (1000 * CREDIT - (await h.store.getKey(id))!.balance - CREDIT) / 1000; // 1000 µc a prompt token
    expect(promptCharged).toBe(promptTokens("chat", body, GEMMA_IMAGE_TOKENS));
    expect(promptCharged).toBeGreaterThanOrEqual(8 * GEMMA_IMAGE_TOKENS);
    expect(promptCharged).toBeLessThanOrEqual(prompt); // below vLLM's count here: the fake's images are larger than the floor
  });

  // Found by review: a fixed floor of 256 a part was no lower bound. The fake counts an audio part by
  // its words (a few tokens), as vLLM counts a short clip few (Qwen2-Audio ~25 a second, Ultravox
  // and Gemma 3n ~6); images of Qwen2-VL (16 for 112×112), MiniCPM-V and SmolVLM (64) are below it
  // too. A model without mediaPartTokens has no floor: the estimate is the parts' payload, their
  // JSON at four bytes a token. (That estimate counts the message's JSON, so it is above the fake's
  // count of words, 2 a clip; what is bounded is what the media add: less than four 1-second clips'
  // ~25 tokens each, where the floor of 256 a part charged 1,042.)
  const clips = Array.from({ length: 4 }, (_, i) => ({ type: "audio_url", audio_url: { url: `https://a.example/${i}.wav` } }));
  const audio = { model: "qwen2.5-7b", stream: true, max_tokens: 5, messages: [{ role: "user", content: [{ type: "text", text: "Transcribe." }, ...clips] }] };

  it("four short audio clips by URL, left after the role chunk, on a model without mediaPartTokens: charged their payload, not 256 a clip", async () => {
    const whole = await h.createKey({ credits: 1000 });
    await (await h.post(whole.key, "/v1/chat/completions", audio)).text();
    const vllmPrompt = h.fake.usages.at(-1)!.prompt_tokens;

    h.fake.set({ tokenDelayMs: 300 });
    const { key, id } = await h.createKey({ credits: 1000 });
    const ac = new AbortController();
    const res = await fetch(`${h.url}/v1/chat/completions`, { method: "POST", signal: ac.signal, headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body: JSON.stringify(audio) });
    await res.body!.getReader().read(); // the role chunk
    ac.abort();
    await h.waitForRequestLog((e) => e.keyId === id);
    h.fake.reset();
    const promptCharged = (1000 * CREDIT - (await h.store.getKey(id))!.balance - CREDIT) / 1000;
    expect(vllmPrompt).toBeLessThan(4 * 25);
    expect(promptCharged).toBe(promptTokens("chat", audio));
    expect(promptCharged).toBeLessThan(4 * 25);
  });

  // An upstream that streams no usage (a provider behind LiteLLM; the fake's ignoreIncludeUsage):
  // every stream is charged the estimate, read to its end or not (4 clips counted 14 were charged 1,042).
  it("a stream read to its end from an upstream that sends no usage, on a model without mediaPartTokens: charged the clips' payload, not 256 a clip", async () => {
    h.fake.set({ ignoreIncludeUsage: true });
    const { key, id } = await h.createKey({ credits: 1000 });
    await (await h.post(key, "/v1/chat/completions", audio)).text();
    await h.waitForRequestLog((e) => e.keyId === id);
    const counted = h.fake.usages.at(-1)!.prompt_tokens;
    h.fake.reset();
    const charged = 1000 * CREDIT - (await h.store.getKey(id))!.balance;
    const promptCharged = (charged - CREDIT - 5 * CREDIT) / 1000; // max_tokens: 5, each generated token a credit
    expect(counted).toBeLessThan(4 * 25);
    expect(promptCharged).toBe(promptTokens("chat", audio));
    expect(promptCharged).toBeLessThan(4 * 25);
  });
});

// Pinned by a mutation review: when settling fails after the usage-only chunk, a client that
// asked for usage still gets it, before the error.
describe("a stream whose settlement fails after its usage-only chunk", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startShim({ wrapStore: (s) => overrideStore(s, { settle: async () => { throw new StoreUnavailableError(new Error("disk on fire")); } }) });
  });
  afterAll(() => h.close());

  it("still sends the usage-only chunk the client asked for, then the error", async () => {
    const { key } = await h.createKey({ credits: 1000 });
    const res = await h.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 3, stream: true, stream_options: { include_usage: true } });
    const events = (await res.text()).split("\n\n").filter((e) => e.startsWith("data: {")).map((e) => JSON.parse(e.slice(6)));
    expect(events.at(-1)).toHaveProperty("error");
    expect(events.at(-2)).toMatchObject({ choices: [], usage: { completion_tokens: 3 } });
  });
});
