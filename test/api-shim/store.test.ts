import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SqliteStore } from "../../api-shim/src/store/sqlite-store.ts";
import { StoreUnavailableError, type NewKey, type UsageRow } from "../../api-shim/src/store/store.ts";

const newKey = (id: string, credits: number): NewKey => ({ id, name: id, hash: `sha256:${"0".repeat(64)}`, tier: "free", models: null, expiresAt: null, credits, at: 1000 });
const usage = (keyId: string, requestId: string, cost = 0, at = 2000): UsageRow => ({ requestId, keyId, at, route: "chat", model: "m", status: 200, promptTokens: 3, completionTokens: 4, cost, stream: false, ms: 1 });

describe("SqliteStore", () => {
  let dir: string;
  let file: string;
  let store: SqliteStore;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "shim-store-"));
    file = join(dir, "shim.db");
    store = new SqliteStore(file);
  });
  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("uses WAL, synchronous=NORMAL, and migrates once (user_version)", async () => {
    const db = new Database(file, { readonly: true });
    expect(db.pragma("journal_mode", { simple: true })).toBe("wal");
    expect(db.pragma("user_version", { simple: true })).toBe(1);
    db.close();
    await store.createKey(newKey("k1", 5));
    await store.close();
    store = new SqliteStore(file); // re-opening does not re-run migrations or lose data
    expect((await store.getKey("k1"))!.balance).toBe(5);
  });

  it("reserve is a conditional hold: admits while balance − held covers it", async () => {
    await store.createKey(newKey("k", 3));
    const r = [];
    for (let i = 0; i < 5; i++) r.push(await store.reserve({ reservationId: `r${i}`, keyId: "k", amount: 1, at: 1 }));
    expect(r.map((x) => x.ok)).toEqual([true, true, true, false, false]);
    expect(r[4]).toEqual({ ok: false, available: 0 });
    expect(await store.getKey("k")).toMatchObject({ balance: 3, held: 3 });
  });

  it("settle charges at most the hold, in one transaction with a ledger row and a usage row; twice is a no-op", async () => {
    await store.createKey(newKey("k", 10));
    await store.reserve({ reservationId: "r", keyId: "k", amount: 4, at: 1 });
    expect(await store.settle({ reservationId: "r", keyId: "k", hold: 4, cost: 3, usage: usage("k", "q1", 3) })).toEqual({ available: 7 });
    expect(await store.settle({ reservationId: "r", keyId: "k", hold: 4, cost: 3, usage: usage("k", "q1", 3) })).toEqual({ available: 7 });
    expect(await store.audit()).toEqual([{ keyId: "k", balance: 7, held: 0, ledgerSum: 7, reservations: 0, reservedSum: 0 }]);
    expect(await store.usage({ keyId: "k", from: 0, to: 10_000, group: "model" })).toEqual([{ keyId: "k", group: "m", requests: 1, promptTokens: 3, completionTokens: 4, cost: 3 }]);
  });

  it("the database itself refuses a negative available balance and edits to the ledger", async () => {
    await store.createKey(newKey("k", 1));
    const db = new Database(file);
    expect(() => db.prepare("UPDATE keys SET held = 2 WHERE id = 'k'").run()).toThrow(/CHECK constraint/);
    expect(() => db.prepare("UPDATE ledger SET amount = 100").run()).toThrow(/append-only/);
    expect(() => db.prepare("DELETE FROM ledger").run()).toThrow(/append-only/);
    db.close();
  });

  it("releases the reservations of other instances (a dead process) and keeps its own", async () => {
    await store.createKey(newKey("k", 10));
    await store.reserve({ reservationId: "mine", keyId: "k", amount: 2, at: 1 });
    await store.flush(); // group commit: let the other connection write
    const dead = new SqliteStore(file);
    await dead.reserve({ reservationId: "theirs", keyId: "k", amount: 5, at: 1 });
    await dead.close();
    expect(await store.releaseStaleReservations()).toBe(1);
    expect(await store.audit()).toEqual([{ keyId: "k", balance: 10, held: 2, ledgerSum: 10, reservations: 1, reservedSum: 2 }]);
  });

  it("bootstrap keys are granted once, updated from config on later starts", async () => {
    expect(await store.ensureBootstrapKey(newKey("boot", 100))).toEqual({ created: true, granted: true });
    expect(await store.ensureBootstrapKey({ ...newKey("boot", 100), tier: "pro" })).toEqual({ created: false, granted: false });
    expect(await store.getKey("boot")).toMatchObject({ balance: 100, tier: "pro" });
  });

  it("top-ups honour idempotency keys per key: replay, conflict, not found", async () => {
    await store.createKey(newKey("k", 0));
    const up = (fingerprint: string, key = "idem") =>
      store.topUp({ keyId: "k", amount: 5, note: null, at: 1, idempotency: { key, fingerprint }, respond: (k) => JSON.stringify({ balance: k.balance }) });
    expect(await up("a")).toEqual({ kind: "done", body: '{"balance":5}' });
    expect(await up("a")).toEqual({ kind: "replay", body: '{"balance":5}' });
    expect(await up("b")).toEqual({ kind: "conflict" });
    expect(await up("a", "other")).toEqual({ kind: "done", body: '{"balance":10}' });
    expect(await store.topUp({ keyId: "nope", amount: 1, note: null, at: 1, idempotency: null, respond: () => "" })).toEqual({ kind: "not_found" });
  });

  it("groups usage by UTC day", async () => {
    await store.createKey(newKey("k", 10));
    for (const [i, at] of [Date.UTC(2026, 0, 1, 23), Date.UTC(2026, 0, 2, 1), Date.UTC(2026, 0, 2, 2)].entries()) {
      await store.reserve({ reservationId: `r${i}`, keyId: "k", amount: 1, at });
      await store.settle({ reservationId: `r${i}`, keyId: "k", hold: 1, cost: 1, usage: usage("k", `q${i}`, 1, at) });
    }
    const days = await store.usage({ keyId: null, from: 0, to: Date.UTC(2027, 0, 1), group: "day" });
    expect(days.map((d) => [d.group, d.requests])).toEqual([["2026-01-01", 1], ["2026-01-02", 2]]);
  });

  it("group-commits request-path writes once per event-loop turn, atomically", async () => {
    await store.createKey(newKey("k", 10));
    const reader = new Database(file, { readonly: true });
    const held = () => (reader.prepare("SELECT held FROM keys WHERE id = 'k'").get() as { held: number }).held;
    await store.reserve({ reservationId: "a", keyId: "k", amount: 1, at: 1 });
    await store.reserve({ reservationId: "b", keyId: "k", amount: 2, at: 1 });
    expect(held()).toBe(0); // not committed yet: another connection sees the last committed state
    await new Promise((resolve) => setImmediate(resolve));
    expect(held()).toBe(3); // one commit at the end of the turn covered both
    reader.close();
  });

  it("every failure is StoreUnavailableError (fail closed)", async () => {
    await store.close();
    await expect(store.getKey("k")).rejects.toBeInstanceOf(StoreUnavailableError);
    await expect(store.reserve({ reservationId: "r", keyId: "k", amount: 1, at: 1 })).rejects.toBeInstanceOf(StoreUnavailableError);
  });
});
