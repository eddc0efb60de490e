import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { main } from "../../scripts/manage-keys.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";
import { tempDir } from "../support/tools.ts";
import { FakePulumi } from "./fake-pulumi.ts";

/**
 * docs/migrating-from-litellm.md, "A budget that resets": LiteLLM's max_budget with a
 * budget_duration, done as a top-up of what each key lacks to reach its allowance, once a period.
 * The script's jq filter and its top-up are run as the page prints them (against the shim's URL
 * rather than a stack), so a page whose filter tops up the wrong amount, one the API refuses (a
 * float with more than 6 decimals), a revoked key, or a key twice in a period fails here.
 */
const ROOT = join(import.meta.dirname, "..", "..");
const page = readFileSync(join(ROOT, "docs", "migrating-from-litellm.md"), "utf8");
const script = /```bash\n(#!\/usr\/bin\/env bash\n# ~\/bin\/gpu-sandbox-budget-reset[\s\S]*?)```/.exec(page)![1]!;
/** The jq program the script puts `manage-keys list --json` through. */
const filter = /jq -r --argjson n "\$allowance" '([^']*)'/.exec(script)![1]!;
/** The top-up's --note and --idempotency-key, with the script's variables to fill in. */
const topUpLine = /--note "([^"]*)" --idempotency-key "([^"]*)"/.exec(script)!;

describe("the migration page's budget reset", () => {
  let h: Harness;
  const env = () => ({ GPU_SANDBOX_ADMIN_TOKEN: h.adminToken });
  beforeAll(async () => {
    h = await startShim();
  });
  afterAll(() => h.close());

  async function manageKeys(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
    const io = memoryIo();
    const code = await main([argv[0]!, "--url", h.url, ...argv.slice(1)], { io, env: env(), pulumi: new FakePulumi(), root: tempDir(), stdinIsTTY: false });
    return { code, out: io.stdout.join("\n"), err: io.stderr.join("\n") };
  }
  const balances = async () => Object.fromEntries(JSON.parse((await manageKeys("list", "--json")).out).map((k: { name: string; balance: number }) => [k.name, k.balance]));

  /** One run of the script for `period`: its filter over the key list, then a top-up per row. */
  async function reset(allowance: number, period: string): Promise<{ rows: string[]; failed: boolean }> {
    const list = await manageKeys("list", "--json");
    expect(list.code, list.err).toBe(0);
    const jq = spawnSync("jq", ["-r", "--argjson", "n", String(allowance), filter], { input: list.out, encoding: "utf8" });
    expect(jq.status, jq.stderr).toBe(0);
    const rows = jq.stdout.split("\n").filter((l) => l !== "");
    let failed = false;
    for (const row of rows) {
      const [id, amount] = row.split(" ");
      const fill = (s: string) => s.replaceAll("$period", period).replaceAll("$id", id!);
      const r = await manageKeys("top-up", "--key", id!, "--amount", amount!, "--note", fill(topUpLine[1]!), "--idempotency-key", fill(topUpLine[2]!));
      if (r.code !== 0) failed = true;
    }
    return { rows, failed };
  }

  it("brings every live key back to its allowance exactly, leaves a key above it and a revoked one alone, and grants once a period", async () => {
    await h.createKey({ name: "spent", credits: 33.333333 }); // 50 − 33.333333 is 16.666666999999997 as floats: refused
    await h.createKey({ name: "empty", credits: 0 });
    await h.createKey({ name: "rich", credits: 80 });
    const revoked = await h.createKey({ name: "gone", credits: 1 });
    expect((await h.admin(`/admin/keys/${revoked.id}`, { method: "DELETE" })).status).toBe(200);

    const first = await reset(50, "2026-12");
    expect(first.failed).toBe(false);
    expect(first.rows.map((r) => r.split(" ")[1])).toEqual(["16.666667", "50.000000"]);
    expect(await balances()).toEqual({ spent: 50, empty: 50, rich: 80, gone: 1 });

    // Run again in the period: every key is at its allowance or above, nothing to do.
    expect(await reset(50, "2026-12")).toEqual({ rows: [], failed: false });

    // A key that spent since (a write-off stands in for its requests) is not topped up again in the
    // same period: its Idempotency-Key was used with another amount, the 409 makes the run fail.
    const spent = JSON.parse((await manageKeys("list", "--json")).out).find((k: { name: string }) => k.name === "spent");
    const debit = await h.admin(`/admin/keys/${spent.id}/debits`, { method: "POST", body: JSON.stringify({ amount: 5, note: "spent" }) });
    expect(debit.status).toBe(200);
    const again = await reset(50, "2026-12");
    expect(again.failed).toBe(true);
    expect((await balances()).spent).toBe(45);

    // The next period tops it up again.
    expect((await reset(50, "2027-01")).failed).toBe(false);
    expect(await balances()).toEqual({ spent: 50, empty: 50, rich: 80, gone: 1 });
  });
});
