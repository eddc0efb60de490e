import { existsSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PostgresStore } from "../../api-shim/src/store/postgres-store.ts";
import { type BackupFile, BackupNoRoomError, BackupNotPossibleError, BackupRunningError, removeLeftoverBackups, SqliteBackups } from "../../api-shim/src/store/sqlite-backup.ts";
import { MIN_FREE_BYTES } from "../../api-shim/src/store/sqlite-space.ts";
import { SqliteStore } from "../../api-shim/src/store/sqlite-store.ts";
import { type RunningPostgres, startPostgres } from "../support/postgres.ts";
import { type Harness, overrideStore, startShim } from "../support/shim-harness.ts";
import { tempDir } from "../support/tools.ts";

/** The temporary copies beside a ledger (sqlite-backup.ts names them `<file>.backup-<random>.tmp`). */
const copiesBeside = (file: string) => readdirSync(dirname(file)).filter((n) => n.includes(".backup-"));

async function until(check: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("GET /admin/backup on the SQLite store", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startShim();
    await h.createKey({ name: "team-a", credits: 10 });
    // ~24 MB of ledger: a copy larger than the socket buffers, so a download can be left half way.
    const db = new Database(h.dbPath);
    db.exec("CREATE TABLE padding (b BLOB); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 384) INSERT INTO padding SELECT randomblob(65536) FROM n");
    db.close();
  });
  afterAll(() => h.close());
  /**
   * A backup, once the one before it is gone: its removal frees its blocks after its name goes,
   * and the next is refused 409 until then (milliseconds; never for longer than 5 s here).
   */
  async function nextBackup(init?: RequestInit): Promise<Response> {
    let res = await h.admin("/admin/backup", init);
    for (const end = Date.now() + 5000; res.status === 409 && Date.now() < end; res = await h.admin("/admin/backup", init)) await new Promise((r) => setTimeout(r, 20));
    return res;
  }

  it("answers the ledger as one SQLite file, with its length and a name, only with the admin token", async () => {
    expect((await fetch(`${h.url}/admin/backup`)).status).toBe(401);
    const res = await nextBackup();
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/vnd.sqlite3");
    expect(res.headers.get("content-disposition")).toMatch(/^attachment; filename="shim-\d{8}T\d{6}Z\.db"$/);
    const body = Buffer.from(await res.arrayBuffer());
    expect(body.length).toBe(Number(res.headers.get("content-length")));
    expect(body.subarray(0, 16).toString("latin1")).toBe("SQLite format 3\0");
    expect(res.headers.get("cache-control")).toBe("no-store"); // the keys' hashes: kept by no cache on the way
    await until(() => copiesBeside(h.dbPath).length === 0, "the copy removed once sent");
    expect((await h.admin("/admin/backup?x=1")).status).toBe(400);
  });

  it("one at a time: a second while the first is sent gets 409 backup_in_progress; once the first is done, the next is made", async () => {
    const first = await nextBackup();
    expect(first.status).toBe(200);
    const second = await h.admin("/admin/backup");
    expect(second.status).toBe(409);
    expect(second.headers.get("x-should-retry")).toBe("false");
    expect(((await second.json()) as { error: { code: string } }).error.code).toBe("backup_in_progress");
    await first.arrayBuffer();
    const third = await nextBackup();
    expect(third.status).toBe(200);
    await third.arrayBuffer();
  });

  it("a client that leaves half way: the copy beside the ledger is removed, and the next backup is made", async () => {
    const ac = new AbortController();
    const res = await nextBackup({ signal: ac.signal });
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    await reader.read(); // the first bytes: the rest waits in the shim
    expect(copiesBeside(h.dbPath)).toHaveLength(1);
    ac.abort();
    await until(() => copiesBeside(h.dbPath).length === 0, "the copy removed after the client left");
    const next = await nextBackup();
    expect(next.status).toBe(200);
    await next.arrayBuffer();
  });
});

describe("the SQLite store's backups", () => {
  it("refuses one the volume has no room for, before writing anything (its free space faked, as the volume checks' tests do)", async () => {
    const file = join(tempDir("backup-room-"), "shim.db");
    // 40 MiB free: room for the 6 MiB ledger's copy and the shim's 16 MiB, not for the ledger to
    // grow 64 MiB while the copy is downloaded.
    const store = new SqliteStore(file, { statVolume: async () => ({ bavail: 10240, bsize: 4096 }) });
    try {
      const db = new Database(file);
      db.exec("CREATE TABLE padding (b BLOB); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 96) INSERT INTO padding SELECT randomblob(65536) FROM n");
      db.close();
      const refused = await store.backup(new AbortController().signal).then(() => null, (e: unknown) => e as BackupNoRoomError);
      expect(refused).toBeInstanceOf(BackupNoRoomError);
      expect(refused!.free).toBe(40 * 2 ** 20);
      const copy = statSync(file).size + (existsSync(`${file}-wal`) ? statSync(`${file}-wal`).size : 0);
      expect(refused!.needed).toBe(copy + 64 * 2 ** 20 + 16 * 2 ** 20);
      expect(copiesBeside(file)).toEqual([]);
    } finally {
      await store.close();
    }
  });

  it("a large ledger's backup keeps a tenth of its copy free for the ledger to grow (above 64 MiB); a volume with exactly that room is enough, a byte less is not", async () => {
    // A sparse file: 1 GiB as stat() gives it, no blocks written. SqliteBackups only stats it.
    const file = join(tempDir("backup-room-large-"), "shim.db");
    writeFileSync(file, "");
    truncateSync(file, 2 ** 30);
    const needed = 2 ** 30 + Math.ceil(2 ** 30 / 10) + MIN_FREE_BYTES;
    const refused = await new SqliteBackups(file, async () => ({ bavail: needed - 1, bsize: 1 })).take(async () => {}).then(() => null, (e: unknown) => e as BackupNoRoomError);
    expect(refused).toBeInstanceOf(BackupNoRoomError);
    expect(refused!.needed).toBe(needed);
    expect(copiesBeside(file)).toEqual([]);
    const backups = new SqliteBackups(file, async () => ({ bavail: needed, bsize: 1 }));
    const made = await backups.take(async (into) => writeFileSync(into, "copy"));
    expect(made.size).toBe(4);
    await made.remove();
    expect(copiesBeside(file)).toEqual([]);
  });

  it("a copy whose writing fails half way is removed at once, and the next backup is made: retried, failed copies do not pile up on the volume", async () => {
    const file = join(tempDir("backup-write-fails-"), "shim.db");
    const backups = new SqliteBackups(file, async () => ({ bavail: 2 ** 30, bsize: 4096 }));
    for (let attempt = 0; attempt < 2; attempt++) {
      // What a VACUUM INTO leaves when it fails part way (an I/O error, its thread ending): part of a copy.
      const failed = backups.take(async (into) => {
        writeFileSync(into, Buffer.alloc(64 * 1024, 1));
        throw new Error("disk I/O error");
      });
      await expect(failed).rejects.toThrow("disk I/O error");
      expect(copiesBeside(file)).toEqual([]);
    }
    const next = await backups.take(async (into) => writeFileSync(into, "copy"));
    expect(next.size).toBe(4);
    await next.remove();
  });

  it("a backup's remove() called again once the next backup is made changes nothing: the next still holds off a third", async () => {
    const file = join(tempDir("backup-remove-twice-"), "shim.db");
    const backups = new SqliteBackups(file, async () => ({ bavail: 2 ** 30, bsize: 4096 }));
    const first = await backups.take(async (into) => writeFileSync(into, "first"));
    await first.remove();
    const second = await backups.take(async (into) => writeFileSync(into, "second"));
    await first.remove();
    await expect(backups.take(async () => {})).rejects.toBeInstanceOf(BackupRunningError);
    expect(existsSync(second.path)).toBe(true);
    await second.remove();
    expect(copiesBeside(file)).toEqual([]);
  });

  it("at a start, only this ledger's leftover copies are removed: nothing else beside it", () => {
    const dir = tempDir("backup-leftovers-");
    const kept = ["shim.db", "shim.db-wal", "notes.tmp", "shim.db.backup-notes", "other.db.backup-0123456789ab.tmp"];
    for (const name of [...kept, "shim.db.backup-0123456789ab.tmp"]) writeFileSync(join(dir, name), "x");
    expect(removeLeftoverBackups(join(dir, "shim.db"))).toEqual(["shim.db.backup-0123456789ab.tmp"]);
    expect(readdirSync(dir).sort()).toEqual([...kept].sort());
  });

  it("through the API, a copy made only after its client left (its last bytes written as the client went) is removed, and the next backup is made", async () => {
    let asked!: () => void;
    const reached = new Promise<void>((r) => (asked = r));
    let made: string | undefined;
    // The store answers only once the client has left: the route gets a copy nobody will read.
    const h = await startShim({
      wrapStore: (s) => overrideStore(s, {
        backup: async (signal: AbortSignal) => {
          asked();
          await new Promise<void>((r) => signal.addEventListener("abort", () => r(), { once: true }));
          const copy = await s.backup(new AbortController().signal);
          made = copy.path;
          return copy;
        },
      }),
    });
    try {
      const ac = new AbortController();
      const res = h.admin("/admin/backup", { signal: ac.signal }).catch(() => null);
      await reached;
      ac.abort();
      await res;
      await until(() => made !== undefined && !existsSync(made), "the copy removed once made");
      // Then the next is made (its turn comes once the removal has ended): not refused for ever as one in progress.
      let next: BackupFile | undefined;
      for (const end = Date.now() + 5000; next === undefined && Date.now() < end; await new Promise((r) => setTimeout(r, 20))) {
        next = await h.store.backup(new AbortController().signal).catch((e: unknown) => {
          if (e instanceof BackupRunningError) return undefined;
          throw e;
        });
      }
      expect(next).toBeDefined();
      await next!.remove();
      expect(copiesBeside(h.dbPath)).toEqual([]);
    } finally {
      await h.close();
    }
  });

  it("through the API, a copy the route cannot open is a 500 that lets the next backup be made", async () => {
    let calls = 0;
    // The first copy gone before the route opens it (as when the process has no file descriptor left).
    const h = await startShim({
      wrapStore: (s) => overrideStore(s, {
        backup: async (signal: AbortSignal) => {
          const copy = await s.backup(signal);
          if (calls++ === 0) rmSync(copy.path);
          return copy;
        },
      }),
    });
    try {
      expect((await h.admin("/admin/backup")).status).toBe(500);
      const next = await h.admin("/admin/backup");
      expect(next.status).toBe(200);
      await next.arrayBuffer();
      await until(() => copiesBeside(h.dbPath).length === 0, "the copy removed once sent");
    } finally {
      await h.close();
    }
  });

  it("through the API, an in-memory database's backup is refused 501 backup_not_supported, not a 500", async () => {
    const memory = new SqliteStore(":memory:");
    const m = await startShim({ wrapStore: () => memory });
    try {
      const res = await m.admin("/admin/backup");
      expect(res.status).toBe(501);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("backup_not_supported");
    } finally {
      await m.close();
      await memory.close();
    }
  });

  it("an in-memory database has nothing to back up", async () => {
    const store = new SqliteStore(":memory:");
    await expect(store.backup(new AbortController().signal)).rejects.toBeInstanceOf(BackupNotPossibleError);
    await store.close();
  });

  it("the copy being sent is removed by the store's close (the process stopping)", async () => {
    const file = join(tempDir("backup-close-"), "shim.db");
    const store = new SqliteStore(file);
    const backup = await store.backup(new AbortController().signal);
    expect(existsSync(backup.path)).toBe(true);
    await store.close();
    expect(existsSync(backup.path)).toBe(false);
  });
});

describe("GET /admin/backup on the Postgres store", () => {
  let server: RunningPostgres;
  let store: PostgresStore;
  let h: Harness;
  beforeAll(async () => {
    server = await startPostgres();
    store = await PostgresStore.open(await server.newDatabase());
    h = await startShim({ wrapStore: () => store });
  }, 60_000);
  afterAll(async () => {
    await h?.close();
    await store?.close();
    await server?.stop();
  });

  it("is refused with 501 saying to use pg_dump or the provider's backups", async () => {
    const res = await h.admin("/admin/backup");
    expect(res.status).toBe(501);
    expect(res.headers.get("x-should-retry")).toBe("false");
    const { error } = (await res.json()) as { error: { code: string; message: string; type: string } };
    expect(error.code).toBe("backup_not_supported");
    expect(error.message).toMatch(/^This shim's ledger is in Postgres: back it up with pg_dump or your provider's backups/);
  });
});
