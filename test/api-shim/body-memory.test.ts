import { once } from "node:events";
import { createServer, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { startShim, type Harness } from "../support/shim-harness.ts";
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
});
