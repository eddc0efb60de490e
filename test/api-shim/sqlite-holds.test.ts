import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, expect, it } from "vitest";
import { SqliteStore } from "../../api-shim/src/store/sqlite-store.ts";
import { StoreUnavailableError } from "../../api-shim/src/store/store.ts";
import { newKey, usage } from "./store-contract.ts";

// What happens to a SQLite store's holds when a process dies or a settlement cannot be written:
// pinned by mutation reviews (the code was right; no test held it).
let dir: string;
let file: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "shim-holds-"));
  file = join(dir, "shim.db");
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

// A free request's hold (0 µc) left by a dead process must be released at start too, or
// requests_in_flight stays 1 for good and a final export (scripts/lib/retire-keys.ts) waits on it
// for ever.
it("a 0-credit hold left by a killed process is released at the next start", async () => {
  const dead = new SqliteStore(file);
  await dead.createKey(newKey("k", 10));
  expect(await dead.reserve({ reservationId: "free", keyId: "k", amount: 0, at: 1 })).toMatchObject({ ok: true });
  await dead.close(); // its holds stay in the key row, as after a SIGKILL
  const next = new SqliteStore(file);
  try {
    expect((await next.getKeyDetails("k"))!.holds).toBe(1);
    expect(await next.releaseStaleReservations()).toBe(1);
    expect((await next.getKeyDetails("k"))!.holds).toBe(0);
    expect(await next.audit()).toEqual([{ keyId: "k", balance: 10, held: 0, ledgerSum: 10, reservations: 0, reservedSum: 0 }]);
  } finally {
    await next.close();
  }
});

// sqlite-store.ts settle passes failsClosed = true to batched(); with
// false, a settlement that cannot take the write lock (another connection holds it past the busy
// timeout) is answered 503 and the store serves on with that hold taken from the key for good.
it("a settlement that cannot be written (the write lock held elsewhere past the busy timeout) fails the store closed: its hold is not left taken from the key while the store serves on", async () => {
  const failures: unknown[] = [];
  const store = new SqliteStore(file, { busyTimeoutMs: 200, onFailure: (e) => failures.push(e) });
  try {
    await store.createKey(newKey("k", 10));
    expect(await store.reserve({ reservationId: "r", keyId: "k", amount: 6, at: 1 })).toMatchObject({ ok: true });
    await store.flush();
    const other = new Database(file);
    other.pragma("busy_timeout = 0");
    other.exec("BEGIN IMMEDIATE");
    try {
      await expect(store.settle({ reservationId: "r", keyId: "k", hold: 6, cost: 1, usage: usage("k", "q", 1) })).rejects.toBeInstanceOf(StoreUnavailableError);
    } finally {
      other.exec("ROLLBACK");
      other.close();
    }
    // Failed closed: no request is admitted against a key whose 6 credits stay held by a settlement
    // that never happened (a restart releases them).
    expect(failures.length).toBe(1);
    await expect(store.reserve({ reservationId: "r2", keyId: "k", amount: 5, at: 2 })).rejects.toBeInstanceOf(StoreUnavailableError);
  } finally {
    await store.close().catch(() => {});
  }
});
