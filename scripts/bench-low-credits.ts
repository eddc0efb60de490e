import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import pg from "pg";
import { startPostgres } from "../test/support/postgres.ts";
import { monthStart } from "../api-shim/src/requests/period.ts";
import { PostgresStore } from "../api-shim/src/store/postgres-store.ts";
import { SqliteStore } from "../api-shim/src/store/sqlite-store.ts";
import type { Store } from "../api-shim/src/store/store.ts";

/**
 * `node scripts/bench-low-credits.ts`: what one refresh of the low-credit gauges costs
 * (store.lowCredits, observability/low-credits.ts) on a ledger of BENCH_ROWS rows (1,000,000)
 * over BENCH_KEYS keys (1,000), spread evenly over the last 90 days (about a third in the current
 * month), on both stores (Postgres: a throwaway server, as in the tests), beside the month's
 * credits statement fleet-status.sh reads (a scan of the whole ledger); and the refresh as on a
 * month's last day (30 days of rows read, whatever today is). Prints the median and
 * slowest of 5 refreshes, after one to warm up (the SQLite worker's start, Postgres' plan).
 */
const ROWS = Number(process.env.BENCH_ROWS ?? 1_000_000);
const KEYS = Number(process.env.BENCH_KEYS ?? 1000);
const DAY = 86_400_000;
const now = Date.now();
const from = monthStart(now, 0);
const first = now - 90 * DAY;

/** Key i's id, and the i-th row's key and instant: rows in time order, keys round-robin. */
const keyId = (i: number) => `key${String(i).padStart(5, "0")}`;

async function time(label: string, run: () => Promise<unknown>): Promise<void> {
  await run();
  const ms: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t = performance.now();
    await run();
    ms.push(performance.now() - t);
  }
  ms.sort((a, b) => a - b);
  console.log(`${label.padEnd(48)} median ${ms[2]!.toFixed(0).padStart(6)} ms   slowest ${ms[4]!.toFixed(0).padStart(6)} ms`);
}

async function measure(name: string, store: Store): Promise<void> {
  await time(`${name}: lowCredits (the gauges' refresh)`, () => store.lowCredits({ from, now }));
  // As on a month's last day: 30 days of the 90 read (a third of the rows).
  await time(`${name}: lowCredits, 30 days into the month`, () => store.lowCredits({ from: now - 30 * DAY, now }));
  await time(`${name}: credits statement of the month (all keys)`, () => store.credits({ keyId: null, asker: null, from, to: now }));
}

const dir = mkdtempSync(join(tmpdir(), "bench-low-credits-"));
try {
  console.log(`${ROWS.toLocaleString("en")} ledger rows, ${KEYS.toLocaleString("en")} keys, 90 days (${Math.round(((now - from) / (now - first)) * 100)}% in this month)`);
  const file = join(dir, "shim.db");
  new SqliteStore(file).close();
  const db = new Database(file);
  db.transaction(() => {
    const key = db.prepare("INSERT INTO keys (id, name, hash, tier, created_at) VALUES (?, ?, 'sha256:x', 'free', ?)");
    const grant = db.prepare("INSERT INTO ledger (key_id, at, amount, kind) VALUES (?, ?, 1000000000, 'grant')");
    for (let i = 0; i < KEYS; i++) {
      key.run(keyId(i), keyId(i), first);
      grant.run(keyId(i), first);
    }
    const use = db.prepare("INSERT INTO ledger (key_id, at, amount, kind, route, model, status, prompt_tokens, completion_tokens, stream, ms) VALUES (?, ?, -1000, 'usage', 'chat', 'm', 200, 10, 10, 0, 5)");
    for (let i = 0; i < ROWS - KEYS; i++) use.run(keyId(i % KEYS), first + Math.floor(((now - first) * i) / ROWS));
    db.exec("UPDATE keys SET balance = (SELECT sum(amount) FROM ledger WHERE key_id = keys.id)");
  })();
  db.close();
  const sqlite = new SqliteStore(file);
  await measure("SQLite (report worker)", sqlite);
  await sqlite.close();

  const server = await startPostgres();
  try {
    const url = await server.newDatabase();
    const postgres = await PostgresStore.open(url);
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    await c.query(`INSERT INTO keys (id, name, hash, tier, created_at) SELECT 'key' || lpad(i::text, 5, '0'), 'key' || lpad(i::text, 5, '0'), 'sha256:x', 'free', $1::bigint FROM generate_series(0, $2::int - 1) i`, [first, KEYS]);
    await c.query(`INSERT INTO ledger (key_id, at, amount, kind) SELECT id, $1::bigint, 1000000000, 'grant' FROM keys`, [first]);
    await c.query(`INSERT INTO ledger (key_id, at, amount, kind, route, model, status, prompt_tokens, completion_tokens, stream, ms)
      SELECT 'key' || lpad((i % $3::int)::text, 5, '0'), $1::bigint + ((($2::bigint - $1::bigint) * i) / $4::bigint), -1000, 'usage', 'chat', 'm', 200, 10, 10, false, 5
      FROM generate_series(0, $4::bigint - $3::int - 1) i`, [first, now, KEYS, ROWS]);
    await c.query("UPDATE keys SET balance = (SELECT sum(amount) FROM ledger WHERE key_id = keys.id)");
    await c.query("VACUUM ANALYZE");
    await c.end();
    await measure("Postgres", postgres);
    await postgres.close();
  } finally {
    await server.stop();
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
