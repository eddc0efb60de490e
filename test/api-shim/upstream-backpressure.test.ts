import { request } from "node:http";
import { describe, expect, it } from "vitest";
import { UpstreamBody } from "../../api-shim/src/upstream/upstream-body.ts";
import { startShim } from "../support/shim-harness.ts";

/**
 * Found by a mutation review of upstream-body.ts: the upstream's body is paused while
 * more than 64 chunks wait for the shim to relay them (a client reading slower than the model
 * writes), and must be resumed once they drain; else the stream stalls until the idle timeout cuts it.
 */
describe("a stream whose client pauses while the model writes fast, then reads on", () => {
  it("gets the whole stream, [DONE] included", { timeout: 30_000 }, async () => {
    const h = await startShim({ env: { SHIM_STREAM_IDLE_TIMEOUT_MS: "3000" }, file: { models: [{ name: "qwen2.5-7b", maxModelLen: 2_000_000 }] }, fake: { models: [{ name: "qwen2.5-7b", maxModelLen: 2_000_000 }] } });
    try {
      h.fake.set({ defaultTokens: 40_000 }); // ~10 MB of events: more than the sockets hold
      const { key } = await h.createKey({ credits: 100 });
      const text = await new Promise<string>((resolve, reject) => {
        const req = request(`${h.url}/v1/chat/completions`, { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json" } });
        req.on("error", reject);
        req.on("response", (res) => {
          res.pause();
          setTimeout(() => {
            let all = "";
            res.setEncoding("utf8");
            res.on("data", (c: string) => (all += c));
            res.on("end", () => resolve(all));
            res.on("error", reject);
            res.resume();
          }, 1500);
        });
        req.end(JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "everything" }], max_tokens: 40_000, stream: true }));
      });
      expect(text.trimEnd().endsWith("data: [DONE]")).toBe(true);
    } finally {
      await h.close().catch(() => {});
    }
  });
});

/**
 * The same, on UpstreamBody alone: a client that reads slower than the model writes must not have
 * the whole generation queued in the shim's memory. Past 64 chunks waiting the upstream is paused
 * (undici stops reading its socket), and resumed once fewer than 8 wait.
 */
describe("UpstreamBody's backpressure on the upstream", () => {
  it("pauses the upstream while more than 64 chunks wait unread, and resumes it once fewer than 8 do", async () => {
    const controller = { paused: false, aborted: false, pause() { this.paused = true; }, resume() { this.paused = false; }, abort() { this.aborted = true; } };
    const body = new UpstreamBody();
    body.attach(controller as unknown as Parameters<UpstreamBody["attach"]>[0]);
    for (let i = 0; i < 64; i++) body.push(Buffer.from(`data: ${i}\n\n`));
    expect(controller.paused).toBe(false);
    body.push(Buffer.from("data: 64\n\n"));
    expect(controller.paused).toBe(true); // 65 waiting: the socket is no longer read
    const it = body[Symbol.asyncIterator]();
    let read = 0;
    while (controller.paused) {
      await it.next();
      read++;
    }
    expect(65 - read).toBeLessThan(8);
    expect(65 - read).toBeGreaterThanOrEqual(7);
    body.end();
  });

  it("keeps no slot for a chunk once it is read: a stream read as it comes holds nothing however long it runs", async () => {
    const body = new UpstreamBody();
    const it = body[Symbol.asyncIterator]();
    // A long stream, each chunk read before the next comes (the usual case): 100,000 chunks.
    for (let i = 0; i < 100_000; i++) {
      body.push(Buffer.from("data: {}\n\n"));
      await it.next();
    }
    // What the body still holds for them (a private array; read here as nothing else shows it).
    expect((body as unknown as { chunks: unknown[] }).chunks.length).toBe(0);
    body.end();
  });
});
