import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { startCheckpointer } from "../../api-shim/src/store/sqlite-checkpointer.ts";
import { truncateWal } from "../../api-shim/src/store/sqlite-erase.ts";

/**
 * A key's rename asks the checkpoint thread for a TRUNCATE checkpoint (sqlite-erase.ts), which
 * cannot complete while a report or a backup holds a read snapshot. Meanwhile the request path
 * (the main connection, busy_timeout 0: its WriteLockQueue waits instead) must keep writing: a
 * TRUNCATE that waited for the reader held the write lock all that time, and a settlement that
 * cannot be written within busyTimeoutMs fails the store closed.
 */
describe("a WAL truncation asked for while a reader holds a snapshot", () => {
  let dir: string;
  let file: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "shim-truncate-"));
    file = join(dir, "shim.db");
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("leaves the request path's writes alone, and truncates the WAL once the reader is done", async () => {
    const main = new Database(file);
    main.pragma("journal_mode = WAL");
    main.exec("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1)");
    main.pragma("busy_timeout = 0");
    const worker = startCheckpointer(main, file, 100, () => {});
    const reader = new Database(file, { readonly: true });
    try {
      reader.exec("BEGIN");
      reader.prepare("SELECT count(*) FROM t").get(); // a report's snapshot, from before the next write
      main.exec("INSERT INTO t VALUES (2)");
      const truncated = truncateWal(worker, 1500);
      let written = 0;
      let busy = 0;
      const started = performance.now();
      while (performance.now() - started < 1200) {
        try {
          main.exec("INSERT INTO t VALUES (3)");
          written++;
        } catch (e) {
          if (!String((e as { code?: string }).code).startsWith("SQLITE_BUSY")) throw e;
          busy++;
        }
        await new Promise((r) => setTimeout(r, 5));
      }
      expect(await truncated).toBe("waiting"); // the reader still holds the WAL
      // A few may meet the thread's passing checkpoints (more on a loaded machine); a TRUNCATE
      // that waited on the reader kept nearly all of them out (185 busy to 29 written).
      expect(busy).toBeLessThan(written);
      reader.exec("COMMIT");
      // Still asked: the thread's next turns truncate it, with no one asking again (a rename
      // answered "waiting" leaves the old name in the WAL until then).
      const until = performance.now() + 2000;
      while (statSync(`${file}-wal`).size !== 0 && performance.now() < until) await new Promise((r) => setTimeout(r, 20));
      expect(statSync(`${file}-wal`).size).toBe(0);
      expect(await truncateWal(worker, 3000)).toBe("done");
    } finally {
      reader.close();
      await worker.terminate();
      main.close();
    }
  });

  it("asked again (another rename) while a reader holds the WAL: the one truncation after it answers every ask", async () => {
    const main = new Database(file);
    main.pragma("journal_mode = WAL");
    main.exec("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1)");
    const worker = startCheckpointer(main, file, 60_000, () => {}); // no turn within the test: only the asks truncate
    const reader = new Database(file, { readonly: true });
    try {
      reader.exec("BEGIN");
      reader.prepare("SELECT count(*) FROM t").get(); // its snapshot is in the WAL: nothing was checkpointed
      main.exec("INSERT INTO t VALUES (2)");
      const first = truncateWal(worker, 3000);
      const second = truncateWal(worker, 3000);
      await new Promise((r) => setTimeout(r, 200));
      reader.exec("COMMIT");
      expect(await truncateWal(worker, 3000)).toBe("done");
      expect(await Promise.all([first, second])).toEqual(["done", "done"]);
      expect(statSync(`${file}-wal`).size).toBe(0);
    } finally {
      reader.close();
      await worker.terminate();
      main.close();
    }
  });

  it("once the thread has ended, says so at once (the caller checkpoints on its own connection)", async () => {
    const main = new Database(file);
    main.pragma("journal_mode = WAL");
    const worker = startCheckpointer(main, file, 100, () => {});
    await worker.terminate();
    try {
      const started = performance.now();
      expect(await truncateWal(worker, 2000)).toBe("gone");
      expect(performance.now() - started).toBeLessThan(1000);
    } finally {
      main.close();
    }
  });

  it("with no reader, is done when asked, not a checkpoint turn later, and is no checkpoint failure", async () => {
    const main = new Database(file);
    main.pragma("journal_mode = WAL");
    main.exec("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1)");
    const failures: unknown[] = [];
    const worker = startCheckpointer(main, file, 60_000, (f) => failures.push(f)); // no turn within the test
    try {
      expect(statSync(`${file}-wal`).size).toBeGreaterThan(0);
      expect(await truncateWal(worker, 2000)).toBe("done");
      expect(statSync(`${file}-wal`).size).toBe(0);
      // Its answer is no checkpoint's failure: that would warn, and fail the store closed.
      await new Promise((r) => setTimeout(r, 50));
      expect(failures).toEqual([]);
    } finally {
      await worker.terminate();
      main.close();
    }
  });
});
