import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { generateKey } from "../../api-shim/src/auth/keys.ts";
import type { CreditsLine } from "../../api-shim/src/store/credits-statement.ts";
import { creditsStatement } from "../../api-shim/src/store/sqlite-credits-statement.ts";
import { SqliteStore } from "../../api-shim/src/store/sqlite-store.ts";
import type { Store } from "../../api-shim/src/store/store.ts";
import { onBothStores } from "../support/both-stores.ts";

/**
 * store.credits(): per key, over a period [from, to), its balance at each end and what was granted
 * and spent between, read from the ledger. The same ledger, written through the store's own
 * calls, on both stores (the SQLite store's on a database file: its statement runs on the report
 * worker), must give the same statement, to the micro-credit, with the period's top-ups and their notes
 * and Idempotency-Keys, and the period's other grants (a key's credits at creation, a stack key's
 * bootstrap grant): every amount `granted` sums, listed, so an auditor ties each to an invoice.
 */
const FROM = Date.UTC(2026, 10, 1); // November 2026
const TO = Date.UTC(2026, 11, 1);
const DAY = 86_400_000;
const C = 1_000_000; // µc per credit

async function scenario(wrapStore?: () => Store): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "credits-statement-"));
  const store = wrapStore ? wrapStore() : new SqliteStore(join(dir, "shim.db"), { busyTimeoutMs: 5000 });
  try {
    const keys = await ledger(store);
    const lines = await store.credits({ keyId: null, asker: null, from: FROM, to: TO });
    expect(lines).toEqual(expected(keys).sort((a, b) => (a.keyId < b.keyId ? -1 : 1)));
    for (const l of lines) expect(l.opening + l.granted - l.spent - l.adjusted).toBe(l.closing);
    // `granted` is what the line lists as granted: its grants and its top-ups, no more, no less.
    const sum = (entries: { amount: number }[]) => entries.reduce((s, e) => s + e.amount, 0);
    for (const l of lines) expect(sum(l.grants) + sum(l.topUps)).toBe(l.granted);

    // One key: its line alone; a key without a ledger row before `to`: none.
    expect(await store.credits({ keyId: keys.alice, asker: null, from: FROM, to: TO })).toEqual(expected(keys).filter((l) => l.keyId === keys.alice));
    expect(await store.credits({ keyId: keys.later, asker: null, from: FROM, to: TO })).toEqual([]);
    // Periods tile: one's closing is the next one's opening, and the whole is their sum.
    const [october] = await store.credits({ keyId: keys.alice, asker: null, from: Date.UTC(2026, 9, 1), to: FROM });
    const [both] = await store.credits({ keyId: keys.alice, asker: null, from: Date.UTC(2026, 9, 1), to: TO });
    const november = expected(keys).find((l) => l.keyId === keys.alice)!;
    expect(october!.closing).toBe(november.opening);
    expect(october!.topUps).toEqual([{ at: FROM - 1, amount: 7 * C, note: "october's last millisecond", idempotencyKey: "INV-0999" }]);
    // alice's credits at creation: an entry of the month it was made in (October), none of the next.
    expect(october!.grants).toEqual([{ kind: "creation", at: FROM - 12 * DAY, amount: 100 * C, note: null, idempotencyKey: null }]);
    expect(november.grants).toEqual([]);
    expect(october!.granted).toBe(107 * C);
    expect(both).toEqual({
      ...november, opening: october!.opening, granted: october!.granted + november.granted, spent: october!.spent + november.spent,
      grants: [...october!.grants, ...november.grants], topUps: [...october!.topUps, ...november.topUps],
    });
    // The stack key's bootstrap grant, in October too (its client sent no Idempotency-Key: the
    // ledger's own `bootstrap:<id>` is not one).
    const [stackOctober] = await store.credits({ keyId: keys.stack, asker: null, from: Date.UTC(2026, 9, 1), to: FROM });
    expect(stackOctober).toMatchObject({ granted: 20 * C, grants: [{ kind: "bootstrap", at: FROM - 30 * DAY, amount: 20 * C, note: null, idempotencyKey: null }], topUps: [] });
  } finally {
    if (!wrapStore) await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The ledger: a key before the month (its grant, a charge in October, then a top-up, charges on
 * both bounds, a top-up in the month's last millisecond), a stack key (bootstrap, two top-ups in
 * the month's first millisecond), one created mid-month, one revoked mid-month (then written off), one that spends
 * all it has, one created with no credits and never used, one created after.
 */
async function ledger(store: Store): Promise<Record<"alice" | "stack" | "bob" | "carol" | "dave" | "idle" | "later", string>> {
  // alice's id starts lower-case and bob's upper-case: byte order (SQLite's, the contract's) puts
  // bob's first, a locale's collation alice's, as a Postgres database's default would sort them
  // without COLLATE "C" (the test cluster's default is ICU en-US: test/support/postgres.ts).
  const first = { alice: "alice", bob: "Bob" } as Record<string, string>;
  const key = async (name: string, credits: number, at: number) => {
    const { id, hash } = generateKey(first[name] === undefined ? undefined : (first[name] + Math.random().toString(36).slice(2)).replace(/[^0-9A-Za-z]/g, "0").slice(0, 12).padEnd(12, "0"));
    await store.createKey({ id, name, hash, tier: "default", models: null, expiresAt: null, credits, at });
    return id;
  };
  let n = 0;
  const charge = async (keyId: string, cost: number, at: number) => {
    const reservationId = `r${++n}`;
    expect(await store.reserve({ reservationId, keyId, amount: cost, at })).toMatchObject({ ok: true });
    await store.settle({
      reservationId, keyId, hold: cost, cost,
      usage: { requestId: reservationId, keyId, at, route: "/v1/chat/completions", model: "qwen2.5-7b", status: 200, promptTokens: 3, completionTokens: 4, cost, stream: false, ms: 5, served: true, priceId: "p", batch: false, cachedTokens: 0 },
    });
  };
  const topUp = async (keyId: string, amount: number, at: number, note: string | null, writeOff?: true, idempotencyKey?: string) => {
    const idempotency = idempotencyKey === undefined ? null : { key: idempotencyKey, fingerprint: `${amount}` };
    const result = await store.topUp({ keyId, amount, note, at, idempotency, respond: () => "{}", refuse: () => null, ...(writeOff ? { writeOff } : {}) });
    expect(result.kind).toBe("done");
  };

  const alice = await key("alice", 100 * C, FROM - 12 * DAY);
  await charge(alice, 2 * C, FROM - 6 * DAY);
  await topUp(alice, 7 * C, FROM - 1, "october's last millisecond", undefined, "INV-0999");
  await charge(alice, 1 * C, FROM); // the month's first instant: in it
  // The invoice number as the Idempotency-Key too (operations.md's month's invoice): the ledger
  // keeps it scoped (`credits:<key>:`), the statement shows it as the client sent it.
  await topUp(alice, 50 * C, FROM + 9 * DAY, "invoice 1042", undefined, "INV-1042");
  await charge(alice, 3_250_001, FROM + 11 * DAY);
  await topUp(alice, 5 * C, TO - 1, "the month's last millisecond");
  await charge(alice, 4 * C, TO); // the next month's first instant: not in it

  const stackKey = generateKey();
  await store.ensureBootstrapKey({ id: stackKey.id, name: "ops", hash: stackKey.hash, tier: "default", models: null, expiresAt: null, credits: 20 * C, at: FROM - 30 * DAY });
  // Two top-ups in the month's first millisecond (the period's `from` is in it): granted, listed in the order made.
  await topUp(stackKey.id, 3 * C, FROM, "invoice 2001");
  await topUp(stackKey.id, 2 * C, FROM, "invoice 2002");
  await charge(stackKey.id, 4 * C, FROM + 4 * DAY);

  const bob = await key("bob", 30 * C, FROM + 14 * DAY);
  await charge(bob, 5 * C, FROM + 15 * DAY);

  const carol = await key("carol", 10 * C, FROM - 29 * DAY);
  await charge(carol, 1 * C, FROM + 17 * DAY);
  expect(await store.revokeKey(carol, FROM + 19 * DAY)).toBe(true);
  await topUp(carol, 5 * C, FROM + 20 * DAY, "refund CN-3", true, "CN-3"); // a revoked key's credits written off: adjusted, not granted
  await topUp(carol, 1 * C, TO, null, true); // the next month's

  const dave = await key("dave", 2 * C, FROM + DAY); // spends all it has: a line that closes at 0
  await charge(dave, 2 * C, FROM + 3 * DAY);

  const idle = await key("idle", 0, FROM + 2 * DAY); // no ledger row at all
  const later = await key("later", 40 * C, TO + DAY);
  await charge(later, 1 * C, TO + 2 * DAY);
  return { alice, stack: stackKey.id, bob, carol, dave, idle, later };
}

function expected(k: Record<"alice" | "stack" | "bob" | "carol" | "dave", string>): CreditsLine[] {
  return [
    {
      keyId: k.alice, name: "alice", opening: 105 * C, granted: 55 * C, spent: 4_250_001, adjusted: 0, closing: 155_749_999, grants: [], writeOffs: [],
      topUps: [
        { at: FROM + 9 * DAY, amount: 50 * C, note: "invoice 1042", idempotencyKey: "INV-1042" },
        { at: TO - 1, amount: 5 * C, note: "the month's last millisecond", idempotencyKey: null },
      ],
    },
    {
      keyId: k.stack, name: "ops", opening: 20 * C, granted: 5 * C, spent: 4 * C, adjusted: 0, closing: 21 * C, grants: [], writeOffs: [],
      topUps: [{ at: FROM, amount: 3 * C, note: "invoice 2001", idempotencyKey: null }, { at: FROM, amount: 2 * C, note: "invoice 2002", idempotencyKey: null }],
    },
    { // its credits at creation: granted, a grant of its own, not a top-up
      keyId: k.bob, name: "bob", opening: 0, granted: 30 * C, spent: 5 * C, adjusted: 0, closing: 25 * C, topUps: [], writeOffs: [],
      grants: [{ kind: "creation", at: FROM + 14 * DAY, amount: 30 * C, note: null, idempotencyKey: null }],
    },
    {
      keyId: k.carol, name: "carol", opening: 10 * C, granted: 0, spent: 1 * C, adjusted: 5 * C, closing: 4 * C, grants: [], topUps: [],
      writeOffs: [{ at: FROM + 20 * DAY, amount: 5 * C, note: "refund CN-3", idempotencyKey: "CN-3" }],
    },
    {
      keyId: k.dave, name: "dave", opening: 0, granted: 2 * C, spent: 2 * C, adjusted: 0, closing: 0, topUps: [], writeOffs: [],
      grants: [{ kind: "creation", at: FROM + DAY, amount: 2 * C, note: null, idempotencyKey: null }],
    },
  ];
}

describe("credits statement (store.credits)", () => {
  onBothStores("opening, granted, spent and closing per key over a period, from the ledger; keys without a row before its end left out", scenario);
});

/**
 * The SQLite statement of every key reads the whole ledger before `to` (its history, not the
 * period alone): through the (key_id, at) index, which the planner takes for its GROUP BY, every
 * row was a lookup in a table whose pages hold every key's rows, 5 times as slow as reading the
 * table once (3 million rows: 11 s against 2.2 s; a statement past the report's 60 s bound fails
 * report-usage --group key). Timing is not a test on a shared machine: the plan is.
 */
describe("credits statement on SQLite: its plan", () => {
  it("every key's reads the ledger table in one pass; one key's through its (key_id, at) rows", async () => {
    const dir = mkdtempSync(join(tmpdir(), "credits-plan-"));
    try {
      await new SqliteStore(join(dir, "shim.db"), { busyTimeoutMs: 5000 }).close(); // the schema
      const db = new Database(join(dir, "shim.db"), { readonly: true });
      const plan = (keyId: string | null): string => {
        let sql = "";
        const prepare = db.prepare.bind(db);
        db.prepare = ((source: string) => ((sql = source), prepare(source))) as typeof db.prepare;
        creditsStatement(db, { keyId, from: FROM, to: TO });
        db.prepare = prepare;
        const params = { keyId, from: FROM, to: TO };
        return (db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(params) as { detail: string }[]).map((r) => r.detail).join(" | ");
      };
      expect(plan(null)).toMatch(/\bSCAN l\b(?! USING)/);
      expect(plan(null)).not.toContain("ledger_key_at");
      expect(plan("abcdefghijkl")).toContain("USING INDEX ledger_key_at (key_id=? AND at<?)");
      db.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  // The statement reads the whole history before `to`: a report given up (its bound passed, its
  // asker gone) must stop it mid-scan, or the report worker stays busy for the rest of it.
  it("stops mid-scan when its report is given up: `check` is called as the rows are read, and its throw ends the statement", async () => {
    const dir = mkdtempSync(join(tmpdir(), "credits-check-"));
    try {
      const store = new SqliteStore(join(dir, "shim.db"), { busyTimeoutMs: 5000 });
      const { id, hash } = generateKey();
      await store.createKey({ id, name: "busy", hash, tier: "default", models: null, expiresAt: null, credits: 100 * C, at: FROM - DAY });
      await store.close();
      const db = new Database(join(dir, "shim.db"));
      const insert = db.prepare("INSERT INTO ledger (key_id, at, amount, kind) VALUES (?, ?, -1, 'usage')");
      db.transaction(() => { for (let i = 0; i < 20_000; i++) insert.run(id, FROM + i); })();
      let checks = 0;
      const given = new Error("given up");
      // The first check is before the statement reads anything; the report is given up after it.
      expect(() => creditsStatement(db, { keyId: null, from: FROM, to: TO }, () => { if (++checks > 1) throw given; })).toThrow(given);
      expect(checks).toBe(2);
      // Unstopped, the same statement counts every row.
      expect(creditsStatement(db, { keyId: null, from: FROM, to: TO })[0]).toMatchObject({ keyId: id, spent: 20_000 });
      db.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
