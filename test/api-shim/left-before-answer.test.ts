import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { closeApp } from "../../api-shim/src/app.ts";
import { balanceOf, expectLedgerMatches, fillUpstreamPool, moneyInvariants, startShim, type Harness } from "../support/shim-harness.ts";
import { pollUntil } from "../support/tools.ts";

/**
 * Found by a mutation review of the inference route: what a client that leaves before
 * any answer came is charged. docs/api-shim/streaming.md: "A request dropped before it reached the upstream
 * (the client left while it was being admitted or waited for a connection) costs nothing", and a
 * stream's client that leaves "before any chunk pays the request price only".
 */
const CREDIT = 1_000_000;
const FILE = { pricing: { request: 1, models: { "qwen2.5-7b": { promptPer1k: 1, completionPer1k: 1000 } } }, models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }] };
const FAKE = { models: [{ name: "qwen2.5-7b" }] };
const BODY = { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 4 };

describe("a client that leaves before its answer began", () => {
  let h: Harness | undefined;
  let upstream: Server | undefined;
  afterEach(async () => {
    await h?.close();
    h = undefined;
    upstream?.closeAllConnections();
    upstream?.close();
    upstream = undefined;
  });

  it("a non-streamed request still waiting for an upstream connection is dropped: never sent, charged nothing", { timeout: 60_000 }, async () => {
    h = await startShim({ file: FILE, fake: FAKE });
    const filler = await h.createKey({ credits: 1_000_000 });
    const { id, key } = await h.createKey({ credits: 100 });
    const release = await fillUpstreamPool(h, filler.key);
    const ac = new AbortController();
    const left = fetch(`${h.url}/v1/chat/completions`, { method: "POST", signal: ac.signal, headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body: JSON.stringify(BODY) }).catch(() => undefined);
    // Admitted (its hold taken) and queued behind the pool's 256 hung generations.
    await pollUntil(async () => (await heldFor(h!, id)) > 0, 10_000, 20);
    await new Promise((r) => setTimeout(r, 100));
    ac.abort();
    await left;
    // The hung generations time out (SHIM_UPSTREAM_TIMEOUT_MS, 5 s) and free their connections; the fake answers from then on.
    await release();
    const line = await h.waitForRequestLog((l) => l.keyId === id, 15_000);
    expect(line.status).toBe(499);
    // Had it been sent once a connection freed, it would have been answered and charged its usage.
    await new Promise((r) => setTimeout(r, 500));
    expect(await balanceOf(h.store, id)).toBe(100 * CREDIT);
    await expectLedgerMatches(h.store, id);
  });

  it("a stream whose client leaves once the upstream has it, before the response's headers, pays the request price", async () => {
    let received = 0;
    upstream = createServer((req) => {
      received++;
      req.resume(); // never answers: the client leaves first
    });
    upstream.listen(0, "127.0.0.1");
    await once(upstream, "listening");
    h = await startShim({ file: FILE, fake: FAKE, env: { SHIM_UPSTREAM_URL: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1` } });
    const { id, key } = await h.createKey({ credits: 100 });
    const ac = new AbortController();
    const res = fetch(`${h.url}/v1/chat/completions`, { method: "POST", signal: ac.signal, headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body: JSON.stringify({ ...BODY, stream: true }) }).catch(() => undefined);
    await pollUntil(() => received > 0, 10_000, 5);
    await new Promise((r) => setTimeout(r, 50));
    ac.abort();
    await res;
    const line = await h.waitForRequestLog((l) => l.keyId === id, 10_000);
    expect(line.status).toBe(499);
    expect(await balanceOf(h.store, id)).toBe(99 * CREDIT);
    await expectLedgerMatches(h.store, id);
  });
});

describe("a drain (SIGTERM) that cuts a request the upstream has not answered yet", () => {
  let h: Harness | undefined;
  let upstream: Server | undefined;
  afterEach(async () => {
    await h?.close();
    h = undefined;
    upstream?.closeAllConnections();
    upstream?.close();
    upstream = undefined;
  });

  it("answers its client 503 (the SDK retries it after the restart) and charges nothing, though the upstream had it", async () => {
    let received = 0;
    upstream = createServer((req) => {
      received++;
      req.resume(); // no headers before the drain ends
    });
    upstream.listen(0, "127.0.0.1");
    await once(upstream, "listening");
    h = await startShim({ file: FILE, fake: FAKE, env: { SHIM_UPSTREAM_URL: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1` } });
    const { id, key } = await h.createKey({ credits: 100 });
    const answer = h.post(key, "/v1/chat/completions", BODY).then(async (r) => ({ status: r.status, body: await r.text() }), (e: unknown) => ({ status: 0, body: String(e) }));
    await pollUntil(() => received > 0, 10_000, 5);
    await closeApp(h.app, 200); // SIGTERM's drain, short
    const got = await answer;
    expect(got.status).toBe(503);
    expect(await balanceOf(h.store, id)).toBe(100 * CREDIT);
    await expectLedgerMatches(h.store, id);
  });

  it("of a request waiting for its key's other holds to settle answers it 503 (retried after the restart), not 402", async () => {
    let received = 0;
    upstream = createServer((req) => {
      received++;
      req.resume();
    });
    upstream.listen(0, "127.0.0.1");
    await once(upstream, "listening");
    h = await startShim({ file: FILE, fake: FAKE, env: { SHIM_UPSTREAM_URL: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1` } });
    const { id, key } = await h.createKey({ credits: 100 });
    const body = { ...BODY, max_tokens: 60 }; // each held ~61 credits: the balance covers one at a time
    const first = h.post(key, "/v1/chat/completions", body).then((r) => r.status, () => 0);
    await pollUntil(() => received > 0, 10_000, 5);
    const second = h.post(key, "/v1/chat/completions", body).then((r) => r.status, () => 0);
    await new Promise((r) => setTimeout(r, 100)); // it waits (FINISHING_GRACE_MS, 500 ms) for the first's hold
    await closeApp(h.app, 100);
    expect(await second).toBe(503);
    expect(await first).toBe(503);
    expect(await balanceOf(h.store, id)).toBe(100 * CREDIT);
  });

  it("whose client had left is no upstream failure: not counted in shim_upstream_failures_total, no cause on its 499 line", async () => {
    let received = 0;
    upstream = createServer((req) => {
      received++;
      req.resume();
    });
    upstream.listen(0, "127.0.0.1");
    await once(upstream, "listening");
    h = await startShim({ file: FILE, fake: FAKE, env: { SHIM_UPSTREAM_URL: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1` } });
    const { id, key } = await h.createKey({ credits: 100 });
    const ac = new AbortController();
    const left = fetch(`${h.url}/v1/chat/completions`, { method: "POST", signal: ac.signal, headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body: JSON.stringify(BODY) }).catch(() => undefined);
    await pollUntil(() => received > 0, 10_000, 5);
    await new Promise((r) => setTimeout(r, 50));
    ac.abort(); // the upstream has it: the request goes on, waiting for the answer
    await left;
    await new Promise((r) => setTimeout(r, 100));
    await closeApp(h.app, 200); // SIGTERM's drain, short: cuts it
    const line = await h.waitForRequestLog((l) => l.keyId === id, 5_000);
    expect(line).toMatchObject({ status: 499, cost: 0 });
    expect(line.cause).toBeUndefined();
    const failures = (await h.app.shim.metrics.upstreamFailures.get()).values.filter((v) => v.value > 0);
    expect(failures).toEqual([]);
  });
});

async function heldFor(h: Harness, keyId: string): Promise<number> {
  return (await moneyInvariants(h.store)).find((r) => r.keyId === keyId)?.held ?? 0;
}

describe("an upstream refusal whose body is longer than the shim reads of it (64 KiB)", () => {
  let h: Harness | undefined;
  let upstream: Server | undefined;
  afterEach(async () => {
    await h?.close();
    h = undefined;
    upstream?.closeAllConnections();
    upstream?.close();
    upstream = undefined;
  });

  it("has its upstream request aborted once the client is answered, not left open while the upstream goes on sending", async () => {
    let closed = false;
    upstream = createServer((req, res) => {
      req.resume();
      res.writeHead(500, { "content-type": "application/json" });
      res.write(`{"error":{"message":"${"x".repeat(100 * 1024)}`); // and never ends
      res.on("close", () => (closed = true));
    });
    upstream.listen(0, "127.0.0.1");
    await once(upstream, "listening");
    h = await startShim({ file: FILE, fake: FAKE, env: { SHIM_UPSTREAM_URL: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1` } });
    const { key } = await h.createKey({ credits: 100 });
    const res = await h.post(key, "/v1/chat/completions", BODY);
    expect(res.status).toBe(502);
    await res.text();
    expect(await pollUntil(() => closed, 3_000, 20)).toBe(true);
  });
});
