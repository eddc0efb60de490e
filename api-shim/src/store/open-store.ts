import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { parseDatabaseUrl } from "./database-url.ts";
import { PostgresStore } from "./postgres-store.ts";
import { SqliteStore, type SqliteStoreOptions } from "./sqlite-store.ts";
import type { Store } from "./store.ts";

/** `onFailure` is the SQLite store's (it fails closed); the Postgres store recovers by itself and never calls it. */
export type OpenStoreOptions = Pick<SqliteStoreOptions, "onFailure">;

/** Opens the store SHIM_DATABASE_URL names (see parseDatabaseUrl); missing directories of a SQLite file are created. */
export async function openStore(url: string, options: OpenStoreOptions = {}, cwd: string = process.cwd()): Promise<Store> {
  const target = parseDatabaseUrl(url);
  if (target.kind === "postgres") return PostgresStore.open(target.url);
  if (target.path === ":memory:") return new SqliteStore(":memory:", options);
  const file = resolve(cwd, target.path);
  mkdirSync(dirname(file), { recursive: true });
  return new SqliteStore(file, options);
}
