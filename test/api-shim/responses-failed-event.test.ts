import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { APIError } from "openai";
import { ShimError } from "../../api-shim/src/errors.ts";
import { ResponsesMeter } from "../../api-shim/src/metering/responses-stream.ts";
import type { Harness } from "../support/shim-harness.ts";
import { CREDIT, delta, ev, type ScriptedUpstream, sse, startScriptedShim } from "../support/responses-events.ts";

/**
 * A Responses stream the shim ends with a failure also says so as OpenAI's `response.failed`:
 * Codex CLI ignores `event: error` (codex-rs/codex-api/src/sse/responses.rs), saw only the stream
 * close ("stream closed before response.completed") and reconnected, never showing the message.
 * The error event comes first, as OpenAI sends them: SDKs that read both (the AI SDK, the Agents
 * SDK) then report the error event's message once, as before.
 */
let upstream: ScriptedUpstream;

/** The upstream's `response.created`, with the identity a failure event must repeat. */
const CREATED = ev("response.created", { response: { id: "resp_abc123", object: "response", created_at: 1767000000, model: "m", status: "in_progress", output: [], usage: null } }, 0);

/** The stream's events, each as its `event:` type and its parsed data. */
const eventsOf = (text: string) =>
  text
    .split("\n\n")
    .filter((e) => e.startsWith("event: "))
    .map((e) => ({ type: e.slice(7, e.indexOf("\n")), data: JSON.parse(e.slice(e.indexOf("data: ") + 6)) as Record<string, unknown> }));

describe("a Responses stream that fails after output", () => {
  let h: Harness;
  let close: () => Promise<void>;
  beforeAll(async () => ({ h, upstream, close } = await startScriptedShim()));
  afterAll(() => close());
  const post = async (key: string) => (await h.post(key, "/v1/responses", { model: "m", input: "x", max_output_tokens: 100, stream: true })).text();

  it("upstream cut: the error event, unchanged, then response.failed (status failed, server_error, the shim's message, the upstream's id, created_at and model); the charge is the delivered output", async () => {
    upstream.script = (_q, res) => {
      sse(res);
      res.write(CREATED);
      res.write(delta(1));
      res.write(delta(2));
      setTimeout(() => res.destroy(), 50);
    };
    const { key, id } = await h.createKey({ credits: 1000 });
    const text = await post(key);
    const events = eventsOf(text);
    const failed = events.find((e) => e.type === "response.failed");
    const error = events.find((e) => e.type === "error");
    expect(failed?.data).toEqual({
      type: "response.failed",
      sequence_number: 4,
      response: { id: "resp_abc123", object: "response", created_at: 1767000000, model: "m", status: "failed", error: { code: "server_error", message: "The model server returned an error." }, output: [], usage: null },
    });
    // No top-level `error`: the openai SDK (legacy stream mode) would throw it as an error of its own.
    expect(failed?.data).not.toHaveProperty("error");
    expect(error?.data).toEqual({ type: "error", code: "upstream_error", message: "The model server returned an error.", param: null, sequence_number: 3, error: { message: "The model server returned an error.", type: "api_error", param: null, code: "upstream_error" } });
    // The two are the stream's last events, before the figures; nothing else was added.
    expect(events.map((e) => e.type)).toEqual(["response.created", "response.output_text.delta", "response.output_text.delta", "error", "response.failed"]);
    expect(text).toMatch(/\n\n: credits_charged=6 credits_remaining=994\n\n$/);
    // Metering as before: the request and the text delivered (" word1 word2": 2 digits and 10
    // other bytes, 5 tokens), no prompt (an upstream failure).
    expect(1000 * CREDIT - (await h.store.getKey(id))!.balance).toBe(CREDIT + 5 * CREDIT);
  });

  it("the openai SDK throws the error event as an APIError with the shim's message, after the output, as before", async () => {
    upstream.script = (_q, res) => {
      sse(res);
      res.write(CREATED);
      res.write(delta(1));
      setTimeout(() => res.destroy(), 50);
    };
    const { key } = await h.createKey({ credits: 1000 });
    const stream = await h.client(key).responses.create({ model: "m", input: "x", max_output_tokens: 100, stream: true });
    const types: string[] = [];
    const thrown = await (async () => {
      for await (const e of stream) types.push(e.type);
    })().catch((e: unknown) => e);
    expect(thrown).toBeInstanceOf(APIError);
    expect((thrown as APIError).message).toContain("The model server returned an error.");
    expect(types).toEqual(["response.created", "response.output_text.delta"]);
  });

  it("the upstream's refusal of the request (a 4xx before output): invalid_prompt, so that Codex stops and shows it rather than retrying", async () => {
    upstream.script = (_q, res) => {
      sse(res);
      res.write(CREATED);
      res.end(`event: error\ndata: ${JSON.stringify({ error: { message: "The provided JSON schema contains features not supported by xgrammar.", type: "BadRequestError", param: null, code: 400 } })}\n\n`);
    };
    const { key, id } = await h.createKey({ credits: 1000 });
    const events = eventsOf(await post(key));
    const failed = events.find((e) => e.type === "response.failed")!.data as { response: { error: unknown } };
    const error = events.find((e) => e.type === "error")!.data as { code: string; message: string };
    expect(error.code).toBe("invalid_request");
    expect(failed.response.error).toEqual({ code: "invalid_prompt", message: error.message });
    expect(error.message).toContain("xgrammar");
    expect((await h.store.getKey(id))!.balance).toBe(1000 * CREDIT);
  });
});

describe("ResponsesMeter.errorEvent", () => {
  it("without a response.created seen, response.failed still names a response (an id and time of its own, the request's model)", () => {
    const m = new ResponsesMeter(5, { model: "qwen", createdAt: 1_796_000_000 });
    const [, failed] = m.errorEvent(new ShimError("upstream_timeout")).split("\n\n");
    expect(failed!.startsWith("event: response.failed\ndata: ")).toBe(true);
    const data = JSON.parse(failed!.slice(failed!.indexOf("data: ") + 6)) as { sequence_number: number; response: { id: string; created_at: number; model: string; error: unknown } };
    expect(data.sequence_number).toBe(1);
    expect(data.response.id).toMatch(/^resp_[0-9a-f]{32}$/);
    expect(data.response.created_at).toBe(1_796_000_000);
    expect(data.response.model).toBe("qwen");
    expect(data.response.error).toEqual({ code: "server_error", message: "The model server did not respond in time." });
  });

  it("after the upstream's own final event (the store failed settling it) only the error event follows: a response has one terminal event", () => {
    const m = new ResponsesMeter(5);
    m.process(`event: response.completed\ndata: {"response":{"id":"r","usage":{"input_tokens":1,"output_tokens":1}},"sequence_number":4,"type":"response.completed"}`);
    const events = m.errorEvent(new ShimError("service_unavailable")).split("\n\n");
    expect(events).toHaveLength(1);
    expect(events[0]).toMatch(/^event: error\ndata: \{"type":"error","code":"service_unavailable"[^\n]*"sequence_number":5/);
  });
});
