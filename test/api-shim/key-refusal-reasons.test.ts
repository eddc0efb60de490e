import OpenAI, { AuthenticationError, RateLimitError } from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { manualClock } from "../support/clocks.ts";
import { startShim, type Harness, type RequestLog } from "../support/shim-harness.ts";
import { slowBody } from "../support/slow-body.ts";

/**
 * A tenant's "my key stopped working at 14:02": the client is told only 401 invalid_api_key,
 * whatever the reason (an unknown key answers the same), so the operator's log line of that
 * request says which key it named and why it was refused. Before, the line had `keyId: null` and
 * no reason: revoked, expired, rotated and mistyped keys looked alike to the support desk.
 */
describe("a refused API key's log line says which key and why; the client's answer does not", () => {
  const clock = manualClock(Date.now());
  let h: Harness;
  beforeAll(async () => {
    h = await startShim({ clock, file: { unauthenticatedRpm: 8, models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }] } });
  });
  afterAll(() => h.close());

  const chat = { model: "qwen2.5-7b", messages: [{ role: "user" as const, content: "hi" }], max_tokens: 2 };

  /** The SDK's error and the log line of the request it sent (found by its x-request-id). */
  async function refusedWith(client: OpenAI): Promise<{ error: AuthenticationError | RateLimitError; line: RequestLog }> {
    const error = await client.chat.completions.create(chat).catch((e: unknown) => e);
    expect(error instanceof AuthenticationError || error instanceof RateLimitError, String(error)).toBe(true);
    const e = error as AuthenticationError | RateLimitError;
    const line = await h.waitForRequestLog((l) => l.reqId === e.requestID);
    return { error: e, line };
  }

  it("revoked, expired, rotated (the old secret), unknown, not a key: the same 401 body, five reasons in the log", async () => {
    const revoked = await h.createKey({ credits: 10 });
    expect((await h.admin(`/admin/keys/${revoked.id}`, { method: "DELETE" })).status).toBe(200);
    const expiring = await h.createKey({ credits: 10, expires_at: new Date(clock.now() + 60_000).toISOString() });
    const rotated = await h.createKey({ credits: 10 });
    const fresh = (await (await h.admin(`/admin/keys/${rotated.id}/rotate`, { method: "POST" })).json()) as { key: string };
    h.secrets.add(fresh.key);
    // Before its expiry the key works, and its line has no refusal.
    const ok = await h.client(expiring.key).chat.completions.create(chat).withResponse();
    const okLine = await h.waitForRequestLog((l) => l.reqId === ok.response.headers.get("x-request-id"));
    expect(okLine).toMatchObject({ status: 200, keyId: expiring.id });
    expect(okLine).not.toHaveProperty("keyRefused");
    clock.advance(61_000);

    const unknownId = "Zz9Zz9Zz9Zz9";
    const cases: [string, string, string | null][] = [
      [revoked.key, "revoked", revoked.id],
      [expiring.key, "expired", expiring.id],
      [rotated.key, "wrong_secret", rotated.id],
      [`sk-gs-${unknownId}_${"a".repeat(32)}`, "unknown_key", unknownId],
      ["sk-proj-not-one-of-ours", "not_a_key", null],
    ];
    const bodies = new Set<string>();
    for (const [key, reason, keyId] of cases) {
      const { error, line } = await refusedWith(new OpenAI({ baseURL: `${h.url}/v1`, apiKey: key, maxRetries: 0 }));
      expect(error.status, reason).toBe(401);
      bodies.add(JSON.stringify(error.error));
      expect(line, reason).toMatchObject({ status: 401, error: "invalid_api_key", keyId, keyRefused: reason });
    }
    // The client learns nothing of which it was: one body for all five.
    expect(bodies.size).toBe(1);
    // No key at all.
    const bare = await fetch(`${h.url}/v1/models`);
    expect(bare.status).toBe(401);
    expect(await h.waitForRequestLog((l) => l.reqId === bare.headers.get("x-request-id"))).toMatchObject({ keyId: null, keyRefused: "no_key" });

    // Once the address's budget for requests without a valid key is spent (8 a minute: six
    // spent above, two more here), the 429 that follows is logged with the reason too, so the
    // desk sees a dead key behind a tenant's "429s".
    for (let i = 0; i < 2; i++) expect((await refusedWith(new OpenAI({ baseURL: `${h.url}/v1`, apiKey: revoked.key, maxRetries: 0 }))).error.status).toBe(401);
    const { error, line } = await refusedWith(new OpenAI({ baseURL: `${h.url}/v1`, apiKey: revoked.key, maxRetries: 0 }));
    expect(error.status).toBe(429);
    expect(line).toMatchObject({ status: 429, keyId: revoked.id, keyRefused: "revoked" });
    // A valid key from the same address is let in, its line without a refusal.
    const served = await h.client(fresh.key).chat.completions.create(chat).withResponse();
    const servedLine = await h.waitForRequestLog((l) => l.reqId === served.response.headers.get("x-request-id"));
    expect(servedLine).toMatchObject({ status: 200, keyId: rotated.id });
    expect(servedLine).not.toHaveProperty("keyRefused");
  });
});

/**
 * A key that dies after it authenticated, while its body arrives (refused at its credit hold,
 * inference.ts deadKey): its line says expired when its expiry passed, else revoked_or_rotated.
 */
describe("a key refused at its credit hold: the line says expired, or revoked or rotated", () => {
  const clock = manualClock(Date.now());
  let h: Harness;
  beforeAll(async () => {
    h = await startShim({ clock, file: { models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }] } });
  });
  afterAll(() => h.close());

  it("expired while its body arrived: expired; revoked while its body arrived: revoked_or_rotated", async () => {
    const expiring = await h.createKey({ credits: 10, expires_at: new Date(clock.now() + 60_000).toISOString() });
    expect(await slowBody(h, expiring.key, async () => clock.advance(61_000))).toBe(401);
    expect(await h.waitForRequestLog((l) => l.keyId === expiring.id && l.status === 401)).toMatchObject({ keyRefused: "expired", error: "invalid_api_key" });
    const revoked = await h.createKey({ credits: 10 });
    expect(await slowBody(h, revoked.key, async () => void expect((await h.admin(`/admin/keys/${revoked.id}`, { method: "DELETE" })).status).toBe(200))).toBe(401);
    expect(await h.waitForRequestLog((l) => l.keyId === revoked.id && l.status === 401)).toMatchObject({ keyRefused: "revoked_or_rotated" });
  });
});

/**
 * Revoked and expired are said only of a key's right secret (auth.ts keyRefusal): a wrong secret
 * for a dead key's id is logged wrong_secret, as for a live key's, so the log says no more of a
 * key than its secret proves (and a "my key stopped working" with a mistyped secret reads as that).
 */
describe("a wrong secret for a revoked or expired key's id: logged wrong_secret, not why the key is dead", () => {
  const clock = manualClock(Date.now());
  let h: Harness;
  beforeAll(async () => {
    h = await startShim({ clock, file: { models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }] } });
  });
  afterAll(() => h.close());

  it("revoked, expired", async () => {
    const revoked = await h.createKey({ credits: 10 });
    expect((await h.admin(`/admin/keys/${revoked.id}`, { method: "DELETE" })).status).toBe(200);
    const expired = await h.createKey({ credits: 10, expires_at: new Date(clock.now() + 60_000).toISOString() });
    clock.advance(61_000);
    for (const [key, dead] of [[revoked, "revoked"], [expired, "expired"]] as const) {
      const wrong = `sk-gs-${key.id}_${"a".repeat(32)}`;
      expect(wrong).not.toBe(key.key);
      for (const [secret, reason] of [[wrong, "wrong_secret"], [key.key, dead]] as const) {
        const res = await fetch(`${h.url}/v1/models`, { headers: { authorization: `Bearer ${secret}` } });
        expect(res.status).toBe(401);
        expect(await h.waitForRequestLog((l) => l.reqId === res.headers.get("x-request-id")), `${dead} key, ${reason}`).toMatchObject({ status: 401, keyId: key.id, keyRefused: reason });
      }
    }
  });
});
