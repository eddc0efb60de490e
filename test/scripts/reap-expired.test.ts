import { chmodSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { generateKey } from "../../api-shim/src/auth/keys.ts";
import { clockFrom } from "../support/clocks.ts";
import { adminClient, type ApiKey, type CreditsStatement } from "../../scripts/lib/admin-client.ts";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { withDefaults } from "../../scripts/lib/deps.ts";
import { retireKeys } from "../../scripts/lib/retire-keys.ts";
import type { PulumiResult, RunOptions } from "../../scripts/lib/pulumi.ts";
import { main, reapExpired } from "../../scripts/reap-expired.ts";
import { frontProxy } from "../support/front-proxy.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";
import { freePort, tempDir } from "../support/tools.ts";
import { FakePulumi } from "./fake-pulumi.ts";
import { failedDeployResources, fixtureStacks, fixtureTenants, NOW } from "./tenant-fixtures.ts";

// bravo, one of the expired tenants, is served by a real shim: its usage is what reap-expired
// must save before the destroy deletes the volume it lives on.
let shim: Harness;
let keyId: string;
beforeAll(async () => {
  // The shim's wall clock is the fixtures' day, so its usage rows fall in the exported period.
  shim = await startShim({ clock: clockFrom(Date.parse("2026-03-01T09:00:00Z")) });
  const created = await shim.createKey({ name: "team-1", credits: 100 });
  keyId = created.id;
  for (let i = 0; i < 3; i++) {
    await shim.client(created.key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 4 });
  }
});
afterAll(async () => shim?.close());
afterEach(() => shim.fake.reset());

/** The fixtures, with bravo's endpoint and admin token pointing at the test's shim. */
function tenants() {
  const t = fixtureTenants();
  const bravo = t.pulumi.stacks.get("bravo")!;
  bravo.outputs = { ...bravo.outputs, endpoint: `${shim.url}/v1`, adminToken: shim.adminToken, createdAt: "2026-01-01T00:00:00Z" };
  return t;
}

async function reap(argv: string[], setup: (p: ReturnType<typeof fixtureTenants>["pulumi"], root: string) => void = () => {}) {
  const { root, pulumi } = tenants();
  setup(pulumi, root);
  const io = memoryIo();
  const code = await main(argv, { root, pulumi, io, env: {}, now: () => NOW });
  // Destroys run two at a time, so their order is not part of the contract.
  return { code, io, pulumi, destroyed: pulumi.callsOf("destroy").map((c) => pulumi.stackArg(c.args)).sort() };
}

/** Without the unreadable stack (golf), so exit codes depend on the destroys alone. */
const withoutGolf = (p: ReturnType<typeof fixtureTenants>["pulumi"]) => p.stacks.set("golf", { outputs: {} });
/** The tenants without golf, bravo's endpoint behind `front` (a proxy that answers some requests as a failing or older shim would). */
function tenantsWithBravoBehind(front: { url: string }) {
  const { root, pulumi } = tenants();
  withoutGolf(pulumi);
  const bravo = pulumi.stacks.get("bravo")!;
  bravo.outputs = { ...bravo.outputs, endpoint: `${front.url}/v1` };
  return { root, pulumi, bravo };
}

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

  it("a first deploy interrupted while Linode created the instance (a pending create, no instance in the state) is not 'nothing to destroy': the line says the instance may bill and how to find it (found by review)", async () => {
    const interrupted = (p: FakePulumi) => {
      withoutGolf(p);
      const created = failedDeployResources("delta", "2026-03-01T10:00:00Z");
      const instance = created.find((res) => res.type === "linode:index/instance:Instance")!;
      p.stacks.set("delta", { outputs: {}, resources: created.filter((res) => res !== instance), pendingOperations: [{ type: "creating", resource: { type: instance.type, urn: instance.urn } }] });
    };
    const { code, io, destroyed } = await reap(["--yes"], interrupted);
    expect(code).toBe(1);
    expect(destroyed).not.toContain("delta");
    const out = io.stdout.join("\n");
    expect(out).not.toMatch(/delta +not deployed/);
    expect(out).toContain("delta    cannot tell: `pulumi up` was interrupted while Linode created the instance gs-delta: the state does not hold it, so no destroy deletes it, and it may bill.");
    expect(out).toContain("pulumi refresh --stack delta");
    // What Linode holds that no stack does, and the command that deletes it.
    expect(out).toContain("Find it with `npm run list-tenants -- --linode`, which gives the command that deletes it");
  });

  it("a failed deploy whose earlier destroy deleted its creation time, then failed on the instance, is not reaped (even --force): the line says how to destroy it by hand", async () => {
    // Before the instance depended on the created-at record, a destroy deleted the record first.
    const stuck = (p: FakePulumi) => {
      withoutGolf(p);
      const left = failedDeployResources("delta", "2026-03-01T10:00:00Z").filter((res) => !res.urn.endsWith("-created-at"));
      p.stacks.set("delta", { outputs: {}, resources: left });
    };
    for (const argv of [["--yes"], ["--yes", "--force"], ["--yes", "--force", "delta"]]) {
      const { code, io, destroyed } = await reap(argv, stuck);
      expect(code, argv.join(" ")).toBe(1);
      expect(destroyed).not.toContain("delta");
      expect(io.stdout.join("\n")).toContain("delta    cannot tell: a failed deploy left an instance, but its creation time is not in the state " +
        "(an earlier `pulumi destroy` deleted it, then failed on the instance); " +
        "to destroy the instance, from the repository's root: `pulumi destroy --yes --non-interactive --refresh --stack delta`");
    }
  });

  it("a failed deploy whose stack file no longer validates is reaped by the file's ttlHours, written as `pulumi config set` writes it (\"1\", a string)", async () => {
    // hotel (region mars-1: a config problem): its first `pulumi up` failed at 10:00, after the host was made.
    const { code, io, destroyed } = await reap(["--yes"], (p, root) => {
      withoutGolf(p);
      writeFileSync(join(root, "stacks", "Pulumi.hotel.yaml"), stringify({ config: { "gpu-sandbox:region": "mars-1", "gpu-sandbox:adminCidrs": ["81.2.69.160/32"], "gpu-sandbox:ttlHours": "1" } }));
      p.stacks.set("hotel", { outputs: {}, resources: failedDeployResources("hotel", "2026-03-01T10:00:00Z") });
    });
    const out = io.stdout.join("\n");
    expect(out).toMatch(/hotel +expired 1h 0m ago \(2026-03-01T11:00:00Z\), failed deploy \(resources exist\): destroy/);
    expect(destroyed).toEqual(["bravo", "foxtrot", "hotel"]);
    expect(code).toBe(0);
  });

  it("a failed deploy whose stack file's ttlHours cannot be read is \"cannot tell\" (exit 1, not destroyed), not \"no ttlHours\"", async () => {
    for (const ttl of ["1h", "0x10", true]) {
      const { code, io, destroyed } = await reap(["--yes"], (p, root) => {
        withoutGolf(p);
        writeFileSync(join(root, "stacks", "Pulumi.hotel.yaml"), stringify({ config: { "gpu-sandbox:region": "us-ord", "gpu-sandbox:adminCidrs": ["81.2.69.160/32"], "gpu-sandbox:ttlHours": ttl } }));
        p.stacks.set("hotel", { outputs: {}, resources: failedDeployResources("hotel", "2026-03-01T10:00:00Z") });
      });
      const out = io.stdout.join("\n");
      expect(out, String(ttl)).not.toMatch(/hotel +no ttlHours/);
      expect(out).toContain(`hotel    cannot tell: a failed deploy left an instance, and its stack file's ttlHours cannot be read (gpu-sandbox:ttlHours = ${JSON.stringify(ttl)}: must be a number in decimal digits, e.g. 24); fix it (npm run render -- --stack hotel)`);
      expect(destroyed).not.toContain("hotel");
      expect(code).toBe(1);
    }
  });

  // Found by review: a top-level number reaches `pulumi up` as its text ("01" is 1), so a leading 0
  // there is no octal trap; refusing it made a failed deploy "cannot tell", kept billing.
  it("a failed deploy whose top-level ttlHours is written 01 (1 to Pulumi, which reads it as the text \"01\") is reaped", async () => {
    const { code, io, destroyed } = await reap(["--yes"], (p, root) => {
      withoutGolf(p);
      writeFileSync(join(root, "stacks", "Pulumi.hotel.yaml"), "config:\n  gpu-sandbox:region: mars-1\n  gpu-sandbox:adminCidrs: [81.2.69.160/32]\n  gpu-sandbox:ttlHours: 01\n");
      p.stacks.set("hotel", { outputs: {}, resources: failedDeployResources("hotel", "2026-03-01T10:00:00Z") });
    });
    const out = io.stdout.join("\n");
    expect(out).toMatch(/hotel +expired 1h 0m ago/);
    expect(destroyed).toContain("hotel");
    expect(code).toBe(0);
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
      ["destroy", "--yes", "--non-interactive", "--refresh", "--stack", "bravo"],
      ["destroy", "--yes", "--non-interactive", "--refresh", "--stack", "foxtrot"],
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

  it("a destroy reads what is left first: a stack whose last destroy deleted its volume and then stopped is destroyed on the next run", async () => {
    // The Linode provider deletes a volume by detaching it and then deleting it; an error after
    // Linode deleted it (a lost answer, a timeout) leaves it in the state, and a destroy that does
    // not refresh first then fails on every run with Linode's 404, the GPU billing on.
    const { code, io, destroyed } = await reap(["--yes", "--concurrency", "1"], (p) => {
      withoutGolf(p);
      p.script = (args) => (args[0] === "destroy" && args.at(-1) === "bravo" && !args.includes("--refresh")
        ? { exitCode: 255, stderr: "error: deleting urn:pulumi:bravo::gpu-sandbox::linode:index/volume:Volume::host-volume: Failed to Detach Volume 4242: [404] Not found" }
        : undefined);
    });
    expect(io.stderr.join("\n")).not.toContain("FAILED");
    expect(code).toBe(0);
    expect(destroyed).toEqual(["bravo", "foxtrot"]);
    expect(io.stdout.join("\n")).toContain("Destroyed 2 of 2 expired stack(s).");
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
    expect(io.stderr.join("\n")).toContain("[bravo] FAILED: `pulumi destroy --yes --non-interactive --refresh --stack bravo` exited 255");
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

  it("a deployed stack's file that cannot be read is reported and gives exit 1; the other stacks are still judged and reaped", async () => {
    const { code, io, destroyed } = await reap(["--yes"], (p, root) => {
      withoutGolf(p);
      p.stacks.set("kilo", { outputs: { endpoint: "https://kilo.example/v1", expiresAt: "2026-03-01T10:00:00Z" } });
      // A directory with a stack file's name (EISDIR); an unreadable file (EACCES) takes the same path.
      mkdirSync(join(root, "stacks", "Pulumi.kilo.yaml"));
    });
    expect(code).toBe(1);
    expect(destroyed).toEqual(["bravo", "foxtrot"]);
    const out = io.stdout.join("\n");
    expect(out).toMatch(/kilo +cannot tell: its stack file cannot be read: cannot read \S+Pulumi\.kilo\.yaml: EISDIR/);
    expect(out).toContain("1 stack(s) could not be checked: kilo.");
  });

  it("a stack file that cannot be read of a stack with nothing deployed is reported, not a failure of the run", async () => {
    // Not in the backend, or destroyed (`stack output` prints {} and the state has no resources).
    for (const pulumi of [new FakePulumi({}), new FakePulumi({ draft: { outputs: {}, resources: [] } })]) {
      const root = tempDir();
      mkdirSync(join(root, "stacks"));
      // A YAML typo: the ttlHours line is indented one space too far.
      writeFileSync(join(root, "stacks", "Pulumi.draft.yaml"), "config:\n  gpu-sandbox:region: us-ord\n   gpu-sandbox:ttlHours: 4\n");
      const io = memoryIo();
      expect(await reapExpired({ yes: true, now: NOW, concurrency: 2, usageDir: join(root, "usage"), force: new Set() }, withDefaults({ root, pulumi, io, env: {}, now: () => NOW }))).toBe(0);
      const out = io.stdout.join("\n");
      expect(out).not.toContain("cannot tell");
      expect(out).toMatch(/draft +not deployed: nothing to destroy \(its stack file cannot be read: /);
      expect(out).toContain("Nothing expired.");
      expect(pulumi.callsOf("destroy")).toEqual([]);
      rmSync(root, { recursive: true, force: true });
    }
  });

  it("needs the pulumi CLI and valid flags", async () => {
    const noCli = await reap(["--yes"], (p) => { p.installed = false; });
    expect(noCli.code).toBe(2);
    expect(noCli.io.stderr.join("\n")).toContain("reap-expired needs the pulumi CLI on PATH");
    for (const [argv, message] of [
      [["--now", "yesterday"], '--now "yesterday" must be an ISO timestamp with its zone, e.g. 2026-03-01T18:00:00Z'],
      // Without a zone it would be read in this machine's local time; the 30th of February would roll over to March 2.
      [["--now", "2026-03-01T18:00:00"], '--now "2026-03-01T18:00:00" must be an ISO timestamp with its zone'],
      // A day that does not exist is named, as report-usage and manage-keys name it, not taken for a typo in the format.
      [["--now", "2030-02-30T00:00:00Z"], "--now: 2030-02-30 is not a day: February 2030 has 28 days"],
      [["--now", "2026-03-01"], '--now "2026-03-01" must be an ISO timestamp with its zone'],
      [["--concurrency", "0"], '--concurrency "0" must be a whole number from 1 to 16'],
      [["--concurrency", "17"], '--concurrency "17" must be a whole number from 1 to 16'],
      [["--concurrency", "1.5"], '--concurrency "1.5" must be a whole number from 1 to 16'],
      // Decimal digits only, as --credits, --amount and --ttl-hours take numbers: Number() reads these too.
      [["--concurrency", "1e1"], '--concurrency "1e1" must be a whole number from 1 to 16, in decimal digits'],
      [["--concurrency", "0x10"], '--concurrency "0x10" must be a whole number from 1 to 16, in decimal digits'],
      [["--destroy"], "Unknown option '--destroy'"],
    ] as const) {
      const r = await reap([...argv]);
      expect(r.code).toBe(2);
      expect(r.io.stderr.join("\n")).toContain(message);
      expect(r.destroyed).toEqual([]);
    }
  });

  it("a marker written again (a saved usage for another expiry) is made 0600 too, in a directory that exists", async () => {
    const { root, pulumi } = tenants();
    withoutGolf(pulumi);
    const dir = join(root, "billing-kept");
    mkdirSync(dir, { mode: 0o700 });
    const marker = join(dir, "bravo.exported");
    writeFileSync(marker, JSON.stringify({ stack: "bravo", expiresAt: "2026-02-01T10:00:00.000Z", savedAt: NOW.toISOString(), usage: "x", keys: "y" }));
    chmodSync(marker, 0o644);
    expect(await main(["--yes", "--usage-dir", "billing-kept"], { root, pulumi, io: memoryIo(), env: {}, now: () => NOW })).toBe(0);
    expect(JSON.parse(readFileSync(marker, "utf8"))).toMatchObject({ expiresAt: "2026-03-01T10:00:00.000Z" });
    expect(statSync(marker).mode & 0o777).toBe(0o600);
  });

  it("saves each tenant's usage before destroying it, per key, day and model, in --usage-dir, with its keys revoked", async () => {
    const { root, pulumi } = tenants();
    withoutGolf(pulumi);
    const live = await shim.createKey({ name: "still-live", credits: 5 });
    const io = memoryIo();
    expect(await main(["--yes", "--usage-dir", "billing"], { root, pulumi, io, env: {}, now: () => NOW })).toBe(0);
    const files = readdirSync(join(root, "billing")).sort().filter((f) => !f.startsWith("bravo-credits-"));
    const creditsFile = readdirSync(join(root, "billing")).find((f) => f.startsWith("bravo-credits-"))!;
    expect(files).toHaveLength(3);
    for (const f of [...files, creditsFile]) expect(statSync(join(root, "billing", f)).mode & 0o777, f).toBe(0o600);
    // A tenant's billing is for the operator alone, whatever the umask: the directory 0700, each file 0600.
    expect(statSync(join(root, "billing")).mode & 0o777).toBe(0o700);
    for (const f of files) expect(statSync(join(root, "billing", f)).mode & 0o777, f).toBe(0o600);
    expect(files[1]).toMatch(/^bravo-usage-\d{8}T\d{6}Z\.csv$/);
    const csv = readFileSync(join(root, "billing", files[1]!), "utf8").trim().split(/\r?\n/);
    // The CSV names each key by id and name (a bill is read by name, and the volume that maps
    // ids to names is deleted by the destroy); the keys file, saved with it, has their balances.
    expect(files[0]).toBe(files[1]!.replace("-usage-", "-keys-").replace(/\.csv$/, ".json"));
    const saved = JSON.parse(readFileSync(join(root, "billing", files[0]!), "utf8")) as { id: string; name: string; balance: number; revoked_at: string | null }[];
    expect(saved.find((k) => k.id === keyId)).toMatchObject({ name: "team-1" });
    expect(saved.find((k) => k.id === keyId)!.balance).toBeLessThan(100);
    // Every key was revoked before the export, and the file says which ones the reaper revoked.
    expect(saved.every((k) => k.revoked_at !== null)).toBe(true);
    expect(saved.find((k) => k.id === live.id)).toMatchObject({ name: "still-live", balance: 5, revoked_by: "reap-expired" });
    // How many were live depends on the tests before this one (they revoke team-1): the line
    // counts those the reaper revoked, whatever the order the tests run in.
    const revokedNow = saved.filter((k) => (k as { revoked_by?: string }).revoked_by === "reap-expired").length;
    expect(revokedNow).toBeGreaterThanOrEqual(1);
    expect(io.stdout).toContain(`[bravo] revoking its ${revokedNow} live key${revokedNow === 1 ? "" : "s"}: the tenant is being destroyed, and its usage must be final before it is saved`);
    expect((await shim.post(live.key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }] })).status).toBe(401);
    // The marker: saved for this expiry, so a retried destroy need not export again.
    expect(files[2]).toBe("bravo.exported");
    expect(JSON.parse(readFileSync(join(root, "billing", files[2]!), "utf8"))).toEqual({
      stack: "bravo", expiresAt: "2026-03-01T10:00:00.000Z", savedAt: NOW.toISOString(),
      usage: join(root, "billing", files[1]!), keys: join(root, "billing", files[0]!), credits: join(root, "billing", creditsFile),
    });
    // The credits statement, saved with them: what the volume alone held of a last invoice (each
    // key's grants and top-ups, their notes, and its closing balance), the shim's own answer.
    expect(creditsFile).toBe(files[1]!.replace("-usage-", "-credits-").replace(/\.csv$/, ".json"));
    const statement = JSON.parse(readFileSync(join(root, "billing", creditsFile), "utf8")) as CreditsStatement;
    const line = statement.data.find((l) => l.key_id === keyId)!;
    expect(line.granted).toBe(100);
    expect(line.closing).toBe(saved.find((k) => k.id === keyId)!.balance);
    expect(line.opening + line.granted - line.spent - (line.adjusted ?? 0)).toBeCloseTo(line.closing, 6);
    // An invoice prices each model apart: the model beside the day; the columns before it kept.
    expect(csv[0]).toBe("key_id,key_name,day,model,requests,prompt_tokens,completion_tokens,total_tokens,cost");
    const row = csv.find((l) => l.startsWith(`${keyId},`))!;
    expect(row.split(",").slice(0, 5)).toEqual([keyId, "team-1", "2026-03-01", "qwen2.5-7b", "3"]);
    expect(row.split(",")[6]).toBe("12");
    expect(io.stderr.join("\n")).not.toContain("model column");
    const out = io.stdout.join("\n");
    expect(out).toMatch(/\[bravo\] saved its usage \(\d+ rows\) to .*bravo-usage-\S+ and its keys \(\d+\) to .*bravo-keys-\S+, its credits statement to .*bravo-credits-/);
    expect(out).toContain("[foxtrot] no usage to save: no endpoint: the serving stack was never deployed");
    // The export happened before the destroy.
    const order = pulumi.calls.map((c) => c.args.join(" ")).filter((a) => a.includes("bravo") && (a.startsWith("destroy") || a.includes("--show-secrets")));
    expect(order).toEqual(["stack output --json --stack bravo --show-secrets", "destroy --yes --non-interactive --refresh --stack bravo"]);
  });

  it("waits out the tenant's nginx refusing a revoke 429 (its per-address limit covers /admin), says so, and still saves the usage", async () => {
    const live = await shim.createKey({ name: "behind-limit", credits: 5 });
    let refused = 0;
    const front = await frontProxy(shim.url, (method) => (method === "DELETE" && refused++ === 0 ? "rate-limited" : "forward"));
    try {
      const { root, pulumi, bravo } = tenantsWithBravoBehind(front);
      const io = memoryIo();
      expect(await main(["--yes"], { root, pulumi, io, env: {}, now: () => NOW })).toBe(0);
      const out = io.stdout.join("\n");
      expect(out).toMatch(/\[bravo\] admin API DELETE \/admin\/keys\/\w+: 429 rate_limit_exceeded: Too many requests from your address; retry after 1 second\. Waiting 1 s, then sending it again \(retry 1 of 5\)…\n/);
      expect(out).toMatch(/\[bravo\] saved its usage/);
      expect(pulumi.callsOf("destroy").map((c) => pulumi.stackArg(c.args))).toContain("bravo");
      expect((await shim.post(live.key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }] })).status).toBe(401);
    } finally {
      front.close();
    }
  });

  it("keeps a tenant whose usage cannot be saved, exits 1, and says how to proceed; --force destroys it anyway", async () => {
    const closed = await freePort(); // nothing listens: the connection is refused, as when the host is down
    const unreachable = (p: ReturnType<typeof fixtureTenants>["pulumi"]) => {
      withoutGolf(p);
      const bravo = p.stacks.get("bravo")!;
      bravo.outputs = { ...bravo.outputs, endpoint: `http://127.0.0.1:${closed}/v1` };
    };
    const kept = await reap(["--yes"], unreachable);
    expect(kept.code).toBe(1);
    expect(kept.destroyed).toEqual(["foxtrot"]);
    const err = kept.io.stderr.join("\n");
    expect(err).toContain("[bravo] KEPT: could not save its usage before the destroy would delete it: cannot reach the admin API");
    expect(err).toContain("(is the tenant's host up? a destroy that failed after its stop step leaves the serving stack down)");
    expect(err).toContain("[bravo] fix that and run again, or run with --force bravo to destroy it without its usage");
    expect(kept.io.stdout.join("\n")).toContain("Destroyed 1 of 2 expired stack(s). Failed: bravo.");

    const forced = await reap(["--yes", "--force"], unreachable);
    expect(forced.code).toBe(0);
    expect(forced.destroyed).toEqual(["bravo", "foxtrot"]);
    expect(forced.io.stderr.join("\n")).toContain("[bravo] could not save its usage (cannot reach the admin API");
  });

  it("a dry run saves nothing and revokes nothing", async () => {
    const { root, pulumi } = tenants();
    withoutGolf(pulumi);
    const live = await shim.createKey({ name: "dry-run", credits: 5 });
    expect(await main([], { root, pulumi, io: memoryIo(), env: {}, now: () => NOW })).toBe(0);
    expect(existsSync(join(root, "usage"))).toBe(false);
    expect((await shimKeys()).find((k) => k.id === live.id)!.revoked_at).toBeNull();
  });

  it("fixtures: the stacks it destroys are exactly those whose expiresAt is past", () => {
    const expired = Object.entries(fixtureStacks())
      .filter(([, s]) => typeof s.outputs?.expiresAt === "string" && Date.parse(s.outputs.expiresAt as string) <= NOW.getTime())
      .map(([name]) => name);
    expect(expired).toEqual(["bravo", "foxtrot"]);
  });
});

async function shimKeys(): Promise<ApiKey[]> {
  return ((await (await shim.admin("/admin/keys")).json()) as { data: ApiKey[] }).data;
}

/** The key's requests in the shim's ledger, which the destroy deletes with the volume. */
async function ledgerRequests(id: string): Promise<number> {
  const rows = ((await (await shim.admin(`/admin/usage?key=${id}&group=day&from=2026-01-01`)).json()) as { data: { requests: number }[] }).data;
  return rows.reduce((sum, r) => sum + r.requests, 0);
}

/** The requests of the key's rows in the saved CSV (0 without a row), its column found by its header. */
function savedRequests(dir: string, id: string): number {
  const file = readdirSync(dir).find((f) => f.endsWith(".csv"))!;
  const [head, ...lines] = readFileSync(join(dir, file), "utf8").split(/\r?\n/);
  const column = head!.split(",").indexOf("requests");
  return lines.filter((l) => l.startsWith(`${id},`)).reduce((sum, l) => sum + Number(l.split(",")[column]), 0);
}

const chat = (key: string) => shim.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 4 });

/** Resolves once a request of the key holds credits: it is in flight. */
async function inFlight(id: string): Promise<void> {
  for (let i = 0; i < 200 && !((await shimKeys()).find((k) => k.id === id)!.held > 0); i++) await new Promise((r) => setTimeout(r, 10));
}

/** A FakePulumi whose `destroy` first lets clients try the endpoint, as they do until its stop step. */
class ServedUntilStopped extends FakePulumi {
  /** Run at the start of each destroy of this stack. */
  readonly duringDestroy = new Map<string, () => Promise<void>>();
  override async run(args: readonly string[], options: RunOptions = {}): Promise<PulumiResult> {
    if (args[0] === "destroy") await this.duringDestroy.get(this.stackArg(args))?.();
    return super.run(args, options);
  }
}

describe("reap-expired: the saved usage is the whole ledger", () => {
  it("revokes the keys, waits for the requests in flight, then exports: nothing is served after the export", async () => {
    const t = tenants();
    const root = t.root;
    const pulumi = new ServedUntilStopped(Object.fromEntries(t.pulumi.stacks));
    withoutGolf(pulumi);
    const { id, key } = await shim.createKey({ name: "busy", credits: 100 });
    expect((await chat(key)).status).toBe(200);
    // One request still running when the reaper starts: its usage is written when it settles.
    shim.fake.set({ headerDelayMs: 1500 });
    const running = chat(key);
    await inFlight(id);
    // Clients keep trying until the destroy's stop step: each is refused now.
    const during: number[] = [];
    pulumi.duringDestroy.set("bravo", async () => { during.push((await chat(key)).status); });

    const io = memoryIo();
    expect(await main(["--yes"], { root, pulumi, io, env: {}, now: () => NOW })).toBe(0);
    expect((await running).status).toBe(200);
    expect(during).toEqual([401]);
    expect(io.stdout).toContain("[bravo] waiting up to 60 s for the requests in flight of 1 key(s) to settle…");
    expect(await ledgerRequests(id)).toBe(2);
    expect(savedRequests(join(root, "usage"), id)).toBe(2);
  });

  it("a request still in flight when the wait ends is reported: its usage may be missing", async () => {
    const { root, pulumi } = tenants();
    withoutGolf(pulumi);
    const { id, key } = await shim.createKey({ name: "slow", credits: 100 });
    shim.fake.set({ headerDelayMs: 1500 });
    const running = chat(key);
    await inFlight(id);
    const io = memoryIo();
    const deps = withDefaults({ root, pulumi, io, env: {}, now: () => NOW });
    expect(await reapExpired({ yes: true, now: NOW, concurrency: 2, usageDir: join(root, "usage"), force: new Set(), settleTimeoutMs: 200 }, deps)).toBe(0);
    expect(io.stdout).toContain(`[bravo] requests of 1 key(s) were still in flight when the wait ended (${id}): their usage may be missing from what is saved`);
    await running;
  });
});

describe("reap-expired: a tenant whose requests cost nothing (pricing.request: 0)", () => {
  // Such a request holds 0 credits: the wait must go by the requests in flight, not by `held`.
  let free: Harness;
  beforeAll(async () => { free = await startShim({ file: { pricing: { request: 0 }, models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }] } }); });
  afterAll(async () => free?.close());

  it("waits for a stream still running, though it holds nothing, before the usage is final", async () => {
    const { id, key } = await free.createKey({ credits: 0 });
    free.fake.set({ tokenDelayMs: 100, defaultTokens: 20 });
    const res = await free.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", stream: true, max_tokens: 20, messages: [{ role: "user", content: "hi" }] });
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    await reader.read(); // the stream is running
    const client = adminClient({ baseUrl: free.url, adminToken: free.adminToken, source: "test" });
    const lines: string[] = [];
    const retired = await retireKeys(client, { settleTimeoutMs: 10_000, pollMs: 100, progress: (l) => lines.push(l) });
    expect(lines).toContain("waiting up to 10 s for the requests in flight of 1 key(s) to settle…");
    const exported = await client.usage({ key: id, from: "2000-01-01" }); // what reap-expired saves now
    while (!(await reader.read()).done);
    await free.store.flush();
    expect(retired.stillHolding).toEqual([]);
    expect(exported.data).toEqual([expect.objectContaining({ key_id: id, requests: 1, completion_tokens: 20 })]);
    expect((await client.usage({ key: id, from: "2000-01-01" })).data).toEqual(exported.data);
  });
});

describe("reap-expired: a destroy that failed after its stop step", () => {
  /** bravo behind a front that the first destroy stops, as stop-serving-stack.sh stops nginx, and then fails. */
  async function halfDestroyed() {
    const front = await frontProxy(shim.url);
    const { root, pulumi, bravo } = tenantsWithBravoBehind(front);
    const india = pulumi.stacks.get("india")!;
    india.outputs = { ...india.outputs, expiresAt: "2026-03-05T00:00:00Z" }; // bravo is the only one expired
    let destroys = 0;
    pulumi.script = (args) => {
      if (args[0] !== "destroy" || pulumi.stackArg(args) !== "bravo") return undefined;
      if (++destroys > 1) return undefined;
      front.close();
      return { exitCode: 255, stderr: "error: deleting urn:pulumi:bravo::gpu-sandbox::linode:index/instance:Instance::gs-bravo: 500 Internal Server Error" };
    };
    const first = memoryIo();
    expect(await main(["--yes"], { root, pulumi, io: first, env: {}, now: () => NOW })).toBe(1);
    expect(first.stderr.join("\n")).toContain("[bravo] its usage is saved: the next run destroys it again without exporting");
    // Let this process's connection pool see the front's connections closed: the next run (from
    // cron, a new process) connects afresh and is refused, rather than write to a dead socket.
    await new Promise((resolve) => setTimeout(resolve, 50));
    return { root, pulumi, destroys: () => destroys };
  }

  it("the next run finds the saved usage and destroys it, instead of keeping a billing host forever", async () => {
    const { root, pulumi, destroys } = await halfDestroyed();
    const csv = readdirSync(join(root, "usage")).filter((f) => f.endsWith(".csv"));
    expect(csv).toHaveLength(1);

    const second = memoryIo();
    expect(await main(["--yes"], { root, pulumi, io: second, env: {}, now: () => new Date(NOW.getTime() + 900_000) }), second.text()).toBe(0);
    expect(destroys()).toBe(2);
    expect(second.stdout.join("\n")).toMatch(/\[bravo\] usage already saved at 2026-03-01T12:00:00\.000Z \(\S+bravo-usage-\S+\.csv, \S+bravo-keys-\S+\.json\), by a run whose destroy failed; destroying without exporting again/);
    expect(second.stdout.join("\n")).toContain("Destroyed 1 of 1 expired stack(s).");
    expect(readdirSync(join(root, "usage")).filter((f) => f.endsWith(".csv"))).toEqual(csv); // nothing exported again
  });

  it("--json: the run that destroys without exporting again names the files the earlier run saved, its credits statement too", async () => {
    const { root, pulumi } = await halfDestroyed();
    const saved = readdirSync(join(root, "usage")).find((f) => f.startsWith("bravo-credits-"))!;
    const second = memoryIo();
    expect(await main(["--yes", "--json"], { root, pulumi, io: second, env: {}, now: () => new Date(NOW.getTime() + 900_000) }), second.text()).toBe(0);
    const bravo = (JSON.parse(second.stdout.join("")) as { stack: string; creditsFile: string | null }[]).find((r) => r.stack === "bravo")!;
    expect(bravo).toMatchObject({ action: "destroyed", creditsFile: join(root, "usage", saved) });
  });

  it("--json: a credits statement deleted since is not named (it is not needed to destroy: an older shim saves none)", async () => {
    const { root, pulumi } = await halfDestroyed();
    rmSync(join(root, "usage", readdirSync(join(root, "usage")).find((f) => f.startsWith("bravo-credits-"))!));
    const second = memoryIo();
    expect(await main(["--yes", "--json"], { root, pulumi, io: second, env: {}, now: () => new Date(NOW.getTime() + 900_000) }), second.text()).toBe(0);
    expect((JSON.parse(second.stdout.join("")) as { stack: string }[]).find((r) => r.stack === "bravo")).toMatchObject({ action: "destroyed", creditsFile: null });
  });

  it("--json: the next run's row names the files the earlier run saved, as a row of a run that saved them does", async () => {
    const { root, pulumi } = await halfDestroyed();
    const saved = readdirSync(join(root, "usage"));
    const second = memoryIo();
    expect(await main(["--yes", "--json"], { root, pulumi, io: second, env: {}, now: () => new Date(NOW.getTime() + 900_000) }), second.text()).toBe(0);
    const bravo = (JSON.parse(second.stdout.join("")) as { stack: string; action: string; usageFile: string | null; keysFile: string | null }[]).find((r) => r.stack === "bravo")!;
    expect(bravo.action).toBe("destroyed");
    expect(bravo.usageFile).toMatch(/bravo-usage-[^/]+\.csv$/);
    expect(bravo.keysFile).toMatch(/bravo-keys-[^/]+\.json$/);
    expect(saved).toEqual(expect.arrayContaining([basename(bravo.usageFile!), basename(bravo.keysFile!)]));
  });

  it("a saved usage for another expiry (the stack was deployed again since) does not count: the export is tried", async () => {
    const { root, pulumi, destroys } = await halfDestroyed();
    const marker = join(root, "usage", "bravo.exported");
    writeFileSync(marker, JSON.stringify({ ...JSON.parse(readFileSync(marker, "utf8")), expiresAt: "2026-02-01T10:00:00.000Z" }));
    const second = memoryIo();
    expect(await main(["--yes"], { root, pulumi, io: second, env: {}, now: () => NOW })).toBe(1);
    expect(destroys()).toBe(1);
    expect(second.stderr.join("\n")).toContain("[bravo] KEPT: could not save its usage before the destroy would delete it:");
    expect(second.stderr.join("\n")).toContain("(is the tenant's host up? a destroy that failed after its stop step leaves the serving stack down)");
  });
  it("a usage directory moved elsewhere, marker and files together, still lets the next run destroy it (--usage-dir)", async () => {
    const { root, pulumi, destroys } = await halfDestroyed();
    const moved = join(tempDir(), "archive");
    cpSync(join(root, "usage"), moved, { recursive: true });
    rmSync(join(root, "usage"), { recursive: true });
    const second = memoryIo();
    expect(await main(["--yes", "--usage-dir", moved], { root, pulumi, io: second, env: {}, now: () => NOW }), second.text()).toBe(0);
    expect(destroys()).toBe(2);
    expect(second.stdout.join("\n")).toContain("[bravo] usage already saved at");
  });

  it("a destroy that fails again, its usage saved by an earlier run, says the usage is saved and its keys revoked", async () => {
    const customer = await shim.createKey({ name: "customer-again", credits: 100 });
    const { root, pulumi, destroys } = await halfDestroyed();
    pulumi.script = (args) => (args[0] === "destroy" && pulumi.stackArg(args) === "bravo"
      ? { exitCode: 255, stderr: "error: the stack is currently locked by 1 lock(s)" }
      : undefined);
    const second = memoryIo();
    expect(await main(["--yes"], { root, pulumi, io: second, env: {}, now: () => NOW })).toBe(1);
    expect(destroys()).toBe(1); // the first run's; this one's failed in the script above
    expect(second.stdout.join("\n")).toContain("[bravo] usage already saved at");
    const err = second.stderr.join("\n");
    expect(err).toContain("[bravo] FAILED: `pulumi destroy --yes --non-interactive --refresh --stack bravo` exited 255");
    expect(err).toContain("[bravo] its usage is saved: the next run destroys it again without exporting");
    expect(err).toMatch(/\[bravo\] its \d+ keys? (is|are) revoked \(clients get 401\) while the host bills on/);
    expect((await chat(customer.key)).status).toBe(401);
  });

  it("a marker whose saved keys file is gone does not count either", async () => {
    const { root, pulumi, destroys } = await halfDestroyed();
    const keys = join(root, "usage", readdirSync(join(root, "usage")).find((f) => f.startsWith("bravo-keys-"))!);
    rmSync(keys);
    const second = memoryIo();
    expect(await main(["--yes"], { root, pulumi, io: second, env: {}, now: () => NOW })).toBe(1);
    expect(destroys()).toBe(1); // not destroyed without the map from key ids to names
    expect(second.text()).toContain(`[bravo] ${join(root, "usage", "bravo.exported")} says its usage was saved, but ${keys} is gone: exporting again`);
  });

  it("a marker whose saved files are gone does not count: the export is tried, and a line says why", async () => {
    const { root, pulumi, destroys } = await halfDestroyed();
    const csv = join(root, "usage", readdirSync(join(root, "usage")).find((f) => f.endsWith(".csv"))!);
    rmSync(csv);
    const second = memoryIo();
    expect(await main(["--yes"], { root, pulumi, io: second, env: {}, now: () => NOW })).toBe(1);
    expect(destroys()).toBe(1); // not destroyed without its usage
    expect(second.text()).toContain(`[bravo] ${join(root, "usage", "bravo.exported")} says its usage was saved, but ${csv} is gone: exporting again`);
    expect(second.stderr.join("\n")).toContain("[bravo] KEPT: could not save its usage before the destroy would delete it:");
  });
});

describe("reap-expired: the saved usage per model", () => {
  it("a key that used two models on a day has a row for each, with its own requests, tokens and cost", async () => {
    const { id, key } = await shim.createKey({ name: "two-models", credits: 100 });
    await chat(key);
    await shim.client(key).embeddings.create({ model: "bge-m3", input: "x" });
    await shim.client(key).embeddings.create({ model: "bge-m3", input: "y" });
    const { root, pulumi } = tenants();
    withoutGolf(pulumi);
    expect(await main(["--yes"], { root, pulumi, io: memoryIo(), env: {}, now: () => NOW })).toBe(0);
    const file = readdirSync(join(root, "usage")).find((f) => f.endsWith(".csv"))!;
    const rows = readFileSync(join(root, "usage", file), "utf8").split("\r\n").filter((l) => l.startsWith(`${id},`));
    expect(rows.map((l) => l.split(",").slice(1, 5))).toEqual([["two-models", "2026-03-01", "bge-m3", "2"], ["two-models", "2026-03-01", "qwen2.5-7b", "1"]]);
  });

  it("a tenant whose shim is older (no group=day,model) still has its usage saved per key and day, says the model column is missing on stderr, and is destroyed", async () => {
    const { id, key } = await shim.createKey({ name: "older-shim", credits: 100 });
    await chat(key);
    // The refusal a shim from before group=day,model answers (routes/admin.ts then), word for word.
    const older = { status: 400, json: JSON.stringify({ error: { message: "'group' must be model or day.", type: "invalid_request_error", param: "group", code: "invalid_request" } }) };
    const front = await frontProxy(shim.url, (method, url) => (method === "GET" && url.startsWith("/admin/usage") && /group=day%2Cmodel/.test(url) ? older : "forward"));
    const { root, pulumi, bravo } = tenantsWithBravoBehind(front);
    const io = memoryIo();
    try {
      expect(await main(["--yes"], { root, pulumi, io, env: {}, now: () => NOW }), io.text()).toBe(0);
    } finally {
      front.close();
    }
    const file = readdirSync(join(root, "usage")).find((f) => f.endsWith(".csv"))!;
    const csv = readFileSync(join(root, "usage", file), "utf8").split("\r\n");
    expect(csv[0]).toBe("key_id,key_name,day,requests,prompt_tokens,completion_tokens,total_tokens,cost");
    expect(csv.find((l) => l.startsWith(`${id},`))!.split(",").slice(1, 4)).toEqual(["older-shim", "2026-03-01", "1"]);
    expect(io.stderr.join("\n")).toContain("[bravo] its usage is saved per key and day without the model column: this tenant's shim is older than group=day,model");
    expect(pulumi.callsOf("destroy").map((c) => pulumi.stackArg(c.args))).toContain("bravo");
  });
});

describe("reap-expired: a shim older than the credits statement", () => {
  it("still has its usage and keys saved, says the credits statement is not, and is destroyed", async () => {
    // What a shim from before GET /admin/credits answers: its router's 404.
    const older = { status: 404, json: JSON.stringify({ error: { message: "Route GET:/admin/credits not found", type: "invalid_request_error", param: null, code: "not_found" } }) };
    const front = await frontProxy(shim.url, (method, url) => (method === "GET" && url.startsWith("/admin/credits") ? older : "forward"));
    const { root, pulumi, bravo } = tenantsWithBravoBehind(front);
    const io = memoryIo();
    try {
      expect(await main(["--yes", "--json"], { root, pulumi, io, env: {}, now: () => NOW }), io.text()).toBe(0);
    } finally {
      front.close();
    }
    expect(readdirSync(join(root, "usage")).filter((f) => f.startsWith("bravo-")).map((f) => f.split("-")[1])).toEqual(["keys", "usage"]);
    expect(io.stderr.join("\n")).toContain("[bravo] its credits statement (grants, top-ups, write-offs) is not saved: this tenant's shim is older than GET /admin/credits");
    expect((JSON.parse(io.stdout.join("")) as { stack: string; creditsFile: string | null; action: string }[]).find((r) => r.stack === "bravo")).toMatchObject({ action: "destroyed", creditsFile: null });
  });
});

describe("reap-expired: the usage export fails after the tenant's keys were revoked", () => {
  it("the KEPT lines say its keys are revoked, on every run; the run that saves the usage still marks them as the reaper's", async () => {
    const { id, key } = await shim.createKey({ name: "customer", credits: 100 });
    const live = (await shimKeys()).filter((k) => k.revoked_at === null).length;
    // The tenant's front answers 504 to the usage report only (a slow report behind nginx).
    const front = await frontProxy(shim.url, (method, url) => (method === "GET" && url.startsWith("/admin/usage") ? "gateway-timeout" : "forward"));
    const { root, pulumi, bravo } = tenantsWithBravoBehind(front);
    const run = async () => {
      const io = memoryIo();
      const code = await main(["--yes"], { root, pulumi, io, env: {}, now: () => NOW });
      return { code, err: io.stderr.join("\n") };
    };
    const revokedLine = `[bravo] its ${live} key${live === 1 ? " is" : "s are"} revoked (clients get 401) while the host bills on; ` +
      "to keep the tenant instead, raise its ttlHours, `pulumi up --stack bravo` and create new keys";
    try {
      const first = await run();
      expect(first.code).toBe(1);
      expect(first.err).toContain("[bravo] KEPT: could not save its usage before the destroy would delete it: admin API GET /admin/usage failed: 504");
      expect(first.err).toContain(revokedLine);
      // Its keys were all made with manage-keys: no stack key to give a new id.
      expect(first.err).toContain("create new keys (`npm run manage-keys -- create --stack bravo --name <name> --credits <n>`)\n");
      expect(first.err).not.toContain("stack key");
      expect((await chat(key)).status).toBe(401); // its customers are locked out already, the host kept
      expect(pulumi.callsOf("destroy").map((c) => pulumi.stackArg(c.args))).not.toContain("bravo");

      // The next run finds no live key to revoke, and still says they are revoked.
      const second = await run();
      expect(second.code).toBe(1);
      expect(second.err).toContain(revokedLine);
    } finally {
      front.close();
    }

    // Fixed: the usage is saved, the keys file says who revoked them, and the record is gone.
    bravo.outputs = { ...bravo.outputs, endpoint: `${shim.url}/v1` };
    expect((await run()).code).toBe(0);
    const keysFile = readdirSync(join(root, "usage")).find((f) => f.startsWith("bravo-keys-"))!;
    const saved = JSON.parse(readFileSync(join(root, "usage", keysFile), "utf8")) as (ApiKey & { revoked_by?: string })[];
    expect(saved.find((k) => k.id === id)).toMatchObject({ name: "customer", revoked_by: "reap-expired" });
    expect(saved.filter((k) => k.revoked_by === "reap-expired")).toHaveLength(live);
    expect(existsSync(join(root, "usage", "bravo.revoked"))).toBe(false);
  });

  it("an export that fails before any key was revoked (no connection) does not say they are", async () => {
    const r = await reap(["--yes"], (p) => {
      withoutGolf(p);
      const bravo = p.stacks.get("bravo")!;
      bravo.outputs = { ...bravo.outputs, endpoint: "http://127.0.0.1:9/v1" };
    });
    expect(r.code).toBe(1);
    expect(r.io.stderr.join("\n")).toContain("[bravo] KEPT");
    expect(r.io.stderr.join("\n")).not.toContain("revoked");
  });
});

describe("reap-expired: a destroy that failed after the keys were revoked (the stack locked by the operator's own `pulumi up` raising ttlHours)", () => {
  const RAISED = "2026-03-02T10:00:00Z"; // ttlHours 24 → 48

  /**
   * bravo with one live key more, one of the stack's own (from configuration, as its
   * gpu-sandbox:keys makes them); its destroy fails as locked, while the operator's `pulumi up`
   * raises its ttlHours.
   */
  async function lockedByRaise() {
    const customer = generateKey();
    await shim.store.ensureBootstrapKey({ id: customer.id, name: "customer", hash: customer.hash, tier: "enterprise", models: null, expiresAt: null, credits: 100_000_000, at: Date.now() });
    const live = (await shimKeys()).filter((k) => k.revoked_at === null).length;
    const { root, pulumi } = tenants();
    withoutGolf(pulumi);
    const bravo = pulumi.stacks.get("bravo")!;
    pulumi.script = (args) => {
      if (args[0] !== "destroy" || pulumi.stackArg(args) !== "bravo") return undefined;
      bravo.outputs = { ...bravo.outputs, expiresAt: RAISED }; // the operator's update ends
      return { exitCode: 255, stderr: "error: the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end or delete the lock file with `pulumi cancel`." };
    };
    const run = async () => {
      const io = memoryIo();
      const code = await main(["--yes"], { root, pulumi, io, env: {}, now: () => NOW });
      return { code, err: io.stderr.join("\n"), out: io.stdout.join("\n") };
    };
    return { customer, live, root, pulumi, run };
  }

  it("the FAILED line says how many keys it revoked and how to keep the tenant; the next run, finding it no longer expired, says its keys were revoked", async () => {
    const { customer, live, root, run } = await lockedByRaise();
    const first = await run();
    expect(first.code).toBe(1);
    expect(first.err).toContain("[bravo] FAILED: `pulumi destroy --yes --non-interactive --refresh --stack bravo` exited 255");
    expect(first.err).toContain("[bravo] its usage is saved: the next run destroys it again without exporting");
    expect(first.err).toContain(`[bravo] its ${live} key${live === 1 ? " is" : "s are"} revoked (clients get 401) while the host bills on; to keep the tenant instead, raise its ttlHours, \`pulumi up --stack bravo\` and create new keys (\`npm run manage-keys -- create --stack bravo --name <name> --credits <n>\`; its stack key customer stays revoked though \`pulumi stack output apiKeys\` still shows it: give it a new id, \`pulumi up --stack bravo --replace '<URN of bravo-key-customer-id>'\`, docs/operations.md "Keeping a tenant whose keys a reap revoked")`);
    expect((await chat(customer.key)).status).toBe(401);

    const second = await run();
    expect(second.code).toBe(0);
    expect(second.out).toMatch(/bravo +expires in 22h 0m \(2026-03-02T10:00:00Z\): keep/);
    const marker = join(root, "usage", "bravo.exported");
    expect(second.err).toContain(`[bravo] not expired now, but a run for its earlier expiry (2026-03-01T10:00:00Z) revoked its ${live} key${live === 1 ? "" : "s"} (clients get 401) and saved its usage, then its destroy failed; its host bills on. ` +
      "To keep the tenant, create new keys (`npm run manage-keys -- create --stack bravo --name <name> --credits <n>`; its stack key customer stays revoked though `pulumi stack output apiKeys` still shows it: give it a new id, `pulumi up --stack bravo --replace '<URN of bravo-key-customer-id>'`, docs/operations.md \"Keeping a tenant whose keys a reap revoked\"); " +
      `to destroy it after all, \`pulumi destroy --yes --non-interactive --refresh --stack bravo\` (its usage is saved: ${JSON.parse(readFileSync(marker, "utf8")).usage}). ` +
      `Then delete ${marker}, which this line is from.`);
  });

  it("two stack keys revoked: each named, one --replace per key, in one command", async () => {
    const partner = generateKey();
    // Made a minute before customer: keys are listed (and so named) by creation, then by random id.
    await shim.store.ensureBootstrapKey({ id: partner.id, name: "partner", hash: partner.hash, tier: "enterprise", models: null, expiresAt: null, credits: 100_000_000, at: Date.now() - 60_000 });
    const { run } = await lockedByRaise();
    const first = await run();
    expect(first.err).toContain("its stack keys partner, customer stay revoked though `pulumi stack output apiKeys` still shows them: give each a new id, " +
      "`pulumi up --stack bravo --replace '<URN of bravo-key-partner-id>' --replace '<URN of bravo-key-customer-id>'`");
  });

  it("after an export that failed once the keys were revoked, and ttlHours raised as the KEPT line offers, the next run says they are still revoked and the usage not saved", async () => {
    const { live, root, pulumi } = await lockedByRaise();
    pulumi.script = () => undefined;
    const front = await frontProxy(shim.url, (method, url) => (method === "GET" && url.startsWith("/admin/usage") ? "gateway-timeout" : "forward"));
    const bravo = pulumi.stacks.get("bravo")!;
    const endpoint = bravo.outputs!.endpoint;
    bravo.outputs = { ...bravo.outputs, endpoint: `${front.url}/v1` };
    try {
      const kept = memoryIo();
      expect(await main(["--yes"], { root, pulumi, io: kept, env: {}, now: () => NOW })).toBe(1);
      expect(kept.stderr.join("\n")).toContain("[bravo] KEPT: could not save its usage");
    } finally {
      front.close();
    }
    bravo.outputs = { ...bravo.outputs, endpoint, expiresAt: RAISED };
    const io = memoryIo();
    expect(await main(["--yes"], { root, pulumi, io, env: {}, now: () => NOW })).toBe(0);
    expect(pulumi.callsOf("destroy").map((c) => pulumi.stackArg(c.args))).toEqual(["foxtrot"]); // by the first run
    expect(io.stderr.join("\n")).toContain(`[bravo] not expired now, but a run for its earlier expiry (2026-03-01T10:00:00Z) revoked its ${live} key${live === 1 ? "" : "s"} (clients get 401) and could not save its usage; its host bills on. ` +
      "To keep the tenant, create new keys (`npm run manage-keys -- create --stack bravo --name <name> --credits <n>`; its stack key customer stays revoked though `pulumi stack output apiKeys` still shows it: give it a new id, `pulumi up --stack bravo --replace '<URN of bravo-key-customer-id>'`, docs/operations.md \"Keeping a tenant whose keys a reap revoked\"); to destroy it after all, save its usage first " +
      "(`npm run --silent report-usage -- --stack bravo --all --group day,model --format csv > bravo-usage.csv` and `npm run --silent manage-keys -- list --stack bravo --json > bravo-keys.json`), " +
      `then \`pulumi destroy --yes --non-interactive --refresh --stack bravo\`. Then delete ${join(root, "usage", "bravo.revoked")}, which this line is from.`);
  });

  it("a revoke that got no answer is said as such by the later runs too: the key may or may not be revoked", async () => {
    await shim.createKey({ name: "unsure", credits: 100 });
    const front = await frontProxy(shim.url, (method) => (method === "DELETE" ? "bad-gateway" : "forward"));
    const { root, pulumi } = tenants();
    withoutGolf(pulumi);
    const bravo = pulumi.stacks.get("bravo")!;
    const endpoint = bravo.outputs!.endpoint;
    bravo.outputs = { ...bravo.outputs, endpoint: `${front.url}/v1` };
    try {
      expect(await main(["--yes"], { root, pulumi, io: memoryIo(), env: {}, now: () => NOW })).toBe(1);
    } finally {
      front.close();
    }
    bravo.outputs = { ...bravo.outputs, endpoint, expiresAt: RAISED };
    const io = memoryIo();
    expect(await main([], { root, pulumi, io, env: {}, now: () => NOW })).toBe(0); // a dry run says it too
    expect(io.stderr.join("\n")).toContain("[bravo] not expired now, but a run for its earlier expiry (2026-03-01T10:00:00Z) may have revoked 1 of its keys " +
      "(its revoke got no answer or failed: see `npm run manage-keys -- list --stack bravo`) and could not save its usage; its host bills on.");
  });

  it("a stack whose ttlHours was removed since a run revoked its keys (no expiresAt now) still gets the line saying so", async () => {
    const { live, pulumi, run } = await lockedByRaise();
    const bravo = pulumi.stacks.get("bravo")!;
    pulumi.script = (args) => {
      if (args[0] !== "destroy" || pulumi.stackArg(args) !== "bravo") return undefined;
      const { expiresAt: _, ...rest } = bravo.outputs!;
      bravo.outputs = rest; // the operator's `pulumi up` removed ttlHours
      return { exitCode: 255, stderr: "error: the stack is currently locked by 1 lock(s)" };
    };
    expect((await run()).code).toBe(1);
    const second = await run();
    expect(second.code).toBe(0);
    expect(second.out).toMatch(/bravo +no ttlHours: keep/);
    expect(second.err).toContain(`[bravo] not expired now, but a run for its earlier expiry (2026-03-01T10:00:00Z) revoked its ${live} key${live === 1 ? "" : "s"} (clients get 401) and saved its usage, then its destroy failed; its host bills on.`);
  });

  it("a record of a deployment destroyed since (the stack deployed again, created after it) says nothing", async () => {
    const { root, pulumi, run } = await lockedByRaise();
    expect((await run()).code).toBe(1);
    const bravo = pulumi.stacks.get("bravo")!;
    bravo.outputs = { ...bravo.outputs, createdAt: "2026-03-01T11:30:00Z", expiresAt: "2026-03-02T11:30:00Z" };
    const again = await run();
    expect(again.code).toBe(0);
    expect(again.err).not.toContain("not expired now");
    expect(existsSync(join(root, "usage", "bravo.exported"))).toBe(true);
  });

  it("a stack whose expiresAt moved since the run read it (the operator's `pulumi up` ended) is kept: no key revoked, nothing destroyed", async () => {
    const { customer, pulumi, run } = await lockedByRaise();
    const bravo = pulumi.stacks.get("bravo")!;
    // The plan read the old expiry; the outputs read just before revoking have the new one.
    pulumi.script = (args) => (args.includes("--show-secrets") && pulumi.stackArg(args) === "bravo"
      ? { stdout: JSON.stringify({ ...bravo.outputs, expiresAt: RAISED }) }
      : undefined);
    const r = await run();
    expect(r.code).toBe(0);
    expect(pulumi.callsOf("destroy").map((c) => pulumi.stackArg(c.args))).toEqual(["foxtrot"]);
    expect(r.out).toContain("[bravo] kept: its expiresAt is 2026-03-02T10:00:00Z now, not 2026-03-01T10:00:00Z as this run read it (a `pulumi up` since?); no key revoked, nothing destroyed: the next run judges it again");
    // The last line, the one a cron log is read by, counts bravo as kept, not destroyed.
    expect(r.out).toContain("Destroyed 1 of 2 expired stack(s); kept 1 whose expiry moved: bravo.");
    expect((await chat(customer.key)).status).toBe(200);
  });

  it("a stack whose usage an earlier run saved, and whose expiresAt moved since this run read it, is kept too: the marker is not a licence to destroy", async () => {
    const { pulumi, run } = await lockedByRaise();
    expect((await run()).code).toBe(1); // revoked, saved, destroy failed on the lock
    const bravo = pulumi.stacks.get("bravo")!;
    const judged = { ...bravo.outputs, expiresAt: "2026-03-01T10:00:00Z" };
    bravo.outputs = judged; // the next run plans while the operator's `pulumi up` still runs…
    pulumi.script = (args) => (args.includes("--show-secrets") && pulumi.stackArg(args) === "bravo"
      ? { stdout: JSON.stringify({ ...judged, expiresAt: RAISED }) } // …which has ended by bravo's turn
      : undefined);
    const r = await run();
    expect(r.code).toBe(0);
    expect(pulumi.callsOf("destroy").filter((c) => pulumi.stackArg(c.args) === "bravo")).toHaveLength(1); // the first run's, which failed
    expect(r.out).toContain("[bravo] kept: its expiresAt is 2026-03-02T10:00:00Z now, not 2026-03-01T10:00:00Z as this run read it");
    expect(r.out).not.toContain("usage already saved");
  });
});

describe("reap-expired: what it says of keys it could not revoke", () => {
  it("a revoke that failed is not counted as revoked: the KEPT line says it may or may not be, and how to check", async () => {
    const { key } = await shim.createKey({ name: "still-live", credits: 100 });
    // The tenant's front cannot reach the shim for revokes only (its nginx answers 502).
    const front = await frontProxy(shim.url, (method) => (method === "DELETE" ? "bad-gateway" : "forward"));
    try {
      const r = await reap(["--yes"], (p) => {
        withoutGolf(p);
        const bravo = p.stacks.get("bravo")!;
        bravo.outputs = { ...bravo.outputs, endpoint: `${front.url}/v1` };
      });
      expect(r.code).toBe(1);
      const err = r.io.stderr.join("\n");
      expect(err).toContain("[bravo] KEPT: could not save its usage before the destroy would delete it:");
      expect(err).not.toContain("revoked (clients get 401)"); // no key was
      expect(err).toContain("[bravo] the revoke of 1 key got no answer or failed: it may or may not be revoked; see `npm run manage-keys -- list --stack bravo`");
      expect((await chat(key)).status).toBe(200); // and indeed its clients are still served
    } finally {
      front.close();
    }
  });
});

describe("reap-expired --force [<stack>]", () => {
  /** bravo and india both expired, neither endpoint answering. */
  const unreachable = (p: FakePulumi) => {
    withoutGolf(p);
    for (const name of ["bravo", "india"]) {
      const s = p.stacks.get(name)!;
      s.outputs = { ...s.outputs, endpoint: "http://127.0.0.1:9/v1", expiresAt: "2026-03-01T10:00:00Z" };
    }
  };

  it("with a name forces that stack only; the others whose usage cannot be saved are kept", async () => {
    for (const argv of [["--yes", "--force", "bravo"], ["--force=bravo", "--yes"]]) {
      const r = await reap(argv, unreachable);
      expect(r.code, argv.join(" ")).toBe(1);
      expect(r.destroyed).toEqual(["bravo", "foxtrot"]);
      expect(r.io.stderr.join("\n")).toContain("[bravo] could not save its usage (cannot reach the admin API");
      expect(r.io.stderr.join("\n")).toContain("[india] KEPT: could not save its usage");
    }
    const both = await reap(["--yes", "--force", "bravo", "--force", "india"], unreachable);
    expect(both.code).toBe(0);
    expect(both.destroyed).toEqual(["bravo", "foxtrot", "india"]);
    const all = await reap(["--force", "--yes"], unreachable);
    expect(all.code).toBe(0);
    expect(all.destroyed).toEqual(["bravo", "foxtrot", "india"]);
  });

  it("a name of a stack that is not expired is not destroyed, and says so", async () => {
    for (const argv of [["--yes", "--force", "alpha", "--force", "bravo"], ["--force", "alpha"]]) {
      const r = await reap(argv, withoutGolf);
      expect(r.code, argv.join(" ")).toBe(0);
      expect(r.destroyed).not.toContain("alpha");
      const err = r.io.stderr.join("\n");
      expect(err).toContain("--force alpha: not expired (expires in 22h 0m): kept (--force destroys an expired stack without its usage; it does not expire one)");
      expect(err).not.toContain("--force bravo");
    }
    const charlie = await reap(["--force=charlie"], withoutGolf);
    expect(charlie.io.stderr.join("\n")).toContain("--force charlie: not expired (no ttlHours): kept");
  });

  it("a name that is no stack is refused before anything is done", async () => {
    const r = await reap(["--yes", "--force", "brvo"], unreachable);
    expect(r.code).toBe(2);
    expect(r.destroyed).toEqual([]);
    expect(r.io.stderr.join("\n")).toContain("--force brvo: no such stack file in stacks/ (stacks: alpha, bravo, charlie, delta, echo, foxtrot, golf, hotel, india)");
  });
});

describe("reap-expired: gaps found by mutation review", () => {
  it("the line about a kept stack's earlier expiry counts the keys the reaper revoked, and only those", async () => {
    const earlier = "2026-03-01T09:00:00.000Z"; // alpha (created 2026-02-28T10:00Z) expires 2026-03-02T10:00Z now
    const withRecords = (files: Record<string, unknown>) => (p: FakePulumi, root: string) => {
      withoutGolf(p);
      mkdirSync(join(root, "usage"));
      for (const [name, value] of Object.entries(files)) writeFileSync(join(root, "usage", name), typeof value === "string" ? value : JSON.stringify(value));
    };
    const marker = { stack: "alpha", expiresAt: earlier, savedAt: earlier, usage: "alpha-usage-x.csv", keys: "alpha-keys-x.json" };
    const byOperator = { id: "k2", name: "old", revoked_at: "2026-02-28T12:00:00Z" };
    // A revoked-keys record from before `confirmed`: every id it names was confirmed.
    const legacy = await reap([], withRecords({ "alpha.revoked": { stack: "alpha", expiresAt: earlier, ids: ["k1"] } }));
    expect(legacy.io.stderr.join("\n")).toContain("[alpha] not expired now, but a run for its earlier expiry (2026-03-01T09:00:00Z) revoked its 1 key (clients get 401) and could not save its usage");
    // A saved keys file: a key the operator revoked is not counted as the reaper's.
    const saved = await reap([], withRecords({ "alpha.exported": marker, "alpha-usage-x.csv": "", "alpha-keys-x.json": [{ id: "k1", name: "app", revoked_at: earlier, revoked_by: "reap-expired" }, byOperator] }));
    expect(saved.io.stderr.join("\n")).toContain("[alpha] not expired now, but a run for its earlier expiry (2026-03-01T09:00:00Z) revoked its 1 key (clients get 401) and saved its usage");
    // Records of a run that revoked nothing say nothing.
    const none = await reap([], withRecords({ "alpha.exported": marker, "alpha-usage-x.csv": "", "alpha-keys-x.json": [byOperator] }));
    expect(none.io.stderr.join("\n")).not.toContain("[alpha]");
    const empty = await reap([], withRecords({ "alpha.revoked": { stack: "alpha", expiresAt: earlier, ids: [], confirmed: [] } }));
    expect(empty.io.stderr.join("\n")).not.toContain("[alpha]");
  });

  it("a revoke whose answer was lost, but which the shim made, is counted as revoked by the next run, which lists it revoked", async () => {
    const { key } = await shim.createKey({ name: "lost-answer", credits: 100 });
    const live = (await shimKeys()).filter((k) => k.revoked_at === null).length;
    // The tenant's front forwards the first revoke, then answers 504 (its answer lost); the usage report 504s too.
    let deletes = 0;
    const front = await frontProxy(shim.url, (method, url) => ((method === "DELETE" && deletes++ === 0) || url.startsWith("/admin/usage") ? "gateway-timeout" : "forward"));
    const { root, pulumi, bravo } = tenantsWithBravoBehind(front);
    try {
      const first = memoryIo();
      expect(await main(["--yes"], { root, pulumi, io: first, env: {}, now: () => NOW })).toBe(1);
      expect(first.stderr.join("\n")).toContain("[bravo] the revoke of 1 key got no answer or failed: it may or may not be revoked");
      const second = memoryIo();
      expect(await main(["--yes"], { root, pulumi, io: second, env: {}, now: () => NOW })).toBe(1);
      const err = second.stderr.join("\n");
      expect(err).toContain(`[bravo] its ${live} key${live === 1 ? " is" : "s are"} revoked (clients get 401) while the host bills on`);
      expect(err).not.toContain("may or may not be revoked");
      expect((await chat(key)).status).toBe(401);
    } finally {
      front.close();
    }
  });

  it("the line that says the usage is saved counts its rows, the CSV's header not among them", async () => {
    const { root, pulumi } = tenants();
    withoutGolf(pulumi);
    const io = memoryIo();
    expect(await main(["--yes"], { root, pulumi, io, env: {}, now: () => NOW })).toBe(0);
    const file = readdirSync(join(root, "usage")).find((f) => f.endsWith(".csv"))!;
    const rows = readFileSync(join(root, "usage", file), "utf8").split("\r\n").filter((l) => l !== "").length - 1;
    expect(rows).toBeGreaterThan(0);
    expect(io.stdout.join("\n")).toContain(`[bravo] saved its usage (${rows} rows) to `);
  });

  it("a stack expired days ago says so in days", async () => {
    const r = await reap(["--now", "2026-03-03T10:00:00Z"], withoutGolf);
    expect(r.io.stdout.join("\n")).toMatch(/bravo +expired 2d 0h ago \(2026-03-01T10:00:00Z\): destroy/);
  });

  it("a stack whose outputs cannot be read gives exit 1 in a dry run, and when nothing else expired", async () => {
    const dry = await reap([]); // golf's state cannot be read
    expect(dry.code).toBe(1);
    expect(dry.io.stdout.join("\n")).toContain("Dry run: would destroy 2 stack(s): bravo, foxtrot. Run with --yes to destroy them.\n1 stack(s) could not be checked: golf.");
    const early = await reap(["--yes", "--now", "2026-02-28T11:00:00Z"]);
    expect(early.code).toBe(1);
    expect(early.destroyed).toEqual([]);
    expect(early.io.stdout.join("\n")).toContain("Nothing expired.\n1 stack(s) could not be checked: golf.");
  });
});
