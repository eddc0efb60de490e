import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { PostgresStore } from "./postgres-store.ts";
import { SqliteStore, type SqliteStoreOptions } from "./sqlite-store.ts";
import type { Store } from "./store.ts";

/** `onFailure` is the SQLite store's (it fails closed); the Postgres store recovers by itself and never calls it. */
export type OpenStoreOptions = Pick<SqliteStoreOptions, "onFailure">;

/**
 * Opens the store named by SHIM_DATABASE_URL: `sqlite:<path>` (relative to the working
 * directory; missing directories are created), `sqlite::memory:`, or `postgres://…` /
 * `postgresql://…` (a libpq connection URL; several replicas may share it).
 */
export async function openStore(url: string, options: OpenStoreOptions = {}, cwd: string = process.cwd()): Promise<Store> {
  if (url.startsWith("postgres://") || url.startsWith("postgresql://")) return PostgresStore.open(url);
  if (!url.startsWith("sqlite:")) {
    throw new Error(`SHIM_DATABASE_URL: ${JSON.stringify(redactUrl(url))} is not valid; expected sqlite:<path>, sqlite::memory: or postgres://…`);
  }
  const target = url.slice("sqlite:".length).replace(/^\/\/(?=\/)/, "");
  if (target === "") throw new Error("SHIM_DATABASE_URL: sqlite: needs a path, e.g. sqlite:./data/shim.db");
  if (target === ":memory:") return new SqliteStore(":memory:", options);
  const file = resolve(cwd, target);
  mkdirSync(dirname(file), { recursive: true });
  return new SqliteStore(file, options);
}

/** The URL with any password replaced, for logs and error messages. */
export function redactUrl(url: string): string {
  return url.replace(/\/\/([^/@:]*):[^/@]*@/, "//$1:***@").replace(/([?&]password=)[^&]*/gi, "$1***");
}
