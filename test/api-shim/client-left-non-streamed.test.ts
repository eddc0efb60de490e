import { describe, expect, it } from "vitest";
import { closeApp } from "../../api-shim/src/app.ts";
import type { Harness } from "../support/shim-harness.ts";
import { countingUpstream, oneMore, postAndLeave, shimPerTest, type CountingUpstream } from "../support/upstream-per-test.ts";

/**
 * A non-streamed request whose client hangs up once the upstream has it is not aborted (LiteLLM
 * would not cancel it): the shim waits for the answer and charges its usage. When the upstream
 * fails meanwhile, or a drain cuts it, nothing is charged, as for a client that stayed, and the
 * failure is counted and its cause logged as any upstream failure.
 */
const CREDIT = 1_000_000;
const FILE = { pricing: { request: 1, batchRequest: 2, models: { "qwen2.5-7b": { promptPer1k: 1, completionPer1k: 1000 } } }, models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }] };
const FAKE = { models: [{ name: "qwen2.5-7b" }] };
const BODY = { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 4 };

/** An upstream that sends its headers after 400 ms and half an answer, then breaks the connection or hangs. */
function halfAnswer(mode: "break" | "hang", status = 200): Promise<CountingUpstream> {
  return countingUpstream((req, res) => {
    req.resume();
    setTimeout(() => {
      res.writeHead(status, { "content-type": "application/json" });
      res.write('{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"t1');
      if (mode === "break") setTimeout(() => res.socket?.destroy(), 100);
    }, 400);
  });
}

/** POSTs BODY and hangs up 50 ms after one more request than now reached the upstream (`received`). */
const leaveOnceSent = (h: Harness, key: string, received: () => number) => postAndLeave(h, key, BODY, oneMore(received));

const failures = async (h: Harness, reason: string) => {
  const line = (await (await fetch(`${h.url}/metrics`)).text()).split("\n").find((l) => l.startsWith(`shim_upstream_failures_total{reason="${reason}"}`));
  return line ? Number(line.split(" ").at(-1)) : 0;
};

describe("a non-streamed request whose client left, then whose upstream failed", () => {
  const start = shimPerTest();

  it("an answer whose body breaks: nothing charged, as for a client that stayed (502, nothing)", async () => {
    const u = await halfAnswer("break");
    const h = await start({ file: FILE, fake: FAKE }, u);
    const stays = await h.createKey({ credits: 1000 });
    expect((await h.post(stays.key, "/v1/chat/completions", BODY)).status).toBe(502);
    expect((await h.store.getKey(stays.id))!.balance).toBe(1000 * CREDIT);
    const leaves = await h.createKey({ credits: 1000 });
    await leaveOnceSent(h, leaves.key, u.received);
    const log = await h.waitForRequestLog((e) => e.keyId === leaves.id);
    expect(log).toMatchObject({ status: 499, cost: 0 });
    expect(log).toHaveProperty("cause");
    expect((await h.store.getKey(leaves.id))!).toMatchObject({ balance: 1000 * CREDIT, held: 0 });
  });

  it("a refusal (503) whose body breaks: nothing charged, one 499 line with its cause", async () => {
    const u = await halfAnswer("break", 503);
    const h = await start({ file: FILE, fake: FAKE }, u);
    const { key, id } = await h.createKey({ credits: 1000 });
    await leaveOnceSent(h, key, u.received);
    const log = await h.waitForRequestLog((e) => e.keyId === id);
    expect(log).toMatchObject({ status: 499, cost: 0 });
    expect(log).toHaveProperty("cause");
    expect(h.logs.filter((l) => l.includes(`"keyId":"${id}"`) && l.includes('"msg":"request"'))).toHaveLength(1);
  });

  it("an answer a drain cuts while it is read: nothing charged, one 499 line", async () => {
    const u = await halfAnswer("hang");
    const h = await start({ file: FILE, fake: FAKE }, u);
    const { key, id } = await h.createKey({ credits: 1000 });
    await leaveOnceSent(h, key, u.received); // before the headers (400 ms); the body then hangs half sent
    await new Promise((r) => setTimeout(r, 600));
    await closeApp(h.app, 200); // SIGTERM's drain, short
    const log = await h.waitForRequestLog((e) => e.keyId === id);
    expect(log).toMatchObject({ status: 499, cost: 0 });
    expect(h.logs.filter((l) => l.includes(`"keyId":"${id}"`) && l.includes('"msg":"request"'))).toHaveLength(1);
    expect((await h.store.getKey(id))!).toMatchObject({ balance: 1000 * CREDIT, held: 0 });
  });

  it("an upstream timeout: counted in shim_upstream_failures_total and its cause on the 499 line, as for a client that stayed", async () => {
    const h = await start({ file: FILE, fake: FAKE, env: { SHIM_UPSTREAM_TIMEOUT_MS: "700" } });
    h.fake.set({ hang: true });
    const before = await failures(h, "upstream_timeout");
    const { key, id } = await h.createKey({ credits: 1000 });
    await leaveOnceSent(h, key, () => h.fake.counters.received);
    const log = await h.waitForRequestLog((e) => e.keyId === id);
    expect(log).toMatchObject({ status: 499, cost: 0 });
    expect(log).toHaveProperty("cause");
    expect(await failures(h, "upstream_timeout")).toBe(before + 1);
  });

  // The upstream's own failure (503) and its refusal of the client's request (400), after the client left.
  for (const [status, counter] of [[503, "shim_upstream_failures_total"], [400, "shim_upstream_refusals_total"]] as const) {
    it(`a ${status} after the client left: counted in ${counter} alone, its reason on the 499 line, nothing charged`, async () => {
      const h = await start({ file: FILE, fake: FAKE });
      h.fake.set({ failStatus: status, headerDelayMs: 400 });
      const reason = `status_${status}`;
      const { key, id } = await h.createKey({ credits: 1000 });
      await leaveOnceSent(h, key, () => h.fake.counters.received);
      const log = await h.waitForRequestLog((e) => e.keyId === id);
      expect(log).toMatchObject({ status: 499, cost: 0, cause: reason });
      const counted = (await (await fetch(`${h.url}/metrics`)).text()).split("\n").filter((l) => l.includes(`{reason="${reason}"}`));
      expect(counted).toEqual([`${counter}{reason="${reason}"} 1`]);
    });
  }

  it("an answer that stalls after its start is cut 10 s later: an upstream timeout, named so on the line, nothing charged", { timeout: 30_000 }, async () => {
    const u = await halfAnswer("hang");
    // The upstream's own timeouts longer than the 10 s a left client's answer is given.
    const h = await start({ file: FILE, fake: FAKE, env: { SHIM_UPSTREAM_TIMEOUT_MS: "30000", SHIM_STREAM_IDLE_TIMEOUT_MS: "30000" } }, u);
    const before = await failures(h, "upstream_timeout");
    const { key, id } = await h.createKey({ credits: 1000 });
    await leaveOnceSent(h, key, u.received);
    const log = await h.waitForRequestLog((e) => e.keyId === id, 15_000);
    expect(log).toMatchObject({ status: 499, cost: 0 });
    expect(String((log as { cause?: unknown }).cause)).toContain("did not end within 10000 ms");
    expect(await failures(h, "upstream_timeout")).toBe(before + 1);
    expect((await h.store.getKey(id))!).toMatchObject({ balance: 1000 * CREDIT, held: 0 });
  });

  it("an error body with status 200: counted as error_body, nothing charged", async () => {
    const h = await start({ file: FILE, fake: FAKE });
    h.fake.set({ failStatus: 500, failWith200: true, headerDelayMs: 400 });
    const before = await failures(h, "error_body");
    const { key, id } = await h.createKey({ credits: 1000 });
    await leaveOnceSent(h, key, () => h.fake.counters.received);
    const log = await h.waitForRequestLog((e) => e.keyId === id);
    expect(log).toMatchObject({ status: 499, cost: 0 });
    expect(await failures(h, "error_body")).toBe(before + 1);
  });
});

describe("a non-streamed answer that stalls after its start, its client still there", () => {
  const start = shimPerTest();

  it("is a 504 upstream_timeout once SHIM_STREAM_IDLE_TIMEOUT_MS passes without a byte, not a 502, nothing charged", async () => {
    const u = await halfAnswer("hang");
    const h = await start({ file: FILE, fake: FAKE, env: { SHIM_STREAM_IDLE_TIMEOUT_MS: "300" } }, u);
    const { key, id } = await h.createKey({ credits: 1000 });
    const res = await h.post(key, "/v1/chat/completions", BODY);
    expect(res.status).toBe(504);
    expect((await res.json()) as unknown).toMatchObject({ error: { type: "api_error", code: "upstream_timeout" } });
    expect((await h.store.getKey(id))!).toMatchObject({ balance: 1000 * CREDIT, held: 0 });
  });
});
