import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { SqliteStore } from "../../api-shim/src/store/sqlite-store.ts";
import { StoreUnavailableError } from "../../api-shim/src/store/store.ts";
import { newKey as contractKey } from "./store-contract.ts";

// Another connection (an operator's sqlite3 shell) holding SQLite's write lock: admin writes give
// up after busy_timeout; requests queued behind it go first once it is free.
const newKey = (id: string, credits: number) => ({ ...contractKey(id, credits), hash: `sha256:${id.charCodeAt(0).toString(16).padStart(2, "0").repeat(32)}` });

describe("an admin write behind another connection's write lock", () => {
  it("gives up once busy_timeout has passed (a 503 the operator can retry), not waiting for ever; once the lock is free it goes through", async () => {
    const dir = mkdtempSync(join(tmpdir(), "shim-admin-busy-"));
    const file = join(dir, "shim.db");
    const store = new SqliteStore(file, { busyTimeoutMs: 200 });
    const other = new Database(file);
    try {
      await store.createKey(newKey("a", 1));
      other.exec("BEGIN IMMEDIATE"); // an operator's sqlite3 shell holding the write lock
      const started = performance.now();
      const outcome = await Promise.race([
        store.createKey(newKey("b", 1)).then(() => "written", (e: unknown) => e),
        new Promise((r) => setTimeout(() => r("still waiting"), 5000)),
      ]);
      expect(outcome).toBeInstanceOf(StoreUnavailableError);
      expect(performance.now() - started).toBeLessThan(3000);
      other.exec("ROLLBACK");
      await store.createKey(newKey("c", 1));
      expect((await store.listKeys()).map((k) => k.id).sort()).toEqual(["a", "c"]);
    } finally {
      if (other.inTransaction) other.exec("ROLLBACK");
      other.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("operations that come while others wait for the write lock", () => {
  it("wait behind them once the lock is free, rather than opening a batch the queued retry then meets (BEGIN inside a transaction): no failure, the store stays open", async () => {
    const dir = mkdtempSync(join(tmpdir(), "shim-lock-order-"));
    const file = join(dir, "shim.db");
    const store = new SqliteStore(file, { busyTimeoutMs: 3000 });
    const other = new Database(file);
    try {
      await store.createKey(newKey("k", 1_000_000));
      other.exec("BEGIN IMMEDIATE");
      const all: Promise<unknown>[] = [];
      for (let i = 0; i < 5; i++) all.push(store.reserve({ reservationId: `w${i}`, keyId: "k", amount: 1, at: 1 }));
      await new Promise((r) => setTimeout(r, 50));
      other.exec("ROLLBACK");
      // Requests keep coming, every turn, for a while: some arrive while the waiters' retry is due.
      const until = performance.now() + 150;
      for (let i = 0; performance.now() < until; i++) {
        all.push(store.reserve({ reservationId: `n${i}`, keyId: "k", amount: 1, at: 1 }));
        await new Promise((r) => setImmediate(r));
      }
      const outcomes = await Promise.allSettled(all);
      expect(outcomes.filter((o) => o.status === "rejected").map((o) => String((o as PromiseRejectedResult).reason))).toEqual([]);
      await expect(store.ping()).resolves.toBeUndefined();
    } finally {
      if (other.inTransaction) other.exec("ROLLBACK");
      other.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

