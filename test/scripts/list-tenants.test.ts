import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { main, type TenantRow } from "../../scripts/list-tenants.ts";
import { tempDir } from "../support/tools.ts";
import { FakePulumi } from "./fake-pulumi.ts";
import { failedDeployResources, fixtureTenants, NOW } from "./tenant-fixtures.ts";

async function list(argv: string[], installed = true) {
  const { root, pulumi } = fixtureTenants();
  pulumi.installed = installed;
  const io = memoryIo();
  const code = await main(argv, { root, pulumi, io, env: {}, now: () => NOW });
  return { code, io, pulumi };
}

describe("list-tenants", () => {
  it("--json: one row per stack file, status and expiry from the stack outputs", async () => {
    const { code, io, pulumi } = await list(["--json"]);
    expect(code).toBe(1); // golf's state cannot be read
    const rows = JSON.parse(io.stdout.join("\n")) as TenantRow[];
    const byStack = Object.fromEntries(rows.map((r) => [r.stack, r]));
    expect(rows.map((r) => r.stack)).toEqual(["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"]);
    expect(byStack.alpha).toEqual({
      stack: "alpha", region: "us-ord", plan: "g2-gpu-rtx4000a1-s", gpu: "1 x RTX 4000 Ada 20 GB", hourlyUsd: 0.53,
      expires: "2026-03-02T10:00Z (in 22h 0m)", expiresAt: "2026-03-02T10:00:00.000Z", endpoint: "https://alpha.example.test/v1", status: "deployed",
      failedDeploy: false, reason: null, problem: null,
    });
    expect(byStack.bravo).toMatchObject({ gpu: "2 x RTX 4000 Ada 20 GB", hourlyUsd: 1.06, expires: "2026-03-01T10:00Z (2h 0m ago)", status: "expired" });
    expect(byStack.charlie).toMatchObject({ gpu: "1 x Quadro RTX 6000 24 GB", expires: "never", endpoint: "https://charlie.example.test/v1", status: "ssh-closed" });
    // The status is one word a script compares; the sentence the table shows is its reason.
    expect(byStack.charlie).toMatchObject({ reason: "SSH closed (no adminCidrs): not updated" });
    const jq = spawnSync("jq", ["-r", '.[] | select(.status == "ssh-closed") | .stack'], { input: io.stdout.join("\n"), encoding: "utf8" });
    expect(jq.stdout.trim()).toBe("charlie");
    // Not deployed: the cost is the catalog's for the configured plan and volume.
    expect(byStack.delta).toMatchObject({ plan: "g2-gpu-rtx4000a1-m", hourlyUsd: 0.68, expires: "1h after deploy", endpoint: "-", status: "not deployed" });
    expect(byStack.echo).toMatchObject({ region: "fr-par", status: "not deployed" });
    expect(byStack.foxtrot).toMatchObject({ endpoint: "-", status: "expired" });
    expect(byStack.golf).toMatchObject({ status: "unknown", reason: "error: failed to load checkpoint: permission denied" });
    expect(byStack.hotel).toMatchObject({ region: "mars-1", status: "not deployed", problem: "1 config problem (npm run render -- --stack hotel)" });
    expect(byStack.india).toMatchObject({ status: "deployed", expires: "2026-03-01T12:00Z (in 0m)" });
    // Read-only: nothing but `stack output` (and `stack export` for stacks without outputs), never secrets.
    expect(pulumi.calls.every((c) => ["stack output --json", "stack export --stack"].includes(c.args.slice(0, 3).join(" ")) && !c.args.includes("--show-secrets"))).toBe(true);
    expect(pulumi.callsOf("stack", "export").map((c) => pulumi.stackArg(c.args)).sort()).toEqual(["delta", "hotel"]);
  });

  it("--json: expiresAt is the expiry as a timestamp a script compares (trials ending this week), null when there is none to tell", async () => {
    const { io } = await list(["--json"]);
    const rows = JSON.parse(io.stdout.join("\n")) as TenantRow[];
    const at = Object.fromEntries(rows.map((r) => [r.stack, r.expiresAt]));
    expect(at).toMatchObject({ alpha: "2026-03-02T10:00:00.000Z", bravo: "2026-03-01T10:00:00.000Z", india: "2026-03-01T12:00:01.000Z" }); // the text shows it "in 0m"
    expect(at).toMatchObject({ charlie: null, delta: null, golf: null }); // never; not deployed; unknown
    // The --help's filter for what expires within a day of NOW, as a morning job runs it.
    const jq = spawnSync("jq", ["-r", "--arg", "by", "2026-03-02T12:00:00.000Z", ".[] | select(.expiresAt != null and .expiresAt < $by) | .stack"], { input: io.stdout.join("\n"), encoding: "utf8" });
    expect(jq.stdout.trim().split("\n")).toEqual(rows.filter((r) => r.expiresAt !== null).map((r) => r.stack));
    expect(jq.stdout).toContain("alpha");
  });

  it("a stack whose first `pulumi up` failed (no outputs, an instance in the state) counts as running and expires from the state", async () => {
    const { root, pulumi } = fixtureTenants();
    // delta (ttlHours 1): the host was created at 10:00 and the deploy failed after it.
    pulumi.stacks.set("delta", { outputs: {}, resources: failedDeployResources("delta", "2026-03-01T10:00:00Z") });
    const io = memoryIo();
    expect(await main([], { root, pulumi, io, env: {}, now: () => NOW })).toBe(1); // golf
    const lines = io.stdout.join("\n").split("\n");
    expect(lines.find((l) => l.startsWith("delta"))).toMatch(/ 0\.68 +2026-03-01T11:00Z \(1h 0m ago\) +- +expired \(failed deploy \(resources exist\)\)$/);
    expect(lines.at(-1)).toBe("9 tenants, 6 running ($5.28/hour together), 1 unknown: their cost is not included.");
  });

  it("a failed deploy whose stack file no longer validates expires by the file's ttlHours, a number or the string `pulumi config set` writes", async () => {
    for (const ttl of [1, "1"]) {
      const { root, pulumi } = fixtureTenants();
      // hotel (region mars-1: a config problem): its first `pulumi up` failed at 10:00, after the host was made.
      writeFileSync(join(root, "stacks", "Pulumi.hotel.yaml"), stringify({ config: { "gpu-sandbox:region": "mars-1", "gpu-sandbox:adminCidrs": ["81.2.69.160/32"], "gpu-sandbox:ttlHours": ttl } }));
      pulumi.stacks.set("hotel", { outputs: {}, resources: failedDeployResources("hotel", "2026-03-01T10:00:00Z") });
      const io = memoryIo();
      await main(["--json"], { root, pulumi, io, env: {}, now: () => NOW });
      const hotel = (JSON.parse(io.stdout.join("\n")) as TenantRow[]).find((r) => r.stack === "hotel");
      expect(hotel, JSON.stringify(ttl)).toMatchObject({ expires: "2026-03-01T11:00Z (1h 0m ago)", status: "expired", failedDeploy: true, problem: "1 config problem (npm run render -- --stack hotel)" });
    }
  });

  it("--json: status is the bare word (the --help's jq filter finds every expired stack); a config problem and a failed deploy are fields of their own", async () => {
    const { root, pulumi } = fixtureTenants();
    pulumi.stacks.set("golf", { outputs: {} });
    // delta (ttlHours 1): a first `pulumi up` failed at 10:00, after the host was made.
    pulumi.stacks.set("delta", { outputs: {}, resources: failedDeployResources("delta", "2026-03-01T10:00:00Z") });
    // hotel (region mars-1: a config problem) was deployed before the file was broken, and has expired.
    pulumi.stacks.set("hotel", { outputs: { endpoint: "https://hotel.example.test/v1", expiresAt: "2026-03-01T11:00:00Z", servingDeployed: true } });
    const io = memoryIo();
    expect(await main(["--json"], { root, pulumi, io, env: {}, now: () => NOW })).toBe(0);
    const rows = JSON.parse(io.stdout.join("\n")) as TenantRow[];
    // `jq -r '.[] | select(.status == "expired") | .stack'`
    expect(rows.filter((r) => r.status === "expired").map((r) => r.stack)).toEqual(["bravo", "delta", "foxtrot", "hotel"]);
    const byStack = Object.fromEntries(rows.map((r) => [r.stack, r]));
    expect(byStack.delta).toMatchObject({ status: "expired", failedDeploy: true, problem: null });
    expect(byStack.hotel).toMatchObject({ status: "expired", failedDeploy: false, problem: "1 config problem (npm run render -- --stack hotel)" });
    expect(byStack.bravo).toMatchObject({ status: "expired", failedDeploy: false, problem: null });

    // The table reads as before: the marker and the problem beside the status.
    const table = memoryIo();
    await main([], { root, pulumi, io: table, env: {}, now: () => NOW });
    const lines = table.stdout.join("\n").split("\n");
    expect(lines.find((l) => l.startsWith("delta"))).toMatch(/ expired \(failed deploy \(resources exist\)\)$/);
    expect(lines.find((l) => l.startsWith("hotel"))).toMatch(/ expired; 1 config problem \(npm run render -- --stack hotel\)$/);
  });

  it("prints a table with a header, one line per tenant and the running cost", async () => {
    const { code, io } = await list([]);
    expect(code).toBe(1); // golf
    const lines = io.stdout.join("\n").split("\n");
    expect(lines[0]).toMatch(/^STACK +REGION +PLAN +GPU +\$\/HOUR +EXPIRES +ENDPOINT +STATUS$/);
    expect(lines.find((l) => l.startsWith("alpha"))).toMatch(/^alpha +us-ord +g2-gpu-rtx4000a1-s +1 x RTX 4000 Ada 20 GB +0\.53 +2026-03-02T10:00Z \(in 22h 0m\) +https:\/\/alpha\.example\.test\/v1 +deployed$/);
    expect(lines.find((l) => l.startsWith("bravo"))).toMatch(/ expired$/);
    expect(lines.find((l) => l.startsWith("echo"))).toMatch(/ - +not deployed$/);
    // SSH closed: the table keeps its sentence (the JSON's status word is for scripts), and it counts as running.
    expect(lines.find((l) => l.startsWith("charlie"))).toMatch(/ https:\/\/charlie\.example\.test\/v1 +SSH closed \(no adminCidrs\): not updated$/);
    // alpha, bravo, charlie, foxtrot, india run: 0.53 + 1.06 + 1.51 + 0.53 + 0.97; golf cannot be read.
    expect(lines.at(-1)).toBe("9 tenants, 5 running ($4.60/hour together), 1 unknown: their cost is not included.");

    // When every state is read, the total is the whole cost.
    const { root, pulumi } = fixtureTenants();
    pulumi.stacks.set("golf", { outputs: {} });
    const known = memoryIo();
    expect(await main([], { root, pulumi, io: known, env: {}, now: () => NOW })).toBe(0);
    expect(known.stdout.join("\n").split("\n").at(-1)).toBe("9 tenants, 5 running: $4.60/hour together.");
  });

  it("without the pulumi CLI: config only, status unknown (exit 1: whether any runs is not known)", async () => {
    const { code, io, pulumi } = await list(["--json"], false);
    expect(code).toBe(1);
    const rows = JSON.parse(io.stdout.join("\n")) as TenantRow[];
    expect(new Set(rows.map((r) => `${r.status} (${r.reason})`))).toEqual(new Set(["unknown (no pulumi CLI)"]));
    expect(rows.find((r) => r.stack === "alpha")).toMatchObject({ hourlyUsd: 0.53, expires: "48h after deploy", endpoint: "-" });
    expect(rows.find((r) => r.stack === "charlie")).toMatchObject({ expires: "never" });
    expect(pulumi.calls).toEqual([]);

    // Nothing is known to run, and nothing is known not to: no "$0.00/hour" as if that were the cost.
    const table = await list([], false);
    expect(table.io.stdout.join("\n").split("\n").at(-1)).toBe("9 tenants, 0 running ($0.00/hour together), 9 unknown: their cost is not included.");
  });

  it("a stack whose state cannot be read is counted apart from the running cost, and the run exits 1", async () => {
    const { code, io } = await list([]);
    // golf's state is unreadable (permission denied): it may be billing, so the total says so,
    // and a script or cron job reading the listing learns that it has a hole.
    expect(io.stdout.join("\n")).toMatch(/^golf .* unknown \(error: failed to load checkpoint: permission denied\)$/m);
    expect(io.stdout.join("\n").split("\n").at(-1)).toBe("9 tenants, 5 running ($4.60/hour together), 1 unknown: their cost is not included.");
    expect(code).toBe(1);
    const json = await list(["--json"]);
    expect(JSON.parse(json.io.stdout.join("\n"))).toHaveLength(9); // every row is still printed
    expect(json.code).toBe(1);
  });

  it("a stack file that cannot be read is reported on its own row; the other tenants are still listed", async () => {
    const { root, pulumi } = fixtureTenants();
    // Any read error other than "no such file": a directory with a stack file's name (EISDIR);
    // a file the cron user may not read (EACCES) takes the same path.
    mkdirSync(join(root, "stacks", "Pulumi.kilo.yaml"));
    pulumi.stacks.set("golf", { outputs: {} });
    const io = memoryIo();
    expect(await main(["--json"], { root, pulumi, io, env: {}, now: () => NOW })).toBe(0);
    const rows = JSON.parse(io.stdout.join("\n")) as TenantRow[];
    expect(rows).toHaveLength(10);
    expect(rows.find((r) => r.stack === "alpha")).toMatchObject({ status: "deployed" });
    expect(rows.find((r) => r.stack === "kilo")?.status).toBe("not deployed");
    expect(rows.find((r) => r.stack === "kilo")?.problem).toMatch(/^cannot read \S+Pulumi\.kilo\.yaml: EISDIR: illegal operation on a directory/);
    // Nothing is known of its plan: not the default plan's GPU and price as if they were.
    expect(rows.find((r) => r.stack === "kilo")).toMatchObject({ plan: "?", gpu: "?", hourlyUsd: null });
  });

  it("a failed deploy whose stack file cannot be read at all is `unknown`, not `never`: its ttlHours is in that file", async () => {
    const { root, pulumi } = fixtureTenants();
    // kilo's first `pulumi up` failed after the host was made; then its file became a directory.
    mkdirSync(join(root, "stacks", "Pulumi.kilo.yaml"));
    pulumi.stacks.set("kilo", { outputs: {}, resources: failedDeployResources("kilo", "2026-03-01T10:00:00Z") });
    const io = memoryIo();
    expect(await main(["--json"], { root, pulumi, io, env: {}, now: () => NOW })).toBe(1);
    const kilo = (JSON.parse(io.stdout.join("\n")) as TenantRow[]).find((r) => r.stack === "kilo");
    expect(kilo).toMatchObject({ status: "unknown", expires: "?", failedDeploy: false });
    expect(kilo?.reason).toMatch(/^a failed deploy left an instance, and its stack file cannot be read: cannot read \S+Pulumi\.kilo\.yaml: EISDIR/);
  });

  it("only stacks/Pulumi.<name>.yaml files are tenants: a .yml (which Pulumi never reads beside Pulumi.yaml) is not", async () => {
    const { root, pulumi } = fixtureTenants();
    writeFileSync(join(root, "stacks", "Pulumi.kilo.yml"), stringify({ config: { "gpu-sandbox:region": "us-ord" } }));
    const io = memoryIo();
    await main(["--json"], { root, pulumi, io, env: {}, now: () => NOW });
    expect((JSON.parse(io.stdout.join("\n")) as TenantRow[]).map((r) => r.stack)).not.toContain("kilo");
  });

  it("a stack file that is not valid YAML keeps the table one line per tenant, saying where the error is", async () => {
    const { root, pulumi } = fixtureTenants();
    writeFileSync(join(root, "stacks", "Pulumi.kilo.yaml"), 'config:\n  gpu-sandbox:region: "us-ord\n');
    const io = memoryIo();
    await main([], { root, pulumi, io, env: {}, now: () => NOW });
    const lines = io.stdout.join("\n").split("\n");
    // header, 10 tenants, a blank line, the total
    expect(lines, lines.join("\n")).toHaveLength(13);
    expect(lines.find((l) => l.startsWith("kilo"))).toMatch(/not deployed; \S+Pulumi\.kilo\.yaml is not valid YAML: Missing closing "quote at line 3, column 1$/);
  });

  it.each([
    // A first edit's slips: the settings without `config:` above them, or a file that is no map.
    ["gpu-sandbox:region: us-ord\ngpu-sandbox:adminCidrs: [81.2.69.160/32]\n", 'settings must be under "config:" (found gpu-sandbox:region at the top level)'],
    ["- a\n- b\n", "a stack file must be a map with a config: key holding the settings"],
  ])("a stack file %j is shown as such on its row, not as a missing region", async (text, message) => {
    const { root, pulumi } = fixtureTenants();
    writeFileSync(join(root, "stacks", "Pulumi.kilo.yaml"), text);
    const io = memoryIo();
    await main([], { root, pulumi, io, env: {}, now: () => NOW });
    const row = io.stdout.join("\n").split("\n").find((l) => l.startsWith("kilo"));
    expect(row).toMatch(/not deployed; \S+Pulumi\.kilo\.yaml: /);
    expect(row?.endsWith(message), row).toBe(true);
  });

  it("a deployed stack whose file was edited since (not yet `pulumi up`) shows what is deployed: its outputs' region, plan and price", async () => {
    const { root, pulumi } = fixtureTenants();
    writeFileSync(join(root, "stacks", "Pulumi.alpha.yaml"), stringify({ config: { "gpu-sandbox:region": "de-fra-2", "gpu-sandbox:plan": "g2-gpu-rtx4000a2-s", "gpu-sandbox:adminCidrs": ["81.2.69.160/32"], "gpu-sandbox:ttlHours": 48 } }));
    const alpha = pulumi.stacks.get("alpha")!;
    alpha.outputs = { ...alpha.outputs, hourlyCostUsd: 0.61 }; // the price it was deployed at (e.g. a larger volume)
    const io = memoryIo();
    await main(["--json"], { root, pulumi, io, env: {}, now: () => NOW });
    const row = (JSON.parse(io.stdout.join("\n")) as TenantRow[]).find((r) => r.stack === "alpha");
    expect(row).toMatchObject({ region: "us-ord", plan: "g2-gpu-rtx4000a1-s", gpu: "1 x RTX 4000 Ada 20 GB", hourlyUsd: 0.61, status: "deployed" });
  });

  it("a stack not deployed is priced with its configured volume, not the default one", async () => {
    const { root, pulumi } = fixtureTenants();
    writeFileSync(join(root, "stacks", "Pulumi.delta.yaml"), stringify({ config: { "gpu-sandbox:region": "us-sea", "gpu-sandbox:plan": "g2-gpu-rtx4000a1-m", "gpu-sandbox:adminCidrs": ["81.2.69.160/32"], "gpu-sandbox:ttlHours": 1, "gpu-sandbox:volumeSizeGb": 2000 } }));
    const io = memoryIo();
    await main(["--json"], { root, pulumi, io, env: {}, now: () => NOW });
    const delta = (JSON.parse(io.stdout.join("\n")) as TenantRow[]).find((r) => r.stack === "delta")!;
    expect(delta).toMatchObject({ status: "not deployed", problem: null });
    expect(delta.hourlyUsd).toBeGreaterThan(0.68); // 0.68 with the default volume (the first test)
  });

  it("a host-only stack (deployed without an endpoint) counts as running", async () => {
    const { root, pulumi } = fixtureTenants();
    pulumi.stacks.set("golf", { outputs: {} });
    const alpha = pulumi.stacks.get("alpha")!;
    const { endpoint: _, ...hostOnly } = alpha.outputs!;
    alpha.outputs = hostOnly;
    const io = memoryIo();
    expect(await main([], { root, pulumi, io, env: {}, now: () => NOW })).toBe(0);
    const lines = io.stdout.join("\n").split("\n");
    expect(lines.find((l) => l.startsWith("alpha"))).toMatch(/ host only \(no endpoint\)$/);
    expect(lines.at(-1)).toBe("9 tenants, 5 running: $4.60/hour together.");
  });

  it("a failed deploy without ttlHours is kept as `never`; one whose creation time in the state is no time is unknown", async () => {
    const { root, pulumi } = fixtureTenants();
    pulumi.stacks.set("golf", { outputs: {} });
    // charlie has no ttlHours; its first `pulumi up` failed after the host was made.
    pulumi.stacks.set("charlie", { outputs: {}, resources: failedDeployResources("charlie", "2026-03-01T10:00:00Z") });
    pulumi.stacks.set("delta", { outputs: {}, resources: failedDeployResources("delta", "not a time") });
    const io = memoryIo();
    expect(await main(["--json"], { root, pulumi, io, env: {}, now: () => NOW })).toBe(1); // delta
    const rows = JSON.parse(io.stdout.join("\n")) as TenantRow[];
    expect(rows.find((r) => r.stack === "charlie")).toMatchObject({ expires: "never", status: "failed deploy (resources exist)", failedDeploy: true });
    expect(rows.find((r) => r.stack === "delta")).toMatchObject({ status: "unknown" });
    expect(rows.find((r) => r.stack === "delta")?.reason).toMatch(/^a failed deploy left an instance, but its creation time is not in the state/);
  });

  it("the table shows a failed deploy not yet expired once, not its marker beside it again", async () => {
    const { root, pulumi } = fixtureTenants();
    pulumi.stacks.set("delta", { outputs: {}, resources: failedDeployResources("delta", "2026-03-01T11:30:00Z") }); // ttlHours 1: expires 12:30
    const io = memoryIo();
    await main([], { root, pulumi, io, env: {}, now: () => NOW });
    expect(io.stdout.join("\n").split("\n").find((l) => l.startsWith("delta"))).toMatch(/ \(in 30m\) +- +failed deploy \(resources exist\)$/);
  });

  it("says how to start when there are no stacks, and rejects unknown flags", async () => {
    const io = memoryIo();
    expect(await main([], { root: tempDir(), io, pulumi: new FakePulumi(), env: {}, now: () => NOW })).toBe(0);
    expect(io.text()).toContain("No tenants: stacks/ has no Pulumi.<tenant>.yaml. Create one with `npm run new-tenant`.");
    const bad = memoryIo();
    expect(await main(["--csv"], { root: tempDir(), io: bad, env: {} })).toBe(2);
    expect(bad.text()).toBe("Unknown option '--csv'. (npm run list-tenants -- --help lists the options)");
  });
});
