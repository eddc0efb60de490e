import type Database from "better-sqlite3";
import type pg from "pg";
import type { PricesSeen } from "../money/price-record.ts";
import { NOT_PERMITTED_CODE } from "./postgres-failures.ts";
import { SchemaOwnerNeededError } from "./store.ts";

/**
 * What each usage row records of its price (price-record.ts), and the `prices` table naming each
 * price's fields, for both stores. Added at open when missing, as the ledger's `served` column:
 * not a schema version, so the previous version (which names the columns it writes) still opens
 * the database and a rollback needs no backup. New nullable columns, no default, no CHECK: no
 * table rewrite, instant on any ledger. Rows written before, or by the previous version after,
 * have NULL in all three: their price is unknown, and reports show it so (never a guess).
 */
const LEDGER_COLUMNS = [["price_id", "text"], ["batch", "integer"], ["cached_tokens", "integer"]] as const;
const PG_TYPES: Record<string, string> = { price_id: "text", batch: "boolean", cached_tokens: "integer" };

const pricesTable = (int: string, strict: string) => `CREATE TABLE IF NOT EXISTS prices (
  id text PRIMARY KEY, request ${int} NOT NULL, batch_request ${int} NOT NULL, prompt_per_1k ${int} NOT NULL,
  cached_prompt_per_1k ${int} NOT NULL, completion_per_1k ${int} NOT NULL, first_seen ${int} NOT NULL)${strict}`;

const INSERT_PRICE = "INSERT INTO prices (id, request, batch_request, prompt_per_1k, cached_prompt_per_1k, completion_per_1k, first_seen) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING";

const priceValues = (p: PricesSeen["records"][number], at: number) => [p.id, p.request, p.batchRequest, p.promptPer1k, p.cachedPromptPer1k, p.completionPer1k, at];

/** The SQLite store's: the columns and the table when missing, then `prices` (a price already there keeps its first_seen). */
export function ensurePriceRecords(db: Database.Database, prices: PricesSeen | undefined): void {
  db.transaction(() => {
    const columns = new Set(db.prepare<[], { name: string }>("SELECT name FROM pragma_table_info('ledger')").all().map((c) => c.name));
    for (const [name, type] of LEDGER_COLUMNS) if (!columns.has(name)) db.exec(`ALTER TABLE ledger ADD COLUMN ${name} ${type.toUpperCase()}`);
    db.exec(pricesTable("INTEGER", " STRICT"));
    const insert = db.prepare(INSERT_PRICE.replace(/\$\d/g, "?"));
    for (const p of prices?.records ?? []) insert.run(...priceValues(p, prices!.at));
  })();
}

/**
 * The Postgres store's, in the start's migration transaction (under its advisory lock): what is
 * missing is added (only then: a role with data rights only finds it there), then `prices`. A
 * role that may not add them, or not write `prices`, fails the start saying what to do
 * (SchemaOwnerNeededError), as settling needs the columns.
 */
export async function ensurePriceRecordsPg(client: pg.ClientBase, prices: PricesSeen | undefined): Promise<void> {
  const found = await client.query<{ name: string }>("SELECT column_name AS name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'ledger'");
  const columns = new Set(found.rows.map((r) => r.name));
  const missing = LEDGER_COLUMNS.filter(([name]) => !columns.has(name)).map(([name]) => `ADD COLUMN IF NOT EXISTS ${name} ${PG_TYPES[name]}`);
  const hasTable = (await client.query<{ t: string | null }>("SELECT to_regclass('prices')::text AS t")).rows[0]!.t !== null;
  const changes = [...(missing.length > 0 ? [`ALTER TABLE ledger ${missing.join(", ")}`] : []), ...(hasTable ? [] : [pricesTable("bigint", "")])];
  try {
    if (changes.length > 0) {
      await client.query("SET LOCAL lock_timeout = '1s'"); // as for `served` (postgres-migrations.ts)
      for (const sql of changes) await client.query(sql);
    }
  } catch (e) {
    if ((e as { code?: unknown }).code === NOT_PERMITTED_CODE) throw new SchemaOwnerNeededError("its new price columns and table `prices`", changes.join("; "));
    throw e;
  }
  // Only the prices not yet recorded are written: a replica whose prices another start recorded
  // needs SELECT on `prices` alone (ON CONFLICT DO NOTHING would still need INSERT). A role whose
  // grants predate the table has neither: only a GRANT helps, not an owner's start.
  try {
    const records = prices?.records ?? [];
    if (records.length === 0) return;
    const known = new Set((await client.query<{ id: string }>("SELECT id FROM prices WHERE id = ANY($1)", [records.map((p) => p.id)])).rows.map((r) => r.id));
    for (const p of records) if (!known.has(p.id)) await client.query(INSERT_PRICE, priceValues(p, prices!.at));
  } catch (e) {
    if ((e as { code?: unknown }).code === NOT_PERMITTED_CODE) throw new SchemaOwnerNeededError("its table `prices` readable and writable by this role", "GRANT SELECT, INSERT ON prices TO <this role>", true);
    throw e;
  }
}
