import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseCredits } from "../../api-shim/src/money/money.ts";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { main } from "../../scripts/report-usage.ts";
import { jumpingClock } from "../support/clocks.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";
import { tempDir } from "../support/tools.ts";
import { FakePulumi } from "./fake-pulumi.ts";

/**
 * docs/operations.md, "A month's invoice, reconciled with the ledger": the commands an operator
 * runs to put a month's credits granted and spent, and the balances at its bounds, beside the
 * month's usage report, run as the docs print them (against the shim's URL rather than a stack)
 * on a ledger with a month before, the month, and a month after, and every grant (creation,
 * top-up) with its note and Idempotency-Key through the docs' jq filter. A change of the ledger or of what a report counts that
 * leaves the docs wrong fails here.
 */
const ROOT = join(import.meta.dirname, "..", "..");
const doc = readFileSync(join(ROOT, "docs", "operations.md"), "utf8");
const section = doc.slice(doc.indexOf("#### A month's invoice, reconciled with the ledger"));
/** A command of the section's block, as report-usage's arguments after `--stack acme`, by the file it writes. */
const command = (file: string) => [...section.slice(0, section.indexOf("```\n\n")).matchAll(/npm run --silent report-usage -- --stack acme (.*?) > (\S+)\n/g)]
  .find((m) => m[2] === file)![1]!.split(" ");
/** The grants' command: report-usage's arguments, and the jq filter its JSON goes through. */
const grants = /npm run --silent report-usage -- --stack acme (.*?) \|\n\s+jq -r '([^']*)' > acme-2026-11-grants\.csv\n/.exec(section)!;

/** The CSV's lines as objects of its header's columns. */
function csvRecords(csv: string): Record<string, string>[] {
  const [header, ...lines] = csv.replace(/\r\n$/, "").split("\r\n");
  const names = header!.split(",");
  return lines.map((l) => Object.fromEntries(l.split(",").map((v, i) => [names[i], v])));
}

describe("the docs' month reconciliation", () => {
  const clock = jumpingClock(Date.UTC(2026, 9, 20, 12));
  let h: Harness;
  const chat = { model: "qwen2.5-7b", messages: [{ role: "user" as const, content: "hello there" }], max_tokens: 5 };
  beforeAll(async () => {
    h = await startShim({ clock, file: { pricing: { request: 1, models: { "qwen2.5-7b": { promptPer1k: 0.1, completionPer1k: 0.2 } } }, models: [{ name: "qwen2.5-7b" }, { name: "bge-m3" }] } });
  });
  afterAll(() => h.close());

  /** report-usage with the docs' arguments (those for `file`), against the harness's shim: its stdout. */
  async function run(file: string | string[]): Promise<string> {
    const io = memoryIo();
    const code = await main(["--url", h.url, ...(typeof file === "string" ? command(file) : file)], { io, env: { GPU_SANDBOX_ADMIN_TOKEN: h.adminToken }, pulumi: new FakePulumi(), root: tempDir(), now: () => new Date(clock.now()) });
    expect(code, io.stderr.join("\n")).toBe(0);
    expect(io.stderr).toEqual([]);
    return io.stdout.join("");
  }

  it("per key: opening + granted − cost = closing; cost is the month's usage CSV's, granted the month's grants and top-ups, closing the balance the month ended with", async () => {
    const alice = await h.createKey({ name: "alice", credits: 100 }); // October: before the month
    await h.client(alice.key).chat.completions.create(chat);
    const balance = async (id: string) => ((await (await h.admin("/admin/keys")).json()) as { data: { id: string; balance: number }[] }).data.find((k) => k.id === id)!.balance;
    const octoberEnd = await balance(alice.id);

    clock.jump(Date.UTC(2026, 10, 10, 12)); // November: the month invoiced
    const topUp = await h.admin(`/admin/keys/${alice.id}/credits`, { method: "POST", headers: { "content-type": "application/json", "idempotency-key": "INV-1042" }, body: JSON.stringify({ amount: 50, note: "invoice 1042" }) });
    expect(topUp.status).toBe(200);
    await h.client(alice.key).chat.completions.create(chat);
    await h.client(alice.key).chat.completions.create({ ...chat, stream: true }).then(async (s) => { for await (const _ of s); });
    const bob = await h.createKey({ name: "bob", credits: 30 });
    await h.client(bob.key).embeddings.create({ model: "qwen2.5-7b", input: "x" });
    // A note a spreadsheet would run as a formula (a customer's reference pasted in as it came).
    expect((await h.admin(`/admin/keys/${bob.id}/credits`, { method: "POST", body: JSON.stringify({ amount: 5, note: '=HYPERLINK("http://x","pay")' }) })).status).toBe(200);
    const novemberEnd = { alice: await balance(alice.id), bob: await balance(bob.id) };

    clock.jump(Date.UTC(2026, 11, 2, 12)); // December: after it
    await h.client(alice.key).chat.completions.create(chat);

    const usage = csvRecords(await run("acme-2026-11-usage.csv"));
    const cost = (id: string) => usage.filter((r) => r.key_id === id).reduce((s, r) => s + parseCredits(r.cost!)!, 0);
    const credits = csvRecords(await run("acme-2026-11-credits.csv"));
    const micro = (l: Record<string, string>) => ({ opening: parseCredits(l.opening!)!, granted: parseCredits(l.granted!)!, cost: parseCredits(l.cost!)!, closing: parseCredits(l.closing!)! });
    const a = micro(credits.find((l) => l.key_id === alice.id)!);
    const b = micro(credits.find((l) => l.key_id === bob.id)!);
    expect(credits.find((l) => l.key_id === alice.id)!.key_name).toBe("alice");
    expect(a).toEqual({ opening: parseCredits(octoberEnd), granted: 50_000_000, cost: cost(alice.id), closing: parseCredits(novemberEnd.alice) });
    expect(b).toEqual({ opening: 0, granted: 35_000_000, cost: cost(bob.id), closing: parseCredits(novemberEnd.bob) });
    for (const k of [a, b]) expect(k.opening + k.granted - k.cost).toBe(k.closing);
    expect(a.cost).toBeGreaterThan(2_000_000); // two requests at 1 credit and their tokens

    // Every grant of the month with its note and Idempotency-Key: the docs' report through their
    // jq filter, a header and a CSV line each, oldest first, the formula defused as the shim's CSVs
    // defuse one; alice's credits at creation are October's, bob's November's, with no note nor key.
    const json = await run(grants[1]!.split(" "));
    const jq = spawnSync("jq", ["-r", grants[2]!], { input: json, encoding: "utf8" });
    expect(jq.status, jq.stderr).toBe(0);
    const [header, aliceLine, bobCreation, bobTopUp, ...rest] = jq.stdout.split("\n");
    const at = "2026-11-10T12:00:\\d\\d\\.\\d{3}Z";
    expect(header).toBe('"key_id","kind","at","amount","note","idempotency_key"');
    expect(aliceLine).toMatch(new RegExp(`^"${alice.id}","top_up","${at}",50,"invoice 1042","INV-1042"$`));
    expect(bobCreation).toMatch(new RegExp(`^"${bob.id}","creation","${at}",30,"",""$`));
    expect(bobTopUp).toMatch(new RegExp(`^"${bob.id}","top_up","${at}",5,"'=HYPERLINK\\(""http://x"",""pay""\\)",""$`));
    expect(rest).toEqual([""]);
    // Per key, its lines sum to the credits file's `granted`.
    const listed = (id: string) => [aliceLine, bobCreation, bobTopUp].filter((l) => l!.startsWith(`"${id}"`)).reduce((s, l) => s + parseCredits(l!.split(",")[3]!)!, 0);
    expect([listed(alice.id), listed(bob.id)]).toEqual([a.granted, b.granted]);
  });
});
