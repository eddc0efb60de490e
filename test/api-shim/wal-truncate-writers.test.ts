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
      // A few may meet the thread's passing checkpoints; none is kept out for long.
      expect(busy).toBeLessThan(written / 10);
      reader.exec("COMMIT");
      expect(await truncateWal(worker, 3000)).toBe("done");
      expect(statSync(`${file}-wal`).size).toBe(0);
    } finally {
      reader.close();
      await worker.terminate();
      main.close();
    }
  });
});
