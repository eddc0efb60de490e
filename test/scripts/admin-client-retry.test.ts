import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { AdminApiError, adminClient } from "../../scripts/lib/admin-client.ts";

/**
 * A 429 (nginx's per-address limit, or the shim's) means the request was not processed: the
 * admin client waits the answer's Retry-After (capped) and sends it again, a few times. A small
 * server on loopback answers 429 a given number of times, then the API's answer.
 */
/** The OS picks the port: a fixed one inside Linux's ephemeral range (32768-60999) can be taken by any outgoing connection. */
let port = 0;
let server: Server;
/** What each 429 says: its Retry-After header (none when undefined). */
let refusals: (string | undefined)[] = [];
let seen: IncomingHttpHeaders[] = [];
let waits: number[] = [];
let lines: string[] = [];

const GRANT = { object: "credit_grant", key_id: "k1", amount: 5, note: null, balance: 5, credits_remaining: 5 };
const NGINX_429 = '{"error":{"message":"Too many requests from your address; retry after 1 second.","type":"rate_limit_exceeded","param":null,"code":"rate_limit_exceeded","retry_after":1}}';

beforeAll(async () => {
  server = createServer((req, res) => {
    seen.push(req.headers);
    req.resume();
    req.on("end", () => {
      if (refusals.length > 0) {
        const after = refusals.shift();
        res.writeHead(429, { "content-type": "application/json", ...(after === undefined ? {} : { "retry-after": after }) }).end(NGINX_429);
      } else {
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(GRANT));
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as { port: number }).port;
});

afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

beforeEach(() => {
  refusals = []; seen = []; waits = []; lines = [];
});

const client = () => adminClient({ baseUrl: `http://127.0.0.1:${port}`, adminToken: "t0ken", source: "test" }, fetch, {
  progress: (line) => lines.push(line),
  sleep: async (ms) => { waits.push(ms); },
});

it("sends a top-up again after a 429's Retry-After, with the same Idempotency-Key, and says it waits", async () => {
  refusals = ["2"];
  const grant = await client().topUp("k1", { amount: "5" }, "idem-123");
  expect(grant.balance).toBe(5);
  expect(seen.map((h) => h["idempotency-key"])).toEqual(["idem-123", "idem-123"]);
  expect(waits).toEqual([2000]);
  expect(lines).toHaveLength(1);
  expect(lines[0]).toContain("POST /admin/keys/k1/credits: 429 rate_limit_exceeded: Too many requests from your address");
  expect(lines[0]).toContain("Waiting 2 s, then sending it again (retry 1 of 5)");
});

it("caps each wait at 30 s, and waits 1 s when the 429 gives no (or no usable) Retry-After", async () => {
  refusals = ["3600", undefined, "soon", "0"];
  await client().topUp("k1", { amount: "5" }, "idem-1");
  expect(waits).toEqual([30_000, 1000, 1000, 0]);
  expect(seen).toHaveLength(5);
});

it("waits a fractional Retry-After (rounded up to the ms), and an HTTP date until then, not a number read as a date", async () => {
  // Date.parse("1.5") is a date in 2001: it was waited as 0 s, five retries back to back.
  refusals = ["1.5", "0.5", "0.0004", new Date(Date.now() + 10_000).toUTCString(), "1.5.2"];
  await client().topUp("k1", { amount: "5" }, "idem-1");
  expect(waits.slice(0, 3)).toEqual([1500, 500, 1]);
  expect(waits[3]).toBeGreaterThanOrEqual(8000);
  expect(waits[3]).toBeLessThanOrEqual(11_000);
  expect(waits[4]).toBe(1000);
  expect(lines[0]).toContain("Waiting 1.5 s");
});

it("gives up after 5 retries with the 429 as the error, saying how long it tried", async () => {
  refusals = ["1", "1", "1", "1", "1", "1", "1"];
  const err = await client().revokeKey("k1").catch((e: unknown) => e);
  expect(err).toBeInstanceOf(AdminApiError);
  expect(err).toMatchObject({ status: 429, outcome: "refused", code: "rate_limit_exceeded" });
  expect((err as Error).message).toMatch(/429 rate_limit_exceeded: Too many requests from your address.*\n.*still refused after 5 retries/s);
  expect(seen).toHaveLength(6);
  expect(waits).toEqual([1000, 1000, 1000, 1000, 1000]);
});

it("says once that the admin token goes over plain http to a host that is not loopback (tls.mode off), and not for loopback", async () => {
  // A fetch that answers for any host: the request's URL is what matters here.
  const answer: typeof fetch = async () => new Response(JSON.stringify(GRANT), { status: 200, headers: { "content-type": "application/json" } });
  const remote = adminClient({ baseUrl: "http://192.0.2.10", adminToken: "t0ken", source: "test" }, answer, { progress: (line) => lines.push(line) });
  await remote.topUp("k1", { amount: "5" }, "idem-1");
  await remote.topUp("k1", { amount: "5" }, "idem-2");
  expect(lines).toEqual([expect.stringMatching(/^warning: http:\/\/192\.0\.2\.10 is plain http: the admin token \(and any key created\) crosses the network unencrypted/)]);
  lines = [];
  for (const baseUrl of ["https://192.0.2.10", "http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"]) {
    await adminClient({ baseUrl, adminToken: "t0ken", source: "test" }, answer, { progress: (line) => lines.push(line) }).topUp("k1", { amount: "5" }, "idem-3");
  }
  expect(lines).toEqual([]);
});

it("findKey: a name as given first (a SHIM_CONFIG bootstrap key may keep spaces), else trimmed as the admin API stores it", async () => {
  const { findKey } = await import("../../scripts/lib/admin-client.ts");
  const key = (id: string, name: string) => ({ id, name, object: "api_key", tier: "free", models: null, balance: "1", held: "0", credits_remaining: "1", created_at: "2026-01-01T00:00:00Z", revoked_at: null, expires_at: null }) as unknown as Parameters<typeof findKey>[0][number];
  const both = [key("aaaaaaaaaaaa", "team-07"), key("bbbbbbbbbbbb", " team-07")];
  expect(findKey(both, " team-07").id).toBe("bbbbbbbbbbbb");
  expect(findKey(both, "team-07").id).toBe("aaaaaaaaaaaa");
  expect(findKey([key("aaaaaaaaaaaa", "team-07")], " team-07 ").id).toBe("aaaaaaaaaaaa");
  expect(findKey([key("bbbbbbbbbbbb", " team-07")], " team-07").id).toBe("bbbbbbbbbbbb");
});

it("the plain-http warning leaves every name of this machine alone", async () => {
  const answer: typeof fetch = async () => new Response(JSON.stringify(GRANT), { status: 200, headers: { "content-type": "application/json" } });
  for (const baseUrl of ["http://localhost.:8080", "http://api.localhost:8080", "http://0.0.0.0:8080", "http://127.1:8080"]) {
    await adminClient({ baseUrl, adminToken: "t0ken", source: "test" }, answer, { progress: (line) => lines.push(line) }).topUp("k1", { amount: "5" }, "idem-4");
  }
  expect(lines).toEqual([]);
});

describe("a shim restarting (nginx's 502 with Retry-After 5, or its 503 with one)", () => {
  const NGINX_502 = '{"error":{"message":"The service is not reachable; retry shortly.","type":"api_error","param":null,"code":"upstream_error"}}';
  const KEY = { id: "k1", object: "api_key", name: "team-07", tier: "free", models: null, balance: 5, held: 0, credits_remaining: 5, created_at: "2026-01-01T00:00:00Z", expires_at: null, revoked_at: null };
  /** A front that answers `down` 502s (or 503s) with `retryAfter`, then the API's answer; it counts what it is sent. */
  function restarting(down: number, status = 502, retryAfter: string | null = "5") {
    const sent: string[] = [];
    const fetchImpl: typeof fetch = async (url, init) => {
      sent.push(`${init?.method} ${new URL(String(url)).pathname}`);
      if (sent.length <= down) return new Response(NGINX_502, { status, headers: { "content-type": "application/json", ...(retryAfter === null ? {} : { "retry-after": retryAfter }) } });
      const body = init?.method === "GET" ? { object: "list", data: [KEY] } : { ...GRANT, replayed: false };
      return new Response(JSON.stringify(body), { status: 200, headers: { "content-type": "application/json" } });
    };
    const client = adminClient({ baseUrl: "http://127.0.0.1:9", adminToken: "t0ken", source: "test" }, fetchImpl, {
      progress: (line) => lines.push(line),
      sleep: async (ms) => { waits.push(ms); },
    });
    return { client, sent };
  }

  it("a read (GET) waits the Retry-After and is sent again until the shim is back, saying so on stderr", async () => {
    const { client, sent } = restarting(3);
    expect((await client.listKeys()).map((k) => k.id)).toEqual(["k1"]);
    expect(sent).toEqual(Array(4).fill("GET /admin/keys"));
    expect(waits).toEqual([5000, 5000, 5000]);
    expect(lines[0]).toBe("admin API GET /admin/keys: 502 upstream_error: The service is not reachable; retry shortly. Waiting 5 s, then sending it again (retry 1 of 12)…");
    const unavailable = restarting(1, 503, "2");
    expect(await unavailable.client.listKeys()).toHaveLength(1);
    expect(unavailable.sent).toHaveLength(2);
  });

  it("gives up after 12 retries (about a minute), saying the shim is down or keeps restarting", async () => {
    const { client, sent } = restarting(100);
    const err = await client.usage({}).catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 502, outcome: "unknown" });
    expect((err as Error).message).toMatch(/502 upstream_error: The service is not reachable.*\n.*still unavailable after 12 retries.*down or keeps restarting/s);
    expect(sent).toHaveLength(13);
  });

  it("a write is not sent again (it may have been applied), nor a 502 without a Retry-After", async () => {
    const write = restarting(1);
    const err = await write.client.topUp("k1", { amount: "5" }, "idem-1").catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 502, outcome: "unknown" });
    expect(write.sent).toEqual(["POST /admin/keys/k1/credits"]);
    const bare = restarting(1, 502, null);
    await expect(bare.client.listKeys()).rejects.toMatchObject({ status: 502 });
    expect(bare.sent).toHaveLength(1);
    expect(waits).toEqual([]);
  });
});
