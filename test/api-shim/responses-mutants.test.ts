import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ShimError } from "../../api-shim/src/errors.ts";
import { ResponsesMeter } from "../../api-shim/src/metering/responses-stream.ts";
import { promptTokens } from "../../api-shim/src/requests/inference-request.ts";
import { parseResponsesRequest } from "../../api-shim/src/requests/responses-request.ts";
import { type Harness, moneyInvariants } from "../support/shim-harness.ts";
import { CREDIT, created, cutAfter, delta, ev, final, inProgress, PRICED_FILE, type ScriptedUpstream, sse, startScriptedShim } from "../support/responses-events.ts";

/** Tests that kill mutants the Responses suites let live (mutation review), and the defects it found. */
let upstream: ScriptedUpstream;
const FILE = PRICED_FILE;

describe("POST /v1/responses: what a mutation pass showed untested", () => {
  let h: Harness;
  let close: () => Promise<void>;
  beforeAll(async () => ({ h, upstream, close } = await startScriptedShim()));
  afterAll(() => close());
  const balance = async (id: string) => (await h.store.getKey(id))!.balance;
  const settled = async (id: string) => {
    for (let i = 0; i < 200; i++) {
      const row = (await moneyInvariants(h.store)).find((r) => r.keyId === id)!;
      if (row.reservations === 0) return;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error("not settled");
  };

  for (const [type, status] of [["response.incomplete", "incomplete"], ["response.failed", "failed"]] as const) {
    it(`${type} is the final event: charged its usage, relayed last with the figures, no error (kills: ${type} dropped from the final types)`, async () => {
      upstream.script = (_q, res) => {
        sse(res);
        res.write(created());
        for (let i = 1; i <= 3; i++) res.write(delta(i));
        res.end(final(type, status, { input_tokens: 5, output_tokens: 3 }));
      };
      const { key, id } = await h.createKey({ credits: 1000 });
      const text = await (await h.post(key, "/v1/responses", { model: "m", input: "x", max_output_tokens: 100, stream: true })).text();
      expect(text).not.toContain("event: error");
      expect(text).toMatch(new RegExp(`event: ${type.replace(".", "\\.")}\\ndata: .*"credits_charged":4\\.005`));
      expect(1000 * CREDIT - (await balance(id))).toBe(CREDIT + 5 * 1000 + 3 * CREDIT);
    });
  }

  it("a streamed Responses body goes upstream byte for byte (kills: chat's upstreamBody, which adds stream_options)", async () => {
    upstream.script = (_q, res) => {
      sse(res);
      res.end(final("response.completed", "completed", { input_tokens: 1, output_tokens: 0 }));
    };
    const { key } = await h.createKey({ credits: 1000 });
    const body = { model: "m", input: "x", max_output_tokens: 4, stream: true };
    await (await h.post(key, "/v1/responses", body)).text();
    expect(upstream.lastBody).toBe(JSON.stringify(body));
  });

  it("a provider's model on /v1/responses takes only its allow-list: an unlisted member is refused naming it, unforwarded (kills: the provider allow-list skipped on this route)", async () => {
    const { key } = await h.createKey({ credits: 1000 });
    const res = await h.post(key, "/v1/responses", { model: "prov", input: "x", max_output_tokens: 4, inference_geo: "us" });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { param: string } }).error.param).toBe("inference_geo");
    expect(upstream.lastBody).not.toContain("inference_geo");
  });

  it("a cut stream is never charged more output than max_output_tokens, however long its deltas' text (kills: the meter built without the bound)", async () => {
    upstream.script = cutAfter(delta(1, { text: "x ".repeat(400) }), delta(2, { text: "y ".repeat(400) }));
    const { key, id } = await h.createKey({ credits: 1000 });
    await (await h.post(key, "/v1/responses", { model: "m", input: "x", max_output_tokens: 5, stream: true })).text();
    // An upstream cut after content: the request and the output, at most 5 tokens.
    expect(1000 * CREDIT - (await balance(id))).toBe(CREDIT + 5 * CREDIT);
  });

  it("an error event after content is the upstream's failure whatever its code (kills: the in-stream error always mapped by its body)", async () => {
    upstream.script = (_q, res) => {
      sse(res);
      res.write(created());
      res.write(delta(1));
      res.end(ev("error", { code: "invalid_request_error", message: "EngineDeadError", param: null }, 3).replace('"sequence_number"', '"error":{"message":"EngineDeadError","type":"BadRequestError","param":null,"code":400},"sequence_number"'));
    };
    const { key } = await h.createKey({ credits: 1000 });
    const text = await (await h.post(key, "/v1/responses", { model: "m", input: "x", max_output_tokens: 5, stream: true })).text();
    expect(text).toMatch(/event: error\ndata: \{"type":"error","code":"upstream_error"/);
  });

  it("a client that leaves after response.created and in_progress (the prompt not yet processed) pays the request only (kills: owesPrompt true for any client gone)", async () => {
    let upstreamClosed = false;
    upstream.script = (_q, res) => {
      sse(res);
      res.write(created());
      res.write(inProgress());
      res.on("close", () => (upstreamClosed = true));
    };
    const { key, id } = await h.createKey({ credits: 1000 });
    const ac = new AbortController();
    const res = await fetch(`${h.url}/v1/responses`, { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body: JSON.stringify({ model: "m", input: "a long prompt ".repeat(200), max_output_tokens: 5, stream: true }), signal: ac.signal });
    const reader = res.body!.getReader();
    let seen = "";
    while (!seen.includes("response.in_progress")) seen += new TextDecoder().decode((await reader.read()).value);
    ac.abort();
    await settled(id);
    for (let i = 0; i < 200 && !upstreamClosed; i++) await new Promise((r) => setTimeout(r, 10));
    expect(upstreamClosed).toBe(true);
    expect(1000 * CREDIT - (await balance(id))).toBe(CREDIT);
  });

  it("the final event ends the relay even when the upstream keeps its connection open (kills: no break at the final event)", async () => {
    upstream.script = (_q, res) => {
      sse(res);
      res.write(created());
      res.write(final("response.completed", "completed", { input_tokens: 1, output_tokens: 0 }));
      setTimeout(() => res.end(), 3000);
    };
    const { key } = await h.createKey({ credits: 1000 });
    const started = Date.now();
    const text = await (await h.post(key, "/v1/responses", { model: "m", input: "x", max_output_tokens: 4, stream: true })).text();
    expect(text).toContain("credits_charged=");
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it("a non-streamed response whose status is failed (its `error` beside its output) is relayed and charged its usage, not taken for an error body (kills: the object:response exemption dropped)", async () => {
    upstream.script = (_q, res) => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ id: "resp_1", object: "response", status: "failed", error: { code: "server_error", message: "boom" }, output: [], usage: { input_tokens: 5, output_tokens: 2 } }));
    const { key, id } = await h.createKey({ credits: 1000 });
    const res = await h.post(key, "/v1/responses", { model: "m", input: "x", max_output_tokens: 4 });
    expect(res.status).toBe(200);
    expect(1000 * CREDIT - (await balance(id))).toBe(CREDIT + 5 * 1000 + 2 * CREDIT);
  });

  // Defects the mutation pass found in the current code.

  it("response.failed before any output, without usage, is the upstream's failure: nothing charged (an error event there is charged nothing)", async () => {
    upstream.script = (_q, res) => {
      sse(res);
      res.write(created());
      res.write(inProgress());
      res.end(final("response.failed", "failed", null, { error: { code: "server_error", message: "The model crashed" } }));
    };
    const { key, id } = await h.createKey({ credits: 1000 });
    await (await h.post(key, "/v1/responses", { model: "m", input: "a long prompt ".repeat(200), max_output_tokens: 5, stream: true })).text();
    expect(1000 * CREDIT - (await balance(id))).toBe(0);
  });

  it("output delivered whole in .done events (no deltas), then the upstream cuts: the delivered text is charged, not nothing", async () => {
    const text = "word ".repeat(100);
    upstream.script = cutAfter(
      ev("response.output_item.added", { item: { id: "msg_1", type: "message", role: "assistant", content: [], status: "in_progress" }, output_index: 0 }, 1),
      ev("response.output_text.done", { content_index: 0, item_id: "msg_1", logprobs: [], output_index: 0, text }, 2),
      ev("response.output_item.done", { item: { id: "msg_1", type: "message", role: "assistant", content: [{ type: "output_text", text, annotations: [] }], status: "completed" }, output_index: 0 }, 3),
    );
    const { key, id } = await h.createKey({ credits: 1000 });
    const body = await (await h.post(key, "/v1/responses", { model: "m", input: "x", max_output_tokens: 500, stream: true })).text();
    expect(body).toContain(text); // the client has the whole answer
    expect(1000 * CREDIT - (await balance(id))).toBeGreaterThan(CREDIT + 50 * CREDIT);
  });
});

describe("ResponsesMeter and parseResponsesRequest: what a mutation pass showed untested", () => {
  it("reads deltas written with spaces after the colons (Python's json.dumps, LiteLLM) (kills: DELTA without \\s*)", () => {
    const m = new ResponsesMeter(100);
    m.process(`data: {"type": "response.output_text.delta", "delta": "hello there", "sequence_number": 2}`);
    m.process(`event: response.output_text.delta\ndata: {"content_index": 0, "delta": " friend", "item_id": "m", "type": "response.output_text.delta"}`);
    expect(m.contentSeen).toBe(true);
    expect(m.usage(false).completionTokens).toBeGreaterThanOrEqual(2);
  });

  it("the answer begins with the first output item, before any delta (kills: only deltas set answerBegan)", () => {
    const m = new ResponsesMeter(100);
    m.process(`event: response.in_progress\ndata: {"response":{},"sequence_number":1,"type":"response.in_progress"}`);
    expect(m.answerBegan).toBe(false);
    m.process(`event: response.output_item.added\ndata: {"item":{"type":"message"},"output_index":0,"sequence_number":2,"type":"response.output_item.added"}`);
    expect(m.answerBegan).toBe(true);
    expect(m.usage(true, () => 30)).toEqual({ promptTokens: 30, completionTokens: 0 });
  });

  it("a final usage under chat's names (completion_tokens) is charged its count, not the deltas (kills: outputReported from output_tokens only)", () => {
    const m = new ResponsesMeter(100);
    m.process(`event: response.output_text.delta\ndata: {"delta":"a","type":"response.output_text.delta"}`);
    m.process(`event: response.completed\ndata: {"response":{"usage":{"prompt_tokens":4,"completion_tokens":9}},"type":"response.completed"}`);
    expect(m.usage(true)).toEqual({ promptTokens: 4, completionTokens: 9 });
  });

  it("the shim's failure events take the sequence numbers after deltas read on the fast path (kills: nextSequence not advanced by them)", () => {
    const m = new ResponsesMeter(100);
    m.process(`event: response.created\ndata: {"response":{},"sequence_number":0,"type":"response.created"}`);
    m.process(`event: response.output_text.delta\ndata: {"delta":"a","sequence_number":1,"type":"response.output_text.delta"}`);
    m.process(`event: response.output_text.delta\ndata: {"delta":"b","sequence_number":2,"type":"response.output_text.delta"}`);
    const numbers = m.errorEvent(new ShimError("upstream_error")).split("\n\n").map((e) => JSON.parse(e.slice(e.indexOf("data: ") + 6)).sequence_number);
    expect(numbers).toEqual([3, 4]);
  });

  it("background in any form pydantic reads as true (1, \"true\") is refused (kills: only `true` refused)", () => {
    for (const background of [true, 1, "true", "yes"]) expect(() => parseResponsesRequest({ model: "m", input: "x", background })).toThrow(/background/);
    expect(() => parseResponsesRequest({ model: "m", input: "x", background: false })).not.toThrow();
  });

  it("a `conversation` adds a context the body does not bound; `tools` count as JSON printed again (kills: either dropped)", () => {
    expect(parseResponsesRequest({ model: "m", input: "x", conversation: "conv_1" }).unboundedParts).toBe(1);
    const tools = [{ type: "function", name: "f", parameters: { type: "object", properties: { a: { type: "string" } } } }];
    expect(parseResponsesRequest({ model: "m", input: "x", tools }).renderedJsonBytes).toBe(Buffer.byteLength(JSON.stringify(tools)));
  });

  it("LiteLLM's routing controls are refused on /v1/responses too (kills: refuseUpstreamControls dropped)", () => {
    expect(() => parseResponsesRequest({ model: "m", input: "x", fallbacks: ["other"] })).toThrow();
    expect(() => parseResponsesRequest({ model: "m", input: "x", api_base: "http://169.254.169.254/" })).toThrow();
  });

  it("the prompt estimate counts the instructions, the input and the tools, each adding what its text holds", () => {
    const base = promptTokens("responses", { input: "hello world" });
    const long = "word ".repeat(200);
    expect(promptTokens("responses", { input: `hello world ${long}` })).toBeGreaterThan(base + 100);
    expect(promptTokens("responses", { input: "hello world", instructions: long })).toBeGreaterThan(base + 100);
    expect(promptTokens("responses", { input: "hello world", tools: [{ type: "function", name: "f", description: long }] })).toBeGreaterThan(base + 100);
  });
});
