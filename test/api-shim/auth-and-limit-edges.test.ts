// Edges of key authentication and the rate limits that a mutation review found no test pinned:
// each test here fails when its behaviour is broken (a wrong secret on a real key id accepted, the
// admin-token throttle opening early, seed 004's remaining count on a 200, a stream's credits).
import { describe, expect, it } from "vitest";
import { manualClock, refillessClock } from "../support/clocks.ts";
import { TokenBucket, durationString, rateLimitHeaders } from "../../api-shim/src/limits/rate-limit.ts";
import { bearerToken } from "../../api-shim/src/auth/keys.ts";
import { startShim } from "../support/shim-harness.ts";

describe("keys and rate-limit figures at their edges", () => {
  it("a known key id with a wrong secret is refused 401", async () => {
    const h = await startShim();
    try {
      const { key } = await h.createKey({ credits: 10 });
      const forged = key.slice(0, -32) + (key.endsWith("A".repeat(32)) ? "B" : "A").repeat(32);
      const res = await fetch(`${h.url}/v1/models`, { headers: { authorization: `Bearer ${forged}` } });
      expect(res.status).toBe(401);
      expect((await fetch(`${h.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } })).status).toBe(200);
    } finally {
      await h.close();
    }
  });

  it("a refusal before any key is known carries no credit figures: a 401 says nothing of a balance", async () => {
    const h = await startShim();
    try {
      for (const res of [await fetch(`${h.url}/v1/models`), await fetch(`${h.url}/v1/models`, { headers: { authorization: "Bearer sk-gs-guessguessgu_guessguessguessguessguessguessgu" } })]) {
        expect(res.status).toBe(401);
        expect(res.headers.get("x-credits-remaining")).toBeNull();
        expect(res.headers.get("x-credits-charged")).toBeNull();
      }
    } finally {
      await h.close();
    }
  });

  it("x-credits-remaining and /v1/usage's credits_remaining leave out what the key's requests in flight hold", async () => {
    const h = await startShim();
    try {
      const { key } = await h.createKey({ credits: 100 });
      h.fake.set({ hang: true });
      const ac = new AbortController();
      const running = fetch(`${h.url}/v1/chat/completions`, { method: "POST", signal: ac.signal, headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body: JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "x" }], max_tokens: 1000 }) }).catch(() => undefined);
      await h.fake.until((c) => c.received >= 1, 10_000);
      const res = await fetch(`${h.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
      expect(res.status).toBe(200);
      const remaining = Number(res.headers.get("x-credits-remaining"));
      expect(remaining).toBeLessThan(100);
      // /v1/usage says the same (found by mutation review: it could show the balance alone).
      const usage = (await (await fetch(`${h.url}/v1/usage`, { headers: { authorization: `Bearer ${key}` } })).json()) as { credits_remaining: number };
      expect(usage.credits_remaining).toBe(remaining);
      ac.abort();
      await running;
    } finally {
      h.fake.reset();
      await h.close();
    }
  });

  it("a key is refused from the instant it expires", async () => {
    const clock = manualClock(Date.UTC(2026, 0, 15, 12, 0, 0));
    const h = await startShim({ clock });
    try {
      const { key } = await h.createKey({ credits: 10, expires_at: "2026-01-15T12:01:00Z" });
      const get = () => fetch(`${h.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
      clock.advance(59_999);
      expect((await get()).status).toBe(200);
      clock.advance(1);
      expect((await get()).status).toBe(401);
    } finally {
      await h.close();
    }
  });

  it("a bucket admits exactly its capacity, the last one included", () => {
    const b = new TokenBucket(3, 0);
    expect([b.take(1, 0).ok, b.take(1, 0).ok, b.take(1, 0).ok, b.take(1, 0).ok]).toEqual([true, true, true, false]);
  });

  it("remaining floors, reset ceils, sub-second durations ceil", () => {
    const b = new TokenBucket(60, 0); // 1 per second
    b.take(2, 0);
    // 58 left; 600 ms later 58.6: still 58 whole requests
    const h = rateLimitHeaders({ requests: b, tokens: null }, 600, 1_000_000, false);
    expect(h["X-RateLimit-Remaining"]).toBe("58");
    expect(h["x-ratelimit-remaining-requests"]).toBe("58");
    // full again in 1.4 s: reset = ceil((1_000_000 + 1400) / 1000)
    expect(h["X-RateLimit-Reset"]).toBe("1002");
    expect(h["x-ratelimit-reset-requests"]).toBe("2s");
    expect(durationString(250.2)).toBe("251ms");
    expect(durationString(90_000)).toBe("1m30s");
  });

  it("the Bearer scheme is case-insensitive and the token trimmed", () => {
    expect(bearerToken("bearer sk-x123")).toBe("sk-x123");
    expect(bearerToken("BEARER sk-x123")).toBe("sk-x123");
    expect(bearerToken("Bearer  sk-x123 ")).toBe("sk-x123");
    expect(bearerToken("Basic sk-x123")).toBeUndefined();
  });
});

describe("admin paths", () => {
  it("/admin itself and /admin?x ask for the admin token, not an API key", async () => {
    const h = await startShim();
    try {
      const { key } = await h.createKey({ credits: 10 });
      for (const path of ["/admin", "/admin?x=1"]) {
        const res = await fetch(`${h.url}${path}`, { headers: { authorization: `Bearer ${key}` } });
        expect(res.status, path).toBe(401);
        expect(((await res.json()) as { error: { code: string } }).error.code, path).toBe("invalid_admin_token");
      }
    } finally {
      await h.close();
    }
  });
});

describe("a tokens budget spent to its end", () => {
  it("a tokens budget spent to exactly 0 admits nothing more", () => {
    const b = new TokenBucket(50, 0);
    expect(b.takeIfPositive(50, 0).ok).toBe(true);
    const r = b.takeIfPositive(1, 0);
    expect(r.ok).toBe(false);
    expect(b.msUntilPositive(0)).toBe(1200); // one token at 50/min
  });

  it("a 200 from an inference route that spent the tokens budget says X-RateLimit-Remaining 0", async () => {
    const h = await startShim({ file: { tiers: { t: { rpm: 100, tpm: 5 } }, models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }] } });
    try {
      const { key } = await h.createKey({ tier: "t", credits: 1000 });
      const chat = await h.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 4 });
      expect(chat.status).toBe(200);
      await chat.text();
      expect(chat.headers.get("x-ratelimit-remaining-requests")).toBe("99");
      expect(chat.headers.get("x-ratelimit-remaining")).toBe("0");
    } finally {
      await h.close();
    }
  });
});

describe("the admin-token throttle, and a stream's credit figures", () => {
  it("an address out of admin-token budget is refused until the bucket holds a whole request", async () => {
    const { RateLimiter } = await import("../../api-shim/src/limits/rate-limit.ts");
    const clock = manualClock();
    const limiter = new RateLimiter(clock, 60); // one request a second
    for (let i = 0; i < 60; i++) expect(limiter.takeIp("198.51.100.7", "admin").ok).toBe(true);
    clock.advance(500);
    // Half a request back: refused, and told the whole second Retry-After says (the room back in
    // 500 ms is held for it until then, rate-limit-turns.test.ts).
    expect(limiter.takeIp("198.51.100.7", "admin")).toMatchObject({ ok: false, retryMs: 1000 });
    clock.advance(1000);
    expect(limiter.takeIp("198.51.100.7", "admin").ok).toBe(true);
  });

  it("a neighbour's wrong tokens from the operator's address (a venue's NAT) do not lock the operator's right one out", async () => {
    // unauthenticatedRpm 60; no refill, so a loaded run's 60 requests taking over a second cannot earn a 61st.
    const h = await startShim({ clock: refillessClock() });
    try {
      const { key } = await h.createKey({ tier: "free", credits: 10 });
      // A tenant's own (valid) API key sent to /admin is a failed admin token: 60 of them spend the address's budget.
      const asTenant = () => fetch(`${h.url}/admin/keys`, { headers: { authorization: `Bearer ${key}` } });
      for (let i = 0; i < 60; i++) expect((await asTenant()).status).toBe(401);
      const refused = await asTenant();
      expect(refused.status).toBe(429);
      expect(refused.headers.get("retry-after")).toMatch(/^\d+$/);
      expect((await h.admin("/admin/keys")).status).toBe(200);
      expect((await asTenant()).status).toBe(429);
    } finally {
      await h.close();
    }
  });

  it("a stream's x-credits-remaining counts its own hold", async () => {
    const h = await startShim();
    try {
      const { key } = await h.createKey({ credits: 1000 });
      const res = await h.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 4, stream: true });
      expect(res.status).toBe(200);
      const reserved = Number(res.headers.get("x-credits-reserved"));
      expect(reserved).toBeGreaterThan(0);
      expect(Number(res.headers.get("x-credits-remaining"))).toBeCloseTo(1000 - reserved, 6);
      await res.text();
    } finally {
      await h.close();
    }
  });
});
