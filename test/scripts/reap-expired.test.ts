import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { main } from "../../scripts/reap-expired.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";
import { failedDeployResources, fixtureStacks, fixtureTenants, NOW } from "./tenant-fixtures.ts";

// bravo, one of the expired tenants, is served by a real shim: its usage is what reap-expired
// must save before the destroy deletes the volume it lives on.
let shim: Harness;
let keyId: string;
beforeAll(async () => {
  // The shim's wall clock is the fixtures' day, so its usage rows fall in the exported period.
  const offset = Date.parse("2026-03-01T09:00:00Z") - Date.now();
  shim = await startShim({ clock: { now: () => Date.now() + offset, monotonic: () => performance.now() } });
  const created = await shim.createKey({ name: "team-1", credits: 100 });
  keyId = created.id;
  for (let i = 0; i < 3; i++) {
    await shim.client(created.key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 4 });
  }
});
afterAll(async () => shim?.close());

/** The fixtures, with bravo's endpoint and admin token pointing at the test's shim. */
function tenants() {
  const t = fixtureTenants();
  const bravo = t.pulumi.stacks.get("bravo")!;
  bravo.outputs = { ...bravo.outputs, endpoint: `${shim.url}/v1`, adminToken: shim.adminToken, createdAt: "2026-01-01T00:00:00Z" };
  return t;
}

async function reap(argv: string[], setup: (p: ReturnType<typeof fixtureTenants>["pulumi"]) => void = () => {}) {
  const { root, pulumi } = tenants();
  setup(pulumi);
  const io = memoryIo();
  const code = await main(argv, { root, pulumi, io, env: {}, now: () => NOW });
  // Destroys run two at a time, so their order is not part of the contract.
  return { code, io, pulumi, destroyed: pulumi.callsOf("destroy").map((c) => pulumi.stackArg(c.args)).sort() };
}

/** Without the unreadable stack (golf), so exit codes depend on the destroys alone. */
const withoutGolf = (p: ReturnType<typeof fixtureTenants>["pulumi"]) => p.stacks.set("golf", { outputs: {} });

describe("reap-expired", () => {
  it("reaps a stack whose first `pulumi up` failed after the host was made (no outputs, an instance in the state)", async () => {
    const { code, io, destroyed } = await reap(["--yes"], (p) => {
      withoutGolf(p);
      p.stacks.set("delta", { outputs: {}, resources: failedDeployResources("delta", "2026-03-01T10:00:00Z") }); // ttlHours 1
    });
    expect(code).toBe(0);
    expect(destroyed).toEqual(["bravo", "delta", "foxtrot"]);
    const out = io.stdout.join("\n");
    expect(out).toMatch(/delta +expired 1h 0m ago \(2026-03-01T11:00:00Z\), failed deploy \(resources exist\): destroy/);
    expect(out).toContain("[delta] no usage to save: no endpoint: the serving stack was never deployed");
    expect(out).toMatch(/hotel +not deployed: nothing to destroy/); // no outputs and nothing in the state
  });

  it("dry run: lists each stack's fate and destroys nothing", async () => {
    const { code, io, pulumi, destroyed } = await reap([], withoutGolf);
    expect(code).toBe(0);
    expect(destroyed).toEqual([]);
    expect(pulumi.calls.every((c) => c.args[0] === "stack" && (c.args[1] === "output" || c.args[1] === "export"))).toBe(true);
    const out = io.stdout.join("\n");
    expect(out).toMatch(/alpha +expires in 22h 0m \(2026-03-02T10:00:00Z\): keep/);
    expect(out).toMatch(/bravo +expired 2h 0m ago \(2026-03-01T10:00:00Z\): destroy/);
    expect(out).toMatch(/charlie +no ttlHours: keep/);
    expect(out).toMatch(/delta +not deployed: nothing to destroy/);
    expect(out).toMatch(/echo +not deployed: nothing to destroy/);
    expect(out).toMatch(/foxtrot +expired 1m ago/);
    expect(out).toMatch(/india +expires in 0m \(2026-03-01T12:00:01Z\): keep/);
    expect(out).toContain("Dry run: would destroy 2 stack(s): bravo, foxtrot. Run with --yes to destroy them.");
  });

  it("--yes destroys exactly the expired stacks, with progress per stack; a second run finds nothing", async () => {
    const { root, pulumi } = tenants();
    withoutGolf(pulumi);
    const io = memoryIo();
    expect(await main(["--yes"], { root, pulumi, io, env: {}, now: () => NOW })).toBe(0);
    expect(pulumi.callsOf("destroy").map((c) => c.args).sort((a, b) => a.at(-1)!.localeCompare(b.at(-1)!))).toEqual([
      ["destroy", "--yes", "--non-interactive", "--stack", "bravo"],
      ["destroy", "--yes", "--non-interactive", "--stack", "foxtrot"],
    ]);
    const out = io.stdout.join("\n");
    expect(out).toContain("[bravo] destroying (expired 2h 0m ago)…");
    expect(out).toContain("[bravo] The resources in the stack have been deleted");
    expect(out).toMatch(/\[foxtrot\] destroyed in .* \(\d\/2\)/);
    expect(out).toContain("Destroyed 2 of 2 expired stack(s).");

    const again = memoryIo();
    expect(await main(["--yes"], { root, pulumi, io: again, env: {}, now: () => NOW })).toBe(0);
    expect(pulumi.callsOf("destroy")).toHaveLength(2);
    expect(again.stdout.join("\n")).toContain("Nothing expired.");
  });

  it("--now moves the cut-off: later, more stacks are expired", async () => {
    const { code, io, destroyed } = await reap(["--now", "2026-03-03T00:00:00Z"], withoutGolf);
    expect(code).toBe(0);
    expect(destroyed).toEqual([]);
    expect(io.stdout.join("\n")).toContain("would destroy 4 stack(s): alpha, bravo, foxtrot, india.");
    // Any zone: 2026-03-01T12:00:00Z, written in UTC+02:00.
    const zoned = await reap(["--now", "2026-03-01T14:00:00+02:00"], withoutGolf);
    expect(zoned.io.stdout[0]).toBe("Checking stacks at 2026-03-01T12:00:00Z…");
  });

  it("a failing destroy gives exit 1 and its output; the others still run", async () => {
    const { code, io, destroyed } = await reap(["--yes", "--concurrency", "1"], (p) => {
      withoutGolf(p);
      p.script = (args) => (args[0] === "destroy" && args.at(-1) === "bravo"
        ? { exitCode: 255, stderr: "error: the stack is currently locked by 1 lock(s)" }
        : undefined);
    });
    expect(code).toBe(1);
    expect(destroyed).toEqual(["bravo", "foxtrot"]);
    expect(io.stderr.join("\n")).toContain("[bravo] FAILED: `pulumi destroy --yes --non-interactive --stack bravo` exited 255");
    expect(io.stderr.join("\n")).toContain("the stack is currently locked");
    expect(io.stdout.join("\n")).toContain("Destroyed 1 of 2 expired stack(s). Failed: bravo.");
  });

  it("a stack whose outputs cannot be read is reported and gives exit 1, without blocking the rest", async () => {
    const { code, io, destroyed } = await reap(["--yes"]);
    expect(code).toBe(1);
    expect(destroyed).toEqual(["bravo", "foxtrot"]);
    expect(io.stdout.join("\n")).toMatch(/golf +cannot tell: error: failed to load checkpoint: permission denied/);
    expect(io.stdout.join("\n")).toContain("1 stack(s) could not be checked: golf.");
  });

  it("needs the pulumi CLI and valid flags", async () => {
    const noCli = await reap(["--yes"], (p) => { p.installed = false; });
    expect(noCli.code).toBe(1);
    expect(noCli.io.stderr.join("\n")).toContain("reap-expired needs the pulumi CLI on PATH");
    for (const [argv, message] of [
      [["--now", "yesterday"], '--now "yesterday" must be an ISO timestamp with its zone, e.g. 2026-03-01T18:00:00Z'],
      // Without a zone it would be read in this machine's local time; the 30th of February would roll over to March 2.
      [["--now", "2026-03-01T18:00:00"], '--now "2026-03-01T18:00:00" must be an ISO timestamp with its zone'],
      [["--now", "2026-02-30T00:00:00Z"], '--now "2026-02-30T00:00:00Z" must be an ISO timestamp with its zone'],
      [["--now", "2026-03-01"], '--now "2026-03-01" must be an ISO timestamp with its zone'],
      [["--concurrency", "0"], '--concurrency "0" must be a whole number from 1 to 16'],
      [["--destroy"], "Unknown option '--destroy'"],
    ] as const) {
      const r = await reap([...argv]);
      expect(r.code).toBe(1);
      expect(r.io.stderr.join("\n")).toContain(message);
      expect(r.destroyed).toEqual([]);
    }
  });

  it("saves each tenant's usage before destroying it, per key and day, in --usage-dir", async () => {
    const { root, pulumi } = tenants();
    withoutGolf(pulumi);
    const io = memoryIo();
    expect(await main(["--yes", "--usage-dir", "billing"], { root, pulumi, io, env: {}, now: () => NOW })).toBe(0);
    const files = readdirSync(join(root, "billing")).sort();
    expect(files).toHaveLength(2);
    expect(files[1]).toMatch(/^bravo-usage-\d{8}T\d{6}Z\.csv$/);
    const csv = readFileSync(join(root, "billing", files[1]!), "utf8").trim().split(/\r?\n/);
    // The CSV names keys by id; the keys file, saved with it, maps them to names and balances.
    expect(files[0]).toBe(files[1]!.replace("-usage-", "-keys-").replace(/\.csv$/, ".json"));
    const saved = JSON.parse(readFileSync(join(root, "billing", files[0]!), "utf8")) as { id: string; name: string; balance: number }[];
    expect(saved.find((k) => k.id === keyId)).toMatchObject({ name: "team-1", revoked_at: null });
    expect(saved.find((k) => k.id === keyId)!.balance).toBeLessThan(100);
    expect(csv[0]).toBe("key_id,day,requests,prompt_tokens,completion_tokens,total_tokens,cost");
    const row = csv.find((l) => l.startsWith(`${keyId},`))!;
    expect(row.split(",")[2]).toBe("3");
    expect(row.split(",")[4]).toBe("12");
    const out = io.stdout.join("\n");
    expect(out).toMatch(/\[bravo\] saved its usage \(\d+ rows\) to .*bravo-usage-\S+ and its keys \(\d+\) to .*bravo-keys-/);
    expect(out).toContain("[foxtrot] no usage to save: no endpoint: the serving stack was never deployed");
    // The export happened before the destroy.
    const order = pulumi.calls.map((c) => c.args.join(" ")).filter((a) => a.includes("bravo") && (a.startsWith("destroy") || a.includes("--show-secrets")));
    expect(order).toEqual(["stack output --json --stack bravo --show-secrets", "destroy --yes --non-interactive --stack bravo"]);
  });

  it("keeps a tenant whose usage cannot be saved, exits 1, and says how to proceed; --force destroys it anyway", async () => {
    const unreachable = (p: ReturnType<typeof fixtureTenants>["pulumi"]) => {
      withoutGolf(p);
      const bravo = p.stacks.get("bravo")!;
      bravo.outputs = { ...bravo.outputs, endpoint: "http://127.0.0.1:9/v1" };
    };
    const kept = await reap(["--yes"], unreachable);
    expect(kept.code).toBe(1);
    expect(kept.destroyed).toEqual(["foxtrot"]);
    const err = kept.io.stderr.join("\n");
    expect(err).toContain("[bravo] KEPT: could not save its usage before the destroy would delete it: cannot reach the admin API");
    expect(err).toContain("run with --force to destroy it without its usage");
    expect(kept.io.stdout.join("\n")).toContain("Destroyed 1 of 2 expired stack(s). Failed: bravo.");

    const forced = await reap(["--yes", "--force"], unreachable);
    expect(forced.code).toBe(0);
    expect(forced.destroyed).toEqual(["bravo", "foxtrot"]);
    expect(forced.io.stderr.join("\n")).toContain("[bravo] could not save its usage (cannot reach the admin API");
  });

  it("a dry run saves nothing", async () => {
    const { root, pulumi } = tenants();
    withoutGolf(pulumi);
    expect(await main([], { root, pulumi, io: memoryIo(), env: {}, now: () => NOW })).toBe(0);
    expect(existsSync(join(root, "usage"))).toBe(false);
  });

  it("fixtures: the stacks it destroys are exactly those whose expiresAt is past", () => {
    const expired = Object.entries(fixtureStacks())
      .filter(([, s]) => typeof s.outputs?.expiresAt === "string" && Date.parse(s.outputs.expiresAt as string) <= NOW.getTime())
      .map(([name]) => name);
    expect(expired).toEqual(["bravo", "foxtrot"]);
  });
});
