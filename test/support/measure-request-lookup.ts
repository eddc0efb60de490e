// Measures GET /admin/requests/{id}'s lookup on a large ledger, without and with the usage rows'
// request id index, and what adding the index at start costs (time, size), on both stores: the
// figures in docs/api-shim/admin-reports.md. A script to run by hand, not a test (timings depend on
// the machine): node test/support/measure-request-lookup.ts [rows, default 3000000] [sqlite|postgres|both]
import { randomUUID } from "node:crypto";
import { statSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import pg from "pg";
import { requestsPgSql, requestsPgValues, requestsSqliteSql } from "../../api-shim/src/store/request-rows.ts";
import { PostgresStore } from "../../api-shim/src/store/postgres-store.ts";
import { SqliteStore } from "../../api-shim/src/store/sqlite-store.ts";
import { startPostgres } from "./postgres.ts";
import { tempDir } from "./tools.ts";

const rows = Number(process.argv[2] ?? 3_000_000);
const which = process.argv[3] ?? "both";
/** Requests looked up: one early, one late, one absent (a scan reads the whole ledger for each). */
const ASKED = ["req-1000", `req-${rows - 10}`, "absent"];
/** 100 keys, a grant each, then `rows` usage rows spread over them, ids as the shim's (UUID-long). */
const row = (g: string) => `'k' || (${g} % 100), 1000 + ${g}, -(${g} % 7), 'usage', 'req-' || ${g} || '-0000-4000-8000-000000000000'`;
const askedRef = (id: string) => (id === "absent" ? id : `${id}-0000-4000-8000-000000000000`);
const ms = (t: number) => `${(performance.now() - t).toFixed(1)} ms`;
const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;

async function sqlite(): Promise<void> {
  const file = join(tempDir("measure-lookup-"), "ledger.db");
  await new SqliteStore(file).close(); // the schema, with the index
  const db = new Database(file);
  db.exec("DROP INDEX ledger_usage_ref"); // a ledger as the previous version left it
  db.exec("BEGIN; INSERT INTO keys (id, name, hash, tier, balance, created_at) WITH RECURSIVE g(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM g WHERE n < 99) SELECT 'k' || n, 'k', 'h', 'free', 0, 1 FROM g");
  db.exec(`WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ${rows})
    INSERT INTO ledger (key_id, at, amount, kind, ref) SELECT ${row("n")} FROM g; COMMIT`);
  db.exec("VACUUM");
  const lookup = (on: Database.Database, label: string) => {
    on.function("shim_report_check", () => 1);
    const statement = on.prepare(requestsSqliteSql({ requestId: "x", keyId: null }, 1));
    statement.all({ requestId: askedRef(ASKED[0]!) }); // pages in memory, as a running shim's
    for (const id of ASKED) {
      const t = performance.now();
      const found = statement.all({ requestId: askedRef(id) }).length;
      console.log(`sqlite ${label}: ${id} (${found} row) in ${ms(t)}`);
    }
  };
  lookup(db, "no index");
  inserts(db, "no index");
  db.close();
  const before = statSync(file).size;
  const t = performance.now();
  await new SqliteStore(file).close(); // the first start after the upgrade: the index made at open
  console.log(`sqlite: first open builds the index in ${ms(t)} (${rows} usage rows); file ${mib(before)} -> ${mib(statSync(file).size)}`);
  const next = performance.now();
  await new SqliteStore(file).close();
  console.log(`sqlite: the next open (index there) in ${ms(next)}`);
  const reopened = new Database(file);
  lookup(reopened, "index");
  inserts(reopened, "index");
  reopened.close();
}

/**
 * What the index adds to the request path: settlements' ledger rows (random UUIDs, the shim's
 * ids), 64 to a transaction as the store's batches, WAL and synchronous=NORMAL.
 */
function inserts(db: Database.Database, label: string): void {
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = NORMAL");
  const insert = db.prepare("INSERT INTO ledger (key_id, at, amount, kind, ref) VALUES ('k1', ?, -1, 'usage', ?)");
  const batch = db.transaction((n: number) => {
    for (let i = 0; i < 64; i++) insert.run(n, randomUUID());
  });
  const t = performance.now();
  for (let n = 0; n < 500; n++) batch(n);
  console.log(`sqlite ${label}: 32000 settlements' rows (64 a transaction) in ${ms(t)}`);
}

async function postgres(): Promise<void> {
  const server = await startPostgres();
  try {
    const url = await server.newDatabase();
    const store = await PostgresStore.open(url);
    await store.usageIndex!.outcome;
    await store.close();
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    await c.query("DROP INDEX ledger_usage_ref"); // a ledger as the previous version left it
    await c.query("INSERT INTO keys (id, name, hash, tier, balance, created_at) SELECT 'k' || g, 'k', 'h', 'free', 0, 1 FROM generate_series(0, 99) g");
    await c.query(`INSERT INTO ledger (key_id, at, amount, kind, ref) SELECT ${row("g")} FROM generate_series(1, ${rows}) g`);
    await c.query("VACUUM ANALYZE ledger");
    const lookup = async (label: string) => {
      const q = { requestId: askedRef(ASKED[0]!), keyId: null };
      await c.query(requestsPgSql(q), requestsPgValues({ ...q, from: 0, to: 0 })); // its table in the cache
      for (const id of ASKED) {
        const asked = { requestId: askedRef(id), keyId: null };
        const t = performance.now();
        const found = (await c.query(requestsPgSql(asked), requestsPgValues({ ...asked, from: 0, to: 0 }))).rowCount;
        console.log(`postgres ${label}: ${id} (${found} row) in ${ms(t)}`);
      }
    };
    await lookup("no index");
    const size = async () => Number((await c.query<{ n: string }>("SELECT pg_total_relation_size('ledger') AS n")).rows[0]!.n);
    const before = await size();
    const started = performance.now();
    const upgraded = await PostgresStore.open(url); // the first start after the upgrade: built in the background
    const opened = ms(started);
    const outcome = await upgraded.usageIndex!.outcome;
    console.log(`postgres: start ${opened}, then the background build ${JSON.stringify(outcome)}; ledger and its indexes ${mib(before)} -> ${mib(await size())}`);
    await upgraded.close();
    await lookup("index");
    await c.end();
  } finally {
    server.stop();
  }
}

if (which !== "postgres") await sqlite();
if (which !== "sqlite") await postgres();
