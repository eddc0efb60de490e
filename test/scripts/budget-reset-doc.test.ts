import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ApiKey } from "../../scripts/lib/admin-client.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";
import { runManageKeys } from "./run-manage-keys.ts";

/**
 * docs/migrating-from-litellm.md, "A budget that resets": LiteLLM's max_budget with a
 * budget_duration, done as `manage-keys top-up --all --up-to`, from cron, once a period. The cron
 * line's command is run as the page prints it (against the shim's URL rather than a stack), so a
 * page whose command tops up the wrong amount, one the API refuses (a float with more than 6
 * decimals), a revoked key, or a key twice in a period fails here; so does a --period expression
 * the command refuses.
 */
const ROOT = join(import.meta.dirname, "..", "..");
const page = readFileSync(join(ROOT, "docs", "migrating-from-litellm.md"), "utf8");
const section = page.slice(page.indexOf("## A budget that resets"), page.indexOf("## Per-key limits"));
const cronLine = /```cron\n(5 [0-9*]+ 1 \* \* .*)\n```/.exec(section)![1]!;
/** The words bash makes of the cron line's manage-keys command (cron's `\%` made `%` first), as npm would pass them. */
const words = (command: string): string[] =>
  execFileSync("bash", ["-c", `set -- ${command.replaceAll("\\%", "%")}; printf '%s\\0' "$@"`], { encoding: "utf8" }).split("\0").slice(0, -1);
const command = words(/npm run --silent manage-keys -- (.*?) >>/.exec(cronLine)![1]!);
/** The page's --period expressions for a week and a day, evaluated as cron's shell would. */
const periods = [...section.matchAll(/`--period "(\$\(date -u \+[^"]*\))"`/g)].map((m) => words(`"${m[1]!}"`)[0]!);

describe("the migration page's budget reset", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startShim();
  });
  afterAll(() => h.close());

  /** The page's command at `now`, with --url for its --stack acme. */
  function run(now: Date, extra: string[] = []) {
    const at = command.indexOf("--stack");
    expect(command.slice(at, at + 2)).toEqual(["--stack", "acme"]);
    const argv = [...command.slice(0, at), "--url", h.url, ...command.slice(at + 2), ...extra];
    return runManageKeys(h, argv, { now: () => now, stdinIsTTY: false });
  }
  const balances = async () => Object.fromEntries((JSON.parse((await runManageKeys(h, ["list", "--url", h.url, "--json"])).out) as ApiKey[]).map((k) => [k.name, k.balance]));

  it("brings every live key back to its allowance exactly, leaves a key above it and a revoked one alone, and grants once a period", async () => {
    expect(command.slice(0, 1)).toEqual(["top-up"]);
    const spent = await h.createKey({ name: "spent", credits: 33.333333 }); // 50 − 33.333333 is 16.666666999999997 as floats: refused
    await h.createKey({ name: "empty", credits: 0 });
    await h.createKey({ name: "rich", credits: 80 });
    const revoked = await h.createKey({ name: "gone", credits: 1 });
    expect((await h.admin(`/admin/keys/${revoked.id}`, { method: "DELETE" })).status).toBe(200);

    const december = new Date("2026-12-01T00:05:00Z");
    const first = await run(december);
    expect(first.code, first.err).toBe(0);
    expect(first.out).toContain(`Added 16.666667 credits to spent (${spent.id}), up to its allowance of 50 for 2026-12`);
    expect(await balances()).toEqual({ spent: 50, empty: 50, rich: 80, gone: 1 });

    // Run again in the period, after a key spent (a write-off stands in for its requests): nothing
    // more this period, and the run succeeds.
    const debit = await h.admin(`/admin/keys/${spent.id}/debits`, { method: "POST", body: JSON.stringify({ amount: 5, note: "spent" }) });
    expect(debit.status).toBe(200);
    const again = await run(new Date("2026-12-15T00:05:00Z"));
    expect(again.code, again.err).toBe(0);
    expect(await balances()).toEqual({ spent: 45, empty: 50, rich: 80, gone: 1 });

    // The next period tops it up again.
    const january = await run(new Date("2027-01-01T00:05:00Z"));
    expect(january.code, january.err).toBe(0);
    expect(await balances()).toEqual({ spent: 50, empty: 50, rich: 80, gone: 1 });
  });

  it("the cron line runs at least once in the UTC month's first day whatever the host's time zone (UTC-12 to UTC+14)", () => {
    // cron reads minute and hour in the host's zone; the default period is the UTC month of the run.
    const [minute, hour, day] = cronLine.split(" ") as [string, string, string];
    expect(day).toBe("1");
    const hours = hour === "*" ? [...Array(24).keys()] : hour.split(",").map(Number);
    for (let offset = -12; offset <= 14; offset++) {
      // local 1st hh:mm is UTC hh:mm - offset: the same UTC month's 1st only if within [0, 24) h.
      const inUtcFirst = hours.some((h) => {
        const utc = h + Number(minute) / 60 - offset;
        return utc >= 0 && utc < 24;
      });
      expect(inUtcFirst, `UTC${offset >= 0 ? "+" : ""}${offset}`).toBe(true);
    }
  });

  it("the page's weekly and daily --period expressions are labels the command takes", async () => {
    expect(periods).toHaveLength(2);
    for (const period of periods) {
      expect(period).toMatch(/^\d{4}-(W\d{2}|\d{2}-\d{2})$/);
      const r = await run(new Date(), ["--period", period, "--json"]);
      expect(r.code, r.err).toBe(0);
      expect((JSON.parse(r.out) as { period: string }[]).every((k) => k.period === period)).toBe(true);
    }
  });
});
