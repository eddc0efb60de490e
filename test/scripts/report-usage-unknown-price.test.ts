import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { main } from "../../scripts/report-usage.ts";
import { clockFrom } from "../support/clocks.ts";
import { type Harness, startShim } from "../support/shim-harness.ts";
import { tempDir } from "../support/tools.ts";
import { FakePulumi } from "./fake-pulumi.ts";

/**
 * report-usage --group model,price on a ledger with rows from before prices were recorded (a shim
 * older than the price record, or one rolled back to): those rows are a line of their own whose
 * price the table says is unknown, never a blank or a guess (docs/api-shim/usage-reports.md).
 */
const FILE = { pricing: { models: { "qwen2.5-7b": { promptPer1k: 0.5, completionPer1k: 1 } } }, models: [{ name: "qwen2.5-7b" }] };
const clock = clockFrom(Date.UTC(2026, 2, 15, 12));

let h: Harness;
beforeAll(async () => {
  h = await startShim({ clock, file: FILE });
  const { id, key } = await h.createKey({ name: "audited", credits: 100 });
  await h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "priced" }], max_tokens: 5 });
  // A row as a shim before the price record wrote it: no price_id, batch or cached_tokens.
  const db = new Database(h.dbPath);
  db.prepare("INSERT INTO ledger (key_id, at, amount, kind, ref, route, model, status, prompt_tokens, completion_tokens, stream, ms, served) VALUES (?, ?, -1234, 'usage', 'older-shim', 'chat', 'qwen2.5-7b', 200, 10, 5, 0, 1, 1)")
    .run(id, Date.UTC(2026, 2, 2));
  db.close();
});
afterAll(() => h.close());

async function report(argv: string[]) {
  const io = memoryIo();
  const code = await main(["--url", h.url, ...argv], { io, env: { GPU_SANDBOX_ADMIN_TOKEN: h.adminToken }, pulumi: new FakePulumi(), root: tempDir(), now: () => new Date(clock.now()) });
  return { code, out: io.stdout.join("\n"), err: io.stderr.join("\n") };
}

describe("report-usage --group model,price with rows from before prices were recorded", () => {
  it("the table names their price unknown, on a line of their own beside the priced one", async () => {
    const r = await report(["--group", "model,price"]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain("unknown (before prices were recorded)");
    expect(r.out).toMatch(/[0-9a-f]{16}: request 1, batch 2, prompt 0\.5, cached 0\.5, completion 1 \/1k/);
  });
});
