import { describe, expect, it } from "vitest";
import { closeApp } from "../../api-shim/src/app.ts";
import { balanceOf, expectLedgerMatches, fillUpstreamPool, moneyInvariants, type Harness } from "../support/shim-harness.ts";
import { pollUntil } from "../support/tools.ts";
import { countingUpstream, oneMore, postAndLeave, shimPerTest } from "../support/upstream-per-test.ts";

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
/** An upstream that reads each request and never answers: a client or a drain ends it first. */
const silentUpstream = () => countingUpstream((req) => req.resume());

describe("a client that leaves before its answer began", () => {
  const start = shimPerTest();

  it("a non-streamed request still waiting for an upstream connection is dropped: never sent, charged nothing", { timeout: 60_000 }, async () => {
    const h = await start({ file: FILE, fake: FAKE });
    const filler = await h.createKey({ credits: 1_000_000 });
    const { id, key } = await h.createKey({ credits: 100 });
    const release = await fillUpstreamPool(h, filler.key);
    // Left once admitted (its hold taken) and queued behind the pool's 256 hung generations.
    await postAndLeave(h, key, BODY, async () => (await heldFor(h, id)) > 0, 100);
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
    const upstream = await silentUpstream(); // never answers: the client leaves first
    const h = await start({ file: FILE, fake: FAKE }, upstream);
    const { id, key } = await h.createKey({ credits: 100 });
    await postAndLeave(h, key, { ...BODY, stream: true }, oneMore(upstream.received));
    const line = await h.waitForRequestLog((l) => l.keyId === id, 10_000);
    expect(line.status).toBe(499);
    expect(await balanceOf(h.store, id)).toBe(99 * CREDIT);
    await expectLedgerMatches(h.store, id);
  });
});

describe("a drain (SIGTERM) that cuts a request the upstream has not answered yet", () => {
  const start = shimPerTest();

  it("answers its client 503 (the SDK retries it after the restart) and charges nothing, though the upstream had it", async () => {
    const upstream = await silentUpstream(); // no headers before the drain ends
    const h = await start({ file: FILE, fake: FAKE }, upstream);
    const { id, key } = await h.createKey({ credits: 100 });
    const answer = h.post(key, "/v1/chat/completions", BODY).then(async (r) => ({ status: r.status, body: await r.text() }), (e: unknown) => ({ status: 0, body: String(e) }));
    await pollUntil(() => upstream.received() > 0, 10_000, 5);
    await closeApp(h.app, 200); // SIGTERM's drain, short
    const got = await answer;
    expect(got.status).toBe(503);
    expect(await balanceOf(h.store, id)).toBe(100 * CREDIT);
    await expectLedgerMatches(h.store, id);
  });

  it("of a request waiting for its key's other holds to settle answers it 503 (retried after the restart), not 402", async () => {
    const upstream = await silentUpstream();
    const h = await start({ file: FILE, fake: FAKE }, upstream);
    const { id, key } = await h.createKey({ credits: 100 });
    const body = { ...BODY, max_tokens: 60 }; // each held ~61 credits: the balance covers one at a time
    const first = h.post(key, "/v1/chat/completions", body).then((r) => r.status, () => 0);
    await pollUntil(() => upstream.received() > 0, 10_000, 5);
    const second = h.post(key, "/v1/chat/completions", body).then((r) => r.status, () => 0);
    await new Promise((r) => setTimeout(r, 100)); // it waits (FINISHING_GRACE_MS, 500 ms) for the first's hold
    await closeApp(h.app, 100);
    expect(await second).toBe(503);
    expect(await first).toBe(503);
    expect(await balanceOf(h.store, id)).toBe(100 * CREDIT);
  });

  it("whose client had left is no upstream failure: not counted in shim_upstream_failures_total, no cause on its 499 line", async () => {
    const upstream = await silentUpstream();
    const h = await start({ file: FILE, fake: FAKE }, upstream);
    const { id, key } = await h.createKey({ credits: 100 });
    // Left once the upstream has it: the request goes on, waiting for the answer.
    await postAndLeave(h, key, BODY, oneMore(upstream.received));
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
  const start = shimPerTest();

  it("has its upstream request aborted once the client is answered, not left open while the upstream goes on sending", async () => {
    let closed = false;
    const upstream = await countingUpstream((req, res) => {
      req.resume();
      res.writeHead(500, { "content-type": "application/json" });
      res.write(`{"error":{"message":"${"x".repeat(100 * 1024)}`); // and never ends
      res.on("close", () => (closed = true));
    });
    const h = await start({ file: FILE, fake: FAKE }, upstream);
    const { key } = await h.createKey({ credits: 100 });
    const res = await h.post(key, "/v1/chat/completions", BODY);
    expect(res.status).toBe(502);
    await res.text();
    expect(await pollUntil(() => closed, 3_000, 20)).toBe(true);
  });
});
