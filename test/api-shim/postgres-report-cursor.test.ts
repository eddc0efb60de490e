import { describe, expect, it } from "vitest";
import { reportCursor } from "../../api-shim/src/store/postgres-report-cursor.ts";
import type { ReportReader } from "../../api-shim/src/store/report-reader.ts";
import type { UsageGroup } from "../../api-shim/src/store/store.ts";

const row = (keyId: string): UsageGroup => ({ keyId, group: "m", requests: 1, promptTokens: 1, completionTokens: 1, cost: 1 });

/** A cursor over `batches` (FETCH answers in turn), `rows` a full batch. */
function cursor(batches: UsageGroup[][], rows: number, signal: AbortSignal): ReportReader {
  let i = 0;
  return reportCursor({ fetch: async () => batches[i++] ?? [], rows, day: false, idleMs: 60_000, keepAlive: async () => {}, keepAliveMs: 30_000, signal });
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

/**
 * Found by mutation review: a keepAlive that fails (the session gone, its transaction aborted)
 * between batches: the reader's next batch must fail, so the body is cut. The failure reaches
 * the reader through ReportReader.step (report-reader.ts), which runs the cursor's keepAlive as a
 * batch under way: dropping `more = false` and `failure ??= e` from its catch passed every other
 * test, and the report then ended as if complete: a short report with its closing `]}`, which an
 * operator's billing script takes as whole.
 */
describe("a Postgres report's cursor whose keepAlive fails between batches", () => {
  it("fails its reader's next batch, never ends it as a complete report", async () => {
    let i = 0;
    const batches = [[row("a"), row("b")], [row("c"), row("d")], [row("e")]];
    const c = reportCursor({
      fetch: async () => batches[i++] ?? [], rows: 2, day: false, idleMs: 60_000,
      keepAlive: async () => { throw new Error("terminating connection due to idle-in-transaction timeout"); },
      keepAliveMs: 0, signal: new AbortController().signal,
    });
    const rest = c.batches(await c.first());
    const iterator = rest[Symbol.asyncIterator]();
    expect(await iterator.next()).toEqual({ done: false, value: batches[0] });
    rest.touch(); // its client took bytes: keepAlive runs, and fails
    await new Promise((r) => setTimeout(r, 10));
    await expect(iterator.next()).rejects.toThrow();
    await expect(c.done).rejects.toThrow(/idle-in-transaction/);
  });
});
