import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildApp } from "../../api-shim/src/app.ts";
import { createLogger } from "../../api-shim/src/observability/logger.ts";
import { createUpstream } from "../../api-shim/src/upstream/upstream.ts";
import { systemClock } from "../../api-shim/src/clock.ts";
import { PostgresStore } from "../../api-shim/src/store/postgres-store.ts";
import { SqliteStore } from "../../api-shim/src/store/sqlite-store.ts";
import type { Store } from "../../api-shim/src/store/store.ts";
import { onBothStores } from "../support/both-stores.ts";
import { expectLedgerMatches, startShim } from "../support/shim-harness.ts";
import { type RunningPostgres, startPostgres } from "../support/postgres.ts";
import { tempDir } from "../support/tools.ts";
import { newKey } from "./store-contract.ts";

/**
 * A reseller's billing system creates a key, loses the answer and sends the creation again: with
 * the same Idempotency-Key it must get the first key back (its id, no second key, no second
 * creation grant), never a second key with its credits granted twice.
 */
describe("POST /admin/keys with an Idempotency-Key", () => {
  onBothStores("SQLite store: a retry answers the first key (200, replayed, no secret), another body is a 409, copies at once make one key", scenario, 30_000);
});

interface Answer { status: number; replayed: string | null; body: Record<string, unknown> }

async function scenario(wrapStore?: () => Store): Promise<void> {
  const h = await startShim(wrapStore ? { wrapStore } : {});
  try {
    const store = wrapStore ? wrapStore() : h.store;
    const create = async (body: Record<string, unknown>, idem?: string): Promise<Answer> => {
      const res = await h.admin("/admin/keys", { method: "POST", headers: idem === undefined ? {} : { "idempotency-key": idem }, body: JSON.stringify(body) });
      return { status: res.status, replayed: res.headers.get("idempotent-replayed"), body: (await res.json()) as Record<string, unknown> };
    };
    const order = { name: "acme-order-7", credits: 50, tier: "enterprise" };

    const first = await create(order, "order-7");
    expect(first.status).toBe(201);
    expect(first.replayed).toBeNull();
    expect(first.body.key).toMatch(/^sk-gs-/);

    // The retry: the same key, as it is now, without the secret (only its hash is kept).
    const retry = await create({ ...order, credits: "50.0" }, "order-7");
    expect(retry.status).toBe(200);
    expect(retry.replayed).toBe("true");
    expect(retry.body).toEqual({ ...first.body, key: null });
    const listed = (await (await h.admin("/admin/keys")).json()) as { data: { id: string; name: string; balance: number }[] };
    expect(listed.data.filter((k) => k.name === order.name).map((k) => [k.id, k.balance])).toEqual([[first.body.id, 50]]);
    await expectLedgerMatches(store, first.body.id as string);

    // The same Idempotency-Key with another request: refused as a top-up's, nothing made.
    for (const other of [{ ...order, credits: 60 }, { ...order, name: "acme-order-8" }, { ...order, tier: "developer" }, { ...order, expires_at: "2099-01-01" }, { ...order, models: ["bge-m3"] }]) {
      const conflict = await create(other, "order-7");
      expect(conflict.status).toBe(409);
      expect(conflict.body).toMatchObject({ error: { type: "invalid_request_error", code: "idempotency_key_reused", param: "Idempotency-Key" } });
    }
    expect((await store.listKeys()).length).toBe(1);

    // A replay after the key was revoked says so: it is the key as it is now.
    await h.admin(`/admin/keys/${first.body.id as string}`, { method: "DELETE" });
    const afterRevoke = await create(order, "order-7");
    expect(afterRevoke.status).toBe(200);
    expect(afterRevoke.body).toMatchObject({ id: first.body.id, key: null, revoked_at: expect.any(String) });

    // Copies sent at once (a client that timed out and retried while the first was running): one key.
    const copies = await Promise.all(Array.from({ length: 12 }, () => create({ name: "acme-order-9", credits: 5 }, "order-9")));
    expect(copies.map((c) => c.status).sort()).toEqual([200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 201]);
    expect(new Set(copies.map((c) => c.body.id)).size).toBe(1);
    expect((await store.listKeys()).filter((k) => k.name === "acme-order-9").map((k) => k.balance)).toEqual([5_000_000]);

    // Without the header, or with another key, a creation is a new key, as before.
    expect((await create(order)).status).toBe(201);
    expect((await create(order)).status).toBe(201);
    expect((await create(order, "order-10")).status).toBe(201);
    expect((await store.listKeys()).filter((k) => k.name === order.name)).toHaveLength(4);

    // The header's limits are a top-up's.
    const long = await create(order, "k".repeat(201));
    expect(long.status).toBe(400);
    expect(long.body).toMatchObject({ error: { param: "Idempotency-Key" } });
  } finally {
    await h.close();
  }
}

/** The answer to a retry survives a restart: the store's, read by a new store on the same database. */
async function acrossRestart(open: () => Promise<Store>): Promise<void> {
  const once = { key: "order-11", fingerprint: "f1" };
  const before = await open();
  let made: string;
  try {
    const created = await before.createKeyOnce(newKey("aaaaaaaaaa11", 7_000_000), once);
    expect(created.kind).toBe("done");
    made = created.kind === "done" ? created.key.id : "";
  } finally {
    await before.close();
  }
  const after = await open();
  try {
    expect(await after.createKeyOnce(newKey("bbbbbbbbbb11", 7_000_000), once)).toEqual({ kind: "replay", keyId: made });
    expect(await after.createKeyOnce(newKey("cccccccccc11", 8_000_000), { ...once, fingerprint: "f2" })).toEqual({ kind: "conflict" });
    expect((await after.listKeys()).map((k) => [k.id, k.balance])).toEqual([[made, 7_000_000]]);
  } finally {
    await after.close();
  }
}

/** Copies at once, straight to the store (the HTTP path spaces them out): one key, every other copy its replay. */
async function atOnce(store: Store): Promise<void> {
  await Promise.all(Array.from({ length: 10 }, () => store.listKeys())); // the pool's connections open, so the copies do overlap
  const results = await Promise.all(Array.from({ length: 20 }, (_, i) => store.createKeyOnce(newKey(`copy${String(i).padStart(8, "0")}`, 3_000_000), { key: "order-12", fingerprint: "f" })));
  const made = results.filter((r) => r.kind === "done");
  expect(made).toHaveLength(1);
  const id = made[0]!.kind === "done" ? made[0]!.key.id : "";
  expect(results.filter((r) => r.kind === "replay")).toEqual(Array(19).fill({ kind: "replay", keyId: id }));
  expect((await store.listKeys()).map((k) => [k.id, k.balance])).toEqual([[id, 3_000_000]]);
}

it("SqliteStore: a creation's Idempotency-Key is kept across a restart", async () => {
  const file = `${tempDir("key-idem-")}/shim.db`;
  await acrossRestart(async () => new SqliteStore(file));
});

it("SqliteStore: copies of a creation sent at once make one key", async () => {
  const store = new SqliteStore(`${tempDir("key-idem-")}/shim.db`);
  try { await atOnce(store); } finally { await store.close(); }
});

describe("PostgresStore", () => {
  let server: RunningPostgres;
  beforeAll(async () => { server = await startPostgres(); }, 60_000);
  afterAll(() => server?.stop());
  it("a creation's Idempotency-Key is kept across a restart", async () => {
    const url = await server.newDatabase();
    await acrossRestart(() => PostgresStore.open(url));
  }, 60_000);
  it("copies of a creation sent at once make one key", async () => {
    const store = await PostgresStore.open(await server.newDatabase());
    try { await atOnce(store); } finally { await store.close(); }
  }, 60_000);
});

// The operator changes SHIM_CONFIG's defaultTier and restarts the shim (a new app on the same
// ledger) while a billing system still retries a creation that named no tier: the retry is the
// same request, so it gets its key back, not a 409 and not a second key.
it("a retry that names no tier replays across a change of the default tier", async () => {
  const h = await startShim();
  try {
    const order = { name: "acme-order-13", credits: 5 };
    const first = await h.admin("/admin/keys", { method: "POST", headers: { "idempotency-key": "order-13" }, body: JSON.stringify(order) });
    expect(first.status).toBe(201);
    const made = (await first.json()) as { id: string; tier: string };
    expect(made.tier).not.toBe("pro");
    const restarted = buildApp({
      config: { ...h.config, defaultTier: "pro" }, store: h.store,
      upstream: createUpstream({ url: h.config.upstreamUrl, apiKey: h.config.upstreamApiKey, headersTimeoutMs: 5000, idleTimeoutMs: 5000 }),
      clock: systemClock, logger: createLogger({ level: "warn", pretty: false, destination: { write: () => {} } }),
    });
    try {
      const retry = await restarted.inject({
        method: "POST", url: "/admin/keys", payload: order,
        headers: { authorization: `Bearer ${h.adminToken}`, "content-type": "application/json", "idempotency-key": "order-13" },
      });
      expect(retry.statusCode).toBe(200);
      expect(retry.headers["idempotent-replayed"]).toBe("true");
      expect(retry.json()).toMatchObject({ id: made.id, tier: made.tier, key: null });
      expect((await h.store.listKeys()).filter((k) => k.name === order.name)).toHaveLength(1);
    } finally {
      await restarted.close();
    }
  } finally {
    await h.close();
  }
});
