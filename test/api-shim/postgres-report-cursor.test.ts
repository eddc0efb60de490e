import { describe, expect, it } from "vitest";
import { ReportCursor } from "../../api-shim/src/store/postgres-report-cursor.ts";
import type { UsageGroup } from "../../api-shim/src/store/store.ts";

const row = (keyId: string): UsageGroup => ({ keyId, group: "m", requests: 1, promptTokens: 1, completionTokens: 1, cost: 1 });

/** A cursor over `batches` (FETCH answers in turn), `rows` a full batch. */
function cursor(batches: UsageGroup[][], rows: number, signal: AbortSignal): ReportCursor {
  let i = 0;
  return new ReportCursor({ fetch: async () => batches[i++] ?? [], rows, day: false, idleMs: 60_000, keepAlive: async () => {}, keepAliveMs: 30_000, signal });
}

describe("a Postgres report's cursor, given up by its asker", () => {
  it("after its last batch was taken: the report ends whole, as SQLite's does (found by review: it was cut, its closing never written)", async () => {
    const asker = new AbortController();
    const c = cursor([[row("a")]], 2, asker.signal);
    const iterator = c.batches(await c.first())[Symbol.asyncIterator]();
    expect(await iterator.next()).toEqual({ done: false, value: [row("a")] });
    asker.abort(new Error("the store is closing"));
    expect(await iterator.next()).toEqual({ done: true, value: undefined });
    await c.done;
  });

  it("with rows still to come: a failure, never a short complete body", async () => {
    const asker = new AbortController();
    const c = cursor([[row("a"), row("b")], [row("c")]], 2, asker.signal);
    const iterator = c.batches(await c.first())[Symbol.asyncIterator]();
    await iterator.next();
    asker.abort(new Error("the store is closing"));
    await expect(iterator.next()).rejects.toThrow();
    await c.done;
  });
});
