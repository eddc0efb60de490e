import { once } from "node:events";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FINISHING_GRACE_MS } from "../../api-shim/src/limits/key-waits.ts";
import { parseKeyId } from "../../api-shim/src/auth/keys.ts";
import { type Harness, startShim } from "../support/shim-harness.ts";
import { bodyHeld } from "../support/slow-body.ts";
import { pollUntil } from "../support/tools.ts";

/**
 * A request refused a place in flight waits a little (key-waits.ts) for one of its key's requests
 * to end, in the auth hook and again in the handler. It is not in flight meanwhile, so a drain
 * does not wait for it: the drain must turn it away (503, retried elsewhere) as it begins, or it
 * went on to make its hold once the drain had said nothing was in flight and the store was
 * being closed (server.ts). And a key whose tokens/min budget is spent is told so at once, not
 * after waiting for a place it could not use.
 */
const model = "qwen2.5-7b";

/**
 * How many waits for a place in flight `key`'s requests have begun since: KeyWaiters.retry
 * registers the waiter before it first tries. What the test waits for before the drain begins, not
 * a fixed sleep: on a loaded machine C was not waiting yet, the drain found it before its wait
 * (auth.ts, inference.ts: 503 at once) and the same 503 passed the test. No metric counts these
 * waits, so the test counts them as it counts holds (reservesAfter).
 */
function placeWaits(h: Harness, key: string): () => number {
  const id = parseKeyId(key);
  const waiters = h.app.shim.limiter.placeWaiters;
  const retry = waiters.retry.bind(waiters);
  let began = 0;
  waiters.retry = (keyId, ...rest) => ((keyId === id && began++), retry(keyId, ...rest));
  return () => began;
}

/** A stream of `key`'s that takes its one place (60 tokens at the fake's pace); stopped by the returned function. */
async function streamInFlight(h: Harness, key: string): Promise<() => Promise<void>> {
  const ac = new AbortController();
  const res = await fetch(`${h.url}/v1/chat/completions`, { method: "POST", signal: ac.signal, headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body: JSON.stringify({ model, messages: [{ role: "user", content: "x" }], max_tokens: 60, stream: true }) });
  const reader = res.body!.getReader();
  await reader.read(); // admitted: its place is taken
  return async () => {
    ac.abort();
    await reader.read().catch(() => {});
  };
}

describe("a request waiting for a place in flight when a drain begins", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startShim({ file: { tiers: { one: { rpm: 1000, tpm: 10_000_000, concurrency: 1 } }, models: [{ name: model, maxModelLen: 8192 }] } });
    h.fake.set({ tokenDelayMs: 30, defaultTokens: 60 }); // a stream not stopped goes on for 1.8 s
  });
  afterAll(() => h.close());

  /** Counts the holds made once `drained()` says the drain has returned (server.ts then closes the store). */
  function reservesAfter(drained: () => boolean): () => number {
    let after = 0;
    const reserve = h.store.reserve.bind(h.store);
    h.store.reserve = (input) => (drained() && after++, reserve(input));
    return () => after;
  }

  it("in the handler (its body came after the hook passed): 503 as the drain begins, no hold made once the drain said it was done", async () => {
    const { key, id } = await h.createKey({ credits: 1000, tier: "one" });
    const body = JSON.stringify({ model, messages: [{ role: "user", content: "x" }], max_tokens: 1 });
    // C: its headers now (the hook passes: the key has nothing in flight), its body later.
    const u = new URL(h.url);
    const c = net.connect(Number(u.port), u.hostname);
    await once(c, "connect");
    let got = "";
    c.on("data", (d) => (got += String(d)));
    c.on("error", () => {});
    const before = h.app.shim.bodyMemory.inUse;
    c.write(`POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${key}\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body.slice(0, 5)}`);
    expect(await bodyHeld(h, before, body.length)).toBe(true); // the auth hook has passed C
    const stopB = await streamInFlight(h, key); // B takes the key's one place
    try {
      const waits = placeWaits(h, key);
      c.write(body.slice(5)); // C's handler: refused a place, it waits for B
      expect(await pollUntil(() => waits() === 1, 20_000, 5)).toBe(true);
      expect(h.app.shim.inflight.size).toBe(1); // B only: C waits outside what the drain waits for
      let drained = false;
      const reserves = reservesAfter(() => drained);
      const drain = h.app.shim.inflight.drain(5000).then((r) => ((drained = true), r));
      await stopB(); // B ends and gives its place back: C used to be woken by it and go on
      expect(await drain).toEqual({ aborted: 0 }); // nothing in flight: server.ts now closes the store
      await pollUntil(() => /HTTP\/1\.1 \d{3}/.test(got), 20_000, 10);
      expect(got.split("\r\n")[0]).toBe("HTTP/1.1 503 Service Unavailable");
      expect(got).toMatch(/"code":"service_unavailable"/);
      await h.waitForRequestLog((l) => l.keyId === id && l.status === 503); // C is over: no hold can come after
      expect(reserves()).toBe(0); // was 1: C made its hold on a store being closed
      expect(h.app.shim.inflight.size).toBe(0);
    } finally {
      c.destroy();
      await stopB();
    }
  });
});

describe("a request waiting in the auth hook for a place in flight when a drain begins", () => {
  it("gets 503 service_unavailable as the drain begins, not a 429 after its wait", async () => {
    const h = await startShim({ file: { tiers: { one: { rpm: 1000, tpm: 10_000_000, concurrency: 1 } }, models: [{ name: model, maxModelLen: 8192 }] } });
    try {
      h.fake.set({ tokenDelayMs: 30, defaultTokens: 60 });
      const { key } = await h.createKey({ credits: 1000, tier: "one" });
      const stopB = await streamInFlight(h, key); // B has the key's one place
      const waits = placeWaits(h, key);
      const asked = h.post(key, "/v1/chat/completions", { model, messages: [{ role: "user", content: "x" }], max_tokens: 1 });
      expect(await pollUntil(() => waits() === 1, 20_000, 5)).toBe(true); // C waits in the auth hook
      const started = performance.now();
      const drain = h.app.shim.inflight.drain(5000);
      const res = await asked;
      expect(res.status).toBe(503);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("service_unavailable");
      expect(performance.now() - started).toBeLessThan(FINISHING_GRACE_MS);
      await stopB();
      await drain;
    } finally {
      await h.close();
    }
  });
});

describe("a key at its cap on requests in flight whose tokens/min budget is spent too", () => {
  it("is refused for its tokens at once, with their Retry-After, without waiting for a place first", async () => {
    const h = await startShim({ file: { tiers: { small: { rpm: 1000, tpm: 50, concurrency: 1 } }, models: [{ name: model, maxModelLen: 8192 }] } });
    try {
      h.fake.set({ tokenDelayMs: 30, defaultTokens: 60 });
      const { key } = await h.createKey({ credits: 1000, tier: "small" });
      // B: its estimate (max_tokens 60 and the prompt) overdraws the 50 tokens/min, and it takes the one place.
      const stopB = await streamInFlight(h, key);
      try {
        const started = performance.now();
        const res = await h.post(key, "/v1/chat/completions", { model, messages: [{ role: "user", content: "x" }], max_tokens: 1 });
        const waited = performance.now() - started;
        expect(res.status).toBe(429);
        const message = ((await res.json()) as { error: { message: string } }).error.message;
        expect(message).toMatch(/^Rate limit exceeded/); // the tokens budget's refusal, not "too many in flight"
        expect(Number(res.headers.get("retry-after"))).toBeGreaterThanOrEqual(1); // B's estimate, mostly given back when it ends
        expect(res.headers.get("x-ratelimit-remaining-tokens")).toBe("0");
        expect(waited).toBeLessThan(FINISHING_GRACE_MS / 2);
      } finally {
        await stopB();
      }
    } finally {
      await h.close();
    }
  });
});
