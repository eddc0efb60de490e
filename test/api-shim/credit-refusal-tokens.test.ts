import { afterEach, describe, expect, it, vi } from "vitest";
import { manualClock } from "../support/clocks.ts";
import { startShim } from "../support/shim-harness.ts";

afterEach(() => vi.restoreAllMocks());

/**
 * Found by a mutation review of the inference route: a request refused at its credit
 * hold (402) gives its tokens/min estimate back (routes/inference.ts, the `finally` after the
 * reserve). Without that, each 402 for a large max_tokens spent the key's minute, and the request
 * sent once the key was topped up was refused 429 for tokens it never used.
 */
describe("a request refused for credits", () => {
  it("costs its key no tokens/min: after two 402s and a top-up, the next request is served", async () => {
    const clock = manualClock(Date.now()); // no refill meanwhile
    const h = await startShim({ clock, file: { tiers: { t: { rpm: 100, tpm: 1000 } }, models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }] } });
    try {
      const { id, key } = await h.createKey({ tier: "t", credits: 0 });
      const ask = (max_tokens: number) => h.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens });
      for (let i = 0; i < 2; i++) {
        const refused = await ask(900);
        expect(refused.status).toBe(402);
        await refused.text();
      }
      expect((await h.admin(`/admin/keys/${id}/credits`, { method: "POST", body: JSON.stringify({ amount: 10 }) })).status).toBe(200);
      const served = await ask(4);
      expect(served.status).toBe(200);
      await served.text();
    } finally {
      await h.close();
    }
  });
});
