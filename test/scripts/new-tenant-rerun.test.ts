// new-tenant run again with the same flags, as a pipeline retries a job: what an earlier run made
// is left as it is (nothing to do, exit 0), what it did not get to is done, and a stack file that
// differs from what the flags would write is refused, saying how, never overwritten.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { main } from "../../scripts/new-tenant.ts";
import { tempDir } from "../support/tools.ts";
import { FakePulumi } from "./fake-pulumi.ts";

const ACME = ["acme", "--region", "us-ord", "--admin-cidrs", "81.2.69.160/32", "--ttl-hours", "24", "--key", "app:1000:developer", "--tls", "self-signed"];
const ENV = { LINODE_TOKEN: "linode-secret" };
const NOW = () => new Date("2026-03-01T12:00:00Z");

async function run(root: string, argv: string[], pulumi: FakePulumi, env: NodeJS.ProcessEnv = ENV) {
  const io = memoryIo();
  const code = await main(argv, { root, io, pulumi, env, now: NOW });
  return { code, io, err: io.stderr.join("\n") };
}

const fileOf = (root: string) => join(root, "stacks", "Pulumi.acme.yaml");

/** A first run that did every step, and what Pulumi wrote into the file while doing them. */
async function setUp(options: { deployed?: boolean } = {}) {
  const root = tempDir();
  const pulumi = new FakePulumi();
  expect((await run(root, ACME, pulumi)).code).toBe(0);
  writeFileSync(fileOf(root), `encryptionsalt: v1:c2FsdA==:v1:abc\n${readFileSync(fileOf(root), "utf8")}  linode:token:\n    secure: v1:dG9rZW4=\n`);
  pulumi.stacks.set("acme", options.deployed ? { outputs: { endpoint: "https://acme.example.test/v1", adminToken: "x" } } : { outputs: {}, resources: [] });
  pulumi.calls.length = 0;
  return { root, pulumi, file: readFileSync(fileOf(root), "utf8") };
}

/** The calls that would change something in Pulumi. */
const writes = (pulumi: FakePulumi) => pulumi.calls.filter((c) => !(c.args[0] === "stack" && (c.args[1] === "output" || c.args[1] === "export")));

describe("new-tenant run again with the same flags", () => {
  it("after a run that did every step: nothing to do, on stderr, exit 0, nothing changed (the flags in another order too)", async () => {
    const { root, pulumi, file } = await setUp();
    for (const argv of [ACME, ["acme", "--tls", "self-signed", "--key", "app:1000:developer", "--ttl-hours", "24", "--admin-cidrs", "81.2.69.160/32", "--region", "us-ord"]]) {
      const { code, io, err } = await run(root, argv, pulumi, { ...ENV, CI: "true" });
      expect(code, io.text()).toBe(0);
      expect(err).toBe("stacks/Pulumi.acme.yaml is already as this run would write it, and stack acme exists with nothing deployed and linode:token stored: nothing to do. Next: pulumi up --stack acme");
      expect(io.stdout).toEqual([]);
    }
    expect(writes(pulumi)).toEqual([]);
    expect(readFileSync(fileOf(root), "utf8")).toBe(file);
  });

  it("for a deployed stack (a later pipeline step failed): nothing to do, exit 0, the stack not touched", async () => {
    const { root, pulumi } = await setUp({ deployed: true });
    const { code, err } = await run(root, ACME, pulumi);
    expect(code).toBe(0);
    expect(err).toBe("stacks/Pulumi.acme.yaml is already as this run would write it, and stack acme is deployed (2 outputs): nothing to do.");
    expect(writes(pulumi)).toEqual([]);
  });

  it("a deployed stack without a secret this run would store is not changed: exit 1, with the command that stores it", async () => {
    const { root, pulumi } = await setUp({ deployed: true });
    const hf = [...ACME, "--hf-token-from-env"];
    // The file as the first run would have written it with --hf-token-from-env: the same settings.
    const { code, err } = await run(root, hf, pulumi, { ...ENV, HF_TOKEN: "hf_secret" });
    expect(code).toBe(1);
    expect(err).toContain("but stack acme is deployed (2 outputs) without gpu-sandbox:hfToken, and new-tenant changes nothing in a deployed stack");
    expect(err).toContain("\n  printenv HF_TOKEN | pulumi config set --secret --stack acme gpu-sandbox:hfToken");
    expect(err).not.toContain("hf_secret");
    expect(writes(pulumi)).toEqual([]);
  });

  it("an unset LINODE_TOKEN on the re-run of a stack without it: nothing to do, and says `pulumi up` needs it", async () => {
    const root = tempDir();
    const pulumi = new FakePulumi();
    expect((await run(root, ACME, pulumi, {})).code).toBe(0);
    pulumi.stacks.set("acme", { outputs: {}, resources: [] });
    pulumi.calls.length = 0;
    const { code, err } = await run(root, ACME, pulumi, {});
    expect(code).toBe(0);
    expect(err).toContain("exists with nothing deployed; LINODE_TOKEN is not set: linode:token not stored (`pulumi up` then needs LINODE_TOKEN in its environment): nothing to do.");
    expect(writes(pulumi)).toEqual([]);
  });

  it("without the pulumi CLI: nothing to do, exit 0, and the steps still left by what the file shows", async () => {
    const { root } = await setUp();
    const { code, io, err } = await run(root, ACME, Object.assign(new FakePulumi(), { installed: false }));
    expect(code).toBe(0);
    expect(err).toContain("stacks/Pulumi.acme.yaml is already as this run would write it: nothing to do without the pulumi CLI. If the stack is not set up yet:\n");
    expect(err).not.toContain("stack init"); // the file holds the stack's encryption: it was created
    expect(err).not.toContain("linode:token"); // stored
    expect(io.stdout).toEqual([]);
  });

  it("when the backend cannot be read: exit 1, nothing changed", async () => {
    const { root, pulumi } = await setUp();
    pulumi.stacks.set("acme", { outputError: "passphrase must be set with PULUMI_CONFIG_PASSPHRASE" });
    const { code, err } = await run(root, ACME, pulumi);
    expect(code).toBe(1);
    expect(err).toContain("but whether stack acme is in the backend could not be read (error: passphrase must be set");
    expect(writes(pulumi)).toEqual([]);
  });
});

describe("new-tenant run again with other flags, or over a file that is not its own", () => {
  it("refuses, naming each setting that differs with both values; the file is left as it is", async () => {
    const { root, pulumi, file } = await setUp();
    const { code, io, err } = await run(root, ["acme", "--region", "us-ord", "--admin-cidrs", "81.2.69.160/32", "--ttl-hours", "48", "--key", "app:1000:developer"], pulumi);
    expect(code).toBe(1);
    expect(err).toContain("stacks/Pulumi.acme.yaml already exists; new-tenant never overwrites a stack file. It differs from what this run would write: " +
      'gpu-sandbox:tls is {"mode":"self-signed"} in the file, not from the flags; gpu-sandbox:ttlHours is 24 in the file, 48 from the flags.');
    expect(io.text()).not.toContain("nothing to do");
    expect(writes(pulumi)).toEqual([]);
    expect(readFileSync(fileOf(root), "utf8")).toBe(file);
  });

  it("a key's credits or the order of the CIDRs differ: refused", async () => {
    const { root, pulumi } = await setUp();
    const other = ACME.map((a) => (a === "app:1000:developer" ? "app:999:developer" : a));
    expect((await run(root, other, pulumi)).err).toContain('gpu-sandbox:keys is [{"name":"app","credits":1000,"tier":"developer"}] in the file, [{"name":"app","credits":999,"tier":"developer"}] from the flags');
    const twoCidrs = (order: string) => ACME.map((a) => (a === "81.2.69.160/32" ? order : a));
    writeFileSync(fileOf(root), readFileSync(fileOf(root), "utf8").replace("- 81.2.69.160/32", "- 81.2.69.160/32\n    - 81.2.69.161/32"));
    expect((await run(root, twoCidrs("81.2.69.160/32,81.2.69.161/32"), pulumi)).code).toBe(0);
    expect((await run(root, twoCidrs("81.2.69.161/32,81.2.69.160/32"), pulumi)).code).toBe(1);
  });

  it("a token in plain text, a secret this run would not store, a setting of its own or another namespace's: each named, refused", async () => {
    const root = tempDir();
    const pulumi = new FakePulumi();
    expect((await run(root, ACME, pulumi)).code).toBe(0);
    const written = readFileSync(fileOf(root), "utf8");
    const cases: [string, string][] = [
      ["  linode:token: typed-by-hand\n", "linode:token is in plain text (new-tenant stores it encrypted)"],
      ["  gpu-sandbox:hfToken:\n    secure: v1:aGY=\n", "gpu-sandbox:hfToken is stored encrypted, which this run would not store"],
      ["  gpu-sandbox:plan: g2-gpu-rtx4000a2-s\n", 'gpu-sandbox:plan is "g2-gpu-rtx4000a2-s" in the file, not from the flags'],
      ["  pulumi:tags:\n    team: a\n", "pulumi:tags is set, which new-tenant does not write"],
      ["  region: us-sea\n", "region is set beside gpu-sandbox:region"],
    ];
    pulumi.stacks.set("acme", { outputs: {}, resources: [] });
    for (const [extra, said] of cases) {
      writeFileSync(fileOf(root), `${written}${extra}`);
      const { code, err } = await run(root, ACME, pulumi);
      expect(code, extra).toBe(1);
      expect(err, extra).toContain(`It differs from what this run would write: ${said}`);
    }
    // The flags' number written otherwise by hand: 024 is 24 to the yaml package and 20 (octal) to
    // Pulumi's reader, so a run that said "nothing to do" would deploy what the flags did not ask for.
    for (const [text, said] of [["024", "gpu-sandbox:ttlHours is written 024"], ["2.4e1", "gpu-sandbox:ttlHours is written 2.4e1"]]) {
      writeFileSync(fileOf(root), written.replace("gpu-sandbox:ttlHours: 24\n", `gpu-sandbox:ttlHours: ${text}\n`));
      const { code, io, err } = await run(root, ACME, pulumi);
      expect(code, text).toBe(1);
      expect(err, text).toContain(`It differs from what this run would write: ${said}`);
      expect(io.text()).not.toContain("nothing to do");
    }
    writeFileSync(fileOf(root), `environment:\n  - acme-env\n${written}`);
    expect((await run(root, ACME, pulumi)).err).toContain("It differs from what this run would write: it has a top-level environment, which new-tenant does not write");
    writeFileSync(fileOf(root), written.slice(0, 40)); // cut short
    expect((await run(root, ACME, pulumi)).code).toBe(1);
  });
});

describe("new-tenant run again: a stack made by someone else meanwhile", () => {
  it("`stack init` finds the name taken by a deployed stack: not taken over, and the earlier run's file is left as it is", async () => {
    const root = tempDir();
    const pulumi = new FakePulumi();
    pulumi.script = (args) => (args[1] === "init" ? { exitCode: 255, stderr: "error: passphrase must be set with PULUMI_CONFIG_PASSPHRASE\n" } : undefined);
    expect((await run(root, ACME, pulumi)).code).toBe(1);
    const file = readFileSync(fileOf(root), "utf8");
    // Between the re-run's read of the backend and its `stack init`, another operator's stack appears.
    let reads = 0;
    pulumi.script = (args) => {
      if (args[1] === "init") return { exitCode: 255, stderr: "error: stack 'acme' already exists\n" };
      if (args[1] === "output" && reads++ === 0) return { exitCode: 255, stderr: "error: no stack named 'acme' found\n" };
      return undefined;
    };
    pulumi.stacks.set("acme", { outputs: { endpoint: "https://acme.example.test/v1" } });
    const { code, err } = await run(root, ACME, pulumi);
    expect(code).toBe(1);
    expect(err).toContain("Stack acme already exists in the backend and is deployed (1 output)");
    expect(err).toContain("No secret was set, and stacks/Pulumi.acme.yaml, which an earlier run wrote, is left as it is.");
    expect(readFileSync(fileOf(root), "utf8")).toBe(file);
    expect(pulumi.callsOf("config")).toEqual([]);
  });
});
