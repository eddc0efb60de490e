/**
 * What a store throws and rejects with, apart from the Store interface (store.ts) that re-exports
 * them: each error says what went wrong and what to do, and the routes map them to answers.
 */

/** The store failed (busy past its timeout, I/O, closed): requests fail closed with 503. */
export class StoreUnavailableError extends Error {
  constructor(cause: unknown) {
    super("store unavailable", { cause });
    this.name = "StoreUnavailableError";
  }
}

/**
 * An admin write committed, but the disk refused the sync that would have made it durable: a
 * failed sync rolls nothing back, so the change stands (the next process reads it) unless the
 * host loses the page cache. Not "retry later" (a retry would grant a top-up's credits, or make a
 * key, a second time): the client is told to check first (errors.ts, change_not_confirmed). The
 * store still fails closed, as for any StoreUnavailableError.
 */
export class UnconfirmedWriteError extends StoreUnavailableError {
  constructor(cause: unknown) {
    super(cause);
    this.name = "UnconfirmedWriteError";
  }
}

/**
 * The database was made by a newer shim (a schema version past the last migration this one
 * knows): it refuses to start rather than serve against tables it does not understand (an
 * image rolled back after an upgrade). A restart cannot fix it, so it is not a store failure.
 */
export class NewerSchemaError extends Error {
  constructor(database: string, found: number, known: number) {
    super(`${database} was made by a newer version of the shim (schema ${found}, this one knows ${known}); run the newer image or restore a backup`);
    this.name = "NewerSchemaError";
  }
}

/**
 * The Postgres store's role may not add the ledger's `served` column (it does not own the tables:
 * a replica running with data rights only), which settling needs: the start fails saying what to
 * do, rather than as a database failure a restart would fix.
 */
export class SchemaOwnerNeededError extends Error {
  /** `grant`: what is missing is a right of this role, which only a GRANT gives (an owner's start does not). */
  constructor(what = "its new column `served`", sql = "ALTER TABLE ledger ADD COLUMN served boolean", grant = false) {
    super(grant
      ? `the ledger needs ${what}: run, as the tables' owner, ${sql}, then restart this shim`
      : `the ledger needs ${what}: start one shim once as the tables' owner (or run, as the owner: ${sql}), then restart the replicas`);
    this.name = "SchemaOwnerNeededError";
  }
}

/**
 * The Postgres store's connections do not keep their server sessions (the settings it SETs on
 * them, its liveness lock): a pooler in transaction or statement mode between the shim and
 * PostgreSQL (postgres-sessions.ts's probeSessions, before anything is SET, and checkSessions).
 * The start fails naming what was not kept; a restart cannot fix it.
 */
export class SessionSettingsError extends Error {
  constructor(faults: readonly string[]) {
    super(`the database connections do not keep their server sessions: ${faults.join("; ")}. The store needs its settings (statement bound, asynchronous commit, keepalives) and its liveness lock to stay with each connection: connect to PostgreSQL itself or through a pooler in session mode (PgBouncer: pool_mode = session), not transaction or statement mode`);
    this.name = "SessionSettingsError";
  }
}

/**
 * A bootstrap key has the id of a key made with the admin API (store.ensureBootstrapKey's
 * `adminKey`): that key is left as it is, and the shim refuses to start rather than serve
 * without the configured one (its holder would get 401s). A restart cannot fix it.
 */
export class BootstrapIdTakenError extends Error {
  constructor(id: string) {
    super(`bootstrap key ${id} has the id of a key made with the admin API; give it another id`);
    this.name = "BootstrapIdTakenError";
  }
}

/**
 * Too many usage reports wait already (turns.ts): the askers' own rate, not a failure of the
 * store, so a 429 with Retry-After (routes/usage.ts), never a 503 nor an error line. `scope`:
 * the full line was the asker's own (a key's reports, or the operator's over all keys) or the
 * one the whole shim's reports share.
 */
export class ReportsBusyError extends Error {
  readonly scope: "line" | "shim";
  constructor(scope: "line" | "shim", running: number, waiting: number) {
    super(`${running} running and ${waiting} waiting already`);
    this.name = "ReportsBusyError";
    this.scope = scope;
  }
}

/** The client left before its answer: nothing failed, so nothing is logged as a failure. */
export class ClientLeftError extends Error {
  constructor() {
    super("the client left");
    this.name = "ClientLeftError";
  }
}

/**
 * What a store's read or report rejects with: its own errors as they are (the store failed, the
 * client left, too many reports wait), anything else as the store unavailable (a 503).
 */
export function asStoreError(e: unknown): Error {
  return e instanceof StoreUnavailableError || e instanceof ClientLeftError || e instanceof ReportsBusyError ? e : new StoreUnavailableError(e);
}
