import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { PostgresStore } from "../../api-shim/src/store/postgres-store.ts";
import { SqliteStore } from "../../api-shim/src/store/sqlite-store.ts";
import type { Store } from "../../api-shim/src/store/store.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";
import { type RunningPostgres, startPostgres } from "../support/postgres.ts";
import { newKey } from "./store-contract.ts";

// Pinned by a mutation review (the code was right; no test held it): the stored Idempotency-Key
// without the key's id. Two keys topped up with the same Idempotency-Key (a script using
// "monthly-2026-12" for every tenant) must each get their credits, not the first key's replay.
async function perKey(store: Store) {
  await store.createKey(newKey("a", 0));
  await store.createKey(newKey("b", 0));
  const up = (keyId: string) => store.topUp({ keyId, amount: 5, note: null, at: 1, idempotency: { key: "monthly", fingerprint: "f" }, respond: (k) => JSON.stringify({ id: k.id, balance: k.balance }), refuse: () => null });
  expect(await up("a")).toEqual({ kind: "done", body: '{"id":"a","balance":5}' });
  expect(await up("b")).toEqual({ kind: "done", body: '{"id":"b","balance":5}' });
  expect((await store.audit()).map((r) => [r.keyId, r.balance])).toEqual([["a", 5], ["b", 5]]);
}

it("SqliteStore: an Idempotency-Key is per key", async () => {
  const s = new SqliteStore(":memory:");
  try { await perKey(s); } finally { await s.close(); }
});

describe("PostgresStore", () => {
  let server: RunningPostgres;
  beforeAll(async () => { server = await startPostgres(); }, 60_000);
  afterAll(() => server?.stop());
  it("an Idempotency-Key is per key", async () => {
    const s = await PostgresStore.open(await server.newDatabase());
    try { await perKey(s); } finally { await s.close(); }
  });
});

// Pinned by a mutation review (the code was right; no test held it): the same key and amount with
// another note is another request: 409, not a replay that drops the new note.
describe("admin top-up fingerprint", () => {
  let h: Harness;
  beforeEach(async () => { h = await startShim(); });
  afterEach(() => h.close());
  it("a reused Idempotency-Key with another note is a 409", async () => {
    const { id } = await h.createKey();
    const topUp = (note: string) => h.admin(`/admin/keys/${id}/credits`, { method: "POST", headers: { "idempotency-key": "once" }, body: JSON.stringify({ amount: 5, note }) });
    expect((await topUp("invoice 1")).status).toBe(200);
    expect((await topUp("invoice 2")).status).toBe(409);
  });
});
