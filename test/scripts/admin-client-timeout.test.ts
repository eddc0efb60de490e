import { createServer, type Server } from "node:http";
import { afterAll, beforeAll, expect, it } from "vitest";
import { AdminApiError, adminClient } from "../../scripts/lib/admin-client.ts";

/**
 * A usage report over a long period and many keys takes the shim up to its report limit (60 s)
 * plus the time to send it: the admin client waits longer for one than for other calls, and a
 * call that runs out of time says so, not "aborted due to timeout". A server on loopback answers
 * after `delayMs`; the client's bounds are scaled down for the test.
 */
let server: Server;
let port = 0;
const delayMs = 400;
const CSV = "key_id,day,requests,prompt_tokens,completion_tokens,total_tokens,cost\r\n";

beforeAll(async () => {
  server = createServer((req, res) => {
    req.resume();
    if (req.url === "/admin/backup") return; // held: only the client's bound ends it
    setTimeout(() => {
      if (req.url?.startsWith("/admin/usage")) res.writeHead(200, { "content-type": "text/csv" }).end(CSV);
      else res.writeHead(200, { "content-type": "application/json" }).end('{"object":"list","data":[]}');
    }, delayMs);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as { port: number }).port;
});

afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

const client = () => adminClient({ baseUrl: `http://127.0.0.1:${port}`, adminToken: "t0ken", source: "test" }, fetch, { timeouts: { requestMs: 200, reportMs: 2000 } });

it("waits for a usage report longer than for other calls", async () => {
  expect(await client().usageCsv({ group: "day", from: "2000-01-01", to: "2026-03-02" })).toBe(CSV);
});

it("says a call that ran out of time did not answer within its bound", async () => {
  const err = await client().listKeys().catch((e: unknown) => e);
  expect(err).toBeInstanceOf(AdminApiError);
  expect((err as Error).message).toMatch(/^no answer from the admin API to GET http:\/\/127\.0\.0\.1:\d+\/admin\/keys within 0\.2 s, after the request was sent/);
});

it("a backup has its own bound, not the one of other calls (its download takes minutes)", async () => {
  // The server holds the backup's answer: the call ends only when its own bound (1 ms here) ends it.
  const c = adminClient({ baseUrl: `http://127.0.0.1:${port}`, adminToken: "t0ken", source: "test" }, fetch, { timeouts: { requestMs: 3_600_000, reportMs: 3_600_000, backupMs: 1 } });
  const err = await c.backup().catch((e: unknown) => e);
  expect(err).toBeInstanceOf(AdminApiError);
  expect((err as Error).message).toMatch(/^no answer from the admin API to GET http:\/\/127\.0\.0\.1:\d+\/admin\/backup within 0\.001 s/);
});
