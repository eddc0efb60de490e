import { describe, expect, it } from "vitest";
import { startShim } from "../support/shim-harness.ts";
import { answeringUpstream } from "../support/shim-process.ts";

/** From a mutation review of routes/models.ts. */
describe("GET /v1/models: the credits left beside an open hold, and an upstream 504", () => {
  it("credits_remaining and x-credits-remaining leave out what the key's open requests hold, as every other answer's do", async () => {
    const h = await startShim();
    try {
      const { key } = await h.createKey({ credits: 100 });
      h.fake.set({ tokenDelayMs: 200, defaultTokens: 50 });
      // A stream held open: its hold (the request credit and its max_tokens) is taken from what remains.
      const stream = await h.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 10, stream: true });
      expect(stream.status).toBe(200);
      const res = await fetch(`${h.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
      const body = (await res.json()) as { credits_remaining: number };
      expect(body.credits_remaining).toBeLessThan(100);
      expect(res.headers.get("x-credits-remaining")).toBe(String(body.credits_remaining));
      await stream.body?.cancel();
    } finally {
      await h.close();
    }
  });

  it("an upstream 504 for the model list is the client's 504 upstream_timeout, as 408, 429 and 503 keep theirs", async () => {
    const upstream = await answeringUpstream();
    const h = await startShim({ env: { SHIM_UPSTREAM_URL: upstream.url } });
    try {
      const { key } = await h.createKey();
      upstream.answer = { status: 504, body: "" };
      const res = await fetch(`${h.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
      expect(res.status).toBe(504);
    } finally {
      await h.close();
      await upstream.close();
    }
  });
});
