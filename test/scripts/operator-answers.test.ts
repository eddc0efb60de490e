// What operators rely on in the scripts' answers that no test pinned (found by a mutation review):
// figures in tables, which key a name means, and a write whose answer was lost told as maybe applied.
import { createServer, type Server } from "node:http";
import { afterEach, describe, expect, it } from "vitest";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { main as listTenants } from "../../scripts/list-tenants.ts";
import { main as reportUsage } from "../../scripts/report-usage.ts";
import { tempDir } from "../support/tools.ts";
import { FakePulumi } from "./fake-pulumi.ts";
import { failedDeployResources, fixtureTenants, NOW } from "./tenant-fixtures.ts";


let server: Server | undefined;
afterEach(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = undefined;
});

/** Serves `handler` on a loopback port (closed after the test): its base URL. */
async function serve(handler: Parameters<typeof createServer>[1]): Promise<string> {
  server = createServer(handler);
  await new Promise<void>((resolve) => server!.listen(0, "127.0.0.1", resolve));
  return `http://127.0.0.1:${(server!.address() as { port: number }).port}`;
}

/** A fake admin API answering each path (without its query) with JSON. */
async function fakeAdmin(answers: Record<string, unknown>): Promise<string> {
  return serve((req, res) => {
    req.resume();
    const path = (req.url ?? "").split("?")[0]!;
    const body = answers[path];
    if (body === undefined) res.writeHead(404, { "content-type": "application/json" }).end(JSON.stringify({ error: { message: "nope", code: "not_found" } }));
    else res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(body));
  });
}

const key = (id: string, name: string) => ({
  object: "api_key", id, name, tier: "free", models: null, balance: 1, held: 0, credits_remaining: 1,
  created_at: "2026-03-01T00:00:00.000Z", expires_at: null, revoked_at: null,
});

describe("report-usage --group day, as a table", () => {
  it("the DAY column shows each row's day, not its (absent) model", async () => {
    const url = await fakeAdmin({
      "/admin/keys": { object: "list", data: [key("k1", "team-a")] },
      "/admin/usage": {
        object: "usage_report", period: { start: "2026-03-01T00:00:00.000Z", end: "2026-04-01T00:00:00.000Z" }, group: "day",
        data: [{ key_id: "k1", day: "2026-03-02", requests: 2, prompt_tokens: 10, completion_tokens: 5, total_tokens: 15, cost: 2.5 }],
      },
    });
    const io = memoryIo();
    const code = await reportUsage(["--url", url, "--group", "day"], { io, env: { GPU_SANDBOX_ADMIN_TOKEN: "t" }, pulumi: new FakePulumi(), root: tempDir() });
    expect(code, io.stderr.join("\n")).toBe(0);
    const lines = io.stdout.join("\n").split("\n");
    expect(lines.find((l) => l.startsWith("KEY"))).toMatch(/^KEY +NAME +DAY +REQUESTS/);
    expect(lines.find((l) => l.startsWith("k1"))).toMatch(/^k1 +team-a +2026-03-02 +2 +10 +5 +15 +2\.5$/);
  });
});

describe("list-tenants' running total", () => {
  it("counts a failed deploy not yet expired (status 'failed deploy (resources exist)'): its instance bills", async () => {
    const { root, pulumi } = fixtureTenants();
    // delta (ttlHours 1, g2-gpu-rtx4000a1-m: $0.68/hour): the host was made at 11:30 and the deploy failed; it expires at 12:30.
    pulumi.stacks.set("delta", { outputs: {}, resources: failedDeployResources("delta", "2026-03-01T11:30:00Z") });
    const io = memoryIo();
    expect(await listTenants([], { root, pulumi, io, env: {}, now: () => NOW })).toBe(1); // golf is unknown
    const lines = io.stdout.join("\n").split("\n");
    expect(lines.find((l) => l.startsWith("delta"))).toMatch(/ 0\.68 .* failed deploy \(resources exist\)$/);
    // alpha 0.53 + bravo 1.06 + charlie 1.51 + foxtrot 0.53 + india 0.97 + delta 0.68 (foxtrot: expired, endpoint only)
    expect(lines.at(-1)).toBe("9 tenants, 6 running ($5.28/hour together), 1 unknown: their cost is not included.");
  });

  it("adds the rows' costs as the table shows them (to the cent, rounded), not truncated", async () => {
    const { root, pulumi } = fixtureTenants();
    // Outputs whose hourly cost has more places than the table shows: 0.5479 shows as 0.55.
    for (const stack of ["alpha", "india"]) {
      const s = pulumi.stacks.get(stack)!;
      pulumi.stacks.set(stack, { ...s, outputs: { ...s.outputs, hourlyCostUsd: 0.5479 } });
    }
    const io = memoryIo();
    await listTenants([], { root, pulumi, io, env: {}, now: () => NOW });
    const lines = io.stdout.join("\n").split("\n");
    expect(lines.find((l) => l.startsWith("alpha"))).toMatch(/ 0\.55 /);
    // 0.55 + bravo 1.06 + charlie 1.51 + foxtrot 0.53 + india 0.55
    expect(lines.at(-1)).toBe("9 tenants, 5 running ($4.20/hour together), 1 unknown: their cost is not included.");
  });
});

describe("manage-keys top-up whose answer is cut off after its 200 headers", () => {
  it("says the top-up may have been applied and gives the retry with the same Idempotency-Key (a plain rerun would credit twice)", async () => {
    const { main: manageKeys } = await import("../../scripts/manage-keys.ts");
    const url = await serve((req, res) => {
      req.resume();
      if (req.method === "GET" && req.url === "/admin/keys") {
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ object: "list", data: [key("k1", "team-a")] }));
        return;
      }
      // The grant was made; its answer breaks off half way.
      res.writeHead(200, { "content-type": "application/json", "content-length": "500" });
      res.write('{"object":"credit_grant","key_id":"k1",');
      setTimeout(() => res.socket?.destroy(), 20);
    });
    const io = memoryIo();
    const code = await manageKeys(["top-up", "--url", url, "--key", "k1", "--amount", "5", "--idempotency-key", "inv-1"],
      { io, env: { GPU_SANDBOX_ADMIN_TOKEN: "t" }, pulumi: new FakePulumi(), root: tempDir() });
    expect(code).toBe(5);
    const err = io.stderr.join("\n");
    expect(err).toContain("was cut off");
    expect(err).toContain("The top-up may have been applied. Retry it with the same Idempotency-Key");
    expect(err).toContain("--idempotency-key=inv-1");
  });
});

describe("manage-keys revoke by a name whose every key is revoked", () => {
  it("answers for the last key revoked with that name (the rotation's), exit 0, nothing sent", async () => {
    const { main: manageKeys } = await import("../../scripts/manage-keys.ts");
    const methods: string[] = [];
    const url = await serve((req, res) => {
      req.resume();
      methods.push(`${req.method} ${req.url}`);
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ object: "list", data: [
        { ...key("kold", "team-07"), revoked_at: "2026-03-01T10:00:00.000Z" },
        { ...key("knew", "team-07"), revoked_at: "2026-03-02T10:00:00.000Z" },
      ] }));
    });
    const io = memoryIo();
    const code = await manageKeys(["revoke", "--url", url, "--key", "team-07"],
      { io, env: { GPU_SANDBOX_ADMIN_TOKEN: "t" }, pulumi: new FakePulumi(), root: tempDir() });
    expect(code, io.stderr.join("\n")).toBe(0);
    expect(io.stdout.join("\n")).toBe("Key team-07 (knew) was already revoked, at 2026-03-02T10:00:00Z; nothing changed.");
    expect(methods).toEqual(["GET /admin/keys"]);
  });
});

describe("manage-keys update by name", () => {
  it("changes the key in use with that name, not a revoked namesake listed before it", async () => {
    const { main: manageKeys } = await import("../../scripts/manage-keys.ts");
    const sent: string[] = [];
    const live = key("knew", "team-07");
    const url = await serve((req, res) => {
      req.resume();
      sent.push(`${req.method} ${req.url}`);
      if (req.method === "GET") {
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ object: "list", data: [
          { ...key("kold", "team-07"), revoked_at: "2026-03-01T10:00:00.000Z" }, live,
        ] }));
      } else {
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ ...live, tier: "pro" }));
      }
    });
    const io = memoryIo();
    const code = await manageKeys(["update", "--url", url, "--key", "team-07", "--tier", "pro"],
      { io, env: { GPU_SANDBOX_ADMIN_TOKEN: "t" }, pulumi: new FakePulumi(), root: tempDir() });
    expect(code, io.stderr.join("\n")).toBe(0);
    expect(sent).toEqual(["GET /admin/keys", "PATCH /admin/keys/knew"]);
  });
});

describe("manage-keys top-up whose connection is reset after the request was sent", () => {
  it("says the top-up may have been applied (a reset may come after the API acted), with the retry", async () => {
    const { main: manageKeys } = await import("../../scripts/manage-keys.ts");
    const url = await serve((req, res) => {
      if (req.method === "GET") {
        req.resume();
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ object: "list", data: [key("k1", "team-a")] }));
        return;
      }
      // The whole request read (the API may have acted on it), then the connection reset.
      req.on("data", () => {});
      req.on("end", () => req.socket.resetAndDestroy());
    });
    const io = memoryIo();
    const code = await manageKeys(["top-up", "--url", url, "--key", "k1", "--amount", "5", "--idempotency-key", "inv-2"],
      { io, env: { GPU_SANDBOX_ADMIN_TOKEN: "t" }, pulumi: new FakePulumi(), root: tempDir() });
    expect(code).toBe(5);
    const err = io.stderr.join("\n");
    expect(err, err).toContain("ECONNRESET");
    expect(err).toContain("The top-up may have been applied. Retry it with the same Idempotency-Key");
  });
});
