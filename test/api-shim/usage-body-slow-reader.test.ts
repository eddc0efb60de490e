import { mkdtempSync, rmSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Fastify, { type FastifyInstance } from "fastify";
import pg from "pg";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { ShimContext } from "../../api-shim/src/context.ts";
import { sendUsageBody } from "../../api-shim/src/routes/usage-body.ts";
import { durableTransaction, types } from "../../api-shim/src/store/postgres-client.ts";
import { UsageReports } from "../../api-shim/src/store/postgres-reports.ts";
import { PostgresStore } from "../../api-shim/src/store/postgres-store.ts";
import { SqliteReports } from "../../api-shim/src/store/sqlite-reports.ts";
import type { UsageQuery } from "../../api-shim/src/store/store.ts";
import { firstAndRest, usageBatches, type UsageRows } from "../../api-shim/src/store/usage-batches.ts";
import { type RunningPostgres, startPostgres } from "../support/postgres.ts";
import { pollUntil } from "../support/tools.ts";
import { sqliteLedgerOfGroups } from "../support/usage-ledger.ts";

/**
 * Found by review: /admin/usage's reader bound ("its client has taken nothing for 60 s") was
 * counted from the last batch the body asked the store for, and the body asks for the next batch
 * only once the socket has taken the previous one (~1.2 MB of JSON). A client reading steadily
 * but slower than a batch per bound (~20 KB/s at 60 s: a script inserting the rows as it reads
 * them) was cut, though it never stopped reading. Here the bound is 4 s, and the client reads
 * 30,000 rows (~3.6 MB, three batches: Postgres's store has the second fetched as the first is
 * written, so only a third shows the bound) at 187 KB/s: each batch takes it ~6.5 s, and it takes
 * some every ~1.1 s. The body is served on a Unix socket, whose small buffer (~200 KB, where
 * loopback TCP's holds megabytes) shows the reader's progress often at this rate. (At a 1 s
 * bound, a second's stall of this process, which runs the client too, on a loaded machine cut the
 * client now and then; at 2 s, a machine at load average 12 still did. The bound and the rate are
 * what matter, in proportion: a batch must take longer than the bound.)
 */
const IDLE_MS = 4000;
const RATE = 187 * 1024;
const ROWS = 30_000;

/** The report's body as /admin/usage writes it (sendUsageBody), on a Unix socket. */
async function serve(dir: string, open: (signal: AbortSignal) => Promise<UsageRows>, group: string): Promise<{ app: FastifyInstance; path: string }> {
  const app = Fastify();
  app.get("/report", async (request, reply) => {
    const left = new AbortController();
    reply.raw.once("close", () => reply.raw.writableFinished || left.abort(new Error("the client left")));
    // finishRequest logs nothing for a request the shim's hooks did not start: no context needed.
    return sendUsageBody({} as ShimContext, request, reply, usageBatches(await open(left.signal)), "json", group, { object: "usage_report" });
  });
  const path = join(dir, "report.sock");
  await app.listen({ path });
  return { app, path };
}

interface Read { raw: string; complete: boolean; rows: number; ms: number }

/**
 * GET /report on a raw socket, taking its bytes at `rate` (a pause as long as each chunk takes at
 * that rate, then the next), or none more once `stopAfter` bytes have come (resolving then).
 */
function read(path: string, rate: number, stopAfter = Infinity): Promise<Read> {
  const started = performance.now();
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let received = 0;
    const s = connect(path, () => s.write("GET /report HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    const done = () => {
      const raw = Buffer.concat(chunks).toString("latin1");
      // The chunked body's end: the last piece `]}` and the terminating chunk (a cut body has neither).
      resolve({ raw, complete: raw.endsWith("\r\n]}\r\n0\r\n\r\n"), rows: raw.split('"key_id"').length - 1, ms: performance.now() - started });
    };
    s.on("data", (chunk: Buffer) => {
      chunks.push(chunk);
      received += chunk.length;
      s.pause();
      if (received >= stopAfter) return done();
      setTimeout(() => s.resume(), (chunk.length / rate) * 1000);
    });
    s.on("close", done);
    s.on("error", () => {});
    clients.push(s);
  });
}
/** The tests' client sockets, destroyed before their server closes (which waits for them). */
const clients: Socket[] = [];
const dropClients = () => {
  for (const s of clients.splice(0)) s.destroy();
};

describe("an /admin/usage body read slowly but steadily, on SQLite (a reader bound of 4 s)", () => {
  let dir: string;
  let file: string;
  let reports: SqliteReports;
  let app: FastifyInstance | undefined;
  const all = { keyId: null, asker: null, from: 0, to: Date.now() + 86_400_000, group: "model" } as const satisfies UsageQuery;
  const nobody = { ...all, keyId: "nobody000000", asker: "nobody000000" } as const satisfies UsageQuery;

  beforeAll(async () => {
    ({ dir, file } = await sqliteLedgerOfGroups(ROWS, "slow-reader-sqlite-"));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  beforeEach(() => {
    reports = new SqliteReports(file, { busyTimeoutMs: 1000, timeoutMs: IDLE_MS });
  });
  afterEach(async () => {
    dropClients();
    await app?.close();
    reports.close();
  });

  it("is written whole to a client that takes longer than the bound over each batch but keeps taking bytes", { timeout: 60_000 }, async () => {
    let path: string;
    ({ app, path } = await serve(dir, (signal) => reports.batches({ ...all, signal }, async () => {}).then(firstAndRest), "model"));
    const r = await read(path, RATE);
    expect(r.rows).toBe(ROWS);
    expect(r.complete).toBe(true);
    expect(r.ms).toBeGreaterThan(3 * IDLE_MS); // a batch took it longer than the bound
  });

  it("is given up once its client takes nothing for the bound: the next report runs, though the client stays", { timeout: 60_000 }, async () => {
    let path: string;
    ({ app, path } = await serve(dir, (signal) => reports.batches({ ...all, signal }, async () => {}).then(firstAndRest), "model"));
    await read(path, RATE, 100_000); // then takes nothing, its connection open
    const started = performance.now();
    expect(await reports.run(nobody, async () => {})).toEqual([]);
    expect(performance.now() - started).toBeLessThan(IDLE_MS + 3000);
  });
});

describe("an /admin/usage body read slowly but steadily, on Postgres (a reader bound of 4 s)", () => {
  let server: RunningPostgres;
  let url: string;
  let dir: string;
  let pool: pg.Pool;
  let reports: UsageReports;
  let app: FastifyInstance | undefined;
  const all = { keyId: null, asker: null, from: 0, to: 1e12, group: "day" } as const satisfies UsageQuery;

  beforeAll(async () => {
    server = await startPostgres();
    url = await server.newDatabase();
    await (await PostgresStore.open(url)).close();
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      // ROWS / 100 keys with one served request on each of 100 days: ROWS (key, day) groups.
      await c.query("INSERT INTO keys (id, name, hash, tier, created_at) SELECT 'k' || lpad(g::text, 11, '0'), 'n', 'h', 'free', 0 FROM generate_series(0, $1::int - 1) g", [ROWS / 100]);
      await c.query(`INSERT INTO ledger (key_id, at, amount, kind, ref, route, model, status, prompt_tokens, completion_tokens, stream, ms, served)
        SELECT 'k' || lpad(k::text, 11, '0'), d::bigint * 86400000 + 3600000, -1, 'usage', 'r-' || d || '-' || k, 'chat', 'm', 200, 7, 3, false, 10, true
        FROM generate_series(0, 99) d, generate_series(0, $1::int - 1) k`, [ROWS / 100]);
    } finally {
      await c.end();
    }
    dir = mkdtempSync(join(tmpdir(), "slow-reader-pg-"));
  }, 60_000);
  afterAll(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  beforeEach(() => {
    pool = new pg.Pool({ connectionString: url, types });
    // The server's bound on the transaction left idle is the reader's and 200 ms (10 s in the
    // store): counted from the last statement, it must not cut a reader that keeps reading either.
    reports = new UsageReports(pool, (fn) => durableTransaction(pool, fn), { idleMs: IDLE_MS, serverIdleMarginMs: 200 });
  });
  afterEach(async () => {
    dropClients();
    await app?.close();
    await reports.cancelAll();
    await pool.end();
  });

  it("is written whole to a client that takes longer than the bound over each batch but keeps taking bytes", { timeout: 60_000 }, async () => {
    let path: string;
    ({ app, path } = await serve(dir, (signal) => reports.run({ ...all, batched: true, signal }) as Promise<UsageRows>, "day"));
    const r = await read(path, RATE);
    expect(r.rows).toBe(ROWS);
    expect(r.complete).toBe(true);
    expect(r.ms).toBeGreaterThan(3 * IDLE_MS);
  });

  it("is given up once its client takes nothing for the bound: its connection and turn are released, though the client stays", { timeout: 60_000 }, async () => {
    let path: string;
    ({ app, path } = await serve(dir, (signal) => reports.run({ ...all, batched: true, signal }) as Promise<UsageRows>, "day"));
    await read(path, RATE, 100_000);
    const started = performance.now();
    expect(await reports.run({ ...all, from: 1e12 - 1 })).toEqual([]); // the operator's next report: it waits for this one's turn
    expect(performance.now() - started).toBeLessThan(IDLE_MS + 3000);
    expect(await pollUntil(() => pool.totalCount === pool.idleCount, 3000)).toBe(true);
  });
});
