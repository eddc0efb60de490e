import type Database from "better-sqlite3";
import type pg from "pg";
import { NOT_PERMITTED_CODE } from "./postgres-failures.ts";
import { SchemaOwnerNeededError } from "./store.ts";

/**
 * The table of keys' histories (key-events.ts), for both stores: made at the first start that
 * finds it missing, as the `prices` table is (price-schema.ts), not a schema version. The
 * previous version never names it, so it still opens an upgraded database and going back needs
 * no backup; what it changes meanwhile has no row (a gap in the history, not a wrong one). A new
 * table: instant on any ledger. Append-only as the ledger is (triggers), so a history cannot be
 * rewritten by the shim or by a mistaken statement; keys are never deleted (their ledger refers
 * to them), so neither are their events. A key made before the upgrade has no `created` row.
 */
const table = (int: string, id: string, strict: string) => `CREATE TABLE IF NOT EXISTS key_events (
  id ${id}, key_id text NOT NULL REFERENCES keys(id), at ${int} NOT NULL, event text NOT NULL,
  request_id text, changes text NOT NULL)${strict}`;
const INDEX = "CREATE INDEX IF NOT EXISTS key_events_key ON key_events(key_id, id)";

/** The SQLite store's, at open. */
export function ensureKeyEvents(db: Database.Database): void {
  db.transaction(() => {
    db.exec(table("INTEGER", "INTEGER PRIMARY KEY", " STRICT"));
    db.exec(INDEX);
    for (const [suffix, op] of [["u", "UPDATE"], ["d", "DELETE"]]) {
      db.exec(`CREATE TRIGGER IF NOT EXISTS key_events_append_only_${suffix} BEFORE ${op} ON key_events BEGIN SELECT RAISE(ABORT, 'key_events is append-only'); END`);
    }
  })();
}

const PG_CREATE = [
  table("bigint", "bigserial PRIMARY KEY", ""),
  INDEX,
  `CREATE FUNCTION key_events_append_only() RETURNS trigger LANGUAGE plpgsql AS
     $$ BEGIN RAISE EXCEPTION 'key_events is append-only'; END $$`,
  `CREATE TRIGGER key_events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON key_events
     FOR EACH STATEMENT EXECUTE FUNCTION key_events_append_only()`,
];

/** What a replica's role needs on it: rows read and added, the id sequence used. */
export const KEY_EVENTS_GRANT = "GRANT SELECT, INSERT ON key_events TO <this role>; GRANT USAGE ON SEQUENCE key_events_id_seq TO <this role>";

/**
 * The Postgres store's, in the start's migration transaction (under its advisory lock): made only
 * when missing (a role with data rights only finds it there). A role that may not make it, or
 * whose grants predate it (made table by table), fails the start saying what to run: otherwise
 * its first key change would fail, after the start looked fine.
 */
export async function ensureKeyEventsPg(client: pg.ClientBase): Promise<void> {
  const exists = (await client.query<{ t: string | null }>("SELECT to_regclass('key_events')::text AS t")).rows[0]!.t !== null;
  if (!exists) {
    try {
      await client.query("SET LOCAL lock_timeout = '1s'"); // its foreign key takes a lock on `keys`, as `served` does the ledger's
      for (const sql of PG_CREATE) await client.query(sql);
    } catch (e) {
      if ((e as { code?: unknown }).code === NOT_PERMITTED_CODE) throw new SchemaOwnerNeededError("its new table `key_events` (the keys' histories)", PG_CREATE.join("; "));
      throw e;
    }
  }
  const { rows } = await client.query<{ ok: boolean }>(
    // One privilege per call: given a list, has_table_privilege answers whether any is held.
    "SELECT has_table_privilege('key_events', 'SELECT') AND has_table_privilege('key_events', 'INSERT') AND has_sequence_privilege(pg_get_serial_sequence('key_events', 'id'), 'USAGE') AS ok");
  if (!rows[0]!.ok) throw new SchemaOwnerNeededError("its table `key_events` readable and writable by this role", KEY_EVENTS_GRANT, true);
}
