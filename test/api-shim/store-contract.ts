import { expect, it } from "vitest";
import { MAX_BALANCE_MICRO } from "../../api-shim/src/money/money.ts";
import type { NewKey, Store, UsageRow } from "../../api-shim/src/store/store.ts";
import { isLow } from "../../api-shim/src/store/low-credits.ts";

export const newKey = (id: string, credits: number): NewKey => ({ id, name: id, hash: `sha256:${"0".repeat(64)}`, tier: "free", models: null, expiresAt: null, credits, at: 1000 });
export const usage = (keyId: string, requestId: string, cost = 0, at = 2000): UsageRow => ({ requestId, keyId, at, route: "chat", model: "m", status: 200, promptTokens: 3, completionTokens: 4, cost, stream: false, ms: 1, served: true, priceId: "p", batch: false, cachedTokens: 0 });
/** The usage record of a streamed request whose upstream failed (502): nothing generated, charged 0. */
export const failedUsage = (keyId: string, requestId: string): UsageRow => ({ ...usage(keyId, requestId), status: 502, promptTokens: 0, completionTokens: 0, stream: true, served: false });

/**
 * What every Store must do, whatever the database: the routes rely on exactly this. Called
 * inside each store's `describe` with a getter for a fresh, empty store (set up by its
 * beforeEach); the store-specific tests (schema, concurrency model, failures) stay in each file.
 */
export function storeContract(current: () => Store): void {
  it("reserve is a conditional hold: admits while balance − held covers it", async () => {
    const store = current();
    await store.createKey(newKey("k", 3));
    const r = [];
    for (let i = 0; i < 5; i++) r.push(await store.reserve({ reservationId: `r${i}`, keyId: "k", amount: 1, at: 1 }));
    expect(r.map((x) => x.ok)).toEqual([true, true, true, false, false]);
    expect(r[2]).toEqual({ ok: true, available: 0 });
    // Refused with the key's balance: here it alone covers the hold, only the other holds stand in the way.
    expect(r[4]).toEqual({ ok: false, available: 0, balance: 3 });
    expect(await store.reserve({ reservationId: "x", keyId: "nope", amount: 1, at: 1 })).toEqual({ ok: false, available: 0, inactive: true });
    expect(await store.getKey("k")).toMatchObject({ balance: 3, held: 3 });
  });

  it("listKeys and getKeyDetails count each key's open holds, those of 0 credits too (a free request): its requests in flight", async () => {
    const store = current();
    await store.createKey(newKey("k", 10));
    await store.createKey(newKey("idle", 10));
    expect(await store.reserve({ reservationId: "free", keyId: "k", amount: 0, at: 1 })).toEqual({ ok: true, available: 10 });
    await store.reserve({ reservationId: "paid", keyId: "k", amount: 2, at: 1 });
    const shown = async () => (await store.listKeys()).map((k) => [k.id, k.held, k.holds]);
    expect(await shown()).toEqual([["idle", 0, 0], ["k", 2, 2]]);
    expect(await store.getKeyDetails("k")).toMatchObject({ id: "k", held: 2, holds: 2 });
    await store.settle({ reservationId: "paid", keyId: "k", hold: 2, cost: 1, usage: usage("k", "qp", 1) });
    // Holding no credit, still in flight: its usage is not written yet.
    expect(await shown()).toEqual([["idle", 0, 0], ["k", 0, 1]]);
    expect(await store.getKeyDetails("k")).toMatchObject({ held: 0, holds: 1 });
    await store.settle({ reservationId: "free", keyId: "k", hold: 0, cost: 0, usage: usage("k", "qf") });
    expect(await shown()).toEqual([["idle", 0, 0], ["k", 0, 0]]);
    expect(await store.getKeyDetails("idle")).toMatchObject({ holds: 0 });
    expect(await store.getKeyDetails("nope")).toBeUndefined();
  });

  it("reserve refuses a key revoked or expired since it authenticated, whatever its balance", async () => {
    const store = current();
    await store.createKey(newKey("gone", 10));
    await store.createKey({ ...newKey("ends", 10), expiresAt: 5000 });
    expect(await store.reserve({ reservationId: "a", keyId: "gone", amount: 1, at: 2000 })).toEqual({ ok: true, available: 9 });
    await store.revokeKey("gone", 3000);
    expect(await store.reserve({ reservationId: "b", keyId: "gone", amount: 1, at: 3001 })).toEqual({ ok: false, available: 9, inactive: true });
    expect(await store.reserve({ reservationId: "c", keyId: "ends", amount: 1, at: 4999 })).toEqual({ ok: true, available: 9 });
    expect(await store.reserve({ reservationId: "d", keyId: "ends", amount: 1, at: 5000 })).toEqual({ ok: false, available: 9, inactive: true });
    // The hold made before the revocation still settles, and is charged.
    await store.settle({ reservationId: "a", keyId: "gone", hold: 1, cost: 1, usage: usage("gone", "qa", 1) });
    expect((await store.audit()).find((r) => r.keyId === "gone")).toMatchObject({ balance: 9, held: 0, ledgerSum: 9 });
  });

  it("reserve refuses a key whose secret was rotated since the request authenticated (its hash differs), and holds a request with the current one", async () => {
    const store = current();
    const old = newKey("k", 10).hash;
    await store.createKey(newKey("k", 10));
    expect(await store.reserve({ reservationId: "a", keyId: "k", amount: 1, at: 2000, hash: old })).toEqual({ ok: true, available: 9 });
    const rotated = `sha256:${"1".repeat(64)}`;
    expect(await store.updateKey("k", { hash: rotated }, 3000)).toMatchObject({ kind: "done" });
    expect(await store.reserve({ reservationId: "b", keyId: "k", amount: 1, at: 3001, hash: old })).toEqual({ ok: false, available: 9, inactive: true });
    // Refused as inactive before the balance is looked at: a request with the old secret is no longer the key's.
    expect(await store.reserve({ reservationId: "c", keyId: "k", amount: 100, at: 3001, hash: old })).toEqual({ ok: false, available: 9, inactive: true });
    expect(await store.reserve({ reservationId: "d", keyId: "k", amount: 1, at: 3001, hash: rotated })).toEqual({ ok: true, available: 8 });
    // The hold made with the old secret still settles, and is charged.
    await store.settle({ reservationId: "a", keyId: "k", hold: 1, cost: 1, usage: usage("k", "qa", 1) });
    expect((await store.audit()).find((r) => r.keyId === "k")).toMatchObject({ balance: 9, held: 1, ledgerSum: 9 });
  });

  it("settle charges at most the hold with the request's usage record and says what it charged; a failed request is charged 0; twice is a no-op", async () => {
    const store = current();
    await store.createKey(newKey("k", 10));
    await store.reserve({ reservationId: "a", keyId: "k", amount: 4, at: 1 });
    await store.reserve({ reservationId: "b", keyId: "k", amount: 4, at: 1 });
    expect(await store.settle({ reservationId: "a", keyId: "k", hold: 4, cost: 3, usage: usage("k", "qa", 3) })).toEqual({ available: 3, charged: 3 });
    expect(await store.settle({ reservationId: "a", keyId: "k", hold: 4, cost: 3, usage: usage("k", "qa", 3) })).toEqual({ available: 3, charged: 0 });
    expect(await store.settle({ reservationId: "b", keyId: "k", hold: 4, cost: 0, usage: failedUsage("k", "qb") })).toEqual({ available: 7, charged: 0 });
    expect(await store.audit()).toEqual([{ keyId: "k", balance: 7, held: 0, ledgerSum: 7, reservations: 0, reservedSum: 0 }]);
    // The failed request is in the ledger (a row with amount 0) but not in the report: it was neither answered nor charged.
    expect(await store.usage({ keyId: "k", asker: "k", from: 0, to: 10_000, group: "model" })).toEqual([{ keyId: "k", group: "m", requests: 1, promptTokens: 3, completionTokens: 4, cost: 3 }]);
    // A client that left after the upstream had its request (499) was charged: it counts. One
    // dropped before that (499, charged 0) does not; nor does a failed model's group at all.
    await store.reserve({ reservationId: "c", keyId: "k", amount: 4, at: 1 });
    await store.settle({ reservationId: "c", keyId: "k", hold: 4, cost: 1, usage: { ...usage("k", "qc", 1), status: 499, promptTokens: 0, completionTokens: 0 } });
    await store.reserve({ reservationId: "d", keyId: "k", amount: 4, at: 1 });
    await store.settle({ reservationId: "d", keyId: "k", hold: 4, cost: 0, usage: { ...usage("k", "qd"), status: 499, promptTokens: 0, completionTokens: 0, served: false } });
    await store.reserve({ reservationId: "e", keyId: "k", amount: 4, at: 1 });
    await store.settle({ reservationId: "e", keyId: "k", hold: 4, cost: 0, usage: { ...failedUsage("k", "qe"), model: "down" } });
    expect(await store.usage({ keyId: "k", asker: "k", from: 0, to: 10_000, group: "model" })).toEqual([{ keyId: "k", group: "m", requests: 2, promptTokens: 3, completionTokens: 4, cost: 4 }]);
    expect((await store.audit())[0]).toMatchObject({ balance: 6, ledgerSum: 6, held: 0 });
  });

  it("a request the upstream served counts in reports though charged nothing (a free model): a client that left after content, a stream cut after content", async () => {
    const store = current();
    await store.createKey(newKey("k", 10));
    await store.reserve({ reservationId: "a", keyId: "k", amount: 4, at: 1 });
    await store.settle({ reservationId: "a", keyId: "k", hold: 4, cost: 0, usage: { ...usage("k", "qa"), status: 499, promptTokens: 3, completionTokens: 5 } });
    await store.reserve({ reservationId: "b", keyId: "k", amount: 4, at: 1 });
    await store.settle({ reservationId: "b", keyId: "k", hold: 4, cost: 0, usage: { ...usage("k", "qb"), status: 502, promptTokens: 0, completionTokens: 5, stream: true } });
    // Not served (the upstream failed before any content): in the ledger, not in the report.
    await store.reserve({ reservationId: "c", keyId: "k", amount: 4, at: 1 });
    await store.settle({ reservationId: "c", keyId: "k", hold: 4, cost: 0, usage: failedUsage("k", "qc") });
    expect(await store.usage({ keyId: "k", asker: "k", from: 0, to: 10_000, group: "model" })).toEqual([{ keyId: "k", group: "m", requests: 2, promptTokens: 3, completionTokens: 10, cost: 0 }]);
    expect(await store.usage({ keyId: null, asker: null, from: 0, to: 10_000, group: "day" })).toEqual([{ keyId: "k", group: "1970-01-01", requests: 2, promptTokens: 3, completionTokens: 10, cost: 0 }]);
    expect((await store.audit())[0]).toMatchObject({ balance: 10, ledgerSum: 10, held: 0 });
  });

  it("settle never charges more than the hold, whatever cost it is given: the rest of the key's credit stays its own", async () => {
    const store = current();
    await store.createKey(newKey("k", 100));
    await store.reserve({ reservationId: "r", keyId: "k", amount: 10, at: 1 });
    expect(await store.settle({ reservationId: "r", keyId: "k", hold: 10, cost: 50, usage: usage("k", "q", 50) })).toEqual({ available: 90, charged: 10 });
    expect(await store.audit()).toEqual([{ keyId: "k", balance: 90, held: 0, ledgerSum: 90, reservations: 0, reservedSum: 0 }]);
    expect(await store.usage({ keyId: "k", asker: "k", from: 0, to: 10_000, group: "model" })).toEqual([{ keyId: "k", group: "m", requests: 1, promptTokens: 3, completionTokens: 4, cost: 10 }]);
  });

  it("a cost beyond the key's whole balance is charged the hold, and the settlements made with it are kept", async () => {
    const store = current();
    await store.createKey(newKey("k", 10));
    await store.createKey(newKey("j", 10));
    await store.reserve({ reservationId: "a", keyId: "j", amount: 5, at: 1 });
    await store.reserve({ reservationId: "r", keyId: "k", amount: 10, at: 1 });
    // Together, as requests finishing at once settle (the SQLite store: in one batch).
    const [other, over] = await Promise.all([
      store.settle({ reservationId: "a", keyId: "j", hold: 5, cost: 5, usage: usage("j", "qa", 5) }),
      store.settle({ reservationId: "r", keyId: "k", hold: 10, cost: 50, usage: usage("k", "q", 50) }),
    ]);
    expect({ other, over }).toEqual({ other: { available: 5, charged: 5 }, over: { available: 0, charged: 10 } });
    expect(await store.audit()).toEqual([
      { keyId: "j", balance: 5, held: 0, ledgerSum: 5, reservations: 0, reservedSum: 0 },
      { keyId: "k", balance: 0, held: 0, ledgerSum: 0, reservations: 0, reservedSum: 0 },
    ]);
  });

  it("bootstrap keys are granted once, updated from config on later starts", async () => {
    const store = current();
    expect(await store.ensureBootstrapKey(newKey("boot", 100))).toEqual({ created: true, granted: true });
    expect(await store.ensureBootstrapKey({ ...newKey("boot", 100), tier: "pro", models: ["m"] })).toEqual({ created: false, granted: false });
    expect(await store.getKey("boot")).toMatchObject({ balance: 100, tier: "pro", models: ["m"] });
  });

  it("the admin view says which keys come from configuration (fromConfiguration), revoked ones too; the unmarked one taken as an entry's own becomes one", async () => {
    const store = current();
    await store.createKey(newKey("admin", 10));
    await store.ensureBootstrapKey(newKey("boot", 10));
    await store.createKey(newKey("old", 0)); // unmarked, with the entry's hash: taken as configuration's below
    const shown = async () => (await store.listKeys()).map((k) => [k.id, k.fromConfiguration]);
    expect(await shown()).toEqual([["admin", false], ["boot", true], ["old", false]]);
    await store.ensureBootstrapKey(newKey("old", 0));
    expect(await shown()).toEqual([["admin", false], ["boot", true], ["old", true]]);
    expect(await store.getKeyDetails("boot")).toMatchObject({ id: "boot", fromConfiguration: true });
    expect(await store.getKeyDetails("admin")).toMatchObject({ id: "admin", fromConfiguration: false });
    // A change's answer is the same view (PATCH and rotate show it).
    expect(await store.updateKey("admin", { tier: "pro" }, 100)).toMatchObject({ kind: "done", key: { id: "admin", fromConfiguration: false } });
    // Revoked (taken out of the configuration), it is still shown as configuration's.
    expect(await store.revokeRemovedBootstrapKeys(["old"], 200)).toEqual(["boot"]);
    expect(await store.getKeyDetails("boot")).toMatchObject({ fromConfiguration: true, revokedAt: 200 });
  });

  it("a bootstrap entry with the id of a key made with the admin API changes nothing of it, and says so; removing the entry does not revoke it", async () => {
    const store = current();
    await store.createKey({ ...newKey("admin", 10), name: "theirs", tier: "pro", models: ["m"] });
    const other = `sha256:${"1".repeat(64)}`; // the entry's own key: its holder would have taken the id over
    expect(await store.ensureBootstrapKey({ ...newKey("admin", 100), name: "boot", hash: other })).toEqual({ created: false, granted: false, adminKey: true });
    expect(await store.getKey("admin")).toMatchObject({ name: "theirs", tier: "pro", models: ["m"], balance: 10, hash: newKey("admin", 0).hash });
    expect(await store.revokeRemovedBootstrapKeys([], 50)).toEqual([]);
    expect(await store.getKey("admin")).toMatchObject({ revokedAt: null });
    expect((await store.audit()).find((r) => r.keyId === "admin")).toMatchObject({ balance: 10, ledgerSum: 10 });
  });

  it("an unmarked key with the entry's id and hash is the entry's own (one made with 0 credits before keys were marked): it is taken as configuration's", async () => {
    const store = current();
    await store.createKey(newKey("old", 0)); // as such a key is after the migration: no grant row, not marked
    expect(await store.ensureBootstrapKey({ ...newKey("old", 7), tier: "pro" })).toEqual({ created: false, granted: true });
    expect(await store.getKey("old")).toMatchObject({ tier: "pro", balance: 7 });
    expect(await store.revokeRemovedBootstrapKeys([], 50)).toEqual(["old"]);
  });

  it("a bootstrap grant is not made past the largest balance nor to a revoked key, and says why; one that fits later is made then", async () => {
    const store = current();
    await store.ensureBootstrapKey(newKey("full", 0)); // 0 credits: no grant yet
    const topUp = { keyId: "full", amount: MAX_BALANCE_MICRO - 5, note: null, at: 1, idempotency: null, respond: () => "", refuse: () => null };
    expect(await store.topUp(topUp)).toMatchObject({ kind: "done" });
    expect(await store.ensureBootstrapKey(newKey("full", 10))).toEqual({ created: false, granted: false, refused: "balance_too_large" });
    expect(await store.getKey("full")).toMatchObject({ balance: MAX_BALANCE_MICRO - 5 });
    await store.reserve({ reservationId: "r", keyId: "full", amount: 5, at: 2 });
    await store.settle({ reservationId: "r", keyId: "full", hold: 5, cost: 5, usage: usage("full", "q", 5) });
    expect(await store.ensureBootstrapKey(newKey("full", 10))).toEqual({ created: false, granted: true });
    expect(await store.getKey("full")).toMatchObject({ balance: MAX_BALANCE_MICRO });
    // Made once: not refused (nor made) again at later starts.
    expect(await store.ensureBootstrapKey(newKey("full", 10))).toEqual({ created: false, granted: false });
    await store.ensureBootstrapKey(newKey("gone", 0));
    await store.revokeKey("gone", 5);
    expect(await store.ensureBootstrapKey(newKey("gone", 10))).toEqual({ created: false, granted: false, refused: "key_inactive" });
    expect((await store.audit()).map((r) => [r.keyId, r.balance, r.ledgerSum])).toEqual([["full", MAX_BALANCE_MICRO, MAX_BALANCE_MICRO], ["gone", 0, 0]]);
  });

  it("keys removed from configuration are revoked at start; admin-made keys and the ledger stay", async () => {
    const store = current();
    await store.ensureBootstrapKey(newKey("keep", 10));
    await store.ensureBootstrapKey(newKey("gone", 10));
    await store.createKey(newKey("admin", 10));
    expect(await store.revokeRemovedBootstrapKeys(["keep"], 50)).toEqual(["gone"]);
    expect(await store.getKey("gone")).toMatchObject({ revokedAt: 50, balance: 10 });
    expect(await store.getKey("keep")).toMatchObject({ revokedAt: null });
    expect(await store.getKey("admin")).toMatchObject({ revokedAt: null });
    expect(await store.revokeRemovedBootstrapKeys(["keep"], 60)).toEqual([]); // revoked once, at 50
    expect(await store.getKey("gone")).toMatchObject({ revokedAt: 50 });
    expect((await store.audit()).find((r) => r.keyId === "gone")).toMatchObject({ ledgerSum: 10 });
    expect(await store.revokeKey("admin", 70)).toBe(true);
    expect(await store.revokeKey("admin", 80)).toBe(true);
    expect(await store.getKey("admin")).toMatchObject({ revokedAt: 70 });
    expect(await store.revokeKey("nope", 80)).toBe(false);
    expect((await store.listKeys()).map((k) => k.id)).toEqual(["admin", "gone", "keep"]);
  });

  it("lowCredits: each active key's balance and the credits it had this month (opening + granted), read as fleet-status.sh reads a month's statement", async () => {
    const store = current();
    const month = Date.UTC(2026, 11, 1);
    const now = month + 5 * 86_400_000;
    const before = (id: string, credits: number, more: Partial<NewKey> = {}) => store.createKey({ ...newKey(id, credits), at: month - 86_400_000, ...more });
    const spend = async (keyId: string, cost: number, at: number) => {
      await store.reserve({ reservationId: `r-${keyId}-${at}`, keyId, amount: cost, at });
      await store.settle({ reservationId: `r-${keyId}-${at}`, keyId, hold: cost, cost, usage: usage(keyId, `q-${keyId}-${at}`, cost, at) });
    };
    await before("drained", 100); // spent 95 of its 100 this month: 5 left, under a tenth
    await spend("drained", 95, month + 1000);
    await before("full", 100);
    await spend("full", 5, month + 1000);
    await before("topped", 100); // 5 left last month, 100 topped up and 4 spent this month: had 105
    await spend("topped", 95, month - 1000);
    await store.topUp({ keyId: "topped", amount: 100, note: null, at: month + 2000, idempotency: null, respond: () => "", refuse: () => null });
    await spend("topped", 4, month + 3000);
    await before("written", 100); // 30 written off this month: had 100 still, 70 left
    await store.topUp({ keyId: "written", amount: 30, note: null, at: month + 2000, idempotency: null, writeOff: true, respond: () => "", refuse: () => null });
    await before("empty", 0);
    await before("gone", 0);
    await store.revokeKey("gone", month + 1000);
    await before("ended", 0, { expiresAt: now });
    expect(await store.lowCredits({ from: month, now })).toEqual([
      { keyId: "drained", name: "drained", balance: 5, had: 100 },
      { keyId: "empty", name: "empty", balance: 0, had: 0 },
      { keyId: "full", name: "full", balance: 95, had: 100 },
      { keyId: "topped", name: "topped", balance: 101, had: 105 },
      { keyId: "written", name: "written", balance: 70, had: 100 },
    ]);
    // The same figures as the month's credits statement (opening + granted, closing) of each active key.
    const statement = await store.credits({ keyId: null, asker: null, from: month, to: now });
    for (const k of await store.lowCredits({ from: month, now })) {
      const line = statement.find((l) => l.keyId === k.keyId);
      expect({ had: k.had, balance: k.balance }, k.keyId).toEqual({ had: (line?.opening ?? 0) + (line?.granted ?? 0), balance: line?.closing ?? 0 });
    }
    expect((await store.lowCredits({ from: month, now })).filter((k) => isLow(k, 0.1)).map((k) => k.keyId)).toEqual(["drained", "empty"]);
  });

  it("top-ups honour idempotency keys per key: replay, conflict, not found", async () => {
    const store = current();
    await store.createKey(newKey("k", 0));
    const up = (fingerprint: string, key = "idem") =>
      store.topUp({ keyId: "k", amount: 5, note: null, at: 1, idempotency: { key, fingerprint }, respond: (k) => JSON.stringify({ balance: k.balance }), refuse: () => null });
    expect(await up("a")).toEqual({ kind: "done", body: '{"balance":5}' });
    expect(await up("a")).toEqual({ kind: "replay", body: '{"balance":5}' });
    expect(await up("b")).toEqual({ kind: "conflict" });
    expect(await up("a", "other")).toEqual({ kind: "done", body: '{"balance":10}' });
    expect(await store.topUp({ keyId: "nope", amount: 1, note: null, at: 1, idempotency: null, respond: () => "", refuse: () => null })).toEqual({ kind: "not_found" });
    expect(await store.audit()).toEqual([{ keyId: "k", balance: 10, held: 0, ledgerSum: 10, reservations: 0, reservedSum: 0 }]);
  });

  it("a top-up `refuse` turns away grants nothing, and is asked only after a replay is recognised", async () => {
    const store = current();
    await store.createKey(newKey("k", 0));
    let refusal: string | null = null;
    const seen: number[] = [];
    const up = (key: string | null) =>
      store.topUp({ keyId: "k", amount: 5, note: null, at: 1, idempotency: key === null ? null : { key, fingerprint: "a" }, respond: (k) => JSON.stringify({ balance: k.balance }), refuse: (k) => (seen.push(k.balance), refusal) });
    expect(await up("first")).toEqual({ kind: "done", body: '{"balance":5}' });
    refusal = "key_inactive";
    // A retry of the first top-up still gets its answer; a new one is refused, seeing the key as it is.
    expect(await up("first")).toEqual({ kind: "replay", body: '{"balance":5}' });
    expect(await up("second")).toEqual({ kind: "refused", reason: "key_inactive" });
    expect(await up(null)).toEqual({ kind: "refused", reason: "key_inactive" });
    expect(seen).toEqual([0, 5, 5]);
    expect(await store.audit()).toEqual([{ keyId: "k", balance: 5, held: 0, ledgerSum: 5, reservations: 0, reservedSum: 0 }]);
  });

  it("groups usage by UTC day and filters by key and period", async () => {
    const store = current();
    await store.createKey(newKey("k", 10));
    await store.createKey(newKey("j", 10));
    const charge = async (keyId: string, id: string, at: number) => {
      await store.reserve({ reservationId: id, keyId, amount: 1, at });
      await store.settle({ reservationId: id, keyId, hold: 1, cost: 1, usage: usage(keyId, `q-${id}`, 1, at) });
    };
    await charge("k", "r0", Date.UTC(2026, 0, 1, 23));
    await charge("k", "r1", Date.UTC(2026, 0, 2, 1));
    await charge("k", "r2", Date.UTC(2026, 0, 2, 2));
    await charge("j", "r3", Date.UTC(2026, 0, 2, 3));
    const days = await store.usage({ keyId: null, asker: null, from: 0, to: Date.UTC(2027, 0, 1), group: "day" });
    expect(days.map((d) => [d.keyId, d.group, d.requests, d.cost])).toEqual([["j", "2026-01-02", 1, 1], ["k", "2026-01-01", 1, 1], ["k", "2026-01-02", 2, 2]]);
    expect(await store.usage({ keyId: "k", asker: "k", from: Date.UTC(2026, 0, 2), to: Date.UTC(2026, 0, 2, 2), group: "model" })).toEqual([
      { keyId: "k", group: "m", requests: 1, promptTokens: 3, completionTokens: 4, cost: 1 },
    ]);
  });

  it("groups usage by UTC day and model (group day,model): a row per key, day and model, sorted so", async () => {
    const store = current();
    await store.createKey(newKey("k", 10));
    await store.createKey(newKey("j", 10));
    const charge = async (keyId: string, id: string, at: number, model: string) => {
      await store.reserve({ reservationId: id, keyId, amount: 1, at });
      await store.settle({ reservationId: id, keyId, hold: 1, cost: 1, usage: { ...usage(keyId, `q-${id}`, 1, at), model } });
    };
    await charge("k", "r0", Date.UTC(2026, 0, 1, 23), "m");
    await charge("k", "r1", Date.UTC(2026, 0, 2, 1), "n");
    await charge("k", "r2", Date.UTC(2026, 0, 2, 2), "m");
    await charge("k", "r3", Date.UTC(2026, 0, 2, 3), "n");
    await charge("j", "r4", Date.UTC(2026, 0, 2, 3), "n");
    const rows = await store.usage({ keyId: null, asker: null, from: 0, to: Date.UTC(2027, 0, 1), group: "day,model" });
    expect(rows.map((d) => [d.keyId, d.group, d.model, d.requests, d.cost])).toEqual([
      ["j", "2026-01-02", "n", 1, 1], ["k", "2026-01-01", "m", 1, 1], ["k", "2026-01-02", "m", 1, 1], ["k", "2026-01-02", "n", 2, 2],
    ]);
    expect(await store.usage({ keyId: "k", asker: "k", from: Date.UTC(2026, 0, 2), to: Date.UTC(2026, 0, 3), group: "day,model" })).toEqual([
      { keyId: "k", group: "2026-01-02", model: "m", requests: 1, promptTokens: 3, completionTokens: 4, cost: 1 },
      { keyId: "k", group: "2026-01-02", model: "n", requests: 2, promptTokens: 6, completionTokens: 8, cost: 2 },
    ]);
  });
}
