import { createServer, request, type Server } from "node:http";
import { once } from "node:events";
import { type AddressInfo, connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { closeApp } from "../../api-shim/src/app.ts";
import { writeWithBackpressure } from "../../api-shim/src/client/response-writer.ts";
import type { ServerResponse } from "node:http";
import { EventEmitter, getEventListeners } from "node:events";
import { overrideStore, startShim, type Harness } from "../support/shim-harness.ts";
import { stalledEmbeddingsReader } from "../support/stalled-reader.ts";

const CREDIT = 1_000_000;

/**
 * A client that opens a stream and stops reading: once the shim's writes back up, what the
 * client has not taken within SHIM_STREAM_IDLE_TIMEOUT_MS ends the stream as if it had left,
 * so it cannot keep an upstream connection, a credit hold and a place in flight forever.
 */
const shimWithIdleTimeout = (ms: number) =>
  startShim({
    env: { SHIM_STREAM_IDLE_TIMEOUT_MS: String(ms) },
    file: { models: [{ name: "qwen2.5-7b", maxModelLen: 2_000_000 }], pricing: { request: 1, models: { "qwen2.5-7b": { promptPer1k: 0, completionPer1k: 1 } } } },
    fake: { models: [{ name: "qwen2.5-7b", maxModelLen: 2_000_000 }] },
  });

/**
 * Opens a stream of 100,000 tokens and never reads a byte of its body; resolves with the request
 * id. Held for 1,000,000 completion tokens (1,001 credits): the fallback charges the estimate of
 * the text received, and the fake's " t12345" is six tokens of it.
 */
function openUnreadStream(h: Harness, key: string) {
  // ~250 bytes per token event: 100,000 tokens are far more than the socket buffers between
  // the shim and a client that reads nothing.
  h.fake.set({ defaultTokens: 100_000 });
  const body = JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "everything" }], max_tokens: 1_000_000, stream: true });
  const client = request(`${h.url}/v1/chat/completions`, { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json" } });
  const reqId = new Promise<string>((resolve) => client.on("response", (res) => {
    res.pause();
    resolve(String(res.headers["x-request-id"]));
  }));
  client.on("error", () => {}); // the shim cuts it
  client.end(body);
  return { client, reqId };
}

describe("a streaming client that stops reading", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await shimWithIdleTimeout(500);
  });
  afterAll(() => h.close());

  it("is cut after the idle timeout: the upstream request is aborted, the hold settled for what was generated", async () => {
    const { key, id } = await h.createKey({ credits: 2000 });
    const aborted = h.fake.counters.aborted;
    const started = Date.now();
    const { client, reqId: response } = openUnreadStream(h, key);
    const reqId = await response;

    await h.fake.until((c) => c.aborted > aborted, 15_000);
    const log = await h.waitForRequestLog((e) => e.reqId === reqId, 15_000);
    expect(log.status).toBe(499);
    expect(Date.now() - started).toBeLessThan(10_000);
    const k = (await h.store.getKey(id))!;
    expect(k.held).toBe(0);
    // Charged the request and the tokens generated up to the cut, nothing like the 1,000,000 held.
    const charged = 2000 * CREDIT - k.balance;
    expect(charged).toBeGreaterThan(CREDIT);
    expect(charged).toBeLessThan(CREDIT + 1000 * CREDIT);
    client.destroy();
  });
});

describe("a drain (SIGTERM) while a stream waits on a client that stops reading", () => {
  it("ends that stream at the drain timeout, not the idle timeout, and settles it", async () => {
    // The idle timeout (60 s, the default) is longer than a drain may take: the container's stop
    // grace period would kill the process with the stream's hold unsettled.
    const h = await shimWithIdleTimeout(60_000);
    try {
      const { key, id } = await h.createKey({ credits: 2000 });
      const { client, reqId } = openUnreadStream(h, key);
      await reqId;
      await new Promise((r) => setTimeout(r, 1000)); // the shim's writes back up
      expect(h.app.shim.inflight.size).toBe(1);
      const started = Date.now();
      // What server.ts does on SIGTERM: wait for in-flight requests (100 ms here), abort the rest
      // and give them a settle window (2 s here).
      expect(await h.app.shim.inflight.drain(100, 2000)).toEqual({ aborted: 1 });
      expect(Date.now() - started).toBeLessThan(1500);
      expect(h.app.shim.inflight.size).toBe(0);
      const k = (await h.store.getKey(id))!;
      expect(k.held).toBe(0);
      expect(2000 * CREDIT - k.balance).toBeGreaterThan(CREDIT); // the content it was sent is charged
      client.destroy();
    } finally {
      await h.close();
    }
  });
});

describe("one large event (vLLM's first with echo and logprobs holds the whole prompt)", () => {
  const SIZE = 16 * 1024 * 1024;
  let content = "a".repeat(SIZE);
  let upstream: Server;
  let h: Harness;
  beforeAll(async () => {
    upstream = createServer((req, res) => {
      req.resume();
      req.on("end", () => {
        res.writeHead(200, { "content-type": "text/event-stream" });
        res.write(`data: {"id":"c","object":"text_completion","created":1,"model":"qwen2.5-7b","choices":[{"index":0,"text":"${content}","logprobs":null,"finish_reason":"length"}],"usage":null}\n\n`);
        res.write('data: {"id":"c","object":"text_completion","created":1,"model":"qwen2.5-7b","choices":[],"usage":{"prompt_tokens":5,"total_tokens":6,"completion_tokens":1}}\n\n');
        res.end("data: [DONE]\n\n");
      });
    });
    await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
    h = await startShim({ env: { SHIM_UPSTREAM_URL: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1`, SHIM_STREAM_IDLE_TIMEOUT_MS: "3000" } });
  });
  afterAll(async () => {
    await h.close();
    upstream.closeAllConnections();
    await new Promise((r) => upstream.close(r));
  });

  /** Streams a completion, reading 64 KiB every `pauseMs` (never: `pauseMs` null); resolves with what arrived. */
  const read = (key: string, pauseMs: number | null) => new Promise<string>((resolve) => {
    const req = request(`${h.url}/v1/completions`, { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json" } });
    req.on("response", (res) => {
      const got: Buffer[] = [];
      if (pauseMs === null) {
        res.pause();
        setTimeout(() => (req.destroy(), resolve("")), 5000);
        return;
      }
      res.on("data", (c: Buffer) => {
        got.push(c);
        res.pause();
        setTimeout(() => res.resume(), pauseMs);
      });
      res.on("end", () => resolve(Buffer.concat(got).toString()));
      res.on("error", () => resolve(Buffer.concat(got).toString()));
    });
    req.on("error", () => {});
    req.end(JSON.stringify({ model: "qwen2.5-7b", prompt: "x", max_tokens: 1, stream: true }));
  });

  it("a client that takes it slowly but steadily is not cut: the stall timeout counts time without progress", { timeout: 30_000 }, async () => {
    const { key, id } = await h.createKey({ credits: 100 });
    // About 2 MB/s: the event takes several idle timeouts to drain (past the kernel's socket
    // buffers), and there is never an idle timeout without progress (the kernel wakes a writer
    // when half of what it has queued, a few MB, is sent).
    const text = await read(key, 20);
    expect(text.length).toBeGreaterThan(SIZE);
    expect(text.endsWith("data: [DONE]\n\n")).toBe(true);
    expect(await h.waitForRequestLog((l) => l.keyId === id)).toMatchObject({ status: 200 });
  });

  it.each([["", "😀"], ["x", "😀"], ["", "🐀"], ["x", "🐀"]])("is written in pieces that never split a character (offset %j, %s)", async (offset, emoji) => {
    content = offset + emoji.repeat(600_000);
    try {
      const { key } = await h.createKey({ credits: 100 });
      const text = await read(key, 0);
      const first = JSON.parse(text.slice(6, text.indexOf("\n\n"))) as { choices: { text: string }[] };
      expect(first.choices[0]!.text).toBe(content);
    } finally {
      content = "a".repeat(SIZE);
    }
  });

  it("past SHIM_MAX_ANSWER_BYTES it is not held: the stream ends with an error, the hold settled", async () => {
    const small = await startShim({ env: { SHIM_UPSTREAM_URL: h.config.upstreamUrl, SHIM_MAX_ANSWER_BYTES: String(1024 * 1024) } });
    try {
      const { key, id } = await small.createKey({ credits: 100 });
      const res = await small.post(key, "/v1/completions", { model: "qwen2.5-7b", prompt: "x", max_tokens: 1, stream: true });
      const text = await res.text();
      expect(text).toMatch(/data: \{"error":\{[^\n]*"code":"upstream_error"/);
      expect(text).not.toContain("[DONE]");
      expect((await small.store.getKey(id))!.held).toBe(0);
    } finally {
      await small.close();
    }
  });

  it("a client that stops reading it is cut, and logged as 499 even though the rest of the stream had arrived", { timeout: 30_000 }, async () => {
    const { key, id } = await h.createKey({ credits: 100 });
    await read(key, null);
    expect(await h.waitForRequestLog((l) => l.keyId === id)).toMatchObject({ status: 499, error: "client_closed_request" });
    expect((await h.store.getKey(id))!.held).toBe(0);
  });
});

describe("a stream the shim ends itself (an event past SHIM_MAX_ANSWER_BYTES) while the model is still generating", () => {
  it("has its upstream request aborted, so the GPU stops: the client's error does not leave the generation running", { timeout: 20_000 }, async () => {
    let upstreamClosed = 0;
    let closedAt = 0;
    const upstream = createServer((req, res) => {
      req.resume();
      res.on("close", () => ((upstreamClosed++), (closedAt = performance.now())));
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write(`data: {"id":"c","object":"text_completion","created":1,"model":"qwen2.5-7b","choices":[{"index":0,"text":"${"a".repeat(2 * 1024 * 1024)}","logprobs":null,"finish_reason":null}],"usage":null}\n\n`);
      // Then tokens go on coming, as from a model still generating, until the shim hangs up.
      const more = setInterval(() => res.write('data: {"id":"c","object":"text_completion","created":1,"model":"qwen2.5-7b","choices":[{"index":0,"text":" t","logprobs":null,"finish_reason":null}],"usage":null}\n\n'), 50);
      res.on("close", () => clearInterval(more));
    });
    await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
    const h = await startShim({ env: { SHIM_UPSTREAM_URL: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1`, SHIM_MAX_ANSWER_BYTES: String(1024 * 1024), SHIM_STREAM_IDLE_TIMEOUT_MS: "30000" } });
    try {
      const { key } = await h.createKey({ credits: 100 });
      const res = await h.post(key, "/v1/completions", { model: "qwen2.5-7b", prompt: "x", max_tokens: 1000, stream: true });
      expect(await res.text()).toMatch(/data: \{"error":\{[^\n]*"code":"upstream_error"/);
      const answered = performance.now();
      const deadline = answered + 2_000;
      while (upstreamClosed === 0 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(upstreamClosed).toBe(1);
      expect(closedAt - answered).toBeLessThan(2_000);
    } finally {
      await h.close();
      upstream.closeAllConnections();
      await new Promise((r) => upstream.close(r));
    }
  });
});

describe("a write that backs up after the drain has already cut its request", () => {
  it("cuts the response at once, not after the idle timeout: the process must not outlive its stop grace period", async () => {
    let destroyed = false;
    const emitter = new EventEmitter();
    const out = Object.assign(emitter, {
      destroyed: false,
      write: () => false, // the client takes nothing
      destroy() {
        destroyed = true;
        out.destroyed = true;
        emitter.emit("close");
      },
    }) as unknown as ServerResponse;
    const cut = new AbortController();
    cut.abort("drain");
    const t0 = performance.now();
    await writeWithBackpressure(out, "data: x\n\n", 60_000, cut.signal);
    expect(destroyed).toBe(true);
    expect(performance.now() - t0).toBeLessThan(1_000);
  });
});

describe("a stream whose writes back up event after event (a slow reader of a long generation)", () => {
  it("leaves no listener behind on the response or on the request's signal once each write has gone", async () => {
    const emitter = new EventEmitter();
    const out = Object.assign(emitter, { destroyed: false, write: () => false, destroy() {} }) as unknown as ServerResponse;
    const ac = new AbortController();
    for (let i = 0; i < 50; i++) {
      const written = writeWithBackpressure(out, `data: ${i}\n\n`, 60_000, ac.signal);
      await new Promise((r) => setImmediate(r));
      emitter.emit("drain"); // the client took it
      await written;
    }
    // 50 events, each backed up once: a listener left per write is a leak for the stream's life
    // (and Node's MaxListenersExceededWarning in the shim's output after 10).
    expect(emitter.listenerCount("drain")).toBe(0);
    expect(emitter.listenerCount("close")).toBe(0);
    expect(getEventListeners(ac.signal, "abort")).toHaveLength(0);
  });
});

describe("a drain (SIGTERM) while a large answer is being written to a slow client", () => {
  it("waits for the answer to be sent whole (it is charged) instead of closing the connection under it", { timeout: 30_000 }, async () => {
    const h = await startShim();
    try {
      h.fake.set({ embeddingDims: 4096 });
      const { key } = await h.createKey({ credits: 100 });
      // About 10 MB: more than the sockets between the shim and a client that reads nothing hold.
      const input = Array.from({ length: 256 }, (_, i) => `passage ${i}`);
      const { length, received } = await new Promise<{ length: number; received: number }>((resolve, reject) => {
        const req = request(`${h.url}/v1/embeddings`, { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json" } });
        req.on("error", reject);
        req.on("response", (res) => {
          res.pause();
          let received = 0;
          setTimeout(() => {
            void closeApp(h.app, 5000); // what SIGTERM does
            setTimeout(() => {
              res.on("data", (c: Buffer) => (received += c.length));
              res.on("end", () => resolve({ length: Number(res.headers["content-length"]), received }));
              res.on("error", () => resolve({ length: Number(res.headers["content-length"]), received }));
              res.resume();
            }, 300);
          }, 500);
        });
        req.end(JSON.stringify({ model: "bge-m3", input, encoding_format: "float" }));
      });
      expect(length).toBeGreaterThan(8 * 1024 * 1024);
      expect(received).toBe(length);
    } finally {
      await h.close().catch(() => {});
    }
  });
});

describe("a second signal while a large answer is being sent to a client that stops reading", () => {
  it("cuts it at once (it is settled) instead of waiting for the drain", { timeout: 30_000 }, async () => {
    const h = await startShim();
    try {
      const { key, id } = await h.createKey({ credits: 100 });
      const req = await stalledEmbeddingsReader(h, key); // still being sent
      await new Promise((r) => setTimeout(r, 300));
      const started = Date.now();
      const closing = closeApp(h.app, 15_000); // the first SIGTERM: a drain of up to 15 s
      await new Promise((r) => setTimeout(r, 200));
      h.app.shim.inflight.abortAll("drain"); // the second
      await closing;
      expect(Date.now() - started).toBeLessThan(3000);
      expect((await h.store.getKey(id))!).toMatchObject({ balance: 99_000_000, held: 0 });
      req.destroy();
    } finally {
      await h.close().catch(() => {});
    }
  });
});

describe("an answer or a stream admitted before a drain and answered during it", () => {
  it.each([[false, 200], [true, 200], [false, 503]])("says Connection: close (stream: %s, status %s), so nginx sends nothing more on that connection", async (stream, status) => {
    const h = await startShim();
    try {
      const { key } = await h.createKey({ credits: 100 });
      h.fake.set({ headerDelayMs: 800, ...(status === 503 ? { failStatus: 503 } : {}) });
      const asked = h.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "x" }], max_tokens: 2, stream });
      await new Promise((r) => setTimeout(r, 200));
      const closing = closeApp(h.app, 5000);
      const res = await asked;
      expect(res.status).toBe(status);
      expect(res.headers.get("connection")).toBe("close");
      await res.text();
      await closing;
    } finally {
      await h.close().catch(() => {});
    }
  });
});

/** A kept-alive connection, as nginx keeps them: `ask` sends a GET and resolves with the response's head. */
async function keptAlive(url: string) {
  const socket = connect(Number(new URL(url).port), "127.0.0.1");
  await once(socket, "connect");
  socket.setEncoding("latin1");
  return {
    ask(path: string): Promise<string> {
      socket.write(`GET ${path} HTTP/1.1\r\nHost: shim\r\n\r\n`);
      return new Promise((resolve) => {
        let got = "";
        const onData = (d: string) => {
          got += d;
          const end = got.indexOf("\r\n\r\n");
          const length = Number(/\r\ncontent-length: (\d+)/i.exec(got)?.[1] ?? -1);
          if (end >= 0 && length >= 0 && got.length >= end + 4 + length) {
            socket.off("data", onData);
            resolve(got);
          }
        };
        socket.on("data", onData);
      });
    },
    close: () => socket.destroy(),
  };
}

describe("answers Fastify itself sends during a drain", () => {
  it("say Connection: close too: a URL the router refuses, and /ready whose probe outlasted the start of the drain", async () => {
    const h = await startShim({ wrapStore: (s) => overrideStore(s, { ping: () => new Promise<void>((r) => setTimeout(r, 1000)) }) });
    const [a, b] = [await keptAlive(h.url), await keptAlive(h.url)];
    try {
      expect(await a.ask("/health")).toMatch(/^HTTP\/1\.1 200/);
      // A request in flight keeps the drain going (without one it ends at once and closes idle connections).
      const { key } = await h.createKey({ credits: 100 });
      h.fake.set({ headerDelayMs: 1500 });
      const inflight = h.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "x" }], max_tokens: 2 });
      const ready = b.ask("/ready");
      await new Promise((r) => setTimeout(r, 200));
      const closing = closeApp(h.app, 2000);
      const bad = await a.ask("/v1/x%zz");
      expect(bad).toMatch(/^HTTP\/1\.1 400/);
      expect(bad).toMatch(/\r\nconnection: close\r\n/i);
      const r = await ready;
      expect(r).toMatch(/^HTTP\/1\.1 503/);
      expect(r).toContain('"draining":true');
      expect(r).toMatch(/\r\nconnection: close\r\n/i);
      expect((await inflight).status).toBe(200);
      await closing;
    } finally {
      a.close();
      b.close();
      await h.close().catch(() => {});
    }
  });
});
