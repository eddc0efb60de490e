// Found by review: on SQLite a report's last batch, once in the shim's hands, still held the one
// report worker's turn until /admin/usage's body asked past it, i.e. until its client had taken
// almost all of it (or the reader's bound passed), though the worker holds nothing for it by then
// (sqlite-report-worker.ts clears `held` with the last batch): every other key's /v1/usage waited.
import { rmSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import Fastify, { type FastifyInstance } from "fastify";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { ShimContext } from "../../api-shim/src/context.ts";
import { sendUsageBody } from "../../api-shim/src/routes/usage-body.ts";
import { SqliteReports } from "../../api-shim/src/store/sqlite-reports.ts";
import type { UsageQuery } from "../../api-shim/src/store/store.ts";
import { firstAndRest, usageBatches } from "../../api-shim/src/store/usage-batches.ts";
import { sqliteLedgerOfGroups } from "../support/usage-ledger.ts";

// The reader's bound the regression waited for: far past a stalled machine's seconds, within the test's timeout.
const IDLE_MS = 20_000;
const ROWS = 8000; // one batch (REPORT_BATCH_ROWS is 10,000): ~1 MB of JSON

describe("a one-batch SQLite /admin/usage report read by a slow client", () => {
  let dir: string;
  let file: string;
  let reports: SqliteReports;
  let app: FastifyInstance;
  let path: string;
  const clients: Socket[] = [];
  const all = { keyId: null, asker: null, from: 0, to: Date.now() + 86_400_000, group: "model" } as const satisfies UsageQuery;
  const nobody = { ...all, keyId: "nobody000000", asker: "nobody000000" } as const satisfies UsageQuery;

  beforeAll(async () => {
    ({ dir, file } = await sqliteLedgerOfGroups(ROWS, "last-batch-turn-"));
    reports = new SqliteReports(file, { busyTimeoutMs: 1000, timeoutMs: IDLE_MS });
    app = Fastify();
    app.get("/report", async (request, reply) => {
      const left = new AbortController();
      reply.raw.once("close", () => reply.raw.writableFinished || left.abort(new Error("the client left")));
      const rows = await reports.batches({ ...all, signal: left.signal }, async () => {}).then(firstAndRest);
      return sendUsageBody({} as ShimContext, request, reply, usageBatches(rows), "json", "model", { object: "usage_report" });
    });
    path = join(dir, "report.sock");
    await app.listen({ path });
  });
  afterEach(() => {
    for (const s of clients.splice(0)) s.destroy();
  });
  afterAll(async () => {
    await app?.close();
    reports?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** GET /report, taking `first` bytes, then none: the connection stays open. */
  const stallAfter = (first: number) => new Promise<void>((resolve) => {
    let received = 0;
    const s = connect(path, () => s.write("GET /report HTTP/1.1\r\nHost: x\r\n\r\n"));
    clients.push(s);
    s.on("data", (chunk: Buffer) => {
      received += chunk.length;
      if (received >= first) {
        s.pause();
        resolve();
      }
    });
    s.on("error", () => {});
  });

  it("does not hold every other key's report once its rows are all in the shim's hands", { timeout: 45_000 }, async () => {
    await stallAfter(50_000); // the only batch is in hand: the worker holds no row of this report
    const started = performance.now();
    expect(await reports.run(nobody, async () => {})).toEqual([]); // a key's /v1/usage
    const waited = performance.now() - started;
    // It waited for the reader's bound (IDLE_MS, 60 s in the store), as if rows were held. Timed
    // alone (the stalled client's first bytes are not in it), with room for a stalled machine.
    expect(waited).toBeLessThan(IDLE_MS / 2);
  });
});
