// reap-expired --json: stdout holds one JSON array, a row per stack, what became of it, for a
// pipeline to branch on; every line the run prints goes to stderr then; printed when some stacks
// failed too, with the run's exit code as without it.
import { existsSync } from "node:fs";
import { createServer, request as httpRequest } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { memoryIo } from "../../scripts/lib/cli.ts";
import type { ReapRow } from "../../scripts/lib/reap-report.ts";
import { main } from "../../scripts/reap-expired.ts";
import { clockFrom } from "../support/clocks.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";
import { type FakePulumi } from "./fake-pulumi.ts";
import { failedDeployResources, fixtureTenants, NOW } from "./tenant-fixtures.ts";

let shim: Harness;
beforeAll(async () => {
  shim = await startShim({ clock: clockFrom(Date.parse("2026-03-01T09:00:00Z")) });
});
afterAll(async () => shim?.close());

/** The fixtures; bravo (expired) served by the test's shim unless `reachable` is false. */
/** The shim behind a front that answers requests under `route` 500 (the shim's internal_error), and forwards the rest. */
async function failingFront(route: string) {
  const up = new URL(shim.url);
  const front = createServer((req, res) => {
    if (req.url!.startsWith(route)) return void req.resume().on("end", () => res.writeHead(500, { "content-type": "application/json" }).end(JSON.stringify({ error: { message: "Internal error.", type: "api_error", param: null, code: "internal_error" } })));
    const fwd = httpRequest({ host: up.hostname, port: up.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    req.pipe(fwd);
  });
  await new Promise<void>((resolve) => front.listen(0, "127.0.0.1", resolve));
  return front;
}

async function reap(argv: string[], setup: (p: FakePulumi) => void = () => {}, reachable = true) {
  const { root, pulumi } = fixtureTenants();
  const bravo = pulumi.stacks.get("bravo")!;
  if (reachable) bravo.outputs = { ...bravo.outputs, endpoint: `${shim.url}/v1`, adminToken: shim.adminToken, createdAt: "2026-01-01T00:00:00Z" };
  setup(pulumi);
  const io = memoryIo();
  const code = await main(argv, { root, pulumi, io, env: {}, now: () => NOW });
  // stdout is the JSON alone: one write, which parses.
  expect(io.stdout, io.stderr.join("\n")).toHaveLength(1);
  const rows = JSON.parse(io.stdout[0]!) as ReapRow[];
  return { code, io, root, pulumi, rows, row: (stack: string) => rows.find((r) => r.stack === stack)!, err: io.stderr.join("\n") };
}

const actions = (rows: ReapRow[]) => Object.fromEntries(rows.map((r) => [r.stack, r.action]));

describe("reap-expired --json", () => {
  it("a dry run: a row per stack with its action and why, the lines on stderr; exit 1 as without --json (golf cannot be told)", async () => {
    const { code, rows, row, err } = await reap(["--json"]);
    expect(code).toBe(1);
    expect(actions(rows)).toEqual({
      alpha: "kept", bravo: "would-destroy", charlie: "kept", delta: "kept", echo: "kept", foxtrot: "would-destroy", golf: "unknown", hotel: "kept", india: "kept",
    });
    expect(row("alpha")).toEqual({
      stack: "alpha", action: "kept", expiresAt: "2026-03-02T10:00:00Z", failedDeploy: false, reason: "not expired (expires in 22h 0m)",
      usageFile: null, keysFile: null, creditsFile: null, revokedKeys: 0, unsureKeys: 0,
    });
    expect(row("bravo")).toMatchObject({ expiresAt: "2026-03-01T10:00:00Z", reason: null });
    expect(row("charlie")).toMatchObject({ expiresAt: null, reason: "not expired (no ttlHours)" });
    expect(row("echo").reason).toBe("not deployed (nothing to destroy)");
    expect(row("golf").reason).toContain("failed to load checkpoint: permission denied");
    expect(err).toContain("Dry run: would destroy 2 stack(s): bravo, foxtrot.");
  });

  it("--yes: destroyed rows name the usage, keys and credits files saved and the keys revoked; a stack with no usage says why", async () => {
    await shim.createKey({ name: "team-1", credits: 100 });
    const { code, row, err } = await reap(["--yes", "--json"], (p) => p.stacks.set("golf", { outputs: {} }));
    expect(code, err).toBe(0);
    const bravo = row("bravo");
    expect(bravo).toMatchObject({ action: "destroyed", reason: null, revokedKeys: 1, unsureKeys: 0 });
    expect(bravo.usageFile).toMatch(/\/usage\/bravo-usage-[^/]+\.csv$/);
    expect(bravo.keysFile).toMatch(/\/usage\/bravo-keys-[^/]+\.json$/);
    expect(bravo.creditsFile).toMatch(/\/usage\/bravo-credits-[^/]+\.json$/);
    expect(existsSync(bravo.usageFile!) && existsSync(bravo.keysFile!) && existsSync(bravo.creditsFile!)).toBe(true);
    expect(row("foxtrot")).toMatchObject({ action: "destroyed", usageFile: null, reason: "no usage to save: no endpoint: the serving stack was never deployed" });
    expect(err).toContain("[bravo] destroyed in");
  });

  it("a stack whose first `pulumi up` failed, leaving an instance that bills, says failedDeploy (as list-tenants --json); a deployed one does not", async () => {
    const { row } = await reap(["--json"], (p) => p.stacks.set("delta", { outputs: {}, resources: failedDeployResources("delta", "2026-03-01T10:00:00Z") }));
    expect(row("delta")).toMatchObject({ action: "would-destroy", failedDeploy: true, expiresAt: "2026-03-01T11:00:00Z" });
    expect(row("bravo")).toMatchObject({ action: "would-destroy", failedDeploy: false });
  });

  it("an export that fails after it revoked the tenant's keys (its usage report refused) says in its failed row how many it revoked", async () => {
    await shim.createKey({ name: "team-2", credits: 100 });
    const listed = ((await (await shim.admin("/admin/keys")).json()) as { data: { revoked_at: string | null }[] }).data;
    const live = listed.filter((k) => k.revoked_at === null).length;
    expect(live).toBeGreaterThan(0);
    // The shim behind a front that answers its usage report 500: the keys are revoked, the usage not saved.
    const front = await failingFront("/admin/usage");
    try {
      const { code, row } = await reap(["--yes", "--json"], (p) => {
        p.stacks.set("golf", { outputs: {} });
        const bravo = p.stacks.get("bravo")!;
        bravo.outputs = { ...bravo.outputs, endpoint: `http://127.0.0.1:${(front.address() as AddressInfo).port}/v1` };
      });
      expect(code).toBe(1);
      expect(row("bravo")).toMatchObject({ action: "failed", usageFile: null, revokedKeys: live, unsureKeys: 0 });
    } finally {
      front.close();
      front.closeAllConnections();
    }
  });

  it("a credits statement the shim failed to give (500) fails the export: not destroyed, not taken for an older shim's missing route", async () => {
    // Destroyed without it, the tenant's grants, top-ups and write-offs (and the invoice numbers
    // on them) would be gone with the volume; a 500 may pass, so the next run tries again.
    const front = await failingFront("/admin/credits");
    try {
      const { code, row, err, pulumi } = await reap(["--yes", "--json"], (p) => {
        p.stacks.set("golf", { outputs: {} });
        const bravo = p.stacks.get("bravo")!;
        bravo.outputs = { ...bravo.outputs, endpoint: `http://127.0.0.1:${(front.address() as AddressInfo).port}/v1` };
      });
      expect(code).toBe(1);
      expect(row("bravo")).toMatchObject({ action: "failed", usageFile: null, creditsFile: null });
      expect(pulumi.stacks.get("bravo")!.outputs?.endpoint).toBeDefined(); // a destroy empties its outputs
      expect(err).not.toContain("older than GET /admin/credits");
    } finally {
      front.close();
      front.closeAllConnections();
    }
  });

  it("a failed export and a failed destroy are \"failed\" rows with why, printed though the run exits 1", async () => {
    const { code, row } = await reap(["--yes", "--json"], (p) => {
      p.stacks.set("golf", { outputs: {} });
      p.script = (args) => (args[0] === "destroy" && p.stackArg(args) === "foxtrot" ? { exitCode: 255, stderr: "error: the stack is currently locked by 1 lock(s)" } : undefined);
    }, false);
    expect(code).toBe(1);
    expect(row("bravo").action).toBe("failed");
    expect(row("bravo").reason).toMatch(/^could not save its usage: /);
    expect(row("foxtrot")).toMatchObject({
      action: "failed", reason: "`pulumi destroy --yes --non-interactive --refresh --stack foxtrot` exited 255: error: the stack is currently locked by 1 lock(s)",
    });
  });

  it("a run that throws in a stack (its destroy rejects, a bug's path) prints the rows so far, that stack failed with the error, then fails as without --json", async () => {
    const run = async (argv: string[]) => {
      const { root, pulumi } = fixtureTenants();
      const bravo = pulumi.stacks.get("bravo")!;
      bravo.outputs = { ...bravo.outputs, endpoint: `${shim.url}/v1`, adminToken: shim.adminToken, createdAt: "2026-01-01T00:00:00Z" };
      pulumi.stacks.set("golf", { outputs: {} });
      pulumi.script = (args) => {
        if (args[0] === "destroy" && pulumi.stackArg(args) === "bravo") throw Object.assign(new Error("spawn pulumi EAGAIN"), { code: "EAGAIN" });
        return undefined;
      };
      const io = memoryIo();
      // The error is thrown on (a stack trace, exit 1), with or without --json.
      await expect(main(argv, { root, pulumi, io, env: {}, now: () => NOW })).rejects.toThrow("spawn pulumi EAGAIN");
      return io;
    };
    const io = await run(["--yes", "--json", "--concurrency", "1"]);
    expect(io.stdout, io.stderr.join("\n")).toHaveLength(1);
    const rows = JSON.parse(io.stdout[0]!) as ReapRow[];
    const row = (stack: string) => rows.find((r) => r.stack === stack)!;
    expect(row("bravo")).toMatchObject({ action: "failed", reason: "spawn pulumi EAGAIN", revokedKeys: expect.any(Number) });
    expect(row("bravo").usageFile).toMatch(/bravo-usage-/); // what was done before the throw: its usage saved
    // No further stack is started after it: foxtrot, due too, is told as not started.
    expect(row("foxtrot")).toMatchObject({ action: "interrupted", reason: "not started: the run stopped on an error in bravo" });
    expect(actions(rows)).toMatchObject({ alpha: "kept", golf: "kept" });
    expect(io.stderr.join("\n")).toContain("Stopped on an error in bravo; not started: foxtrot. Run reap-expired again once it is fixed.");
    expect((await run(["--yes", "--concurrency", "1"])).stdout.join("\n")).toContain("[bravo] destroying");
  });

  it("--force: a stack destroyed without its usage says why in its reason", async () => {
    const { code, row } = await reap(["--yes", "--json", "--force", "bravo"], (p) => p.stacks.set("golf", { outputs: {} }), false);
    expect(code).toBe(0);
    expect(row("bravo").action).toBe("destroyed");
    expect(row("bravo").reason).toMatch(/^could not save its usage \(.+\); destroyed anyway \(--force\)$/);
    expect(row("bravo").usageFile).toBeNull();
  });

  it("a stack whose expiresAt moved during the run is kept, with the expiry it has now (to the second, as every row's)", async () => {
    const { code, row } = await reap(["--yes", "--json"], (p) => {
      p.stacks.set("golf", { outputs: {} });
      const bravo = p.stacks.get("bravo")!;
      p.script = (args) => (args.includes("--show-secrets") && p.stackArg(args) === "bravo" ? { stdout: JSON.stringify({ ...bravo.outputs, expiresAt: "2026-03-02T10:00:00.000Z" }) } : undefined);
    });
    expect(code).toBe(0);
    expect(row("bravo")).toMatchObject({ action: "kept", expiresAt: "2026-03-02T10:00:00Z" });
    expect(row("bravo").reason).toContain("its expiresAt is 2026-03-02T10:00:00.000Z now, not 2026-03-01T10:00:00Z as this run read it");
  });

  it("a bad flag prints no JSON (nothing was considered); --help names --json", async () => {
    const io = memoryIo();
    expect(await main(["--json", "--concurrency", "0"], { io, env: {}, now: () => NOW })).toBe(2);
    expect(io.stdout).toEqual([]);
    const help = memoryIo();
    expect(await main(["--help"], { io: help, env: {} })).toBe(0);
    expect(help.text()).toMatch(/--json +once the run is over/);
  });
});
