import { spawn, spawnSync } from "node:child_process";
import { chmodSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { generateKey } from "../../api-shim/src/auth/keys.ts";
import { distinctPrices } from "../../api-shim/src/money/price-record.ts";
import { durableTransaction } from "../../api-shim/src/store/postgres-client.ts";
import { cutSocket, OpenConnections } from "../../api-shim/src/store/postgres-connections.ts";
import { probeSessions, sessionSettings } from "../../api-shim/src/store/postgres-sessions.ts";
import { LOCK_CLASS, PG_MIGRATIONS } from "../../api-shim/src/store/postgres-migrations.ts";
import { neverSent, worthAnotherTry } from "../../api-shim/src/store/postgres-failures.ts";
import { reportSql } from "../../api-shim/src/store/postgres-reports.ts";
import { requestsPgSql, requestsPgValues } from "../../api-shim/src/store/request-rows.ts";
import { LOCK_KEY, SETTLE, SETTLE_UNRESERVED } from "../../api-shim/src/store/postgres-sql.ts";
import { UsageIndexBuild, type UsageIndexOutcome } from "../../api-shim/src/store/postgres-usage-index.ts";
import { Turns } from "../../api-shim/src/store/turns.ts";
import { PostgresStore, type PostgresStoreOptions, SHUTDOWN_MS } from "../../api-shim/src/store/postgres-store.ts";
import { ClientLeftError, SchemaOwnerNeededError, SessionSettingsError, StoreUnavailableError } from "../../api-shim/src/store/store.ts";
import { type FrozenProxy, frozenProxy } from "../support/frozen-proxy.ts";
import { type Harness, startShim } from "../support/shim-harness.ts";
import { type RunningPgbouncer, startPgbouncer } from "../support/pgbouncer.ts";
import { type RunningPostgres, sqlOn, startPostgres, USER } from "../support/postgres.ts";
import { previousStores } from "../support/previous-version.ts";
import { ShimStartError, spawnShim, writeProcessConfig } from "../support/shim-process.ts";
import { freePort, pollUntil, tempDir } from "../support/tools.ts";
import { trackChild } from "../support/running-children.ts";
import { failedUsage, newKey, storeContract, usage } from "./store-contract.ts";

/** A server's error as pg gives it (severity and SQLSTATE as the server sent them). */
const serverError = (severity: string, code: string, message = "an error") => Object.assign(new pg.DatabaseError(message, 0, "error"), { severity, code });

describe("which failed settlements get one more try on a connection of their own (worthAnotherTry)", () => {
  it("those that may have committed (no answer from the server), and those the server ended from outside or asks to be tried again", () => {
    const tried = [
      Object.assign(new Error("Connection terminated unexpectedly"), {}), // the answer lost
      Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET", syscall: "read" }),
      new Error("Query read timeout"), // the client's own bound
      serverError("FATAL", "57P01", "terminating connection due to administrator command"), // pg_terminate_backend, a fast shutdown
      serverError("FATAL", "57P02"), // crash of another server process
      serverError("FATAL", "08P01"), // class 08: connection exception
      serverError("ERROR", "08006"),
      serverError("FATAL", "XX000"), // any FATAL ends the session
      serverError("ERROR", "40P01", "deadlock detected"),
      serverError("ERROR", "40001", "could not serialize access due to concurrent update"),
      serverError("ERROR", "57014", "canceling statement due to user request"), // pg_cancel_backend
    ];
    for (const e of tried) expect(worthAnotherTry(e), String(e)).toBe(true);
  });

  it("not those that fail the same way again, nor those never sent", () => {
    const notTried = [
      serverError("ERROR", "57014", "canceling statement due to statement timeout"), // the store's own bound: a second would double the wait
      serverError("ERROR", "57014", "Anweisung wegen Zeitüberschreitung abgebrochen"), // words not understood: taken as a timeout
      serverError("ERROR", "23505", "duplicate key value violates unique constraint"),
      serverError("ERROR", "25006", "cannot execute UPDATE in a read-only transaction"),
      serverError("ERROR", "42501", "permission denied for table ledger"),
      serverError("FATAL", "57P03", "the database system is shutting down"), // at connection: never sent
      serverError("FATAL", "28P01", "password authentication failed"),
      Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED", syscall: "connect" }),
      new Error("timeout exceeded when trying to connect"),
    ];
    for (const e of notTried) expect(worthAnotherTry(e), String(e)).toBe(false);
  });

  it("none of those refused before anything was sent (not remembered as doubtful either): a name that does not resolve, a server at max_connections, a database that does not exist, an address that never answers", () => {
    const refused = [
      Object.assign(new Error("getaddrinfo ENOTFOUND db.internal"), { code: "ENOTFOUND", syscall: "getaddrinfo" }),
      serverError("FATAL", "53300", "sorry, too many clients already"),
      serverError("FATAL", "3D000", 'database "shim" does not exist'),
      new Error("Connection terminated due to connection timeout"), // pg's connect to an address that never answers
    ];
    for (const e of refused) expect({ e: String(e), neverSent: neverSent(e), tried: worthAnotherTry(e) }).toEqual({ e: String(e), neverSent: true, tried: false });
  });
});

/**
 * The store for several replicas, against a real PostgreSQL server. "Replicas" here are several
 * PostgresStore instances on one database, each with its own pool and liveness lock, as separate
 * processes would have.
 */
describe("PostgresStore", () => {
  let server: RunningPostgres;
  let url: string;
  const open: PostgresStore[] = [];
  const replica = async (options: PostgresStoreOptions = {}) => {
    const s = await PostgresStore.open(url, options);
    open.push(s);
    return s;
  };
  let store: PostgresStore;
  /** `fn`, tried again (up to 10 times in all) while it fails: for a store's start or a connection under a bound of a few hundred ms, which CI's load can exceed (not what those tests pin). */
  const withTries = async <T,>(fn: () => Promise<T>): Promise<T> => {
    for (let tries = 1; ; tries++) {
      try {
        return await fn();
      } catch (e) {
        if (tries >= 10) throw e;
      }
    }
  };
  const sql = <T extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<T[]> => sqlOn<T>(url, text, values);

  beforeAll(async () => {
    server = await startPostgres();
  }, 60_000);
  afterAll(() => server?.stop());
  beforeEach(async () => {
    url = await server.newDatabase();
    store = await replica();
    // Its background index build done: a test that then locks the ledger (as a long scan would)
    // must not deadlock with it, which PostgreSQL ends by cancelling one of the two.
    await store.usageIndex!.outcome;
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((s) => s.close()));
  });

  storeContract(() => store);

  it("migrates once, also when replicas start together; re-opening keeps the data", async () => {
    const [a, b] = await Promise.all([replica(), replica()]);
    expect(a.owner).not.toBe(b.owner);
    expect(await sql("SELECT version FROM shim_schema_version")).toEqual([{ version: PG_MIGRATIONS.length }]);
    // One of them builds the usage rows' time index; the others find it there (once built).
    const outcomes = (await Promise.all([store, a, b].map((s) => s.usageIndex!.outcome))).map((o) => o.kind);
    expect(outcomes.sort()).toEqual(["built", "present", "present"]);
    await store.createKey(newKey("k1", 5));
    await store.close();
    expect((await (await replica()).getKey("k1"))!).toMatchObject({ balance: 5, held: 0, models: null });
  });

  it("refuses a database a newer shim made (a schema version it does not know), writing nothing", async () => {
    await sql("UPDATE shim_schema_version SET version = $1", [PG_MIGRATIONS.length + 1]);
    await expect(replica()).rejects.toThrow(`the database was made by a newer version of the shim (schema ${PG_MIGRATIONS.length + 1}, this one knows ${PG_MIGRATIONS.length}); run the newer image or restore a backup`);
    expect(await sql("SELECT version FROM shim_schema_version")).toEqual([{ version: PG_MIGRATIONS.length + 1 }]);
  });

  it("one ledger row per request: its charge (−cost, 0 when failed) and its usage record", async () => {
    await store.createKey(newKey("k", 10));
    await store.reserve({ reservationId: "a", keyId: "k", amount: 4, at: 1 });
    await store.reserve({ reservationId: "b", keyId: "k", amount: 4, at: 1 });
    await store.settle({ reservationId: "a", keyId: "k", hold: 4, cost: 3, usage: usage("k", "qa", 3) });
    await store.settle({ reservationId: "b", keyId: "k", hold: 4, cost: 0, usage: failedUsage("k", "qb") });
    expect(await sql("SELECT amount, kind, ref, status, prompt_tokens AS p, completion_tokens AS c, stream, served FROM ledger WHERE kind = 'usage' ORDER BY id")).toEqual([
      { amount: "-3", kind: "usage", ref: "qa", status: 200, p: 3, c: 4, stream: false, served: true },
      { amount: "0", kind: "usage", ref: "qb", status: 502, p: 0, c: 0, stream: true, served: false },
    ]);
  });

  /** A new database made by the previous version (before the served flag), with a grant and three requests: answered free, charged after its client left, a free stream cut after content. */
  const version1 = async () => {
    url = await server.newDatabase();
    const made = await (await previousStores()).PostgresStore.open(url);
    await made.usageIndex!.outcome;
    await made.close();
    await sql(`INSERT INTO keys (id, name, hash, tier, balance, created_at) VALUES ('k', 'k', 'h', 'free', 9, 1);
      INSERT INTO ledger (key_id, at, amount, kind) VALUES ('k', 1, 10, 'grant');
      INSERT INTO ledger (key_id, at, amount, kind, ref, route, model, status, prompt_tokens, completion_tokens, stream, ms) VALUES
        ('k', 5, 0, 'usage', 'answered', 'chat', 'm', 200, 3, 4, false, 9), ('k', 6, -1, 'usage', 'left', 'chat', 'm', 499, 0, 0, false, 9),
        ('k', 7, 0, 'usage', 'cut', 'chat', 'm', 502, 0, 5, true, 9)`);
  };
  /** A login role (made once per server: roles are the server's) with data rights only on this database's tables and sequences as they are now; its URL. */
  const dataRole = async (name: string) => {
    if ((await sql(`SELECT 1 FROM pg_roles WHERE rolname = '${name}'`)).length === 0) await sql(`CREATE ROLE ${name} LOGIN`);
    await sql(`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO ${name}`);
    await sql(`GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO ${name}`);
    return url.replace("://shim@", `://${name}@`);
  };
  const hasServed = async () => (await sql("SELECT 1 FROM information_schema.columns WHERE table_name = 'ledger' AND column_name = 'served'")).length === 1;

  it("upgrades a ledger the previous version made (no served flag) in place at start, keeping its schema version: its rows keep the rule they were reported by, new rows count when served; reports read through the indexes; the previous version opens it again and settles", async () => {
    await version1();
    expect(await hasServed()).toBe(false);
    const upgraded = await replica();
    await upgraded.usageIndex!.outcome;
    expect(await hasServed()).toBe(true);
    expect(await sql("SELECT version FROM shim_schema_version")).toEqual([{ version: 1 }]); // the previous version's
    // As before the upgrade: answered or charged (the free cut stream was not counted then).
    expect(await upgraded.usage({ keyId: "k", asker: "k", from: 0, to: 100, group: "model" })).toEqual([{ keyId: "k", group: "m", requests: 2, promptTokens: 3, completionTokens: 4, cost: 1 }]);
    await upgraded.reserve({ reservationId: "r", keyId: "k", amount: 1, at: 8 });
    await upgraded.settle({ reservationId: "r", keyId: "k", hold: 1, cost: 0, usage: { ...usage("k", "cut2", 0, 8), status: 502, promptTokens: 0, completionTokens: 5 } });
    // A retry that joined the answered request: its row (the `joined` column, added at start), not counted as a request.
    await upgraded.recordJoined({ requestId: "retry", keyId: "k", at: 8, route: "chat", model: "m", status: 200, ms: 3, batch: false, joined: "answered" });
    expect(await upgraded.usage({ keyId: null, asker: null, from: 0, to: 100, group: "model" })).toEqual([{ keyId: "k", group: "m", requests: 3, promptTokens: 3, completionTokens: 9, cost: 1 }]);
    // A replica of the previous version (re)starting during a rolling upgrade, or a rollback: it opens the upgraded database and settles.
    const old = await (await previousStores()).PostgresStore.open(url);
    try {
      await old.reserve({ reservationId: "r2", keyId: "k", amount: 1, at: 9 });
      await old.settle({ reservationId: "r2", keyId: "k", hold: 1, cost: 1, usage: usage("k", "old", 1, 9) });
    } finally {
      await old.close();
    }
    expect(await upgraded.usage({ keyId: "k", asker: "k", from: 0, to: 100, group: "model" })).toEqual([{ keyId: "k", group: "m", requests: 4, promptTokens: 6, completionTokens: 13, cost: 2 }]);
    expect(await sql("SELECT ref, amount::int, served, joined FROM ledger WHERE kind = 'usage' AND ref IN ('retry', 'old') ORDER BY id")).toEqual([
      { ref: "retry", amount: 0, served: false, joined: "answered" }, { ref: "old", amount: -1, served: null, joined: null }]);
    // The report's statements read through the ledger's indexes, not the whole table (which is
    // too small here for the planner to prefer an index on its own; for one key, either does).
    // Later rows, free, and the planner's statistics: the period is a small part of the ledger,
    // as in a real one, so the time index is the one that narrows it (not the request ids').
    await sql(`INSERT INTO ledger (key_id, at, amount, kind, ref, route, model, status, prompt_tokens, completion_tokens, stream, ms)
      SELECT 'k', 1000 + g, 0, 'usage', 'later-' || g, 'chat', 'm', 200, 1, 1, false, 1 FROM generate_series(1, 5000) g; ANALYZE ledger`);
    const plan = async (keyId: string | null) => {
      const p = new pg.Client({ connectionString: url });
      await p.connect();
      try {
        await p.query("SET enable_seqscan = off");
        const { rows } = await p.query<{ "QUERY PLAN": string }>(`EXPLAIN ${reportSql({ keyId, group: "day" })}`, keyId === null ? [0, 100] : [0, 100, keyId]);
        return rows.map((r) => r["QUERY PLAN"]).join("\n");
      } finally {
        await p.end();
      }
    };
    expect(await plan(null)).toMatch(/Index (Only )?Scan using ledger_usage_at /);
    expect(await plan("k")).toMatch(/Index (Only )?Scan using ledger_(key|usage)_at /);
    // GET /admin/requests/{id}: the request id through its index (built in the background at
    // start), with or without a key, not a scan of the ledger's usage rows; the rows kept.
    for (const keyId of [null, "k"]) {
      const lookup = { requestId: "answered", keyId };
      const p = new pg.Client({ connectionString: url });
      await p.connect();
      try {
        await p.query("SET enable_seqscan = off");
        const { rows } = await p.query<{ "QUERY PLAN": string }>(`EXPLAIN ${requestsPgSql(lookup)}`, requestsPgValues({ ...lookup, from: 0, to: 0 }));
        expect(rows.map((r) => r["QUERY PLAN"]).join("\n")).toMatch(/Index Scan using ledger_usage_ref /);
      } finally {
        await p.end();
      }
    }
    expect(await sql("SELECT ref, amount FROM ledger WHERE kind = 'usage' AND at < 100 ORDER BY id")).toEqual([
      { ref: "answered", amount: "0" }, { ref: "left", amount: "-1" }, { ref: "cut", amount: "0" }, { ref: "cut2", amount: "0" }, { ref: "retry", amount: "0" }, { ref: "old", amount: "-1" },
    ]);
  });

  it("an upgrade that would wait for the ledger behind another session (a report under way) gives up within about a second, leaving the ledger as it was; the next start makes it", async () => {
    await version1();
    const reader = new pg.Client({ connectionString: url });
    await reader.connect();
    await reader.query("BEGIN");
    await reader.query("SELECT count(*) FROM ledger");
    const started = Date.now();
    await expect(replica()).rejects.toBeInstanceOf(StoreUnavailableError);
    // Not the 6 s of the start's statement bound, while every write of the ledger queued behind it.
    expect(Date.now() - started).toBeLessThan(3000);
    expect(await hasServed()).toBe(false);
    await reader.query("COMMIT");
    await reader.end();
    await replica();
    expect(await hasServed()).toBe(true);
  });

  it("a role with data rights only cannot add the served column: its start fails saying what to do; once the owner has started one shim, it starts and serves", async () => {
    await version1();
    // A role of its own (roles are the server's): app_dml's test drops that one, which its rights in this database would prevent.
    const dml = await dataRole("app_served");
    const refused = await PostgresStore.open(dml).then((s) => (open.push(s), null), (e: unknown) => e);
    expect(refused).toBeInstanceOf(SchemaOwnerNeededError);
    // Both columns added at start since (`joined`: the joined requests' rows), in one statement.
    expect((refused as Error).message).toBe("the ledger needs its new columns `served` and `joined`: start one shim once as the tables' owner (or run, as the owner: ALTER TABLE ledger ADD COLUMN served boolean, ADD COLUMN joined text), then restart the replicas");
    expect(await hasServed()).toBe(false);
    // The shim process says so in its log, as it is (not the generic "store unavailable"), and exits 1.
    const dir = tempDir();
    const failed = await spawnShim({
      SHIM_UPSTREAM_URL: "http://127.0.0.1:62250/v1",
      SHIM_DATABASE_URL: dml,
      SHIM_CONFIG: writeProcessConfig(dir, generateKey(), [{ name: "qwen2.5-7b", maxModelLen: 4096 }]),
      SHIM_ADMIN_TOKEN: `adm-${generateKey().key}`,
    }).catch((e: unknown) => e);
    if (!(failed instanceof ShimStartError)) throw new Error(`expected a failed start, got ${String(failed)}`);
    expect(failed.exit).toEqual({ code: 1, signal: null });
    expect(failed.lines.map((l) => JSON.parse(l)).filter((l) => l.level >= 50).map((l) => l.msg)).toEqual([(refused as Error).message]);
    await replica(); // the owner
    // Granted table by table before the upgrade: the keys' histories (made by the owner's start) need their own grant.
    await sql("GRANT SELECT, INSERT ON key_events TO app_served");
    await sql("GRANT USAGE ON SEQUENCE key_events_id_seq TO app_served");
    const s = await PostgresStore.open(dml);
    open.push(s);
    expect((await s.reserve({ reservationId: "r", keyId: "k", amount: 1, at: 8 })).ok).toBe(true);
    await s.settle({ reservationId: "r", keyId: "k", hold: 1, cost: 0, usage: { ...usage("k", "cut2", 0, 8), status: 502, promptTokens: 0, completionTokens: 5 } });
    expect(await s.usage({ keyId: "k", asker: "k", from: 0, to: 100, group: "model" })).toEqual([{ keyId: "k", group: "m", requests: 3, promptTokens: 3, completionTokens: 9, cost: 1 }]);
  });

  it("a role with data rights only on a ledger from before the joined rows (served there already): its start fails naming `joined` alone; once the owner has started one shim, it starts and writes a joined row", async () => {
    await store.close();
    await sql("ALTER TABLE ledger DROP COLUMN joined"); // as the version before it left the ledger
    const dml = await dataRole("app_joined");
    const refused = await PostgresStore.open(dml).then((s) => (open.push(s), null), (e: unknown) => e);
    expect(refused).toBeInstanceOf(SchemaOwnerNeededError);
    expect((refused as Error).message).toBe("the ledger needs its new column `joined`: start one shim once as the tables' owner (or run, as the owner: ALTER TABLE ledger ADD COLUMN joined text), then restart the replicas");
    await replica(); // the owner
    const s = await PostgresStore.open(dml);
    open.push(s);
    await s.createKey(newKey("k", 5));
    await s.recordJoined({ requestId: "retry", keyId: "k", at: 2, route: "chat", model: "m", status: 200, ms: 1, batch: false, joined: "first" });
    expect(await sql("SELECT ref, amount::int, served, joined FROM ledger WHERE kind = 'usage'")).toEqual([{ ref: "retry", amount: 0, served: false, joined: "first" }]);
  });

  it("the database itself refuses a negative available balance and edits to the ledger", async () => {
    await store.createKey(newKey("k", 1));
    await expect(sql("UPDATE keys SET held = 2 WHERE id = 'k'")).rejects.toThrow(/check constraint/);
    await expect(sql("UPDATE ledger SET amount = 100")).rejects.toThrow(/append-only/);
    await expect(sql("DELETE FROM ledger")).rejects.toThrow(/append-only/);
  });

  it("200 concurrent holds spread over three replicas against a balance for exactly 50 admit exactly 50 (×5)", async () => {
    const replicas = [store, await replica(), await replica()];
    for (let round = 0; round < 5; round++) {
      const id = `k${round}`;
      await store.createKey(newKey(id, 50));
      const results = await Promise.all(
        Array.from({ length: 200 }, (_, i) => replicas[i % 3]!.reserve({ reservationId: `${id}-r${i}`, keyId: id, amount: 1, at: 1 })),
      );
      const admitted = results.flatMap((r, i) => (r.ok ? [i] : []));
      expect(admitted).toHaveLength(50);
      expect(results.filter((r) => !r.ok).every((r) => r.available === 0)).toBe(true);
      await Promise.all(admitted.map((i) => replicas[i % 3]!.settle({ reservationId: `${id}-r${i}`, keyId: id, hold: 1, cost: 1, usage: usage(id, `q${i}`, 1) })));
      expect((await store.audit()).find((r) => r.keyId === id)).toEqual({ keyId: id, balance: 0, held: 0, ledgerSum: 0, reservations: 0, reservedSum: 0 });
    }
  });

  it("releases the holds of a replica that is gone once it has been without its lock for the grace, not charged, and keeps those of live replicas", async () => {
    await store.createKey(newKey("k", 10));
    const released: number[] = [];
    const sweeper = await replica({ sweepGraceMs: 500, onReleased: (n) => released.push(n) });
    const live = await replica();
    await store.reserve({ reservationId: "mine", keyId: "k", amount: 2, at: 1 });
    await live.reserve({ reservationId: "live", keyId: "k", amount: 1, at: 1 });
    const dead = await replica();
    await dead.reserve({ reservationId: "theirs", keyId: "k", amount: 5, at: 1 });
    await dead.close(); // its liveness lock goes with its connection, as when the process dies
    // Seen without its lock: it may be a replica taking its lock back, so not yet.
    expect(await sweeper.releaseStaleReservations()).toBe(0);
    const seen = Date.now();
    expect((await store.getKey("k"))!.held).toBe(8);
    // Released by a sweep when its grace ends, not at the next one a minute later; counted once.
    expect(await pollUntil(async () => (await store.getKey("k"))!.held === 3, 3000)).toBe(true);
    expect(Date.now() - seen).toBeGreaterThanOrEqual(450);
    expect(released).toEqual([1]);
    expect(await store.audit()).toEqual([{ keyId: "k", balance: 10, held: 3, ledgerSum: 10, reservations: 2, reservedSum: 3 }]);
    // A settlement arriving for a released hold charges nothing and changes nothing.
    expect(await live.settle({ reservationId: "theirs", keyId: "k", hold: 5, cost: 5, usage: usage("k", "late", 5) })).toEqual({ available: 7, charged: 0 });
    expect(await sweeper.releaseStaleReservations()).toBe(0);
  });

  it("a running replica sweeps the holds of a replica that is gone, without waiting for a restart, and says how many", async () => {
    await store.createKey(newKey("k", 10));
    const released: number[] = [];
    await replica({ sweepIntervalMs: 50, sweepGraceMs: 200, onReleased: (n) => released.push(n) });
    const dead = await replica();
    await dead.reserve({ reservationId: "theirs", keyId: "k", amount: 5, at: 1 });
    await dead.close();
    await pollUntil(async () => (await store.getKey("k"))!.held === 0);
    expect(await store.audit()).toEqual([{ keyId: "k", balance: 10, held: 0, ledgerSum: 10, reservations: 0, reservedSum: 0 }]);
    // Counted once (shim_stale_reservations_released_total), whichever sweep found it.
    expect(await pollUntil(() => released.reduce((a, n) => a + n, 0) === 1)).toBe(true);
  });

  it("a copy of the database on the same server (pg_dump | psql into a staging database) has its copied holds swept: the source's running replicas hold their liveness locks in the source only", async () => {
    await store.createKey(newKey("k", 10));
    await store.reserve({ reservationId: "copied", keyId: "k", amount: 4, at: 1 });
    const copy = await server.newDatabase();
    // The copy: the key with its hold and the hold's row, owned by `store`, which runs on the source.
    const staging = await PostgresStore.open(copy, { sweepGraceMs: 0 });
    open.push(staging);
    await staging.createKey(newKey("k", 10));
    await staging.reserve({ reservationId: "copied", keyId: "k", amount: 4, at: 1 });
    const c = new pg.Client({ connectionString: copy });
    await c.connect();
    try {
      await c.query("UPDATE reservations SET owner = $1", [store.owner]);
    } finally {
      await c.end();
    }
    expect(await staging.releaseStaleReservations()).toBe(1);
    expect(await staging.audit()).toEqual([{ keyId: "k", balance: 10, held: 0, ledgerSum: 10, reservations: 0, reservedSum: 0 }]);
    // The source's hold is its live replica's.
    expect(await store.releaseStaleReservations()).toBe(0);
    expect((await store.getKey("k"))!.held).toBe(4);
  });

  it("bootstrap keys are created and granted once when replicas start together", async () => {
    const other = await replica();
    const results = await Promise.all([store.ensureBootstrapKey(newKey("boot", 100)), other.ensureBootstrapKey(newKey("boot", 100))]);
    expect(results.filter((r) => r.created)).toHaveLength(1);
    expect(results.filter((r) => r.granted)).toHaveLength(1);
    expect(await store.getKey("boot")).toMatchObject({ balance: 100 });
  });
  it("a top-up retried on two replicas at once with the same Idempotency-Key is applied once", async () => {
    await store.createKey(newKey("k", 0));
    const other = await replica();
    const up = (s: PostgresStore) =>
      s.topUp({ keyId: "k", amount: 5, note: null, at: 1, idempotency: { key: "idem", fingerprint: "a" }, respond: (k) => JSON.stringify({ balance: k.balance }), refuse: () => null });
    const both = await Promise.all([up(store), up(other)]);
    expect(both.map((r) => r.kind).sort()).toEqual(["done", "replay"]);
    expect(both.map((r) => (r as { body: string }).body)).toEqual(['{"balance":5}', '{"balance":5}']);
    expect(await store.audit()).toEqual([{ keyId: "k", balance: 5, held: 0, ledgerSum: 5, reservations: 0, reservedSum: 0 }]);
  });
  it("a database outage: every call is StoreUnavailableError meanwhile; then the replica recovers by itself, failed holds released uncharged", async () => {
    await store.createKey(newKey("k", 10));
    const replicaA = await withTries(() => replica({ retryMs: 100, timeoutMs: 1000 }));
    await replicaA.reserve({ reservationId: "a", keyId: "k", amount: 2, at: 1 });
    server.kill();
    try {
      await expect(replicaA.getKey("k")).rejects.toBeInstanceOf(StoreUnavailableError);
      await expect(replicaA.reserve({ reservationId: "b", keyId: "k", amount: 1, at: 1 })).rejects.toBeInstanceOf(StoreUnavailableError);
      await expect(replicaA.settle({ reservationId: "a", keyId: "k", hold: 2, cost: 2, usage: usage("k", "qa", 2) })).rejects.toBeInstanceOf(StoreUnavailableError);
      // Clients retrying through an outage: a request refused before anything reached the
      // server (no connection, no liveness lock) is not remembered as a doubtful hold, so the
      // memory an outage costs is bounded by the statements that were sent (at most the pool).
      const refused = await Promise.allSettled(Array.from({ length: 300 }, (_, i) => replicaA.reserve({ reservationId: `r${i}`, keyId: "k", amount: 1, at: 1 })));
      expect(refused.every((r) => r.status === "rejected" && r.reason instanceof StoreUnavailableError)).toBe(true);
      expect((replicaA as unknown as { doubtful: Map<string, number> }).doubtful.size).toBeLessThanOrEqual(12);
    } finally {
      server.start();
    }
    // Back: the same replica admits again once it holds its liveness lock again.
    let attempt = 0;
    const admitted = await pollUntil(() => replicaA.reserve({ reservationId: `c${attempt++}`, keyId: "k", amount: 1, at: 1 }).then((r) => r.ok, () => false), 10_000, 50);
    expect(admitted).toBe(true);
    // The hold of the failed settle ("a") is released, not charged; nothing is left of "b".
    await pollUntil(async () => (await replicaA.getKey("k"))!.held === 1, 10_000, 50);
    expect(await replicaA.audit()).toEqual([{ keyId: "k", balance: 10, held: 1, ledgerSum: 10, reservations: 1, reservedSum: 1 }]);
    // Its new hold belongs to a live replica again: another replica's sweep leaves it alone.
    expect(await (await replica()).releaseStaleReservations()).toBe(0);
  });
  it("a settlement that could not even get a connection still has its hold released, uncharged", async () => {
    await store.createKey(newKey("k", 10));
    // Connecting is bounded by the same 300 ms, which a new backend can take under load: the
    // replica is opened, and its pool's connections made one by one, with a few tries.
    const busy = await withTries(async () => {
      const s = await replica({ timeoutMs: 300, retryMs: 100 });
      await s.getKey("k");
      return s;
    });
    expect(await busy.reserve({ reservationId: "r1", keyId: "k", amount: 5, at: 1 })).toMatchObject({ ok: true });
    // Every pooled connection taken: the settlement's wait for one times out before anything is sent.
    const { pool } = busy as unknown as { pool: pg.Pool };
    const taken: pg.PoolClient[] = [];
    for (let i = 0; i < 10; i++) taken.push(await withTries(() => pool.connect()));
    await expect(busy.settle({ reservationId: "r1", keyId: "k", hold: 5, cost: 5, usage: usage("k", "r1", 5) })).rejects.toBeInstanceOf(StoreUnavailableError);
    for (const c of taken) c.release();
    await pollUntil(async () => (await busy.getKey("k"))!.held === 0, 10_000, 50);
    expect(await busy.audit()).toEqual([{ keyId: "k", balance: 10, held: 0, ledgerSum: 10, reservations: 0, reservedSum: 0 }]);
  });

  describe("a write whose connection breaks after it was sent (a proxy loses the server's answer)", () => {
    let proxy: FrozenProxy;
    let s: PostgresStore;
    beforeEach(async () => {
      proxy = await frozenProxy(url);
      s = await withTries(() => PostgresStore.open(proxy.url, { retryMs: 100, timeoutMs: 1000 }));
      open.push(s);
      await s.createKey(newKey("k", 10));
      await s.reserve({ reservationId: "r1", keyId: "k", amount: 4, at: 1 });
    });
    afterEach(() => proxy.close());
    const settle = () => s.settle({ reservationId: "r1", keyId: "k", hold: 4, cost: 3, usage: usage("k", "LOST", 3) });
    const settledOnce = async () => {
      expect((s as unknown as { doubtful: { size: number } }).doubtful.size).toBe(0); // nothing left to release
      expect(await s.audit()).toEqual([{ keyId: "k", balance: 7, held: 0, ledgerSum: 7, reservations: 0, reservedSum: 0 }]);
      expect(await sql("SELECT ref, amount FROM ledger WHERE kind = 'usage'")).toEqual([{ ref: "LOST", amount: "-3" }]);
    };

    it("a settlement that committed is looked up: answered with what it charged, charged once (it was a 503, charged all the same)", async () => {
      proxy.loseAnswer((p) => p.includes("LOST"));
      expect(await settle()).toEqual({ available: 7, charged: 3 });
      await settledOnce();
    });

    it("a settlement that never reached the server is made by the second try: answered, charged once", async () => {
      proxy.loseAnswer((p) => p.includes("LOST"), false);
      expect(await settle()).toEqual({ available: 7, charged: 3 });
      await settledOnce();
    });

    it("a reserve that committed is released, uncharged, once the database answers (its client got a 503)", async () => {
      proxy.loseAnswer((p) => p.includes("RESLOST"));
      await expect(s.reserve({ reservationId: "RESLOST", keyId: "k", amount: 2, at: 1 })).rejects.toBeInstanceOf(StoreUnavailableError);
      expect(await pollUntil(async () => (await s.audit())[0]!.reservations === 1, 5000)).toBe(true);
      expect(await s.audit()).toEqual([{ keyId: "k", balance: 10, held: 4, ledgerSum: 10, reservations: 1, reservedSum: 4 }]);
    });

    /**
     * The settlement's first try waits for the key's row (another session holds it: a top-up,
     * another replica's statement) when its connection breaks; its second try comes while the first
     * still waits there, and the first commits once the row is free.
     */
    const settleBehindRowLock = async (lost: string) => {
      const blocker = new pg.Client({ connectionString: url });
      await blocker.connect();
      try {
        await blocker.query("BEGIN");
        await blocker.query("SELECT 1 FROM keys WHERE id = 'k' FOR UPDATE");
        proxy.loseAnswer((p) => p.includes(lost));
        const settled = settle().catch((e: unknown) => e);
        const waiting = async () => (await sql("SELECT 1 FROM pg_stat_activity WHERE application_name = 'api-shim' AND wait_event_type = 'Lock'")).length === 2;
        expect(await pollUntil(waiting, 2000)).toBe(true); // the first try (its client gone) and the second
        await blocker.query("COMMIT");
        return await settled;
      } finally {
        await blocker.end();
      }
    };

    it("a settlement whose first try waits for the key's row when its connection breaks: the second try waits for it, and charges once", async () => {
      expect(await settleBehindRowLock("LOST")).toEqual({ available: 7, charged: 3 });
      await settledOnce();
    });

    it("so does one whose hold was swept (charged without a hold): the second try finds the first's charge, never charges twice", async () => {
      await sql("WITH r AS (DELETE FROM reservations WHERE id = 'r1' RETURNING key_id, amount) UPDATE keys SET held = held - r.amount FROM r WHERE keys.id = r.key_id");
      expect(await settleBehindRowLock("settle-unreserved")).toEqual({ available: 7, charged: 3 });
      await settledOnce();
    });

    it("so does one whose hold was swept and that charges 0 (others took the credit): the second try waits for the first's uncommitted statement, one usage row", async () => {
      await sql("WITH r AS (DELETE FROM reservations WHERE id = 'r1' RETURNING key_id, amount) UPDATE keys SET held = held - r.amount FROM r WHERE keys.id = r.key_id");
      expect(await s.reserve({ reservationId: "r2", keyId: "k", amount: 8, at: 1 })).toEqual({ ok: true, available: 2 });
      // The request's ledger row waits (for a lock the test holds) once the first try's statement
      // has decided its charge: that statement runs, uncommitted, when the second try looks for its row.
      await sql("CREATE FUNCTION wait_ledger() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_advisory_xact_lock_shared(4242); RETURN NEW; END $$");
      await sql("CREATE TRIGGER wait_ledger BEFORE INSERT ON ledger FOR EACH ROW WHEN (NEW.ref = 'LOST') EXECUTE FUNCTION wait_ledger()");
      const blocker = new pg.Client({ connectionString: url });
      await blocker.connect();
      try {
        await blocker.query("SELECT pg_advisory_lock(4242)");
        proxy.loseAnswer((p) => p.includes("settle-unreserved"));
        const settled = settle().catch((e: unknown) => e);
        const waiting = async () => (await sql("SELECT 1 FROM pg_stat_activity WHERE application_name = 'api-shim' AND wait_event_type = 'Lock'")).length === 2;
        expect(await pollUntil(waiting, 2000)).toBe(true); // the first try (its client gone) and the second
        await blocker.query("SELECT pg_advisory_unlock(4242)");
        expect(await settled).toEqual({ available: 2, charged: 0 });
      } finally {
        await blocker.end();
      }
      expect(await sql("SELECT ref, amount FROM ledger WHERE kind = 'usage'")).toEqual([{ ref: "LOST", amount: "0" }]);
      expect(await s.audit()).toEqual([{ keyId: "k", balance: 10, held: 8, ledgerSum: 10, reservations: 1, reservedSum: 8 }]);
    });
  });

  it("a settlement that ran out of its own statement bound (behind a row lock) did not commit: no second try, a 503 within the bound, its hold released uncharged", async () => {
    await store.createKey(newKey("k", 10));
    const s = await withTries(() => replica({ timeoutMs: 1000, retryMs: 100 }));
    await s.reserve({ reservationId: "r1", keyId: "k", amount: 4, at: 1 });
    const blocker = new pg.Client({ connectionString: url });
    await blocker.connect();
    await blocker.query("BEGIN");
    await blocker.query("SELECT 1 FROM keys WHERE id = 'k' FOR UPDATE");
    const started = Date.now();
    try {
      await expect(s.settle({ reservationId: "r1", keyId: "k", hold: 4, cost: 3, usage: usage("k", "q", 3) })).rejects.toBeInstanceOf(StoreUnavailableError);
      // One statement bound, not two: a second try would wait behind the same lock for as long.
      expect(Date.now() - started).toBeLessThan(1700);
    } finally {
      await blocker.query("ROLLBACK");
      await blocker.end();
    }
    expect(await pollUntil(async () => (await s.getKey("k"))!.held === 0)).toBe(true);
    expect(await s.audit()).toEqual([{ keyId: "k", balance: 10, held: 0, ledgerSum: 10, reservations: 0, reservedSum: 0 }]);
  });

  describe("a settlement whose statement the server ends from outside while it waits for the key's row: tried again on a connection of its own, charged once", () => {
    /**
     * Another session holds the key's row (a top-up, another replica's statement); the settlement
     * waits for it when its server session is terminated (pg_terminate_backend: an operator, a
     * pooler's or an HA agent's cleanup; SQLSTATE 57P01, FATAL) or its statement cancelled
     * (pg_cancel_backend: 57014). Nothing committed and the database is up: before, that was taken
     * as a refusal, so a served request was released uncharged (a stream got a 503 error event
     * after its content, and /v1/usage never showed it).
     */
    const endWaitingSettlement = async (s: PostgresStore, end: "pg_terminate_backend" | "pg_cancel_backend") => {
      const blocker = new pg.Client({ connectionString: url });
      await blocker.connect();
      try {
        await blocker.query("BEGIN");
        await blocker.query("SELECT 1 FROM keys WHERE id = 'k' FOR UPDATE");
        const settled = s.settle({ reservationId: "r1", keyId: "k", hold: 4, cost: 3, usage: usage("k", "ENDED", 3) }).catch((e: unknown) => e);
        // The settlement's statements: not a release of its hold (were it doubtful), nor an index build, waiting alike.
        const waiting = () => sql<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE application_name = 'api-shim' AND wait_event_type = 'Lock' AND query = ANY($1)", [[SETTLE, SETTLE_UNRESERVED, LOCK_KEY]]);
        let first: { pid: number }[] = [];
        expect(await pollUntil(async () => (first = await waiting()).length === 1, 5000)).toBe(true);
        expect(await sql(`SELECT ${end}($1) AS done`, [first[0]!.pid])).toEqual([{ done: true }]);
        // The second try, on a connection of its own, waits for the key's row in turn.
        const again = async () => { const w = await waiting(); return w.length === 1 && w[0]!.pid !== first[0]!.pid; };
        expect(await pollUntil(again, 5000)).toBe(true);
        await blocker.query("ROLLBACK");
        return await settled;
      } finally {
        await blocker.end();
      }
    };
    const chargedOnce = async (s: PostgresStore) => {
      expect((s as unknown as { doubtful: { size: number } }).doubtful.size).toBe(0); // nothing left to release
      expect(await s.audit()).toEqual([{ keyId: "k", balance: 7, held: 0, ledgerSum: 7, reservations: 0, reservedSum: 0 }]);
      expect(await sql("SELECT ref, amount FROM ledger WHERE kind = 'usage'")).toEqual([{ ref: "ENDED", amount: "-3" }]);
    };
    let s: PostgresStore;
    beforeEach(async () => {
      await store.createKey(newKey("k", 10));
      s = await replica({ retryMs: 100 });
      await s.reserve({ reservationId: "r1", keyId: "k", amount: 4, at: 1 });
    });

    it("its session terminated (pg_terminate_backend)", async () => {
      expect(await endWaitingSettlement(s, "pg_terminate_backend")).toEqual({ available: 7, charged: 3 });
      await chargedOnce(s);
    });

    it("its session terminated while it charges a hold that was swept (no hold: the second try looks for the first's row under the key's lock)", async () => {
      await sql("WITH r AS (DELETE FROM reservations WHERE id = 'r1' RETURNING key_id, amount) UPDATE keys SET held = held - r.amount FROM r WHERE keys.id = r.key_id");
      expect(await endWaitingSettlement(s, "pg_terminate_backend")).toEqual({ available: 7, charged: 3 });
      await chargedOnce(s);
    });

    it("its statement cancelled by another session (pg_cancel_backend), which is not its own statement timeout", async () => {
      expect(await endWaitingSettlement(s, "pg_cancel_backend")).toEqual({ available: 7, charged: 3 });
      await chargedOnce(s);
    });
  });

  // DESIGN.md: keys are stored only as hashes. Every row of every table, as text, holds neither
  // the key nor its secret part (keys, ledger, usage, a top-up's stored answer).
  it("through the shim: no table holds a key or its secret part", async () => {
    const shim = await startShim({ wrapStore: () => store });
    try {
      const { key, id } = await shim.createKey({ name: "k", credits: 10 });
      expect((await shim.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 2 })).status).toBe(200);
      expect((await shim.admin(`/admin/keys/${id}/credits`, { method: "POST", headers: { "idempotency-key": "hash-only" }, body: JSON.stringify({ amount: 1 }) })).status).toBe(200);
      const tables = await sql<{ name: string }>("SELECT quote_ident(table_name) AS name FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'");
      expect(tables.map((t) => t.name)).toEqual(expect.arrayContaining(["keys", "ledger"]));
      const secret = key.split("_")[1]!;
      for (const { name } of tables) {
        const rows = await sql<{ row: string }>(`SELECT t::text AS row FROM ${name} t`);
        expect(rows.filter((r) => r.row.includes(secret)), name).toEqual([]);
      }
      expect((await sql<{ n: number }>("SELECT count(*)::int AS n FROM keys WHERE id = $1", [id]))[0]!.n).toBe(1);
    } finally {
      await shim.close();
    }
  });

  it("through the shim: a settlement whose answer is lost is looked up, not a 503: the client gets its answer and what it was charged, once; a stream too", async () => {
    const proxy = await frozenProxy(url);
    const s = await withTries(() => PostgresStore.open(proxy.url, { retryMs: 100, timeoutMs: 1000 }));
    open.push(s);
    const shim = await startShim({ wrapStore: () => s });
    try {
      const key = await shim.createKey({ name: "k", credits: 100 });
      const chat = (stream: boolean) => shim.post(key.key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 4, stream });
      // The settlement is the first statement that carries the route (the hold carries the model's name too).
      const settlement = (p: Buffer) => p.includes("qwen2.5-7b") && p.includes("/v1/chat/completions");
      proxy.loseAnswer(settlement);
      const res = await chat(false);
      // It was a 503 without the answer, charged all the same (a retry paid twice).
      expect(res.status).toBe(200);
      expect(res.headers.get("x-credits-charged")).toBe("1");
      expect(((await res.json()) as { credits_charged: number; credits_remaining: number })).toMatchObject({ credits_charged: 1, credits_remaining: 99 });
      proxy.loseAnswer(settlement);
      const streamed = await chat(true);
      expect(streamed.status).toBe(200);
      const text = await streamed.text();
      expect(text).toContain(": credits_charged=1 credits_remaining=98\n\ndata: [DONE]\n\n");
      expect(text).not.toContain("error");
      // From 2000, not the default current month: a month turning after the request would report none of it.
      const reported = ((await (await fetch(`${shim.url}/v1/usage?from=2000-01-01`, { headers: { authorization: `Bearer ${key.key}` } })).json()) as { usage: { total_requests: number; total_cost: number } }).usage;
      expect(reported).toMatchObject({ total_requests: 2, total_cost: 2 });
      expect((await s.audit()).find((r) => r.keyId === key.id)).toMatchObject({ balance: 98_000_000, ledgerSum: 98_000_000, held: 0, reservations: 0 });
    } finally {
      await shim.close();
      await proxy.close();
    }
  });

  /** The whole server read-only by default (a managed server does that when its storage is full), or writable again. */
  const readOnlyDefault = async (on: boolean) => {
    const c = new pg.Client({ connectionString: `${url}?options=-c%20default_transaction_read_only%3Doff` });
    await c.connect();
    try {
      await c.query(on ? "ALTER SYSTEM SET default_transaction_read_only = on" : "ALTER SYSTEM RESET default_transaction_read_only");
      await c.query("SELECT pg_reload_conf()");
    } finally {
      await c.end();
    }
  };

  it("a database that turns read-only while serving: /ready says the store is unavailable, each request is a 503 that leaves nothing to release; writable again, it serves", async () => {
    const told: boolean[] = [];
    const s = await replica({ retryMs: 100, onReadOnly: (readOnly) => told.push(readOnly) });
    const shim = await startShim({ wrapStore: () => s });
    const ready = async () => (await fetch(`${shim.url}/ready`)).status;
    try {
      const key = await shim.createKey({ name: "k", credits: 100 });
      const chat = async () => (await shim.post(key.key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 4 })).status;
      expect(await chat()).toBe(200);
      await readOnlyDefault(true);
      try {
        // It answered 200 while every request got a 503: the load balancer kept it in.
        expect(await pollUntil(async () => (await ready()) === 503)).toBe(true);
        expect(await (await fetch(`${shim.url}/ready`)).json()).toMatchObject({ status: "not_ready", store: "unavailable" });
        expect(await Promise.all(Array.from({ length: 5 }, chat))).toEqual([503, 503, 503, 503, 503]);
        // A hold refused as read-only cannot have been made: nothing to release (they piled up, each retried for ever).
        expect((s as unknown as { doubtful: { size: number } }).doubtful.size).toBe(0);
        await expect(s.ping()).rejects.toMatchObject({ cause: { message: expect.stringMatching(/^the database is read-only/) } });
        expect(told).toEqual([true]);
      } finally {
        await readOnlyDefault(false);
      }
      expect(await pollUntil(async () => (await ready()) === 200)).toBe(true);
      expect(told).toEqual([true, false]);
      expect(await chat()).toBe(200);
      expect((await s.audit()).find((r) => r.keyId === key.id)).toMatchObject({ held: 0, reservations: 0 });
    } finally {
      await shim.close();
    }
  });

  it("a pooled connection /ready found on a server taking no writes is not reused: once new connections reach a writable one (after a failover), it is ready", async () => {
    const s = await replica({ poolSize: 1 });
    const pool = (s as unknown as { pool: pg.Pool }).pool;
    const roleReadOnly = (on: boolean) => sqlOn(`${url}?options=-c%20default_transaction_read_only%3Doff`, on ? `ALTER ROLE ${USER} SET default_transaction_read_only = on` : `ALTER ROLE ${USER} RESET default_transaction_read_only`);
    // The pool's one connection is made again while the role's new sessions are read-only: it
    // stands for a connection that reached the old primary, now a standby, after a failover.
    await roleReadOnly(true);
    try {
      const c = await pool.connect();
      c.release(true);
      await expect(s.ping()).rejects.toMatchObject({ cause: { message: expect.stringMatching(/^the database is read-only/) } });
    } finally {
      await roleReadOnly(false);
    }
    // New sessions take writes again. Kept, the read-only session would answer every probe, and
    // the load balancer kept the replica out until it restarted.
    await s.ping();
  });

  it("a database read-only by default (a full disk, not a failover) leaves each replica its liveness lock: once writable again, no sweep releases a live replica's hold", { timeout: 60_000 }, async () => {
    await store.createKey(newKey("k", 1));
    const a = await replica({ retryMs: 1000 }); // its heartbeat asks every 5 s
    const other = await replica({ sweepGraceMs: 0 });
    expect((await a.reserve({ reservationId: "inflight", keyId: "k", amount: 1, at: 1 })).ok).toBe(true);
    const lockHeld = async () => (await sql<{ n: number }>("SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND objid = $1::bigint::oid AND granted", [a.owner]))[0]!.n;
    await readOnlyDefault(true);
    try {
      await new Promise((r) => setTimeout(r, 6500)); // past a heartbeat
      expect(await lockHeld()).toBe(1);
    } finally {
      await readOnlyDefault(false);
    }
    await other.releaseStaleReservations().catch(() => 0);
    await new Promise((r) => setTimeout(r, 2500));
    expect(await sql("SELECT id FROM reservations WHERE id = 'inflight'")).toHaveLength(1);
  });

  it("refuses to open a database that takes no writes, saying so: a hot standby, or one read-only by default", { timeout: 60_000 }, async () => {
    const opened = (u: string) => PostgresStore.open(u, { timeoutMs: 2000 }).then((s) => (open.push(s), "opened"), (e: Error) => e instanceof StoreUnavailableError && (e.cause as Error).message);
    const standby = await server.startStandby();
    try {
      // It opened, and the process failed at its first write (the start's sweep), restarted for ever.
      expect(await opened(standby.url(new URL(url).pathname.slice(1)))).toMatch(/^the database is read-only \(a hot standby, or default_transaction_read_only is on\).*point SHIM_DATABASE_URL at the primary/);
    } finally {
      standby.stop();
    }
    expect(await opened(`${url}?options=-c%20default_transaction_read_only%3Don`)).toMatch(/^the database is read-only/);
  });

  it("a connection that breaks in the middle of an admin transaction is a StoreUnavailableError, not a crash", async () => {
    await store.createKey(newKey("k", 0));
    const blocker = new pg.Client({ connectionString: url });
    await blocker.connect();
    try {
      await blocker.query("BEGIN");
      await blocker.query("SELECT 1 FROM keys WHERE id = 'k' FOR UPDATE");
      const topUp = store.topUp({ keyId: "k", amount: 5, note: null, at: 1, idempotency: null, respond: () => "", refuse: () => null }).then(() => null, (e: unknown) => e);
      let waiting: { pid: number }[] = [];
      await pollUntil(async () => (waiting = await sql<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE application_name = 'api-shim' AND wait_event_type = 'Lock'")).length > 0, 2000);
      expect(waiting).toHaveLength(1);
      await sql("SELECT pg_terminate_backend($1)", [waiting[0]!.pid]);
      expect(await topUp).toBeInstanceOf(StoreUnavailableError);
    } finally {
      await blocker.query("ROLLBACK");
      await blocker.end();
    }
    expect(await store.topUp({ keyId: "k", amount: 5, note: null, at: 1, idempotency: null, respond: () => "", refuse: () => null })).toMatchObject({ kind: "done" });
  });

  /** Ends the session holding `owner`'s liveness lock, as a network blip or a database restart does. */
  const cutLiveness = (owner: number) => sql("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND objid = $1::bigint::oid", [owner]);

  it("a replica whose liveness session is cut keeps its holds in flight under its new owner id: credit for one request admits one, and it is charged", async () => {
    await store.createKey(newKey("k", 1)); // credit for exactly one request
    const cut = await replica({ retryMs: 100 });
    const other = await replica({ sweepGraceMs: 0 }); // would release any owner's holds the moment it lacks a lock
    expect((await cut.reserve({ reservationId: "inflight", keyId: "k", amount: 1, at: 1 })).ok).toBe(true);
    const before = cut.owner;
    await cutLiveness(before);
    expect(await pollUntil(() => cut.owner !== before)).toBe(true);
    // Its relock swept its own hold: the credit was admitted again, and one request was served free.
    expect(await other.releaseStaleReservations()).toBe(0);
    expect(await other.reserve({ reservationId: "second", keyId: "k", amount: 1, at: 1 })).toEqual({ ok: false, available: 0, balance: 1 });
    expect(await cut.settle({ reservationId: "inflight", keyId: "k", hold: 1, cost: 1, usage: usage("k", "q1", 1) })).toEqual({ available: 0, charged: 1 });
    expect(await store.audit()).toEqual([{ keyId: "k", balance: 0, held: 0, ledgerSum: 0, reservations: 0, reservedSum: 0 }]);
  });

  // reserve() requires the liveness lock (found unpinned by a mutation review). Without it, a
  // replica whose liveness session was cut admits holds under its old, lockless owner id; another
  // replica sweeps them, admits the same credit again, and the first request settles without a
  // hold, charged 0: served free.
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
    const served = await sql<{ n: number; charged: number }>("SELECT count(*)::int AS n, -sum(amount)::int AS charged FROM ledger WHERE kind = 'usage'");
    expect({ admitted, served }).toEqual({ admitted: 1, served: [{ n: 1, charged: 1 }] });
    expect((await other.audit())[0]).toMatchObject({ balance: 0, held: 0, ledgerSum: 0 });
    expect(first).toBeInstanceOf(StoreUnavailableError);
  });

  // updateKeyIn takes an advisory lock on the key's name before the namesake check (found unpinned
  // by a mutation review). Without it, two expired keys of one name brought back at once (PATCH
  // expires_at on two replicas) both pass the check: two keys in use with one name (`--key <name>`
  // then picks either).
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

  it("a hold still being made when its replica takes its lock back (it waited for the key's row) moves to the new owner id too: not swept while its request runs", async () => {
    await store.createKey(newKey("k", 1)); // credit for exactly one request
    const cut = await replica({ retryMs: 100 });
    const other = await replica({ sweepGraceMs: 0 });
    const blocker = new pg.Client({ connectionString: url });
    await blocker.connect();
    let reserved: Promise<unknown>;
    const before = cut.owner;
    try {
      await blocker.query("BEGIN");
      await blocker.query("SELECT 1 FROM keys WHERE id = 'k' FOR UPDATE"); // a top-up, another replica's statement
      reserved = cut.reserve({ reservationId: "inflight", keyId: "k", amount: 1, at: 1 });
      await pollUntil(async () => (await sql("SELECT 1 FROM pg_stat_activity WHERE application_name = 'api-shim' AND wait_event_type = 'Lock'")).length === 1, 2000);
      await cutLiveness(before);
      expect(await pollUntil(() => cut.owner !== before)).toBe(true); // the relock moved what was there: not this hold yet
    } finally {
      await blocker.query("ROLLBACK");
      await blocker.end();
    }
    expect(await reserved).toEqual({ ok: true, available: 0 });
    // Under the old, lockless owner id it was released: the credit admitted twice, the request charged 0.
    expect(await sql("SELECT owner FROM reservations WHERE id = 'inflight'")).toEqual([{ owner: cut.owner }]);
    expect(await other.releaseStaleReservations()).toBe(0);
    expect(await other.reserve({ reservationId: "second", keyId: "k", amount: 1, at: 1 })).toEqual({ ok: false, available: 0, balance: 1 });
    expect(await cut.settle({ reservationId: "inflight", keyId: "k", hold: 1, cost: 1, usage: usage("k", "q1", 1) })).toEqual({ available: 0, charged: 1 });
  });

  it("a replica that takes its lock back while its database's name still points at the old primary, now a standby, takes it on the primary: not ready meanwhile, its holds not swept", { timeout: 60_000 }, async () => {
    await store.createKey(newKey("k", 1)); // credit for exactly one request
    const standby = await server.startStandby();
    const proxy = await frozenProxy(url);
    try {
      const released: number[] = [];
      const s = await PostgresStore.open(proxy.url, { retryMs: 100, sweepGraceMs: 300, onReleased: (n) => released.push(n) });
      open.push(s);
      const ready = () => s.ping().then(() => "ready", (e: Error) => (e.cause as Error).message);
      const before = s.owner;
      proxy.redirect(standby.url(new URL(url).pathname.slice(1))); // a failover; the name still says the old primary
      await cutLiveness(before);
      await new Promise((r) => setTimeout(r, 1000)); // tries on the standby
      // It took its lock there and was ready, its holds made on the primary under an owner without a lock there: swept.
      expect({ owner: s.owner, ready: await ready() }).toEqual({ owner: before, ready: expect.not.stringMatching(/^ready$/) });
      proxy.redirect(url); // the name follows the new primary
      expect(await pollUntil(() => s.owner !== before)).toBe(true);
      expect(await pollUntil(async () => (await ready()) === "ready")).toBe(true);
      expect(await s.reserve({ reservationId: "live", keyId: "k", amount: 1, at: 1 })).toEqual({ ok: true, available: 0 });
      expect(await sql("SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND objid = $1::bigint::oid", [s.owner])).toEqual([{ n: 1 }]);
      expect(await s.releaseStaleReservations()).toBe(0);
      await new Promise((r) => setTimeout(r, 600)); // its grace over
      expect(released.reduce((a, n) => a + n, 0)).toBe(0);
      expect(await store.reserve({ reservationId: "second", keyId: "k", amount: 1, at: 1 })).toEqual({ ok: false, available: 0, balance: 1 });
      expect(await s.settle({ reservationId: "live", keyId: "k", hold: 1, cost: 1, usage: usage("k", "q", 1) })).toEqual({ available: 0, charged: 1 });
    } finally {
      await proxy.close();
      standby.stop();
    }
  });

  it("a replica whose liveness lock is held on another server than the one its requests reach (a writable old primary) is not ready, and takes it back where they go", { timeout: 60_000 }, async () => {
    const elsewhere = await startPostgres();
    const proxy = await frozenProxy(url);
    try {
      // The same database name there (the proxy's URL names it), with its schema, as the old primary had them.
      const there = await elsewhere.newDatabase();
      const other = there.replace(/\/[^/]*$/, new URL(url).pathname);
      if (other !== there) {
        const c = new pg.Client({ connectionString: there });
        await c.connect();
        await c.query(`CREATE DATABASE "${new URL(url).pathname.slice(1)}"`);
        await c.end();
      }
      await (await PostgresStore.open(other)).close();
      // One pooled connection, made before the redirect: a second one, opened after it for a ping
      // while the relock's sweep had the first, reached the other server (a fresh CI machine).
      const s = await PostgresStore.open(proxy.url, { retryMs: 100, poolSize: 1 });
      open.push(s);
      const ready = () => s.ping().then(() => "ready", (e: Error) => (e.cause as Error).message);
      expect(await ready()).toBe("ready"); // its pool has a connection to this server
      const before = s.owner;
      proxy.redirect(other);
      await cutLiveness(before);
      expect(await pollUntil(() => s.owner !== before)).toBe(true); // taken on the other server: it takes writes
      expect(await ready()).toMatch(/liveness lock is not on the server its requests reach/);
      proxy.redirect(url);
      expect(await pollUntil(async () => (await ready()) === "ready")).toBe(true);
      expect(await sql("SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND objid = $1::bigint::oid", [s.owner])).toEqual([{ n: 1 }]);
    } finally {
      await proxy.close();
      await elsewhere.stop();
    }
  });

  it("other replicas' sweeps leave the holds of a replica taking its lock back alone for the grace", async () => {
    await store.createKey(newKey("k", 10));
    const released: number[] = [];
    const slow = await replica({ retryMs: 2000 }); // takes its lock back 2 s after the cut
    await replica({ sweepIntervalMs: 100, onReleased: (n) => released.push(n) }); // the default grace, 30 s
    await slow.reserve({ reservationId: "live", keyId: "k", amount: 5, at: 1 });
    const before = slow.owner;
    await cutLiveness(before);
    await new Promise((r) => setTimeout(r, 1000));
    expect({ owner: slow.owner, held: (await store.getKey("k"))!.held, released: released.reduce((a, n) => a + n, 0) }).toEqual({ owner: before, held: 5, released: 0 });
    expect(await pollUntil(() => slow.owner !== before, 5000)).toBe(true);
    expect(await slow.settle({ reservationId: "live", keyId: "k", hold: 5, cost: 5, usage: usage("k", "q", 5) })).toEqual({ available: 5, charged: 5 });
    expect(released.reduce((a, n) => a + n, 0)).toBe(0);
  });

  it("a replica without its lock for longer than the grace has its holds swept by others; its requests, served all the same, are recorded and charged what the balance covers", async () => {
    await store.createKey(newKey("k", 10));
    const cut = await replica({ retryMs: 1500 });
    await replica({ sweepIntervalMs: 50, sweepGraceMs: 200 });
    await cut.reserve({ reservationId: "old", keyId: "k", amount: 4, at: 1 });
    await cut.reserve({ reservationId: "old2", keyId: "k", amount: 4, at: 1 });
    const before = cut.owner;
    await cutLiveness(before);
    expect(await pollUntil(async () => (await store.getKey("k"))!.held === 0)).toBe(true);
    expect(await pollUntil(() => cut.owner !== before)).toBe(true);
    expect(await store.audit()).toEqual([{ keyId: "k", balance: 10, held: 0, ledgerSum: 10, reservations: 0, reservedSum: 0 }]);
    expect(await cut.reserve({ reservationId: "new", keyId: "k", amount: 4, at: 1 })).toEqual({ ok: true, available: 6 });
    expect(await store.releaseStaleReservations()).toBe(0); // the new owner is alive
    // A swept hold's settlement charges its cost while the balance not held by others covers it
    // (6 − 4), else 0 (2 < 4) with its usage recorded; it used to write nothing, while the client
    // was told it had been charged. A cost beyond the hold is charged the hold, as with one.
    expect(await cut.settle({ reservationId: "old", keyId: "k", hold: 4, cost: 9, usage: usage("k", "q-old", 9) })).toEqual({ available: 2, charged: 4 });
    expect(await cut.settle({ reservationId: "old2", keyId: "k", hold: 4, cost: 4, usage: usage("k", "q-old2", 4) })).toEqual({ available: 2, charged: 0 });
    expect(await cut.settle({ reservationId: "new", keyId: "k", hold: 4, cost: 2, usage: usage("k", "q-new", 2) })).toEqual({ available: 4, charged: 2 });
    expect(await cut.settle({ reservationId: "old", keyId: "k", hold: 4, cost: 4, usage: usage("k", "q-old", 4) })).toEqual({ available: 4, charged: 0 }); // never twice
    expect(await store.audit()).toEqual([{ keyId: "k", balance: 4, held: 0, ledgerSum: 4, reservations: 0, reservedSum: 0 }]);
    expect(await sql("SELECT ref, amount, prompt_tokens AS p, completion_tokens AS c FROM ledger WHERE kind = 'usage' ORDER BY id")).toEqual([
      { ref: "q-old", amount: "-4", p: 3, c: 4 }, { ref: "q-old2", amount: "0", p: 3, c: 4 }, { ref: "q-new", amount: "-2", p: 3, c: 4 },
    ]);
    expect(await store.usage({ keyId: "k", asker: "k", from: 0, to: 10_000, group: "model" })).toEqual([{ keyId: "k", group: "m", requests: 3, promptTokens: 9, completionTokens: 12, cost: 6 }]);
  });

  it("through the shim: a replica whose liveness session is cut while a request is upstream keeps its hold; credit for one request admits one, charged", async () => {
    const s = await replica({ retryMs: 100 });
    const shim = await startShim({ wrapStore: () => s });
    try {
      shim.fake.set({ headerDelayMs: 2000 });
      const key = await shim.createKey({ name: "k", credits: 1 }); // one request's hold
      const chat = () => shim.post(key.key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 4 });
      const first = chat();
      expect(await pollUntil(async () => (await s.getKey(key.id))!.held > 0)).toBe(true);
      const before = s.owner;
      await cutLiveness(before);
      expect(await pollUntil(() => s.owner !== before)).toBe(true);
      const second = await chat();
      expect(second.status).toBe(402);
      const answer = await first;
      expect(answer.status).toBe(200);
      expect(((await answer.json()) as { credits_charged: number }).credits_charged).toBe(1);
      expect((await s.audit()).find((r) => r.keyId === key.id)).toMatchObject({ balance: 0, ledgerSum: 0, held: 0 });
    } finally {
      await shim.close();
    }
  });

  describe("through the shim: a request whose hold is swept while it is upstream (its replica was without its liveness lock for longer than the grace)", () => {
    let s: PostgresStore;
    let shim: Harness;
    beforeEach(async () => {
      s = await replica({ retryMs: 1500 });
      await replica({ sweepIntervalMs: 50, sweepGraceMs: 100 }); // another replica, sweeping
      shim = await startShim({ wrapStore: () => s });
      shim.fake.set({ headerDelayMs: 3000 });
    });
    afterEach(() => shim.close());
    const chat = (key: string) => shim.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 4 });
    const held = async (keyId: string) => (await s.getKey(keyId))!.held;
    /** Cuts the replica's liveness session once `keyId` has a hold; resolves when the other replica swept that hold and this one relocked. */
    const sweepMidFlight = async (keyId: string) => {
      expect(await pollUntil(async () => (await held(keyId)) > 0)).toBe(true);
      const before = s.owner;
      await cutLiveness(before);
      expect(await pollUntil(async () => s.owner !== before && (await held(keyId)) === 0)).toBe(true);
    };
    const answer = async (res: Promise<Response>) => {
      const r = await res;
      expect(r.status).toBe(200);
      return ((await r.json()) as { credits_charged: number }).credits_charged;
    };
    const usageOf = async (key: string) => ((await (await fetch(`${shim.url}/v1/usage?from=2000-01-01`, { headers: { authorization: `Bearer ${key}` } })).json()) as { usage: { total_requests: number; total_cost: number } }).usage;
    const metered = async () => /^shim_credits_charged_total\{model="qwen2.5-7b"\} (\S+)$/m.exec(await (await fetch(`${shim.url}/metrics`)).text())?.[1];

    it("is charged when the key's balance still covers it: the client's credits_charged is in the ledger and /v1/usage", async () => {
      const key = await shim.createKey({ name: "k", credits: 100 });
      const first = chat(key.key);
      await sweepMidFlight(key.id);
      expect(await answer(first)).toBe(1);
      // It used to answer credits_charged 1 while the ledger and /v1/usage had nothing.
      expect(await usageOf(key.key)).toMatchObject({ total_requests: 1, total_cost: 1 });
      expect((await s.audit()).find((r) => r.keyId === key.id)).toMatchObject({ balance: 99_000_000, ledgerSum: 99_000_000, held: 0 });
      expect(await metered()).toBe("1");
    });

    it("is recorded, charged 0, when another request took the credit the sweep gave back: the client is told 0, and 0 is metered", async () => {
      const key = await shim.createKey({ name: "k", credits: 1 }); // one request's hold
      const first = chat(key.key);
      await sweepMidFlight(key.id);
      const second = chat(key.key);
      expect(await pollUntil(async () => (await held(key.id)) > 0)).toBe(true);
      expect(await Promise.all([answer(first), answer(second)])).toEqual([0, 1]);
      expect(await usageOf(key.key)).toMatchObject({ total_requests: 2, total_cost: 1 });
      expect((await s.audit()).find((r) => r.keyId === key.id)).toMatchObject({ balance: 0, ledgerSum: 0, held: 0 });
      expect(await metered()).toBe("1");
      expect(shim.logs.some((l) => l.includes("hold released before the settlement"))).toBe(true);
    });
  });

  /** A setting as SHOW gives it on `c`'s session. */
  const show = async (c: pg.Pool | pg.ClientBase, setting: string) => Object.values((await c.query(`SHOW ${setting}`)).rows[0] as object)[0];
  /** The store's own settings on a replica's request sessions (its pool) and on its liveness session. */
  const settingsOf = async (s: PostgresStore) => {
    const { pool, lock } = s as unknown as { pool: pg.Pool; lock: pg.Client };
    const read = async (c: pg.Pool | pg.Client, names: string[]) => {
      const values: Record<string, unknown> = {};
      for (const n of names) values[n] = await show(c, n); // one at a time: `lock` is one connection
      return values;
    };
    const keepalives = ["tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count"];
    return {
      pool: await read(pool, ["statement_timeout", "synchronous_commit", "idle_in_transaction_session_timeout", ...keepalives]),
      lock: await read(lock, keepalives),
    };
  };
  const STORE_SETTINGS = {
    pool: { statement_timeout: "5s", synchronous_commit: "off", idle_in_transaction_session_timeout: "5s", tcp_keepalives_idle: "10", tcp_keepalives_interval: "5", tcp_keepalives_count: "3" },
    lock: { tcp_keepalives_idle: "10", tcp_keepalives_interval: "5", tcp_keepalives_count: "3" },
  };

  it("reads SHIM_DATABASE_URL as libpq does: an 'options' parameter keeps the store's own settings; the liveness session has short server keepalives", async () => {
    const s = await PostgresStore.open(`${url}?options=-c%20search_path%3Dpublic`);
    open.push(s);
    const { pool, lock } = s as unknown as { pool: pg.Pool; lock: pg.Client };
    // pg let the URL's options replace the store's: no statement timeout, synchronous commits.
    // A replica whose host dies silently must lose its lock (and so its holds) in seconds, not
    // after Linux's two-hour keepalive. Nor may a request session that died inside a transaction
    // (a top-up holds the key's row) keep its locks that long: every replica's requests for that
    // key would wait and fail.
    expect(await settingsOf(s)).toEqual(STORE_SETTINGS);
    expect([await show(pool, "search_path"), await show(lock, "search_path")]).toEqual(["public", "public"]);
  });

  it("over the server's Unix socket (where TCP keepalives do not apply and read 0) starts, its other settings in effect", async () => {
    const s = await PostgresStore.open(`postgres://shim@/${new URL(url).pathname.slice(1)}?host=${server.socketDir}&port=${server.port}`);
    open.push(s);
    const zero = { tcp_keepalives_idle: "0", tcp_keepalives_interval: "0", tcp_keepalives_count: "0" };
    expect(await settingsOf(s)).toEqual({ pool: { ...STORE_SETTINGS.pool, ...zero }, lock: zero });
  });

  describe("through PgBouncer (Debian 12's 1.18)", () => {
    let bouncers: Record<"session" | "ignoring" | "transaction", RunningPgbouncer>;
    beforeAll(async () => {
      bouncers = {
        session: await startPgbouncer(server, { pool_mode: "session" }),
        // The usual workaround for drivers that send `options` at connection: it is dropped.
        ignoring: await startPgbouncer(server, { pool_mode: "session", ignore_startup_parameters: "options" }),
        transaction: await startPgbouncer(server, { pool_mode: "transaction" }),
      };
    }, 30_000);
    afterAll(() => Promise.all(Object.values(bouncers ?? {}).map((b) => b.stop())));
    const via = (bouncer: RunningPgbouncer, database = url) => bouncer.url(new URL(database).pathname.slice(1));

    it("in session mode, which refuses the startup parameter 'options', the store starts and serves, its sessions with its settings", async () => {
      const s = await PostgresStore.open(via(bouncers.session));
      open.push(s);
      expect(await settingsOf(s)).toEqual(STORE_SETTINGS);
      await s.createKey(newKey("k", 2));
      expect((await s.reserve({ reservationId: "r", keyId: "k", amount: 2, at: 1 })).ok).toBe(true);
      expect(await s.settle({ reservationId: "r", keyId: "k", hold: 2, cost: 1, usage: usage("k", "q", 1) })).toEqual({ available: 1, charged: 1 });
    });

    it("in session mode with ignore_startup_parameters = options (what is sent at connection is dropped), its settings are in effect all the same, also on a liveness session taken back after a cut", async () => {
      const s = await PostgresStore.open(via(bouncers.ignoring), { retryMs: 100 });
      open.push(s);
      expect(await settingsOf(s)).toEqual(STORE_SETTINGS);
      const before = s.owner;
      await cutLiveness(before);
      expect(await pollUntil(() => s.owner !== before && (s as unknown as { lock: pg.Client | null }).lock !== null)).toBe(true);
      expect((await settingsOf(s)).lock).toEqual(STORE_SETTINGS.lock);
    });

    it("in transaction mode, the store refuses to start, saying its connections ran in server sessions not their own, and writes nothing; the shim says so and exits 1", async () => {
      const fresh = await server.newDatabase();
      const refused = await PostgresStore.open(via(bouncers.transaction, fresh)).then((s) => (open.push(s), null), (e: unknown) => e);
      expect(refused).toBeInstanceOf(SessionSettingsError);
      const message = (refused as Error).message;
      expect(message).toMatch(/^the database connections do not keep their server sessions: (two connections ran in one server session|the liveness connection's statements ran in two server sessions)\b/);
      expect(message).toMatch(/pool_mode = session/);
      expect(await publicTables(fresh)).toBe(0);
      const dir = tempDir();
      const failed = await spawnShim({
        SHIM_UPSTREAM_URL: "http://127.0.0.1:62250/v1",
        SHIM_DATABASE_URL: via(bouncers.transaction, fresh),
        SHIM_CONFIG: writeProcessConfig(dir, generateKey(), [{ name: "qwen2.5-7b", maxModelLen: 4096 }]),
        SHIM_ADMIN_TOKEN: `adm-${generateKey().key}`,
      }).catch((e: unknown) => e);
      if (!(failed instanceof ShimStartError)) throw new Error(`expected a failed start, got ${String(failed)}`);
      expect(failed.exit).toEqual({ code: 1, signal: null });
      expect(failed.lines.map((l) => JSON.parse(l)).filter((l) => l.level >= 50).map((l) => l.msg)).toEqual([expect.stringMatching(/^the database connections do not keep their server sessions: .*pool_mode = session/)]);
    });

    it("in transaction mode, the refused start leaves none of the store's settings on the pooler's server sessions (PgBouncer does not reset them in that mode): another application on the pooler keeps PostgreSQL's defaults", async () => {
      const fresh = await server.newDatabase();
      const refused = await PostgresStore.open(via(bouncers.transaction, fresh)).then((s) => (open.push(s), null), (e: unknown) => e);
      expect(refused).toBeInstanceOf(SessionSettingsError);
      // Another application on the same pooler and database, which never SETs anything, on
      // each of the server sessions the pooler holds (several clients at once reach them all).
      const others = await Promise.all(Array.from({ length: 4 }, async () => {
        const c = new pg.Client({ connectionString: via(bouncers.transaction, fresh) });
        await c.connect();
        return c;
      }));
      try {
        const seen = await Promise.all(others.map(async (c) => {
          await c.query("BEGIN");
          const r = (await c.query("SELECT current_setting('statement_timeout') AS st, current_setting('synchronous_commit') AS sc, current_setting('idle_in_transaction_session_timeout') AS iit, pg_sleep(0.2)::text AS slept")).rows[0];
          await c.query("COMMIT");
          return r;
        }));
        expect(new Set(seen.map((r) => JSON.stringify({ ...r, slept: undefined })))).toEqual(new Set([JSON.stringify({ st: "0", sc: "on", iit: "0" })]));
      } finally {
        await Promise.all(others.map((c) => c.end()));
      }
    });

    // Poolers that hand out no server session of a client's own, found out as such (the pooler
    // advice, exit 1), not as an outage ("the store failed closed", restarted for ever).
    const refusing: [string, Record<string, string>][] = [
      // PgBouncer hands the check's other connection the server session the liveness statement
      // has just left: two connections in one session.
      ["transaction mode with one server session per pool (default_pool_size = 1)", { pool_mode: "transaction", default_pool_size: "1" }],
      // BEGIN refused: "transaction blocks not allowed in statement pooling mode".
      ["statement mode", { pool_mode: "statement" }],
    ];
    describe("the check before anything is SET (probeSessions)", () => {
      const liveness = async (target: string, afterFirst: (pid: number) => Promise<void> | void) => {
        const c = new pg.Client(sessionSettings(target, 500).connection.config);
        await c.connect();
        // Something happens between the check's first statement and the next (a test's hook).
        const query = c.query.bind(c) as (q: pg.QueryConfig) => Promise<pg.QueryResult>;
        let n = 0;
        (c as unknown as { query: typeof query }).query = async (q) => {
          const r = await query(q);
          if (++n === 1) await afterFirst((r.rows[0] as { pid: number }).pid);
          return r;
        };
        return c;
      };

      it("a liveness statement that waits for the server session another connection's transaction holds is refused, once that transaction has ended", async () => {
        const b = await startPgbouncer(server, { pool_mode: "transaction", default_pool_size: "2" });
        const target = via(b, await server.newDatabase());
        // Another application takes the server session the liveness statement ran in, and holds it.
        const app = new pg.Client({ connectionString: target });
        await app.connect();
        const lock = await liveness(target, async () => void await app.query("BEGIN; SELECT 1"));
        try {
          const t0 = Date.now();
          const refused = await probeSessions(lock, sessionSettings(target, 500).connection.config, 500).then(() => null, (e: unknown) => e);
          expect(refused).toBeInstanceOf(SessionSettingsError);
          expect((refused as Error).message).toMatch(/the liveness connection's statement ran only once another connection's transaction had ended/);
          expect(Date.now() - t0).toBeLessThan(3000);
        } finally {
          await lock.end();
          await app.end();
          await b.stop();
        }
      });

      it("direct, a liveness connection whose server process stalls past the bound, then answers in its own session, is an outage, not a pooler (exit 1 for good)", async () => {
        const target = await server.newDatabase();
        // The liveness connection's server process stops for 800 ms (a VM pause, CPU starvation):
        // longer than the check's 500 ms bound, shorter than the client's own (bound + 1 s).
        const lock = await liveness(target, (pid) => {
          process.kill(pid, "SIGSTOP");
          setTimeout(() => process.kill(pid, "SIGCONT"), 800);
        });
        try {
          const failed = await probeSessions(lock, sessionSettings(target, 500).connection.config, 500).then(() => null, (e: unknown) => e);
          expect(failed).toBeInstanceOf(Error);
          expect(failed).not.toBeInstanceOf(SessionSettingsError);
          expect((failed as Error).message).toMatch(/answered after 500 ms, in its own server session/);
        } finally {
          await lock.end();
        }
      });

      it("direct, a liveness connection cut (no answer, while the server answers another) is an outage, not a pooler", async () => {
        const proxy = await frozenProxy(url);
        const lock = await liveness(proxy.url, async () => proxy.cutOpen());
        lock.on("error", () => {});
        try {
          const failed = await probeSessions(lock, sessionSettings(url, 500).connection.config, 500).then(() => null, (e: unknown) => e);
          expect(failed).toBeInstanceOf(Error);
          expect(failed).not.toBeInstanceOf(SessionSettingsError);
          expect((failed as Error).message).toBe("Query read timeout");
        } finally {
          cutSocket(lock);
          await proxy.close();
        }
      });
    });

    for (const [name, settings] of refusing) {
      it(`in ${name}, the store refuses to start with the pooler advice, within its bound, and writes nothing`, async () => {
        const b = await startPgbouncer(server, settings);
        try {
          const fresh = await server.newDatabase();
          const t0 = Date.now();
          const refused = await PostgresStore.open(via(b, fresh), { timeoutMs: 2000 }).then((s) => (open.push(s), null), (e: unknown) => e);
          expect(refused).toBeInstanceOf(SessionSettingsError);
          expect((refused as Error).message).toMatch(/pool_mode = session/);
          expect(Date.now() - t0).toBeLessThan(8000);
          expect(await publicTables(fresh)).toBe(0);
        } finally {
          await b.stop();
        }
      }, 30_000);
    }
  });

  it("a usage report over a large ledger is not held to the request path's statement bound", { timeout: 60_000 }, async () => {
    await store.createKey(newKey("busy", 5));
    // 600,000 usage rows over ten days (a busy key's week is millions).
    await sql(`INSERT INTO ledger (key_id, at, amount, kind, model, status, prompt_tokens, completion_tokens, route, stream, ms)
      SELECT 'busy', ${Date.UTC(2027, 0, 1)} + g * 1440, -1, 'usage', 'm' || (g % 3), 200, 10, 5, 'chat', false, 1 FROM generate_series(0, 599999) g`);
    // A replica whose request statements are bounded at 150 ms, less than these scans take.
    // Connecting is bounded by the same 150 ms, and under CI's load a new backend can take
    // longer than that to start (it did: "connection timeout"), which is not what this test is
    // about: the replica is opened, and a connection made for its pool, with a few tries.
    const tight = await withTries(async () => {
      const s = await replica({ timeoutMs: 150 });
      await s.getKey("busy");
      return s;
    });
    const days = await tight.usage({ keyId: "busy", asker: "busy", from: 0, to: Date.UTC(2028, 0, 1), group: "day" });
    expect(days.map((d) => d.group)).toEqual(Array.from({ length: 10 }, (_, i) => `2027-01-${String(i + 1).padStart(2, "0")}`));
    expect(days.reduce((n, d) => n + d.requests, 0)).toBe(600_000);
    const models = await tight.usage({ keyId: null, asker: null, from: 0, to: Date.UTC(2028, 0, 1), group: "model" });
    expect(models.map((m) => [m.group, m.requests, m.cost])).toEqual([["m0", 200_000, 200_000], ["m1", 200_000, 200_000], ["m2", 200_000, 200_000]]);
  });

  describe("the usage rows' time index, built in the background", () => {
    const indexState = async () => (await sql<{ valid: boolean }>("SELECT indisvalid AS valid FROM pg_index WHERE indexrelid = to_regclass('ledger_usage_at')"))[0]?.valid ?? "absent";
    /** A build has begun and waits: an invalid index. */
    const buildWaiting = () => pollUntil(async () => (await indexState()) === false, 5000, 50);
    /** A session with a write of its own under way (a request's, not yet committed): a concurrent build waits for it. */
    const writeUnderWay = async (keyId: string) => {
      const writer = new pg.Client({ connectionString: url });
      writer.on("error", () => {}); // a test may restart the server under it
      await writer.connect();
      await writer.query("BEGIN");
      await writer.query("INSERT INTO ledger (key_id, at, amount, kind) VALUES ($1, 1, 0, 'grant')", [keyId]);
      return { commit: async () => (await writer.query("COMMIT"), await writer.end()) };
    };
    /** The index dropped, then a new replica whose build of it waits behind a write under way by key `keyId` (made with `credits`). */
    const buildHeldByWrite = async (keyId: string, credits = 1, options: PostgresStoreOptions = {}) => {
      await store.usageIndex!.outcome;
      await sql("DROP INDEX IF EXISTS ledger_usage_at");
      await store.createKey(newKey(keyId, credits));
      const write = await writeUnderWay(keyId);
      const builder = await replica(options);
      await buildWaiting();
      return { write, builder };
    };

    it("is built at a replica's first start, and reports over all keys read their period through it", async () => {
      expect(await store.usageIndex!.outcome).toMatchObject({ kind: "built" });
      expect(await indexState()).toBe(true);
      expect(await (await replica()).usageIndex!.outcome).toEqual({ kind: "present" }); // the next replica finds it
      await store.createKey(newKey("busy", 5));
      await sql(`INSERT INTO ledger (key_id, at, amount, kind, model, status, prompt_tokens, completion_tokens, route, stream, ms)
        SELECT 'busy', ${Date.UTC(2027, 0, 1)} + g * 1000, -1, 'usage', 'm', 200, 10, 5, 'chat', false, 1 FROM generate_series(0, 199999) g`);
      await sql("ANALYZE ledger");
      const scans = async () => Number((await sql<{ n: string }>("SELECT idx_scan AS n FROM pg_stat_user_indexes WHERE indexrelname = 'ledger_usage_at'"))[0]!.n);
      const before = await scans();
      // The operator's report of a later month, with nothing in it: it reads no row of the history.
      expect(await store.usage({ keyId: null, asker: null, from: Date.UTC(2027, 1, 1), to: Date.UTC(2027, 2, 1), group: "model" })).toEqual([]);
      // A backend flushes its statistics once idle, up to 10 s later (PostgreSQL 15).
      expect(await pollUntil(async () => (await scans()) > before, 15_000, 200)).toBe(true);
    }, 60_000);

    it("is built despite a lock_timeout the role or database sets (a usual guard for DDL) while an older report's transaction runs", async () => {
      await store.usageIndex!.outcome;
      await sql(`ALTER DATABASE ${url.slice(url.lastIndexOf("/") + 1)} SET lock_timeout = '500ms'`);
      await sql("DROP INDEX ledger_usage_at");
      const reader = new pg.Client({ connectionString: url });
      await reader.connect();
      await reader.query("BEGIN ISOLATION LEVEL REPEATABLE READ");
      await reader.query("SELECT count(*) FROM ledger");
      const s = await replica();
      await new Promise((r) => setTimeout(r, 1200)); // the report runs past the lock_timeout
      await reader.query("COMMIT");
      await reader.end();
      expect(await s.usageIndex!.outcome).toMatchObject({ kind: "built" });
      expect(await indexState()).toBe(true);
    }, 30_000);

    it("a replica closed while it connects still settles its outcome; one waiting for another's build takes over when that one goes", async () => {
      await store.usageIndex!.outcome;
      await sql("DROP INDEX ledger_usage_at");
      const quick = await replica();
      await quick.close();
      expect(await Promise.race([quick.usageIndex!.outcome, new Promise((r) => setTimeout(() => r("pending"), 3000))])).toEqual({ kind: "stopped" });
      // A build held up by a writer; a second replica waits for it; the first goes away.
      await store.createKey(newKey("w", 1));
      const write = await writeUnderWay("w");
      const first = await replica();
      await buildWaiting();
      const second = await replica();
      await new Promise((r) => setTimeout(r, 300));
      await first.close();
      expect(await first.usageIndex!.outcome).toEqual({ kind: "stopped" });
      await write.commit();
      expect(await second.usageIndex!.outcome).toMatchObject({ kind: "built" });
      expect(await indexState()).toBe(true);
    }, 30_000);

    it("a replica that starts while another builds waits without a deadlock (long or short), and finds it built", async () => {
      for (const waitMs of [300, 1500]) { // under and over PostgreSQL's deadlock_timeout (1 s)
        const { write, builder } = await buildHeldByWrite(`d${waitMs}`);
        const waiter = await replica();
        await new Promise((r) => setTimeout(r, waitMs));
        await write.commit();
        expect((await Promise.all([builder.usageIndex!.outcome, waiter.usageIndex!.outcome])).map((o) => o.kind)).toEqual(["built", "present"]);
      }
    }, 60_000);

    it("a try cut short by a database restart is made again, and builds it", async () => {
      const { builder: s } = await buildHeldByWrite("w", 1, { retryMs: 200 }); // its write ended by the restart
      server.kill();
      server.start();
      expect(await s.usageIndex!.outcome).toMatchObject({ kind: "built" });
      expect(await indexState()).toBe(true);
    }, 60_000);

    it("a try whose connection is cut silently fails within the store's statement bound, is told, and is made again", async () => {
      await store.usageIndex!.outcome;
      await sql("DROP INDEX ledger_usage_at");
      const admin = new pg.Client({ connectionString: url });
      await admin.connect();
      await admin.query("SELECT pg_advisory_lock($1, 0)", [LOCK_CLASS + 1]); // another replica builds
      const proxy = await frozenProxy(url);
      try {
        const told: UsageIndexOutcome[] = [];
        const build = new UsageIndexBuild({ config: { connectionString: proxy.url, connectionTimeoutMillis: 2000, query_timeout: 1500 }, settings: {} }, new OpenConnections(), (o) => told.push(o));
        await new Promise((r) => setTimeout(r, 1000)); // it polls for the lock
        proxy.cutOpen(); // its connection is gone without a word; a new one would work
        await admin.query("SELECT pg_advisory_unlock($1, 0)", [LOCK_CLASS + 1]); // the other replica went away
        expect(await build.outcome).toMatchObject({ kind: "built" });
        expect(told[0]).toMatchObject({ kind: "retrying", retryMs: 1000 });
      } finally {
        await admin.end();
        await proxy.close();
      }
    }, 30_000);

    it("a refused connection (a database restarting) is a failure that passes: tried again within seconds, not an hour later", async () => {
      const refused = `postgres://shim@127.0.0.1:${await freePort()}/x`; // nothing listens there
      const told: UsageIndexOutcome[] = [];
      const build = new UsageIndexBuild({ config: { connectionString: refused, connectionTimeoutMillis: 2000 }, settings: {} }, new OpenConnections(), (o) => told.push(o));
      const pool = new pg.Pool({ connectionString: refused });
      try {
        expect(await pollUntil(() => told.length > 0, 5000, 20)).toBe(true);
        expect(told[0]).toMatchObject({ kind: "retrying", code: "ECONNREFUSED", retryMs: 1000 });
      } finally {
        await build.stop(pool);
        await pool.end();
      }
      expect(await build.outcome).toEqual({ kind: "stopped" });
    });

    it("stopped while a failed try closes its connection: the outcome is 'stopped' at once, and no failure is told after the stop", async () => {
      const bare = await server.newDatabase(); // no schema: the build fails (42P01, an hour's wait)
      const pool = new pg.Pool({ connectionString: bare });
      const connections = new OpenConnections();
      const add = connections.add.bind(connections);
      let build: UsageIndexBuild | undefined;
      let stopping: Promise<void> | undefined;
      const told: { kind: string; afterStop: boolean }[] = [];
      // The shutdown arrives while the failed try says goodbye (its `finally`'s end()).
      connections.add = (c: pg.Client) => {
        add(c);
        const end = c.end.bind(c) as () => Promise<void>;
        (c as unknown as { end: () => Promise<void> }).end = () => {
          stopping ??= build!.stop(pool);
          return end();
        };
      };
      build = new UsageIndexBuild({ config: { connectionString: bare, connectionTimeoutMillis: 2000, query_timeout: 3000 }, settings: {} }, connections, (o) => told.push({ kind: o.kind, afterStop: stopping !== undefined }));
      try {
        expect(await pollUntil(() => stopping !== undefined, 10_000, 10)).toBe(true);
        await stopping;
        expect(await Promise.race([build.outcome, new Promise((r) => setTimeout(() => r("pending"), 3000))])).toEqual({ kind: "stopped" });
        expect(told.filter((t) => t.afterStop && t.kind === "retrying")).toEqual([]);
      } finally {
        await pool.end();
      }
    });

    it("a try that fails for a reason that does not pass (a DBA's temp_file_limit) is told, and made again an hour later, not every minute", async () => {
      await store.usageIndex!.outcome;
      await sql("DROP INDEX ledger_usage_at");
      await store.createKey(newKey("t", 1));
      await sql(`INSERT INTO ledger (key_id, at, amount, kind) SELECT 't', g, -1, 'usage' FROM generate_series(1, 300000) g`);
      const db = url.slice(url.lastIndexOf("/") + 1);
      await sql(`ALTER DATABASE ${db} SET temp_file_limit = '64kB'`);
      await sql(`ALTER DATABASE ${db} SET maintenance_work_mem = '1MB'`);
      const told: UsageIndexOutcome[] = [];
      const s = await replica({ onUsageIndex: (o) => told.push(o) });
      expect(await pollUntil(() => told.length > 0, 20_000, 100)).toBe(true);
      expect(told[0]).toMatchObject({ kind: "retrying", code: "53400", retryMs: 3_600_000 });
      await s.close();
      expect(await s.usageIndex!.outcome).toEqual({ kind: "stopped" });
    }, 60_000);

    it("does not hold the ledger's writes while it is built: requests are held and settled meanwhile; a build cut short by a close is built again at the next start", async () => {
      const { write, builder: building } = await buildHeldByWrite("k", 10);
      expect(await indexState()).toBe(false);
      // The same replica serves meanwhile: the ledger's writes are not held by the build.
      const t = performance.now();
      expect((await building.reserve({ reservationId: "r", keyId: "k", amount: 3, at: 2 })).ok).toBe(true);
      await building.settle({ reservationId: "r", keyId: "k", hold: 3, cost: 2, usage: usage("k", "q", 2) });
      expect(performance.now() - t).toBeLessThan(2000);
      // Closed before the build could end: it is given up at once, and leaves an invalid index.
      const closing = performance.now();
      await building.close();
      expect(performance.now() - closing).toBeLessThan(SHUTDOWN_MS);
      expect(await building.usageIndex!.outcome).toEqual({ kind: "stopped" });
      await write.commit();
      await new Promise((r) => setTimeout(r, 300));
      expect(await indexState()).toBe(false); // the server did not go on with it
      // The next start drops what was left and builds it.
      expect(await (await replica()).usageIndex!.outcome).toMatchObject({ kind: "built" });
      expect(await indexState()).toBe(true);
    }, 60_000);
  });

  it("runs two usage reports at a time, the others in turn, so long reports cannot take the whole pool from requests", async () => {
    const turns = new Turns(2, 3);
    let running = 0;
    let most = 0;
    const order: number[] = [];
    const task = (i: number) => turns.run(async () => {
      most = Math.max(most, ++running);
      await new Promise((r) => setTimeout(r, 20));
      running--;
      order.push(i);
      if (i === 2) throw new Error("a failed report passes its turn on too");
      return i;
    });
    const results = await Promise.allSettled([0, 1, 2, 3, 4, 5].map(task));
    expect(most).toBe(2);
    // Two run, three wait; the sixth is refused at once rather than queued without bound.
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "fulfilled", "rejected", "fulfilled", "fulfilled", "rejected"]);
    expect(String((results[5] as PromiseRejectedResult).reason)).toContain("2 running and 3 waiting already");
    expect(order).toEqual([0, 1, 2, 3, 4]);
    expect(order.slice(0, 2).sort()).toEqual([0, 1]);
    // And the store uses them: five reports at once on a busy ledger, two statements at a time.
    await store.createKey(newKey("r", 5));
    await sql(`INSERT INTO ledger (key_id, at, amount, kind, model, status, prompt_tokens, completion_tokens, route, stream, ms)
      SELECT 'r', g, -1, 'usage', 'm', 200, 1, 1, 'chat', false, 1 FROM generate_series(1, 300000) g`);
    // One watcher session polling the server's view of active client sessions (parallel workers
    // of a report show the same query; they are not sessions of the pool).
    const watcher = new pg.Client({ connectionString: url });
    await watcher.connect();
    let peak = 0;
    let done = false;
    const watching = (async () => {
      while (!done) {
        const { rows } = await watcher.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'client backend' AND state = 'active' AND query LIKE '/* shim usage report%' AND pid <> pg_backend_pid()");
        peak = Math.max(peak, rows[0]!.n);
      }
    })();
    await Promise.all(Array.from({ length: 5 }, () => store.usage({ keyId: null, asker: null, from: 0, to: 1e12, group: "day" })));
    done = true;
    await watching;
    await watcher.end();
    expect(peak).toBeGreaterThanOrEqual(1); // it saw them
    expect(peak).toBeLessThanOrEqual(2);
  });

  it("a key's reports run one at a time, the next waiting in the key's line, and the operator's reports have turns of their own", { timeout: 30_000 }, async () => {
    for (let i = 0; i < 12; i++) await store.createKey(newKey(`k${i}`, 5));
    // Reports block while another session holds the ledger, as a very long scan would.
    const blocker = new pg.Client({ connectionString: url });
    await blocker.connect();
    await blocker.query("BEGIN");
    await blocker.query("LOCK TABLE ledger IN ACCESS EXCLUSIVE MODE");
    const period = { from: 0, to: 1e12, group: "model" as const };
    const keyReports = Array.from({ length: 9 }, (_, i) => store.usage({ ...period, keyId: `k${i}`, asker: `k${i}` }).then(() => "ok", (e: unknown) => e));
    const left = new AbortController();
    const leaving = store.usage({ ...period, keyId: "k9", asker: "k9", signal: left.signal });
    // A second report of a key with one under way waits in the key's own line (two widgets of a
    // dashboard asking at once both get an answer), without taking a shared place meanwhile.
    const secondOfK0 = store.usage({ ...period, keyId: "k0", asker: "k0" }).then(() => "ok", (e: unknown) => e);
    // Ten keys fill the shared turns (2 running, 8 waiting): an eleventh key is refused, the
    // operator's report over all keys is not.
    await new Promise((r) => setTimeout(r, 100));
    // The askers' own rate (a 429), not the store unavailable (a 503 logged as an error).
    await expect(store.usage({ ...period, keyId: "k10", asker: "k10" })).rejects.toMatchObject({ name: "ReportsBusyError", scope: "shim" });
    const all = store.usage({ ...period, keyId: null, asker: null });
    // A waiting report whose asker left gives up its place at once: the eleventh key now fits.
    left.abort(new ClientLeftError());
    await expect(leaving).rejects.toBeInstanceOf(ClientLeftError);
    const k10 = store.usage({ ...period, keyId: "k10", asker: "k10" });
    await expect(store.usage({ ...period, keyId: "k11", asker: "k11" })).rejects.toMatchObject({ name: "ReportsBusyError", scope: "shim" });
    // A key's own line full (one running, 8 waiting) is that key's: the next is refused, others are not.
    const moreOfK1 = Array.from({ length: 9 }, () => store.usage({ ...period, keyId: "k1", asker: "k1" }).then(() => "ok", (e: unknown) => e));
    await new Promise((r) => setTimeout(r, 50));
    expect(await moreOfK1[8]).toMatchObject({ name: "ReportsBusyError", scope: "line" });
    await blocker.query("COMMIT");
    await blocker.end();
    expect(await all).toEqual([]);
    expect(await k10).toEqual([]);
    expect(await Promise.all(keyReports)).toEqual(Array(9).fill("ok"));
    expect(await secondOfK0).toBe("ok");
    expect(await Promise.all(moreOfK1.slice(0, 8))).toEqual(Array(8).fill("ok"));
  });

  it("a key keeping its own line of reports full does not get the operator's report on that key refused: lines are the askers'", { timeout: 30_000 }, async () => {
    await store.createKey(newKey("k", 5));
    const blocker = new pg.Client({ connectionString: url });
    await blocker.connect();
    await blocker.query("BEGIN");
    await blocker.query("LOCK TABLE ledger IN ACCESS EXCLUSIVE MODE");
    const q = { keyId: "k", from: 0, to: 1e12, group: "model" as const };
    const own = Array.from({ length: 9 }, () => store.usage({ ...q, asker: "k" }).then(() => "ok", (e: unknown) => e));
    await new Promise((r) => setTimeout(r, 100));
    await expect(store.usage({ ...q, asker: "k" })).rejects.toMatchObject({ name: "ReportsBusyError", scope: "line" });
    const operator = store.usage({ ...q, asker: null }).then(() => "ok", (e: unknown) => e);
    await blocker.query("COMMIT");
    await blocker.end();
    expect(await operator).toBe("ok");
    expect(await Promise.all(own)).toEqual(Array(9).fill("ok"));
  });

  it("close() ends within a bound when the database stops answering (a hung server, a silent network cut): the connections still open are cut", async () => {
    const proxy = await frozenProxy(url);
    try {
      const cut: number[] = [];
      let indexSettled!: () => void;
      const indexChecked = new Promise<void>((r) => (indexSettled = r));
      const s = await PostgresStore.open(proxy.url, { onConnectionsCut: (n) => cut.push(n), onUsageIndex: () => indexSettled() });
      await s.createKey(newKey("k", 1)); // a pooled connection besides the liveness one
      // The report index's check has its own connection until it finds the index: frozen while
      // that one was still open, three were cut (a loaded machine, 1 run in 3).
      await indexChecked;
      proxy.freeze();
      const started = Date.now();
      await s.close();
      // pg's end() waits for the server to close the socket, which it never does: the process
      // stayed at "draining" until Compose's SIGKILL.
      expect(Date.now() - started).toBeLessThan(SHUTDOWN_MS + 1000);
      expect(cut).toEqual([2]);
    } finally {
      await proxy.close();
    }
  });

  describe("close() on a database that stopped answering lets go of every connection: a process left with only its store exits (in a process of its own)", () => {
    /** test/support/closing-store-process.ts on `proxy`, ready (its store open, a key with a hold made). */
    const storeProcess = async (proxy: FrozenProxy) => {
      const child = spawn(process.execPath, [join(dirname(fileURLToPath(import.meta.url)), "..", "support", "closing-store-process.ts"), proxy.url], { stdio: ["pipe", "pipe", "pipe"] });
      trackChild(child);
      const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
      let out = "";
      let err = "";
      child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
      child.stderr.setEncoding("utf8").on("data", (d: string) => (err += d));
      const said = async (line: RegExp) => expect(await pollUntil(() => line.test(out), 15_000), `${out}\n${err}`).toBe(true);
      await said(/^ready$/m);
      /** Closes the store; resolves with the connections it cut and how long the process took to exit after that (null: not within 2 s). */
      const close = async () => {
        child.stdin.write("close\n");
        await said(/^closed \d+$/m);
        const closedAt = Date.now();
        const code = await Promise.race([exited, new Promise<"running">((r) => setTimeout(() => r("running"), 2000))]);
        return { cut: Number(/^closed (\d+)$/m.exec(out)![1]), code, exitMs: code === "running" ? null : Date.now() - closedAt };
      };
      return { child, close };
    };

    it("the connections it had open (the liveness lock's, a pooled one) are cut: pg's end() would wait for the server forever", { timeout: 30_000 }, async () => {
      const proxy = await frozenProxy(url);
      try {
        const p = await storeProcess(proxy);
        proxy.freeze();
        // Left open, a socket keeps the event loop alive: the process stayed until a SIGKILL.
        expect(await p.close()).toMatchObject({ cut: 2, code: 0 });
      } finally {
        await proxy.close();
      }
    });

    it("so is the connection of a settlement's second try, stuck connecting to the hung server", { timeout: 30_000 }, async () => {
      const proxy = await frozenProxy(url);
      try {
        const p = await storeProcess(proxy);
        // The settlement's answer is lost and the server hangs from then on: its second try's
        // connection is accepted and never answered (its own bound, timeoutMs, is 5 s away).
        proxy.loseAnswer((packet) => packet.includes("LOST") && (setImmediate(() => proxy.freeze()), true));
        const before = proxy.accepted();
        p.child.stdin.write("settle\n");
        expect(await pollUntil(() => proxy.accepted() > before, 3000)).toBe(true);
        // Cut: the liveness lock's and the second try's (the pooled one went with the lost answer).
        expect(await p.close()).toMatchObject({ cut: 2, code: 0 });
      } finally {
        await proxy.close();
      }
    });
  });

  describe("a usage report whose statement runs (here: blocked by another session's lock on the ledger)", () => {
    let blocker: pg.Client;
    const period = { keyId: "k", asker: "k", from: 0, to: 1e12, group: "model" as const };
    /** Server sessions running a report's statement, this one's or any other's. */
    const runningReports = async () =>
      (await sql<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%FROM ledger WHERE kind%' AND pid <> pg_backend_pid()"))[0]!.n;
    beforeEach(async () => {
      await store.createKey(newKey("k", 5));
      blocker = new pg.Client({ connectionString: url });
      await blocker.connect();
      await blocker.query("BEGIN");
      await blocker.query("LOCK TABLE ledger IN ACCESS EXCLUSIVE MODE");
    });
    afterEach(async () => {
      await blocker.query("COMMIT").catch(() => {});
      await blocker.end();
    });

    it("is cancelled on the server when its asker leaves: it rejects at once and its connection is free for the next report", async () => {
      const left = new AbortController();
      const report = store.usage({ ...period, signal: left.signal });
      expect(await pollUntil(async () => (await runningReports()) === 1)).toBe(true);
      const leftAt = Date.now();
      left.abort(new ClientLeftError());
      await expect(report).rejects.toBeInstanceOf(ClientLeftError);
      expect(Date.now() - leftAt).toBeLessThan(1000);
      // Not left running to its 60 s bound while the lock lasts, holding a pooled connection.
      expect(await pollUntil(async () => (await runningReports()) === 0, 2000)).toBe(true);
      await blocker.query("COMMIT");
      expect(await store.usage(period)).toEqual([]); // the key's report is no longer "already running"
    });

    it("is cancelled also behind a pooler, where the driver's process id is the pooler's, not the server session's", async () => {
      // PgBouncer hands the driver a process id and cancel key of its own making, not the server's.
      const pool = (store as unknown as { pool: pg.Pool }).pool;
      pool.on("acquire", (c) => Object.assign(c, { processID: 424242 }));
      const left = new AbortController();
      const report = store.usage({ ...period, signal: left.signal });
      expect(await pollUntil(async () => (await runningReports()) === 1)).toBe(true);
      left.abort(new ClientLeftError());
      await expect(report).rejects.toBeInstanceOf(ClientLeftError);
      expect(await pollUntil(async () => (await runningReports()) === 0, 2000)).toBe(true);
    });

    it("a cancellation that waited for a connection cancels only its own report, never another that started on the same backend", async () => {
      // (Another key's report: "b" needs no key row, and the ledger is locked for writes here.)
      const left = new AbortController();
      const reportA = store.usage({ ...period, signal: left.signal }).catch((e: unknown) => e);
      expect(await pollUntil(async () => (await runningReports()) === 1)).toBe(true);
      // A second lock request queues behind A's statement: B, started after it, stays running.
      const blocker2 = new pg.Client({ connectionString: url });
      await blocker2.connect();
      await blocker2.query("BEGIN");
      const locked2 = blocker2.query("LOCK TABLE ledger IN ACCESS EXCLUSIVE MODE");
      // The pool is busy (requests in flight): the other 9 of its 10 connections are taken.
      const pool = (store as unknown as { pool: pg.Pool }).pool;
      const taken = await Promise.all(Array.from({ length: 9 }, () => pool.connect()));
      try {
        const reportB = store.usage({ ...period, keyId: "b", asker: "b" }).then((r) => r, (e: unknown) => e);
        await new Promise((r) => setTimeout(r, 50));
        left.abort(new ClientLeftError()); // A's cancellation now waits for a connection
        expect(await reportA).toBeInstanceOf(ClientLeftError);
        await blocker.query("COMMIT"); // A's statement ends by itself; its connection goes to B
        await locked2;
        expect(await pollUntil(async () => (await runningReports()) === 1)).toBe(true); // B, on A's backend
        taken[0]!.release(); // the cancellation meant for A runs now
        await new Promise((r) => setTimeout(r, 300));
        await blocker2.query("COMMIT");
        expect(await reportB).toEqual([]);
      } finally {
        for (const c of taken.slice(1)) c.release();
        await blocker2.end();
      }
    });

    it("is cancelled when the store closes, which then ends at once, not after the statement's minute", async () => {
      const cut: number[] = [];
      const s = await replica({ onConnectionsCut: (n) => cut.push(n) });
      const report = s.usage(period).then(() => "done", (e: unknown) => e);
      expect(await pollUntil(async () => (await runningReports()) === 1)).toBe(true);
      const closing = Date.now();
      await s.close();
      expect(Date.now() - closing).toBeLessThan(SHUTDOWN_MS - 500); // before connections would be cut
      expect(cut).toEqual([]);
      expect(await report).toBeInstanceOf(StoreUnavailableError);
      expect(await runningReports()).toBe(0);
    });
  });

  it("a role with data rights only (no CREATE on the schema) runs a replica once the schema is there", async () => {
    await sql("DROP ROLE IF EXISTS app_dml");
    await sql("CREATE ROLE app_dml LOGIN");
    await sql("REVOKE CREATE ON SCHEMA public FROM PUBLIC");
    await sql("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app_dml");
    await sql("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO app_dml");
    // `store` (beforeEach) has migrated the database as its owner.
    // The index was never built (an owner's build cut short): this role cannot build it, says so, and serves.
    await store.usageIndex!.outcome;
    await sql("DROP INDEX ledger_usage_at");
    const s = await PostgresStore.open(url.replace("://shim@", "://app_dml@"));
    open.push(s);
    await s.createKey(newKey("dml", 5));
    expect((await s.reserve({ reservationId: "r", keyId: "dml", amount: 1, at: 1 })).ok).toBe(true);
    expect(await s.usageIndex!.outcome).toMatchObject({ kind: "not-permitted", reason: expect.stringMatching(/owner/) });
  });

  it("a replica role granted before the upgrade made `prices` starts once its prices are recorded (SELECT on prices only), and without that grant its start says the GRANT to run, not to start as the owner", async () => {
    const prices = { records: distinctPrices({ request: 10, batchRequest: 5, models: new Map([["m", { promptPer1k: 3, completionPer1k: 4 }]]) }), at: 1 };
    await sql("DROP ROLE IF EXISTS app_old");
    await sql("CREATE ROLE app_old LOGIN");
    await sql("REVOKE CREATE ON SCHEMA public FROM PUBLIC");
    // The grants a replica role had before the upgrade: every table but `prices`, which did not exist.
    await sql("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app_old");
    await sql("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO app_old");
    await sql("REVOKE ALL ON prices FROM app_old");
    // The owner's upgraded start has recorded the prices.
    open.push(await PostgresStore.open(url, { prices }));
    const asReplica = url.replace("://shim@", "://app_old@");
    const refused = await PostgresStore.open(asReplica, { prices }).then((s) => { open.push(s); return undefined; }, (e: unknown) => e);
    expect(refused).toBeInstanceOf(SchemaOwnerNeededError);
    expect(String(refused)).toMatch(/GRANT SELECT, INSERT ON prices TO <this role>/);
    expect(String(refused)).not.toMatch(/start one shim/); // an owner's start would not grant this role anything
    // Reading the prices is all a replica with the same prices needs: it records nothing.
    await sql("GRANT SELECT ON prices TO app_old");
    const s = await PostgresStore.open(asReplica, { prices });
    open.push(s);
    await s.createKey(newKey("old", 5));
    expect((await s.reserve({ reservationId: "r", keyId: "old", amount: 1, at: 1 })).ok).toBe(true);
  });

  it("sslmode=require encrypts without verifying the certificate, as psql does with the same URL", async () => {
    const dataDir = (await sql<{ data_directory: string }>("SHOW data_directory"))[0]!.data_directory;
    const files = [`${dataDir}/server.key`, `${dataDir}/server.crt`];
    const made = spawnSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=db.internal", "-keyout", files[0]!, "-out", files[1]!], { encoding: "utf8" });
    expect(made.status, made.stderr).toBe(0);
    chmodSync(files[0]!, 0o600);
    if (process.getuid?.() === 0) for (const f of files) spawnSync("chown", ["postgres:postgres", f]); // the server runs as postgres under root
    await sql("ALTER SYSTEM SET ssl = on");
    await sql("SELECT pg_reload_conf()");
    await pollUntil(async () => (await sql<{ ssl: string }>("SHOW ssl"))[0]!.ssl === "on");
    try {
      const s = await PostgresStore.open(`${url}?sslmode=require`, { timeoutMs: 3000 });
      open.push(s);
      const { lock } = s as unknown as { lock: pg.Client };
      expect((await lock.query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")).rows[0]).toEqual({ ssl: true });
      await s.createKey(newKey("k", 1));
      expect((await s.getKey("k"))!.balance).toBe(1);
    } finally {
      await sql("ALTER SYSTEM RESET ssl");
      await sql("SELECT pg_reload_conf()");
    }
  });

  /**
   * Found by a mutation review of the failure paths: behaviour the code had right but no test
   * pinned, each test failing under its mutant. What an operator would notice otherwise: credits
   * held until a restart, a sweep querying every 100 ms for ever, a server session leaked per
   * retried settlement, an inflated released-holds metric, an admin write lost in a crash.
   */
  describe("recovering from failures", () => {
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
});

/** How many tables the database at `url` holds: 0 when a refused store wrote nothing. */
async function publicTables(url: string): Promise<number> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = 'public'")).rows[0]!.n;
  } finally {
    await c.end();
  }
}
