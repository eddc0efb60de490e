import type * as fs from "node:fs";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import { validateConfig } from "../../infra/config.ts";
import { parseStackConfig, readStackConfig } from "../../infra/stack-file.ts";
import { renderStack } from "../../scripts/render-stack.ts";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { main } from "../../scripts/new-tenant.ts";
import { tempDir } from "../support/tools.ts";
import { FakePulumi } from "./fake-pulumi.ts";

const ISSUE_EXAMPLE = [
  "acme", "--region", "us-ord", "--plan", "g2-gpu-rtx4000a1-s", "--model", "mistralai/Mistral-7B-Instruct-v0.3",
  "--allowed-cidrs", "0.0.0.0/0", "--admin-cidrs", "81.2.69.160/32", "--ttl-hours", "24", "--key", "app:1000:developer",
];
const NOW = () => new Date("2026-03-01T12:00:00Z");

// A disk that fills up (or a quota, or an I/O error) while the stack file is written: the file is
// created, part of it written, then the write fails, as on a real full disk; whether the stack file
// is written by its path or through a descriptor opened first. Off unless a test sets it.
const disk = vi.hoisted(() => ({ failWith: undefined as string | undefined, rmFails: false }));
vi.mock("node:fs", async (original) => {
  const real = await original<typeof fs>();
  return {
    ...real,
    writeFileSync: (file: fs.PathOrFileDescriptor, data: string, options?: fs.WriteFileOptions) => {
      if (disk.failWith === undefined || !(typeof file === "number" || String(file).endsWith("Pulumi.acme.yaml"))) return real.writeFileSync(file, data, options);
      real.writeFileSync(file, data.slice(0, 16), options);
      throw Object.assign(new Error(`${disk.failWith}: disk trouble, write`), { code: disk.failWith, syscall: "write" });
    },
    rmSync: (path: fs.PathLike, options?: fs.RmOptions) => {
      if (disk.rmFails) throw Object.assign(new Error("EIO: i/o error, unlink"), { code: "EIO", syscall: "unlink" });
      return real.rmSync(path, options);
    },
  };
});

/** A project root holding nothing: new-tenant creates stacks/ itself; render reads templates from the repo. */
let root: string;
afterEach(() => {
  // Never the repository's stacks/: every test writes into its own temp root.
  expect(existsSync(new URL("../../stacks/Pulumi.acme.yaml", import.meta.url))).toBe(false);
});

async function run(argv: string[], options: { pulumi?: FakePulumi; env?: NodeJS.ProcessEnv } = {}) {
  root ??= tempDir();
  const io = memoryIo();
  const pulumi = options.pulumi ?? Object.assign(new FakePulumi(), { installed: false });
  const code = await main(argv, { root, io, pulumi, env: options.env ?? {}, now: NOW });
  return { code, io, pulumi };
}

describe("new-tenant", () => {
  it("writes a stack file that round-trips through the validator and renderStack", async () => {
    root = tempDir();
    const { code, io } = await run([...ISSUE_EXAMPLE, "--key", "ci:5.5:free", "--key", "ops:2", "--served-name", "mistral-7b", "--tls", "self-signed", "--email", "ops@gpu-sandbox.dev"]);
    expect(code, io.text()).toBe(0);
    const path = join(root, "stacks", "Pulumi.acme.yaml");
    const text = readFileSync(path, "utf8");
    expect(text).toMatch(/^# Tenant acme: written by `npm run new-tenant` on 2026-03-01T12:00:00Z\./);
    expect(text).toContain("# Cost: $0.53/hour, $360.00/month");
    expect(text).toContain("gpu-sandbox:region: us-ord");

    // What the file says is exactly what the flags said, numbers as numbers.
    expect(parseStackConfig(text)).toEqual({
      region: "us-ord", plan: "g2-gpu-rtx4000a1-s", model: { id: "mistralai/Mistral-7B-Instruct-v0.3", servedName: "mistral-7b" },
      allowedCidrs: ["0.0.0.0/0"], adminCidrs: ["81.2.69.160/32"], tls: { mode: "self-signed", email: "ops@gpu-sandbox.dev" },
      keys: [{ name: "app", credits: 1000, tier: "developer" }, { name: "ci", credits: 5.5, tier: "free" }, { name: "ops", credits: 2 }], ttlHours: 24,
    });
    const validated = validateConfig(readStackConfig(root, "acme"), { stack: "acme" });
    expect(validated.ok).toBe(true);
    if (!validated.ok) return;
    expect(validated.config.ttlHours).toBe(24);
    // name:credits with no tier is a free key, as --key's help says.
    expect(validated.config.keys.map((k) => [k.name, k.tier])).toEqual([["app", "developer"], ["ci", "free"], ["ops", "free"]]);
    // What `npm run render` and `pulumi up` warn about for this file, new-tenant says too.
    expect(io.text()).toContain("Warning: tls.email is ignored with tls.mode self-signed");

    const out = tempDir();
    const rendered = renderStack(root, "acme", out);
    expect(rendered.plan).toContain("Plan for tenant acme");
    expect(rendered.plan).toMatch(/22\/tcp {2}from 81\.2\.69\.160\/32/);
    expect(readFileSync(join(out, "compose.yaml"), "utf8")).toContain("mistral-7b");
  });

  it("without the pulumi CLI, says exactly what to run (secrets piped from the environment)", async () => {
    root = tempDir();
    const { code, io, pulumi } = await run([...ISSUE_EXAMPLE, "--hf-token-from-env"], { env: { HF_TOKEN: "hf_secret123", LINODE_TOKEN: "linode-secret" } });
    expect(code).toBe(0);
    expect(io.text()).toContain("The pulumi CLI is not on PATH.");
    expect(io.text()).toContain("pulumi stack init acme");
    expect(io.text()).toContain("\n  printenv LINODE_TOKEN | pulumi config set --secret --stack acme linode:token\n");
    expect(io.text()).toContain("\n  printenv HF_TOKEN | pulumi config set --secret --stack acme gpu-sandbox:hfToken\n");
    expect(io.text()).not.toContain("hf_secret123");
    expect(io.text()).not.toContain("linode-secret");
    expect(pulumi.calls).toEqual([]);
  });

  // `printenv X | pulumi config set --secret …` with X unset stores an empty secret and exits 0
  // (pulumi reads stdin without checking it is empty): a step to run by hand for a variable not
  // set says to export it first, as the CLI path says it is not set, and cannot be pasted as is.
  describe("LINODE_TOKEN not set: the steps to run by hand say to export it first, with no runnable pipe", () => {
    const NOT_SET = "  # LINODE_TOKEN is not set: export it, then run the line below; or skip it, and `pulumi up` needs LINODE_TOKEN in its environment\n" +
      "  # printenv LINODE_TOKEN | pulumi config set --secret --stack acme linode:token\n";
    const noPipe = (text: string) => expect(text).not.toMatch(/^\s*printenv LINODE_TOKEN \|/m);

    it("without the pulumi CLI", async () => {
      root = tempDir();
      const { code, io } = await run(ISSUE_EXAMPLE, { env: {} });
      expect(code).toBe(0);
      expect(io.text()).toContain(`\n  pulumi stack init acme\n${NOT_SET}  pulumi up --stack acme`);
      noPipe(io.text());
    });

    it("when a pulumi step fails", async () => {
      root = tempDir();
      const pulumi = new FakePulumi();
      pulumi.script = (args) => (args[1] === "init" ? { exitCode: 255, stderr: "error: passphrase must be set with PULUMI_CONFIG_PASSPHRASE" } : undefined);
      const { code, io } = await run(ISSUE_EXAMPLE, { pulumi, env: {} });
      expect(code).toBe(1);
      expect(io.stderr.join("\n")).toContain(NOT_SET);
      noPipe(io.text());
    });

    it("on a second run, with or without the CLI", async () => {
      root = tempDir();
      expect((await run(ISSUE_EXAMPLE, { env: {} })).code).toBe(0);
      // Without the CLI: nothing to do here, and the steps, as the first run printed them.
      const bare = await run(ISSUE_EXAMPLE, { env: {} });
      expect(bare.code).toBe(0);
      expect(bare.io.stderr.join("\n")).toContain(NOT_SET);
      noPipe(bare.io.text());
      // With it: the re-run does the steps, and says the token is not stored.
      const { code, io } = await run(ISSUE_EXAMPLE, { pulumi: new FakePulumi(), env: {} });
      expect(code, io.text()).toBe(0);
      expect(io.text()).toContain("LINODE_TOKEN is not set: linode:token not stored");
      noPipe(io.text());
    });
  });

  describe("a stack file that cannot be written", () => {
    afterEach(() => {
      disk.failWith = undefined;
      disk.rmFails = false;
    });

    it.each(["ENOSPC", "EDQUOT", "EIO"])("%s while writing: exit 1 with the reason, the file it created removed, no stack made; a rerun works", async (code) => {
      root = tempDir();
      const pulumi = new FakePulumi();
      disk.failWith = code;
      const failed = await run(ISSUE_EXAMPLE, { pulumi, env: { LINODE_TOKEN: "linode-secret" } });
      expect(failed.code).toBe(1);
      expect(failed.io.stderr.join("\n")).toBe(`new-tenant: cannot write stacks/Pulumi.acme.yaml: ${code}: disk trouble, write; nothing was written. ` +
        "No Pulumi stack was created or changed (new-tenant writes the file first). Fix the cause (disk space, a quota, permissions) and run again.");
      expect(failed.io.stdout).toEqual([]);
      expect(pulumi.calls).toEqual([]);
      expect(existsSync(join(root, "stacks", "Pulumi.acme.yaml"))).toBe(false);

      disk.failWith = undefined; // space is back
      const again = await run(ISSUE_EXAMPLE, { pulumi, env: { LINODE_TOKEN: "linode-secret" } });
      expect(again.code, again.io.text()).toBe(0);
      expect(readFileSync(join(root, "stacks", "Pulumi.acme.yaml"), "utf8")).toContain("gpu-sandbox:ttlHours: 24");
    });

    it("when the file it created cannot be removed either, says so: the next run would find it", async () => {
      root = tempDir();
      disk.failWith = "EIO";
      disk.rmFails = true;
      const { code, io } = await run(ISSUE_EXAMPLE);
      expect(code).toBe(1);
      expect(io.stderr.join("\n")).toContain("new-tenant: cannot write stacks/Pulumi.acme.yaml: EIO: disk trouble, write; " +
        "the partly written file could not be removed (EIO: i/o error, unlink): remove it before running again. No Pulumi stack was created or changed");
    });

    it("when stacks/ cannot be made (a file in its place): exit 1 with the reason, nothing changed", async () => {
      root = tempDir();
      writeFileSync(join(root, "stacks"), "not a directory\n");
      const pulumi = new FakePulumi();
      const { code, io } = await run(ISSUE_EXAMPLE, { pulumi });
      expect(code).toBe(1);
      expect(io.stderr.join("\n")).toMatch(/^new-tenant: cannot write stacks\/Pulumi\.acme\.yaml: E\w+: .*; nothing was written\. No Pulumi stack was created or changed/);
      expect(readFileSync(join(root, "stacks"), "utf8")).toBe("not a directory\n");
      expect(pulumi.calls).toEqual([]);
    });
  });

  it("prints the warnings `npm run render` and `pulumi up` give for the file it wrote, before anything bills", async () => {
    root = tempDir();
    const { code, io } = await run(["jcme", "--region", "us-ord", "--admin-cidrs", "81.2.69.160/32,0.0.0.0/0", "--tls", "off", "--model", "meta-llama/Llama-3.1-70B-Instruct"]);
    expect(code, io.text()).toBe(0);
    const warnings = io.text().split("\n").filter((l) => l.startsWith("Warning: "));
    expect(warnings.some((l) => l.includes("/admin"))).toBe(true);
    expect(warnings.some((l) => /cleartext/i.test(l))).toBe(true);
    expect(warnings.some((l) => /GPU memory|does not fit|too large/i.test(l))).toBe(true);
    // The same list render prints in its plan, not a second one.
    const planWarnings = renderStack(root, "jcme", tempDir()).plan.split("\n").filter((l) => l.trim().startsWith("Warning "));
    expect(warnings.map((l) => l.slice("Warning: ".length))).toEqual(planWarnings.map((l) => l.trim().slice("Warning".length).trim()));
  });

  // A new tenant without --admin-cidrs: `pulumi up` would create the GPU host, which bills, and
  // never deploy the endpoint (SSH closed). Refused like the other flag problems, with all of them.
  it("refuses a new tenant without --admin-cidrs, saying what to pass, and writes nothing", async () => {
    for (const argv of [["acme4", "--region", "us-ord"], ["acme4", "--region", "us-ord", "--admin-cidrs", " , "], ["acme4", "--region", "mars-1"]]) {
      root = tempDir();
      const { code, io } = await run(argv, { pulumi: new FakePulumi() });
      expect(code, argv.join(" ")).toBe(2);
      const err = io.stderr.join("\n");
      expect(err).toMatch(/nothing was written:\n(.*\n)*  - --admin-cidrs: gpu-sandbox:adminCidrs = (\(not set\)|\[\]): is required for a new tenant/);
      expect(err).toContain('--admin-cidrs "$(curl -4s https://ifconfig.me)/32"');
      if (argv.includes("mars-1")) expect(err).toContain("new-tenant: 2 problems; nothing was written:");
      expect(io.stdout).toEqual([]);
      expect(io.text()).not.toContain("pulumi up --stack");
      expect(existsSync(join(root, "stacks"))).toBe(false);
    }
  });

  it("refuses to overwrite an existing stack file", async () => {
    root = tempDir();
    mkdirSync(join(root, "stacks"));
    writeFileSync(join(root, "stacks", "Pulumi.acme.yaml"), "config:\n  gpu-sandbox:region: us-sea\n");
    const { code, io } = await run(ISSUE_EXAMPLE);
    expect(code).toBe(1);
    expect(io.stderr.join("\n")).toContain("stacks/Pulumi.acme.yaml already exists; new-tenant never overwrites a stack file");
    expect(readFileSync(join(root, "stacks", "Pulumi.acme.yaml"), "utf8")).toBe("config:\n  gpu-sandbox:region: us-sea\n");
  });

  it("reports every bad flag with the validator's message and the flag to change, writing nothing", async () => {
    root = tempDir();
    const { code, io } = await run(["Acme", "--region", "mars-1", "--plan", "g9-none", "--ttl-hours", "0", "--key", "app:-1:gold", "--tls", "sometimes", "--admin-cidrs", "10.0.0.300/8"]);
    expect(code).toBe(2);
    const err = io.stderr.join("\n");
    expect(err).toContain("new-tenant: 8 problems; nothing was written:");
    expect(err).toContain('<name>: gpu-sandbox:(stack name) = "Acme": must be 3-24 characters');
    expect(err).toContain('--region: gpu-sandbox:region = "mars-1": is not a Linode region; regions with GPU plans: ap-south');
    expect(err).toContain('--plan: gpu-sandbox:plan = "g9-none": is not a Linode GPU plan');
    expect(err).toContain("--ttl-hours: gpu-sandbox:ttlHours = 0: must be between 1 and 2160");
    expect(err).toContain("--key: gpu-sandbox:keys[0].credits = -1: must not be negative");
    expect(err).toContain('--key: gpu-sandbox:keys[0].tier = "gold": is not a tier; tiers: free, developer, pro, enterprise');
    expect(err).toContain('--tls: gpu-sandbox:tls.mode = "sometimes": must be one of: letsencrypt, self-signed, off');
    expect(err).toContain("--admin-cidrs: gpu-sandbox:adminCidrs");
    expect(err).not.toMatch(/\n\s+at /);
    expect(existsSync(join(root, "stacks"))).toBe(false);
  });

  it.each([
    // new-tenant cannot define a tier: the message must not offer "your own" as a --key tier.
    [["acme", "--key", "app"], '--key "app" must be name:credits[:tier], e.g. app:1000:developer (tiers: free, the default, developer, pro, enterprise; a tier of your own'],
    [["acme", "--region", "us-ord", "--bogus"], "Unknown option '--bogus'"],
    [["--region", "us-ord"], "give exactly one tenant name"],
    // `npm run new-tenant acme --region us-ord`, no `--`: npm keeps --region and passes its value on.
    [["acme", "us-ord"], "give exactly one tenant name (got: acme us-ord)\nflags typed before `--` are kept by npm, not passed on: npm run new-tenant -- <name> --region <id> --admin-cidrs <a,b> [options]"],
    [["acme", "--region", "us-ord", "--hf-token", "hf_x"], "--hf-token is not accepted: a token on the command line lands in shell history"],
    [["acme", "--region", "us-ord", "--hf-token=hf_x"], "--hf-token is not accepted: a token on the command line lands in shell history"],
    [["acme", "--region", "us-ord", "--hf-token-from-env"], "HF_TOKEN is not set"],
    // A value starting with "-" after a space is the flag's value (parseArgs called it ambiguous and printed the usage).
    [["acme", "--region", "us-ord", "--ttl-hours", "-3"], "--ttl-hours: gpu-sandbox:ttlHours = -3: must be between 1 and 2160"],
    // Whole hours: the example given for a number not in decimal digits is one (1.5 is refused as not whole).
    [["acme", "--region", "us-ord", "--ttl-hours", "1e3"], '--ttl-hours: gpu-sandbox:ttlHours = "1e3": must be a number in decimal digits, e.g. 24\n'],
    [["acme", "--region", "us-ord", "--ttl-hours", "1.5"], "--ttl-hours: gpu-sandbox:ttlHours = 1.5: must be a whole number"],
    // ... but a word starting with "--" is not: a forgotten value before a mistyped flag.
    [["acme", "--region", "us-ord", "--served-name", "--plann", "g1"], '--served-name is followed by "--plann", not a value'],
    // The example's documentation address, copied: `pulumi up` would wait 45 minutes on SSH.
    [["acme", "--region", "us-ord", "--admin-cidrs", "203.0.113.7/32"],
      '--admin-cidrs: gpu-sandbox:adminCidrs[0] = "203.0.113.7/32": is a documentation address (RFC 5737 TEST-NET-3)'],
  ])("rejects %j", async (argv, message) => {
    root = tempDir();
    const { code, io } = await run(argv);
    expect(code).toBe(2);
    expect(io.stderr.join("\n")).toContain(message);
    expect(existsSync(join(root, "stacks"))).toBe(false);
  });

  it("with the CLI: stack init, then secrets from the environment on stdin, never in argv", async () => {
    root = tempDir();
    const pulumi = new FakePulumi();
    const env = { LINODE_TOKEN: "linode-secret-0123456789", HF_TOKEN: "hf_secret_abcdef" };
    const { code, io } = await run([...ISSUE_EXAMPLE, "--hf-token-from-env"], { pulumi, env });
    expect(code, io.text()).toBe(0);
    expect(pulumi.calls.map((c) => c.args)).toEqual([
      ["whoami"],
      ["stack", "init", "acme"],
      ["config", "set", "--secret", "--stack", "acme", "linode:token"],
      ["config", "set", "--secret", "--stack", "acme", "gpu-sandbox:hfToken"],
    ]);
    expect(pulumi.callsOf("config", "set").map((c) => c.input)).toEqual([env.LINODE_TOKEN, env.HF_TOKEN]);
    for (const call of pulumi.calls) {
      for (const secret of Object.values(env)) expect(call.args.join(" ")).not.toContain(secret);
    }
    // Nor in the file or anything printed.
    const file = readFileSync(join(root, "stacks", "Pulumi.acme.yaml"), "utf8");
    for (const secret of Object.values(env)) {
      expect(file).not.toContain(secret);
      expect(io.text()).not.toContain(secret);
    }
    expect(io.text()).toContain("Stored linode:token from $LINODE_TOKEN");
    expect(io.text()).toContain("Next: pulumi up --stack acme");
  });

  it("the smoke test it says to run next works as printed: the key exported, and with self-signed TLS the stack's CA passed", async () => {
    // A key name may hold `-` or start with a digit (team-07, 2nd): jq reads `.team-07` as a subtraction.
    for (const [tls, key, ca] of [["self-signed", "app:100", true], ["letsencrypt", "team-07:5", false]] as const) {
      root = tempDir();
      const pulumi = new FakePulumi();
      const { code, io } = await run(["acme", "--region", "us-ord", "--admin-cidrs", "81.2.69.160/32", "--tls", tls, "--key", key], { pulumi, env: { LINODE_TOKEN: "tok" } });
      expect(code, io.text()).toBe(0);
      const then = io.stdout.join("\n").split("Then:")[1] ?? "";
      expect(then, tls).toContain(`export GPU_SANDBOX_API_KEY="$(pulumi stack output apiKeys --show-secrets --stack acme | jq -r '.["${key.split(":")[0]}"]')"`);
      expect(then.includes("pulumi stack output caCertificate --stack acme > ca.pem"), tls).toBe(ca);
      expect(then, tls).toContain(`npm run smoke-test -- --url "$(pulumi stack output endpoint --stack acme)"${ca ? " --ca ca.pem" : ""}`);
    }
  });

  it("logs in to the local backend only when there is no login, and skips an unset LINODE_TOKEN", async () => {
    root = tempDir();
    const pulumi = new FakePulumi();
    pulumi.script = (args) => (args[0] === "whoami" ? { exitCode: 255, stderr: "error: PULUMI_ACCESS_TOKEN must be set for login during non-interactive CLI sessions" } : undefined);
    const { code, io } = await run(ISSUE_EXAMPLE, { pulumi });
    expect(code, io.text()).toBe(0);
    expect(pulumi.calls.map((c) => c.args)).toEqual([["whoami"], ["login", "--local"], ["stack", "init", "acme"]]);
    expect(io.text()).toContain("LINODE_TOKEN is not set: linode:token not stored");
  });

  it("does not switch backends when whoami fails for another reason", async () => {
    root = tempDir();
    const pulumi = new FakePulumi();
    pulumi.script = (args) => (args[0] === "whoami" ? { exitCode: 255, stderr: "error: getting user info from https://api.pulumi.com: 401 Unauthorized: Bad Credentials" } : undefined);
    const { code, io } = await run(ISSUE_EXAMPLE, { pulumi });
    expect(code).toBe(1);
    expect(io.stderr.join("\n")).toContain("`pulumi whoami` failed (exit 255)");
    expect(io.stderr.join("\n")).toContain("Bad Credentials");
    expect(pulumi.calls.map((c) => c.args)).toEqual([["whoami"]]);
  });

  it("a failing pulumi command gives exit 1, its output, and the remaining steps", async () => {
    root = tempDir();
    const pulumi = new FakePulumi();
    pulumi.script = (args) => (args[1] === "init" ? { exitCode: 255, stderr: "error: passphrase must be set with PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE environment variables" } : undefined);
    const { code, io } = await run(ISSUE_EXAMPLE, { pulumi, env: { LINODE_TOKEN: "linode-secret" } });
    expect(code).toBe(1);
    const err = io.stderr.join("\n");
    expect(err).toContain("`pulumi stack init acme` failed (exit 255)");
    expect(err).toContain("PULUMI_CONFIG_PASSPHRASE");
    expect(err).toContain("printenv LINODE_TOKEN | pulumi config set --secret --stack acme linode:token");
    expect(pulumi.callsOf("config")).toEqual([]);
    expect(existsSync(join(root, "stacks", "Pulumi.acme.yaml"))).toBe(true);
  });

  describe("a name whose stack already exists in the backend", () => {
    const taken = (stacks: ConstructorParameters<typeof FakePulumi>[0]) => {
      const pulumi = new FakePulumi(stacks);
      pulumi.script = (args) => (args[0] === "stack" && args[1] === "init" ? { exitCode: 255, stderr: "error: stack 'acme' already exists\n" } : undefined);
      return pulumi;
    };

    it.each([
      ["deployed (outputs)", { outputs: { endpoint: "https://acme.example.test/v1", adminToken: "admin-x" } }, "is deployed (2 outputs)"],
      // A first `pulumi up` that failed after making the host: resources, no outputs.
      ["a failed first deploy (resources)", { outputs: {}, resources: [{ type: "linode:index/instance:Instance", urn: "urn:pulumi:acme::gpu-sandbox::i" }] }, "is deployed (1 resource)"],
      ["unreadable", { outputError: "passphrase must be set with PULUMI_CONFIG_PASSPHRASE" }, "could not be read (error: passphrase must be set"],
    ])("%s: is not taken over; no secret is set and the file this run wrote is removed", async (_case, stack, why) => {
      root = tempDir();
      const pulumi = taken({ acme: stack });
      const { code, io } = await run([...ISSUE_EXAMPLE], { pulumi, env: { LINODE_TOKEN: "linode-secret" } });
      expect(code, io.text()).toBe(1);
      const err = io.stderr.join("\n");
      expect(err).toContain(`Stack acme already exists in the backend and ${why}`);
      expect(err).toContain("No secret was set, and stacks/Pulumi.acme.yaml, which this run wrote, is removed.");
      expect(io.text()).not.toContain("Next: pulumi up");
      expect(pulumi.callsOf("config")).toEqual([]);
      expect(existsSync(join(root, "stacks", "Pulumi.acme.yaml"))).toBe(false);
    });

    it("with nothing deployed (never, or destroyed): uses it", async () => {
      root = tempDir();
      const pulumi = taken({ acme: { outputs: {}, resources: [] } });
      const { code, io } = await run([...ISSUE_EXAMPLE], { pulumi, env: { LINODE_TOKEN: "linode-secret" } });
      expect(code, io.text()).toBe(0);
      expect(io.text()).toContain("Stack acme already exists in the backend with nothing deployed (never, or destroyed); using it.");
      expect(pulumi.callsOf("config", "set").map((c) => c.input)).toEqual(["linode-secret"]);
      expect(existsSync(join(root, "stacks", "Pulumi.acme.yaml"))).toBe(true);
    });
  });

  describe("a set-up that stopped half way", () => {
    const ACME = ["acme", "--region", "us-ord", "--admin-cidrs", "81.2.69.160/32", "--hf-token-from-env"];
    const env = { LINODE_TOKEN: "linode-secret", HF_TOKEN: "hf_secret" };
    const passphraseMissing = { exitCode: 255, stderr: "error: passphrase must be set with PULUMI_CONFIG_PASSPHRASE\n" };

    it("the steps to finish by hand leave out those done: no `pulumi stack init` once the stack exists, no secret already stored", async () => {
      root = tempDir();
      const pulumi = new FakePulumi();
      pulumi.script = (args) => (args[0] === "config" && args.at(-1) === "gpu-sandbox:hfToken" ? passphraseMissing : undefined);
      const { code, io } = await run(ACME, { pulumi, env });
      expect(code).toBe(1);
      expect(pulumi.callsOf("stack", "init")).toHaveLength(1);
      const err = io.stderr.join("\n");
      expect(err).toContain("`pulumi config set --secret --stack acme gpu-sandbox:hfToken` failed (exit 255)");
      expect(err).toContain("To finish:\n  printenv HF_TOKEN | pulumi config set --secret --stack acme gpu-sandbox:hfToken\n  pulumi up --stack acme");
      expect(err).not.toContain("stack init");
      expect(err).not.toContain("linode:token");
      expect(err).not.toContain("pulumi login");
    });

    it("a second run after the stack was never created finishes the set-up: `stack init` and every secret, exit 0", async () => {
      root = tempDir();
      const pulumi = new FakePulumi();
      pulumi.script = (args) => (args[1] === "init" ? passphraseMissing : undefined);
      expect((await run(ACME, { pulumi, env })).code).toBe(1);
      pulumi.script = () => undefined; // the passphrase is exported now
      const file = readFileSync(join(root, "stacks", "Pulumi.acme.yaml"), "utf8");
      const { code, io } = await run(ACME, { pulumi, env });
      expect(code, io.text()).toBe(0);
      expect(io.stderr.join("\n")).toBe("stacks/Pulumi.acme.yaml is already as this run would write it; stack acme is not in the backend (an earlier run stopped before creating it): finishing the set-up.");
      expect(pulumi.callsOf("stack", "init")).toHaveLength(2);
      expect(pulumi.callsOf("config", "set").map((c) => c.input)).toEqual([env.LINODE_TOKEN, env.HF_TOKEN]);
      expect(io.stdout.join("\n")).toContain("Next: pulumi up --stack acme");
      expect(readFileSync(join(root, "stacks", "Pulumi.acme.yaml"), "utf8")).toBe(file); // not written again
    });

    it("a second run when the file holds encrypted values but the stack is not in the backend points to another backend", async () => {
      root = tempDir();
      mkdirSync(join(root, "stacks"));
      writeFileSync(join(root, "stacks", "Pulumi.acme.yaml"),
        "config:\n  gpu-sandbox:region: us-ord\n  gpu-sandbox:adminCidrs:\n    - 81.2.69.160/32\n  linode:token:\n    secure: AAABAJx1c2VydmljZS1lbmNyeXB0ZWQ=\n");
      const pulumi = new FakePulumi(); // acme is not in this backend
      const { code, io } = await run(["acme", "--region", "us-ord", "--admin-cidrs", "81.2.69.160/32"], { pulumi, env: { LINODE_TOKEN: "x" } });
      expect(code).toBe(1);
      const err = io.stderr.join("\n");
      expect(err).not.toContain("an earlier run stopped before creating it");
      expect(err).not.toContain("stack init");
      expect(err).toContain("Stack acme is not in this backend, but the file holds encrypted values");
      expect(err).toContain("probably created in another backend");
      expect(err).toContain("`pulumi whoami -v`");
      expect(err).toContain("`pulumi stack ls`");
      // encryptionsalt (or secretsprovider) alone says the same: `stack init` wrote it.
      writeFileSync(join(root, "stacks", "Pulumi.acme.yaml"), "encryptionsalt: v1:abc:def\nconfig:\n  gpu-sandbox:region: us-ord\n");
      const salted = await run(["acme", "--region", "us-ord", "--admin-cidrs", "81.2.69.160/32"], { pulumi, env: { LINODE_TOKEN: "x" } });
      expect(salted.io.stderr.join("\n")).toContain("probably created in another backend");
      expect(pulumi.callsOf("stack", "init")).toEqual([]);
    });

    it("a second run when the stack is not in the backend lists every secret, whatever keys the file sets in plain text", async () => {
      root = tempDir();
      mkdirSync(join(root, "stacks"));
      writeFileSync(join(root, "stacks", "Pulumi.acme.yaml"), "config:\n  gpu-sandbox:region: us-ord\n  linode:token: typed-by-hand\n");
      const { code, io } = await run(["acme", "--region", "us-ord", "--admin-cidrs", "81.2.69.160/32"], { pulumi: new FakePulumi(), env: { LINODE_TOKEN: "x" } });
      expect(code).toBe(1);
      expect(io.stderr.join("\n")).toContain("To finish:\n  pulumi stack init acme\n  printenv LINODE_TOKEN | pulumi config set --secret --stack acme linode:token\n");
    });

    it("a second run after the stack was created and one secret stored stores only the rest, exit 0", async () => {
      root = tempDir();
      const pulumi = new FakePulumi();
      // The first run was stopped (Ctrl-C) after storing linode:token: Pulumi wrote it to the file.
      expect((await run(ACME, { pulumi: Object.assign(new FakePulumi(), { installed: false }), env })).code).toBe(0);
      writeFileSync(join(root, "stacks", "Pulumi.acme.yaml"), `encryptionsalt: v1:salt\n${readFileSync(join(root, "stacks", "Pulumi.acme.yaml"), "utf8")}  linode:token:\n    secure: v1:abc\n`);
      pulumi.stacks.set("acme", { outputs: {}, resources: [] });
      const { code, io } = await run(ACME, { pulumi, env });
      expect(code, io.text()).toBe(0);
      expect(io.stderr.join("\n")).toBe("stacks/Pulumi.acme.yaml is already as this run would write it; stack acme exists with nothing deployed, without gpu-sandbox:hfToken: finishing the set-up.");
      expect(pulumi.callsOf("stack", "init")).toEqual([]);
      expect(pulumi.callsOf("whoami")).toEqual([]);
      expect(pulumi.callsOf("config").map((c) => [c.args.at(-1), c.input])).toEqual([["gpu-sandbox:hfToken", env.HF_TOKEN]]);
      expect(io.stdout.join("\n")).toContain("Next: pulumi up --stack acme");
    });

    it("a second run for a deployed stack says to edit the file and `pulumi up`", async () => {
      root = tempDir();
      mkdirSync(join(root, "stacks"));
      writeFileSync(join(root, "stacks", "Pulumi.acme.yaml"), "config:\n  gpu-sandbox:region: us-sea\n");
      const pulumi = new FakePulumi({ acme: { outputs: { endpoint: "https://acme.example.test/v1" } } });
      const { code, io } = await run(ACME, { pulumi, env });
      expect(code).toBe(1);
      expect(io.stderr.join("\n")).toBe("stacks/Pulumi.acme.yaml already exists; new-tenant never overwrites a stack file. " +
        'It differs from what this run would write: gpu-sandbox:region is "us-sea" in the file, "us-ord" from the flags; gpu-sandbox:adminCidrs is not in the file, ["81.2.69.160/32"] from the flags. ' +
        "Stack acme is deployed (1 output): edit the file and `pulumi up --stack acme`, or pick another name.");
      expect(readFileSync(join(root, "stacks", "Pulumi.acme.yaml"), "utf8")).toBe("config:\n  gpu-sandbox:region: us-sea\n");
    });
  });

  it("--help prints usage with the issue's example", async () => {
    const { code, io } = await run(["--help"]);
    expect(code).toBe(0);
    expect(io.text()).toContain("Usage: npm run new-tenant -- <name> --region <id> --admin-cidrs <a,b>");
    expect(io.text()).toMatch(/--admin-cidrs <a,b> +who may reach SSH and \/admin \(required\)/);
    expect(io.text()).toContain("--key app:1000:developer");
  });

  // Gaps found by mutation review (scripts/new-tenant.ts, scripts/lib/stack-setup.ts).
  describe("pinned by mutation review", () => {
    it("refuses a --key with more than three parts, and says 1 problem for one", async () => {
      root = tempDir();
      const key = await run(["acme", "--region", "us-ord", "--admin-cidrs", "81.2.69.160/32", "--key", "app:100:developer:extra"]);
      expect(key.code).toBe(2);
      expect(key.io.stderr.join("\n")).toContain('--key "app:100:developer:extra" must be name:credits[:tier]');
      const one = await run(["acme", "--region", "us-ord", "--admin-cidrs", "203.0.113.7/32"]);
      expect(one.io.stderr.join("\n")).toMatch(/^new-tenant: 1 problem; nothing was written:\n/);
      expect(existsSync(join(root, "stacks"))).toBe(false);
    });

    it("the stack file's header says GPU, cost, expiry and how to review and deploy; the keys that matter carry comments", async () => {
      root = tempDir();
      const { code } = await run(ISSUE_EXAMPLE);
      expect(code).toBe(0);
      const text = readFileSync(join(root, "stacks", "Pulumi.acme.yaml"), "utf8");
      expect(text).toMatch(/^# GPU: .+$/m);
      expect(text).toMatch(/^# Expires: 24 hours after the first `pulumi up` \(`npm run reap-expired` destroys it\), about \$12\.81 until then$/m);
      expect(text).toContain("# Review: npm run render -- --stack acme    Deploy: pulumi up --stack acme");
      expect(text).toContain("# Who may reach HTTPS (443) and HTTP (80)");
      expect(text).toContain("# Who may reach SSH (22) and /admin");
      expect(text).toContain("# Made at deploy time; plaintext only in the secret output apiKeys.");
    });

    it("an empty HF_TOKEN with --hf-token-from-env is refused as not set, writing nothing", async () => {
      root = tempDir();
      const { code, io } = await run([...ISSUE_EXAMPLE, "--hf-token-from-env"], { pulumi: new FakePulumi(), env: { HF_TOKEN: "", LINODE_TOKEN: "tok" } });
      expect(code).toBe(2);
      expect(io.stderr.join("\n")).toContain("--hf-token-from-env: HF_TOKEN is not set");
      expect(existsSync(join(root, "stacks"))).toBe(false);
    });

    it("an empty LINODE_TOKEN is not stored (an empty secret would shadow the environment's at `pulumi up`)", async () => {
      root = tempDir();
      const pulumi = new FakePulumi();
      const { code, io } = await run(ISSUE_EXAMPLE, { pulumi, env: { LINODE_TOKEN: "" } });
      expect(code).toBe(0);
      expect(pulumi.callsOf("config")).toEqual([]);
      expect(io.text()).toContain("LINODE_TOKEN is not set: linode:token not stored");
    });

    it("without a login, the steps to run by hand start with `pulumi login --local`", async () => {
      root = tempDir();
      const { io } = await run(ISSUE_EXAMPLE, { env: { LINODE_TOKEN: "tok" } });
      expect(io.text()).toContain("To finish (the pulumi CLI is needed: https://www.pulumi.com/docs/iac/download-install/):\n  pulumi login --local        # only if you use no backend yet\n  pulumi stack init acme\n");
    });

    it("a failed `pulumi login --local` stops there: exit 1, no stack init", async () => {
      root = tempDir();
      const pulumi = new FakePulumi();
      pulumi.script = (args) => (args[0] === "whoami" ? { exitCode: 255, stderr: "error: PULUMI_ACCESS_TOKEN must be set for login during non-interactive CLI sessions" }
        : args[0] === "login" ? { exitCode: 255, stderr: "error: could not create ~/.pulumi: permission denied" } : undefined);
      const { code, io } = await run(ISSUE_EXAMPLE, { pulumi, env: { LINODE_TOKEN: "tok" } });
      expect(code).toBe(1);
      expect(io.stderr.join("\n")).toContain("`pulumi login --local` failed (exit 255)");
      expect(pulumi.calls.map((c) => c.args)).toEqual([["whoami"], ["login", "--local"]]);
    });

    it("a name taken by a stack whose state cannot be exported is not taken over", async () => {
      root = tempDir();
      const pulumi = new FakePulumi({ acme: { outputs: {} } });
      pulumi.script = (args) => (args[1] === "init" ? { exitCode: 255, stderr: "error: stack 'acme' already exists\n" }
        : args[1] === "export" ? { exitCode: 255, stderr: "error: could not decrypt the state: passphrase is incorrect\n" } : undefined);
      const { code, io } = await run(ISSUE_EXAMPLE, { pulumi, env: { LINODE_TOKEN: "tok" } });
      expect(code).toBe(1);
      expect(io.stderr.join("\n")).toContain("Stack acme already exists in the backend and could not be read (error: could not decrypt the state");
      expect(pulumi.callsOf("config")).toEqual([]);
      expect(existsSync(join(root, "stacks", "Pulumi.acme.yaml"))).toBe(false);
    });

    it("`stack init` says the name is taken but no stack answers to it: not taken over", async () => {
      root = tempDir();
      const pulumi = new FakePulumi(); // no acme
      pulumi.script = (args) => (args[1] === "init" ? { exitCode: 255, stderr: "error: stack 'acme' already exists\n" } : undefined);
      const { code, io } = await run(ISSUE_EXAMPLE, { pulumi, env: { LINODE_TOKEN: "tok" } });
      expect(code).toBe(1);
      expect(io.stderr.join("\n")).toContain("Stack acme already exists in the backend and could not be read (not found after all)");
      expect(pulumi.callsOf("config")).toEqual([]);
    });

    it("a failed step's output is shown from stdout too (where pulumi prints some errors)", async () => {
      root = tempDir();
      const pulumi = new FakePulumi();
      pulumi.script = (args) => (args[1] === "init" ? { exitCode: 255, stdout: "error: stack names may only contain alphanumeric, hyphens, underscores, or periods\n" } : undefined);
      const { code, io } = await run(ISSUE_EXAMPLE, { pulumi, env: { LINODE_TOKEN: "tok" } });
      expect(code).toBe(1);
      expect(io.stderr.join("\n")).toContain("`pulumi stack init acme` failed (exit 255):\n  error: stack names may only contain");
    });

    it("a second run for a stack whose outputs cannot be read does not say it has nothing deployed", async () => {
      root = tempDir();
      mkdirSync(join(root, "stacks"));
      writeFileSync(join(root, "stacks", "Pulumi.acme.yaml"), "config:\n  gpu-sandbox:region: us-ord\n");
      const pulumi = new FakePulumi({ acme: { outputError: "passphrase must be set with PULUMI_CONFIG_PASSPHRASE" } });
      const { code, io } = await run(ISSUE_EXAMPLE, { pulumi, env: { LINODE_TOKEN: "tok" } });
      expect(code).toBe(1);
      const err = io.stderr.join("\n");
      expect(err).toContain("Whether stack acme is in the backend could not be read (error: passphrase must be set");
      expect(err).not.toContain("nothing deployed");
    });
  });

  // Found by a mutation review: every key the file set counted as a secret already stored, so a
  // token typed in plain text lost its `config set --secret` step and stayed in a committed file.
  it("a second run for a created stack lists a secret the file holds in plain text, not as stored", async () => {
    root = tempDir();
    mkdirSync(join(root, "stacks"));
    writeFileSync(join(root, "stacks", "Pulumi.acme.yaml"), "config:\n  gpu-sandbox:region: us-ord\n  linode:token: typed-by-hand\n");
    const pulumi = new FakePulumi({ acme: { outputs: {}, resources: [] } });
    const { code, io } = await run(["acme", "--region", "us-ord", "--admin-cidrs", "81.2.69.160/32"], { pulumi, env: { LINODE_TOKEN: "x" } });
    expect(code).toBe(1);
    expect(io.stderr.join("\n")).toContain("To finish:\n  printenv LINODE_TOKEN | pulumi config set --secret --stack acme linode:token\n  pulumi up --stack acme");
  });
});
