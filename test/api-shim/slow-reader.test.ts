import { request } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startShim, type Harness } from "../support/shim-harness.ts";

const CREDIT = 1_000_000;

/**
 * A client that opens a stream and stops reading: once the shim's writes back up, what the
 * client has not taken within SHIM_STREAM_IDLE_TIMEOUT_MS ends the stream as if it had left,
 * so it cannot keep an upstream connection, a credit hold and a place in flight forever.
 */
describe("a streaming client that stops reading", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startShim({
      env: { SHIM_STREAM_IDLE_TIMEOUT_MS: "500" },
      file: { models: [{ name: "qwen2.5-7b", maxModelLen: 200_000 }], pricing: { request: 1, models: { "qwen2.5-7b": { promptPer1k: 0, completionPer1k: 1 } } } },
      fake: { models: [{ name: "qwen2.5-7b", maxModelLen: 200_000 }] },
    });
  });
  afterAll(() => h.close());

  it("is cut after the idle timeout: the upstream request is aborted, the hold settled for what was generated", async () => {
    const { key, id } = await h.createKey({ credits: 1000 });
    // ~250 bytes per token event: 100,000 tokens are far more than the socket buffers between
    // the shim and a client that reads nothing.
    h.fake.set({ defaultTokens: 100_000 });
    const aborted = h.fake.counters.aborted;
    const body = JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "everything" }], max_tokens: 100_000, stream: true });
    const started = Date.now();
    const client = request(`${h.url}/v1/chat/completions`, { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json" } });
    const response = new Promise<string>((resolve) => client.on("response", (res) => {
      res.pause(); // never read a byte of the body
      resolve(String(res.headers["x-request-id"]));
    }));
    client.on("error", () => {}); // the shim cuts it
    client.end(body);
    const reqId = await response;

    await h.fake.until((c) => c.aborted > aborted, 15_000);
    const log = await h.waitForRequestLog((e) => e.reqId === reqId, 15_000);
    expect(log.status).toBe(499);
    expect(Date.now() - started).toBeLessThan(10_000);
    const k = (await h.store.getKey(id))!;
    expect(k.held).toBe(0);
    // Charged the request and the tokens generated up to the cut, nothing like the 100,000 held.
    const charged = 1000 * CREDIT - k.balance;
    expect(charged).toBeGreaterThan(CREDIT);
    expect(charged).toBeLessThan(CREDIT + 100 * CREDIT);
    client.destroy();
  });
});
