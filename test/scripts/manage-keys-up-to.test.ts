// manage-keys top-up --up-to: a budget that resets each period (LiteLLM's max_budget with a
// budget_duration), as a top-up of what a key lacks to reach its allowance, at most once a period,
// against a real shim.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ApiKey } from "../../scripts/lib/admin-client.ts";
import { frontProxy } from "../support/front-proxy.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";
import { runManageKeys } from "./run-manage-keys.ts";

let h: Harness;
beforeAll(async () => {
  h = await startShim();
});
afterAll(() => h.close());

const DECEMBER = () => new Date("2026-12-07T22:30:00Z");
const JANUARY = () => new Date("2027-01-01T00:05:00Z");
const keys = (argv: string[], now = DECEMBER, url = h.url) => runManageKeys(h, [argv[0]!, "--url", url, ...argv.slice(1)], { now, stdinIsTTY: false });
const listed = async (id: string) => (JSON.parse((await keys(["list", "--json"])).out) as ApiKey[]).find((k) => k.id === id)!;
const spend = async (id: string, amount: number) => {
  const res = await h.admin(`/admin/keys/${id}/debits`, { method: "POST", body: JSON.stringify({ amount, note: "spent" }) });
  expect(res.status).toBe(200);
};

describe("manage-keys top-up --up-to", () => {
  it("tops a key up to its allowance exactly, in micro-credits, once a period (the current UTC month by default)", async () => {
    const { id } = await h.createKey({ name: "thirds", credits: 33.333333 }); // 50 − 33.333333 in floats is 16.666666999999997
    const first = await keys(["top-up", "--key", "thirds", "--up-to", "50"]);
    expect(first.code, first.err).toBe(0);
    expect(first.err).toBe(`Idempotency-Key: up-to-${id}-2026-12; to retry safely: npm run manage-keys -- top-up --url=${h.url} --key=${id} --up-to=50 --period=2026-12`);
    expect(first.out).toBe(`Added 16.666667 credits to thirds (${id}), up to its allowance of 50 for 2026-12: balance 50, remaining 50.`);
    expect((await listed(id)).balance).toBe(50);

    // The cron job run again the same period, after the key spent: nothing more this period.
    await spend(id, 5);
    const again = await keys(["top-up", "--key", id, "--up-to", "50"]);
    expect(again.code, again.err).toBe(0);
    expect(again.out).toBe(`Key thirds (${id}) was topped up for 2026-12 already (Idempotency-Key up-to-${id}-2026-12); nothing added: balance 45. The next top-up is for the next period.`);
    expect((await listed(id)).balance).toBe(45);
    // Its --json row has the fields the other outcomes' rows have, credits_remaining too (a review found it missing).
    const againJson = await keys(["top-up", "--key", id, "--up-to", "50", "--json"]);
    expect(JSON.parse(againJson.out)).toEqual({ key_id: id, name: "thirds", period: "2026-12", allowance: 50, idempotency_key: `up-to-${id}-2026-12`, outcome: "already_this_period", added: 0, balance: 45, credits_remaining: 45 });

    // The next month (the default period follows the clock): topped up again.
    const next = await keys(["top-up", "--key", id, "--up-to", "50", "--json"], JANUARY);
    expect(next.code, next.err).toBe(0);
    expect(JSON.parse(next.out)).toEqual({ key_id: id, name: "thirds", period: "2027-01", allowance: 50, idempotency_key: `up-to-${id}-2027-01`, outcome: "topped_up", added: 5, balance: 50, credits_remaining: 50 });
  });

  it("a run again after the key spent exactly its period's grant is told as topped up already, not as added (the API replays it)", async () => {
    const { id } = await h.createKey({ name: "same-again", credits: 40 });
    expect((await keys(["top-up", "--key", id, "--up-to", "50"])).out).toContain("Added 10 credits");
    await spend(id, 10); // lacks 10 again: the same request as the period's grant
    const again = await keys(["top-up", "--key", id, "--up-to", "50"]);
    expect(again.code, again.err).toBe(0);
    expect(again.out).toBe(`Key same-again (${id}) was topped up for 2026-12 already (Idempotency-Key up-to-${id}-2026-12); nothing added: balance 40. The next top-up is for the next period.`);
    expect((await listed(id)).balance).toBe(40);
    const againJson = await keys(["top-up", "--key", id, "--up-to", "50", "--json"]);
    expect(JSON.parse(againJson.out)).toMatchObject({ outcome: "already_this_period", added: 0, balance: 40, credits_remaining: 40 });
  });

  it("leaves a key at or above its allowance untouched, exit 0, and says so", async () => {
    const { id } = await h.createKey({ name: "rich", credits: 80 });
    const above = await keys(["top-up", "--key", "rich", "--up-to", "50", "--period", "2026-W49", "--note", "weekly allowance"]);
    expect(above.code, above.err).toBe(0);
    expect(above.out).toBe(`Key rich (${id}) has 80 credits, at or above its allowance of 50: nothing added for 2026-W49.`);
    expect(above.err).toBe("");
    const at = await keys(["top-up", "--key", id, "--up-to", "80", "--json"]);
    expect(at.code, at.err).toBe(0);
    expect(JSON.parse(at.out)).toMatchObject({ outcome: "at_or_above", added: 0, balance: 80 });
    expect((await listed(id)).balance).toBe(80);
  });

  it("puts the note on the grant, a default one naming the allowance and period otherwise; a --period for another cadence", async () => {
    const { id } = await h.createKey({ name: "weekly", credits: 0 });
    const run = await keys(["top-up", "--key", id, "--up-to", "12.5", "--period", "2026-W49", "--note", "INV-7 weekly", "--json"]);
    expect(run.code, run.err).toBe(0);
    expect(JSON.parse(run.out)).toMatchObject({ period: "2026-W49", idempotency_key: `up-to-${id}-2026-W49`, added: 12.5, balance: 12.5 });
    const other = await h.createKey({ name: "monthly", credits: 1 });
    expect((await keys(["top-up", "--key", other.id, "--up-to", "2"])).code).toBe(0);
    const statement = await (await h.admin(`/admin/credits?key=${id}`)).text();
    expect(statement).toContain("INV-7 weekly");
    const defaults = await (await h.admin(`/admin/credits?key=${other.id}`)).text();
    expect(defaults).toContain("allowance 2, period 2026-12");
  });

  it("refuses a revoked key (exit 4) and bad flags (exit 2), sending nothing", async () => {
    const { id } = await h.createKey({ name: "gone", credits: 1 });
    expect((await keys(["revoke", "--key", id])).code).toBe(0);
    const revoked = await keys(["top-up", "--key", id, "--up-to", "50"]);
    expect(revoked.code).toBe(4);
    expect(revoked.lastLine).toMatch(/^top-up refused: key gone \(\w+\) is revoked/);
    expect((await listed(id)).balance).toBe(1);

    const cases: [string[], string][] = [
      [["--up-to", "50", "--amount", "5"], "--amount and --up-to contradict each other: give one"],
      [["--up-to", "50", "--idempotency-key", "x"], "--idempotency-key does not go with --up-to"],
      [["--up-to", "16.6666667"], '--up-to "16.6666667" must be a positive number of credits with at most 6 decimals'],
      [["--up-to", "0"], '--up-to "0" must be a positive number'],
      [["--up-to", "5", "--period", "dec 2026"], '--period "dec 2026" must be'],
      [["--amount", "5", "--period", "2026-12"], "--period goes with --up-to"],
      [[], "--amount is required: the credits to add, e.g. 250 (or --up-to <n>: what the key lacks to reach <n>, once a period)"],
    ];
    for (const [argv, message] of cases) {
      const r = await keys(["top-up", "--key", "gone", ...argv]);
      expect(r.code, argv.join(" ")).toBe(2);
      expect(r.err).toContain(message);
    }
  });

  it("an answer lost after the shim acted: the retry line is the same command with the period spelled out, and it adds nothing twice", async () => {
    const { id } = await h.createKey({ name: "lost-up-to", credits: 20 });
    const front = await frontProxy(h.url, (method, url) => (method === "POST" && url.endsWith(`/${id}/credits`) ? "drop" : "forward"));
    let retry: string;
    try {
      const r = await keys(["top-up", "--key", "lost-up-to", "--up-to", "50"], DECEMBER, front.url);
      expect(r.code).toBe(5);
      retry = `npm run manage-keys -- top-up --url=${front.url} --key=${id} --up-to=50 --period=2026-12`;
      expect(r.lastLine).toBe(`The top-up may have been applied. Running the same command again is safe (its Idempotency-Key is the key's and the period's): ${retry}`);
    } finally {
      front.close();
    }
    expect((await listed(id)).balance).toBe(50); // applied, though the operator never heard so
    await spend(id, 1);
    // The retry, in January: its --period keeps it December's.
    const again = await keys(["top-up", "--key", id, "--up-to", "50", "--period", "2026-12"], JANUARY);
    expect(again.code, again.err).toBe(0);
    expect(again.out).toContain("was topped up for 2026-12 already");
    expect((await listed(id)).balance).toBe(49);
  });

  it("--all goes on past a key whose top-up failed, names it, exits 1; run again, it grants nothing twice", async () => {
    const fresh = await startShim();
    try {
      const a = await fresh.createKey({ name: "a", credits: 1 });
      const b = await fresh.createKey({ name: "b", credits: 2 });
      const c = await fresh.createKey({ name: "c", credits: 3 });
      const front = await frontProxy(fresh.url, (method, url) => (method === "POST" && url.endsWith(`/${b.id}/credits`) ? "gateway-timeout" : "forward"));
      const all = (url: string) => runManageKeys(fresh, ["top-up", "--url", url, "--all", "--up-to", "10"], { now: DECEMBER, stdinIsTTY: false });
      let first;
      try {
        first = await all(front.url);
      } finally {
        front.close();
      }
      expect(first.code).toBe(1);
      expect(first.out.split("\n")).toEqual([
        `Added 9 credits to a (${a.id}), up to its allowance of 10 for 2026-12: balance 10, remaining 10.`,
        `Added 7 credits to c (${c.id}), up to its allowance of 10 for 2026-12: balance 10, remaining 10.`,
      ]);
      expect(first.err).toContain(`b (${b.id}): `);
      expect(first.err).toContain("Up to 10 for 2026-12: 2 keys topped up, 0 at or above, 0 topped up already, 1 failed; 0 revoked or expired skipped.");
      expect(first.lastLine).toBe(`Running the same command again is safe: a key topped up for 2026-12 gets nothing more (npm run manage-keys -- top-up --all --url=${front.url} --up-to=10 --period=2026-12).`);
      const second = await all(fresh.url);
      expect(second.code, second.err).toBe(0);
      const balances = (JSON.parse((await runManageKeys(fresh, ["list", "--url", fresh.url, "--json"])).out) as ApiKey[]).map((k) => k.balance);
      expect(balances).toEqual([10, 10, 10]); // b's top-up was applied behind the 504: once
    } finally {
      await fresh.close();
    }
  });

  it("--all: every key in use to the same allowance, revoked and expired ones skipped, once a period", async () => {
    const fresh = await startShim();
    try {
      const all = (argv: string[]) => runManageKeys(fresh, ["top-up", "--url", fresh.url, "--all", ...argv], { now: DECEMBER, stdinIsTTY: false });
      const expiresAt = Date.now() + 1000; // in the future when the shim checks it, on a loaded machine too
      const expired = await fresh.createKey({ name: "old", credits: 0, expires_at: new Date(expiresAt).toISOString() });
      const low = await fresh.createKey({ name: "low", credits: 0.000001 });
      const high = await fresh.createKey({ name: "high", credits: 99 });
      const gone = await fresh.createKey({ name: "gone", credits: 0 });
      await fresh.admin(`/admin/keys/${gone.id}`, { method: "DELETE" });
      await new Promise((r) => setTimeout(r, Math.max(0, expiresAt - Date.now()) + 50));
      const first = await all(["--up-to", "10"]);
      expect(first.code, first.err).toBe(0);
      expect(first.out.split("\n")).toEqual([
        `Added 9.999999 credits to low (${low.id}), up to its allowance of 10 for 2026-12: balance 10, remaining 10.`,
        `Key high (${high.id}) has 99 credits, at or above its allowance of 10: nothing added for 2026-12.`,
      ]);
      expect(first.lastLine).toBe("Up to 10 for 2026-12: 1 key topped up, 1 at or above, 0 topped up already, 0 failed; 2 revoked or expired skipped.");
      const again = await all(["--up-to", "10", "--json"]);
      expect(again.code, again.err).toBe(0);
      expect((JSON.parse(again.out) as { outcome: string }[]).map((r) => r.outcome)).toEqual(["at_or_above", "at_or_above"]);
      const balances = async () => Object.fromEntries((JSON.parse((await runManageKeys(fresh, ["list", "--url", fresh.url, "--json"])).out) as ApiKey[]).map((k) => [k.name, k.balance]));
      expect(await balances()).toEqual({ old: 0, low: 10, high: 99, gone: 0 });
      expect(expired.id).toBeTruthy();
      expect((await all(["--up-to", "10", "--key", "low"])).code).toBe(2);
    } finally {
      await fresh.close();
    }
  });
});
