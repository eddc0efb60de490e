import { describe, expect } from "vitest";
import type { Store } from "../../api-shim/src/store/store.ts";
import { onBothStores } from "../support/both-stores.ts";
import { manualClock } from "../support/clocks.ts";
import { type Harness, moneyInvariants, startShim } from "../support/shim-harness.ts";

/**
 * POST /admin/keys/{id}/debits: credits written off a key (a refund, sold credits that expired, a
 * revoked key's leftover), as a ledger row of kind `adjustment` with a negative amount. Through
 * HTTP on both stores: the balance goes down and stays the ledger's sum, Idempotency-Key is
 * honoured as top-ups honour it, no write-off takes credits that are not available now, a revoked
 * or expired key can be written off, and the credits statement reconciles with its `adjusted`.
 */
const C = 1_000_000;
const NOW = Date.UTC(2026, 10, 15, 12); // mid-November: the statement's default period is the month

interface ApiError { error: { code: string; param: string | null; message: string } }
interface Line { key_id: string; opening: number; granted: number; spent: number; adjusted: number; closing: number; top_ups: unknown[]; write_offs: { at: string; amount: number; note: string | null }[] }

const post = (h: Harness, id: string, route: "credits" | "debits", body: unknown, idem?: string) =>
  h.admin(`/admin/keys/${id}/${route}`, { method: "POST", body: JSON.stringify(body), headers: idem === undefined ? {} : { "idempotency-key": idem } });
const json = async <T>(res: Response | Promise<Response>): Promise<T> => (await (await res).json()) as T;

async function expectRefused(res: Response, status: number, code: string, param: string): Promise<string> {
  const { error } = await json<ApiError>(res);
  expect([res.status, error.code, error.param]).toEqual([status, code, param]);
  return error.message;
}

async function expectLedgerIsBalance(store: Store): Promise<void> {
  for (const row of await moneyInvariants(store)) expect(row.ledgerSum, row.keyId).toBe(row.balance);
}

async function scenario(wrapStore?: () => Store): Promise<void> {
  const clock = manualClock(NOW);
  const h = await startShim({ clock, ...(wrapStore ? { wrapStore } : {}) });
  const store = wrapStore ? wrapStore() : h.store; // the store the shim runs on
  const balance = async (id: string) => (await store.getKey(id))!.balance;
  try {
    const jane = await h.createKey({ name: "jane", credits: 10 });

    // Written off: the balance goes down by the amount, and equals the ledger's sum.
    const first = await post(h, jane.id, "debits", { amount: 2.5, note: "refund, credit note CN-7" }, "cn-7");
    expect(first.status).toBe(200);
    const body = await first.text();
    expect(JSON.parse(body)).toEqual({ object: "credit_write_off", key_id: jane.id, amount: 2.5, note: "refund, credit note CN-7", balance: 7.5, credits_remaining: 7.5 });
    expect(await balance(jane.id)).toBe(7_500_000);
    await expectLedgerIsBalance(store);

    // Replayed as a top-up's replay is: the first answer, Idempotent-Replayed, nothing taken again.
    const replay = await post(h, jane.id, "debits", { amount: "2.50", note: "refund, credit note CN-7" }, "cn-7"); // the same request, spelled otherwise
    expect([replay.status, replay.headers.get("idempotent-replayed")]).toEqual([200, "true"]);
    expect(await replay.text()).toBe(body);
    expect(await balance(jane.id)).toBe(7_500_000);
    // A different request with that key: refused as a top-up's is, nothing taken.
    const topUpConflict = [await post(h, jane.id, "credits", { amount: 1 }, "inv-1"), await post(h, jane.id, "credits", { amount: 2 }, "inv-1")][1]!;
    const topUpError = await json<ApiError>(topUpConflict);
    await expectRefused(await post(h, jane.id, "debits", { amount: 3, note: "refund, credit note CN-7" }, "cn-7"), topUpConflict.status, topUpError.error.code, topUpError.error.param!);
    expect(topUpConflict.status).toBe(409);
    expect(await balance(jane.id)).toBe(8_500_000); // 7.5 and the top-up of 1
    // A write-off's Idempotency-Key is its own: the same key on a top-up is another request's.
    const sameKey = await post(h, jane.id, "debits", { amount: 0.5 }, "inv-1");
    expect([sameKey.status, sameKey.headers.get("idempotent-replayed")]).toEqual([200, null]);
    expect(await balance(jane.id)).toBe(8 * C);

    // Never more than is available now: the balance less what requests in flight hold.
    expect(await store.reserve({ reservationId: "in-flight", keyId: jane.id, amount: 5 * C, at: NOW })).toMatchObject({ ok: true });
    const message = await expectRefused(await post(h, jane.id, "debits", { amount: 3.000001 }, "too-much"), 400, "invalid_request", "amount");
    expect(message).toMatch(/3 credits available/);
    expect(await balance(jane.id)).toBe(8 * C);
    const all = await json<{ balance: number; credits_remaining: number }>(post(h, jane.id, "debits", { amount: 3 }));
    expect(all).toMatchObject({ balance: 5, credits_remaining: 0 });
    await store.settle({
      reservationId: "in-flight", keyId: jane.id, hold: 5 * C, cost: 0,
      usage: { requestId: "in-flight", keyId: jane.id, at: NOW, route: "/v1/chat/completions", model: "qwen2.5-7b", status: 502, promptTokens: 0, completionTokens: 0, cost: 0, stream: false, ms: 1, served: false, priceId: "p", batch: false, cachedTokens: 0 },
    });
    await expectRefused(await post(h, jane.id, "debits", { amount: 5.000001 }), 400, "invalid_request", "amount");

    // Not a credits amount, a bad note, an unknown key: refused as a top-up's are, nothing taken.
    for (const bad of [{ amount: 0 }, { amount: -1 }, { amount: "x" }, { amount: 0.0000001 }, {}]) await expectRefused(await post(h, jane.id, "debits", bad), 400, "invalid_request", "amount");
    await expectRefused(await post(h, jane.id, "debits", { amount: 1, note: "a\u0000" }), 400, "invalid_request", "note");
    await expectRefused(await post(h, jane.id, "debits", { amount: 1, extra: true }), 400, "invalid_request", "extra");
    await expectRefused(await post(h, "NoSuchKey123", "debits", { amount: 1 }), 404, "not_found", "id");
    expect(await balance(jane.id)).toBe(5 * C);

    // A revoked key's leftover, and an expired key's: what a write-off is most for.
    const bob = await h.createKey({ name: "bob", credits: 4 });
    expect((await h.admin(`/admin/keys/${bob.id}`, { method: "DELETE" })).status).toBe(200);
    expect(await json(post(h, bob.id, "debits", { amount: 4, note: "revoked: leftover written off" }))).toMatchObject({ balance: 0, credits_remaining: 0 });
    await expectRefused(await post(h, bob.id, "debits", { amount: 0.000001 }), 400, "invalid_request", "amount");
    const eve = await h.createKey({ name: "eve", credits: 2, expires_at: new Date(NOW + 60_000).toISOString() });
    clock.advance(120_000);
    expect(await json(post(h, eve.id, "debits", { amount: 2, note: "expired credits" }))).toMatchObject({ balance: 0 });
    await expectLedgerIsBalance(store);

    // The statement: what was written off is `adjusted`, listed with its notes, and
    // opening + granted − spent − adjusted = closing on every line.
    const statement = await json<{ data: Line[] }>(h.admin("/admin/credits"));
    const line = (id: string) => statement.data.find((l) => l.key_id === id)!;
    expect(line(jane.id)).toMatchObject({ opening: 0, granted: 11, spent: 0, adjusted: 6, closing: 5 });
    expect(line(jane.id).write_offs.map((w) => [w.amount, w.note])).toEqual([[2.5, "refund, credit note CN-7"], [0.5, null], [3, null]]);
    expect(line(jane.id).top_ups).toHaveLength(1);
    expect(line(bob.id)).toMatchObject({ granted: 4, adjusted: 4, closing: 0, write_offs: [{ at: new Date(NOW).toISOString(), amount: 4, note: "revoked: leftover written off" }] });
    expect(line(eve.id)).toMatchObject({ granted: 2, adjusted: 2, closing: 0 });
    for (const l of statement.data) expect(Math.round((l.opening + l.granted - l.spent - l.adjusted) * C), l.key_id).toBe(Math.round(l.closing * C));
    const csv = await (await h.admin("/admin/credits?format=csv")).text();
    // `adjusted` last: a reader of the other columns by position reads them where they were.
    expect(csv.split("\r\n")[0]).toBe("key_id,name,opening,granted,spent,closing,adjusted");
    expect(csv).toContain(`${jane.id},jane,0,11,0,5,6\r\n`);
    // A write-off is not usage: the usage report has none of it.
    expect((await json<{ data: unknown[] }>(h.admin("/admin/usage"))).data).toEqual([]);

    // An Idempotency-Key is scoped to its key: another key's write-off with jane's "cn-7", the
    // same request otherwise, is its own, not a replay of jane's answer.
    const kim = await h.createKey({ name: "kim", credits: 3 });
    const kims = await post(h, kim.id, "debits", { amount: 2.5, note: "refund, credit note CN-7" }, "cn-7");
    expect([kims.status, kims.headers.get("idempotent-replayed")]).toEqual([200, null]);
    expect(await json(kims)).toMatchObject({ key_id: kim.id, balance: 0.5 });
    // The note is part of the request: the same amount with another note under that key is a
    // different request, refused, not answered with the first one's note as though it were that.
    await expectRefused(await post(h, kim.id, "debits", { amount: 2.5, note: "expired credits" }, "cn-7"), 409, "idempotency_key_reused", "Idempotency-Key");
    expect(await balance(kim.id)).toBe(500_000);

    // The next month's statement: November's write-offs are in its opening, not in its `adjusted`
    // (counted in both, opening + granted − spent − adjusted would fall short of closing).
    clock.advance(20 * 86_400_000); // 5 December
    const december = await json<{ data: Line[] }>(h.admin("/admin/credits"));
    expect(december.data.find((l) => l.key_id === jane.id)).toMatchObject({ opening: 5, granted: 0, spent: 0, adjusted: 0, closing: 5, write_offs: [] });
    for (const l of december.data) expect(Math.round((l.opening + l.granted - l.spent - l.adjusted) * C), l.key_id).toBe(Math.round(l.closing * C));
  } finally {
    await h.close();
  }
}

describe("POST /admin/keys/{id}/debits (a write-off)", () => {
  onBothStores("takes credits off a key, up to what is available, as a ledger row; replayed and refused as top-ups are; on the statement as `adjusted`", scenario);
});
