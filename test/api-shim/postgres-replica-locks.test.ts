import { afterAll, afterEach, beforeAll, beforeEach, expect, it } from "vitest";
import { PostgresStore, type PostgresStoreOptions } from "../../api-shim/src/store/postgres-store.ts";
import { StoreUnavailableError } from "../../api-shim/src/store/store.ts";
import { type RunningPostgres, sqlOn, startPostgres } from "../support/postgres.ts";
import { pollUntil } from "../support/tools.ts";
import { newKey, usage } from "./store-contract.ts";

// What the Postgres store's locks between replicas guard (found unpinned by a mutation review).
let server: RunningPostgres;
let url: string;
const open: PostgresStore[] = [];
const replica = async (options: PostgresStoreOptions = {}) => {
  const s = await PostgresStore.open(url, options);
  open.push(s);
  return s;
};
beforeAll(async () => {
  server = await startPostgres();
}, 60_000);
afterAll(() => server?.stop());
beforeEach(async () => {
  url = await server.newDatabase();
});
afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()));
});

/** Ends the session holding `owner`'s liveness lock, as a network blip or a database restart does. */
const cutLiveness = (owner: number) => sqlOn(url, "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND objid = $1::bigint::oid", [owner]);

// postgres-store.ts reserve(): this.requireLock(). Without it, a replica whose liveness session was
// cut admits holds under its old, lockless owner id; another replica sweeps them, admits the same
// credit again, and the first request settles without a hold, charged 0: served free.
it("a replica without its liveness lock makes no hold (503): credit for one request is not admitted twice", async () => {
  const cut = await replica({ retryMs: 60_000 }); // takes its lock back only after the test
  await cut.createKey(newKey("k", 1)); // credit for exactly one request
  const other = await replica({ sweepGraceMs: 0 });
  await cutLiveness(cut.owner);
  expect(await pollUntil(() => cut.ping().then(() => false, () => true))).toBe(true); // it knows it lost the lock
  const first = await cut.reserve({ reservationId: "a", keyId: "k", amount: 1, at: 1 }).catch((e: unknown) => e);
  await other.releaseStaleReservations();
  const second = await other.reserve({ reservationId: "b", keyId: "k", amount: 1, at: 1 });
  const admitted = [first, second].filter((r) => (r as { ok?: boolean }).ok === true).length;
  if ((first as { ok?: boolean }).ok) await cut.settle({ reservationId: "a", keyId: "k", hold: 1, cost: 1, usage: usage("k", "qa", 1) });
  if (second.ok) await other.settle({ reservationId: "b", keyId: "k", hold: 1, cost: 1, usage: usage("k", "qb", 1) });
  const served = await sqlOn<{ n: number; charged: number }>(url, "SELECT count(*)::int AS n, -sum(amount)::int AS charged FROM ledger WHERE kind = 'usage'");
  expect({ admitted, served }).toEqual({ admitted: 1, served: [{ n: 1, charged: 1 }] });
  expect((await other.audit())[0]).toMatchObject({ balance: 0, held: 0, ledgerSum: 0 });
  expect(first).toBeInstanceOf(StoreUnavailableError);
});

// postgres-admin.ts updateKeyIn: the advisory lock on the key's name before the namesake check.
// Without it, two expired keys of one name brought back at once (PATCH expires_at on two replicas)
// both pass the check: two keys in use with one name (`--key <name>` then picks either).
it("two expired keys of one name brought back at once on two replicas: exactly one is, the other is refused name_in_use", async () => {
  const a = await replica();
  const b = await replica();
  let bothLive = 0;
  for (let i = 0; i < 30; i++) {
    await a.createKey({ ...newKey(`x${i}`, 1), name: `n${i}`, expiresAt: 5 });
    await a.createKey({ ...newKey(`y${i}`, 1), name: `n${i}`, expiresAt: 5 });
    const results = await Promise.all([a.updateKey(`x${i}`, { expiresAt: null }, 10), b.updateKey(`y${i}`, { expiresAt: null }, 10)]);
    if (results.every((r) => r.kind === "done")) bothLive++;
    else expect(results.map((r) => r.kind).sort()).toEqual(["done", "name_in_use"]);
  }
  expect(bothLive).toBe(0);
});
