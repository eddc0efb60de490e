import { once } from "node:events";
import { createServer, type Server, type ServerResponse } from "node:http";
import net, { type AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { BodyMemory, FREE_BYTES } from "../../api-shim/src/limits/body-memory.ts";
import { overrideStore, startShim, type Harness } from "../support/shim-harness.ts";
import { keptConnection } from "../support/kept-connection.ts";
import { pollUntil } from "../support/tools.ts";

/**
 * The request bodies held by admitted requests are bounded across the process
 * (SHIM_BODY_MEMORY_BYTES): large requests waiting on a silent upstream (vLLM queueing) took the
 * shim to hundreds of MB, one outage for every key. Past the budget a large request is refused
 * before its body is read (503, Retry-After); small ones always get in.
 */
const MiB = 1024 * 1024;
/** An embeddings request of about 0.9 MiB. */
const LARGE = JSON.stringify({ model: "bge-m3", input: Array.from({ length: 900 }, (_, i) => `${i} ` + "word ".repeat(200)) });
const ANSWER = JSON.stringify({ object: "list", data: [{ object: "embedding", index: 0, embedding: [0.1] }], model: "bge-m3", usage: { prompt_tokens: 3, total_tokens: 3 } });

/** An upstream that answers nothing until `answerAll` (vLLM with a full queue). */
async function silentUpstream(): Promise<{ server: Server; url: string; received: () => number; answerAll: () => void }> {
  const waiting: ServerResponse[] = [];
  let received = 0;
  const server = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      received++;
      waiting.push(res);
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const answerAll = () => {
    for (const res of waiting.splice(0)) res.writeHead(200, { "content-type": "application/json" }).end(ANSWER);
  };
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, received: () => received, answerAll };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const metric = async (h: Harness, name: string) => {
  const line = (await (await fetch(`${h.url}/metrics`)).text()).split("\n").find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(" ").at(-1)) : undefined;
};

describe("request bodies held by requests in flight", () => {
  let h: Harness | undefined;
  let upstream: Awaited<ReturnType<typeof silentUpstream>> | undefined;
  afterEach(async () => {
    upstream?.answerAll();
    await h?.close();
    upstream?.server.close();
    h = upstream = undefined;
  });

  it("past SHIM_BODY_MEMORY_BYTES a large request gets 503 with Retry-After before its body is read, nothing charged; a small one is admitted; room comes back when requests end", async () => {
    upstream = await silentUpstream();
    h = await startShim({ env: { SHIM_UPSTREAM_URL: upstream.url, SHIM_BODY_MEMORY_BYTES: String(3 * MiB) } });
    const { id, key } = await h.createKey({ credits: 100 });
    expect(LARGE.length).toBeGreaterThan(0.85 * MiB);
    const held = [1, 2, 3].map(() => h!.post(key, "/v1/embeddings", LARGE));
    await pollUntil(() => upstream!.received() === 3, 10_000, 10);
    expect(await metric(h, "shim_body_memory_bytes")).toBe(3 * LARGE.length);

    const refused = await h.post(key, "/v1/embeddings", LARGE);
    expect(refused.status).toBe(503);
    expect(refused.headers.get("retry-after")).toBe("1");
    const body = (await refused.json()) as { error: { type: string; code: string; message: string } };
    expect(body.error).toMatchObject({ type: "api_error", code: "service_unavailable" });
    expect(body.error.message).toMatch(/busy/);
    const line = await h.waitForRequestLog((l) => l.status === 503 && l.path === "/v1/embeddings");
    expect(line).toMatchObject({ keyId: id, error: "body_memory_full", cost: null });
    expect(await metric(h, "shim_body_memory_refusals_total")).toBe(1);
    expect(upstream.received()).toBe(3);

    // A chat of a few KiB is never refused by this, however full the budget.
    const small = h.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hello ".repeat(500) }], max_tokens: 4 });
    await pollUntil(() => upstream!.received() === 4, 10_000, 10);

    upstream.answerAll();
    for (const r of [...(await Promise.all(held)), await small]) expect(r.status).toBe(200);
    await pollUntil(async () => (await metric(h!, "shim_body_memory_bytes")) === 0, 5_000, 10);
    const again = h.post(key, "/v1/embeddings", LARGE);
    await pollUntil(() => upstream!.received() === 5, 10_000, 10);
    upstream.answerAll();
    const last = await again;
    expect(last.status).toBe(200);
    // Charged: the four answered requests and this one, not the refused one (1 credit each).
    expect(Number(last.headers.get("x-credits-remaining"))).toBe(95);
  }, 20_000);

  it("a body larger than SHIM_BODY_MEMORY_BYTES, up to SHIM_MAX_BODY_BYTES, is admitted when no other large body is held (sent whole or chunked); while it is held, other large ones are refused", async () => {
    upstream = await silentUpstream();
    h = await startShim({ env: { SHIM_UPSTREAM_URL: upstream.url, SHIM_BODY_MEMORY_BYTES: String(8 * MiB), SHIM_MAX_BODY_BYTES: String(16 * MiB) } });
    const { key } = await h.createKey({ credits: 1_000_000 });
    // An embeddings request of about 12 MiB: over the budget, under the largest body.
    const big = JSON.stringify({ model: "bge-m3", input: Array.from({ length: 12_600 }, (_, i) => `${i} ` + "word ".repeat(200)) });
    expect(big.length).toBeGreaterThan(12 * MiB);
    expect(big.length).toBeLessThan(13 * MiB);
    // A few chats in flight (small bodies) do not keep it out.
    const chats = [1, 2].map(() => h!.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 4 }));
    await pollUntil(() => upstream!.received() === 2, 10_000, 10);
    const first = h.post(key, "/v1/embeddings", big);
    const admitted = await pollUntil(() => upstream!.received() === 3, 10_000, 10);
    const early = await Promise.race([first.then((r) => r.status), sleep(0).then(() => undefined)]);
    expect({ admitted, early }).toEqual({ admitted: true, early: undefined });

    // It holds more than the budget: another large body waits its turn (503, retried by the SDKs).
    for (const body of [big, LARGE]) expect((await h.post(key, "/v1/embeddings", body)).status).toBe(503);
    upstream.answerAll();
    for (const r of [await first, ...(await Promise.all(chats))]) expect(r.status).toBe(200);
    await pollUntil(async () => (await metric(h!, "shim_body_memory_bytes")) === 0, 5_000, 10);

    // Chunked, its bytes counted as they arrive: admitted past the budget too.
    const bytes = Buffer.from(big);
    const chunked = fetch(`${h.url}/v1/embeddings`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: new ReadableStream({
        start(c) {
          for (let i = 0; i < bytes.length; i += 256 * 1024) c.enqueue(bytes.subarray(i, i + 256 * 1024));
          c.close();
        },
      }),
      duplex: "half",
    } as RequestInit);
    await pollUntil(() => upstream!.received() === 4, 10_000, 10);
    upstream.answerAll();
    expect((await chunked).status).toBe(200);
  }, 30_000);

  it("a chunked body is counted as it arrives (refused once past the budget), and a request whose client left still counts while it waits on the upstream", async () => {
    upstream = await silentUpstream();
    h = await startShim({ env: { SHIM_UPSTREAM_URL: upstream.url, SHIM_BODY_MEMORY_BYTES: String(1.5 * MiB) } });
    const { key } = await h.createKey({ credits: 100 });
    // Held by a request whose client hangs up once the upstream has it: the shim waits on.
    const ac = new AbortController();
    const left = fetch(`${h.url}/v1/embeddings`, { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body: LARGE, signal: ac.signal }).catch(() => undefined);
    await pollUntil(() => upstream!.received() === 1, 10_000, 10);
    ac.abort();
    await left;
    await new Promise((r) => setTimeout(r, 200));
    expect(await metric(h, "shim_body_memory_bytes")).toBe(LARGE.length);

    const bytes = Buffer.from(LARGE);
    const chunked = await fetch(`${h.url}/v1/embeddings`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: new ReadableStream({
        start(c) {
          for (let i = 0; i < bytes.length; i += 64 * 1024) c.enqueue(bytes.subarray(i, i + 64 * 1024));
          c.close();
        },
      }),
      duplex: "half",
    } as RequestInit);
    expect(chunked.status).toBe(503);
    expect(chunked.headers.get("retry-after")).toBe("1");
    expect(((await chunked.json()) as { error: { code: string } }).error.code).toBe("service_unavailable");
    expect(upstream.received()).toBe(1);

    upstream.answerAll();
    expect(await pollUntil(async () => (await metric(h!, "shim_body_memory_bytes")) === 0, 5_000, 10)).toBe(true);
  }, 20_000);

  it("a client that leaves while its key is looked up (Postgres latency) holds nothing: the next large request gets in", async () => {
    let delay = 0;
    h = await startShim({
      env: { SHIM_BODY_MEMORY_BYTES: String(1.5 * MiB) },
      wrapStore: (s) => overrideStore(s, { getKey: async (id: string) => { if (delay) await sleep(delay); return s.getKey(id); } }),
    });
    const { key } = await h.createKey({ credits: 100 });
    delay = 200;
    const port = Number(new URL(h.url).port);
    const sock = net.connect(port, "127.0.0.1");
    await new Promise((r) => sock.once("connect", r));
    sock.write(`POST /v1/embeddings HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${key}\r\ncontent-type: application/json\r\ncontent-length: ${MiB}\r\n\r\n`);
    await sleep(50);
    sock.destroy(); // gone before authentication finished
    await sleep(1000);
    delay = 0;
    // Nothing is in flight any more: the gauge must be back at 0.
    const held = await metric(h, "shim_body_memory_bytes");
    const r = await h.post(key, "/v1/embeddings", LARGE);
    expect({ held, status: r.status }).toEqual({ held: 0, status: 200 });
  }, 20_000);

  it("a refusal for want of room gives the key's requests/min place back: the server was busy, not the key (free tier: 10)", async () => {
    h = await startShim({ env: { SHIM_BODY_MEMORY_BYTES: String(1 * MiB) } });
    const { key } = await h.createKey({ credits: 100, tier: "free" });
    // Hold the budget with a slow upload (headers only, Content-Length 1 MiB).
    const port = Number(new URL(h.url).port);
    const sock = net.connect(port, "127.0.0.1");
    await new Promise((r) => sock.once("connect", r));
    sock.write(`POST /v1/embeddings HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${key}\r\ncontent-type: application/json\r\ncontent-length: ${MiB}\r\n\r\n`);
    // Held once the upload is authenticated, which a loaded machine may take more than 200 ms to do.
    expect(await pollUntil(async () => (await metric(h!, "shim_body_memory_bytes")) === MiB, 10_000, 10)).toBe(true);
    const statuses: number[] = [];
    // An SDK retrying on the server's 503 (3 tries each) for 3 requests.
    for (let i = 0; i < 9; i++) statuses.push((await h.post(key, "/v1/embeddings", LARGE)).status);
    sock.destroy();
    expect(await pollUntil(async () => (await metric(h!, "shim_body_memory_bytes")) === 0, 10_000, 10)).toBe(true);
    const small = await h.post(key, "/v1/embeddings", { model: "bge-m3", input: "hi" });
    expect(statuses.every((s) => s === 503)).toBe(true);
    // The key made 1 real request; the server's own busy-ness should not spend its minute.
    expect(small.status).toBe(200);
  }, 20_000);
});

/**
 * A chunked body is piped through the hook's counter, so Node no longer drains it itself when the
 * answer is sent first: nobody read it, the counter filled, and the next request on the
 * connection was never answered (the socket closed at keepAliveTimeout). nginx buffers bodies and
 * sends them whole, so this is a client straight to the shim (`npm run shim`, a sidecar).
 */
// Pinned by a mutation review: a body of exactly FREE_BYTES is a small one both when taken and
// when given back. Counted as large on its way out only, each such request wore the count of
// large bodies down, and after N of them N + 1 large bodies sat past the budget at once.
describe("a body of exactly FREE_BYTES (the first bytes always taken) is a small one", () => {
  it("giving one back does not let a second large body past the budget", () => {
    const m = new BodyMemory(MiB);
    expect(m.take(0, FREE_BYTES)).toBe(true);
    m.give(FREE_BYTES);
    expect(m.take(0, 2 * MiB)).toBe(true); // the one large body allowed past the budget
    expect(m.take(0, 2 * MiB)).toBe(false); // a second is refused
    expect(m.inUse).toBe(2 * MiB);
  });

  it("is taken even while a large body holds the whole budget, as the docs promise", () => {
    const m = new BodyMemory(MiB);
    expect(m.take(0, 2 * MiB)).toBe(true);
    expect(m.take(0, FREE_BYTES)).toBe(true);
  });
});

describe("chunked bodies left unread, straight to the shim: the connection is kept", () => {
  let h: Harness;
  let key: string;
  afterEach(async () => {
    await h?.close();
  });
  const start = async (env: Record<string, string> = {}) => {
    h = await startShim({ env });
    ({ key } = await h.createKey({ credits: 100 }));
  };

  /** Writes `parts` on one connection; resolves with the statuses answered once `want` are (or 4 s passed). */
  async function exchange(parts: (string | Buffer)[], want: number): Promise<string[]> {
    const { s, statuses } = await keptConnection(h.url);
    for (const p of parts) s.write(p);
    await pollUntil(() => statuses().length >= want, 4000, 20);
    s.destroy();
    return statuses();
  }
  const models = () => `GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${key}\r\n\r\n`;
  const chunked = (method: string, path: string, contentType: string, bytes: number) => {
    const chunk = `${(16 * 1024).toString(16)}\r\n${"f".repeat(16 * 1024)}\r\n`;
    return `${method} ${path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${key}\r\ncontent-type: ${contentType}\r\ntransfer-encoding: chunked\r\n\r\n${chunk.repeat(bytes / (16 * 1024))}0\r\n\r\n`;
  };

  it("a chunked multipart upload to a route the shim does not serve: 404, then the next request is answered", async () => {
    await start();
    expect(await exchange([chunked("POST", "/v1/files", "multipart/form-data; boundary=zz", MiB), models()], 2)).toEqual(["HTTP/1.1 404", "HTTP/1.1 200"]);
  });

  it("the same upload sent with a Content-Length (Node drains it itself): 404, then the next request", async () => {
    await start();
    const head = `POST /v1/files HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${key}\r\ncontent-type: multipart/form-data; boundary=zz\r\ncontent-length: ${MiB}\r\n\r\n`;
    expect(await exchange([head, Buffer.alloc(MiB, 102), models()], 2)).toEqual(["HTTP/1.1 404", "HTTP/1.1 200"]);
  });

  it("a chunked text/plain body to a route that reads JSON, refused at its first byte (400): the next request is answered", async () => {
    await start();
    expect(await exchange([chunked("POST", "/v1/chat/completions", "text/plain", MiB), models()], 2)).toEqual(["HTTP/1.1 400", "HTTP/1.1 200"]);
  });

  it("a GET with a chunked body: answered, then the next request", async () => {
    await start();
    expect(await exchange([chunked("GET", "/v1/models", "text/plain", MiB), models()], 2)).toEqual(["HTTP/1.1 200", "HTTP/1.1 200"]);
  });

  it("a chunked body refused for want of room mid-body (503): the connection is closed at once (Fastify's rule after a parser's error), not left hanging, and nothing is held", async () => {
    await start({ SHIM_BODY_MEMORY_BYTES: String(1 * MiB) });
    // Held by a slow upload (Content-Length 1 MiB, headers only), so a second large body has no room.
    const u = new URL(h.url);
    const holder = net.connect(Number(u.port), u.hostname);
    await once(holder, "connect");
    holder.write(`POST /v1/embeddings HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${key}\r\ncontent-type: application/json\r\ncontent-length: ${MiB}\r\n\r\n`);
    await pollUntil(async () => (await metric(h, "shim_body_memory_bytes")) === MiB, 3000, 20);
    const { s, got } = await keptConnection(h.url);
    const closed = once(s, "close");
    s.write(chunked("POST", "/v1/embeddings", "application/json", 2 * MiB));
    expect(await Promise.race([closed.then(() => "closed"), sleep(3000).then(() => "open")])).toBe("closed");
    expect(got()).toMatch(/^HTTP\/1\.1 503 [^]*connection: close/i);
    holder.destroy();
    expect(await pollUntil(async () => (await metric(h, "shim_body_memory_bytes")) === 0, 3000, 20)).toBe(true);
  });

  it("a large chunked body nobody reads is drained as it comes and not held: the gauge is back at 0, the next request answered", async () => {
    await start();
    const { s, got, statuses } = await keptConnection(h.url);
    s.write(`POST /v1/files HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${key}\r\ncontent-type: multipart/form-data; boundary=zz\r\ntransfer-encoding: chunked\r\n\r\n`);
    await pollUntil(() => got().includes("HTTP/1.1 404"), 3000, 20);
    // 64 MiB after the answer, past SHIM_MAX_BODY_BYTES: read and dropped, not kept nor counted.
    const chunk = Buffer.from(`${(MiB).toString(16)}\r\n${"f".repeat(MiB)}\r\n`);
    for (let i = 0; i < 64; i++) if (!s.write(chunk)) await once(s, "drain");
    expect(await metric(h, "shim_body_memory_bytes")).toBe(0);
    s.write(`0\r\n\r\n${models()}`);
    await pollUntil(() => statuses().length === 2, 3000, 20);
    s.destroy();
    expect(statuses()).toEqual(["HTTP/1.1 404", "HTTP/1.1 200"]);
  }, 20_000);

  it("a chunked JSON body that is read (a chat): answered, then the next request", async () => {
    await start();
    const b = JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "x" }], max_tokens: 1 });
    const chat = `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${key}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n${b.length.toString(16)}\r\n${b}\r\n0\r\n\r\n`;
    expect(await exchange([chat, models()], 2)).toEqual(["HTTP/1.1 200", "HTTP/1.1 200"]);
  });
});
