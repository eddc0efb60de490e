import { rmSync } from "node:fs";
import type { AddressInfo } from "node:net";
import Database from "better-sqlite3";
import Fastify, { type FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ShimContext } from "../../api-shim/src/context.ts";
import { sendUsageBody } from "../../api-shim/src/routes/usage-body.ts";
import { SqliteReports } from "../../api-shim/src/store/sqlite-reports.ts";
import type { UsageQuery } from "../../api-shim/src/store/store.ts";
import { firstAndRest, usageBatches } from "../../api-shim/src/store/usage-batches.ts";
import { sqliteLedgerOfGroups } from "../support/usage-ledger.ts";

/**
 * Found by mutation review: /admin/usage's body as the operator's tools read it: a report of more rows
 * than one piece (5,000) is one JSON document (the slow-reader tests count rows but never parse
 * it: dropping the commas between pieces passed them), and a model name that a spreadsheet would
 * run as a formula is written as text in the CSV, whichever of =, +, -, @ it starts with.
 */
const ROWS = 12_000;
/** Model names as a client may send them to a shim with no model list; each is one more group. */
const FORMULAS = ["=1+1", "+1+1", "-1+1", "@SUM(1,1)"];

describe("an /admin/usage body of several pieces (SQLite)", () => {
  let dir: string;
  let file: string;
  let reports: SqliteReports;
  let app: FastifyInstance;
  let url: string;
  const all = { keyId: null, asker: null, from: 0, to: Date.now() + 86_400_000, group: "model" } as const satisfies UsageQuery;

  beforeAll(async () => {
    ({ dir, file } = await sqliteLedgerOfGroups(ROWS, "usage-body-format-"));
    const db = new Database(file);
    db.pragma("foreign_keys = OFF");
    const insert = db.prepare("INSERT INTO ledger (key_id, at, amount, kind, ref, route, model, status, prompt_tokens, completion_tokens, stream, ms) VALUES ('kformula0000', ?, -1300, 'usage', ?, 'chat', ?, 200, 7, 3, 0, 10)");
    FORMULAS.forEach((model, i) => insert.run(Date.now() - 1000, `formula-${i}`, model));
    db.close();
    reports = new SqliteReports(file, { busyTimeoutMs: 1000, timeoutMs: 10_000 });
    app = Fastify();
    app.get("/report", async (request, reply) => {
      const format = (request.query as { format?: string }).format === "csv" ? "csv" : "json";
      const left = new AbortController();
      reply.raw.once("close", () => reply.raw.writableFinished || left.abort(new Error("the client left")));
      return sendUsageBody({} as ShimContext, request, reply, usageBatches(await reports.batches({ ...all, signal: left.signal }, async () => {}).then(firstAndRest)), format, "model", { object: "usage_report" });
    });
    await app.listen({ port: 0, host: "127.0.0.1" });
    url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}/report`;
  });
  afterAll(async () => {
    await app?.close();
    reports?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("as JSON is one document with every row", async () => {
    const text = await (await fetch(url)).text();
    const report = JSON.parse(text) as { object: string; data: { key_id: string; total_tokens: number }[] };
    expect(report.object).toBe("usage_report");
    expect(report.data.length).toBe(ROWS + FORMULAS.length);
    expect(new Set(report.data.map((r) => `${r.key_id} ${JSON.stringify(r)}`)).size).toBe(ROWS + FORMULAS.length);
    expect(report.data.every((r) => r.total_tokens === 10)).toBe(true);
  });

  it("as CSV writes a model name starting =, +, - or @ as text, never as a formula", async () => {
    const lines = (await (await fetch(`${url}?format=csv`)).text()).split("\r\n");
    expect(lines.length).toBe(1 + ROWS + FORMULAS.length + 1); // the header, the rows, the final CRLF
    const cells = lines.filter((l) => l.startsWith("kformula0000,")).map((l) => l.split(",")[1]);
    expect(cells.sort()).toEqual(["'+1+1", "'-1+1", "'=1+1", `"'@SUM(1`].sort());
    // The quoted cell (its comma) whole: "'@SUM(1,1)".
    expect(lines.some((l) => l.startsWith(`kformula0000,"'@SUM(1,1)",`))).toBe(true);
    // Each row's counts: 7 prompt and 3 completion tokens are 10 in all (found by mutation review).
    expect(lines.find((l) => l.startsWith("kformula0000,'=1+1,"))).toBe("kformula0000,'=1+1,1,7,3,10,0.0013");
  });
});
