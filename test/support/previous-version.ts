import { execFileSync } from "node:child_process";
import { realpathSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type * as PostgresStoreModule from "../../api-shim/src/store/postgres-store.ts";
import type * as SqliteStoreModule from "../../api-shim/src/store/sqlite-store.ts";
import { tempDir } from "./tools.ts";

/** The last version before the ledger's `served` column (cf99981): what an old replica, or a rollback, runs. */
export const PREVIOUS_VERSION = "f5e91fe";

const repo = fileURLToPath(new URL("../..", import.meta.url));

/**
 * The store classes of PREVIOUS_VERSION, taken from the repository's history into a temporary
 * directory (with this checkout's dependencies), so an upgrade test makes its database with the
 * code that really made it, and a rollback test opens the upgraded one with it. Tests only.
 */
export function previousStores(): Promise<PreviousStores> {
  // Taken once per test file: each call would extract and import the old sources again.
  return (loaded ??= load());
}

type PreviousStores = { SqliteStore: typeof SqliteStoreModule.SqliteStore; PostgresStore: typeof PostgresStoreModule.PostgresStore };
let loaded: Promise<PreviousStores> | undefined;

async function load(): Promise<PreviousStores> {
  const dir = tempDir("gpu-sandbox-previous-");
  let archive: Buffer;
  try {
    archive = execFileSync("git", ["archive", PREVIOUS_VERSION, "api-shim/src"], { cwd: repo, maxBuffer: 64 * 1024 * 1024, stdio: ["ignore", "pipe", "pipe"] });
  } catch (e) {
    throw new Error(`the upgrade tests need commit ${PREVIOUS_VERSION} in this clone's history (a shallow clone lacks it: git fetch --unshallow): ${(e as Error).message}`);
  }
  execFileSync("tar", ["-x", "-C", dir], { input: archive });
  symlinkSync(realpathSync(join(repo, "node_modules")), join(dir, "node_modules"));
  const sqlite = (await import(join(dir, "api-shim/src/store/sqlite-store.ts"))) as typeof SqliteStoreModule;
  const postgres = (await import(join(dir, "api-shim/src/store/postgres-store.ts"))) as typeof PostgresStoreModule;
  return { SqliteStore: sqlite.SqliteStore, PostgresStore: postgres.PostgresStore };
}
