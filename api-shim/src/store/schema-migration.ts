/**
 * What a store's start did to its database's schema (sqlite-migrations.ts migrate,
 * postgres-migrations.ts migratePg), for the one log line that says so (server.ts): whether this
 * upgrade moved the schema is what decides whether going back to the previous shim needs the
 * backup taken before the upgrade, and a large ledger's migration is a slow first start.
 */
export interface SchemaMigration {
  /** The schema version found (0: a new database). */
  from: number;
  /** The schema version now (the last this shim knows). */
  to: number;
  /** The date of the first shims with schema `to` (the migrations module's SCHEMA_DATES). */
  since: string;
  /** How long the migrations took, 0 when none ran. */
  ms: number;
}

/** The date of schema `version` (1-based) in `dates`, one per migration, oldest first. */
export function schemaDate(dates: readonly string[], version: number): string {
  const date = dates[version - 1];
  if (date === undefined) throw new Error(`schema ${version} has no date in SCHEMA_DATES`);
  return date;
}

/**
 * The start's line for a migration of an existing database; null for a new one (its tables
 * made, nothing migrated) or one already up to date.
 */
export function migrationMessage(m: SchemaMigration): string | null {
  if (m.from === 0 || m.from >= m.to) return null;
  return `migrated the ledger from schema ${m.from} to ${m.to} (the schema of shims from ${m.since} on) in ${Math.round(m.ms)} ms: ` +
    "an older shim may not open it (docs/api-shim/money.md#schema-versions says which do); for one that does not, the backup taken before the upgrade is the way back";
}
