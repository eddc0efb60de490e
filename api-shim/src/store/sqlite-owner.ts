import { existsSync, lstatSync, readlinkSync, realpathSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import Database from "better-sqlite3";

/**
 * One shim process per SQLite file. Each process releases, at start, every hold it finds (they
 * can only be a dead process's), so a second process on the same file would release the first
 * one's live holds and let its keys spend past their credits. The owner holds an exclusive lock
 * on `<file>-lock` for as long as it runs; the kernel drops the lock when the process dies,
 * however it dies, so a restart after a crash is never refused. Several processes need the
 * Postgres store.
 */
export class SqliteInUseError extends Error {
  constructor(file: string) {
    super(`another shim process is using ${file} (one process per SQLite file: each releases the holds it finds at start); stop it, or give this one its own SHIM_DATABASE_URL (several processes need postgres://)`);
    this.name = "SqliteInUseError";
  }
}

/**
 * Claims `file` for this process; throws SqliteInUseError while another process (or store here)
 * has it. The claim lasts until `release()`, or the process's end. The returned object must stay
 * reachable meanwhile: better-sqlite3 closes a collected connection, and that drops the lock.
 */
export function claimSqliteFile(file: string): { release(): void } {
  // The lock is named after the file SQLite really opens, so two spellings of one database (a
  // symlink, a relative path) meet at the same lock.
  const lock = new Database(`${realSqliteFile(file)}-lock`);
  try {
    lock.pragma("busy_timeout = 0");
    lock.pragma("journal_mode = MEMORY"); // nothing is written: no journal file beside the lock
    lock.exec("BEGIN EXCLUSIVE");
  } catch (e) {
    lock.close();
    if ((e as { code?: string }).code === "SQLITE_BUSY") throw new SqliteInUseError(file);
    throw e;
  }
  // Closing the connection ends its transaction and drops the lock.
  return { release: () => void (lock.open && lock.close()) };
}

/** The file SQLite really opens for `file` (a symlink's target, an absolute path); its directory must exist. Its -wal, -shm and -lock are named after it. */
export function realSqliteFile(file: string): string {
  if (existsSync(file)) return realpathSync(file);
  // Not there yet, or a link to a file not there yet, which SQLite creates at the link's target
  // (and names the -wal after): followed link by link, as SQLite does (at most 100, its limit).
  let path = file;
  for (let links = 0; links < 100 && lstatSync(path, { throwIfNoEntry: false })?.isSymbolicLink(); links++) path = resolve(dirname(path), readlinkSync(path));
  return join(realpathSync(dirname(path)), basename(path));
}
