import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startShim, type Harness } from "../support/shim-harness.ts";

/**
 * GET /v1/usage tells a key's holder when the key stops working, as LiteLLM's /key/info tells its
 * `expires`: an expired key answers 401 exactly like a revoked or unknown one, so without it a
 * holder (a workshop's participant, a job with a key that runs out at the month's end) learns of
 * the expiry only from that 401.
 */
describe("GET /v1/usage: the calling key's expiry", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startShim();
  });
  afterAll(() => h.close());

  type Usage = { object: string; credits_remaining: number; key: { id: string; expires_at: string | null } };
  const usageOf = (key: string) => new OpenAI({ apiKey: key, baseURL: `${h.url}/v1`, maxRetries: 0 }).get<Usage>("/usage");

  it("names the key by its id and says its expiry (null without one), as the admin API gives it, and follows a change", async () => {
    const dated = await h.createKey({ credits: 10, expires_at: "2099-03-01" });
    const usage = await usageOf(dated.key);
    expect(usage).toMatchObject({ object: "usage", credits_remaining: 10, key: { id: dated.id, expires_at: "2099-03-01T00:00:00.000Z" } });

    const open = await h.createKey({ credits: 10 });
    expect((await usageOf(open.key)).key).toEqual({ id: open.id, expires_at: null });

    // The operator moves the expiry: the holder sees the new one at once.
    const moved = await h.admin(`/admin/keys/${open.id}`, { method: "PATCH", body: JSON.stringify({ expires_at: "2099-12-31T18:30:00Z" }) });
    expect(moved.status).toBe(200);
    expect((await usageOf(open.key)).key.expires_at).toBe("2099-12-31T18:30:00.000Z");
  });
});
