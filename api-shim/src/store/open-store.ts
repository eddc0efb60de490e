import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { parseDatabaseUrl } from "./database-url.ts";
import { PostgresStore, type PostgresStoreOptions } from "./postgres-store.ts";
import type { SqliteStoreOptions } from "./sqlite-options.ts";
import { removeLeftoverBackups } from "./sqlite-backup.ts";
import { claimSqliteFile, realSqliteFile } from "./sqlite-owner.ts";
import { type LedgerRestored, restoreStagedLedger } from "./sqlite-restore.ts";
import { checkRoomToStart } from "./sqlite-space.ts";
import { SqliteStore } from "./sqlite-store.ts";
import type { Store } from "./store.ts";

/**
 * `onMigrated` is both stores' (what the start did to the schema). `onFailure`, `onCheckpointFailure` and `onVolumeFree` are the SQLite store's (it fails closed;
 * its WAL checkpoints; its volume's free space); the Postgres store recovers by itself and never calls them. `onReleased`,
 * `onReadOnly`, `onConnectionsCut` and `onUsageIndex` are the Postgres store's (its sweeps while
 * serving, a database that takes no writes, a shutdown the database did not answer, its
 * background index build); the SQLite store has none of them.
 */
export type OpenStoreOptions = Pick<SqliteStoreOptions, "onFailure" | "onCheckpointFailure" | "onVolumeFree" | "onMigrated" | "prices"> & Pick<PostgresStoreOptions, "onReleased" | "onReadOnly" | "onConnectionsCut" | "onUsageIndex"> & RestoreOptions;

/**
 * A SQLite file's restore of a staged backup (sqlite-restore.ts): `onRestoreCheck` before the
 * check reads the staged file (its size: a large one takes a while), `onRestored` once it is the
 * ledger, before the store opens it.
 */
interface RestoreOptions {
  onRestoreCheck?: (file: string, bytes: number) => void;
  onRestored?: (restored: LedgerRestored) => void;
}

/**
 * Opens the store SHIM_DATABASE_URL names (see parseDatabaseUrl); missing directories of a SQLite
 * file are created, the file's volume must have room (checkRoomToStart: VolumeFullError), and
 * the file is claimed for this process until the store closes (claimSqliteFile: a second process
 * would release this one's holds), a backup staged beside it (`<file>.restore`) replaces it once
 * checked (restoreStagedLedger: under the claim, before the store opens the file), and backups a
 * killed process left beside it are removed. Postgres and `:memory:` have no such file.
 */
export async function openStore(url: string, options: OpenStoreOptions = {}, cwd: string = process.cwd()): Promise<Store> {
  const target = parseDatabaseUrl(url);
  if (target.kind === "postgres") return PostgresStore.open(target.url, options);
  const sqliteOptions = { onFailure: options.onFailure, onCheckpointFailure: options.onCheckpointFailure, onVolumeFree: options.onVolumeFree, onMigrated: options.onMigrated, prices: options.prices };
  if (target.path === ":memory:") return new SqliteStore(":memory:", sqliteOptions);
  const file = resolve(cwd, target.path);
  mkdirSync(dirname(file), { recursive: true });
  options.onVolumeFree?.(checkRoomToStart(file));
  const owner = claimSqliteFile(file);
  try {
    // The file SQLite opens (a symlink's target): its -wal, which the store syncs itself, and the
    // backups' and the restore's files beside it are named after it, not after the link.
    const real = realSqliteFile(file);
    const restored = restoreStagedLedger(real, { onChecking: options.onRestoreCheck });
    if (restored !== null) options.onRestored?.(restored);
    removeLeftoverBackups(real); // a killed process's, now that no other process can be sending one
    return new SqliteStore(real, { ...sqliteOptions, owner });
  } catch (e) {
    owner.release();
    throw e;
  }
}
