import { describe, expect, it } from "vitest";
import { ask, chunk, delta, DONE, finish, scriptedLitellm, usageOnly } from "../support/litellm-script.ts";

/**
 * Streams at the edges of what metering tells whole or cut: LiteLLM's n: 2 with one finish, a
 * finish_reason "" on a parsed chunk, [DONE] on a connection kept open, an error event after
 * content. Each case is a scripted upstream stream (the shim in front, "smart" priced a credit per
 * token and one per request), found by a mutation review of api-shim/src/metering/.
 */
const CREDIT = 1_000_000;

describe("metering: what a mutation review found unpinned", () => {
  const { streamed } = scriptedLitellm();

  // stream.ts:147 (kills `failure = meter.contentSeen ? … : upstreamErrorBody(…)` made always upstreamErrorBody).
  it("an error event after content labelled 400 (vLLM 0.10-0.11 label every in-stream exception so) is told as the upstream's failure, not as the client's bad request with the engine's message", async () => {
    const engine = { error: { message: "CUDA error: an illegal memory access was encountered", type: "BadRequestError", param: null, code: 400 } };
    const { text } = await streamed(delta(0, "Hello") + delta(0, " there") + `data: ${JSON.stringify(engine)}\n\n` + DONE);
    expect(text).toContain("Hello");
    expect(text).toContain('"upstream_error"');
    expect(text).not.toContain("invalid_request_error");
    expect(text).not.toContain("CUDA");
    expect(text).not.toContain("data: [DONE]");
  });

  // stream.ts:161 (kills `else if (!failure && !sawDone && !meter.complete)` without `!meter.complete`).
  it("n: 2 behind LiteLLM (one finish for all of n), its usage-only chunk last and no [DONE]: a whole stream, charged its usage, not a cut", async () => {
    const { text, charged } = await streamed(delta(0, "Hello") + delta(1, "Hi") + finish(0) + usageOnly(10, 2), ask({ n: 2 }));
    expect(text).not.toContain('"error"');
    expect(text).toMatch(/\n: credits_charged=\S+ credits_remaining=\S+\n\ndata: \[DONE\]\n\n$/);
    expect(charged).toBe(13);
  });
  // generated-content.ts:59 (kills endsOutput without `finish_reason !== ""`): the fast path skips a
  // chunk whose finish_reason is "", but one with a call's name (or token ids, or usage) is parsed.
  it("SGLang's finish_reason \"\" on a parsed chunk (a tool call's first, with its name) is no finish: a body ending after it is cut, told as an error", async () => {
    const call = chunk({ choices: [{ index: 0, delta: { tool_calls: [{ index: 0, id: "call_1", type: "function", function: { name: "get_weather", arguments: "" } }] }, finish_reason: "" }] });
    const args = chunk({ choices: [{ index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: '{"city":' } }] }, finish_reason: "" }] });
    const { text, line } = await streamed(call + args);
    expect(text).toContain("get_weather");
    expect(text).toContain('"upstream_error"');
    expect(text).not.toContain("data: [DONE]");
    expect(line).toMatchObject({ error: "upstream_error" });
  });
});

// stream.ts:107 (kills the `break` at [DONE] made `continue`).
describe("metering: [DONE] ends the relay, whatever the upstream does after it", () => {
  const s = scriptedLitellm((req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write(chunk({ choices: [{ index: 0, delta: { content: "Hello" }, finish_reason: "stop" }] }) + usageOnly(10, 1) + DONE);
      // A proxy that keeps the connection open after [DONE], then writes more.
      const late = setTimeout(() => res.write(chunk({ choices: [{ index: 0, delta: { content: "LATE" } }] })), 200);
      const end = setTimeout(() => res.end(), 3000);
      res.on("close", () => (clearTimeout(late), clearTimeout(end)));
    });
  });

  it("an upstream that keeps its connection open after [DONE]: the client's stream ends at once, nothing after [DONE] relayed", async () => {
    const h = s.h;
    const { id, key } = await h.createKey({ credits: 1000 });
    const started = Date.now();
    const text = await (await h.post(key, "/v1/chat/completions", { model: "smart", messages: [{ role: "user", content: "hi" }], max_tokens: 5, stream: true })).text();
    expect(Date.now() - started).toBeLessThan(2000);
    expect(text).not.toContain("LATE");
    expect(text).toMatch(/\n: credits_charged=\S+ credits_remaining=\S+\n\ndata: \[DONE\]\n\n$/);
    await h.waitForRequestLog((e) => e.keyId === id);
    expect((1000 * CREDIT - (await h.store.getKey(id))!.balance) / CREDIT).toBe(12);
  });
});
