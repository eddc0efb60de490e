import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { promptTokens } from "../../api-shim/src/requests/inference-request.ts";
import { parseResponsesRequest } from "../../api-shim/src/requests/responses-request.ts";
import type { Harness } from "../support/shim-harness.ts";
import { CREDIT, created, final, type ScriptedUpstream, sse, startScriptedShim } from "../support/responses-events.ts";

let upstream: ScriptedUpstream;

describe("a Responses answer that failed upstream", () => {
  let h: Harness;
  let close: () => Promise<void>;
  beforeAll(async () => ({ h, upstream, close } = await startScriptedShim()));
  afterAll(() => close());

  it("a streamed response.failed without usage (charged nothing, as the upstream's failure) is not logged as 'prompt estimated' and its request line names a failure", async () => {
    upstream.script = (_q, res) => {
      sse(res);
      res.write(created());
      res.end(final("response.failed", "failed", null, { error: { code: "server_error", message: "The model crashed" } }));
    };
    const { key, id } = await h.createKey({ credits: 1000 });
    const before = h.logs.length;
    await (await h.post(key, "/v1/responses", { model: "m", input: "hi", max_output_tokens: 5, stream: true })).text();
    await new Promise((r) => setTimeout(r, 100));
    expect((await h.store.getKey(id))!.balance).toBe(1000 * CREDIT);
    const lines = h.logs.slice(before);
    // Nothing was estimated (nothing was charged), and it is the upstream's failure, not an
    // upstream that sends no usage.
    expect(lines.filter((l) => l.includes("prompt estimated"))).toEqual([]);
    expect(lines.find((l) => l.includes('"route":"/v1/responses"') || l.includes("/v1/responses"))).toContain('"error":"upstream_error"');
  });

  it("a non-streamed failed response without usage is charged as the streamed one is (nothing), not the request price", async () => {
    upstream.script = (_q, res) => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ id: "resp_1", object: "response", status: "failed", error: { code: "server_error", message: "The model crashed" }, output: [], usage: null }));
    const { key, id } = await h.createKey({ credits: 1000 });
    const res = await h.post(key, "/v1/responses", { model: "m", input: "hi", max_output_tokens: 5 });
    expect(res.status).toBe(502);
    expect(1000 * CREDIT - (await h.store.getKey(id))!.balance).toBe(0);
  });
});

describe("a Responses request's input items", () => {
  it("a reasoning item's reasoning_text part is not a media part with the model's floor", () => {
    const input = [{ type: "reasoning", id: "rs_1", summary: [], content: [{ type: "reasoning_text", text: "ok" }] }, { role: "user", content: "hi" }];
    expect(promptTokens("responses", { input }, 576)).toBeLessThan(100);
    expect(parseResponsesRequest({ model: "m", input }).unboundedParts).toBe(0);
  });

  it("a function call's output given as parts has its media URLs checked as a message's are", () => {
    const input = [{ type: "function_call_output", call_id: "c", output: [{ type: "input_image", image_url: "http://10.0.0.5/x.png" }] }];
    expect(() => parseResponsesRequest({ model: "m", input })).toThrow(/Media URLs must be public: the image_url in input\[0\]/);
    expect(parseResponsesRequest({ model: "m", input: [{ ...input[0], output: [{ type: "input_image", image_url: "https://example.com/x.png" }] }] }).unboundedParts).toBe(1);
  });
});
