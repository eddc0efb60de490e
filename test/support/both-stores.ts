import { afterAll, beforeAll, describe, it } from "vitest";
import { PostgresStore } from "../../api-shim/src/store/postgres-store.ts";
import type { Store } from "../../api-shim/src/store/store.ts";
import { type RunningPostgres, startPostgres } from "./postgres.ts";

/**
 * One scenario run on both stores, a test each: on the harness's SQLite store (`wrapStore`
 * undefined), titled `sqliteTitle`, and on a Postgres store of a new database ("Postgres store >
 * the same"), which the scenario passes to startShim as its `wrapStore`.
 */
export function onBothStores(sqliteTitle: string, scenario: (wrapStore?: () => Store) => Promise<void>, timeoutMs?: number): void {
  it(sqliteTitle, () => scenario(), timeoutMs);
  describe("Postgres store", () => {
    let server: RunningPostgres;
    const open: PostgresStore[] = [];
    beforeAll(async () => { server = await startPostgres(); }, 60_000);
    afterAll(async () => {
      for (const s of open) await s.close();
      await server?.stop();
    });
    it("the same", async () => {
      const store = await PostgresStore.open(await server.newDatabase());
      open.push(store);
      await scenario(() => store);
    }, 60_000);
  });
}
