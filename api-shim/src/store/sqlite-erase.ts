import type { Worker } from "node:worker_threads";
import type Database from "better-sqlite3";
import type { KeyUpdateResult } from "./key-updates.ts";

/**
 * A key's name erased (a new name in PATCH /admin/keys/{id}: docs/privacy.md) must leave SQLite's
 * files too. An UPDATE leaves the old row's bytes in the page's free space, and earlier copies of
 * it stay in space SQLite moved rows out of (measured: with secure_delete on for the UPDATE alone,
 * a copy stayed in a keys page's unused gap from an earlier page split); the WAL keeps every frame
 * written since it was last started over, past the end of what it reuses.
 *
 * So the rename's transaction runs with secure_delete on (SQLite zeroes what it frees), on its
 * connection for that transaction only, and rewrites the whole keys table in it: every row deleted
 * (its bytes zeroed, emptied pages zeroed as they are freed) and put back as it was. The keys table
 * is small (a row per key: ~10 ms for 800 keys), and the request path's writes never run with
 * secure_delete (it would zero every page a settlement frees). The rewrite alone removed every copy
 * in the tests (key-rename.test.ts); secure_delete is kept for what they do not reach (a freed
 * page not reused by the rewrite). Then a TRUNCATE checkpoint copies
 * the WAL into the file and truncates it to nothing (truncateWal).
 */
export function renameScrubbed(db: Database.Database, change: () => KeyUpdateResult): KeyUpdateResult {
  db.pragma("secure_delete = ON");
  try {
    return db.transaction(() => {
      const result = change();
      if (result.kind === "done") rewriteKeys(db);
      return result;
    })();
  } finally {
    db.pragma("secure_delete = OFF");
  }
}

/** Every key row deleted and put back as it was, rowid too; the ledger's references to them checked at COMMIT. */
function rewriteKeys(db: Database.Database): void {
  db.pragma("defer_foreign_keys = ON"); // for this transaction only
  const rows = db.prepare<[], Record<string, unknown>>("SELECT rowid AS rowid, * FROM keys").all();
  db.prepare("DELETE FROM keys").run();
  if (rows.length === 0) return;
  const columns = Object.keys(rows[0]!);
  const put = db.prepare(`INSERT INTO keys (${columns.join(", ")}) VALUES (${columns.map((c) => `@${c}`).join(", ")})`);
  for (const row of rows) put.run(row);
}

let asked = 0;

/**
 * Asks the checkpoint thread (sqlite-checkpointer.ts) for a TRUNCATE checkpoint, which it tries at
 * each of its turns until one completes (a report's or a backup's read snapshot holds the WAL meanwhile).
 * "done": the WAL was copied and truncated; "waiting": not within `timeoutMs`, still asked; "gone":
 * the thread has ended (the main connection checkpoints instead).
 */
export function truncateWal(worker: Worker, timeoutMs: number): Promise<"done" | "waiting" | "gone"> {
  if (worker.threadId === -1) return Promise.resolve("gone");
  const n = ++asked;
  return new Promise((resolve) => {
    const end = (outcome: "done" | "waiting" | "gone") => {
      clearTimeout(timer);
      worker.off("message", heard);
      worker.off("exit", exited);
      resolve(outcome);
    };
    const heard = (m: unknown) => {
      if (typeof m === "object" && m !== null && "truncated" in m && (m.truncated as number) >= n) end("done");
    };
    const exited = () => end("gone");
    const timer = setTimeout(() => end("waiting"), timeoutMs);
    worker.on("message", heard);
    worker.once("exit", exited);
    worker.postMessage({ truncate: n });
  });
}
