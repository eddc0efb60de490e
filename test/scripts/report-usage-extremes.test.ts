import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { main } from "../../scripts/report-usage.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";
import { tempDir } from "../support/tools.ts";
import { FakePulumi } from "./fake-pulumi.ts";

// `--key <name>` over several keys (a rotation) makes the script pin an open period itself and
// send each key's query its bounds: those must be bounds the API reads back at the calendar's
// ends too (the API cuts periods at 10000-01-01 and reads 4-digit years only).
let s: Harness;
let ids: string[];
beforeAll(async () => {
  s = await startShim();
  const old = await s.createKey({ name: "team-a", credits: 100 });
  expect((await s.admin(`/admin/keys/${old.id}`, { method: "DELETE" })).status).toBe(200);
  const next = await s.createKey({ name: "team-a", credits: 100 });
  ids = [old.id, next.id].sort();
});
afterAll(() => s.close());

async function run(argv: string[], now = new Date("2026-12-06T12:00:00Z")) {
  const io = memoryIo();
  const code = await main(["--url", s.url, "--key", "team-a", ...argv], { io, env: { GPU_SANDBOX_ADMIN_TOKEN: s.adminToken }, pulumi: new FakePulumi(), root: tempDir(), now: () => now });
  return { code, out: io.stdout.join("\n"), err: io.stderr.join("\n") };
}

/** The period the report shows, for each of the two keys' queries (JSON: the API's own `period`). */
async function shownPeriod(argv: string[], now?: Date) {
  const r = await run([...argv, "--format", "json"], now);
  expect(r.code, r.err).toBe(0);
  const json = JSON.parse(r.out) as { period: { start: string; end: string }; keys: { id: string }[] };
  expect(json.keys.map((k) => k.id)).toEqual(ids);
  return json.period;
}

describe("report-usage --key over several keys at the calendar's ends", () => {
  it("--to 9999-12-31 alone: December 9999 through its last day", async () => {
    expect(await shownPeriod(["--to", "9999-12-31"])).toEqual({ start: "9999-12-01T00:00:00Z", end: "9999-12-31T23:59:59Z" });
  });

  it("--from late on 9999-12-31 alone: to the API's last instant", async () => {
    expect(await shownPeriod(["--from", "9999-12-31"])).toEqual({ start: "9999-12-31T00:00:00Z", end: "9999-12-31T23:59:59Z" });
    expect(await shownPeriod(["--from", "9999-12-31T12:00:00Z"])).toEqual({ start: "9999-12-31T12:00:00Z", end: "9999-12-31T23:59:59Z" });
    // A negative offset: the period starts after 10000-01-01 in UTC, where the API keeps its day
    // uncut; the report shows what the API shows for one key.
    expect(await shownPeriod(["--from", "9999-12-31T23:00:00-05:00"])).toEqual({ start: "+010000-01-01T04:00:00Z", end: "+010000-01-02T03:59:59Z" });
    // One starting on that last end itself: no bounds to pin either (they would be refused), its day as the API keeps it.
    expect(await shownPeriod(["--from", "9999-12-31T23:00:00-01:00"])).toEqual({ start: "+010000-01-01T00:00:00Z", end: "+010000-01-01T23:59:59Z" });
  });

  it("--from and --to both at the end: as given", async () => {
    expect(await shownPeriod(["--from", "9999-12-31", "--to", "9999-12-31"])).toEqual({ start: "9999-12-31T00:00:00Z", end: "9999-12-31T23:59:59Z" });
  });

  it("the table names the same period", async () => {
    const r = await run(["--to", "9999-12-31"]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/^Usage 9999-12-01T00:00:00Z to 9999-12-31T23:59:59Z of team-a \(2 keys: /);
  });

  it("years 0000-0099 and 1970: as given, not read as 1900-1999", async () => {
    expect(await shownPeriod(["--to", "0000-01-01"])).toEqual({ start: "0000-01-01T00:00:00Z", end: "0000-01-01T23:59:59Z" });
    expect(await shownPeriod(["--to", "0050-03-01T00:00:00Z"])).toEqual({ start: "0050-02-01T00:00:00Z", end: "0050-02-28T23:59:59Z" });
    expect(await shownPeriod(["--from", "0099-12-31"], new Date("0100-01-15T00:00:00Z"))).toEqual({ start: "0099-12-31T00:00:00Z", end: "0100-01-31T23:59:59Z" });
    expect(await shownPeriod(["--to", "1970-01-01"])).toEqual({ start: "1970-01-01T00:00:00Z", end: "1970-01-01T23:59:59Z" });
    expect(await shownPeriod(["--to", "1970-01-01T00:00:00Z"])).toEqual({ start: "1969-12-01T00:00:00Z", end: "1969-12-31T23:59:59Z" });
    expect(await shownPeriod(["--from", "1970-01-01"], new Date("1970-01-01T00:00:00Z"))).toEqual({ start: "1970-01-01T00:00:00Z", end: "1970-01-31T23:59:59Z" });
  });
});

describe("report-usage --key over several keys: the period the API shows for one key", () => {
  it("a --to at or before 0000-01-01T00:00:00Z alone (its month begins in year -1)", async () => {
    const single = await s.admin(`/admin/usage?key=${ids[0]}&to=0000-01-01T00:00:00Z`).then((r) => r.json() as Promise<{ period: unknown }>);
    expect(await shownPeriod(["--to", "0000-01-01T00:00:00Z"])).toEqual(single.period);
  });
});
