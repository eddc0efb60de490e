import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { adminClient, type ApiKey } from "../../scripts/lib/admin-client.ts";
import { main, usageTotals } from "../../scripts/report-usage.ts";
import { wholeLedger, withKeyNames } from "../../scripts/lib/usage-export.ts";
import { clockFrom } from "../support/clocks.ts";
import { parsePeriod } from "../../api-shim/src/requests/period.ts";
import { frontProxy } from "../support/front-proxy.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";
import { tempDir } from "../support/tools.ts";
import { FakePulumi } from "./fake-pulumi.ts";

// Prices chosen so every cost is exact in micro-credits: 1 credit per request, 500 µc per
// prompt token, 1000 µc per completion token.
const FILE = { pricing: { models: { "qwen2.5-7b": { promptPer1k: 0.5, completionPer1k: 1 } } }, models: [{ name: "qwen2.5-7b" }, { name: "bge-m3" }] };
const costMicro = (u: { prompt_tokens: number; completion_tokens: number }) => 1_000_000 + 500 * u.prompt_tokens + 1000 * u.completion_tokens;

// The shims' and the script's clock, from mid-month at midday: the requests made before the tests
// are in the current month and day the reports cover and the tests expect, whenever the suite runs.
const clock = clockFrom(Date.UTC(2026, 2, 15, 12));
const clockNow = () => new Date(clock.now());

let h: Harness;
let a: { id: string; key: string };
let b: { id: string; key: string };
/** What the fake upstream reported per key: the expected figures, worked out apart from the shim's report. */
const expected = new Map<string, { requests: number; prompt: number; completion: number; micro: number }>();

beforeAll(async () => {
  h = await startShim({ clock, file: FILE });
  a = await h.createKey({ name: "team-a", credits: 100 });
  b = await h.createKey({ name: "team-b", credits: 100 });
  const ask = async (k: { id: string; key: string }, content: string, maxTokens: number, stream = false) => {
    const client = h.client(k.key);
    const body = { model: "qwen2.5-7b", messages: [{ role: "user" as const, content }], max_tokens: maxTokens };
    let requestId: string | null;
    if (stream) {
      const { data, response } = await client.chat.completions.create({ ...body, stream: true }).withResponse();
      for await (const _ of data);
      requestId = response.headers.get("x-request-id");
    } else {
      requestId = (await client.chat.completions.create(body).withResponse()).response.headers.get("x-request-id");
    }
    // Settled once the request's own log line is written (a stream settles as it ends).
    await h.waitForRequestLog((l) => l.reqId === requestId && l.status === 200);
    const u = h.fake.usages.at(-1)!;
    const e = expected.get(k.id) ?? { requests: 0, prompt: 0, completion: 0, micro: 0 };
    expected.set(k.id, { requests: e.requests + 1, prompt: e.prompt + u.prompt_tokens, completion: e.completion + u.completion_tokens, micro: e.micro + costMicro(u) });
  };
  await ask(a, "one two three", 4);
  await ask(a, "four five", 6, true);
  await ask(a, "six", 2);
  await ask(b, "seven eight nine ten", 3);
});
afterAll(() => h.close());

async function report(argv: string[], env: NodeJS.ProcessEnv = { GPU_SANDBOX_ADMIN_TOKEN: h.adminToken }, now?: Date) {
  const io = memoryIo();
  const code = await main(["--url", h.url, ...argv], { io, env, pulumi: new FakePulumi(), root: tempDir(), now: now ? () => now : clockNow });
  return { code, out: io.stdout.join("\n"), err: io.stderr.join("\n") };
}

const total = () => [...expected.values()].reduce((t, e) => ({
  requests: t.requests + e.requests, prompt: t.prompt + e.prompt, completion: t.completion + e.completion, micro: t.micro + e.micro,
}), { requests: 0, prompt: 0, completion: 0, micro: 0 });

describe("report-usage against a real shim", () => {
  it("JSON: per key and model, with totals that match the upstream's counts and the ledger", async () => {
    const r = await report(["--format", "json"]);
    expect(r.code, r.err).toBe(0);
    const json = JSON.parse(r.out) as { group: string; data: Record<string, unknown>[]; totals: Record<string, number> };
    expect(json.group).toBe("model");
    const ea = expected.get(a.id)!;
    expect(json.data.find((d) => d.key_id === a.id)).toEqual({
      key_id: a.id, key_name: "team-a", model: "qwen2.5-7b", requests: 3, prompt_tokens: ea.prompt, completion_tokens: ea.completion,
      total_tokens: ea.prompt + ea.completion, cost: ea.micro / 1e6,
    });
    const t = total();
    expect(json.totals).toEqual({ requests: 4, prompt_tokens: t.prompt, completion_tokens: t.completion, total_tokens: t.prompt + t.completion, cost: t.micro / 1e6 });
    // The ledger agrees: what the keys lost is what the report says they spent.
    const spent = (await h.store.audit()).filter((x) => x.keyId === a.id || x.keyId === b.id).reduce((s, x) => s + (100_000_000 - x.balance), 0);
    expect(spent).toBe(t.micro);
  });

  it("CSV: the API's CSV with each key's name beside its id, one row per key and model, summing to the same totals", async () => {
    const r = await report(["--format", "csv"]);
    expect(r.code, r.err).toBe(0);
    // The shim's bytes: every line ends CRLF, the last one too (a printed newline would make it LF).
    expect(r.out).toMatch(/^([^\r\n]*\r\n)+$/);
    const [header, ...rows] = r.out.replace(/\r\n$/, "").split("\r\n");
    expect(header).toBe("key_id,key_name,model,requests,prompt_tokens,completion_tokens,total_tokens,cost");
    expect(rows).toHaveLength(2);
    const cells = rows.map((row) => row.split(","));
    const t = total();
    expect(cells.reduce((s, c) => s + Number(c[3]), 0)).toBe(4);
    expect(cells.reduce((s, c) => s + Number(c[4]), 0)).toBe(t.prompt);
    expect(cells.reduce((s, c) => s + Number(c[5]), 0)).toBe(t.completion);
    expect(cells.reduce((s, c) => s + Math.round(Number(c[7]) * 1e6), 0)).toBe(t.micro);
    const eb = expected.get(b.id)!;
    expect(rows).toContain(`${b.id},team-b,qwen2.5-7b,1,${eb.prompt},${eb.completion},${eb.prompt + eb.completion},${eb.micro / 1e6}`);
    expect(rows.find((row) => row.startsWith(`${a.id},`))).toMatch(new RegExp(`^${a.id},team-a,qwen2\\.5-7b,3,`));
  });

  it("--group model,price: a line per key, model and price, with the price's fields, that recompute the cost (CSV and table)", async () => {
    const r = await report(["--group", "model,price", "--format", "csv"]);
    expect(r.code, r.err).toBe(0);
    const [header, ...rows] = r.out.replace(/\r\n$/, "").split("\r\n");
    expect(header).toBe("key_id,key_name,model,price_id,price_request,price_batch_request,price_prompt_per_1k,price_cached_prompt_per_1k,price_completion_per_1k,requests,batch_requests,prompt_tokens,cached_tokens,completion_tokens,total_tokens,cost");
    expect(rows).toHaveLength(2);
    for (const c of rows.map((row) => row.split(","))) {
      expect(c.slice(4, 9)).toEqual(["1", "2", "0.5", "0.5", "1"]); // the configuration's: request 1, batch 2 (the defaults), prompt 0.5, completion 1
      const e = expected.get(c[0]!)!;
      // Whole µc per token here: the recomputation is exact.
      expect(Number(c[9]) * 1_000_000 + Number(c[11]) * 500 + Number(c[13]) * 1000).toBe(e.micro);
      expect(Math.round(Number(c[15]) * 1_000_000)).toBe(e.micro);
    }
    const table = await report(["--group", "model,price"]);
    expect(table.out).toMatch(/per key, model and price/);
    expect(table.out).toMatch(/[0-9a-f]{16}: request 1, batch 2, prompt 0\.5, cached 0\.5, completion 1 \/1k/);
  });

  it("CSV key_name: a key the list does not have is named \"\", a name with a comma or quote is quoted, one a spreadsheet would run is defused as the shim's cells are", () => {
    const csv = "key_id,day,requests,cost\r\nAAAAAAAAAAAA,2026-03-01,1,1\r\nBBBBBBBBBBBB,2026-03-01,2,2\r\nCCCCCCCCCCCC,2026-03-02,3,3\r\nDDDDDDDDDDDD,2026-03-02,4,4\r\n";
    const keys = [
      { id: "AAAAAAAAAAAA", name: 'ops, "night"' }, { id: "CCCCCCCCCCCC", name: "=HYPERLINK(1)" }, { id: "DDDDDDDDDDDD", name: "plain" },
    ] as unknown as ApiKey[];
    expect(withKeyNames(csv, keys)).toBe(
      "key_id,key_name,day,requests,cost\r\nAAAAAAAAAAAA,\"ops, \"\"night\"\"\",2026-03-01,1,1\r\nBBBBBBBBBBBB,,2026-03-01,2,2\r\nCCCCCCCCCCCC,'=HYPERLINK(1),2026-03-02,3,3\r\nDDDDDDDDDDDD,plain,2026-03-02,4,4\r\n",
    );
    expect(withKeyNames("key_id,model,requests\r\n", keys)).toBe("key_id,key_name,model,requests\r\n");
  });

  // Found by a CI pipeline's author: switching a job from --format csv to json lost the names.
  it.each(["model", "day", "day,model", "model,price"])("--group %s: each JSON row has the key_name the CSV of the same report has, right after key_id; the CSV is unchanged", async (group) => {
    const [json, csv] = [await report(["--group", group, "--format", "json"]), await report(["--group", group, "--format", "csv"])];
    expect(json.code, json.err).toBe(0);
    const rows = (JSON.parse(json.out) as { data: Record<string, unknown>[] }).data;
    const csvRows = csv.out.replace(/\r\n$/, "").split("\r\n").slice(1).map((row) => row.split(","));
    expect(rows.map((r) => [r.key_id, r.key_name])).toEqual(csvRows.map((c) => [c[0], c[1]]));
    expect(rows.map((r) => r.key_name).sort()).toEqual(["team-a", "team-b"]);
    for (const r of rows) expect(Object.keys(r).slice(0, 2)).toEqual(["key_id", "key_name"]);
    expect(csvRows[0]).toHaveLength(csv.out.split("\r\n")[0]!.split(",").length); // key_name added once, in the CSV's header only
    // --key: the rows of the keys covered are named too.
    const one = JSON.parse((await report(["--group", group, "--key", "team-b", "--format", "json"])).out) as { data: Record<string, unknown>[] };
    expect(one.data.map((r) => r.key_name)).toEqual(["team-b"]);
  });

  it("a table with key names and a TOTAL line; --key by name; --group day", async () => {
    const r = await report([]);
    expect(r.code, r.err).toBe(0);
    const t = total();
    expect(r.out).toMatch(/^Usage \d{4}-\d\d-01T00:00:00Z to \d{4}-\d\d-\d\dT23:59:59Z, per key and model\n\nKEY +NAME +MODEL +REQUESTS +PROMPT +COMPLETION +TOKENS +CREDITS\n/);
    expect(r.out).toMatch(new RegExp(`^${a.id} +team-a +qwen2\\.5-7b +3 `, "m"));
    expect(r.out).toMatch(new RegExp(`^TOTAL +4 +${t.prompt} +${t.completion} +${t.prompt + t.completion} +${t.micro / 1e6}$`, "m"));

    const day = await report(["--key", "team-b", "--group", "day", "--format", "json"]);
    expect(day.code, day.err).toBe(0);
    const json = JSON.parse(day.out) as { data: Record<string, unknown>[]; totals: { requests: number } };
    expect(json.data).toEqual([expect.objectContaining({ key_id: b.id, day: clockNow().toISOString().slice(0, 10), requests: 1 })]);
    expect(json.totals.requests).toBe(1);
  });

  it("a period without requests, and a period given by date", async () => {
    const empty = await report(["--from", "2020-01-01", "--to", "2020-01-31"]);
    expect(empty.code, empty.err).toBe(0);
    expect(empty.out).toBe("Usage 2020-01-01T00:00:00Z to 2020-01-31T23:59:59Z, per key and model: no requests.");
  });

  it("--all: the whole ledger, not only the current month; with --stack, from the stack's creation", async () => {
    // Run two months on (this machine's clock), it still has every request: they are months before.
    const later = new Date(clock.now() + 62 * 86_400_000);
    const all = await report(["--all", "--group", "day", "--format", "json"], undefined, later);
    expect(all.code, all.err).toBe(0);
    const json = JSON.parse(all.out) as { period: { start: string; end: string }; totals: { requests: number; cost: number } };
    expect(json.period).toEqual({ start: "2000-01-01T00:00:00Z", end: `${new Date(later.getTime() + 86_400_000).toISOString().slice(0, 10)}T23:59:59Z` }); // --url: no creation time known; to tomorrow
    expect(json.totals).toMatchObject({ requests: 4, cost: total().micro / 1e6 });

    // --stack: from its createdAt output, as reap-expired saves it; the CSV the docs save before a destroy.
    const createdAt = new Date(Math.floor(clock.now() / 1000) * 1000 - 3_600_000).toISOString().replace(".000Z", "Z");
    const pulumi = new FakePulumi({ acme: { outputs: { endpoint: `${h.url}/v1`, adminToken: h.adminToken, createdAt } } });
    const run = async (argv: string[]) => {
      const io = memoryIo();
      const code = await main(["--stack", "acme", "--all", ...argv], { io, env: {}, pulumi, root: tempDir(), now: () => later });
      expect(code, io.stderr.join("\n")).toBe(0);
      return io.stdout.join("\n");
    };
    expect((JSON.parse(await run(["--format", "json"])) as { period: { start: string } }).period.start).toBe(createdAt);
    const [header, ...rows] = (await run(["--group", "day", "--format", "csv"])).replace(/\r\n$/, "").split("\r\n");
    expect(header).toBe("key_id,key_name,day,requests,prompt_tokens,completion_tokens,total_tokens,cost");
    expect(rows.reduce((sum, row) => sum + Number(row.split(",")[3]), 0)).toBe(4);
    // The save before a destroy the docs give, as reap-expired saves it: per key, day and model.
    const [modelHeader, ...modelRows] = (await run(["--group", "day,model", "--format", "csv"])).replace(/\r\n$/, "").split("\r\n");
    expect(modelHeader).toBe("key_id,key_name,day,model,requests,prompt_tokens,completion_tokens,total_tokens,cost");
    const today = clockNow().toISOString().slice(0, 10);
    expect(modelRows.map((row) => row.split(",").slice(0, 5)).sort()).toEqual([[a.id, "team-a", today, "qwen2.5-7b", "3"], [b.id, "team-b", today, "qwen2.5-7b", "1"]].sort());
  });

  it("--group day,model: a table with DAY and MODEL columns and a TOTAL line", async () => {
    const r = await report(["--group", "day,model"]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/, per key, day and model\n\nKEY +NAME +DAY +MODEL +REQUESTS +PROMPT +COMPLETION +TOKENS +CREDITS\n/);
    expect(r.out).toMatch(new RegExp(`^${a.id} +team-a +${clockNow().toISOString().slice(0, 10)} +qwen2\\.5-7b +3 `, "m"));
    expect(r.out).toMatch(/^TOTAL +4 /m);
  });

  it("--all's period covers what a host whose clock is ahead of this machine's stamped in its next UTC day", () => {
    // The operator's machine at 23:59:59; the host, 3 s ahead, has stamped rows at 00:00:01 of the
    // next day. The saved export is the ledger's only copy once `pulumi destroy` deletes the volume.
    const { from, to } = wholeLedger("2026-03-01T08:00:00Z", new Date("2026-03-01T23:59:59Z"));
    const period = parsePeriod({ from, to }, Date.parse("2026-03-02T00:00:01Z"));
    expect(period.from).toBe(Date.parse("2026-03-01T08:00:00Z"));
    expect(period.to).toBeGreaterThan(Date.parse("2026-03-02T00:00:01Z"));
  });

  it("--stack reads the endpoint and token from the stack's outputs", async () => {
    const io = memoryIo();
    const pulumi = new FakePulumi({ acme: { outputs: { endpoint: `${h.url}/v1`, adminToken: h.adminToken } } });
    expect(await main(["--stack", "acme", "--format", "json"], { io, env: {}, pulumi, root: tempDir() })).toBe(0);
    expect((JSON.parse(io.stdout.join("\n")) as { totals: { requests: number } }).totals.requests).toBe(4);
  });

  it.each([
    [["--group", "week"], '--group "week" is not allowed; use one of: model, day, day,model, model,price, key'],
    [["--format", "xml"], '--format "xml" is not allowed; use one of: table, json, csv'],
    [["--from", "yesterday"], '--from "yesterday" must be a date (2026-03-01) or a timestamp with a zone'],
    [["--to", "2026-11-31"], "--to: 2026-11-31 is not a day: November 2026 has 30 days"],
    [["--key", "nobody"], '--key "nobody": no key with that id or name; keys in use:', 4],
    [["--admin-token", "x"], "--admin-token is not accepted"],
    [["--all", "--from", "2026-03-01"], "--all is the whole ledger: give it without --from and --to"],
    [["--to", "2026-03-31", "--all"], "--all is the whole ledger: give it without --from and --to"],
  ] as [string[], string, number?][])("%j → exit 2 (4: no such key): %s", async (argv, message, code = 2) => {
    const r = await report(argv);
    expect(r.code).toBe(code);
    expect(r.err).toContain(message);
  });

  it.each([
    [["--from", "2026-12-01", "--to", "2026-11-01"], "--to 2026-11-01 is before --from 2026-12-01: the period would be empty (were they swapped?)"],
    [["--to", "2020-01-01", "--from", "2020-02-01"], "--to 2020-01-01 is before --from 2020-02-01: the period would be empty (were they swapped?)"],
    // A date --to includes its day: the day before --from's is the latest that is refused.
    [["--from", "2026-12-02", "--to", "2026-12-01"], "--to 2026-12-01 is before --from 2026-12-02"],
    // A timestamp --to is where the period stops (not included): the same instant is an empty period.
    [["--from", "2026-12-01T09:00:00Z", "--to", "2026-12-01T10:00:00+01:00"], "--to 2026-12-01T10:00:00+01:00 is the same instant as --from 2026-12-01T09:00:00Z: the period would be empty"],
    // Its negative offset puts this --from on 10000-01-01 in UTC, after the whole day of --to.
    [["--from", "9999-12-31T23:00:00-05:00", "--to", "9999-12-31"], "--to 9999-12-31 is before --from 9999-12-31T23:00:00-05:00"],
  ])("%j → exit 2 before any request, naming both flags: %s", async (argv, message) => {
    // Nothing listens on port 9: a request would fail with "cannot connect".
    const io = memoryIo();
    const code = await main(["--url", "http://127.0.0.1:9", ...argv], { io, env: { GPU_SANDBOX_ADMIN_TOKEN: h.adminToken }, pulumi: new FakePulumi(), root: tempDir(), now: clockNow });
    expect(code).toBe(2);
    expect(io.stderr.join("\n")).toContain(message);
    expect(io.stderr.join("\n")).not.toContain("connect");
  });

  it.each([
    [["--from", "2026-03-15", "--to", "2026-03-15"], "2026-03-15T00:00:00Z to 2026-03-15T23:59:59Z"],
    [["--from", "2026-03-15T12:00:00+01:00", "--to", "2026-03-15T11:30:00Z"], "2026-03-15T11:00:00Z to 2026-03-15T11:29:59Z"],
    [["--from", "2026-03-15T12:00:00Z", "--to", "2026-03-15"], "2026-03-15T12:00:00Z to 2026-03-15T23:59:59Z"],
  ])("%j: a period --from and --to leave open (a day, offsets) is not refused", async (argv, period) => {
    const r = await report([...argv, "--format", "json"]);
    expect(r.code, r.err).toBe(0);
    const json = JSON.parse(r.out) as { period: { start: string; end: string } };
    expect(`${json.period.start} to ${json.period.end}`).toBe(period);
  });

  it("neither an admin token given as --admin-token-env's value nor a --url's password is printed; a --url with an API path is refused", async () => {
    const token = "Xk3v9QzT7mPw2LrB8nYc4HdFXk3v9QzT7mPw2LrB8nYc4HdF"; // as Pulumi makes them: 48 letters and digits
    const r = await report(["--admin-token-env", token], {});
    expect(r.code).toBe(2);
    expect(r.err).not.toContain(token);
    expect(r.err).toContain("looks like a token, not a variable name");
    for (const url of [h.url.replace("://", "://admin:s3cret@"), `${h.url}/v1/usage`]) {
      const io = memoryIo();
      expect(await main(["--url", url], { io, env: { GPU_SANDBOX_ADMIN_TOKEN: h.adminToken }, pulumi: new FakePulumi(), root: tempDir() })).toBe(2);
      expect(io.stderr.join("\n")).not.toContain("s3cret");
      expect(io.stderr.join("\n")).toMatch(/^--url (has a user name or password|".*" must be the tenant's endpoint)/);
    }
  });

  it("a --url with a password that makes it no URL, or with a password and no user name, is refused without printing the password", async () => {
    for (const url of [h.url.replace("://", "://admin:s3/cret@"), h.url.replace("://", "://:s3cret@")]) {
      const io = memoryIo();
      expect(await main(["--url", url, "--format", "json"], { io, env: { GPU_SANDBOX_ADMIN_TOKEN: h.adminToken }, pulumi: new FakePulumi(), root: tempDir() }), url).toBe(2);
      expect(io.stdout).toEqual([]);
      expect(io.stderr.join("\n")).not.toMatch(/s3\/?cret/);
      expect(io.stderr.join("\n")).toMatch(/^--url (has a user name or password|".*" is not a URL)/);
    }
  });

  it("--admin-token-env with --stack is refused, not ignored", async () => {
    const io = memoryIo();
    const pulumi = new FakePulumi({ acme: { outputs: { endpoint: `${h.url}/v1`, adminToken: h.adminToken } } });
    expect(await main(["--stack", "acme", "--admin-token-env", "ACME_TOKEN"], { io, env: { ACME_TOKEN: "other" }, pulumi, root: tempDir() })).toBe(2);
    expect(io.stderr.join("\n")).toContain("--admin-token-env goes with --url; with --stack the token comes from the stack's outputs");
  });

  it("--stack of a stack never deployed (SSH closed), or without an admin token, says so", async () => {
    for (const [outputs, message] of [
      [{ endpoint: `${h.url}/v1`, adminToken: h.adminToken, servingDeployed: false }, "stack acme was never deployed: gpu-sandbox:adminCidrs is empty, so SSH is closed"],
      [{ endpoint: `${h.url}/v1`, adminToken: "" }, "stack acme has no adminToken output"],
    ] as const) {
      const io = memoryIo();
      expect(await main(["--stack", "acme"], { io, env: {}, pulumi: new FakePulumi({ acme: { outputs } }), root: tempDir() })).toBe(2);
      expect(io.stderr.join("\n")).toContain(message);
    }
  });

  it("a --url with user:password@ but no scheme is refused without printing the password", async () => {
    const io = memoryIo();
    expect(await main(["--url", "admin:s3cret@203-0-113-9.ip.linodeusercontent.com/v1"], { io, env: { GPU_SANDBOX_ADMIN_TOKEN: h.adminToken }, pulumi: new FakePulumi(), root: tempDir() })).toBe(2);
    expect(io.stderr.join("\n")).not.toContain("s3cret");
    // "admin:" parsed as the URL's scheme, with no user info: refused for its "@".
    expect(io.stderr.join("\n")).toMatch(/^--url has a user name or password in it/);
  });

  it("a --url whose password parses as a host and path (it starts with / or digits and /) is refused without printing it", async () => {
    for (const url of ["https://admin:/s3cret@203-0-113-9.ip.linodeusercontent.com/v1", "https://admin:2024/s3cret@203-0-113-9.ip.linodeusercontent.com/v1"]) {
      const io = memoryIo();
      expect(await main(["--url", url], { io, env: { GPU_SANDBOX_ADMIN_TOKEN: h.adminToken }, pulumi: new FakePulumi(), root: tempDir() }), url).toBe(2);
      expect(io.stderr.join("\n")).not.toContain("s3cret");
      expect(io.stderr.join("\n")).toMatch(/^--url has a user name or password in it/);
    }
  });

  it("the totals add costs without floating-point drift", () => {
    const row = (cost: number) => ({ key_id: "k", model: "m", requests: 1, prompt_tokens: 1, completion_tokens: 1, total_tokens: 2, cost });
    expect(usageTotals([row(0.1), row(0.2)]).cost).toBe(0.3); // 0.1 + 0.2 is 0.30000000000000004 in floats
  });

  it("--key with a space at either end means the trimmed name, as manage-keys reads it, in every format", async () => {
    const e = expected.get(a.id)!;
    for (const ref of ["team-a ", " team-a", ` ${a.id} `]) {
      const json = await report(["--key", ref, "--format", "json"]);
      expect(json.code, json.err).toBe(0);
      expect(JSON.parse(json.out).totals.requests).toBe(e.requests); // was an empty bill, exit 0
      const table = await report(["--key", ref]);
      expect(table.code, table.err).toBe(0); // was a TypeError
      expect(table.out).toContain("team-a");
      const csv = await report(["--key", ref, "--format", "csv"]);
      expect(csv.code, csv.err).toBe(0);
      expect(csv.out.trim().split("\n")).toHaveLength(1 + 1); // header + one model's row (was "undefined")
    }
  });

  it("a wrong admin token: a clear error and exit 4 (refused)", async () => {
    const r = await report(["--format", "json"], { GPU_SANDBOX_ADMIN_TOKEN: "wrong" });
    expect(r.code).toBe(4);
    expect(r.err).toContain("admin API GET /admin/usage failed: 401 invalid_admin_token: Invalid admin token.");
    // The CSV's key names are asked for first.
    const csv = await report(["--format", "csv"], { GPU_SANDBOX_ADMIN_TOKEN: "wrong" });
    expect(csv.code).toBe(4);
    expect(csv.out).toBe("");
    expect(csv.err).toContain("admin API GET /admin/keys failed: 401 invalid_admin_token: Invalid admin token.");
  });

  it("a wrong --url that answers 200 with a web page (a captive portal): a sentence and exit 4 (refused), not a stack trace", async () => {
    const page = createServer((_req, res) => res.writeHead(200, { "content-type": "text/html" }).end("<html>\n  <title>Sign in to the hotel Wi-Fi</title>\n</html>"));
    await new Promise<void>((resolve) => page.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(page.address() as AddressInfo).port}`;
    try {
      for (const format of ["json", "csv", "table"]) {
        const io = memoryIo();
        const code = await main(["--url", url, "--format", format], { io, env: { GPU_SANDBOX_ADMIN_TOKEN: "t" }, pulumi: new FakePulumi(), root: tempDir() });
        expect(code, format).toBe(4);
        expect(io.stdout, format).toEqual([]); // a CSV export must not be the portal's page
        // The table and the CSV ask for the keys' names first.
        const path = format === "json" ? "/admin/usage" : "/admin/keys";
        const answered = "answered 200 but not with JSON";
        expect(io.stderr.join("\n"), format).toBe(`admin API GET ${path} ${answered} (<html> <title>Sign in to the hotel Wi-Fi</title> </html>); is --url the tenant's endpoint?`);
      }
      // The CSV itself (reap-expired's export asks for it alone) is checked as the usage CSV.
      await expect(adminClient({ baseUrl: url, adminToken: "t", source: "test" }, fetch).usageCsv({ group: "model" }))
        .rejects.toThrow("admin API GET /admin/usage answered 200 but not with the usage CSV (<html>");
    } finally {
      page.close();
    }
  });

  it("a wrong --url that answers 200 with JSON that is not the API's (another service): a sentence and exit 4 (refused), not a TypeError", async () => {
    const other = createServer((req, res) => {
      req.resume();
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
    await new Promise<void>((resolve) => other.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(other.address() as AddressInfo).port}`;
    try {
      for (const [format, expected] of [["json", 'admin API GET /admin/usage answered 200 but not with a "usage_report" object'], ["table", 'admin API GET /admin/keys answered 200 but not with a "list" of keys']] as const) {
        const io = memoryIo();
        const code = await main(["--url", url, "--format", format], { io, env: { GPU_SANDBOX_ADMIN_TOKEN: "t" }, pulumi: new FakePulumi(), root: tempDir() });
        expect(code, format).toBe(4);
        expect(io.stdout, format).toEqual([]);
        expect(io.stderr.join("\n"), format).toBe(`${expected} ({}); is --url the tenant's endpoint?`);
      }
    } finally {
      other.close();
    }
  });
});

describe("report-usage --key <name> after a rotation (the key revoked, a new one made with its name)", () => {
  let s: Harness;
  let old: { id: string; key: string };
  let next: { id: string; key: string };
  let oldMicro = 0;
  beforeAll(async () => {
    s = await startShim({ clock, file: FILE });
    old = await s.createKey({ name: "team-a", credits: 100 });
    for (const content of ["one two three", "four five", "six"]) {
      await s.client(old.key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content }], max_tokens: 3 });
      oldMicro += costMicro(s.fake.usages.at(-1)!);
    }
    expect((await s.admin(`/admin/keys/${old.id}`, { method: "DELETE" })).status).toBe(200);
    next = await s.createKey({ name: "team-a", credits: 100 });
    await s.client(next.key).embeddings.create({ model: "bge-m3", input: "y" });
    await s.createKey({ name: "team-b", credits: 100 }).then((b) => s.client(b.key).embeddings.create({ model: "bge-m3", input: "z" }));
  });
  afterAll(() => s.close());

  const run = async (argv: string[], now?: Date) => {
    const io = memoryIo();
    const code = await main(["--url", s.url, ...argv], { io, env: { GPU_SANDBOX_ADMIN_TOKEN: s.adminToken }, pulumi: new FakePulumi(), root: tempDir(), now: now ? () => now : clockNow });
    return { code, out: io.stdout.join("\n"), err: io.stderr.join("\n") };
  };
  /** Both keys, sorted by id as the API sorts its rows; the old one marked revoked. */
  const both = () => [old, next].sort((x, y) => (x.id < y.id ? -1 : 1));
  const covered = () => `team-a (2 keys: ${both().map((k) => `${k.id}${k === old ? " revoked" : ""}`).join(", ")})`;
  // The new key's one embedding costs the request price, 1 credit: the bill is exact in micro-credits.
  const totalCost = () => (oldMicro + 1_000_000) / 1e6;

  it("JSON covers every key of that name, with exact totals and the keys it covered", async () => {
    const r = await run(["--key", "team-a", "--format", "json"]);
    expect(r.code, r.err).toBe(0);
    const json = JSON.parse(r.out) as { data: { key_id: string }[]; keys: unknown[]; totals: { requests: number; cost: number } };
    expect(json.totals).toMatchObject({ requests: 4, cost: totalCost() });
    expect(json.data.map((d) => d.key_id)).toEqual(both().map((k) => k.id));
    expect(json.keys).toEqual(both().map((k) => ({ id: k.id, name: "team-a", revoked_at: k === old ? expect.any(String) : null })));
  });

  it("the table has each key's rows, a TOTAL over both and a heading naming the keys", async () => {
    const r = await run(["--key", "team-a"]);
    expect(r.code, r.err).toBe(0);
    expect(r.out.split("\n")[0]).toMatch(new RegExp(`^Usage \\S+ to \\S+ of ${covered().replace(/[()]/g, "\\$&")}, per key and model$`));
    expect(r.out).toMatch(new RegExp(`^${old.id} +team-a +qwen2\\.5-7b +3 `, "m"));
    expect(r.out).toMatch(new RegExp(`^${next.id} +team-a +bge-m3 +1 `, "m"));
    expect(r.out).toMatch(new RegExp(`^TOTAL +4 .* ${totalCost()}$`, "m"));
  });

  it("CSV: one header, both keys' rows as the shim wrote them; the keys covered on stderr", async () => {
    const r = await run(["--key", "team-a", "--format", "csv"]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/^([^\r\n]*\r\n)+$/);
    const [header, ...rows] = r.out.replace(/\r\n$/, "").split("\r\n");
    expect(header).toBe("key_id,key_name,model,requests,prompt_tokens,completion_tokens,total_tokens,cost");
    expect(rows.map((row) => row.split(",").slice(0, 2).join(","))).toEqual(both().map((k) => `${k.id},team-a`));
    expect(rows.reduce((sum, row) => sum + Math.round(Number(row.split(",")[7]) * 1e6), 0)).toBe(oldMicro + 1_000_000);
    expect(r.err).toBe(`usage of ${covered()}`);
  });

  it("--group day covers both keys too; an id still selects one key", async () => {
    const day = await run(["--key", "team-a", "--group", "day", "--format", "json"]);
    expect(day.code, day.err).toBe(0);
    const today = clockNow().toISOString().slice(0, 10);
    expect((JSON.parse(day.out) as { data: unknown[] }).data).toEqual(both().map((k) => expect.objectContaining({ key_id: k.id, day: today, requests: k === old ? 3 : 1 })));
    const one = await run(["--key", old.id, "--format", "json"]);
    expect(one.code, one.err).toBe(0);
    const json = JSON.parse(one.out) as { keys: { id: string }[]; totals: { requests: number; cost: number } };
    expect(json.totals).toMatchObject({ requests: 3, cost: oldMicro / 1e6 });
    expect(json.keys.map((k) => k.id)).toEqual([old.id]);
  });

  it("with --from alone, the period's end is pinned for every key covered too", async () => {
    const r = await run(["--key", "team-a", "--from", "2020-01-01"], new Date("2020-01-15T12:00:00Z"));
    expect(r.code, r.err).toBe(0);
    expect(r.out).toBe(`Usage 2020-01-01T00:00:00Z to 2020-01-31T23:59:59Z of ${covered()}, per key and model: no requests.`);
  });

  it("an open period is the same for every key covered, taken when the report starts", async () => {
    // As if run on 15 January 2020: each key's query asks for January 2020, not the API's month.
    const r = await run(["--key", "team-a"], new Date("2020-01-15T12:00:00Z"));
    expect(r.code, r.err).toBe(0);
    expect(r.out).toBe(`Usage 2020-01-01T00:00:00Z to 2020-01-31T23:59:59Z of ${covered()}, per key and model: no requests.`);
  });
});

describe("report-usage: the tenant's nginx answers 429 (its per-address limit covers /admin)", () => {
  it("CSV: waits its Retry-After, says so on stderr (stdout stays the CSV), and reports", async () => {
    let refused = 0;
    const front = await frontProxy(h.url, (method, url) => (url.startsWith("/admin/usage") && refused++ === 0 ? "rate-limited" : "forward"));
    try {
      const io = memoryIo();
      const code = await main(["--url", front.url, "--format", "csv"], { io, env: { GPU_SANDBOX_ADMIN_TOKEN: h.adminToken }, pulumi: new FakePulumi(), root: tempDir() });
      expect(code).toBe(0);
      expect(io.stderr.join("\n")).toContain("admin API GET /admin/usage: 429 rate_limit_exceeded: Too many requests from your address; retry after 1 second. Waiting 1 s, then sending it again (retry 1 of 5)…");
      expect(io.stdout.join("")).toMatch(/^key_id,key_name,model,/);
    } finally {
      front.close();
    }
  });
});
