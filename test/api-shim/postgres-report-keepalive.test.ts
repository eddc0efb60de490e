import { describe, expect, it } from "vitest";
import { ReportCursor } from "../../api-shim/src/store/postgres-report-cursor.ts";
import type { UsageGroup } from "../../api-shim/src/store/store.ts";

const row = (keyId: string): UsageGroup => ({ keyId, group: "m", requests: 1, promptTokens: 1, completionTokens: 1, cost: 1 });

/**
 * Found by mutation review: a keepAlive that fails (the session gone, its transaction aborted) between
 * batches: the reader's next batch must fail, so the body is cut. Dropping `more = false` and
 * `failure ??= e` from its handler passed every test, and the report then ended as if complete:
 * a short report with its closing `]}`, which an operator's billing script takes as whole.
 */
describe("a Postgres report's cursor whose keepAlive fails between batches", () => {
  it("fails its reader's next batch, never ends it as a complete report", async () => {
    let i = 0;
    const batches = [[row("a"), row("b")], [row("c"), row("d")], [row("e")]];
    const c = new ReportCursor({
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
