import pg from "pg";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { neverSent, worthAnotherTry } from "../../api-shim/src/store/postgres-failures.ts";
import { PostgresStore, type PostgresStoreOptions } from "../../api-shim/src/store/postgres-store.ts";
import { type RunningPostgres, sqlOn, startPostgres } from "../support/postgres.ts";
import { pollUntil } from "../support/tools.ts";
import { frozenProxy } from "../support/frozen-proxy.ts";
import { durableTransaction } from "../../api-shim/src/store/postgres-client.ts";
import { LOCK_KEY, SETTLE, SETTLE_UNRESERVED } from "../../api-shim/src/store/postgres-sql.ts";
import { newKey, usage } from "./store-contract.ts";

/**
 * Found by a mutation review of the Postgres store's failure paths: behaviour the code had right
 * but no test pinned, each test failing under the mutant it names in its title's terms. What an
 * operator would notice otherwise: credits held until a restart, a sweep querying every 100 ms
 * for ever, a server session leaked per retried settlement, an inflated released-holds metric.
 */
const serverError = (severity: string, code: string, message = "an error") => Object.assign(new pg.DatabaseError(message, 0, "error"), { severity, code });

describe("failures refused before anything was sent (neverSent): not remembered, not tried again", () => {
  it("a name that does not resolve, a server at max_connections, a database that does not exist, an address that never answers", () => {
    const refused = [
      Object.assign(new Error("getaddrinfo ENOTFOUND db.internal"), { code: "ENOTFOUND", syscall: "getaddrinfo" }),
      serverError("FATAL", "53300", "sorry, too many clients already"),
      serverError("FATAL", "3D000", 'database "shim" does not exist'),
      new Error("Connection terminated due to connection timeout"), // pg's connect to an address that never answers
    ];
    for (const e of refused) expect({ e: String(e), neverSent: neverSent(e), tried: worthAnotherTry(e) }).toEqual({ e: String(e), neverSent: true, tried: false });
  });
});

describe("PostgresStore recovering from failures", () => {
  let server: RunningPostgres;
  let url: string;
  const open: PostgresStore[] = [];
  const replica = async (options: PostgresStoreOptions = {}) => {
    const s = await PostgresStore.open(url, options);
    open.push(s);
    return s;
  };
  let store: PostgresStore;
  const sql = <T extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<T[]> => sqlOn<T>(url, text, values);
  const cutLiveness = (owner: number) => sql("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND objid = $1::bigint::oid", [owner]);

  beforeAll(async () => {
    server = await startPostgres();
  }, 60_000);
  afterAll(() => server?.stop());
  beforeEach(async () => {
    url = await server.newDatabase();
    store = await replica();
    await store.usageIndex!.outcome;
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((s) => s.close()));
  });

  it("an admin write commits durably on the request path's sessions (synchronous_commit off there): an acknowledged top-up survives a Postgres crash", async () => {
    const pool = new pg.Pool({ connectionString: url, options: "-c synchronous_commit=off", max: 1 });
    try {
      const inside = await durableTransaction(pool, async (c) => (await c.query<{ synchronous_commit: string }>("SHOW synchronous_commit")).rows[0]!.synchronous_commit);
      expect(inside).toBe("on");
      // Only that transaction: the session keeps the request path's setting.
      expect((await pool.query<{ synchronous_commit: string }>("SHOW synchronous_commit")).rows[0]!.synchronous_commit).toBe("off");
    } finally {
      await pool.end();
    }
  });
  it("a sweep that saw a replica without its lock forgets it once that replica has taken its lock back (its holds adopted): no sweep after sweep against the database", async () => {
    await store.createKey(newKey("k", 10));
    const sweeps: number[] = [];
    const sweeper = await replica({ sweepGraceMs: 500, onReleased: (n) => sweeps.push(n) }); // its own interval: a minute
    const cut = await replica({ retryMs: 200 });
    await cut.reserve({ reservationId: "live", keyId: "k", amount: 5, at: 1 });
    const before = cut.owner;
    await cutLiveness(before);
    // Seen without its lock (within the grace): a sweep is due when the grace ends.
    await pollUntil(async () => (await sql("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND objid = $1::bigint::oid", [before])).length === 0);
    expect(await sweeper.releaseStaleReservations()).toBe(0);
    expect(await pollUntil(() => cut.owner !== before, 5000)).toBe(true);
    // The grace over, the owner id it saw is gone from the holds: one sweep then, not one every 100 ms.
    await new Promise((r) => setTimeout(r, 1500));
    const counted = sweeps.length;
    await new Promise((r) => setTimeout(r, 1000));
    expect(sweeps.length - counted).toBe(0);
    expect(await cut.settle({ reservationId: "live", keyId: "k", hold: 5, cost: 5, usage: usage("k", "q", 5) })).toEqual({ available: 5, charged: 5 });
  });
  it("a settlement tried again on a connection of its own closes that connection once answered: no server session left behind per retried settlement", async () => {
    await store.createKey(newKey("k", 10));
    const s = await replica({ retryMs: 100 });
    await s.reserve({ reservationId: "r1", keyId: "k", amount: 4, at: 1 });
    const shimPids = async () => (await sql<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE application_name = 'api-shim' AND datname = current_database()")).map((r) => r.pid);
    const before = new Set(await shimPids());
    const blocker = new pg.Client({ connectionString: url });
    await blocker.connect();
    try {
      await blocker.query("BEGIN");
      await blocker.query("SELECT 1 FROM keys WHERE id = 'k' FOR UPDATE");
      const settled = s.settle({ reservationId: "r1", keyId: "k", hold: 4, cost: 3, usage: usage("k", "ENDED", 3) });
      const waiting = () => sql<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE application_name = 'api-shim' AND wait_event_type = 'Lock' AND query = ANY($1)", [[SETTLE, SETTLE_UNRESERVED, LOCK_KEY]]);
      let first: { pid: number }[] = [];
      expect(await pollUntil(async () => (first = await waiting()).length === 1, 5000)).toBe(true);
      await sql("SELECT pg_terminate_backend($1)", [first[0]!.pid]);
      expect(await pollUntil(async () => { const w = await waiting(); return w.length === 1 && w[0]!.pid !== first[0]!.pid; }, 5000)).toBe(true);
      await blocker.query("ROLLBACK");
      expect(await settled).toEqual({ available: 7, charged: 3 });
    } finally {
      await blocker.end();
    }
    // The second try's server session ends with its answer (the pool keeps only its own).
    expect(await pollUntil(async () => (await shimPids()).every((pid) => before.has(pid)), 3000)).toBe(true);
  });
  it("two sweeps at once release a gone replica's holds once and say so once (shim_stale_reservations_released_total counts each hold once)", async () => {
    await store.createKey(newKey("k", 10));
    const sweeper = await replica({ sweepGraceMs: 0 });
    const dead = await replica();
    await dead.reserve({ reservationId: "a", keyId: "k", amount: 2, at: 1 });
    await dead.reserve({ reservationId: "b", keyId: "k", amount: 3, at: 1 });
    await dead.close();
    const counts = await Promise.all([sweeper.releaseStaleReservations(), sweeper.releaseStaleReservations()]);
    expect(counts.reduce((a, n) => a + n, 0)).toBe(2);
    expect((await store.getKey("k"))!.held).toBe(0);
  });

  it("each gone replica's holds are released when its own grace ends, not when the last-seen one's does", async () => {
    await store.createKey(newKey("k", 10));
    const sweeper = await replica({ sweepGraceMs: 3000 });
    const first = await replica();
    const second = await replica();
    await first.reserve({ reservationId: "first", keyId: "k", amount: 2, at: 1 });
    await second.reserve({ reservationId: "second", keyId: "k", amount: 3, at: 1 });
    await first.close();
    expect(await sweeper.releaseStaleReservations()).toBe(0); // the first seen without its lock
    // 2 s apart (not less): the check below must see the first's release before the second's on a loaded machine.
    await new Promise((r) => setTimeout(r, 2000));
    await second.close();
    expect(await sweeper.releaseStaleReservations()).toBe(0); // the second seen, 2 s later
    const holds = async () => (await sql<{ id: string }>("SELECT id FROM reservations ORDER BY id")).map((r) => r.id);
    // The first's grace ends first: its holds go then, while the second's still wait.
    expect(await pollUntil(async () => !(await holds()).includes("first"), 8000)).toBe(true);
    expect(await holds()).toEqual(["second"]);
  });
  it("a settlement's hold released later is released even when the database is still away at the first tries, and again at a second outage", async () => {
    await store.createKey(newKey("k", 10));
    const withTries = async <T,>(fn: () => Promise<T>): Promise<T> => {
      for (let tries = 1; ; tries++) {
        try {
          return await fn();
        } catch (e) {
          if (tries >= 10) throw e;
        }
      }
    };
    const busy = await withTries(async () => {
      const s = await replica({ timeoutMs: 300, retryMs: 100 });
      await s.getKey("k");
      return s;
    });
    const { pool } = busy as unknown as { pool: pg.Pool };
    // Every pooled connection taken for a second: the settlement and the first tries at releasing its hold time out.
    const outage = async (reservationId: string) => {
      const taken: pg.PoolClient[] = [];
      for (let i = 0; i < 10; i++) taken.push(await withTries(() => pool.connect()));
      await expect(busy.settle({ reservationId, keyId: "k", hold: 5, cost: 5, usage: usage("k", reservationId, 5) })).rejects.toThrow();
      await new Promise((r) => setTimeout(r, 1000));
      for (const c of taken) c.release();
    };
    expect(await busy.reserve({ reservationId: "r1", keyId: "k", amount: 5, at: 1 })).toMatchObject({ ok: true });
    expect(await busy.reserve({ reservationId: "r2", keyId: "k", amount: 4, at: 1 })).toMatchObject({ ok: true });
    await outage("r1");
    expect(await pollUntil(async () => (await store.getKey("k"))!.held === 4, 5000, 50)).toBe(true);
    await outage("r2");
    expect(await pollUntil(async () => (await store.getKey("k"))!.held === 0, 5000, 50)).toBe(true);
    expect(await store.audit()).toEqual([{ keyId: "k", balance: 10, held: 0, ledgerSum: 10, reservations: 0, reservedSum: 0 }]);
  });
  it("a reserve whose statement never arrived (its connection cut) is forgotten once it cannot still commit: not released again every second for ever", async () => {
    const proxy = await frozenProxy(url);
    try {
      const s = await PostgresStore.open(proxy.url, { retryMs: 100, timeoutMs: 1000 });
      open.push(s);
      await s.createKey(newKey("k", 10));
      proxy.loseAnswer((p) => p.includes("NEVER"), false);
      await expect(s.reserve({ reservationId: "NEVER", keyId: "k", amount: 2, at: 1 })).rejects.toThrow();
      const doubtful = () => (s as unknown as { doubtful: { size: number } }).doubtful.size;
      expect(doubtful()).toBe(1);
      // Statement bound ×2 + 1 s after the failure, no statement of it can still commit: forgotten.
      expect(await pollUntil(() => doubtful() === 0, 8000, 100)).toBe(true);
      expect((await s.getKey("k"))!.held).toBe(0);
    } finally {
      await proxy.close();
    }
  });

  it("a replica closed while a settlement's hold waits to be released releases it as it closes, not a sweep's grace later", async () => {
    await store.createKey(newKey("k", 10));
    let busy!: PostgresStore;
    for (let tries = 1; ; tries++) {
      try {
        busy = await replica({ timeoutMs: 300, retryMs: 60_000 }); // no retry before the close
        await busy.getKey("k");
        break;
      } catch (e) {
        if (tries >= 10) throw e;
      }
    }
    expect(await busy.reserve({ reservationId: "r1", keyId: "k", amount: 5, at: 1 })).toMatchObject({ ok: true });
    const { pool } = busy as unknown as { pool: pg.Pool };
    const taken: pg.PoolClient[] = [];
    for (let i = 0; i < 10; i++) taken.push(await pool.connect());
    await expect(busy.settle({ reservationId: "r1", keyId: "k", hold: 5, cost: 5, usage: usage("k", "r1", 5) })).rejects.toThrow();
    for (const c of taken) c.release();
    await busy.close();
    expect(await store.audit()).toEqual([{ keyId: "k", balance: 10, held: 0, ledgerSum: 10, reservations: 0, reservedSum: 0 }]);
  });
});
