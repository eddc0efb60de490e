import { randomInt } from "node:crypto";
import type pg from "pg";
import { NOT_PERMITTED_CODE } from "./postgres-failures.ts";
import type { PricesSeen } from "../money/price-record.ts";
import { ensurePriceRecordsPg } from "./price-schema.ts";
import { ensureKeyEventsPg } from "./key-events-schema.ts";
import { type SchemaMigration, schemaDate } from "./schema-migration.ts";
import { NewerSchemaError, SchemaOwnerNeededError } from "./store.ts";

/**
 * The Postgres store's schema: the same ledger as the SQLite store (one row per inference
 * request, which is both its charge and its usage record), with each open hold as a row of
 * `reservations` tagged with the replica that made it, since several replicas share the
 * database. Each migration runs once, in order, in one transaction, tracked in
 * `shim_schema_version`. Replicas that start together take turns (an advisory lock).
 */
export const PG_MIGRATIONS: readonly string[] = [
  `CREATE TABLE keys (
     id text PRIMARY KEY, name text NOT NULL, hash text NOT NULL, tier text NOT NULL, models jsonb,
     balance bigint NOT NULL DEFAULT 0, held bigint NOT NULL DEFAULT 0,
     created_at bigint NOT NULL, expires_at bigint, revoked_at bigint,
     bootstrap boolean NOT NULL DEFAULT false,
     CHECK (held >= 0), CHECK (balance - held >= 0));
   CREATE TABLE ledger (
     id bigserial PRIMARY KEY, key_id text NOT NULL REFERENCES keys(id), at bigint NOT NULL,
     amount bigint NOT NULL, kind text NOT NULL, ref text, idem text,
     route text, model text, status integer, prompt_tokens integer, completion_tokens integer,
     stream boolean, ms integer);
   -- Partial: usage rows (no idempotency key) do not pay for this index on every request.
   CREATE UNIQUE INDEX ledger_idem ON ledger(idem) WHERE idem IS NOT NULL;
   CREATE INDEX ledger_key_at ON ledger(key_id, at);
   CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS
     $$ BEGIN RAISE EXCEPTION 'ledger is append-only'; END $$;
   CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger
     FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
   -- An open hold: made by one replica (owner, see postgres-store.ts), gone when settled.
   CREATE TABLE reservations (
     id text PRIMARY KEY, key_id text NOT NULL REFERENCES keys(id), amount bigint NOT NULL CHECK (amount >= 0),
     owner integer NOT NULL, at bigint NOT NULL);
   CREATE INDEX reservations_owner ON reservations(owner);
   CREATE TABLE idempotency (
     key text PRIMARY KEY, fingerprint text NOT NULL, body text NOT NULL, at bigint NOT NULL);`,
];

/** The day each schema version's shims start (PG_SCHEMA_DATES[v - 1]: schema v), as SQLite's SCHEMA_DATES. */
export const PG_SCHEMA_DATES: readonly string[] = ["2026-11-22"];

/** Advisory-lock class of the shim (int4 "SHIM"): (class, 0) for migrations, (class, owner) per replica. */
export const LOCK_CLASS = 0x5348494d;

/**
 * Brings the database to the latest schema and says from which version; refuses one made by a
 * newer shim (NewerSchemaError), before writing anything. Run it inside one transaction (the
 * caller's). `migrations` and `dates`: the shim's own, or a test's with a later schema; `prices`:
 * the configuration's, recorded (price-schema.ts).
 */
export async function migratePg(client: pg.ClientBase, migrations = PG_MIGRATIONS, dates = PG_SCHEMA_DATES, prices?: PricesSeen): Promise<SchemaMigration> {
  await client.query("SELECT pg_advisory_xact_lock($1, 0)", [LOCK_CLASS]);
  // Up to date: nothing is created or written, so a role with data rights only (no CREATE on the
  // schema, which even CREATE TABLE IF NOT EXISTS needs) can run every replica after the first.
  const exists = (await client.query<{ t: string | null }>("SELECT to_regclass('shim_schema_version')::text AS t")).rows[0]!.t !== null;
  if (!exists) await client.query("CREATE TABLE shim_schema_version (version integer NOT NULL)");
  const { rows } = await client.query<{ version: number }>("SELECT version FROM shim_schema_version");
  const from = rows[0]?.version ?? 0;
  if (from > migrations.length) throw new NewerSchemaError("the database", from, migrations.length);
  const started = performance.now();
  if (rows.length === 0) await client.query("INSERT INTO shim_schema_version VALUES (0)");
  for (let version = from; version < migrations.length; version++) await client.query(migrations[version]!);
  if (from < migrations.length) await client.query("UPDATE shim_schema_version SET version = $1", [migrations.length]);
  const ms = from < migrations.length ? performance.now() - started : 0;
  await ensureLedgerColumns(client);
  await ensurePriceRecordsPg(client, prices);
  await ensureKeyEventsPg(client);
  return { from, to: migrations.length, since: schemaDate(dates, migrations.length), ms };
}

/** Columns added to the ledger at start (ensureLedgerColumns), in the order they were: name and type. */
const LEDGER_COLUMNS: readonly (readonly [string, string])[] = [["served", "boolean"], ["joined", "text"]];

/**
 * `served`: whether the upstream served the request, apart from its charge, so a report counts a free
 * model's served requests (store.ts, REPORTED_SQL); `joined`: the request whose charge a joined
 * request's row shares (store.ts, JoinedRow). Each added at start when missing, not a
 * migration, so the schema version stays and the previous version (which names its columns)
 * still opens the database: replicas of it restarting during a rolling upgrade, and a rollback,
 * work. Nullable columns without a default: no table rewrite, instant on any ledger; rows
 * written before them, or by the previous version after, have NULL. Only when missing (a
 * replica with data rights only finds them there). The ALTER takes the ledger's lock for an
 * instant, but waits for it behind a report under way elsewhere (or an old replica's index build),
 * and every write of the ledger would queue behind that wait: past 1 s it gives up instead (the
 * start fails, and is made again at the replica's restart). Settling needs `served` and a joined
 * request's row `joined`, so a role that may not add them fails the start, saying what to do
 * (SchemaOwnerNeededError); those missing are added in one statement, so the owner runs one.
 */
async function ensureLedgerColumns(client: pg.ClientBase): Promise<void> {
  const { rows } = await client.query<{ name: string }>("SELECT column_name AS name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'ledger'");
  const missing = LEDGER_COLUMNS.filter(([name]) => !rows.some((r) => r.name === name));
  if (missing.length === 0) return;
  await client.query("SET LOCAL lock_timeout = '1s'");
  try {
    await client.query(`ALTER TABLE ledger ${missing.map(([name, type]) => `ADD COLUMN IF NOT EXISTS ${name} ${type}`).join(", ")}`);
  } catch (e) {
    if ((e as { code?: unknown }).code !== NOT_PERMITTED_CODE) throw e;
    const names = missing.map(([name]) => `\`${name}\``).join(" and ");
    throw new SchemaOwnerNeededError(`its new column${missing.length > 1 ? "s" : ""} ${names}`, `ALTER TABLE ledger ${missing.map(([name, type]) => `ADD COLUMN ${name} ${type}`).join(", ")}`);
  }
}

/** Takes this replica's advisory lock under a fresh random owner id on `c`; returns the id. */
export async function takeOwnerLock(c: pg.Client): Promise<number> {
  for (;;) {
    const candidate = randomInt(1, 2 ** 31 - 1);
    const { rows } = await c.query<{ ok: boolean }>("SELECT pg_try_advisory_lock($1, $2) AS ok", [LOCK_CLASS, candidate]);
    if (rows[0]!.ok) return candidate;
  }
}
