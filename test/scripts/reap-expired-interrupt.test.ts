// Ctrl-C (or cron's or CI's SIGTERM) during `reap-expired --yes` while a `pulumi destroy` runs
// (found by an operator review). Pulumi's first ^C starts a safe cancel (pulumi/pulumi#1231: it
// waits for the running operation to reach a safe point and writes the state), printing as it
// goes; a node that exits at once closes the pipes that output goes to, and a Go program writing
// to a closed pipe dies of SIGPIPE, so the cancel is cut short and the stack can stay locked with
// pending operations (pulumi/pulumi#1077), while the operator is told nothing.
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { pollUntil, tempDir } from "../support/tools.ts";

const script = fileURLToPath(new URL("../../scripts/reap-expired.ts", import.meta.url));
const exampleStack = fileURLToPath(new URL("../../stacks/Pulumi.example.yaml", import.meta.url));

/**
 * A project whose stacks have all expired, and a `pulumi` on PATH for them: its destroy prints
 * a line every 100 ms and logs to pulumi.log what it got; a SIGINT starts a cancel that takes
 * `cancelMs` and ends "error: update canceled" (exit 255), as Pulumi's does.
 */
function expiredProject(stacks: readonly string[], cancelMs = 500, o: { silentCancel?: boolean; catchTerm?: boolean; slowExport?: boolean; exportMs?: number; firstDestroyOk?: boolean } = {}): string {
  const dir = tempDir("reap-interrupt-");
  mkdirSync(join(dir, "stacks"));
  for (const s of stacks) writeFileSync(join(dir, "stacks", `Pulumi.${s}.yaml`), readFileSync(exampleStack, "utf8"));
  writeFileSync(join(dir, "Pulumi.yaml"), "name: gpu-sandbox\nruntime: nodejs\nstackConfigDir: stacks\n");
  mkdirSync(join(dir, "bin"));
  const program = `#!${process.execPath}
const fs = require("node:fs");
const args = process.argv.slice(2);
const stack = args[args.indexOf("--stack") + 1];
const log = (line) => fs.appendFileSync(${JSON.stringify(join(dir, "pulumi.log"))}, stack + " " + line + "\\n");
if (args[0] === "stack" && args[1] === "output") {
  if (${!!o.slowExport} && args.includes("--show-secrets")) {
    log("export");
    const t = Date.now(); while (Date.now() - t < ${o.exportMs ?? 1500}) {}
  }
  process.stdout.write(JSON.stringify({ endpoint: "https://198.51.100.9/v1", servingDeployed: false, expiresAt: "2026-01-01T00:00:00.000Z", createdAt: "2025-12-31T00:00:00.000Z" }));
  process.exit(0);
}
if (args[0] === "destroy") {
  log("destroy pid " + process.pid);
  if (${!!o.firstDestroyOk} && !fs.readFileSync(${JSON.stringify(join(dir, "pulumi.log"))}, "utf8").includes("destroyed ok")) {
    console.log("Destroying (" + stack + ")");
    setTimeout(() => { log("destroyed ok"); process.exit(0); }, 300);
    return;
  }
  if (${!!o.catchTerm}) process.on("SIGTERM", () => log("sigterm (handled as ^C)"));
  console.log("Destroying (" + stack + ")");
  const tick = setInterval(() => console.log(" - linode:Instance deleting"), 100);
  setTimeout(() => process.exit(0), 25000).unref(); // never outlives a failed test for long
  process.on("SIGINT", () => {
    log("sigint");
    if (${!!o.silentCancel}) clearInterval(tick);
    console.log("^C received; cancelling. If you would like to terminate immediately, press ^C again.");
    setTimeout(() => {
      clearInterval(tick);
      console.log("error: update canceled");
      log("cancelled cleanly");
      process.exit(255);
    }, ${cancelMs});
  });
  return;
}
process.exit(0);
`;
  writeFileSync(join(dir, "bin", "pulumi"), program);
  chmodSync(join(dir, "bin", "pulumi"), 0o755);
  return dir;
}

/** reap-expired --yes in `dir`, in its own process group (as a terminal's foreground job), with its output collected. */
function reap(dir: string, extra: readonly string[] = []): { child: ChildProcess; output: () => string; stdout: () => string } {
  const child = spawn(process.execPath, [script, "--yes", "--usage-dir", join(dir, "usage"), ...extra], {
    cwd: dir, detached: true, stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, PATH: `${join(dir, "bin")}:${process.env.PATH}` },
  });
  let out = "";
  let stdout = "";
  child.stdout!.on("data", (d: Buffer) => ((out += d.toString()), (stdout += d.toString())));
  child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  return { child, output: () => out, stdout: () => stdout };
}

const pulumiLog = (dir: string) => (existsSync(join(dir, "pulumi.log")) ? readFileSync(join(dir, "pulumi.log"), "utf8") : "");

/** Waits until the destroy of the first stack is under way (its output reached the script). */
async function destroying(output: () => string): Promise<void> {
  expect(await pollUntil(() => output().includes("linode:Instance deleting"), 15_000, 50), output()).toBe(true);
}

async function exited(child: ChildProcess): Promise<number | null> {
  const [code] = (await once(child, "exit")) as [number | null, NodeJS.Signals | null];
  return code;
}

describe("reap-expired --yes interrupted during a destroy", () => {
  it("Ctrl-C: pulumi's safe cancel runs to its end with its output shown, no further stack is started, and the operator is told what to run next (exit 130)", async () => {
    const dir = expiredProject(["acme", "bravo"]);
    const { child, output } = reap(dir, ["--concurrency", "1"]);
    await destroying(output);
    process.kill(-child.pid!, "SIGINT"); // a terminal's ^C: the whole foreground process group
    expect(await exited(child)).toBe(130);
    const log = pulumiLog(dir);
    expect(log.match(/sigint/g)).toHaveLength(1); // the terminal's ^C, not one more from the script (a second ^C stops pulumi at once)
    expect(log).toMatch(/cancelled cleanly/);
    expect(log).not.toMatch(/^bravo destroy/m);
    const out = output();
    expect(out).toMatch(/\[(acme|bravo)\] interrupted: waiting for pulumi to cancel safely \(again to stop now\)/);
    const stack = /\[(acme|bravo)\] interrupted: waiting/.exec(out)![1]!;
    expect(out).toContain(`[${stack}] error: update canceled`);
    expect(out).toContain(`[${stack}] interrupted: its destroy did not finish; run reap-expired again to destroy it (if pulumi says the stack is locked, first \`pulumi cancel --stack ${stack}\`)`);
    expect(out).toMatch(/Interrupted: destroyed 0 of 2 expired stack\(s\); interrupted: (acme|bravo); not started: (acme|bravo)\./);
  }, 30_000);

  it("SIGTERM to the script alone (cron's timeout, a CI job cancelled): pulumi is sent the ^C it did not get, and its cancel runs to its end", async () => {
    const dir = expiredProject(["acme"]);
    const { child, output } = reap(dir);
    await destroying(output);
    child.kill("SIGTERM");
    expect(await exited(child)).toBe(130);
    expect(pulumiLog(dir)).toMatch(/acme sigint\nacme cancelled cleanly/);
    expect(output()).toContain("[acme] interrupted: waiting for pulumi to cancel safely (again to stop now)");
    expect(output()).toContain("[acme] error: update canceled");
  }, 30_000);

  it("a second signal stops pulumi at once (SIGKILL) and the script exits, saying what was cut short", async () => {
    const dir = expiredProject(["acme"], 20_000);
    const { child, output } = reap(dir);
    await destroying(output);
    child.kill("SIGTERM");
    expect(await pollUntil(() => pulumiLog(dir).includes("sigint"), 10_000, 50)).toBe(true);
    const started = Date.now();
    child.kill("SIGTERM");
    expect(await exited(child)).toBe(130);
    expect(Date.now() - started).toBeLessThan(5_000);
    const pid = Number(/destroy pid (\d+)/.exec(pulumiLog(dir))![1]);
    expect(await pollUntil(() => { try { process.kill(pid, 0); return false; } catch { return true; } }, 5_000, 50), "pulumi still running").toBe(true);
    expect(pulumiLog(dir)).not.toContain("cancelled cleanly");
    expect(output()).toContain("[acme] stopped: pulumi was killed during its destroy; run reap-expired again to destroy it (if pulumi says the stack is locked, first `pulumi cancel --stack acme`)");
  }, 30_000);
});

describe("reap-expired interrupted: a silent cancel, a signal during an export, after a destroy, and a second signal during an export", () => {
  it("a second signal kills a pulumi whose cancel is silent (waiting on a cloud call): it is not left running, holding the stack's lock", async () => {
    const dir = expiredProject(["acme"], 20_000, { silentCancel: true, catchTerm: true });
    const { child, output } = reap(dir);
    await destroying(output);
    child.kill("SIGTERM");
    expect(await pollUntil(() => pulumiLog(dir).includes("sigint"), 10_000, 50)).toBe(true);
    child.kill("SIGTERM");
    expect(await exited(child)).toBe(130);
    const pid = Number(/destroy pid (\d+)/.exec(pulumiLog(dir))![1]);
    const gone = await pollUntil(() => { try { process.kill(pid, 0); return false; } catch { return true; } }, 3_000, 50);
    if (!gone) process.kill(pid, "SIGKILL");
    expect(gone, "pulumi still running after the script exited").toBe(true);
  }, 30_000);

  it("a signal during a stack's usage export: that stack is not destroyed (no pulumi destroy starts)", async () => {
    const dir = expiredProject(["acme"], 500, { slowExport: true });
    const { child, output } = reap(dir);
    expect(await pollUntil(() => pulumiLog(dir).includes("acme export"), 15_000, 20)).toBe(true);
    child.kill("SIGTERM");
    expect(await exited(child)).toBe(130);
    expect(pulumiLog(dir)).not.toContain("destroy");
    expect(output()).toContain("[acme] interrupted before its destroy;");
  }, 30_000);

  it("a terminal's Ctrl-C during a stack's usage export (the export's pulumi killed by it too): interrupted, not a failure, and no --force advice", async () => {
    const dir = expiredProject(["acme"], 500, { slowExport: true });
    const { child, output } = reap(dir);
    expect(await pollUntil(() => pulumiLog(dir).includes("acme export"), 15_000, 20)).toBe(true);
    process.kill(-child.pid!, "SIGINT"); // the whole foreground process group, the export's pulumi included
    expect(await exited(child)).toBe(130);
    expect(pulumiLog(dir)).not.toContain("destroy");
    const out = output();
    expect(out).toContain("[acme] interrupted");
    expect(out).not.toContain("--force"); // following it would destroy the stack without its usage
    expect(out).not.toContain("KEPT");
  }, 30_000);

  it("a signal after one stack was destroyed names only the stack still being destroyed", async () => {
    const dir = expiredProject(["acme", "bravo"], 500, { firstDestroyOk: true });
    const { child, output } = reap(dir, ["--concurrency", "1"]);
    await destroying(output);
    child.kill("SIGTERM");
    expect(await exited(child)).toBe(130);
    const first = /(acme|bravo) destroyed ok/.exec(pulumiLog(dir))![1]!;
    expect(output()).not.toContain(`[${first}] interrupted: waiting for pulumi`);
  }, 30_000);

  it("a second signal during a long usage export exits at once, saying the export was cut short", async () => {
    const dir = expiredProject(["acme"], 500, { slowExport: true, exportMs: 8_000 });
    const { child, output } = reap(dir);
    expect(await pollUntil(() => pulumiLog(dir).includes("acme export"), 15_000, 20)).toBe(true);
    child.kill("SIGTERM");
    await new Promise((r) => setTimeout(r, 200));
    const started = Date.now();
    child.kill("SIGTERM");
    expect(await exited(child)).toBe(130);
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(output()).toContain("[acme] stopped: its usage export was cut short;");
  }, 30_000);
});

describe("reap-expired --yes --json interrupted", () => {
  const rows = (stdout: string) => Object.fromEntries((JSON.parse(stdout) as { stack: string; action: string; reason: string | null }[]).map((r) => [r.stack, [r.action, r.reason]]));

  it("SIGTERM: the rows are printed before exit 130, the stack under way and the one not started \"interrupted\"", async () => {
    const dir = expiredProject(["acme", "bravo"]);
    const { child, output, stdout } = reap(dir, ["--concurrency", "1", "--json"]);
    await destroying(output);
    child.kill("SIGTERM");
    expect(await exited(child)).toBe(130);
    const first = /Destroying \((acme|bravo)\)/.exec(output())![1]!;
    const other = first === "acme" ? "bravo" : "acme";
    expect(rows(stdout())).toEqual({ [first]: ["interrupted", "interrupted: its destroy did not finish"], [other]: ["interrupted", "not started: the run was interrupted"] });
  }, 30_000);

  it("a second signal, which exits at once: the rows are printed all the same", async () => {
    const dir = expiredProject(["acme"], 20_000);
    const { child, output, stdout } = reap(dir, ["--json"]);
    await destroying(output);
    child.kill("SIGTERM");
    expect(await pollUntil(() => pulumiLog(dir).includes("sigint"), 10_000, 50)).toBe(true);
    child.kill("SIGTERM");
    expect(await exited(child)).toBe(130);
    expect(rows(stdout())).toEqual({ acme: ["interrupted", "stopped: pulumi was killed during its destroy"] });
  }, 30_000);
});
