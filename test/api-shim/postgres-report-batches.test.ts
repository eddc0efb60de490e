import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { durableTransaction, types } from "../../api-shim/src/store/postgres-client.ts";
import { UsageReports } from "../../api-shim/src/store/postgres-reports.ts";
import { PostgresStore } from "../../api-shim/src/store/postgres-store.ts";
import { ClientLeftError, StoreUnavailableError, type UsageGroup, type UsageQuery } from "../../api-shim/src/store/store.ts";
import { usageBatches, type UsageRows } from "../../api-shim/src/store/usage-batches.ts";
import { type RunningPostgres, sqlOn, startPostgres } from "../support/postgres.ts";
import { pollUntil } from "../support/tools.ts";

/**
 * The Postgres store's usage reports read from a cursor in batches (postgres-reports.ts): a large
 * report (a year of thousands of keys by day) used to come as one result, parsed and labelled on
 * the shim's one thread, stopping every other request for seconds. Each way a report can end
 * gives its connection back to the pool and its turn to the next report.
 */
describe("a Postgres usage report read in batches", () => {
  let server: RunningPostgres;
  let url: string;
  let store: PostgresStore;
  const sql = async (text: string): Promise<void> => void (await sqlOn(url, text));
  /** `keys` keys with one served request on each of `days` days (keys × days groups by day). */
  const ledger = async (keys: number, days: number) => {
    await sql(`INSERT INTO keys (id, name, hash, tier, created_at) SELECT 'k' || lpad(g::text, 11, '0'), 'n', 'h', 'free', 0 FROM generate_series(0, ${keys - 1}) g`);
    await sql(`INSERT INTO ledger (key_id, at, amount, kind, ref, route, model, status, prompt_tokens, completion_tokens, stream, ms, served)
      SELECT 'k' || lpad(k::text, 11, '0'), d::bigint * 86400000 + 3600000, -1, 'usage', 'r-' || d || '-' || k, 'chat', 'm', 200, 7, 3, false, 10, true
      FROM generate_series(0, ${days - 1}) d, generate_series(0, ${keys - 1}) k`);
  };
  const all = { keyId: null, asker: null, from: 0, to: 1e12, group: "day" } as const satisfies UsageQuery;
  const poolOf = (s: PostgresStore) => (s as unknown as { pool: pg.Pool }).pool;
  /** No connection of the pool is checked out (a report's given back, whichever way it ended). */
  const poolIdle = (pool: pg.Pool) => pollUntil(() => pool.totalCount === pool.idleCount, 3000);
  /** The operator's line takes one report at a time: another of its reports runs only once the one before gave its turn up. */
  const nextReportRuns = async (s: { usage?: (q: UsageQuery) => Promise<UsageGroup[]>; run?: (q: UsageQuery) => Promise<UsageGroup[]> }) => {
    const started = performance.now();
    const ask = { ...all, from: 1e12 - 1 };
    expect(await (s.usage ? s.usage(ask) : s.run!(ask))).toEqual([]);
    return performance.now() - started;
  };

  beforeAll(async () => {
    server = await startPostgres();
  }, 60_000);
  afterAll(() => server?.stop());
  beforeEach(async () => {
    url = await server.newDatabase();
    store = await PostgresStore.open(url);
    await store.usageIndex!.outcome;
  });
  afterEach(() => store.close());

  it("a large report comes as its first batch and the rest, each of at most 10,000 rows, the same rows in the same order as at once", { timeout: 60_000 }, async () => {
    await ledger(500, 50); // 25,000 groups
    const whole = await store.usage(all);
    expect(whole).toHaveLength(25_000);
    const rows = (await store.usage({ ...all, batched: true })) as UsageRows;
    expect(rows).toHaveLength(10_000);
    expect(rows.rest).toBeDefined();
    const batches: UsageGroup[][] = [];
    for await (const batch of usageBatches(rows)) batches.push(batch);
    expect(batches.map((b) => b.length)).toEqual([10_000, 10_000, 5_000]);
    expect(batches.flat()).toEqual(whole);
    expect(whole[0]).toEqual({ keyId: "k00000000000", group: "1970-01-01", requests: 1, promptTokens: 7, completionTokens: 3, cost: 1 });
    expect(await poolIdle(poolOf(store))).toBe(true);
    // A small report is read whole at once: no rest, nothing held.
    const small = (await store.usage({ ...all, keyId: "k00000000001", batched: true })) as UsageRows;
    expect(small).toHaveLength(50);
    expect(await poolIdle(poolOf(store))).toBe(true);
  });

  it("holds its connection and its turn while its reader reads, and gives both up when it has read the last batch", { timeout: 60_000 }, async () => {
    await ledger(300, 50); // 15,000 groups
    const rows = (await store.usage({ ...all, batched: true })) as UsageRows;
    const pool = poolOf(store);
    expect(pool.totalCount - pool.idleCount).toBe(1); // its cursor's transaction
    let ran = false;
    const waiting = nextReportRuns(store).then(() => (ran = true));
    await sleep(300);
    expect(ran).toBe(false); // the operator's next report waits for this one's turn
    let n = 0;
    for await (const batch of usageBatches(rows)) n += batch.length;
    expect(n).toBe(15_000);
    await waiting;
    expect(await poolIdle(pool)).toBe(true);
  });

  it("given up mid-way, or before its first batch was taken, gives its connection and turn up at once", { timeout: 60_000 }, async () => {
    await ledger(300, 50);
    const pool = poolOf(store);
    const rows = (await store.usage({ ...all, batched: true })) as UsageRows;
    const mid = usageBatches(rows);
    await mid.next();
    await mid.next();
    await mid.return!();
    expect(await nextReportRuns(store)).toBeLessThan(2000);
    expect(await poolIdle(pool)).toBe(true);
    const untaken = usageBatches((await store.usage({ ...all, batched: true })) as UsageRows);
    await untaken.return!();
    expect(await nextReportRuns(store)).toBeLessThan(2000);
    expect(await poolIdle(pool)).toBe(true);
    expect(await mid.next()).toEqual({ done: true, value: undefined });
  });

  it("whose asker leaves between batches is ended: its next batch is refused with the asker's reason, its connection given back", { timeout: 60_000 }, async () => {
    await ledger(300, 50);
    const left = new AbortController();
    const batches = usageBatches((await store.usage({ ...all, batched: true, signal: left.signal })) as UsageRows);
    await batches.next();
    left.abort(new ClientLeftError());
    expect(await poolIdle(poolOf(store))).toBe(true);
    await expect(batches.next()).rejects.toBeInstanceOf(ClientLeftError);
    expect(await nextReportRuns(store)).toBeLessThan(2000);
  });

  it("whose connection fails between batches (a statement error) fails its next batch, and its turn and connection are given up", { timeout: 60_000 }, async () => {
    await ledger(300, 50);
    const batches = usageBatches((await store.usage({ ...all, batched: true })) as UsageRows);
    await batches.next();
    // The session ended from outside (a failover, an operator's pg_terminate_backend).
    await sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE state = 'idle in transaction' AND query LIKE '/* shim usage report%'");
    await expect(batches.next()).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(await poolIdle(poolOf(store))).toBe(true);
    expect(await nextReportRuns(store)).toBeLessThan(2000);
  });

  it("a FETCH carries the report's mark, so a cancellation finds it while it runs", { timeout: 60_000 }, async () => {
    await ledger(2000, 100); // 200,000 groups: the first FETCH sorts them all
    const seen = new Set<string>();
    const left = new AbortController();
    const report = store.usage({ ...all, batched: true, signal: left.signal }).catch((e: unknown) => e);
    const watcher = new pg.Client({ connectionString: url });
    await watcher.connect();
    try {
      expect(await pollUntil(async () => {
        for (const r of (await watcher.query<{ query: string }>("SELECT query FROM pg_stat_activity WHERE state = 'active' AND query LIKE '/* shim usage report%' AND pid <> pg_backend_pid()")).rows) seen.add(r.query.replace(/report [0-9a-f-]+/, "report <id>"));
        return [...seen].some((q) => q.includes("FETCH"));
      }, 10_000, 5)).toBe(true);
      left.abort(new ClientLeftError());
      expect(await report).toBeInstanceOf(ClientLeftError);
      expect(await pollUntil(async () => (await watcher.query("SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query LIKE '/* shim usage report%' AND pid <> pg_backend_pid()")).rows.length === 0, 2000)).toBe(true);
    } finally {
      await watcher.end();
    }
    expect(await poolIdle(poolOf(store))).toBe(true);
  });

  it("the store closing ends a report whose reader is between batches: its connection is given back, so close() does not wait for it", { timeout: 60_000 }, async () => {
    await ledger(300, 50);
    const s = await PostgresStore.open(url);
    const batches = usageBatches((await s.usage({ ...all, batched: true })) as UsageRows);
    await batches.next();
    const started = performance.now();
    await s.close();
    expect(performance.now() - started).toBeLessThan(2000);
    await expect(batches.next()).rejects.toBeInstanceOf(StoreUnavailableError);
  });

  describe("its reader's pace (a bound of 300 ms here, 60 s in the store)", () => {
    let pool: pg.Pool;
    let reports: UsageReports;
    beforeEach(() => {
      pool = new pg.Pool({ connectionString: url, types });
      reports = new UsageReports(pool, (fn) => durableTransaction(pool, fn), { idleMs: 300 });
    });
    afterEach(async () => {
      await reports.cancelAll();
      await pool.end();
    });

    it("a reader that reads steadily is not cut, however long the whole takes", { timeout: 60_000 }, async () => {
      await ledger(500, 50);
      let n = 0;
      for await (const batch of usageBatches((await reports.run({ ...all, batched: true })) as UsageRows)) {
        n += batch.length;
        await sleep(200); // each batch within the bound, the whole well past it
      }
      expect(n).toBe(25_000);
    });

    // Found by review: the bound counted from the last batch alone, and /admin/usage's body asks
    // for the next only once its client's socket has taken the previous (~1.2 MB of JSON): a
    // client reading steadily but slowly was cut. Its socket taking bytes is told with touch().
    it("a reader that takes each batch slowly, its client taking bytes all along (touch), is not cut, nor its transaction by the server's idle bound", { timeout: 60_000 }, async () => {
      await ledger(300, 50);
      const slow = new UsageReports(pool, (fn) => durableTransaction(pool, fn), { idleMs: 300, serverIdleMarginMs: 100 });
      const rows = (await slow.run({ ...all, batched: true })) as UsageRows;
      expect(rows.rest?.idleMs).toBe(300);
      let n = 0;
      for await (const batch of usageBatches(rows)) {
        n += batch.length;
        for (let i = 0; i < 8; i++) {
          await sleep(100); // 800 ms over each batch: past both bounds, were they counted from the FETCH
          rows.rest!.touch();
        }
      }
      expect(n).toBe(15_000);
      await slow.cancelAll();
    });

    it("a reader that takes nothing more gives its connection and turn up once the bound has passed since its last batch", { timeout: 60_000 }, async () => {
      await ledger(300, 50);
      const stalled = usageBatches((await reports.run({ ...all, batched: true })) as UsageRows);
      await stalled.next();
      expect(await nextReportRuns(reports)).toBeLessThan(3000);
      expect(await poolIdle(pool)).toBe(true);
      const late = await stalled.next().catch((e: unknown) => e);
      expect(late).toBeInstanceOf(StoreUnavailableError);
      expect(String((late as Error).cause)).toMatch(/the report's reader took nothing for 300 ms/);
    });
  });
});
