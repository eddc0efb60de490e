import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { APIError } from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { formatRequestRow } from "../../scripts/lib/request-rows.ts";
import type { RequestRowJson } from "../../scripts/lib/request-shapes.ts";
import { main } from "../../scripts/report-usage.ts";
import { LISTED_KEY } from "../support/older-shim.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";
import { tempDir } from "../support/tools.ts";
import { FakePulumi } from "./fake-pulumi.ts";

/**
 * report-usage --request <id> (a request's ledger row and what it means: charged or not, why) and
 * --key … --itemise (a key's requests one row each, the shim's CSV or JSON), against a real shim:
 * an answered request and one the model failed, sent with the openai SDK.
 */
let h: Harness;
let team: { id: string; key: string };
let okId: string;
let failedId: string;
let okCost: number;

beforeAll(async () => {
  h = await startShim();
  team = await h.createKey({ name: "team-a", credits: 100 });
  await h.createKey({ name: "team-b", credits: 100 });
  const client = h.client(team.key);
  const ask = { model: "qwen2.5-7b", messages: [{ role: "user" as const, content: "hello" }], max_tokens: 5 };
  const answered = await client.chat.completions.create(ask).withResponse();
  okId = answered.response.headers.get("x-request-id")!;
  okCost = Number(answered.response.headers.get("x-credits-charged"));
  h.fake.set({ failStatus: 500 });
  failedId = ((await client.chat.completions.create(ask).catch((e: unknown) => e)) as APIError).requestID!;
  h.fake.set({ failStatus: null });
  await h.waitForRequestLog((l) => l.reqId === failedId);
});
afterAll(() => h.close());

async function run(argv: string[], url = h.url, token = h.adminToken) {
  const io = memoryIo();
  const code = await main(["--url", url, ...argv], { io, env: { GPU_SANDBOX_ADMIN_TOKEN: token }, pulumi: new FakePulumi(), root: tempDir() });
  // `raw`: what was written as written (--itemise writes the shim's body in the pieces it came in).
  return { code, out: io.stdout.join("\n"), raw: io.stdout.join(""), err: io.stderr.join("\n") };
}

describe("report-usage --request", () => {
  it("prints an answered request's row, its charge and what it means", async () => {
    const r = await run(["--request", okId]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain(`request id:`);
    expect(r.out).toContain(okId);
    expect(r.out).toContain(`${team.id} (team-a)`);
    expect(r.out).toMatch(/status: +200/);
    expect(r.out).toMatch(new RegExp(`cost: +${okCost} credits`));
    expect(r.out).toContain(`Charged ${okCost} credits: answered`);
    expect(r.out).toContain("counted in the usage reports.");
  });

  it("a request the model failed: not charged, and why; not counted", async () => {
    const r = await run(["--request", failedId]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/status: +502/);
    expect(r.out).toContain("Not charged: the model served nothing (status 502");
    expect(r.out).toContain("not counted in the usage reports");
  });

  it("--format json: the API's rows, with the key's name", async () => {
    const r = await run(["--request", okId, "--format", "json"]);
    expect(r.code, r.err).toBe(0);
    const json = JSON.parse(r.out) as { data: Record<string, unknown>[] };
    expect(json.data).toHaveLength(1);
    expect(json.data[0]).toMatchObject({ request_id: okId, key_id: team.id, key_name: "team-a", status: 200, cost: okCost, reported: true });
  });

  it("an id not in the ledger, or of another key: exit 4 (refused), said so", async () => {
    const none = await run(["--request", "0123456789abcdef0123456789abcdef"]);
    expect(none.code).toBe(4);
    expect(none.err).toContain("No request 0123456789abcdef0123456789abcdef in the ledger.");
    expect(none.err).toContain("forwarded to the model");
    const other = await run(["--request", okId, "--key", "team-b"]);
    expect(other.code).toBe(4);
    expect(other.err).toContain(`its key is ${team.id}`);
    expect((await run(["--request", okId, "--key", "team-a"])).code).toBe(0);
  });

  it("a request still running (a stream): said plainly, with its key's name and hold, exit 3 (run it again later); then its row", async () => {
    const runner = await h.createKey({ name: "team-r", credits: 100 }); // its own: team-a's requests are counted below
    h.fake.set({ tokenDelayMs: 40, defaultTokens: 40 });
    const stream = await h.client(runner.key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hello" }], max_tokens: 40, stream: true }).withResponse();
    const id = stream.response.headers.get("x-request-id")!;
    const chunks = stream.data[Symbol.asyncIterator]();
    await chunks.next();
    const running = await run(["--request", id]);
    expect(running.code).toBe(3);
    expect(running.err).toContain(`Request ${id} is still running on this shim: since `);
    expect(running.err).toContain(`key ${runner.id}`);
    expect(running.err).toContain(`(Key ${runner.id} is team-r.)`);
    expect(running.err).toMatch(/a hold of [0-9.]+ credits on its key/);
    expect(running.err).not.toContain("No request");
    const other = await run(["--request", id, "--key", "team-b"]);
    expect(other.code).toBe(4);
    expect(other.err).toContain(`its key is ${runner.id}`);
    h.fake.set({ tokenDelayMs: 0 });
    for (let c = await chunks.next(); !c.done; c = await chunks.next());
    await h.waitForRequestLog((l) => l.reqId === id);
    const ended = await run(["--request", id]);
    expect(ended.code, ended.err).toBe(0);
    expect(ended.out).toMatch(/status: +200/);
  });

  it("refuses the report's flags with it, before any request", async () => {
    for (const [argv, said] of [[["--from", "2026-11-01"], "--from is not for --request"], [["--group", "day"], "--group is for the usage report"], [["--itemise"], "give one of them"], [["--format", "csv"], "--format"]] as const) {
      const r = await run(["--request", okId, ...argv], "http://127.0.0.1:9");
      expect(r.code).toBe(2);
      expect(r.err).toContain(said);
    }
  });
});

describe("report-usage --itemise", () => {
  it("CSV (default): the key's requests one row each, oldest first, with what each was charged", async () => {
    const r = await run(["--key", "team-a", "--itemise"]);
    expect(r.code, r.err).toBe(0);
    const lines = r.raw.split("\r\n");
    expect(lines[0]).toMatch(/^request_id,key_id,at,route,model,status,/);
    expect(lines.slice(1, -1).map((l) => l.split(",")).map((c) => [c[0], c[5], c[9], Number(c[14])])).toEqual([[okId, "200", "true", okCost], [failedId, "502", "false", 0]]);
    expect(lines.at(-1)).toBe("");
    expect(r.err).toContain(`requests of team-a (1 key: ${team.id})`);
  });

  it("JSON: an array of the key's list; another period has none", async () => {
    const r = await run(["--key", team.id, "--itemise", "--format", "json"]);
    expect(r.code, r.err).toBe(0);
    const lists = JSON.parse(r.raw) as { object: string; key_id: string; data: { request_id: string }[] }[];
    expect(lists.map((l) => [l.object, l.key_id])).toEqual([["request_list", team.id]]);
    expect(lists[0]!.data.map((d) => d.request_id)).toEqual([okId, failedId]);
    const none = JSON.parse((await run(["--key", team.id, "--itemise", "--format", "json", "--from", "2020-01-01", "--to", "2020-01-31"])).raw) as { data: unknown[] }[];
    expect(none[0]!.data).toEqual([]);
  });

  it("a name two keys have had (revoked, made again): one CSV header, then each key's rows", async () => {
    const ask = { model: "qwen2.5-7b", messages: [{ role: "user" as const, content: "hi" }], max_tokens: 2 };
    const old = await h.createKey({ name: "team-c", credits: 10 });
    const oldId = (await h.client(old.key).chat.completions.create(ask).withResponse()).response.headers.get("x-request-id")!;
    expect((await h.admin(`/admin/keys/${old.id}`, { method: "DELETE" })).status).toBe(200);
    const now = await h.createKey({ name: "team-c", credits: 10 });
    const newId = (await h.client(now.key).chat.completions.create(ask).withResponse()).response.headers.get("x-request-id")!;
    await h.waitForRequestLog((l) => l.reqId === newId);
    const r = await run(["--key", "team-c", "--itemise"]);
    expect(r.code, r.err).toBe(0);
    const lines = r.raw.split("\r\n");
    expect(lines.filter((l) => l.startsWith("request_id,"))).toHaveLength(1);
    expect(lines.slice(1, -1).map((l) => l.split(",")[0]).sort()).toEqual([oldId, newId].sort());
    // As JSON: one array holding each key's list, which a program parses whole.
    const json = await run(["--key", "team-c", "--itemise", "--format", "json"]);
    expect(json.code, json.err).toBe(0);
    const lists = JSON.parse(json.raw) as { key_id: string; data: { request_id: string }[] }[];
    expect(lists.map((l) => l.key_id).sort()).toEqual([old.id, now.id].sort());
    expect(lists.flatMap((l) => l.data.map((d) => d.request_id)).sort()).toEqual([oldId, newId].sort());
  });

  it("needs --key, and takes no --group or table", async () => {
    expect((await run(["--itemise"], "http://127.0.0.1:9")).err).toContain("give --key");
    expect((await run(["--itemise", "--key", "x", "--format", "table"], "http://127.0.0.1:9")).err).toContain("--format");
    expect((await run(["--itemise", "--key", "x", "--group", "day"], "http://127.0.0.1:9")).err).toContain("--group is for the usage report");
  });
});

describe("report-usage --itemise over a name two keys had, the second key's CSV header arriving in pieces", () => {
  /** Each key's CSV sent as `first`, then 50 ms later the rest of its header and its row. */
  const itemisedIn = async (first: string) => {
    const revoked = { ...LISTED_KEY, revoked_at: "2026-11-20T10:00:00.000Z" };
    const current = { ...LISTED_KEY, id: "BBBBBBBBBBBB", created_at: "2026-11-20T10:01:00.000Z" };
    const server = createServer((req, res) => {
      req.resume();
      if (req.url === "/admin/keys") return void res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ object: "list", data: [revoked, current] }));
      const key = new URL(req.url!, "http://x").searchParams.get("key")!;
      res.writeHead(200, { "content-type": "text/csv" });
      res.write(first);
      setTimeout(() => res.end(`${"request_id,key_id,status\r\n".slice(first.length)}req-${key},${key},200\r\n`), 50);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const r = await run(["--key", LISTED_KEY.name, "--itemise"], `http://127.0.0.1:${(server.address() as AddressInfo).port}`, "token");
      expect(r.code, r.err).toBe(0);
      expect(r.raw.split("\r\n")).toEqual(["request_id,key_id,status", "req-AAAAAAAAAAAA,AAAAAAAAAAAA,200", "req-BBBBBBBBBBBB,BBBBBBBBBBBB,200", ""]);
    } finally {
      server.close();
    }
  };
  // The header cut where a network may cut it: its first piece has no line end yet.
  it("still one header, then each key's rows whole", () => itemisedIn("request_id,key_"));
  // Cut inside its line end: the second key's first row is not taken for the rest of its header.
  it("cut between the header's CR and LF, the second key's first row is kept", () => itemisedIn("request_id,key_id,status\r"));
});

describe("a shim older than GET /admin/requests", () => {
  it("says so, and where else the row is", async () => {
    const server = createServer((req, res) => {
      req.resume();
      if (req.url === "/admin/keys") return void res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ object: "list", data: [LISTED_KEY] }));
      res.writeHead(404, { "content-type": "application/json" }).end(JSON.stringify({ error: { message: "Not found.", type: "invalid_request_error", param: null, code: "not_found" } }));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      for (const argv of [["--request", "abc"], ["--key", LISTED_KEY.id, "--itemise"]]) {
        const r = await run(argv, url, "token");
        expect(r.code).toBe(4);
        expect(r.err).toContain("older than GET /admin/requests");
        expect(r.err).toContain("backup-ledger");
      }
    } finally {
      server.close();
    }
  });
});

describe("report-usage --request of a running request: its key from the answer's running.key_id, not its message's words", () => {
  it("names the key (and only finds it for that --key) whatever the message says", async () => {
    const other = { ...LISTED_KEY, id: "BBBBBBBBBBBB", name: "team-08" };
    // A message worded otherwise than today's shim's ("… key AAAAAAAAAAAA, …"): a word after "key" that is no key id.
    const message = "Request abc has not ended: the key named in `running` holds 2 credits for it.";
    const server = createServer((req, res) => {
      req.resume();
      if (req.url === "/admin/keys") return void res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ object: "list", data: [LISTED_KEY, other] }));
      const running = { request_id: "abc", key_id: LISTED_KEY.id, since: "2026-12-07T22:00:00.000Z", running_ms: 4000, route: "chat", model: "qwen2.5-7b", held: 2, joined_request_id: null };
      res.writeHead(404, { "content-type": "application/json" }).end(JSON.stringify({ error: { message, type: "invalid_request_error", param: "request_id", code: "request_running", running }, running }));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const r = await run(["--request", "abc"], url, "token");
      expect(r.code).toBe(3);
      expect(r.err).toContain(message);
      expect(r.err).toContain(`(Key ${LISTED_KEY.id} is ${LISTED_KEY.name}.)`);
      const mine = await run(["--request", "abc", "--key", LISTED_KEY.name], url, "token");
      expect(mine.code, mine.err).toBe(3);
      const others = await run(["--request", "abc", "--key", other.name], url, "token");
      expect(others.code).toBe(4);
      expect(others.err).toContain(`its key is ${LISTED_KEY.id}`);
    } finally {
      server.close();
    }
  });
});

describe("report-usage --request: what each kind of row means", () => {
  const row = (over: Partial<RequestRowJson>): RequestRowJson => ({
    request_id: "0123456789abcdef0123456789abcdef", key_id: "AAAAAAAAAAAA", at: "2026-12-07T14:02:00.000Z", route: "chat", model: "qwen2.5-7b", status: 200,
    stream: false, batch: false, served: true, reported: true, prompt_tokens: 10, cached_tokens: 0, completion_tokens: 5, total_tokens: 15, cost: 0.5, price_id: "p1", ms: 120, ...over,
  });

  it("a request its client left (499): a stream is charged what was generated, one not streamed is charged whole, and says why", () => {
    const notStreamed = formatRequestRow(row({ status: 499, stream: false }), "team-a");
    expect(notStreamed).toContain("Charged 0.5 credits: the client (or a proxy between) closed the connection before the answer came; a request not streamed is generated to its end and charged whole");
    const streamed = formatRequestRow(row({ status: 499, stream: true }), "team-a");
    expect(streamed).toContain("Charged 0.5 credits: the client (or a proxy between) closed the stream; it is charged what was generated before");
  });

  it("a failure after the model's work is charged; one after it served a part, or nothing, is not, each said so", () => {
    expect(formatRequestRow(row({ status: 502, cost: 0.25 }), undefined)).toContain("Charged 0.25 credits: it failed (status 502) after the model had done work, which is charged; counted in the usage reports.");
    expect(formatRequestRow(row({ status: 502, cost: 0, served: true }), undefined)).toContain("Not charged: it failed (status 502); nothing was charged");
    expect(formatRequestRow(row({ status: 502, cost: 0, served: false, reported: false }), undefined)).toContain("Not charged: the model served nothing (status 502");
  });

  it("a joined retry's or a replayed re-send's row: not charged, the request it joined named, to look up for the charge; an ordinary row names none", () => {
    const joined = formatRequestRow(row({ cost: 0, served: false, reported: false, prompt_tokens: 0, completion_tokens: 0, total_tokens: 0, price_id: null, joined_request_id: "first-attempt" }), "team-a");
    expect(joined).toMatch(/joined: +first-attempt\n/);
    expect(joined).toContain("Not charged: it was answered with request first-attempt's generation (a retry that joined it, or a re-send with its Idempotency-Key), whose row has the charge: report-usage --request first-attempt; not counted in the usage reports (that request is).");
    expect(joined).not.toContain("price:"); // no price: nothing was charged at one
    for (const j of [null, undefined]) expect(formatRequestRow(row({ joined_request_id: j }), undefined)).not.toContain("joined");
  });

  it("a row written before a column was recorded says unknown, not a made-up value", () => {
    const old = formatRequestRow(row({ batch: null, cached_tokens: null, price_id: null, ms: null, stream: null }), undefined);
    expect(old).toMatch(/batch: +unknown \(not recorded before 2026-12-07\)/);
    expect(old).toMatch(/cached tokens: +unknown \(not recorded before 2026-12-07\)/);
    expect(old).toMatch(/price: +unknown \(not recorded before 2026-12-07\)/);
    expect(old).toMatch(/took: +unknown/);
    expect(old).toMatch(/stream: +unknown/);
  });
});
