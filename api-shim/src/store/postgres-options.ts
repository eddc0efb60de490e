import type { PricesSeen } from "../money/price-record.ts";
import type { UsageIndexOutcome } from "./postgres-usage-index.ts";
import type { SchemaMigration } from "./schema-migration.ts";

/** The Postgres store's options (postgres-store.ts). */
export interface PostgresStoreOptions {
  /** Bound on connecting and on every statement (the SQLite store's busy timeout). Default 5000 ms. */
  timeoutMs?: number;
  /** ms between sweeps that release the holds of replicas that are gone. Default 60000. */
  sweepIntervalMs?: number;
  /**
   * How long (ms, by the database's clock) an owner must have been seen without its liveness lock
   * before a sweep releases its holds: a replica taking its lock back is not a replica gone.
   * Default 30000 (postgres-sweep.ts).
   */
  sweepGraceMs?: number;
  /** ms between tries to release doubtful holds and to re-take a lost liveness lock. Default 1000. */
  retryMs?: number;
  /** Pooled connections at most. Default 10. */
  poolSize?: number;
  /** Told how many holds of replicas that are gone each sweep released (0 included); the start's release is the caller's own. */
  onReleased?: (released: number) => void;
  /** Told when the database is found read-only (true: every hold fails, /ready says the store is unavailable), and when it takes writes again (false). */
  onReadOnly?: (readOnly: boolean) => void;
  /** Told how many connections close() had to cut, the database not answering its goodbye in time (SHUTDOWN_MS). */
  onConnectionsCut?: (connections: number) => void;
  /** Told what the start did to the database's schema (migratePg, committed): for the start's log line. */
  onMigrated?: (migration: SchemaMigration) => void;
  /** Told each failed try at the usage rows' time index and what became of it (postgres-usage-index.ts). */
  onUsageIndex?: (outcome: UsageIndexOutcome) => void;
  /** The configuration's prices, recorded in the start's migration transaction (price-schema.ts). */
  prices?: PricesSeen;
}
