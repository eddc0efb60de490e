import OpenAI, { APIError } from "openai";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { TokenEstimate } from "../../api-shim/src/money/pricing.ts";
import { promptTokens } from "../../api-shim/src/requests/inference-request.ts";
import { parseResponsesRequest } from "../../api-shim/src/requests/responses-request.ts";
import { startShim, type Harness, moneyInvariants, balanceOf, expectLedgerMatches } from "../support/shim-harness.ts";

const CREDIT = 1_000_000;
// 1 credit per request, 0.001 credit per prompt token (0.0005 cached), 1 credit per output token: charges easy to read.
const FILE = {
  pricing: { request: 1, models: { "qwen2.5-7b": { promptPer1k: 1, cachedPromptPer1k: 0.5, completionPer1k: 1000 } } },
  models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }, { name: "bge-m3", maxModelLen: 8192 }],
};
/** µc charged for `input` prompt tokens (`cached` of them from the cache) and `output` tokens. */
const cost = (input: number, output: number, cached = 0) => CREDIT + (input - cached) * 1000 + cached * 500 + output * CREDIT;

/** The output tokens charged for the fake's first k deltas when no usage came: the estimate of "t1 t2 … tk", at least one a delta. */
const generated = (k: number) => {
  const e = new TokenEstimate();
  e.add(Array.from({ length: k }, (_, i) => `t${i + 1}`).join(" "));
  return Math.max(k, e.tokens);
};

/** OpenAI's Responses API through the shim, with the official SDK: `client.responses.create`. */
describe("POST /v1/responses", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startShim({ file: FILE });
  });
  afterEach(() => h.fake.reset());
  afterAll(() => h.close());

  const balance = (id: string) => balanceOf(h.store, id);
  const ledgerMatches = (id: string) => expectLedgerMatches(h.store, id);

  it("non-streamed: the answer arrives whole, charged exactly from its usage, credits spliced in; the body goes upstream untouched", async () => {
    const { key, id } = await h.createKey({ credits: 1000 });
    const body = { model: "qwen2.5-7b", instructions: "be brief", input: "say five words", max_output_tokens: 5, seed: 1 };
    const { data, response } = await h.client(key).responses.create(body).withResponse();
    expect(data.object).toBe("response");
    expect(data.output_text).toBe("t1 t2 t3 t4 t5");
    // The fake's prompt: 3 template tokens + "be brief" + "say five words".
    expect(data.usage).toMatchObject({ input_tokens: 8, output_tokens: 5, total_tokens: 13 });
    const charged = cost(8, 5);
    const extra = data as unknown as { credits_charged: number; credits_remaining: number };
    expect(extra.credits_charged).toBe(charged / CREDIT);
    expect(extra.credits_remaining).toBe((1000 * CREDIT - charged) / CREDIT);
    expect(response.headers.get("x-credits-charged")).toBe(String(charged / CREDIT));
    expect(await balance(id)).toBe(1000 * CREDIT - charged);
    await ledgerMatches(id);
    const seen = h.fake.requests.at(-1)!;
    expect(seen.path).toBe("/v1/responses");
    expect(seen.body).toBe(JSON.stringify(body));
    expect(await h.waitForRequestLog((l) => l.reqId === response.headers.get("x-request-id"))).toMatchObject({ status: 200, path: "/v1/responses", tokens: 13 });
  });

  it("cached input tokens (input_tokens_details.cached_tokens) are charged the cached price", async () => {
    const { key, id } = await h.createKey({ credits: 1000 });
    h.fake.set({ cachedTokens: 4 });
    const data = await h.client(key).responses.create({ model: "qwen2.5-7b", input: "one two three four five six", max_output_tokens: 2 });
    expect(data.usage?.input_tokens_details.cached_tokens).toBe(4);
    expect(await balance(id)).toBe(1000 * CREDIT - cost(9, 2, 4));
    const streamed = await h.client(key).responses.create({ model: "qwen2.5-7b", input: "one two three four five six", max_output_tokens: 2, stream: true });
    for await (const _ of streamed);
    expect(await balance(id)).toBe(1000 * CREDIT - 2 * cost(9, 2, 4));
    await ledgerMatches(id);
  });

  it("streamed: every event arrives in vLLM's order, the final one with the figures, then the credit comment and no [DONE]", async () => {
    const { key, id } = await h.createKey({ credits: 1000 });
    const { data: stream, response } = await h.client(key).responses.create({ model: "qwen2.5-7b", input: "count to four", max_output_tokens: 4, stream: true }).withResponse();
    const types: string[] = [];
    let text = "";
    let completed: Record<string, unknown> | undefined;
    for await (const event of stream) {
      types.push(event.type);
      if (event.type === "response.output_text.delta") text += event.delta;
      if (event.type === "response.completed") completed = event as unknown as Record<string, unknown>;
    }
    expect(types).toEqual([
      "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
      ...Array(4).fill("response.output_text.delta"),
      "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed",
    ]);
    expect(text).toBe("t1 t2 t3 t4");
    const charged = cost(6, 4); // 3 template tokens + "count to four"
    expect(completed).toMatchObject({ credits_charged: charged / CREDIT, credits_remaining: (1000 * CREDIT - charged) / CREDIT });
    expect(await balance(id)).toBe(1000 * CREDIT - charged);
    await ledgerMatches(id);
    expect(response.headers.get("x-credits-reserved")).not.toBeNull();

    const raw = await (await h.post(key, "/v1/responses", { model: "qwen2.5-7b", input: "hi", max_output_tokens: 2, stream: true })).text();
    const events = raw.split("\n\n").filter(Boolean);
    expect(events.at(-2)).toMatch(/^event: response\.completed\ndata: \{/);
    expect(events.at(-1)).toMatch(/^: credits_charged=[\d.]+ credits_remaining=[\d.]+$/);
    expect(raw).not.toContain("[DONE]");
  });

  it("validation: OpenAI-shaped 400s naming the parameter; background refused; nothing forwarded", async () => {
    const { key } = await h.createKey({ credits: 10 });
    const received = h.fake.counters.received;
    const cases: [Record<string, unknown>, string][] = [
      [{ input: "x" }, "model"],
      [{ model: "qwen2.5-7b" }, "input"],
      [{ model: "qwen2.5-7b", input: [] }, "input"],
      [{ model: "qwen2.5-7b", input: 5 }, "input"],
      [{ model: "qwen2.5-7b", input: "x", max_output_tokens: 0 }, "max_output_tokens"],
      [{ model: "qwen2.5-7b", input: "x", max_output_tokens: 1.5 }, "max_output_tokens"],
      [{ model: "qwen2.5-7b", input: "x", stream: "yes" }, "stream"],
      [{ model: "qwen2.5-7b", input: "x", background: true }, "background"],
      // vLLM before 0.32 renders a request's own template here whatever its trust flag (CVE-2026-115918).
      [{ model: "qwen2.5-7b", input: "x", chat_template_kwargs: { chat_template: "{% for i in range(100000) %}x{% endfor %}" } }, "chat_template_kwargs"],
      [{ model: "qwen2.5-7b", input: "x", chat_template: "{{ messages }}" }, "chat_template"],
      [{ model: "qwen2.5-7b", input: [{ role: "user", content: [{ type: "input_image", image_url: "http://169.254.169.254/latest/meta-data/" }] }] }, "input"],
      [{ model: "qwen2.5-7b", input: [{ role: "user", content: [{ type: "input_file", file_url: "http://127.0.0.1:8000/metrics" }] }] }, "input"],
    ];
    for (const [body, param] of cases) {
      const res = await h.post(key, "/v1/responses", body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      const { error } = (await res.json()) as { error: { type: string; param: string } };
      expect(error).toMatchObject({ type: "invalid_request_error", param });
    }
    const err = await h.client(key).responses.create({ model: "qwen2.5-7b", input: "x", background: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as APIError).param).toBe("background");
    expect(h.fake.counters.received).toBe(received);
    // Other template kwargs (Qwen3's enable_thinking) are served.
    const thinking = await h.post(key, "/v1/responses", { model: "qwen2.5-7b", input: "x", max_output_tokens: 4, chat_template_kwargs: { enable_thinking: false } });
    expect(thinking.status).toBe(200);
  });

  it("an unknown model is a 404, a model outside the key's allow-list a 403", async () => {
    const { key } = await h.createKey({ credits: 10, models: ["bge-m3"] });
    const unknown = await h.client(key).responses.create({ model: "gpt-9", input: "x" }).catch((e: unknown) => e);
    expect(unknown).toBeInstanceOf(OpenAI.NotFoundError);
    expect((unknown as APIError).code).toBe("model_not_found");
    const denied = await h.client(key).responses.create({ model: "qwen2.5-7b", input: "x" }).catch((e: unknown) => e);
    expect(denied).toBeInstanceOf(OpenAI.PermissionDeniedError);
  });

  it("a 402 when credits are short, as the SDK's APIError with the documented body; nothing forwarded", async () => {
    const { key, id } = await h.createKey({ credits: 0.5 });
    const received = h.fake.counters.received;
    const err = await h.client(key).responses.create({ model: "qwen2.5-7b", input: "x", max_output_tokens: 5 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(APIError);
    expect((err as APIError).status).toBe(402);
    expect((err as APIError).code).toBe("insufficient_credits");
    const res = await h.post(key, "/v1/responses", { model: "qwen2.5-7b", input: "x", max_output_tokens: 5 });
    const body = (await res.json()) as { error: { credits_required: number; credits_available: number } };
    expect(body.error.credits_available).toBe(0.5);
    expect(body.error.credits_required).toBeGreaterThan(5);
    expect(h.fake.counters.received).toBe(received);
    expect(await balance(id)).toBe(0.5 * CREDIT);
  });

  it("a client that leaves mid-stream is charged what was generated (and its prompt), and the upstream is aborted", async () => {
    const { key, id } = await h.createKey({ credits: 1000 });
    h.fake.set({ tokenDelayMs: 20, defaultTokens: 400 });
    const aborted = h.fake.counters.aborted;
    const sentBefore = h.fake.counters.tokensSent;
    const input = "a long story please";
    const { data: stream, response } = await h.client(key).responses.create({ model: "qwen2.5-7b", input, max_output_tokens: 400, stream: true }).withResponse();
    let seen = 0;
    for await (const event of stream) {
      if (event.type === "response.output_text.delta") seen++;
      if (seen === 5) break;
    }
    await h.fake.until((c) => c.aborted > aborted);
    const log = await h.waitForRequestLog((l) => l.reqId === response.headers.get("x-request-id"));
    expect(log.status).toBe(499);
    const sent = h.fake.counters.tokensSent - sentBefore;
    expect(sent).toBeLessThan(400);
    const prompt = promptTokens("responses", { input });
    const charged = 1000 * CREDIT - (await balance(id));
    const output = (charged - CREDIT - prompt * 1000) / CREDIT;
    expect(Number.isInteger(output)).toBe(true);
    expect(output).toBeGreaterThanOrEqual(generated(seen));
    expect(output).toBeLessThanOrEqual(generated(sent));
    await ledgerMatches(id);
  });

  it("an upstream error inside the stream reaches the SDK as an APIError, and nothing is charged before content", async () => {
    const { key, id } = await h.createKey({ credits: 1000 });
    h.fake.set({ stopAfterTokens: 0, stopMode: "error" });
    const stream = await h.client(key).responses.create({ model: "qwen2.5-7b", input: "x", max_output_tokens: 8, stream: true });
    const err = await (async () => {
      for await (const _ of stream);
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(APIError);
    expect(await balance(id)).toBe(1000 * CREDIT);
    // Cut after two tokens: the client is told, and charged the two deltas only (an upstream failure: no prompt).
    h.fake.set({ stopAfterTokens: 2, stopMode: "cut" });
    const raw = await (await h.post(key, "/v1/responses", { model: "qwen2.5-7b", input: "x", max_output_tokens: 8, stream: true })).text();
    expect(raw).toMatch(/event: error\ndata: \{"type":"error","code":"upstream_error"/);
    expect(await balance(id)).toBe(1000 * CREDIT - (CREDIT + generated(2) * CREDIT));
    await ledgerMatches(id);
  });

  it("previous_response_id the server does not keep: a 404 naming it, not the model; the hold covers the context it may add", async () => {
    // The earlier response's turns are prompt the body does not carry: held as the model's whole context (8,192 tokens).
    const poor = await h.createKey({ credits: 5 });
    const short = await h.post(poor.key, "/v1/responses", { model: "qwen2.5-7b", input: "and then?", max_output_tokens: 1, previous_response_id: "resp_abc" });
    expect(short.status).toBe(402);
    expect(((await short.json()) as { error: { credits_required: number } }).error.credits_required).toBe(1 + 8.192 + 1);
    const { key } = await h.createKey({ credits: 100 });
    const err = await h.client(key).responses.create({ model: "qwen2.5-7b", input: "and then?", max_output_tokens: 1, previous_response_id: "resp_abc" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.NotFoundError);
    expect((err as APIError).param).toBe("previous_response_id");
    expect((err as APIError).message).toContain("resp_abc");
  });

  it("a concurrent burst against credits for exactly N admits exactly N", async () => {
    h.fake.set({ headerDelayMs: 20 });
    // Request price only: the model without a token price (bge-m3) costs 1 credit a request.
    const { key, id } = await h.createKey({ credits: 10 });
    const client = h.client(key);
    const received = h.fake.counters.received;
    const results = await Promise.allSettled(Array.from({ length: 40 }, () => client.responses.create({ model: "bge-m3", input: "x", max_output_tokens: 1 })));
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(10);
    for (const r of results) if (r.status === "rejected") expect((r.reason as APIError).status).toBe(402);
    expect(h.fake.counters.received - received).toBe(10);
    expect(await balance(id)).toBe(0);
    await ledgerMatches(id);
  });
});

describe("a Responses request's prompt as the hold and the estimate read it", () => {
  const tokens = (body: Record<string, unknown>, mediaPartTokens = 0) => promptTokens("responses", body, mediaPartTokens);

  it("counts the instructions, every input item's text (messages' parts, calls' arguments and outputs, reasoning) and the tools", () => {
    const base = { model: "m", input: [{ role: "user", content: "hi" }] };
    const with_ = (extra: Record<string, unknown>) => tokens({ ...base, ...extra });
    const long = "word ".repeat(200);
    expect(with_({ instructions: long })).toBeGreaterThan(tokens(base) + 200);
    expect(with_({ tools: [{ type: "function", name: "f", description: long, parameters: {} }] })).toBeGreaterThan(tokens(base) + 200);
    for (const item of [
      { role: "user", content: [{ type: "input_text", text: long }] },
      { role: "assistant", content: [{ type: "output_text", text: long }] },
      { type: "function_call", call_id: "c", name: "f", arguments: JSON.stringify({ q: long }) },
      { type: "function_call_output", call_id: "c", output: long },
      { type: "reasoning", summary: [{ type: "summary_text", text: long }] },
    ]) {
      expect(tokens({ model: "m", input: [...base.input, item] }), JSON.stringify(item).slice(0, 60)).toBeGreaterThan(tokens(base) + 200);
    }
    // A string input is the prompt's text.
    expect(tokens({ model: "m", input: long })).toBeGreaterThan(200);
  });

  it("counts each media part as chat's, at least the model's mediaPartTokens, and holds a context for it", () => {
    const image = { model: "m", input: [{ role: "user", content: [{ type: "input_text", text: "what is this" }, { type: "input_image", image_url: "https://example.com/a.png" }] }] };
    expect(tokens(image, 1000)).toBeGreaterThanOrEqual(1000);
    expect(parseResponsesRequest(image).unboundedParts).toBe(1);
    expect(parseResponsesRequest({ model: "m", input: "x" }).unboundedParts).toBe(0);
    expect(parseResponsesRequest({ model: "m", input: "x", previous_response_id: "resp_1" }).unboundedParts).toBe(1);
    // Reasoning items are text, not media.
    expect(parseResponsesRequest({ model: "m", input: [{ type: "reasoning", summary: [], content: [{ type: "reasoning_text", text: "t" }] }] }).unboundedParts).toBe(0);
  });

  it("reads max_output_tokens as the output's bound, and the tools and earlier calls as JSON the template prints again", () => {
    const req = parseResponsesRequest({ model: "m", input: [{ type: "function_call", call_id: "c", name: "f", arguments: "{}" }], tools: [{ type: "function", name: "f" }], max_output_tokens: 7, stream: true });
    expect(req).toMatchObject({ maxTokens: 7, stream: true, outputs: 1, templated: true });
    expect(req.renderedJsonBytes).toBeGreaterThan(JSON.stringify([{ type: "function", name: "f" }]).length);
  });
});

describe("a drain (SIGTERM) during a Responses stream", () => {
  it("ends the stream with OpenAI's error event and response.failed (server_error: Codex retries it), charges what was delivered and releases the hold", async () => {
    const h = await startShim({ file: FILE });
    try {
      const { key, id } = await h.createKey({ credits: 1000 });
      h.fake.set({ tokenDelayMs: 20, defaultTokens: 200 });
      const res = await h.post(key, "/v1/responses", { model: "qwen2.5-7b", input: "go on", max_output_tokens: 200, stream: true });
      const reader = res.body!.getReader();
      let text = "";
      while (!text.includes("response.output_text.delta")) text += new TextDecoder().decode((await reader.read()).value);
      const drain = h.app.shim.inflight.drain(0);
      for (let r = await reader.read(); !r.done; r = await reader.read()) text += new TextDecoder().decode(r.value);
      await drain;
      expect(text).toMatch(/event: error\ndata: \{"type":"error","code":"service_unavailable"[^\n]*\n\nevent: response\.failed\ndata: \{"type":"response\.failed"[^\n]*"status":"failed","error":\{"code":"server_error"[^\n]*\n\n: credits_charged=[\d.]+ credits_remaining=[\d.]+\n\n$/);
      const deltas = text.split("\n\n").filter((e) => e.startsWith("event: response.output_text.delta")).length;
      const row = (await moneyInvariants(h.store)).find((r) => r.keyId === id)!;
      expect(row).toMatchObject({ ledgerSum: row.balance, held: 0, reservations: 0 });
      // An interrupted answer owes the text delivered, not its prompt (a failure, not a client leaving).
      expect(1000 * CREDIT - row.balance).toBe(CREDIT + generated(deltas) * CREDIT);
    } finally {
      await h.close();
    }
  });
});
