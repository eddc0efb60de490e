import { APIError } from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startShim, type Harness } from "../support/shim-harness.ts";

/**
 * The budget bypass LiteLLM users report: N concurrent requests against a balance that covers
 * k of them. Exactly k are admitted, the rest get 402, the balance ends at 0 and equals the
 * ledger. Repeated so a race has many chances to show.
 */
describe("credits under concurrency", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startShim();
    h.fake.set({ headerDelayMs: 20 }); // admitted requests hold their credits while the rest arrive
  });
  afterAll(() => h.close());

  it("200 concurrent requests against credits for exactly 50 admit exactly 50 (×20)", async () => {
    for (let round = 0; round < 20; round++) {
      const { key, id } = await h.createKey({ credits: 50, name: `round-${round}` });
      const client = h.client(key);
      const received = h.fake.counters.received;
      const results = await Promise.allSettled(
        Array.from({ length: 200 }, () => client.embeddings.create({ model: "bge-m3", input: "one two three" })),
      );
      const ok = results.filter((r) => r.status === "fulfilled");
      const rejected = results.flatMap((r) => (r.status === "rejected" ? [r.reason as unknown] : []));
      expect(ok).toHaveLength(50);
      expect(rejected).toHaveLength(150);
      for (const e of rejected) {
        expect(e).toBeInstanceOf(APIError);
        expect((e as APIError).status).toBe(402);
        expect((e as APIError).code).toBe("insufficient_credits");
      }
      expect(h.fake.counters.received - received).toBe(50);
      const audit = (await h.store.audit()).find((r) => r.keyId === id)!;
      expect(audit).toEqual({ keyId: id, balance: 0, held: 0, ledgerSum: 0, reservations: 0, reservedSum: 0 });
    }
  });
});
