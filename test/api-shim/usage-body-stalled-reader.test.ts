import { rmSync } from "node:fs";
import { type AddressInfo, connect, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import Fastify, { type FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";

/** /proc/net/tcp reads by write-progress.ts, counted. */
const procReads = vi.hoisted(() => ({ n: 0 }));
vi.mock("node:fs/promises", async (importOriginal) => {
  const real = await importOriginal<typeof import("node:fs/promises")>();
  return { ...real, readFile: ((path: string, ...rest: unknown[]) => {
    if (String(path).startsWith("/proc/net/tcp")) procReads.n++;
    return (real.readFile as (...a: unknown[]) => unknown)(path, ...rest);
  }) as typeof real.readFile };
});
import type { ShimContext } from "../../api-shim/src/context.ts";
import { sendUsageBody } from "../../api-shim/src/routes/usage-body.ts";
import { SqliteReports } from "../../api-shim/src/store/sqlite-reports.ts";
import type { UsageQuery } from "../../api-shim/src/store/store.ts";
import { firstAndRest, usageBatches } from "../../api-shim/src/store/usage-batches.ts";
import { sqliteLedgerOfGroups } from "../support/usage-ledger.ts";

const IDLE_MS = 1000;
const ROWS = 60_000;

/**
 * A client that takes nothing of an /admin/usage body (found by review): the store gives its rows
 * up at its bound, and the body, paused at a write the connection does not take, must cut the
 * connection itself (it stayed open, its request in flight and its watcher reading /proc/net/tcp).
 */
describe("a stalled /admin/usage client on loopback TCP (SQLite, bound 1 s)", () => {
  let dir: string;
  let file: string;
  let reports: SqliteReports;
  let app: FastifyInstance;
  let port: number;
  const serverSockets: Socket[] = [];
  const clients: Socket[] = [];
  const all = { keyId: null, asker: null, from: 0, to: Date.now() + 86_400_000, group: "model" } as const satisfies UsageQuery;
  const nobody = { ...all, keyId: "nobody000000", asker: "nobody000000" } as const satisfies UsageQuery;

  beforeAll(async () => {
    ({ dir, file } = await sqliteLedgerOfGroups(ROWS, "stalled-reader-"));
    reports = new SqliteReports(file, { busyTimeoutMs: 1000, timeoutMs: IDLE_MS });
    app = Fastify();
    app.get("/report", async (request, reply) => {
      serverSockets.push(request.raw.socket);
      const left = new AbortController();
      reply.raw.once("close", () => reply.raw.writableFinished || left.abort(new Error("the client left")));
      return sendUsageBody({} as ShimContext, request, reply, usageBatches(await reports.batches({ ...all, signal: left.signal }, async () => {}).then(firstAndRest)), "json", "model", { object: "usage_report" });
    });
    await app.listen({ port: 0, host: "127.0.0.1" });
    port = (app.server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    for (const s of clients) s.destroy();
    await app.close();
    reports.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("has its report given up and its connection cut, and nothing watches it after", { timeout: 30_000 }, async () => {
    const c = connect(port, "127.0.0.1", () => c.write("GET /report HTTP/1.1\r\nHost: x\r\n\r\n"));
    clients.push(c);
    c.pause(); // takes nothing at all
    c.on("error", () => {});
    await sleep(300);
    const started = performance.now();
    expect(await reports.run(nobody, async () => {})).toEqual([]); // the report was given up: the turn passed
    expect(performance.now() - started).toBeLessThan(IDLE_MS + 3000);
    // The docs: "a client that keeps its connection open and reads nothing more is then cut (its
    // rows given up, logged as above)". Wait well past the bound and the check interval.
    await sleep(4 * IDLE_MS);
    // The report ended seconds ago: its watcher read /proc/net/tcp every 250 ms.
    const before = procReads.n;
    await sleep(2000);
    expect(procReads.n - before).toBe(0);
    expect(serverSockets.length).toBe(1);
    expect(serverSockets[0]!.destroyed).toBe(true);
  });
});
