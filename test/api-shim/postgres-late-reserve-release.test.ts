import pg from "pg";
import { afterAll, afterEach, beforeAll, beforeEach, expect, it } from "vitest";
import { PostgresStore } from "../../api-shim/src/store/postgres-store.ts";
import { StoreUnavailableError } from "../../api-shim/src/store/store.ts";
import { type FrozenProxy, frozenProxy } from "../support/frozen-proxy.ts";
import { type RunningPostgres, sqlOn, startPostgres } from "../support/postgres.ts";
import { pollUntil } from "../support/tools.ts";
import { newKey } from "./store-contract.ts";

// Pinned by a mutation review (the code was right; no test held it):
// a reserve whose answer was lost while it waited behind the key's row lock commits after the
// first try found nothing; it must still be released by a later try, not stay held (the key's
// credit taken) for as long as the replica lives.
let server: RunningPostgres;
let url: string;
let proxy: FrozenProxy;
let s: PostgresStore;
beforeAll(async () => { server = await startPostgres(); }, 60_000);
afterAll(() => server?.stop());
beforeEach(async () => {
  url = await server.newDatabase();
  proxy = await frozenProxy(url);
  s = await PostgresStore.open(proxy.url, { retryMs: 100, timeoutMs: 1000 });
  await s.createKey(newKey("k", 10));
});
afterEach(async () => { await s.close(); proxy.close(); });

it("a reserve that commits after the first release try is released by a later one", async () => {
  const blocker = new pg.Client({ connectionString: url });
  await blocker.connect();
  try {
    await blocker.query("BEGIN");
    await blocker.query("SELECT 1 FROM keys WHERE id = 'k' FOR UPDATE");
    proxy.loseAnswer((p) => p.includes("RESLATE"));
    await expect(s.reserve({ reservationId: "RESLATE", keyId: "k", amount: 2, at: 1 })).rejects.toBeInstanceOf(StoreUnavailableError);
    const waiting = async () => (await sqlOn(url, "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'")).length >= 1;
    expect(await pollUntil(waiting, 2000)).toBe(true);
    await new Promise((r) => setTimeout(r, 400)); // release tries at 100 ms have found nothing yet
    await blocker.query("COMMIT");
  } finally {
    await blocker.end();
  }
  expect(await pollUntil(async () => (await s.audit())[0]!.held === 0, 5000)).toBe(true);
  expect(await s.audit()).toEqual([{ keyId: "k", balance: 10, held: 0, ledgerSum: 10, reservations: 0, reservedSum: 0 }]);
});
