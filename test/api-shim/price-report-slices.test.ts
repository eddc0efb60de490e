import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { SqliteStore } from "../../api-shim/src/store/sqlite-store.ts";
import { SLICE_ROWS, usageReport } from "../../api-shim/src/store/sqlite-usage-report.ts";

/**
 * The SQLite store reads a long period's report in slices of SLICE_ROWS rows (sqlite-reports.test.ts
 * checks the model and day groupings). By model and price, a line's batch requests and cached
 * tokens are added up across slices too: a month past 65,536 requests showed an auditor only the
 * first slice's, and the line's cost no longer recomputed from its counts.
 */
describe("a report by model and price read in slices", () => {
  it("has each line's batch requests and cached tokens for the whole period, as one aggregate says", async () => {
    const dir = mkdtempSync(join(tmpdir(), "shim-price-slices-"));
    const file = join(dir, "shim.db");
    try {
      const store = new SqliteStore(file); // adds the price columns and table
      await store.createKey({ id: "ka", name: "ka", hash: "ka", tier: "free", models: null, expiresAt: null, credits: 1e12, at: 0 });
      await store.close();
      const db = new Database(file);
      db.prepare("INSERT INTO prices (id, request, batch_request, prompt_per_1k, cached_prompt_per_1k, completion_per_1k, first_seen) VALUES ('p1', 1000, 500, 10, 5, 20, 0), ('p2', 2000, 500, 10, 5, 20, 1)").run();
      const insert = db.prepare("INSERT INTO ledger (key_id, at, amount, kind, ref, route, model, status, prompt_tokens, completion_tokens, stream, ms, served, price_id, batch, cached_tokens) VALUES ('ka', ?, ?, 'usage', ?, 'chat', 'm0', 200, ?, ?, 0, 10, 1, ?, ?, ?)");
      db.transaction(() => {
        // Both prices in every slice; a third of the requests batch, most prompts partly cached.
        for (let i = 0; i < 2 * SLICE_ROWS + 10; i++) insert.run(Math.floor(i / 10), -((i % 7) + 1), `r${i}`, 8, 3, i % 2 ? "p1" : "p2", i % 3 === 0 ? 1 : 0, i % 5);
      })();
      const whole = db.prepare(`SELECT price_id AS priceId, count(*) AS requests, sum(batch) AS batchRequests, sum(cached_tokens) AS cachedTokens, -sum(amount) AS cost
        FROM ledger WHERE kind = 'usage' GROUP BY price_id ORDER BY price_id`).all();
      const sliced = usageReport(db, { keyId: null, from: 0, to: 86_400_000, group: "model,price" });
      expect(sliced.map(({ priceId, requests, batchRequests, cachedTokens, cost }) => ({ priceId, requests, batchRequests, cachedTokens, cost }))).toEqual(whole);
      expect(sliced[0]!.batchRequests).toBeGreaterThan(SLICE_ROWS / 3); // more than one slice's
      db.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
