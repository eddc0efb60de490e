import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Harness } from "../support/shim-harness.ts";
import { CREDIT, created, final, inProgress, type ScriptedUpstream, sse, startScriptedShim } from "../support/responses-events.ts";

/** A Responses stream's charge when it fails with usage or completes without it (found by a mutation review of responses-stream.ts). */
let upstream: ScriptedUpstream;

describe("POST /v1/responses streamed: the charge of a failed or usage-less stream", () => {
  let h: Harness;
  let close: () => Promise<void>;
  beforeAll(async () => ({ h, upstream, close } = await startScriptedShim()));
  afterAll(() => close());
  const balance = async (id: string) => (await h.store.getKey(id))!.balance;

  // responses-stream.ts:132 (kills `this.failed && this.final === null` made `this.failed`).
  it("response.failed with usage before any output is charged its usage (docs: a failed response without usage is the upstream's failure; with usage, charged that), with the figures in it", async () => {
    upstream.script = (_q, res) => {
      sse(res);
      res.write(created());
      res.write(inProgress());
      res.end(final("response.failed", "failed", { input_tokens: 5, output_tokens: 0 }, { error: { code: "server_error", message: "The model crashed" } }));
    };
    const { key, id } = await h.createKey({ credits: 1000 });
    const text = await (await h.post(key, "/v1/responses", { model: "m", input: "x", max_output_tokens: 5, stream: true })).text();
    expect(text).not.toContain("event: error");
    expect(text).toMatch(/event: response\.failed\ndata: .*"credits_charged":1\.005/);
    expect(1000 * CREDIT - (await balance(id))).toBe(CREDIT + 5 * 1000);
  });
  // responses-stream.ts:102 (kills the final event's `this.began = true` dropped).
  it("response.completed without usage right after created and in_progress (nothing streamed) still owes its prompt, estimated: a whole answer, not one that never began", async () => {
    upstream.script = (_q, res) => {
      sse(res);
      res.write(created());
      res.write(inProgress());
      res.end(final("response.completed", "completed", null));
    };
    const { key, id } = await h.createKey({ credits: 1000 });
    const text = await (await h.post(key, "/v1/responses", { model: "m", input: "a long prompt ".repeat(200), max_output_tokens: 5, stream: true })).text();
    expect(text).not.toContain("event: error");
    // the request (1 credit) and the prompt's estimate (hundreds of tokens at 0.001 credit each)
    expect(1000 * CREDIT - (await balance(id))).toBeGreaterThan(CREDIT + 100 * 1000);
  });
  // stream.ts:136 (kills the final event's `sawDone = true` dropped: charged the same, but the
  // upstream that ignored usage went unseen by the operator, neither counted nor logged).
  it("response.completed without usage is counted and logged as a stream without usage, for the operator to fix the upstream", async () => {
    upstream.script = (_q, res) => {
      sse(res);
      res.write(created());
      res.write(inProgress());
      res.end(final("response.completed", "completed", null));
    };
    const noUsage = async () => Number(/^shim_upstream_failures_total\{reason="no_usage"\} (\d+)$/m.exec(await (await fetch(`${h.url}/metrics`)).text())?.[1] ?? 0);
    const before = await noUsage();
    const logs = h.logs.length;
    const { key } = await h.createKey({ credits: 1000 });
    await (await h.post(key, "/v1/responses", { model: "m", input: "x", max_output_tokens: 5, stream: true })).text();
    await new Promise((r) => setTimeout(r, 50));
    expect(await noUsage()).toBe(before + 1);
    expect(h.logs.slice(logs).some((l) => l.includes("stream ended without usage"))).toBe(true);
  });
});
