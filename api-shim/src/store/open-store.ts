import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { SqliteStore, type SqliteStoreOptions } from "./sqlite-store.ts";
import type { Store } from "./store.ts";

/**
 * Opens the store named by SHIM_DATABASE_URL: `sqlite:<path>` (relative to the working
 * directory; missing directories are created) or `sqlite::memory:`.
 */
export function openStore(url: string, options: Pick<SqliteStoreOptions, "onFailure"> = {}, cwd: string = process.cwd()): Store {
  if (url.startsWith("postgres://") || url.startsWith("postgresql://")) {
    throw new Error("SHIM_DATABASE_URL: postgres:// is not supported yet; use sqlite:<path> (the Store interface is ready for a Postgres implementation)");
  }
  if (!url.startsWith("sqlite:")) {
    throw new Error(`SHIM_DATABASE_URL: ${JSON.stringify(url)} is not valid; expected sqlite:<path> or sqlite::memory:`);
  }
  const target = url.slice("sqlite:".length).replace(/^\/\/(?=\/)/, "");
  if (target === "") throw new Error("SHIM_DATABASE_URL: sqlite: needs a path, e.g. sqlite:./data/shim.db");
  if (target === ":memory:") return new SqliteStore(":memory:", options);
  const file = resolve(cwd, target);
  mkdirSync(dirname(file), { recursive: true });
  return new SqliteStore(file, options);
}
