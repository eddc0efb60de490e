import { randomBytes } from "node:crypto";
import { readdirSync, rmSync } from "node:fs";
import { rm, stat, statfs } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { MIN_FREE_BYTES } from "./sqlite-space.ts";

/** What every SQLite database file starts with (a backup, a staged restore): anything else is not a ledger. */
export const SQLITE_HEADER = Buffer.from("SQLite format 3\0", "latin1");

/**
 * A consistent copy of the SQLite ledger as one file (GET /admin/backup, routes/backup.ts): made
 * by VACUUM INTO on the report worker's read-only connection (sqlite-reports.ts), off the thread
 * that serves requests, into a temporary file beside the ledger, which the route streams and then
 * removes. The copy is on the ledger's volume for as long as it is sent, so it is made only when
 * the volume keeps the room the shim needs (MIN_FREE_BYTES, sqlite-space.ts) with the copy on it.
 */

/**
 * A backup ready to send: its file, its size; `remove()` deletes it (off this thread: freeing a
 * large file's blocks takes a while), and the next backup may start once it is gone. Called again, nothing more.
 */
export interface BackupFile {
  readonly path: string;
  readonly size: number;
  remove(): Promise<void>;
}

/** The volume would keep less than MIN_FREE_BYTES with a backup on it: refused (a 507). */
export class BackupNoRoomError extends Error {
  readonly needed: number;
  readonly free: number;
  constructor(file: string, room: Room, free: number) {
    super(`the volume holding ${file} has ${free} bytes free; a backup needs ${room.needed}: up to ${room.copy} for the copy (the ledger and its WAL), ${room.growth} for the ledger to grow while the copy is there, and the ${MIN_FREE_BYTES} (${MIN_FREE_BYTES / 2 ** 20} MiB) the shim keeps free to go on serving`);
    this.name = "BackupNoRoomError";
    this.needed = room.needed;
    this.free = free;
  }
}

/** This store has no file to back up (an in-memory database): a 501, as for Postgres. */
export class BackupNotPossibleError extends Error {
  constructor(why: string) {
    super(why);
    this.name = "BackupNotPossibleError";
  }
}

/** A backup is being made or sent already: one at a time (a 409). Each copy takes the ledger's size again on the volume. */
export class BackupRunningError extends Error {
  constructor() {
    super("a backup of the ledger is being made or sent already");
    this.name = "BackupRunningError";
  }
}

/** A size as the backup's messages give it (the 507's, backup-ledger's): `1.4 MiB`. */
export const showMiB = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

/** The temporary files of `file`'s backups: `<name>.backup-<random>.tmp`, beside it. */
const tempPrefix = (file: string) => `${basename(file)}.backup-`;
const TEMP_SUFFIX = ".tmp";

/**
 * Removes backups a killed process left beside `file` (openStore calls it once the file is this
 * process's: no other shim is sending one). Each takes the ledger's size on the volume.
 */
export function removeLeftoverBackups(file: string): string[] {
  const prefix = tempPrefix(file);
  const left = readdirSync(dirname(file)).filter((n) => n.startsWith(prefix) && n.endsWith(TEMP_SUFFIX));
  for (const name of left) rmSync(join(dirname(file), name), { force: true });
  return left;
}

type VolumeStats = { bavail: number; bsize: number };

/** What a backup needs free on the volume, in bytes: `needed` in all. */
type Room = { copy: number; growth: number; needed: number };

/** Room for the ledger to grow while a copy is on the volume: at least this, or a tenth of the copy. */
export const GROWTH_BYTES = 64 * 2 ** 20;

/**
 * The bytes a backup of `file` needs free: its copy, at most the database and its WAL as they
 * are (VACUUM INTO writes the pages in use, which both together hold; an upper bound); room for
 * the ledger to grow meanwhile (the copy stays while it is downloaded, up to the script's hour,
 * and every request's row lands on the same volume: at 50 requests a second, some 50 MB an hour);
 * and MIN_FREE_BYTES left over. The stats run on libuv's thread pool, not the request path's thread.
 */
async function roomNeeded(file: string): Promise<Room> {
  const size = async (path: string) => (await stat(path).catch(() => ({ size: 0 }))).size;
  const copy = (await size(file)) + (await size(`${file}-wal`));
  const growth = Math.max(GROWTH_BYTES, Math.ceil(copy / 10));
  return { copy, growth, needed: copy + growth + MIN_FREE_BYTES };
}

/** One store's backups: at most one at a time, and the one in progress removed by close(). */
export class SqliteBackups {
  private current: string | undefined;
  private readonly file: string;
  private readonly statVolume: (dir: string) => Promise<VolumeStats>;

  /** `statVolume`: the volume's free blocks (tests give a small volume of their own). */
  constructor(file: string, statVolume: (dir: string) => Promise<VolumeStats> = statfs) {
    this.file = file;
    this.statVolume = statVolume;
  }

  /**
   * A new backup, once its room is checked (BackupNoRoomError), written by `write` into the
   * temporary file it is given; BackupRunningError while another is made or sent. Its file is
   * removed when `write` fails, by remove(), or by close(). A `write` given up while its copy is
   * still being written (its asker left mid-VACUUM) says so through `givenUp`: the copy goes on
   * filling the volume until its statement ends, so the next backup is refused until then, and
   * the file removed then (it may be created after the asker left).
   */
  async take(write: (into: string, givenUp: (ended: Promise<void>) => void) => Promise<void>): Promise<BackupFile> {
    if (this.current !== undefined) throw new BackupRunningError();
    const path = join(dirname(this.file), `${tempPrefix(this.file)}${randomBytes(6).toString("hex")}${TEMP_SUFFIX}`);
    this.current = path;
    const remove = async () => {
      await rm(path, { force: true }).catch(() => {});
      if (this.current === path) this.current = undefined;
    };
    let ended: Promise<void> | undefined;
    try {
      const room = await roomNeeded(this.file);
      const { bavail, bsize } = await this.statVolume(dirname(this.file));
      if (bavail * bsize < room.needed) throw new BackupNoRoomError(this.file, room, bavail * bsize);
      await write(path, (e) => (ended = e));
      return { path, size: (await stat(path)).size, remove };
    } catch (e) {
      if (ended === undefined) await remove();
      else void ended.then(remove);
      throw e;
    }
  }

  /**
   * The backup in progress, if any, removed now (the store is closing: nobody will read it; the
   * process may exit next). A copy the worker still writes is freed once its statement ends.
   */
  close(): void {
    if (this.current !== undefined) rmSync(this.current, { force: true });
    this.current = undefined;
  }
}
