import { describe, expect, it } from "vitest";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { main } from "../../scripts/reap-expired.ts";
import { fixtureStacks, fixtureTenants, NOW } from "./tenant-fixtures.ts";

async function reap(argv: string[], setup: (p: ReturnType<typeof fixtureTenants>["pulumi"]) => void = () => {}) {
  const { root, pulumi } = fixtureTenants();
  setup(pulumi);
  const io = memoryIo();
  const code = await main(argv, { root, pulumi, io, env: {}, now: () => NOW });
  return { code, io, pulumi, destroyed: pulumi.callsOf("destroy").map((c) => pulumi.stackArg(c.args)) };
}

/** Without the unreadable stack (golf), so exit codes depend on the destroys alone. */
const withoutGolf = (p: ReturnType<typeof fixtureTenants>["pulumi"]) => p.stacks.set("golf", { outputs: {} });

describe("reap-expired", () => {
  it("dry run: lists each stack's fate and destroys nothing", async () => {
    const { code, io, pulumi, destroyed } = await reap([], withoutGolf);
    expect(code).toBe(0);
    expect(destroyed).toEqual([]);
    expect(pulumi.calls.every((c) => c.args[0] === "stack" && c.args[1] === "output")).toBe(true);
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
    const { root, pulumi } = fixtureTenants();
    withoutGolf(pulumi);
    const io = memoryIo();
    expect(await main(["--yes"], { root, pulumi, io, env: {}, now: () => NOW })).toBe(0);
    expect(pulumi.callsOf("destroy").map((c) => c.args)).toEqual([
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
      [["--now", "yesterday"], '--now "yesterday" must be an ISO timestamp'],
      [["--concurrency", "0"], '--concurrency "0" must be a whole number from 1 to 16'],
      [["--force"], "Unknown option '--force'"],
    ] as const) {
      const r = await reap([...argv]);
      expect(r.code).toBe(1);
      expect(r.io.stderr.join("\n")).toContain(message);
      expect(r.destroyed).toEqual([]);
    }
  });

  it("fixtures: the stacks it destroys are exactly those whose expiresAt is past", () => {
    const expired = Object.entries(fixtureStacks())
      .filter(([, s]) => typeof s.outputs?.expiresAt === "string" && Date.parse(s.outputs.expiresAt as string) <= NOW.getTime())
      .map(([name]) => name);
    expect(expired).toEqual(["bravo", "foxtrot"]);
  });
});
