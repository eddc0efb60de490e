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
/** Model names with a double quote: one CSV cell each, the quote doubled (RFC 4180). */
const QUOTED = ['say "hi", then', 'quote"only'];

/** RFC 4180 fields of one CSV line (no line breaks inside cells here). */
function fields(line: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i <= line.length) {
    if (line[i] === '"') {
      let v = "";
      i++;
      for (;;) {
        if (line[i] === '"' && line[i + 1] === '"') { v += '"'; i += 2; }
        else if (line[i] === '"') { i++; break; }
        else if (i >= line.length) throw new Error(`unterminated quoted cell in ${line}`);
        else v += line[i++];
      }
      if (i < line.length && line[i] !== ",") throw new Error(`text after a quoted cell in ${line}`);
      out.push(v);
      i++;
    } else {
      const end = line.indexOf(",", i);
      const stop = end === -1 ? line.length : end;
      const v = line.slice(i, stop);
      if (v.includes('"')) throw new Error(`a bare quote in an unquoted cell in ${line}`);
      out.push(v);
      i = stop + 1;
    }
  }
  return out;
}


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
    const insert = db.prepare("INSERT INTO ledger (key_id, at, amount, kind, ref, route, model, status, prompt_tokens, completion_tokens, stream, ms) VALUES (?, ?, -1300, 'usage', ?, 'chat', ?, 200, 7, 3, 0, 10)");
    FORMULAS.forEach((model, i) => insert.run("kformula0000", Date.now() - 1000, `formula-${i}`, model));
    QUOTED.forEach((model, i) => insert.run("kquote000000", Date.now() - 1000, `quote-${i}`, model));
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
    expect(report.data.length).toBe(ROWS + FORMULAS.length + QUOTED.length);
    expect(new Set(report.data.map((r) => `${r.key_id} ${JSON.stringify(r)}`)).size).toBe(ROWS + FORMULAS.length + QUOTED.length);
    expect(report.data.every((r) => r.total_tokens === 10)).toBe(true);
  });

  it("as CSV writes a model name starting =, +, - or @ as text, never as a formula", async () => {
    const lines = (await (await fetch(`${url}?format=csv`)).text()).split("\r\n");
    expect(lines.length).toBe(1 + ROWS + FORMULAS.length + QUOTED.length + 1); // the header, the rows, the final CRLF
    const cells = lines.filter((l) => l.startsWith("kformula0000,")).map((l) => l.split(",")[1]);
    expect(cells.sort()).toEqual(["'+1+1", "'-1+1", "'=1+1", `"'@SUM(1`].sort());
    // The quoted cell (its comma) whole: "'@SUM(1,1)".
    expect(lines.some((l) => l.startsWith(`kformula0000,"'@SUM(1,1)",`))).toBe(true);
    // Each row's counts: 7 prompt and 3 completion tokens are 10 in all (found by mutation review).
    expect(lines.find((l) => l.startsWith("kformula0000,'=1+1,"))).toBe("kformula0000,'=1+1,1,7,3,10,0.0013");
  });

  it("as CSV is sent as a file a browser saves as usage.csv (docs/api-shim/admin-reports.md, GET /admin/usage)", async () => {
    const res = await fetch(`${url}?format=csv`);
    await res.text();
    expect(res.headers.get("content-type")).toBe("text/csv; charset=utf-8");
    expect(res.headers.get("content-disposition")).toBe('attachment; filename="usage.csv"');
  });

  it("as CSV writes a model name with a double quote in one cell, read back whole, every figure under its header", async () => {
    const lines = (await (await fetch(`${url}?format=csv`)).text()).split("\r\n");
    const header = fields(lines[0]!);
    const rows = lines.filter((l) => l.startsWith("kquote000000,")).map(fields);
    expect(rows.map((r) => r[1]).sort()).toEqual([...QUOTED].sort());
    for (const r of rows) {
      expect(r.length).toBe(header.length);
      expect(Object.fromEntries(header.map((h, i) => [h, r[i]]))).toMatchObject({ requests: "1", prompt_tokens: "7", completion_tokens: "3", total_tokens: "10", cost: "0.0013" });
    }
    // The JSON report names the same models.
    const json = (await (await fetch(url)).json()) as { data: { key_id: string; model: string }[] };
    expect(json.data.filter((r) => r.key_id === "kquote000000").map((r) => r.model).sort()).toEqual([...QUOTED].sort());
  });
});
