import Database from "better-sqlite3";
import { MIGRATIONS } from "../../api-shim/src/store/sqlite-migrations.ts";

/** A SQLite ledger as a shim of 2026-11-22 left it: schema 3 (migrations 1 to 3, from this checkout's SQL), with the rows `sql` inserts. */
export function schema3Ledger(file: string, sql = ""): void {
  const db = new Database(file);
  for (const m of MIGRATIONS.slice(0, 3)) {
    if (typeof m === "string") db.exec(m);
    else m(db);
  }
  db.pragma("user_version = 3");
  db.exec(sql);
  db.close();
}
