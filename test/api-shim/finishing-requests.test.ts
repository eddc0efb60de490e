import OpenAI, { type APIError } from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FINISHING_GRACE_MS } from "../../api-shim/src/limits/key-waits.ts";
import { failure } from "../support/api-failure.ts";
import { moneyInvariants, startShim, type Harness } from "../support/shim-harness.ts";

/**
 * A user of the official `openai` SDK stops a stream (`break` out of the loop, which aborts the
 * request: a chat UI's Stop button) and sends the next request at once. The stopped stream's
 * hold and place in flight are given back a few ms after the client closed, so the next request
 * used to arrive first and be refused: 402 (which the SDK never retries) although the key could
 * pay, or 429 on a tier with `concurrency: 1`. It now waits up to FINISHING_GRACE_MS for them;
 * a key that is really short of credits, or really at its cap, is refused as before.
 */
describe("the next request right after the SDK stopped a stream", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startShim({
      file: {
        // Each chat of max_tokens 60 holds 61 credits (1 + 60 tokens at 1 credit each).
        pricing: { request: 1, models: { "qwen2.5-7b": { promptPer1k: 0, completionPer1k: 1000 } } },
        tiers: { one: { rpm: 1000, tpm: 10_000_000, concurrency: 1 }, two: { rpm: 1000, tpm: 10_000_000, concurrency: 2 } },
        models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }],
      },
    });
    h.fake.set({ tokenDelayMs: 30, defaultTokens: 60 }); // a stream not stopped goes on for 1.8 s
  });
  afterAll(() => h.close());
  const ask = { model: "qwen2.5-7b", messages: [{ role: "user" as const, content: "x" }], max_tokens: 60 };
  const outcome = (p: Promise<unknown>) => p.then(() => "ok", (e: APIError) => `${e.status} ${e.message}`);

  async function stopAStream(c: OpenAI): Promise<void> {
    const stream = await c.chat.completions.create({ ...ask, stream: true });
    let n = 0;
    for await (const _chunk of stream) if (++n === 3) break; // the SDK aborts the request
  }

  /** A stream that goes on for `tokens` × 30 ms: a request of the key genuinely in flight. Stopped by the returned function. */
  async function longStream(c: OpenAI, tokens: number): Promise<() => Promise<void>> {
    const stream = await c.chat.completions.create({ ...ask, max_tokens: tokens, stream: true });
    const it = stream[Symbol.asyncIterator]();
    await it.next(); // admitted: its hold and place are taken
    return async () => {
      stream.controller.abort();
      await it.next().catch(() => {});
    };
  }

  async function balanceOf(id: string): Promise<number> {
    return (await moneyInvariants(h.store)).find((r) => r.keyId === id)!.balance / 1e6;
  }

  it("is not refused 402 for the credits the stopped stream still holds (the SDK does not retry a 402)", async () => {
    const { key, id } = await h.createKey({ credits: 100 });
    const c = new OpenAI({ apiKey: key, baseURL: `${h.url}/v1` }); // the SDK's defaults: maxRetries 2
    // Stop, ask again and stop, ...: each stopped stream costs a few credits.
    for (let round = 0; round < 4; round++) await stopAStream(c);
    // Was "402 Insufficient credits. Required: 61, Available: 39" with ~85 credits left.
    expect(await outcome(c.chat.completions.create(ask))).toBe("ok");
    expect(await balanceOf(id)).toBeGreaterThan(0);
  });

  it("is not refused 429 'too many in flight' for a stream it already stopped", async () => {
    const { key } = await h.createKey({ credits: 1000, tier: "one" });
    const c = new OpenAI({ apiKey: key, baseURL: `${h.url}/v1`, maxRetries: 0 });
    for (let round = 0; round < 3; round++) {
      await stopAStream(c);
      // Was "429 Too many requests in flight for this key: its tier allows 1 at once."
      expect(await outcome(c.chat.completions.create({ ...ask, max_tokens: 1 }))).toBe("ok");
    }
  });

  it("a key whose balance itself is short gets its 402 at once, without waiting for its requests in flight", async () => {
    const { key, id } = await h.createKey({ credits: 100 });
    const c = h.client(key);
    const stop = await longStream(c, 60); // holds 61 for ~1.8 s
    try {
      const started = performance.now();
      // 100 credits, a hold of 201: no settlement could make the balance cover it.
      const e = await failure(() => c.chat.completions.create({ ...ask, max_tokens: 200 }));
      expect(e.status).toBe(402);
      expect(performance.now() - started).toBeLessThan(FINISHING_GRACE_MS);
    } finally {
      await stop();
    }
    expect(await balanceOf(id)).toBeLessThanOrEqual(100);
  });

  it("a key whose credits are held by a request genuinely in flight gets its 402 after the grace", async () => {
    const { key } = await h.createKey({ credits: 100 });
    const c = h.client(key);
    const stop = await longStream(c, 60); // holds 61 for ~1.8 s
    try {
      const started = performance.now();
      const e = await failure(() => c.chat.completions.create(ask));
      const waited = performance.now() - started;
      expect(e.status).toBe(402);
      expect(e.message).toBe("402 Insufficient credits. Required: 61, Available: 39");
      expect(waited).toBeGreaterThanOrEqual(FINISHING_GRACE_MS - 20); // timers may fire a ms early
      expect(waited).toBeLessThan(FINISHING_GRACE_MS + 1000);
    } finally {
      await stop();
    }
  });

  it("a key whose balance exactly equals the hold waits for its request in flight too (it could pay once that one settled)", async () => {
    const { key } = await h.createKey({ credits: 61 });
    const c = h.client(key);
    const stop = await longStream(c, 60); // holds all 61 for ~1.8 s
    try {
      const started = performance.now();
      const e = await failure(() => c.chat.completions.create(ask)); // a hold of 61: the whole balance
      expect(e.status).toBe(402);
      expect(e.message).toBe("402 Insufficient credits. Required: 61, Available: 0");
      expect(performance.now() - started).toBeGreaterThanOrEqual(FINISHING_GRACE_MS - 20);
    } finally {
      await stop();
    }
  });

  it("a key at its concurrency cap with a request genuinely in flight gets its 429 after the grace", async () => {
    const { key } = await h.createKey({ credits: 1000, tier: "one" });
    const c = h.client(key);
    const stop = await longStream(c, 60);
    try {
      const started = performance.now();
      const e = await failure(() => c.chat.completions.create({ ...ask, max_tokens: 1 }));
      const waited = performance.now() - started;
      expect(e.status).toBe(429);
      expect(e.message).toMatch(/allows 1 at once/);
      expect(waited).toBeGreaterThanOrEqual(FINISHING_GRACE_MS - 20);
      expect(waited).toBeLessThan(FINISHING_GRACE_MS + 1000);
    } finally {
      await stop();
    }
  });

  it("a client that leaves while it waits for credits stops waiting, is logged 499 and leaves no hold", async () => {
    const { key, id } = await h.createKey({ credits: 100 });
    const stop = await longStream(h.client(key), 60);
    try {
      const started = performance.now();
      const waits = h.post(key, "/v1/chat/completions", ask);
      const leaves = fetch(`${h.url}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body: JSON.stringify(ask),
        signal: AbortSignal.timeout(FINISHING_GRACE_MS / 5),
      });
      expect(await leaves.catch((x: unknown) => x)).toBeInstanceOf(Error);
      const line = await h.waitForRequestLog((l) => l.keyId === id && l.status === 499);
      expect(performance.now() - started).toBeLessThan(FINISHING_GRACE_MS); // it did not wait the grace out
      expect(line).toMatchObject({ error: "client_closed_request", cost: null });
      expect((await waits).status).toBe(402); // the one that stayed did
    } finally {
      await stop();
    }
  });

  // Found by review: each wait had its own grace, so a request that waited for a place and then
  // for credits got its 402 after about twice the grace (834 ms).
  it("one grace in all: a request that waits for a place, then for credits, is answered within it", async () => {
    const { key } = await h.createKey({ credits: 100, tier: "two" });
    const c = h.client(key);
    const stopLong = await longStream(c, 60); // holds 61 for 1.8 s
    const stopShort = await longStream(c, 15); // holds 16: the key is at its cap of 2, with 23 available
    try {
      const started = performance.now();
      const asked = failure(() => c.chat.completions.create(ask)); // needs 61: a place, then credits
      await new Promise((r) => setTimeout(r, FINISHING_GRACE_MS * 0.75));
      await stopShort(); // its place comes free within the grace; its credits are not enough
      const e = await asked;
      const waited = performance.now() - started;
      expect(e.status).toBe(402);
      expect(waited).toBeLessThan(FINISHING_GRACE_MS + 300); // 1.75 graces before (a grace each for the place and the credits)
    } finally {
      await stopLong();
    }
  });

  it("the money stays consistent: nothing held, every balance the sum of its ledger", async () => {
    await expect.poll(async () => (await moneyInvariants(h.store)).filter((r) => r.held !== 0 || r.reservations !== 0 || r.balance !== r.ledgerSum)).toEqual([]);
  });
});
