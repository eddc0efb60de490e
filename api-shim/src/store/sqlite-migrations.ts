import type Database from "better-sqlite3";
import type { PricesSeen } from "../money/price-record.ts";
import { ensurePriceRecords } from "./price-schema.ts";
import { ensureKeyEvents } from "./key-events-schema.ts";
import { type SchemaMigration, schemaDate } from "./schema-migration.ts";
import { NewerSchemaError } from "./store.ts";

/**
 * The embedded store's schema. Each migration runs once, in order, in its own transaction,
 * tracked by PRAGMA user_version: SQL text, or a function for a migration that must check what
 * it did.
 */
export const MIGRATIONS: readonly (string | ((db: Database.Database) => void))[] = [
  `CREATE TABLE keys (
     id TEXT PRIMARY KEY, name TEXT NOT NULL, hash TEXT NOT NULL, tier TEXT NOT NULL, models TEXT,
     balance INTEGER NOT NULL DEFAULT 0, held INTEGER NOT NULL DEFAULT 0,
     created_at INTEGER NOT NULL, expires_at INTEGER, revoked_at INTEGER,
     CHECK (held >= 0), CHECK (balance - held >= 0)) STRICT;
   CREATE TABLE ledger (
     id INTEGER PRIMARY KEY, key_id TEXT NOT NULL REFERENCES keys(id), at INTEGER NOT NULL,
     amount INTEGER NOT NULL, kind TEXT NOT NULL, ref TEXT, idem TEXT) STRICT;
   -- Partial: usage rows (no idempotency key) do not pay for this index on every request.
   CREATE UNIQUE INDEX ledger_idem ON ledger(idem) WHERE idem IS NOT NULL;
   CREATE TRIGGER ledger_append_only_u BEFORE UPDATE ON ledger BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
   CREATE TRIGGER ledger_append_only_d BEFORE DELETE ON ledger BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
   CREATE TABLE reservations (
     id TEXT PRIMARY KEY, key_id TEXT NOT NULL, amount INTEGER NOT NULL, instance TEXT NOT NULL,
     at INTEGER NOT NULL) STRICT, WITHOUT ROWID;
   CREATE TABLE usage (
     id INTEGER PRIMARY KEY, request_id TEXT NOT NULL, key_id TEXT NOT NULL, at INTEGER NOT NULL,
     route TEXT NOT NULL, model TEXT NOT NULL, status INTEGER NOT NULL,
     prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, cost INTEGER NOT NULL,
     stream INTEGER NOT NULL, ms INTEGER NOT NULL) STRICT;
   CREATE INDEX usage_key_at ON usage(key_id, at);
   CREATE TABLE idempotency (
     key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, body TEXT NOT NULL, at INTEGER NOT NULL) STRICT;`,
  migrateToOneRowPerRequest,
  // Migration 3: which keys come from configuration, so that a key removed from it can be
  // revoked at start. Existing ones are known by their one-time grant (a bootstrap key with no
  // credits left no such row and stays unmarked until the next start marks it).
  `ALTER TABLE keys ADD COLUMN bootstrap INTEGER NOT NULL DEFAULT 0 CHECK (bootstrap IN (0, 1));
   UPDATE keys SET bootstrap = 1 WHERE id IN (SELECT key_id FROM ledger WHERE idem LIKE 'bootstrap:%');`,
  // Migration 4: a report over all keys (/admin/usage) reads its period's usage rows, not the
  // whole history (ledger_key_at serves one key's). Partial: grants and top-ups are not reported.
  // On an existing database it is built at the first start after the upgrade (~1 s per 2 million rows).
  "CREATE INDEX ledger_usage_at ON ledger(at) WHERE kind = 'usage';",
];

/**
 * The day each schema version's shims start (SCHEMA_DATES[v - 1]: schema v), for the start's log
 * line after a migration; docs/api-shim/money.md's table of schema versions says the same (a test
 * compares them) and what an older shim does with each.
 */
export const SCHEMA_DATES: readonly string[] = ["2026-11-21", "2026-11-21", "2026-11-22", "2026-12-03"];

/**
 * Migration 2: one ledger row per inference request, which is both its charge (amount = −cost,
 * 0 when nothing was charged) and its usage record (route, model, status, tokens, ms); and no
 * reservation rows: a key's open holds are its `held` (sum) and `holds` (count) columns, each
 * hold itemized in the memory of the process that owns it. The request path then writes a
 * third of the statements and pages it did (hold: one UPDATE; settle: one INSERT, one UPDATE).
 *
 * Existing data: usage rows become usage ledger rows (amount = −cost) in place of the ledger's
 * separate usage-charge rows, other ledger rows are copied as they are, and open reservation
 * rows become the keys' `holds` counts (released at the next start, as before). The migration
 * checks that every key's ledger sum is unchanged and refuses (rolls back) otherwise.
 */
function migrateToOneRowPerRequest(db: Database.Database): void {
  const sums = () => new Map(db.prepare<[], { key_id: string; total: number }>("SELECT key_id, sum(amount) AS total FROM ledger GROUP BY key_id").all().map((r) => [r.key_id, r.total]));
  const before = sums();
  db.exec(`
    ALTER TABLE keys ADD COLUMN holds INTEGER NOT NULL DEFAULT 0 CHECK (holds >= 0);
    UPDATE keys SET holds = (SELECT count(*) FROM reservations r WHERE r.key_id = keys.id);
    CREATE TABLE ledger_v2 (
      id INTEGER PRIMARY KEY, key_id TEXT NOT NULL REFERENCES keys(id), at INTEGER NOT NULL,
      amount INTEGER NOT NULL, kind TEXT NOT NULL, ref TEXT, idem TEXT,
      route TEXT, model TEXT, status INTEGER, prompt_tokens INTEGER, completion_tokens INTEGER,
      stream INTEGER, ms INTEGER) STRICT;
    INSERT INTO ledger_v2 (key_id, at, amount, kind, ref, idem, route, model, status, prompt_tokens, completion_tokens, stream, ms)
      SELECT key_id, at, amount, kind, ref, idem, route, model, status, prompt_tokens, completion_tokens, stream, ms FROM (
        SELECT key_id, at, amount, kind, ref, idem, NULL AS route, NULL AS model, NULL AS status, NULL AS prompt_tokens,
               NULL AS completion_tokens, NULL AS stream, NULL AS ms, 0 AS src, id FROM ledger WHERE kind <> 'usage'
        UNION ALL
        SELECT key_id, at, -cost, 'usage', request_id, NULL, route, model, status, prompt_tokens, completion_tokens, stream, ms, 1, id FROM usage)
      ORDER BY at, src, id;
    DROP TRIGGER ledger_append_only_u;
    DROP TRIGGER ledger_append_only_d;
    DROP TABLE ledger;
    DROP TABLE usage;
    DROP TABLE reservations;
    ALTER TABLE ledger_v2 RENAME TO ledger;
    CREATE UNIQUE INDEX ledger_idem ON ledger(idem) WHERE idem IS NOT NULL;
    CREATE INDEX ledger_key_at ON ledger(key_id, at);
    CREATE TRIGGER ledger_append_only_u BEFORE UPDATE ON ledger BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
    CREATE TRIGGER ledger_append_only_d BEFORE DELETE ON ledger BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;`);
  const after = sums();
  for (const key of new Set([...before.keys(), ...after.keys()])) {
    if ((before.get(key) ?? 0) !== (after.get(key) ?? 0)) {
      throw new Error(`migration 2 refused: the ledger sum of key ${key} would change from ${before.get(key) ?? 0} to ${after.get(key) ?? 0} (usage rows and usage charges disagree)`);
    }
  }
}

/**
 * Brings the database to the latest schema and says from which version; refuses one made by a
 * newer shim (NewerSchemaError). `prices`: the configuration's, recorded (price-schema.ts).
 */
export function migrate(db: Database.Database, prices?: PricesSeen): SchemaMigration {
  const version = db.pragma("user_version", { simple: true }) as number;
  if (version > MIGRATIONS.length) throw new NewerSchemaError(db.name, version, MIGRATIONS.length);
  const started = performance.now();
  for (let v = version; v < MIGRATIONS.length; v++) {
    const m = MIGRATIONS[v]!;
    db.transaction(() => {
      if (typeof m === "string") db.exec(m);
      else m(db);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
  const ms = version < MIGRATIONS.length ? performance.now() - started : 0;
  ensureLedgerColumns(db);
  ensureRequestIndex(db);
  ensurePriceRecords(db, prices);
  ensureKeyEvents(db);
  return { from: version, to: MIGRATIONS.length, since: schemaDate(SCHEMA_DATES, MIGRATIONS.length), ms };
}

/**
 * Whether the upstream served the request (1) or not (0), apart from its charge, so a report
 * counts a free model's served requests (store.ts, REPORTED_SQL): added at open when missing,
 * not a migration, so the schema version stays and the previous version (which names its
 * columns) still opens the file: a rollback needs no backup. A new nullable column only, without
 * a CHECK (SQLite would test one against every row: 0.7 s for 3 million, longer on a cold volume;
 * sqlite-batch.ts, its only writer, writes 0 or 1): no table rewrite and no read of it, instant on
 * any ledger. Rows written before it, or by the previous version after it, have NULL. `joined`
 * likewise: the request whose charge a joined request's row shares (store.ts, JoinedRow), NULL on
 * every other row.
 */
function ensureLedgerColumns(db: Database.Database): void {
  const columns = db.prepare<[], { name: string }>("SELECT name FROM pragma_table_info('ledger')").all();
  for (const [name, type] of [["served", "INTEGER"], ["joined", "TEXT"]]) {
    if (!columns.some((c) => c.name === name)) db.exec(`ALTER TABLE ledger ADD COLUMN ${name} ${type}`);
  }
}

/**
 * GET /admin/requests/{id}'s index: a request id's usage rows found through it rather than a scan
 * of the ledger. Made at open when missing, not a migration (as the served column): the previous
 * version opens the file, and SQLite keeps the index up to date on its writes too, so a rollback
 * needs no backup. Partial, as the lookup reads usage rows alone. The first open after the upgrade
 * builds it (docs/api-shim/admin-reports.md has its time and size on a large ledger).
 */
function ensureRequestIndex(db: Database.Database): void {
  db.exec("CREATE INDEX IF NOT EXISTS ledger_usage_ref ON ledger(ref) WHERE kind = 'usage'");
}
