import { spawnSync } from "node:child_process";
import { copyFileSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { main } from "../../scripts/list-tenants.ts";
import { repoFile, runNodeScript, tracingRenamesAndSyncs } from "../support/fsync-trace.ts";
import { runTool, tempDir } from "../support/tools.ts";
import { FakePulumi } from "./fake-pulumi.ts";
import { fixtureStacks, fixtureTenants, NOW } from "./tenant-fixtures.ts";

/**
 * `list-tenants --prometheus <dir>`: the file_sd targets templates/operator/prometheus/
 * prometheus-fleet.yml's jobs read, from the stacks' outputs (the fixtures: deployed, expired, SSH
 * closed, never served, not deployed, unreadable). A real Prometheus scraping them:
 * test/e2e/prometheus-file-sd.test.ts.
 */
const KIT = join(import.meta.dirname, "..", "..", "templates", "operator", "prometheus");
const CA = "-----BEGIN CERTIFICATE-----\nMIIBindia\n-----END CERTIFICATE-----\n";

/** The fixtures with india self-signed (a caCertificate output) and charlie tls.mode off (an http endpoint). */
function tenants() {
  const { root } = fixtureTenants();
  const stacks = fixtureStacks();
  stacks.india!.outputs = { ...stacks.india!.outputs, endpoint: "https://172-105-1-2.ip.linodeusercontent.com/v1", caCertificate: CA };
  stacks.charlie!.outputs = { ...stacks.charlie!.outputs, endpoint: "http://charlie.example.test/v1" };
  return { root, pulumi: new FakePulumi(stacks) };
}

async function run(argv: string[], fixture = tenants()) {
  const io = memoryIo();
  const code = await main(argv, { root: fixture.root, pulumi: fixture.pulumi, io, env: {}, now: () => NOW });
  return { code, io, fixture };
}

const readJson = (dir: string, kind: string) => JSON.parse(readFileSync(join(dir, `${kind}.json`), "utf8")) as unknown;
const group = (tenant: string, target: string) => ({ targets: [target], labels: { tenant } });

describe("list-tenants --prometheus <dir>", () => {
  it("writes a target group per tenant with an endpoint, labelled tenant, in the file of its TLS kind, and the self-signed CAs' bundle", async () => {
    const dir = join(tempDir(), "gpu-sandbox"); // made when missing
    const { code, io } = await run(["--prometheus", dir]);
    // Expired hosts still run until reaped, and a stack with SSH closed still serves: both watched.
    expect(readJson(dir, "letsencrypt")).toEqual([group("alpha", "alpha.example.test:443"), group("bravo", "bravo.example.test:443")]);
    expect(readJson(dir, "self-signed")).toEqual([group("india", "172-105-1-2.ip.linodeusercontent.com:443")]);
    expect(readJson(dir, "http")).toEqual([group("charlie", "charlie.example.test:80")]);
    expect(readFileSync(join(dir, "self-signed-ca.pem"), "utf8")).toBe(`# tenant: india\n${CA}`);
    expect(io.stdout).toEqual([`${dir}/letsencrypt.json: 2 tenants`, `${dir}/self-signed.json: 1 tenant`, `${dir}/http.json: 1 tenant`]);
    // Every stack left out is named on stderr, with why.
    const err = io.stderr.join("\n");
    for (const s of ["delta", "echo", "foxtrot", "hotel"]) expect(err).toContain(`${s}: left out (no endpoint`);
    // golf's state cannot be read: said, and not a success (as the table's run is not).
    expect(err).toContain("golf: its state could not be read (error: failed to load checkpoint: permission denied), and no previous file has it");
    expect(code).toBe(1);
  });

  it("a stack whose state cannot be read keeps the group and CA the previous files held for it: one failed read does not silence its alerts", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, "self-signed.json"), JSON.stringify([group("golf", "golf.example.test:443"), group("gone", "gone.example.test:443")]));
    writeFileSync(join(dir, "self-signed-ca.pem"), `# tenant: golf\n${CA.replace("india", "golf")}# tenant: gone\n${CA.replace("india", "gone")}`);
    const { code, io } = await run(["--prometheus", dir]);
    expect(readJson(dir, "self-signed")).toEqual([group("golf", "golf.example.test:443"), group("india", "172-105-1-2.ip.linodeusercontent.com:443")]);
    const bundle = readFileSync(join(dir, "self-signed-ca.pem"), "utf8");
    expect(bundle).toContain("MIIBgolf");
    expect(bundle).toContain("MIIBindia");
    // A tenant no stack names any more (destroyed, its file removed) is dropped, CA and all.
    expect(bundle).not.toContain("gone");
    expect(io.stderr.join("\n")).toContain("golf: its state could not be read (error: failed to load checkpoint: permission denied); kept as the previous files had it (self-signed, golf.example.test:443)");
    expect(code).toBe(1);
  });

  it("rewrites each file by a rename (a new file, never one half written in place), and leaves no temporary file", async () => {
    const dir = tempDir();
    const fixture = tenants();
    await run(["--prometheus", dir], fixture);
    const before = Object.fromEntries(["letsencrypt.json", "self-signed.json", "http.json", "self-signed-ca.pem"].map((f) => [f, statSync(join(dir, f)).ino]));
    await run(["--prometheus", dir], fixture);
    for (const [f, ino] of Object.entries(before)) expect(statSync(join(dir, f)).ino, f).not.toBe(ino);
    expect(readdirSync(dir).sort()).toEqual(["http.json", "letsencrypt.json", "self-signed-ca.pem", "self-signed.json"]);
  });

  it("with every stack readable, exits 0", async () => {
    const fixture = tenants();
    delete fixture.pulumi.stacks.get("golf")!.outputError;
    const { code } = await run(["--prometheus", tempDir()], fixture);
    expect(code).toBe(0);
  });

  it("refuses --json and --linode beside it, and an empty directory name, with exit 2 and nothing written", async () => {
    for (const argv of [["--prometheus", "t", "--json"], ["--prometheus", "t", "--linode"], ["--prometheus", ""]]) {
      const { code, io, fixture } = await run(argv);
      expect(code, argv.join(" ")).toBe(2);
      expect(io.stderr.join("\n"), argv.join(" ")).toMatch(/--prometheus/);
      expect(readdirSync(fixture.root)).toEqual(["stacks"]);
    }
  });

  it("the --help says what it writes and where the docs are", async () => {
    const { io } = await run(["--help"]);
    expect(io.stdout.join("\n")).toMatch(/--prometheus <dir>[\s\S]*self-signed-ca\.pem[\s\S]*Monitoring many tenants/);
  });

  it("`promtool check config` takes prometheus-fleet.yml with the files it wrote (promtool reads each file_sd file)", async (ctx) => {
    const promtool = spawnSync("promtool", ["--version"]);
    if (promtool.error !== undefined || promtool.status !== 0) return ctx.skip("promtool is not installed (apt-get install prometheus)");
    const dir = tempDir();
    for (const f of ["prometheus-fleet.yml", "alerts.yml"]) copyFileSync(join(KIT, f), join(dir, f));
    await run(["--prometheus", join(dir, "gpu-sandbox")]);
    const r = runTool("promtool", ["check", "config", "prometheus-fleet.yml"], { cwd: dir });
    expect(r.status, r.output).toBe(0);
    expect(r.output).toContain("SUCCESS: prometheus-fleet.yml is valid");
  });
});

describe("list-tenants --prometheus <dir> on disk", () => {
  it("each file is flushed before its rename and the directory after it: a power cut leaves the previous file or the new one, never an empty one, and the CA bundle before the targets", () => {
    const dir = join(tempDir(), "gpu-sandbox");
    const out = join(tempDir(), "strace.txt");
    runNodeScript(tracingRenamesAndSyncs(out), `import { writeTargets } from ${JSON.stringify(repoFile("scripts/lib/prometheus-targets.ts"))};
      console.log(JSON.stringify(writeTargets(${JSON.stringify(dir)}, [], () => {})));`);
    const steps = readFileSync(out, "utf8").split("\n").filter((l) => l.includes(dir) && !l.includes("<unfinished")).map((l) => {
      const renamed = /rename\w*\((?:AT_FDCWD, )?"([^"]+)", (?:AT_FDCWD, )?"([^"]+)"/.exec(l);
      if (renamed) return `rename ${renamed[1]!.replace(`${dir}/`, "").replace(/tmp-\d+$/, "tmp")} -> ${renamed[2]!.replace(`${dir}/`, "")}`;
      const synced = /f(?:data)?sync\(\d+<([^>]+)>/.exec(l);
      return synced ? `fsync ${synced[1] === dir ? "." : synced[1]!.replace(`${dir}/`, "").replace(/tmp-\d+$/, "tmp")}` : l;
    });
    expect(steps).toEqual(["self-signed-ca.pem", "letsencrypt.json", "self-signed.json", "http.json"].flatMap((f) => [`fsync ${f}.tmp`, `rename ${f}.tmp -> ${f}`, "fsync ."]));
  });
});
