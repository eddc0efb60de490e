import { accessSync, constants } from "node:fs";
import { basename, dirname } from "node:path";

/**
 * What a SQLite error means for the store. better-sqlite3 gives the extended result code as a
 * string (`SQLITE_IOERR_FSYNC`, `SQLITE_READONLY_DBMOVED`); the primary code is its first part.
 */

/** The error's SQLite code, if it has one. */
export function code(e: unknown): string | undefined {
  const c = typeof e === "object" && e !== null ? (e as { code?: unknown }).code : undefined;
  return typeof c === "string" ? c : undefined;
}

function primary(e: unknown): string | undefined {
  return code(e)?.match(/^SQLITE_[A-Z]+/)?.[0];
}

/**
 * SQLite's answer when another connection holds the lock it needs, with any extended code
 * (SQLITE_BUSY_RECOVERY: another connection is recovering the WAL after a crash; waiting is the
 * remedy there too, where failing closed asked for a restart).
 */
export function isBusy(e: unknown): boolean {
  return primary(e) === "SQLITE_BUSY";
}

/** The file is damaged (a page, or not a database at all): only a backup brings the ledger back. */
export function isCorrupt(e: unknown): boolean {
  const p = primary(e);
  return p === "SQLITE_CORRUPT" || p === "SQLITE_NOTADB";
}

/** The volume is full (SQLITE_FULL): a write, or a checkpoint copying the WAL into the database, found no room. */
export function isFull(e: unknown): boolean {
  return primary(e) === "SQLITE_FULL";
}

/**
 * The database cannot be read or written at all, whichever statement met it: a read-only file
 * (its mode, or its -wal or -shm owned by another user), a disk error, a full volume, a corrupt
 * file. Unlike a statement's own mistake (a constraint, a busy lock) no retry of the process's
 * next request will go better, so the store fails closed and the process is restarted. Not
 * SQLITE_PROTOCOL: SQLite documents it as a rare, transient lost race for a WAL lock; that call
 * gets a 503 and the next one goes through.
 */
const FATAL = new Set(["SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_FULL", "SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_CANTOPEN", "SQLITE_PERM"]);

export function failsTheStore(e: unknown): boolean {
  const p = primary(e);
  return p !== undefined && FATAL.has(p);
}

/**
 * The SQLite code an admin write's failed WAL sync (sqlite-wal-sync.ts: Node's open and
 * fdatasync, not SQLite's) is reported under, so that the log's err.code and hint send the
 * operator to the right remedy: a -wal of another owner (root's sqlite3 on the host) fails its
 * open with EACCES, which is a file to chown, not a disk to check; a read-only mount (EROFS) is
 * told by failureHint itself; ENOSPC is a full volume. Anything else is the disk's I/O error.
 */
export function walSyncFailureCode(e: unknown): string {
  switch ((e as NodeJS.ErrnoException | null)?.code) {
    case "EACCES":
    case "EPERM":
      return "SQLITE_PERM";
    case "EROFS":
      return "SQLITE_READONLY";
    case "ENOSPC":
    case "EDQUOT":
      return "SQLITE_FULL";
    default:
      return "SQLITE_IOERR_FSYNC";
  }
}

/** The docs' section an operator restores a backup with. */
const RESTORE_DOCS = "docs/operations.md, Backup and restore of the ledger";

/**
 * Whether `dir` is on a file system mounted read-only (EROFS; Node's statfs has no mount flags).
 * The kernel remounts one read-only after disk errors (ext4's errors=remount-ro): SQLite then
 * says only SQLITE_CANTOPEN or SQLITE_READONLY, as for a file of another owner.
 */
export function onReadOnlyFileSystem(dir: string): boolean {
  try {
    accessSync(dir, constants.W_OK);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EROFS";
  }
}

/**
 * What an operator should check when the store failed closed with `e` (for the log line that
 * says so), or undefined when the error says nothing the log's `err` does not. `file`: the
 * SQLite database's path as this process sees it.
 */
export function failureHint(e: unknown, file: string, readOnly: (dir: string) => boolean = onReadOnlyFileSystem): string | undefined {
  const p = primary(e);
  const files = `${file}, ${file}-wal and ${file}-shm`;
  // Checked only once it failed so: an owner or a mode would be the wrong thing to change.
  if ((p === "SQLITE_READONLY" || p === "SQLITE_PERM" || p === "SQLITE_CANTOPEN" || p === "SQLITE_IOERR") && readOnly(dirname(file))) {
    return `the file system holding ${file} is mounted read-only (the kernel does that after disk errors): check the disk (dmesg), fsck the volume, then remount it read-write (mount -o remount,rw); chown and chmod cannot help`;
  }
  switch (p) {
    case "SQLITE_READONLY":
    case "SQLITE_PERM":
    case "SQLITE_CANTOPEN":
      return `the shim cannot write its database: check the owner and mode of ${files} and of their directory (the shim's image runs as uid 1000, which must be able to read and write all of them)`;
    case "SQLITE_FULL":
      return `the volume holding ${file} is full: free space on it (df -h)`;
    case "SQLITE_IOERR":
      return `the disk failed a read or write of ${files}: check the volume (dmesg, df -h, its mount)`;
    case "SQLITE_CORRUPT":
    case "SQLITE_NOTADB":
      return `${file} is corrupt: restore the last backup: copy it beside it as ${basename(file)}.restore, owned by uid 1000, and restart the shim, which checks it and swaps it in (${RESTORE_DOCS})`;
    case "SQLITE_BUSY":
      return `another connection held ${file}'s write lock too long (an operator's sqlite3 shell, a backup by another program?)`;
    default:
      return undefined;
  }
}
