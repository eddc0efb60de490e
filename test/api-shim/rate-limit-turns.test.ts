// The turns a requests/min bucket tells the callers it refuses (rate-limit.ts, turns.ts), on the
// bucket's own clock (every call takes its time in ms): a told caller's room is held until it
// comes back, and nobody gets more than the rate for it.
import { describe, expect, it } from "vitest";
import { rateLimitHeaders, TokenBucket } from "../../api-shim/src/limits/rate-limit.ts";
import { manualClock } from "../support/clocks.ts";
import { startShim } from "../support/shim-harness.ts";

/** A bucket of 60 requests a minute (one back every second), spent at 0. */
function spent(): TokenBucket {
  const b = new TokenBucket(60, 0);
  expect(b.take(60, 0).ok).toBe(true);
  return b;
}

/** A refusal's wait as the client is told it: Retry-After, whole seconds (errors.ts). */
const told = (r: { ok: true } | { ok: false; retryMs: number }) => (r.ok ? "admitted" : `${Math.ceil(r.retryMs / 1000)} s`);

describe("turns told by a requests/min bucket", () => {
  it("a caller told to come back in 1 s is admitted when it does, though another request came in between when a request's room was back (a batch job's worker answered a moment ago)", () => {
    const b = spent();
    expect(told(b.take(1, 300))).toBe("1 s"); // its room is back at 1000, it comes at 1300
    // Before the turns held the room, this one took it and the told caller was refused again.
    expect(told(b.take(1, 1100))).toBe("1 s"); // the next room, at 2000: comes at 2100
    expect(told(b.take(1, 1300))).toBe("admitted");
    expect(told(b.take(1, 2100))).toBe("admitted");
  });

  it("while a told caller's room is held, the headers count it out of what is left, and in the time to a full bucket", () => {
    const b = spent();
    b.take(1, 300);
    const h = rateLimitHeaders({ requests: b, tokens: null }, 1100, 1_000_000, false);
    expect(h["x-ratelimit-remaining-requests"]).toBe("0"); // 1.1 back, 1 of it held
    expect(h["x-ratelimit-reset-requests"]).toBe("1m0s"); // 58.9 s to refill, 1 s more for the held turn
  });

  it("an SDK's first attempt (x-stainless-retry-count: 0) does not take a turn whose time has come, though it arrives first: the turn was told to another caller, whose retry comes a few ms later", () => {
    const b = new TokenBucket(120, 0);
    expect(b.take(120, 0).ok).toBe(true);
    expect([told(b.take(1, 0)), told(b.take(1, 2))]).toEqual(["1 s", "1 s"]); // turns at 1000 and 1002
    expect(told(b.take(1, 1000))).toBe("admitted"); // the first told caller
    expect(told(b.take(1, 1006, true))).toBe("1 s"); // its next request, answered in 6 ms
    expect(told(b.take(1, 1008))).toBe("admitted"); // the second told caller's retry
  });

  it("a turn nobody comes back for is let go a second past its time: its room is not lost", () => {
    const b = spent();
    expect([b.take(1, 0), b.take(1, 0), b.take(1, 0)].map(told)).toEqual(["1 s", "2 s", "3 s"]);
    const admitted = Array.from({ length: 11 }, () => b.take(1, 10_000).ok).filter(Boolean).length;
    expect(admitted).toBe(10); // ten seconds' refill, all of it
  });

  it("a client that ignores Retry-After and sends every 10 ms gets the rate, no more: 60 at once, then one a second", () => {
    const b = new TokenBucket(60, 0);
    const admitted: number[] = [];
    for (let t = 0; t <= 180_000; t += 10) if (b.take(1, t).ok) admitted.push(t);
    // The bucket's 60 and 180 s of refill, the last second's perhaps still held for a turn told.
    expect(admitted.length).toBeLessThanOrEqual(60 + 180);
    expect(admitted.length).toBeGreaterThanOrEqual(60 + 179);
    let most = 0;
    for (let i = 0, j = 0; i < admitted.length; i++) {
      while (admitted[i]! - admitted[j]! >= 60_000) j++;
      if (admitted[j]! >= 1000) most = Math.max(most, i - j + 1);
    }
    expect(most).toBeLessThanOrEqual(61); // any minute past the first burst's: its refill, give or take one at its ends
  });

  it("callers told turns a refill apart at 120 a minute are told whole seconds, two to a second, and all admitted at them", () => {
    const b = new TokenBucket(120, 0);
    expect(b.take(120, 0).ok).toBe(true);
    const waits = Array.from({ length: 8 }, () => told(b.take(1, 0)));
    expect(waits).toEqual(["1 s", "1 s", "2 s", "2 s", "3 s", "3 s", "4 s", "4 s"]);
    // Each comes back at its time, a request that holds no turn just before each pair.
    for (const at of [1000, 2000, 3000, 4000]) {
      expect(b.take(1, at - 1).ok).toBe(false);
      expect([b.take(1, at).ok, b.take(1, at).ok]).toEqual([true, true]);
    }
  });

  it("an SDK client without retries that ignores Retry-After (every request a first attempt) still gets the rate: its unclaimed turns are let go", () => {
    const b = new TokenBucket(60, 0);
    let admitted = 0;
    for (let t = 0; t <= 180_000; t += 10) if (b.take(1, t, true).ok) admitted++;
    expect(admitted).toBeLessThanOrEqual(60 + 180);
    expect(admitted).toBeGreaterThanOrEqual(60 + 177); // each second's room a turn's time and its grace late
  });
});

describe("the shim reads an SDK's attempt number for the turns", () => {
  it("at a turn's time, a request saying x-stainless-retry-count: 0 is refused and one saying 1 admitted", async () => {
    const clock = manualClock();
    const h = await startShim({ clock, file: { models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }], tiers: { slow: { rpm: 2, tpm: 10_000_000 } } } });
    try {
      const { key } = await h.createKey({ credits: 100, tier: "slow" });
      const send = async (attempt: string) => {
        const res = await h.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 1 }, { "x-stainless-retry-count": attempt });
        await res.text();
        return `${res.status} ${res.headers.get("retry-after") ?? ""}`.trim();
      };
      expect([await send("0"), await send("0"), await send("0")]).toEqual(["200", "200", "429 30"]);
      clock.advance(30_000);
      expect(await send("0")).toBe("429 30"); // the turn is the refused caller's
      expect(await send("1")).toBe("200");
    } finally {
      await h.close();
    }
  });
});
