import { describe, expect } from "vitest";
import type { Store } from "../../api-shim/src/store/store.ts";
import { onBothStores } from "../support/both-stores.ts";
import { expectLedgerMatches, startShim } from "../support/shim-harness.ts";

/**
 * A top-up retried while the first is still in flight (a script that times out and sends it again,
 * two operators, a retrying client): every copy arrives at once. With one Idempotency-Key the
 * grant is made once, each copy answered with that grant; another body under the same key
 * is the documented 409 (docs/api-shim/routes.md, errors.md), never a second grant.
 */
describe("concurrent top-ups with the same Idempotency-Key", () => {
  onBothStores("SQLite store: 20 at once grant once, each answered with the same grant; another body under a key is a 409; balance equals the ledger", scenario, 30_000);
});

async function scenario(wrapStore?: () => Store): Promise<void> {
  const h = await startShim(wrapStore ? { wrapStore } : {});
  try {
    const { id } = await h.createKey({ credits: 1 });
    const store = wrapStore ? wrapStore() : h.store;
    const topUp = async (idempotencyKey: string, body: { amount: number; note?: string }) => {
      const res = await h.admin(`/admin/keys/${id}/credits`, { method: "POST", headers: { "idempotency-key": idempotencyKey }, body: JSON.stringify(body) });
      return { status: res.status, text: await res.text(), replayed: res.headers.get("idempotent-replayed") };
    };

    // One body, 20 copies at once: one grant, 20 answers with the same body.
    const same = await Promise.all(Array.from({ length: 20 }, () => topUp("march-grant", { amount: 5, note: "march" })));
    expect(same.map((a) => a.status)).toEqual(Array(20).fill(200));
    expect(new Set(same.map((a) => a.text)).size).toBe(1);
    expect(JSON.parse(same[0]!.text)).toEqual({ object: "credit_grant", key_id: id, amount: 5, note: "march", balance: 6, credits_remaining: 6 });
    expect(same.filter((a) => a.replayed === "true")).toHaveLength(19);
    expect((await store.getKey(id))!.balance).toBe(6_000_000);

    // Two bodies under a second key, interleaved, all at once: whichever came first is granted
    // once and every copy of it answered with that grant; every copy of the other is the 409.
    const mixed = await Promise.all(Array.from({ length: 20 }, (_, i) => topUp("april-grant", i % 2 === 0 ? { amount: 7 } : { amount: 9 })));
    const granted = mixed.filter((a) => a.status === 200);
    const refused = mixed.filter((a) => a.status !== 200);
    expect(granted).toHaveLength(10);
    expect(new Set(granted.map((a) => a.text)).size).toBe(1);
    const grant = JSON.parse(granted[0]!.text) as { amount: number; balance: number };
    expect([7, 9]).toContain(grant.amount);
    expect(grant.balance).toBe(6 + grant.amount);
    expect(mixed.every((a, i) => (a.status === 200) === ((i % 2 === 0 ? 7 : 9) === grant.amount))).toBe(true);
    for (const r of refused) {
      expect(r.status).toBe(409);
      expect(JSON.parse(r.text)).toMatchObject({ error: { type: "invalid_request_error", code: "idempotency_key_reused", param: "Idempotency-Key" } });
    }

    expect((await store.getKey(id))!.balance).toBe((6 + grant.amount) * 1_000_000);
    await expectLedgerMatches(store, id);
  } finally {
    await h.close();
  }
}
