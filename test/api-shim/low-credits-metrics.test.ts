import { spawnSync } from "node:child_process";
import { afterEach, describe, expect, it } from "vitest";
import { alertRule } from "../support/alert-rules.ts";
import { type Harness, overrideStore, startShim } from "../support/shim-harness.ts";
import { pollUntil } from "../support/tools.ts";

/**
 * The low-credit gauges (observability/low-credits.ts) an operator alerts on before a customer's
 * key runs out (GpuSandboxKeysLowOnCredits): read off the request path, at most once per
 * SHIM_LOW_CREDITS_INTERVAL_MS whatever the scrapes, and by fleet-status.sh's rule.
 */
const chat = { model: "qwen2.5-7b", messages: [{ role: "user" as const, content: "hi" }], max_tokens: 3 };
const scrape = async (h: Harness) => (await fetch(`${h.url}/metrics`)).text();
/** A sample's value, or undefined when the scrape has no such line. */
const sample = (text: string, series: string) => {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
};

describe("low-credit gauges", () => {
  let h: Harness | undefined;
  afterEach(async () => { await h?.close(); h = undefined; });

  it("count the active keys under SHIM_LOW_CREDITS_SHARE of this month's credits (or at 0), name each by id and name, never by its secret", async () => {
    h = await startShim({ env: { SHIM_LOW_CREDITS_SHARE: "0.5", SHIM_LOW_CREDITS_INTERVAL_MS: "1000" } });
    const dry = await h.createKey({ name: "dry", credits: 1 });
    const half = await h.createKey({ name: "half", credits: 4 });
    const full = await h.createKey({ name: "full", credits: 100 });
    const gone = await h.createKey({ name: "gone", credits: 0 });
    expect((await h.admin(`/admin/keys/${gone.id}`, { method: "DELETE" })).status).toBe(200);
    await h.client(dry.key).chat.completions.create(chat);
    for (let i = 0; i < 3; i++) await h.client(half.key).chat.completions.create(chat);
    await h.client(full.key).chat.completions.create(chat);

    let text = "";
    const checked = await pollUntil(async () => {
      text = await scrape(h!);
      return sample(text, "shim_keys_active") === 3;
    }, 10_000, 200);
    expect(checked, text).toBe(true);
    expect(sample(text, "shim_keys_low_credits")).toBe(2);
    expect(sample(text, `shim_key_low_credits_ratio{key_id="${dry.id}",key_name="dry"}`)).toBe(0);
    expect(sample(text, `shim_key_low_credits_ratio{key_id="${half.id}",key_name="half"}`)).toBe(0.25);
    expect(text).not.toContain(`key_name="full"`);
    expect(sample(text, "shim_low_credits_checked_timestamp_seconds")).toBeGreaterThan(Date.now() / 1000 - 60);
    for (const k of [dry, half, full]) expect(text).not.toContain(k.key);
    // Prometheus' linter takes the gauges, the labelled one with its series (where promtool is installed).
    const lint = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
    if (lint.error === undefined) expect({ status: lint.status, problems: `${lint.stdout}${lint.stderr}` }).toEqual({ status: 0, problems: "" });
    // The alert's series is the gauge the shim exports.
    expect(alertRule("GpuSandboxKeysLowOnCredits").expr).toContain("shim_keys_low_credits");

    // A top-up takes the key out at the next check.
    expect((await h.admin(`/admin/keys/${half.id}/credits`, { method: "POST", body: JSON.stringify({ amount: 10 }) })).status).toBe(200);
    expect(await pollUntil(async () => sample(text = await scrape(h!), "shim_keys_low_credits") === 1, 10_000, 200), text).toBe(true);
    expect(text).not.toContain(`key_name="half"`);
  });

  it("a scrape never waits for the ledger, and scrapes within the interval read it once", async () => {
    let reads = 0;
    h = await startShim({
      env: { SHIM_LOW_CREDITS_INTERVAL_MS: "600000" },
      wrapStore: (s) => overrideStore(s, { lowCredits: (q) => ((reads += 1), s.lowCredits(q)) }),
    });
    await h.createKey({ name: "dry", credits: 0 });
    for (let i = 0; i < 10; i++) await scrape(h);
    expect(await pollUntil(async () => sample(await scrape(h!), "shim_keys_low_credits") === 1, 10_000, 100)).toBe(true);
    expect(reads).toBe(1);
  });

  it("SHIM_LOW_CREDITS_INTERVAL_MS=0 turns them off: no read, no series", async () => {
    let reads = 0;
    h = await startShim({ env: { SHIM_LOW_CREDITS_INTERVAL_MS: "0" }, wrapStore: (s) => overrideStore(s, { lowCredits: (q) => ((reads += 1), s.lowCredits(q)) }) });
    const text = await scrape(h);
    expect(text).not.toContain("shim_keys_low_credits");
    expect(reads).toBe(0);
  });
});
