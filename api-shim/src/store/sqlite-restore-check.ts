import { accessSync, closeSync, constants, fstatSync, linkSync, lstatSync, mkdtempSync, openSync, readdirSync, readSync, rmSync, type Stats } from "node:fs";
import { basename, dirname, join } from "node:path";
import Database from "better-sqlite3";
import { SQLITE_HEADER } from "./sqlite-backup.ts";
import { MIGRATIONS } from "./sqlite-migrations.ts";
import { NewerSchemaError } from "./store.ts";

/**
 * The check of a staged ledger before it replaces the current one (sqlite-restore.ts): readable
 * and writable by this process, a SQLite database, whole (PRAGMA integrity_check), with the
 * shim's tables, of a schema this shim can open (an older one is migrated at the start, as any).
 * It reads the file and changes nothing: the file is opened read-only through a hard link in a
 * directory of the check's own, because SQLite's reader of a WAL-mode file (a stopped shim's
 * shim.db, copied as it is) makes a `-wal` and a `-shm` beside the name it opens, and would
 * leave them beside the staged file.
 */

/** The staged file is not restored: `reason` says why and what to do. Nothing was changed. */
export class RestoreRefusedError extends Error {
  constructor(staged: string, ledger: string, reason: string) {
    const name = basename(staged);
    super(`cannot restore the ledger from ${staged}: ${reason}. Nothing was changed: ${basename(ledger)} and ${name} are as they were; the shim does not start while ${name} is there (remove it to start on the current ledger)`);
    this.name = "RestoreRefusedError";
  }
}

/** What the staged ledger holds: its keys, and their balances together in credits (as formatCredits shows them), for the log line that says it was restored. */
export interface StagedLedger {
  keys: number;
  credits: string;
}

/** The directories of checks a killed process left: `<ledger>.restore-check-<random>`. */
export const checkPrefix = (ledger: string) => `${basename(ledger)}.restore-check-`;

/** Removes the directories of checks a killed process left beside `ledger` (its owner lock held). */
export function removeLeftoverChecks(ledger: string): void {
  for (const name of readdirSync(dirname(ledger))) {
    if (name.startsWith(checkPrefix(ledger))) rmSync(join(dirname(ledger), name), { recursive: true, force: true });
  }
}

const BACKUP_HINT = "stage a backup made by npm run backup-ledger";
const DAMAGED_HINT = "was the copy cut short? Copy the backup again, or stage an earlier one";
/** The tables every schema version of the shim's has. */
const OWN_TABLES = ["keys", "ledger", "idempotency"];

/**
 * Checks `staged` (lstat'ed as `st`), to replace `ledger`; RestoreRefusedError when it may not.
 * `onChecking` is told before the long part (integrity_check reads the whole file).
 */
export function checkStagedLedger(staged: string, ledger: string, st: Stats, onChecking?: (file: string, bytes: number) => void): StagedLedger {
  const refuse = (reason: string) => new RestoreRefusedError(staged, ledger, reason);
  if (!st.isFile()) throw refuse(`it is a ${st.isSymbolicLink() ? "symbolic link" : st.isDirectory() ? "directory" : "special file"}, not a regular file: copy the backup file itself there`);
  try {
    accessSync(staged, constants.R_OK | constants.W_OK); // it becomes the ledger, which the shim writes
  } catch {
    throw refuse(`this process (uid ${process.getuid?.()}) cannot read and write it: chown 1000:1000 ${staged} (the shim's image runs as uid 1000; a file copied as root, with scp or cp, is root's)`);
  }
  // A -wal of its own would hold commits the file does not have: restored without it, they would be lost silently.
  const wal = lstatSync(`${staged}-wal`, { throwIfNoEntry: false });
  if (wal !== undefined && wal.size > 0) throw refuse(`${staged}-wal is beside it, holding changes that are not in the file itself: stage one self-contained file, a backup made by npm run backup-ledger`);
  if (st.size === 0) throw refuse(`it is empty (0 bytes): ${DAMAGED_HINT}`);
  const head = readHead(staged);
  if (!head.subarray(0, SQLITE_HEADER.length).equals(SQLITE_HEADER)) throw refuse(`it is not a SQLite database (it does not begin with SQLite's header): ${BACKUP_HINT}`);
  // A copy cut short inside its last page: SQLite reads the missing bytes as zeros, and
  // integrity_check passes while the end of that page (where a page's rows are) is lost.
  const pageSize = head.length >= 18 ? (head.readUInt16BE(16) === 1 ? 65536 : head.readUInt16BE(16)) : 0;
  if (pageSize > 0 && st.size % pageSize !== 0) throw refuse(`it is damaged (${st.size} bytes, not a whole number of its ${pageSize}-byte pages): ${DAMAGED_HINT}`);
  onChecking?.(staged, st.size);
  let found: StagedLedger | undefined;
  let refused: unknown;
  try {
    found = readThroughLink(staged, ledger, refuse);
  } catch (e) {
    refused = e;
  }
  // The staged file must be the one checked: one still being copied would be restored half (and
  // what the check found of it, damage included, says nothing of the file it becomes).
  const now = lstatSync(staged, { throwIfNoEntry: false });
  if (now === undefined || now.ino !== st.ino || now.size !== st.size || now.mtimeMs !== st.mtimeMs) throw refuse("it changed while it was checked (is it still being copied?): start the shim again once the copy is complete");
  if (found === undefined) throw refused;
  return found;
}

/** The first 100 bytes of `file` (SQLite's header), fewer if it is shorter. */
function readHead(file: string): Buffer {
  const fd = openSync(file, "r");
  try {
    const head = Buffer.alloc(Math.min(100, fstatSync(fd).size));
    readSync(fd, head, 0, head.length, 0);
    return head;
  } finally {
    closeSync(fd);
  }
}

/** Opens `staged` read-only through a hard link in a directory of the check's own, reads what the check needs, and removes that directory. */
function readThroughLink(staged: string, ledger: string, refuse: (reason: string) => Error): StagedLedger {
  let dir: string;
  try {
    dir = mkdtempSync(join(dirname(ledger), checkPrefix(ledger)));
  } catch (e) {
    // The swap would fail the same way: its moves and rename write the directory too.
    throw refuse(`this process (uid ${process.getuid?.()}) cannot write the directory ${dirname(ledger)} (${(e as NodeJS.ErrnoException).code}): chown 1000:1000 ${dirname(ledger)}`);
  }
  try {
    const link = join(dir, "check.db");
    try {
      linkSync(staged, link);
    } catch (e) {
      throw refuse(`it cannot be opened to be checked (a hard link to it beside the ledger failed: ${(e as Error).message}): copy it there as a file of its own`);
    }
    let db: Database.Database | undefined;
    try {
      db = new Database(link, { readonly: true, fileMustExist: true });
      return inspect(db, staged, refuse);
    } catch (e) {
      if (e instanceof RestoreRefusedError) throw e;
      const code = (e as { code?: string }).code;
      if (code === undefined || !/^SQLITE_(CORRUPT|NOTADB|IOERR_SHORT_READ)/.test(code)) throw e;
      throw refuse(`it is damaged (${code}: ${(e as Error).message}): ${DAMAGED_HINT}`);
    } finally {
      db?.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function inspect(db: Database.Database, staged: string, refuse: (reason: string) => Error): StagedLedger {
  const problems = db.prepare<[], { integrity_check: string }>("PRAGMA integrity_check(4)").all().map((r) => r.integrity_check);
  if (problems.join() !== "ok") throw refuse(`it is damaged (PRAGMA integrity_check: ${problems.join("; ")}): ${DAMAGED_HINT}`);
  const tables = new Set(db.prepare<[], string>("SELECT name FROM sqlite_schema WHERE type = 'table'").pluck().all());
  const missing = OWN_TABLES.filter((t) => !tables.has(t));
  if (missing.length > 0) throw refuse(`it is a SQLite database but not the shim's ledger (no table ${missing.join(", ")}): ${BACKUP_HINT}`);
  const version = db.pragma("user_version", { simple: true }) as number;
  if (version > MIGRATIONS.length) throw refuse(new NewerSchemaError(staged, version, MIGRATIONS.length).message);
  try {
    if (version < 1) throw new Error("schema version 0");
    // As BigInts: many keys' balances together can pass 2^53 µc, where a number is no longer exact.
    const row = db.prepare<[], { keys: bigint; balance: bigint }>("SELECT count(*) AS keys, coalesce(sum(balance), 0) AS balance FROM keys").safeIntegers(true).get()!;
    return { keys: Number(row.keys), credits: creditsOf(row.balance) };
  } catch (e) {
    throw refuse(`it is a SQLite database but not the shim's ledger (${(e as Error).message}): ${BACKUP_HINT}`);
  }
}

/** µc in credits, as formatCredits shows them (`3456.5`), exact past 2^53 too. */
function creditsOf(micro: bigint): string {
  const abs = micro < 0n ? -micro : micro;
  const frac = (abs % 1_000_000n).toString().padStart(6, "0").replace(/0+$/, "");
  return `${micro < 0n ? "-" : ""}${abs / 1_000_000n}${frac === "" ? "" : `.${frac}`}`;
}
