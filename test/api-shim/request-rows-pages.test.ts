import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PostgresStore } from "../../api-shim/src/store/postgres-store.ts";
import type { RequestRow } from "../../api-shim/src/store/request-rows.ts";
import { SqliteStore } from "../../api-shim/src/store/sqlite-store.ts";
import type { Store } from "../../api-shim/src/store/store.ts";
import { REPORT_BATCH_ROWS, usageBatches } from "../../api-shim/src/store/usage-batches.ts";
import { type RunningPostgres, startPostgres } from "../support/postgres.ts";

/**
 * A key's requests over more rows than a batch (store.requests, as GET /admin/requests reads them):
 * every row of the key in the period once, none of another key's or outside it, oldest first, and
 * in more than one batch (never the whole month at once). Many rows share a millisecond, so a
 * page that started after the last row's time alone, not its (time, id), would skip or repeat
 * them. The SQLite store's on a database file (its pages run on the report worker).
 */
const FROM = Date.UTC(2026, 10, 1);
const TO = Date.UTC(2026, 11, 1);
const ROWS = Math.floor(REPORT_BATCH_ROWS * 2.5);
const KEY = "aaaaaaaaaaaa";
const OTHER = "bbbbbbbbbbbb";

/** Row i of a key: its time (three rows a millisecond), request id and tokens. */
const rowOf = (i: number) => ({ at: FROM + 1000 + Math.floor(i / 3), ref: `req-${i}`, tokens: i % 1000 });

async function keys(store: Store): Promise<void> {
  for (const id of [KEY, OTHER]) await store.createKey({ id, name: id, hash: `hash-${id}`, tier: "enterprise", models: null, expiresAt: null, credits: 0, at: FROM - 1000 });
}

async function readAll(store: Store): Promise<{ rows: RequestRow[]; batches: number }> {
  const batches = usageBatches(await store.requests({ requestId: null, keyId: KEY, from: FROM, to: TO, asker: null }));
  const rows: RequestRow[] = [];
  let n = 0;
  for await (const batch of batches) {
    n++;
    rows.push(...batch);
  }
  return { rows, batches: n };
}

function expectEveryRowOnce(rows: RequestRow[]): void {
  expect(rows).toHaveLength(ROWS);
  rows.forEach((r, i) => {
    const want = rowOf(i);
    expect([r.requestId, r.keyId, Number(r.at), r.promptTokens]).toEqual([want.ref, KEY, want.at, want.tokens]);
  });
}

describe("a key's requests over several batches", () => {
  it("SQLite store (report worker): every row once, oldest first, in pages", async () => {
    const file = join(mkdtempSync(join(tmpdir(), "request-pages-")), "shim.db");
    const setup = new SqliteStore(file, { busyTimeoutMs: 5000 });
    await keys(setup);
    await setup.close();
    const db = new Database(file);
    const insert = db.prepare(`INSERT INTO ledger (key_id, at, amount, kind, ref, route, model, status, prompt_tokens, completion_tokens, stream, ms, served, price_id, batch, cached_tokens)
      VALUES (?, ?, -10, 'usage', ?, 'chat', 'm', 200, ?, 1, 0, 5, 1, NULL, 0, 0)`);
    db.transaction(() => {
      insert.run(KEY, FROM - 1, "before", 1); // outside the period, at each end
      insert.run(KEY, TO, "after", 1);
      for (let i = 0; i < ROWS; i++) {
        const r = rowOf(i);
        insert.run(KEY, r.at, r.ref, r.tokens);
        if (i % 7 === 0) insert.run(OTHER, r.at, `other-${i}`, 1);
      }
    })();
    db.close();
    const store = new SqliteStore(file, { busyTimeoutMs: 5000 });
    try {
      const { rows, batches } = await readAll(store);
      expectEveryRowOnce(rows);
      expect(batches).toBe(3);
    } finally {
      await store.close();
    }
  }, 60_000);

  describe("Postgres store", () => {
    let server: RunningPostgres;
    beforeAll(async () => { server = await startPostgres(); }, 60_000);
    afterAll(async () => { await server?.stop(); });
    it("the same, through its cursor", async () => {
      const url = await server.newDatabase();
      const store = await PostgresStore.open(url);
      const c = new pg.Client({ connectionString: url });
      try {
        await keys(store);
        await c.connect();
        const columns = "key_id, at, amount, kind, ref, route, model, status, prompt_tokens, completion_tokens, stream, ms, served, batch, cached_tokens";
        const values = "-10, 'usage', $REF, 'chat', 'm', 200, $TOKENS, 1, false, 5, true, false, 0";
        await c.query(`INSERT INTO ledger (${columns}) VALUES ('${KEY}', ${FROM - 1}, ${values.replace("$REF", "'before'").replace("$TOKENS", "1")}), ('${KEY}', ${TO}, ${values.replace("$REF", "'after'").replace("$TOKENS", "1")})`);
        await c.query(`INSERT INTO ledger (${columns}) SELECT k, ${FROM + 1000} + i / 3, ${values.replace("$REF", `CASE WHEN k = '${KEY}' THEN 'req-' || i ELSE 'other-' || i END`).replace("$TOKENS", "i % 1000")}
          FROM generate_series(0, ${ROWS - 1}) i, unnest(ARRAY['${KEY}', '${OTHER}']) k WHERE k = '${KEY}' OR i % 7 = 0 ORDER BY i, k`);
        const { rows, batches } = await readAll(store);
        expectEveryRowOnce(rows);
        expect(batches).toBe(3);
      } finally {
        await c.end();
        await store.close();
      }
    }, 60_000);
  });
});
