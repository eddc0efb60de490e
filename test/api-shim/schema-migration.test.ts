import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import pg from "pg";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { inTransaction } from "../../api-shim/src/store/postgres-client.ts";
import { migratePg, PG_MIGRATIONS, PG_SCHEMA_DATES } from "../../api-shim/src/store/postgres-migrations.ts";
import { PostgresStore } from "../../api-shim/src/store/postgres-store.ts";
import { migrationMessage, type SchemaMigration } from "../../api-shim/src/store/schema-migration.ts";
import { MIGRATIONS, SCHEMA_DATES } from "../../api-shim/src/store/sqlite-migrations.ts";
import { SqliteStore } from "../../api-shim/src/store/sqlite-store.ts";
import { type RunningPostgres, startPostgres } from "../support/postgres.ts";
import { schema3Ledger } from "../support/schema3-ledger.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** The lines a start would log: what each open reported, and the message the server logs for it. */
const said = (reported: SchemaMigration[]) => reported.map(migrationMessage).filter((m) => m !== null);

describe("the start says when it migrated an existing ledger (SQLite)", () => {
  let dir: string;
  beforeEach(() => void (dir = mkdtempSync(join(tmpdir(), "shim-migrated-"))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const open = async (file: string) => {
    const reported: SchemaMigration[] = [];
    await new SqliteStore(file, { onMigrated: (m) => reported.push(m) }).close();
    return reported;
  };

  it("a schema-3 ledger (a shim of 2026-11-22): one line naming both schemas and the new one's date; its next start says nothing", async () => {
    const file = join(dir, "shim.db");
    schema3Ledger(file, "INSERT INTO keys (id, name, hash, tier, balance, created_at) VALUES ('k', 'k', 'h', 'free', 7, 1)");
    const first = await open(file);
    expect(first).toMatchObject([{ from: 3, to: MIGRATIONS.length }]);
    expect(said(first)).toEqual([expect.stringMatching(/^migrated the ledger from schema 3 to 4 \(the schema of shims from 2026-12-03 on\) in \d+ ms: an older shim may not open it \(docs\/api-shim\/money\.md#schema-versions says which do\); for one that does not, the backup taken before the upgrade is the way back$/)]);
    const again = await open(file);
    expect(again).toMatchObject([{ from: MIGRATIONS.length, to: MIGRATIONS.length, ms: 0 }]); // as Postgres': no migration took no time
    expect(said(again)).toEqual([]);
    const db = new Database(file, { readonly: true });
    expect(db.pragma("user_version", { simple: true })).toBe(4);
    db.close();
  });

  it("a new ledger is no migration: nothing said", async () => {
    const reported = await open(join(dir, "new.db"));
    expect(reported).toMatchObject([{ from: 0, to: MIGRATIONS.length }]);
    expect(said(reported)).toEqual([]);
  });
});

describe("the start says when it migrated an existing database (Postgres)", () => {
  let server: RunningPostgres;
  let url: string;
  beforeAll(async () => void (server = await startPostgres()), 60_000);
  afterAll(() => server?.stop());
  beforeEach(async () => void (url = await server.newDatabase()));
  const open = async () => {
    const reported: SchemaMigration[] = [];
    const store = await PostgresStore.open(url, { onMigrated: (m) => reported.push(m) });
    await store.usageIndex!.outcome;
    await store.close();
    return reported;
  };

  it("a new database is no migration, nor is one up to date: nothing said", async () => {
    const first = await open();
    expect(first).toMatchObject([{ from: 0, to: PG_MIGRATIONS.length }]);
    const again = await open();
    expect(again).toMatchObject([{ from: PG_MIGRATIONS.length, to: PG_MIGRATIONS.length, ms: 0 }]);
    expect(said([...first, ...again])).toEqual([]);
  });

  it("a database at an older schema (here: a later schema than the shim's own, for the test) is migrated once and said so", async () => {
    await open();
    const later = [...PG_MIGRATIONS, "CREATE TABLE later_schema (x integer)"];
    const dates = [...PG_SCHEMA_DATES, "2027-01-02"];
    const migrate = async () => {
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      try {
        return await inTransaction(c, () => migratePg(c, later, dates));
      } finally {
        await c.end();
      }
    };
    const first = await migrate();
    expect(first).toMatchObject({ from: 1, to: 2, since: "2027-01-02" });
    expect(said([first])).toEqual([expect.stringMatching(/^migrated the ledger from schema 1 to 2 \(the schema of shims from 2027-01-02 on\) in \d+ ms: /)]);
    expect(said([await migrate()])).toEqual([]);
  });
});

describe("the schema versions' dates", () => {
  it("are one per migration, and docs/api-shim/money.md's table says the same", () => {
    expect(SCHEMA_DATES).toHaveLength(MIGRATIONS.length);
    expect(PG_SCHEMA_DATES).toHaveLength(PG_MIGRATIONS.length);
    const doc = readFileSync(join(ROOT, "docs", "api-shim", "money.md"), "utf8");
    const rows = [...doc.matchAll(/^\| (SQLite|Postgres) \| (\d+) \| (\d{4}-\d\d-\d\d) \|/gm)].map((m) => `${m[1]} ${m[2]} ${m[3]}`);
    expect(rows).toEqual([
      ...SCHEMA_DATES.map((d, i) => `SQLite ${i + 1} ${d}`),
      ...PG_SCHEMA_DATES.map((d, i) => `Postgres ${i + 1} ${d}`),
    ]);
  });
});
