import { type APIError, RateLimitError } from "openai";
import { afterEach, describe, expect, it, vi } from "vitest";
import { manualClock } from "../support/clocks.ts";
import { hashKey } from "../../api-shim/src/auth/keys.ts";
import { type Harness, startShim } from "../support/shim-harness.ts";

afterEach(() => vi.restoreAllMocks());

/**
 * A shim with a tier "t" of `limits`, its clock manual, serving qwen2.5-7b with `maxModelLen`,
 * and a key on that tier with 1,000 credits; closed after `run`.
 */
async function onTier(limits: { rpm: number; tpm: number }, maxModelLen: number, run: (s: { h: Harness; key: string; clock: ReturnType<typeof manualClock> }) => Promise<void>): Promise<void> {
  const clock = manualClock(Date.now());
  const h = await startShim({ clock, file: { tiers: { t: limits }, models: [{ name: "qwen2.5-7b", maxModelLen }] } });
  try {
    const { key } = await h.createKey({ tier: "t", credits: 1000 });
    await run({ h, key, clock });
  } finally {
    await h.close();
  }
}
const bad = (url: string, headers: Record<string, string> = {}) => fetch(`${url}/v1/models`, { headers: { authorization: "Bearer sk-gs-guessguessgu_guessguessguessguessguessguessgu", ...headers } });

describe("rate limits through the shim", () => {
  it("a spent tokens budget holds inference back, and seed 004's headers say so there only: models and usage say the requests left", async () => {
    await onTier({ rpm: 100, tpm: 5 }, 8192, async ({ h, key }) => {
      const chat = await h.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 4 });
      expect(chat.status).toBe(200);
      await chat.text();
      const models = await fetch(`${h.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
      expect(models.status).toBe(200);
      expect(models.headers.get("x-ratelimit-remaining-requests")).toBe("98");
      expect(models.headers.get("x-ratelimit-remaining")).toBe("98");
      const again = await h.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 4 });
      expect(again.status).toBe(429);
      expect(again.headers.get("x-ratelimit-remaining")).toBe("0");
    });
  });
  it("tokens per minute: admitted while positive, corrected to the real usage, then 429", async () => {
    const h = await startShim({ file: { tiers: { small: { rpm: 1000, tpm: 50 } }, models: [{ name: "qwen2.5-7b" }] } });
    try {
      const { key } = await h.createKey({ tier: "small" });
      const c = h.client(key);
      h.fake.set({ defaultTokens: 100 });
      const { response } = await c.chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 60 }).withResponse();
      expect(response.headers.get("x-ratelimit-limit-tokens")).toBe("50");
      expect(response.headers.get("x-ratelimit-remaining-tokens")).toBe("0"); // 65 tokens used of 50
      const e = await c.chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 1 }).catch((x) => x);
      expect(e).toBeInstanceOf(RateLimitError);
      expect(Number(e.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
      expect(e.headers.get("x-ratelimit-remaining-tokens")).toBe("0");
      expect(h.fake.counters.received).toBe(1);
    } finally {
      await h.close();
    }
  });

  it("tokens per minute count max_tokens at admission: a burst of large requests stops near the minute's budget, and a refusal says so in both header families", async () => {
    const h = await startShim({ file: { tiers: { tiny: { rpm: 10, tpm: 1000 } }, models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }] } });
    try {
      const { key } = await h.createKey({ tier: "tiny", credits: 100 });
      h.fake.set({ defaultTokens: 400, headerDelayMs: 300 });
      const ask = () => h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 400 }, { maxRetries: 0 });
      const results = await Promise.allSettled(Array.from({ length: 10 }, ask));
      const admitted = results.filter((r) => r.status === "fulfilled");
      // Each holds ~402 of the 1,000 tokens: three are admitted (the third overdraws), not all ten.
      expect(admitted).toHaveLength(3);
      const refused = results.find((r) => r.status === "rejected")!.reason as RateLimitError;
      expect(refused).toBeInstanceOf(RateLimitError);
      const retryAfter = Number(refused.headers.get("retry-after"));
      expect(retryAfter).toBeGreaterThanOrEqual(1);
      // Seed 004's family has no tokens headers: it says nothing remains, until the tokens budget admits again.
      expect(refused.headers.get("x-ratelimit-remaining")).toBe("0");
      expect(Number(refused.headers.get("x-ratelimit-reset"))).toBeGreaterThanOrEqual(Math.floor(Date.now() / 1000) + retryAfter - 1);
      expect(h.fake.counters.received).toBe(3);
      // The seven refusals did not spend the requests/min budget: 10 − 3 admitted.
      h.fake.set({ defaultTokens: 1, headerDelayMs: 0 });
      const usage = await h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 1 }, { maxRetries: 0 }).withResponse().catch((e: RateLimitError) => e);
      expect((usage as RateLimitError).headers.get("x-ratelimit-remaining-requests")).toBe("7");
    } finally {
      await h.close();
    }
  });

  it("a requests/min 429 on an inference route says to wait until the tokens/min budget admits too: a retry after its Retry-After gets in", () => onTier({ rpm: 60, tpm: 600 }, 8192, async ({ h, key, clock }) => {
      const ask = (max_tokens: number) => h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens }, { maxRetries: 0 });
      // Both budgets spent: the answer's usage overdraws the tokens/min budget (~3 s of refill),
      // and 59 model lists take the rest of the requests/min (1 s until the next).
      h.fake.set({ defaultTokens: 630 });
      await ask(630);
      for (let i = 0; i < 59; i++) await h.client(key).models.list();
      h.fake.set({ defaultTokens: 1 });
      const first = (await ask(1).catch((x: unknown) => x)) as RateLimitError;
      expect(first).toBeInstanceOf(RateLimitError);
      const retryAfter = Number(first.headers.get("retry-after"));
      expect((first.error as { retry_after: number }).retry_after).toBe(retryAfter); // the body says the same
      clock.advance(retryAfter * 1000);
      const second = await ask(1).catch((x: unknown) => x);
      expect(second).not.toBeInstanceOf(Error);
  }));

  it("tokens per minute: a request whose max_tokens is over the minute's budget takes all of it at admission, so the key waits for its real debt", () => onTier({ rpm: 1000, tpm: 100 }, 8192, async ({ h, key, clock }) => {
      h.fake.set({ defaultTokens: 1000, headerDelayMs: 1500 });
      const ask = () => h.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 1000 });
      const received = h.fake.counters.received;
      const answers: (Response | Promise<Response>)[] = [ask()];
      await h.fake.until((c) => c.received > received); // admitted: it took the minute's budget
      clock.advance(600);
      answers.push(await ask()); // refused at once
      clock.advance(60_000);
      answers.push(ask());
      const done = await Promise.all(answers);
      const used = await Promise.all(done.map(async (r) => (r.status === 200 ? ((await r.json()) as { usage: { total_tokens: number } }).usage.total_tokens : 0)));
      // Over ~61 s of the key's clock: at most two minutes' budget plus one request's overdraft.
      expect(used.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(2 * 100 + 1000);
      expect(done.map((r) => r.status)).toEqual([200, 429, 429]);
      // While the first runs, its debt is an estimate that mostly comes back when it ends: retry then.
      expect(done[1]!.headers.get("retry-after")).toBe("1");
      // Once it has ended, its debt is real (~900 tokens at 100/min): the refusal says ~8 minutes.
      const after = await ask();
      expect(after.status).toBe(429);
      expect(Number(after.headers.get("retry-after"))).toBeGreaterThan(400);
  }));

  it("tokens per minute: a request with no max_tokens and n 16 leaves a debt of estimates; the next one is told to retry in a second, not in hours", () => onTier({ rpm: 1000, tpm: 10_000 }, 131072, async ({ h, key }) => {
      h.fake.set({ defaultTokens: 10, headerDelayMs: 1000 });
      const chat = (extra: Record<string, unknown>) => h.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], ...extra });
      const received = h.fake.counters.received;
      const big = chat({ n: 16 });
      await h.fake.until((c) => c.received > received); // admitted (its estimate spent) and at the upstream
      const second = await chat({ max_tokens: 5 });
      expect(second.status).toBe(429);
      expect(second.headers.get("retry-after")).toBe("1");
      expect((await big).status).toBe(200);
      expect((await chat({ max_tokens: 5 })).status).toBe(200); // the estimate came back: no wait at all
  }));

  it("tokens per minute count every choice a request asks for: n 4 × max_tokens 300 spends 1,200 of a 1,000 budget, so the next request waits", () => onTier({ rpm: 1000, tpm: 1000 }, 8192, async ({ h, key }) => {
      h.fake.set({ headerDelayMs: 1000 });
      const chat = (extra: Record<string, unknown>) => h.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], ...extra });
      const received = h.fake.counters.received;
      const four = chat({ n: 4, max_tokens: 300 });
      await h.fake.until((c) => c.received > received); // admitted (its estimate spent) and at the upstream
      // Counted as one choice (300), the budget would still hold 700 and this would run.
      expect((await chat({ max_tokens: 5 })).status).toBe(429);
      expect((await four).status).toBe(200);
  }));

  it("a key whose tier changes keeps what it has spent (clamped to the new budget): a downgrade gives no fresh minute", async () => {
    const h = await startShim({ file: { tiers: { big: { rpm: 3, tpm: 100000 }, small: { rpm: 2, tpm: 100000 } } } });
    try {
      const { id, key } = await h.createKey({ tier: "big", credits: 100 });
      const models = () => fetch(`${h.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
      for (let i = 0; i < 3; i++) expect((await models()).status).toBe(200);
      expect((await models()).status).toBe(429);
      // What another replica's start with the new configuration does to the key.
      await h.store.ensureBootstrapKey({ id, name: "app", hash: hashKey(key), tier: "small", models: null, expiresAt: null, credits: 0, at: Date.now() });
      const r = await models();
      expect(r.status).toBe(429);
      expect(r.headers.get("x-ratelimit-limit-requests")).toBe("2");

      // A key that spent less than the new limit keeps that spent too: 1 of 3, then 1 of 2 (not a fresh 2).
      const other = await h.createKey({ tier: "big", credits: 100 });
      const get = () => fetch(`${h.url}/v1/models`, { headers: { authorization: `Bearer ${other.key}` } });
      expect((await get()).status).toBe(200);
      await h.store.ensureBootstrapKey({ id: other.id, name: "other", hash: hashKey(other.key), tier: "small", models: null, expiresAt: null, credits: 0, at: Date.now() });
      const after = await get();
      expect([after.status, after.headers.get("x-ratelimit-remaining-requests")]).toEqual([200, "0"]);
    } finally {
      await h.close();
    }
  });

  it("unauthenticated traffic is limited per client IP (key guessing is throttled); probes are exempt", async () => {
    const h = await startShim({ file: { unauthenticatedRpm: 3 } });
    try {
      const { key } = await h.createKey();
      for (let i = 0; i < 3; i++) expect((await bad(h.url)).status).toBe(401);
      const limited = await bad(h.url);
      expect(limited.status).toBe(429);
      expect(limited.headers.get("retry-after")).toMatch(/^\d+$/);
      // Both header families, for the address's requests/min (there is no tokens budget without a key).
      expect(limited.headers.get("x-ratelimit-limit")).toBe("3");
      expect(limited.headers.get("x-ratelimit-remaining")).toBe("0");
      expect(Number(limited.headers.get("x-ratelimit-reset"))).toBeGreaterThan(Date.now() / 1000);
      expect(limited.headers.get("x-ratelimit-limit-requests")).toBe("3");
      expect(limited.headers.get("x-ratelimit-remaining-requests")).toBe("0");
      expect(limited.headers.get("x-ratelimit-reset-requests")).toMatch(/^\d+(ms|s|m\d+s)$/);
      // Failed admin tokens have a budget of their own: failed keys from the operator's address
      // (a script polling with a revoked key) do not lock the operator out of the admin API.
      const admin = (token: string) => fetch(`${h.url}/admin/keys`, { headers: { authorization: `Bearer ${token}` } });
      expect((await admin(h.adminToken)).status).toBe(200);
      for (let i = 0; i < 3; i++) expect((await admin("wrong")).status).toBe(401);
      const tooMany = await admin("wrong");
      expect(tooMany.status).toBe(429);
      // Says it counts wrong admin tokens: an operator with a stale token was told only to wait.
      expect(((await tooMany.json()) as { error: { message: string } }).error.message).toMatch(/^Rate limit exceeded\. Try again in \d+ seconds?\. Too many wrong admin tokens from this address \(3 a minute\): check the admin token you send \(GPU_SANDBOX_ADMIN_TOKEN, or the stack's adminToken output\); the right one is still let in\.$/);
      // An API key's failures are not called admin tokens, and say that they count requests
      // without a valid key: a client whose key was revoked got 401s, then a bare "Rate limit
      // exceeded" its SDK retried, and reported rate limits, not a dead key.
      expect(((await limited.json()) as { error: { message: string } }).error.message).toMatch(/^Rate limit exceeded\. Try again in \d+ seconds?\. Too many requests without a valid API key from this address \(3 a minute\): check the API key you send \(a revoked or expired key, or the old secret of a rotated one, is no longer valid\); a valid key is still let in\.$/);
      // The right token still gets in once that budget is spent (the operator behind a venue's
      // NAT is not locked out by a neighbour's guesses), and does not refill it for the wrong ones.
      expect((await admin(h.adminToken)).status).toBe(200);
      const wrong = await admin("wrong");
      expect(wrong.status).toBe(429);
      expect(wrong.headers.get("retry-after")).toMatch(/^\d+$/);
      expect((await fetch(`${h.url}/health`)).status).toBe(200);
      expect((await fetch(`${h.url}/metrics`)).status).toBe(200);
      // Spelled with a trailing slash a probe route is the same route under the same rule (nginx
      // keeps both spellings of /metrics to adminCidrs).
      for (const path of ["/metrics/", "/health/", "/ready/"]) expect((await fetch(`${h.url}${path}`)).status, path).toBe(200);
      expect(await (await fetch(`${h.url}/metrics/`)).text()).toMatch(/^# HELP/m);
      // A valid key is not affected by its address's unauthenticated budget.
      expect((await h.client(key).models.list()).data.length).toBeGreaterThan(0);
      // X-Forwarded-For is ignored when the peer is not a trusted proxy.
      expect((await bad(h.url, { "x-forwarded-for": "203.0.113.9" })).status).toBe(429);
    } finally {
      await h.close();
    }
  });

  it("X-Forwarded-For is believed from SHIM_TRUST_PROXY: each client address (an IPv6 client's /64) has its own bucket", async () => {
    const h = await startShim({ file: { unauthenticatedRpm: 2 }, env: { SHIM_TRUST_PROXY: "127.0.0.1/32" } });
    try {
      for (const ip of ["203.0.113.1", "203.0.113.2"]) {
        expect((await bad(h.url, { "x-forwarded-for": ip })).status).toBe(401);
        expect((await bad(h.url, { "x-forwarded-for": ip })).status).toBe(401);
        expect((await bad(h.url, { "x-forwarded-for": ip })).status).toBe(429);
      }
      // An IPv6 client counts by its /64: rotating addresses inside it does not buy more requests.
      expect((await bad(h.url, { "x-forwarded-for": "2001:db8:7:7::1" })).status).toBe(401);
      expect((await bad(h.url, { "x-forwarded-for": "2001:db8:7:7::2" })).status).toBe(401);
      expect((await bad(h.url, { "x-forwarded-for": "2001:db8:7:7:abcd::3" })).status).toBe(429);
      expect((await bad(h.url, { "x-forwarded-for": "2001:db8:7:8::1" })).status).toBe(401);
    } finally {
      await h.close();
    }
  });

  it("a tier's concurrency caps a key's requests in flight (streams until they end); other keys are not affected", async () => {
    const h = await startShim({ file: { tiers: { pair: { rpm: 10, tpm: 1_000_000, concurrency: 2 } }, models: [{ name: "qwen2.5-7b" }] } });
    try {
      const { key } = await h.createKey({ tier: "pair", credits: 100 });
      const other = await h.createKey({ tier: "pair", credits: 100 });
      h.fake.set({ tokenDelayMs: 20, defaultTokens: 200 });
      const open = () => h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "go" }], max_tokens: 200, stream: true });
      const { data: first, response: firstResponse } = await open().withResponse();
      const { data: second, response: secondResponse } = await open().withResponse();
      const e = await h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 1 }).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(RateLimitError);
      expect((e as RateLimitError).error).toMatchObject({ code: "rate_limit_exceeded", message: expect.stringMatching(/allows 2 at once/) });
      expect((e as RateLimitError).headers!.get("retry-after")).toBe("1");
      expect((e as RateLimitError).headers!.get("x-ratelimit-limit-requests")).toBe("10");
      expect((e as RateLimitError).headers!.get("x-ratelimit-limit")).toBe("10");
      expect((e as RateLimitError).headers!.get("x-ratelimit-limit-concurrency")).toBe("2");
      // A refusal spends nothing: the two admitted streams took 2 of the 10 requests/min. (10/min
      // gives one back every 6 s, so a slow machine cannot refill one between the requests.)
      expect((e as RateLimitError).headers!.get("x-ratelimit-remaining")).toBe("8");
      // The log says which limit refused it.
      const refusal = await h.waitForRequestLog((l) => l.reqId === (e as RateLimitError).headers!.get("x-request-id"));
      expect(refusal).toMatchObject({ status: 429, error: "too_many_in_flight" });
      // Another key of the same tier has its own two places.
      const otherStream = await h.client(other.key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "go" }], max_tokens: 2, stream: true });
      for await (const _ of otherStream);
      // Once a stream ends, its place is free again.
      first.controller.abort();
      await h.waitForRequestLog((l) => l.reqId === firstResponse.headers.get("x-request-id")); // written as it ends
      h.fake.set({ tokenDelayMs: 0 });
      const answer = await h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 1 });
      expect(answer.choices[0]!.message.content).toBe("t1");
      // The other stream is read to its end (an abort here left undici a spare connection that
      // kept the in-process server's close() waiting).
      for await (const _ of second);
      expect((await h.waitForRequestLog((l) => l.reqId === secondResponse.headers.get("x-request-id"))).status).toBe(200);
    } finally {
      await h.close();
    }
  });

  it("a tier's cap in flight is told on every answer (x-ratelimit-limit-concurrency), so a batch job sizes its pool from a free request before it starts; a tier without a cap says nothing", async () => {
    const h = await startShim({ file: { tiers: { pair: { rpm: 100, tpm: 1_000_000, concurrency: 2 }, open: { rpm: 100, tpm: 1_000_000 } }, models: [{ name: "qwen2.5-7b" }] } });
    try {
      const { key } = await h.createKey({ tier: "pair", credits: 100 });
      const { key: uncapped } = await h.createKey({ tier: "open", credits: 100 });
      const cap = (headers: Headers) => headers.get("x-ratelimit-limit-concurrency");
      // Before the job: the free model list.
      expect(cap((await h.client(key).models.list().withResponse()).response.headers)).toBe("2");
      // On an answer, and on a refusal.
      const ask = { model: "qwen2.5-7b", messages: [{ role: "user" as const, content: "hi" }], max_tokens: 1 };
      expect(cap((await h.client(key).chat.completions.create(ask).withResponse()).response.headers)).toBe("2");
      const refused = (await h.client(key).chat.completions.create({ ...ask, model: "nope" }).catch((e: APIError) => e)) as APIError;
      expect([refused.status, cap(refused.headers!)]).toEqual([404, "2"]);
      // No cap, no header (as an unlimited rpm or tpm has none).
      expect(cap((await h.client(uncapped).models.list().withResponse()).response.headers)).toBeNull();
    } finally {
      await h.close();
    }
  });

  it("a key whose tier gains a cap (a bootstrap key re-applied) has its requests already in flight counted", async () => {
    const h = await startShim({ file: { tiers: { open: { rpm: 100, tpm: 1_000_000 }, pair: { rpm: 100, tpm: 1_000_000, concurrency: 2 } }, models: [{ name: "qwen2.5-7b" }] } });
    try {
      const { id, key } = await h.createKey({ tier: "open", credits: 100 });
      h.fake.set({ tokenDelayMs: 20, defaultTokens: 100 });
      const streams = await Promise.all([1, 2, 3].map(() => h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "go" }], max_tokens: 100, stream: true })));
      // What another replica's start with the new configuration does to the key.
      await h.store.ensureBootstrapKey({ id, name: "app", hash: hashKey(key), tier: "pair", models: null, expiresAt: null, credits: 0, at: Date.now() });
      const e = await h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 1 }).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(RateLimitError);
      expect((e as RateLimitError).error).toMatchObject({ message: expect.stringMatching(/allows 2 at once/) });
      for (const s of streams) s.controller.abort();
    } finally {
      await h.close();
    }
  });

  it("every way a capped request can end gives its place back (upstream failure, no credits, tokens/min)", async () => {
    const h = await startShim({ file: { tiers: { one: { rpm: 1000, tpm: 60, concurrency: 1 } }, models: [{ name: "qwen2.5-7b" }] } });
    try {
      const { key } = await h.createKey({ tier: "one", credits: 100 });
      const poor = await h.createKey({ tier: "one", credits: 0 });
      const chat = (k: string, max_tokens = 1) => h.client(k).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens });
      const ok = async (k: string) => expect((await chat(k)).choices[0]!.message.content).toBe("t1");
      h.fake.set({ failStatus: 500 });
      expect(await chat(key).catch((x: unknown) => (x as { status: number }).status)).toBe(502);
      h.fake.reset();
      await ok(key);
      expect(await chat(poor.key).catch((x: unknown) => (x as { status: number }).status)).toBe(402);
      await h.admin(`/admin/keys/${poor.id}/credits`, { method: "POST", body: JSON.stringify({ amount: 10 }) });
      await ok(poor.key);
      // Spend the 60 tokens/min (the answer's usage exceeds it), then a 429 from the tokens bucket.
      h.fake.set({ defaultTokens: 80 });
      await chat(key, 80);
      const limited = await chat(key).catch((x: unknown) => x);
      expect(limited).toBeInstanceOf(RateLimitError);
      expect((limited as RateLimitError).error).toMatchObject({ message: expect.stringMatching(/^Rate limit exceeded/) });
      // Its place was given back: another key of the tier is unaffected, and this key's next
      // refusal is still the tokens bucket's, not "too many in flight".
      await ok(poor.key);
      expect(((await chat(key).catch((x: unknown) => x)) as RateLimitError).error).toMatchObject({ message: expect.stringMatching(/^Rate limit exceeded/) });
    } finally {
      await h.close();
    }
  });

  /**
   * Sends `count` chat requests of ~4 MB (a million short strings: ~0.1 s of JSON.parse each,
   * were they parsed) one after another: their answers, and how many bodies that large were parsed.
   */
  async function sendHeavyBodies(h: Harness, key: string, count: number) {
    const heavy = JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 1, x: new Array(999_000).fill("a") });
    const parse = vi.spyOn(JSON, "parse");
    const answers = [];
    for (let i = 0; i < count; i++) {
      const r = await h.post(key, "/v1/chat/completions", heavy);
      answers.push({ status: r.status, retryAfter: r.headers.get("retry-after"), body: await r.json() });
    }
    const bigParses = parse.mock.calls.filter(([text]) => typeof text === "string" && text.length > 1_000_000).length;
    return { answers, bigParses };
  }

  it("a key whose tokens/min budget is spent cannot make the shim read and parse request bodies beyond its requests/min budget", async () => {
    const clock = manualClock(Date.now());
    const h = await startShim({ clock, file: { models: [{ name: "qwen2.5-7b", maxModelLen: 100_000 }] } });
    try {
      const { key } = await h.createKey({ tier: "free", credits: 1000 }); // 10 requests/min
      h.fake.set({ defaultTokens: 30_000 });
      await (await h.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 30_000 })).text();
      const { answers, bigParses } = await sendHeavyBodies(h, key, 40);
      expect(bigParses).toBe(0);
      // Each is still told why and how long to wait, and none spent the requests/min budget.
      for (const a of answers) expect(a).toMatchObject({ status: 429, retryAfter: expect.stringMatching(/^\d+$/), body: { error: { code: "rate_limit_exceeded" } } });
      expect(Number(answers[0]!.retryAfter)).toBeGreaterThan(60); // 20,000 tokens over at 10,000/min
      // Refused before its body is looked at, as by the requests/min budget: not a 400 for this.
      expect((await h.post(key, "/v1/chat/completions", "{not json")).status).toBe(429);
      const models = await h.client(key).models.list().withResponse();
      expect(models.response.headers.get("x-ratelimit-remaining-requests")).toBe("8");
    } finally {
      await h.close();
    }
  });

  it("a key with all its places in flight taken cannot make the shim read and parse request bodies beyond its requests/min budget", async () => {
    const clock = manualClock(Date.now());
    const h = await startShim({ clock, file: { tiers: { one: { rpm: 10, tpm: 1_000_000, concurrency: 1 } }, models: [{ name: "qwen2.5-7b" }] } });
    try {
      const { key } = await h.createKey({ tier: "one", credits: 1000 });
      h.fake.set({ tokenDelayMs: 20, defaultTokens: 1000 });
      const stream = await h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "go" }], max_tokens: 1000, stream: true });
      // 12, past the 9 requests/min left: each waits FINISHING_GRACE_MS for a place first (unread).
      const { answers, bigParses } = await sendHeavyBodies(h, key, 12);
      expect(bigParses).toBe(0);
      for (const a of answers) expect(a).toMatchObject({ status: 429, retryAfter: "1", body: { error: { code: "rate_limit_exceeded", message: expect.stringMatching(/allows 1 at once/) } } });
      // None spent the requests/min budget: the stream took 1 of the 10.
      expect((await h.client(key).models.list().withResponse()).response.headers.get("x-ratelimit-remaining-requests")).toBe("8");
      stream.controller.abort();
    } finally {
      await h.close();
    }
  });

  it("tokens per minute are checked again once the body is read: requests that all passed the auth hook at once do not all run", async () => {
    const h = await startShim({ file: { tiers: { tiny: { rpm: 1000, tpm: 1000 } }, models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }] } });
    try {
      const { key } = await h.createKey({ tier: "tiny", credits: 1000 });
      // Answers held back until all six are admitted or refused: a settled answer (21 tokens, not
      // the 900 held) would give the budget back and let a later body in on a slow machine.
      h.fake.set({ headerDelayMs: 1500 });
      const { request } = await import("node:http");
      const body = JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 900 });
      const sends: (() => void)[] = [];
      // Headers first (each passes the auth hook while the budget is whole), bodies once all are in.
      const statuses = Array.from({ length: 6 }, () => new Promise<number>((resolve, reject) => {
        const req = request(`${h.url}/v1/chat/completions`, { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json", "content-length": Buffer.byteLength(body) } }, (res) => {
          res.resume();
          res.on("end", () => resolve(res.statusCode!));
        });
        req.on("error", reject);
        req.flushHeaders();
        sends.push(() => req.end(body));
      }));
      await new Promise((r) => setTimeout(r, 500));
      for (const send of sends) send();
      const got = await Promise.all(statuses);
      expect(got.filter((s) => s === 200)).toHaveLength(2);
      expect(got.filter((s) => s === 429)).toHaveLength(4);
    } finally {
      h.fake.reset();
      await h.close();
    }
  });

  it("an unlimited tier sends no rate-limit headers", async () => {
    const h = await startShim();
    try {
      const { key } = await h.createKey({ tier: "enterprise" });
      const { response } = await h.client(key).models.list().withResponse();
      expect([...response.headers.keys()].filter((k) => k.includes("ratelimit"))).toEqual([]);
      expect(response.headers.get("x-credits-remaining")).toBe("100");
    } finally {
      await h.close();
    }
  });
});

/** Pinned by a mutation review: each test fails if the arithmetic it names is dropped. */
describe("a tier's limits, as their refill and estimates keep them", () => {
  it("a key whose tier is upgraded keeps what it spent, so it gets the new tier's room at once, and refills at the new tier's rate: from 1 to 60 requests/min, 59 left, then one second per request", async () => {
    const clock = manualClock(Date.now());
    const h = await startShim({ clock, file: { tiers: { small: { rpm: 1, tpm: null }, big: { rpm: 60, tpm: null } } } });
    try {
      const { id, key } = await h.createKey({ tier: "small", credits: 100 });
      const models = () => fetch(`${h.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
      expect((await models()).status).toBe(200);
      expect((await models()).status).toBe(429);
      // A replica starting with the new config (a bootstrap key's tier changed).
      await h.store.ensureBootstrapKey({ id, name: "app", hash: hashKey(key), tier: "big", models: null, expiresAt: null, credits: 0, at: clock.now() });
      // 1 spent of 1 is 1 spent of 60 (found by review: the bucket kept its level, 0 left of 60).
      const upgraded = await models();
      expect([upgraded.status, upgraded.headers.get("x-ratelimit-limit-requests"), upgraded.headers.get("x-ratelimit-remaining-requests")]).toEqual([200, "60", "58"]);
      for (let i = 0; i < 58; i++) expect((await models()).status).toBe(200);
      const refused = await models();
      expect([refused.status, refused.headers.get("retry-after")]).toEqual([429, "1"]);
      clock.advance(1000);
      expect((await models()).status).toBe(200);
    } finally {
      await h.close();
    }
  });

  it("a long request's unused tokens, given back at settlement, never take the budget past the tier's minute", async () => {
    const clock = manualClock(Date.now());
    const h = await startShim({ clock, file: { tiers: { t: { rpm: 1000, tpm: 1000 } }, models: [{ name: "qwen2.5-7b", maxModelLen: 4096 }] } });
    try {
      const { key } = await h.createKey({ tier: "t", credits: 1000 });
      h.fake.set({ headerDelayMs: 300 });
      const received = h.fake.counters.received;
      const pending = fetch(`${h.url}/v1/chat/completions`, {
        method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body: JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "Hi" }], max_tokens: 900 }),
      });
      await h.fake.until((c) => c.received > received); // admitted: ~910 of the 1,000 taken
      clock.advance(60_000); // the bucket refills to its 1,000 while the request runs
      const res = await pending;
      expect(res.status).toBe(200);
      expect(res.headers.get("x-ratelimit-limit-tokens")).toBe("1000");
      expect(Number(res.headers.get("x-ratelimit-remaining-tokens"))).toBeLessThanOrEqual(1000);
    } finally {
      await h.close();
    }
  });

  it("tokens per minute count the prompt at admission: a burst of long prompts with a small max_tokens stops near the minute's budget", async () => {
    const h = await startShim({ file: { tiers: { tiny: { rpm: 100, tpm: 1000 } }, models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }] } });
    try {
      const { key } = await h.createKey({ tier: "tiny", credits: 100 });
      h.fake.set({ defaultTokens: 1, headerDelayMs: 300 });
      const prompt = "word ".repeat(400); // ~2,000 bytes: ~500 tokens estimated from the body
      const ask = () => h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: prompt }], max_tokens: 1 }, { maxRetries: 0 });
      const results = await Promise.allSettled(Array.from({ length: 10 }, ask));
      // Each takes ~500 of the 1,000 tokens: two or three are admitted, not all ten.
      expect(results.filter((r) => r.status === "fulfilled").length).toBeLessThanOrEqual(3);
      expect(h.fake.counters.received).toBeLessThanOrEqual(3);
    } finally {
      await h.close();
    }
  });

  it("tokens per minute count a prompt its body does not bound (images by URL) as the hold does: a free key's burst stops near its minute's budget", async () => {
    const h = await startShim({ file: { models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }] } });
    try {
      const { key } = await h.createKey({ tier: "free", credits: 1_000_000 }); // 10 requests, 10,000 tokens a minute
      // Six images by URL: ~400 bytes of JSON (~100 tokens by the bytes), 7,200 prompt tokens to
      // the fake (a real vision model counts hundreds to thousands per image).
      const images = Array.from({ length: 6 }, (_, i) => ({ type: "image_url", image_url: { url: `https://example.com/${i}.png` } }));
      const body = { model: "qwen2.5-7b", messages: [{ role: "user", content: [{ type: "text", text: "describe" }, ...images] }], max_tokens: 1 };
      h.fake.set({ headerDelayMs: 300 }); // all ten in flight together, as a client's burst is
      const answers = await Promise.all(Array.from({ length: 10 }, () => h.post(key, "/v1/chat/completions", body)));
      const admitted = answers.filter((r) => r.status === 200);
      // Each takes the model's context (8,192 + 1) as the hold does: the second overdraws, the rest wait.
      expect(admitted).toHaveLength(2);
      expect(answers.filter((r) => r.status === 429)).toHaveLength(8);
      expect(h.fake.counters.received).toBe(2);
      // Given back at settlement: what remains is the minute less the real usage, not the estimates.
      const used = (await Promise.all(admitted.map(async (r) => ((await r.json()) as { usage: { total_tokens: number } }).usage.total_tokens))).reduce((a, b) => a + b, 0);
      expect(used).toBeGreaterThan(10_000);
      const after = await h.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 1 });
      expect(after.status).toBe(429);
      // The debt is the usage over the minute (~4,400 tokens, ~27 s at 10,000 a minute), not the estimates' (~6,400, ~39 s).
      expect(Math.abs(Number(after.headers.get("retry-after")) - ((used - 10_000) * 60) / 10_000)).toBeLessThanOrEqual(2);
      await after.text();
    } finally {
      await h.close();
    }
  });
});

describe("tokens/min: one part the body's bytes do not bound is enough (admission.ts: unboundedParts > 0)", () => {
  it("one image by URL takes the model's context from a free key's minute, not ~bytes/4", async () => {
    const h = await startShim({ file: { models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }] } });
    try {
      const { key } = await h.createKey({ tier: "free", credits: 1_000_000 }); // 10,000 tokens a minute
      const body = { model: "qwen2.5-7b", messages: [{ role: "user", content: [{ type: "text", text: "describe" }, { type: "image_url", image_url: { url: "https://example.com/0.png" } }] }], max_tokens: 1 };
      h.fake.set({ headerDelayMs: 300 });
      const answers = await Promise.all(Array.from({ length: 5 }, () => h.post(key, "/v1/chat/completions", body)));
      for (const a of answers) await a.text();
      // 8,193 each: the first leaves 1,807, the second overdraws, the rest are refused.
      expect(answers.map((a) => a.status).sort()).toEqual([200, 200, 429, 429, 429]);
    } finally {
      await h.close();
    }
  });
});
