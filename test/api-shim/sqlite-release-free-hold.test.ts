import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, expect, it } from "vitest";
import { SqliteStore } from "../../api-shim/src/store/sqlite-store.ts";
import { newKey } from "./store-contract.ts";

// Pinned by a mutation review (the code was right; no test held it): a free request's hold (0 µc) left by a
// dead process must be released at start too, or requests_in_flight stays 1 for good and a final
// export (scripts/lib/retire-keys.ts) waits on it for ever.
let dir: string;
let file: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "mut-money-"));
  file = join(dir, "shim.db");
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

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
