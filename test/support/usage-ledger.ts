import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { SqliteStore } from "../../api-shim/src/store/sqlite-store.ts";

/**
 * A SQLite store's file in a directory of its own whose usage report by model has `groups` rows:
 * one served request each of that many keys (their key rows left out), a second ago.
 */
export async function sqliteLedgerOfGroups(groups: number, prefix = "shim-report-"): Promise<{ dir: string; file: string }> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const file = join(dir, "shim.db");
  await new SqliteStore(file).close(); // the schema
  const db = new Database(file);
  db.pragma("foreign_keys = OFF");
  const insert = db.prepare("INSERT INTO ledger (key_id, at, amount, kind, ref, route, model, status, prompt_tokens, completion_tokens, stream, ms) VALUES (?, ?, -1300, 'usage', ?, 'chat', 'qwen2.5-7b', 200, 7, 3, 0, 10)");
  db.transaction(() => {
    for (let i = 0; i < groups; i++) insert.run(`k${String(i).padStart(11, "0")}`, Date.now() - 1000, `req-${i}`);
  })();
  db.close();
  return { dir, file };
}
