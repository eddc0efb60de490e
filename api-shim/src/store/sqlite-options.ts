import type { PricesSeen } from "../money/price-record.ts";
import type { SchemaMigration } from "./schema-migration.ts";
import type { CheckpointFailure } from "./sqlite-checkpointer.ts";

/** The SQLite store's options (sqlite-store.ts). */
export interface SqliteStoreOptions {
  /** How long an operation waits for the write lock another connection holds (default 5000). */
  busyTimeoutMs?: number;
  /** ms between WAL checkpoints run by a worker thread, and between checks of the volume's free space (file databases). Default 1000. */
  checkpointIntervalMs?: number;
  /** Called for each WAL checkpoint that fails (the server logs and counts them). */
  onCheckpointFailure?: (failure: CheckpointFailure) => void;
  /**
   * How long checkpoints may fail, none completing, before the store fails closed (default
   * CHECKPOINT_FAILURE_LIMIT_MS, 60000); and only once at least CHECKPOINT_FAILURES_TO_FAIL of
   * them failed meanwhile. Not for a full volume or a corrupt file: at once (failureToFailWith).
   */
  checkpointFailureLimitMs?: number;
  /**
   * Called once when the store fails closed: a batch, its COMMIT or its write lock failed, any
   * statement met a database it cannot use (read-only, disk error, full, corrupt:
   * sqlite-failures.ts), or the volume has filled up (VolumeFullError). It stays failed, so the
   * server exits to be restarted.
   */
  onFailure?: (error: unknown) => void;
  /** Called with the free bytes of the file's volume at each check of its room, every checkpointIntervalMs (file databases; openStore also calls it with its check before the store opens). */
  onVolumeFree?: (bytes: number) => void;
  /** The volume's free blocks, as a backup checks them (sqlite-backup.ts; tests give a small volume). */
  statVolume?: (dir: string) => Promise<{ bavail: number; bsize: number }>;
  /** Told what the open did to the file's schema (migrate), before the store is used: for the start's log line. */
  onMigrated?: (migration: SchemaMigration) => void;
  /** The configuration's prices, recorded at open (price-schema.ts): what a report per price shows of each. */
  prices?: PricesSeen;
  /** This process's claim on the file (claimSqliteFile), released by close() once the connection is closed. */
  owner?: { release(): void };
}
