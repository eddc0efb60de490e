import { execFile } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { expectOperatorScriptClean } from "../support/operator-scripts.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";
import { pollUntil, tempDir } from "../support/tools.ts";

/**
 * templates/operator/fleet-status.sh and fleet-invoices.sh, run as an operator runs them from a
 * project of four tenants: acme (deployed, a key run dry), bravo (expired, not yet destroyed: it
 * served this month), carol (deployed, its host down) and delta (never deployed). The real
 * list-tenants and report-usage answer them (`npm run --silent <script>` is a stand-in that runs
 * the script with node), against real shims, with a stand-in pulumi CLI giving each stack's outputs.
 */
const ROOT = join(import.meta.dirname, "..", "..");
const EXAMPLE = readFileSync(join(ROOT, "stacks", "Pulumi.example.yaml"), "utf8").replace(/^.*ttlHours.*\n/m, "");
const MONTH = new Date().toISOString().slice(0, 7); // report-usage's default period: this UTC month

// Each run starts a node process per tenant (list-tenants, report-usage), and a refused host is
// retried before it counts: tens of seconds on a loaded 2-core machine, past the default 30 s.
const shims: Harness[] = [];
let project: string;
let bin: string;

/** Runs a fleet script in the project; never rejects: its exit code, stdout and stderr. */
function run(script: string, args: string[] = []): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile("bash", [join(ROOT, "templates", "operator", script), ...args], { cwd: project, env: { ...process.env, PATH: `${bin}:${process.env.PATH}` } }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

function stack(name: string, outputs: Record<string, unknown> | undefined): void {
  writeFileSync(join(project, "stacks", `Pulumi.${name}.yaml`), EXAMPLE);
  if (outputs) writeFileSync(join(project, "outputs", `${name}.json`), JSON.stringify(outputs));
}

beforeAll(async () => {
  project = tempDir();
  bin = join(project, "bin");
  for (const d of ["stacks", "outputs", "bin"]) mkdirSync(join(project, d));
  writeFileSync(join(bin, "npm"), `#!/usr/bin/env bash\n# npm run --silent <script> -- <args>\n[ "$1 $2 $4" = "run --silent --" ] || { echo "npm stand-in: $*" >&2; exit 99; }\nscript="$3"; shift 4\nexec "${process.execPath}" "${ROOT}/scripts/$script.ts" "$@"\n`);
  writeFileSync(join(bin, "pulumi"), `#!/usr/bin/env bash\n# stack output --json --stack <s> [--show-secrets]: outputs/<s>.json; no file: no such stack\nstack=""; prev=""\nfor a in "$@"; do [ "$prev" = --stack ] && stack="$a"; prev="$a"; done\nf="${project}/outputs/$stack.json"\ncase "$1 $2" in\n  "stack output") [ -f "$f" ] || { echo "error: no stack named '$stack' found" >&2; exit 255; }; cat "$f" ;;\n  *) echo '{"version":3,"deployment":{"resources":[]}}' ;;\nesac\n`);
  for (const f of ["npm", "pulumi"]) chmodSync(join(bin, f), 0o755);

  for (let i = 0; i < 3; i++) shims.push(await startShim());
  const [acme, bravo, carol] = shims as [Harness, Harness, Harness];
  const chat = { model: "qwen2.5-7b", messages: [{ role: "user" as const, content: "hi" }], max_tokens: 4 };
  const dry = await acme.createKey({ name: "dry", credits: 1 });
  await acme.createKey({ name: "full", credits: 100 });
  await acme.createKey({ name: "empty", credits: 0 }); // nothing this month: 0 left is low, though under no share of 0
  await acme.client(dry.key).chat.completions.create(chat);
  const b = await bravo.createKey({ name: "trial", credits: 50 });
  await bravo.client(b.key).chat.completions.create(chat);
  await carol.close(); // its host down: connection refused

  const outputs = (h: Harness, extra: Record<string, unknown> = {}) => ({ endpoint: `${h.url}/v1`, adminToken: h.adminToken, createdAt: "2026-01-01T00:00:00.000Z", servingDeployed: true, ...extra });
  stack("acme", outputs(acme));
  stack("bravo", outputs(bravo, { expiresAt: "2026-01-02T00:00:00.000Z" }));
  stack("carol", outputs(carol));
  stack("delta", undefined);
}, 60_000);
afterAll(async () => {
  await Promise.all(shims.slice(0, 2).map((h) => h.close()));
});

describe("fleet-status.sh: every tenant's state in one run", { timeout: 120_000 }, () => {
  it("a row per stack: an expired stack still serving is read too, a key run dry is named, and a host down makes the run exit 1", async () => {
    const r = await run("fleet-status.sh");
    expect(r.code, r.stderr).toBe(1);
    const rows = Object.fromEntries((JSON.parse(r.stdout) as { stack: string; spent?: number }[]).map((row) => [row.stack, row]));
    expect(Object.keys(rows).sort()).toEqual(["acme", "bravo", "carol", "delta"]);
    expect(rows.acme).toMatchObject({ status: "deployed", answered: true });
    expect([...(rows.acme as unknown as { low: string[] }).low].sort()).toEqual(["dry", "empty"]);
    expect(rows.acme!.spent).toBeGreaterThan(0);
    expect(rows.bravo).toMatchObject({ status: "expired", expiresAt: "2026-01-02T00:00:00.000Z", answered: true, low: [] });
    expect(rows.carol).toMatchObject({ status: "deployed", answered: false, exit: 3 });
    expect(rows.delta).toMatchObject({ status: "not deployed", answered: null });
    expect(r.stderr).toContain("carol did not answer (report-usage exit 3)");
  });

  it("its `low` keys are those the shim's low-credit gauge names, by the same rule and share (0.1), for the alert between mornings", async () => {
    const r = await run("fleet-status.sh");
    const acme = (JSON.parse(r.stdout) as { stack: string; low?: string[] }[]).find((row) => row.stack === "acme")!;
    const shim = shims[0]!;
    let scrape = "";
    // The first scrape starts the shim's read of the ledger; a later one shows what it read.
    expect(await pollUntil(async () => {
      scrape = await (await fetch(`${shim.url}/metrics`)).text();
      return /^shim_low_credits_checked_timestamp_seconds [1-9]/m.test(scrape);
    }, 10_000, 100), scrape).toBe(true);
    const named = [...scrape.matchAll(/^shim_key_low_credits_ratio\{key_id="[^"]+",key_name="([^"]+)"\}/gm)].map((m) => m[1]);
    // dry: spent down; empty: made with nothing this month (0 left is low by both rules).
    expect([...acme.low!].sort()).toEqual(["dry", "empty"]);
    expect(named.sort()).toEqual([...acme.low!].sort());
    expect(scrape).toMatch(new RegExp(`^shim_keys_low_credits ${acme.low!.length}$`, "m"));
  });

  it("exits 0 when every stack with an endpoint answered (credits and expiry are data, not failures)", async () => {
    const carol = join(project, "stacks", "Pulumi.carol.yaml");
    const saved = readFileSync(carol, "utf8");
    rmSync(carol);
    try {
      const r = await run("fleet-status.sh");
      expect(r.code, r.stderr).toBe(0);
      expect((JSON.parse(r.stdout) as { stack: string }[]).map((row) => row.stack)).toEqual(["acme", "bravo", "delta"]);
    } finally {
      writeFileSync(carol, saved);
    }
  });

  it("a report it cannot read keeps the tenant's row, says so and exits 1, rather than leaving the tenant out", async () => {
    // report-usage exits 0 with an answer of another shape (an older or newer shim, a proxy's page).
    const odd = join(project, "bin-odd");
    mkdirSync(odd, { recursive: true });
    writeFileSync(join(odd, "npm"), `#!/usr/bin/env bash\ncase "$* " in *"report-usage -- --stack acme "*) echo '{"data":null}'; exit 0 ;; esac\nexec "${bin}/npm" "$@"\n`);
    chmodSync(join(odd, "npm"), 0o755);
    const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile("bash", [join(ROOT, "templates", "operator", "fleet-status.sh")], { cwd: project, env: { ...process.env, PATH: `${odd}:${bin}:${process.env.PATH}` } }, (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr });
      });
    });
    expect(r.code, r.stderr).toBe(1);
    const rows = Object.fromEntries((JSON.parse(r.stdout) as { stack: string }[]).map((row) => [row.stack, row]));
    expect(Object.keys(rows).sort()).toEqual(["acme", "bravo", "carol", "delta"]);
    expect(rows.acme).toMatchObject({ status: "deployed", answered: false, error: "its report could not be read" });
    expect(r.stderr).toContain("acme answered, but its report could not be read");
  });

  it("passes shellcheck", () => expectOperatorScriptClean("fleet-status.sh"));
});

describe("fleet-invoices.sh: a month's invoice files for every tenant", { timeout: 120_000 }, () => {
  it("writes both files for each stack that served (an expired one too), the same columns for all, and exits 1 naming a tenant it could not read, leaving no file of it", async () => {
    const dir = join(project, "invoices");
    const r = await run("fleet-invoices.sh", [MONTH, dir]);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain("no invoice files for carol");
    expect(readdirSync(dir).sort()).toEqual([`acme-${MONTH}-credits.csv`, `acme-${MONTH}-usage.csv`, `bravo-${MONTH}-credits.csv`, `bravo-${MONTH}-usage.csv`]);
    const header = (f: string) => readFileSync(join(dir, f), "utf8").split("\r\n")[0];
    expect(header(`acme-${MONTH}-usage.csv`)).toBe(header(`bravo-${MONTH}-usage.csv`));
    expect(header(`acme-${MONTH}-credits.csv`)).toBe(header(`bravo-${MONTH}-credits.csv`));
    expect(header(`bravo-${MONTH}-credits.csv`)).toContain("opening");
    expect(readFileSync(join(dir, `bravo-${MONTH}-usage.csv`), "utf8")).toContain(",trial,qwen2.5-7b,1,");

    // The month is not over: the run says its files cover it only to now.
    expect(r.stderr).toContain(`${MONTH} is not over`);

    // Run again once carol answers nothing more (destroyed): a file made after the month ended is
    // kept, exit 0; one made while it ran (a run in the month, or at 23:59 on its last day) is made
    // again, as its usage stops where that run read it.
    writeFileSync(join(dir, `acme-${MONTH}-usage.csv`), "kept\r\n");
    const afterMonth = new Date(`${MONTH}-01T00:00:00Z`);
    afterMonth.setUTCMonth(afterMonth.getUTCMonth() + 1);
    utimesSync(join(dir, `acme-${MONTH}-usage.csv`), afterMonth, afterMonth);
    writeFileSync(join(dir, `bravo-${MONTH}-usage.csv`), "made mid-month\r\n");
    rmSync(join(project, "stacks", "Pulumi.carol.yaml"));
    const again = await run("fleet-invoices.sh", [MONTH, dir]);
    expect(again.code, again.stderr).toBe(0);
    expect(readFileSync(join(dir, `acme-${MONTH}-usage.csv`), "utf8")).toBe("kept\r\n");
    expect(readFileSync(join(dir, `bravo-${MONTH}-usage.csv`), "utf8")).toContain(",trial,qwen2.5-7b,1,");
    expect(existsSync(join(dir, `carol-${MONTH}-usage.csv`))).toBe(false);
    writeFileSync(join(project, "stacks", "Pulumi.carol.yaml"), EXAMPLE);
  });

  it("makes its directory and files readable by the operator alone (0700, 0600), as reap-expired's usage exports are, whatever the umask", async () => {
    // Found by the penetration test of the operator's side: they were made with the shell's umask
    // (0755, 0644: every account on the machine could read each customer's usage and credits).
    const dir = join(project, "private-invoices");
    await run("fleet-invoices.sh", [MONTH, dir]);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    const files = readdirSync(dir);
    expect(files).toContain(`acme-${MONTH}-credits.csv`);
    for (const f of files) expect(statSync(join(dir, f)).mode & 0o777, f).toBe(0o600);
  });

  it("a month not written YYYY-MM is a bad command line (exit 2), no file made under another name", async () => {
    const dir = join(project, "invoices-bad-month");
    const r = await run("fleet-invoices.sh", ["2026-1", dir]);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain("fleet-invoices: the month is YYYY-MM");
    expect(existsSync(dir)).toBe(false);
  });

  it("a directory it cannot make is a bad command line (exit 2), not every tenant unread", async () => {
    const notDir = join(project, "a-file");
    writeFileSync(notDir, "");
    const r = await run("fleet-invoices.sh", [MONTH, join(notDir, "invoices")]);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain(`fleet-invoices: cannot make ${join(notDir, "invoices")}`);
    expect(r.stderr).not.toContain("no invoice files for");
  });

  it("passes shellcheck", () => expectOperatorScriptClean("fleet-invoices.sh"));
});
