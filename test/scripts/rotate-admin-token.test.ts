import { describe, expect, it } from "vitest";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { main } from "../../scripts/rotate-admin-token.ts";
import { FakePulumi } from "./fake-pulumi.ts";

// npm run rotate-admin-token: a planned rotation of a tenant's admin token with an overlap, run
// against a stand-in pulumi CLI that records every command (argv and stdin).
const OLD = "Old0admin0token0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const NEW = "New0admin0token0bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const NOW = new Date("2026-06-01T12:00:00Z");
const URN = "urn:pulumi:acme::gpu-sandbox::gpu-sandbox:infra:Tenant$gpu-sandbox:infra:ServingStack$random:index/randomPassword:RandomPassword::acme-serving-admin-token";

/** acme, deployed; `config`: its stack config as `pulumi config --json --show-secrets` prints it. `replaces`: whether `up --replace` makes a new token. */
function fakeAcme(options: { config?: Record<string, { value: string; secret: boolean }>; upFails?: boolean; replaces?: boolean } = {}) {
  const pulumi = new FakePulumi({
    acme: {
      outputs: { endpoint: "https://acme.example.test/v1", adminToken: OLD, servingDeployed: true },
      resources: [
        { type: "random:index/randomPassword:RandomPassword", urn: URN.replace("admin-token", "vllm-api-key") },
        { type: "random:index/randomPassword:RandomPassword", urn: URN },
      ],
    },
  });
  const config = { "gpu-sandbox:region": { value: "us-ord", secret: false }, ...options.config };
  pulumi.script = (args) => {
    if (args[0] === "config" && args[1] === "--json") return { stdout: JSON.stringify(config) };
    if (args[0] === "up") {
      if (options.upFails) return { exitCode: 255, stderr: "error: update failed\n  ssh: connect to host 192.0.2.10 port 22: Connection timed out\n" };
      if (args.includes("--replace") && options.replaces !== false) pulumi.stacks.get("acme")!.outputs!.adminToken = NEW;
      return { stdout: "Update succeeded\n" };
    }
    return undefined;
  };
  return pulumi;
}

async function run(argv: string[], pulumi: FakePulumi) {
  const io = memoryIo();
  const code = await main(argv, { pulumi, io, now: () => NOW, env: {}, root: "/nonexistent" });
  return { code, io, text: io.text() };
}

const argvs = (pulumi: FakePulumi) => pulumi.calls.map((c) => c.args.join(" "));

describe("rotate-admin-token: the start of a planned rotation", () => {
  it("keeps the current token as the previous one until the overlap's end, replaces the admin token and deploys, then says what to do next", async () => {
    const pulumi = fakeAcme();
    const { code, text, io } = await run(["--stack", "acme", "--overlap", "7d"], pulumi);
    expect(code).toBe(0);
    // The deploy's own output, as it comes, on stderr: it takes minutes.
    expect(io.stderr).toContain("  Update succeeded");
    expect(argvs(pulumi)).toEqual([
      "stack output --json --stack acme --show-secrets",
      "config --json --show-secrets --stack acme",
      "stack export --stack acme",
      "config set --secret --stack acme gpu-sandbox:previousAdminToken",
      "config set --stack acme gpu-sandbox:previousAdminTokenUntil 2026-06-08T12:00:00.000Z",
      `up --yes --non-interactive --skip-preview --stack acme --replace ${URN}`,
      "stack output --json --stack acme --show-secrets",
    ]);
    // The token goes on stdin, never in argv (ps, shell history).
    expect(pulumi.callsOf("config", "set", "--secret")[0]!.input).toBe(OLD);
    expect(text).toContain("the old admin token is let in until 2026-06-08T12:00:00.000Z");
    expect(text).toContain("pulumi stack output adminToken --show-secrets --stack acme");
    expect(text).toContain("shim_admin_previous_token_requests_total");
    expect(text).toContain("npm run rotate-admin-token -- --stack acme --finish");
    // Neither token is printed.
    expect(text).not.toContain(OLD);
    expect(text).not.toContain(NEW);
  });

  it("the overlap defaults to 7 days, and is taken in hours or minutes too", async () => {
    for (const [overlap, until] of [[undefined, "2026-06-08T12:00:00.000Z"], ["36h", "2026-06-03T00:00:00.000Z"], ["90m", "2026-06-01T13:30:00.000Z"]] as const) {
      const pulumi = fakeAcme();
      const { code } = await run(["--stack", "acme", ...(overlap ? ["--overlap", overlap] : [])], pulumi);
      expect(code).toBe(0);
      expect(argvs(pulumi)).toContain(`config set --stack acme gpu-sandbox:previousAdminTokenUntil ${until}`);
    }
  });

  it.each([["0d"], ["7"], ["1w"], ["91d"], ["-1d"]])("refuses --overlap %s before running anything (exit 2)", async (overlap) => {
    const pulumi = fakeAcme();
    const { code, text } = await run(["--stack", "acme", `--overlap=${overlap}`], pulumi);
    expect(code).toBe(2);
    expect(text).toContain(`--overlap "${overlap}" must be`);
    expect(pulumi.calls).toEqual([]);
  });

  it("refuses while another rotation is under way (a previous token that is not the current one): finish it first", async () => {
    const pulumi = fakeAcme({ config: { "gpu-sandbox:previousAdminToken": { value: "Older0token0cccccccccccccccccccccccccccccccccc", secret: true } } });
    const { code, text } = await run(["--stack", "acme"], pulumi);
    expect(code).toBe(1);
    expect(text).toContain("a rotation of acme's admin token is under way");
    expect(text).toContain("npm run rotate-admin-token -- --stack acme --finish");
    // A start whose deploy failed after the token was replaced reads the same way: `pulumi up`
    // completes it, with its overlap, where --finish would drop the old token at once.
    expect(text).toContain("pulumi up --stack acme");
    expect(pulumi.callsOf("config", "set")).toEqual([]);
    expect(pulumi.callsOf("up")).toEqual([]);
  });

  it("a run whose deploy failed is run again: the stored previous token is the current one, and the replace is done again", async () => {
    const failed = fakeAcme({ upFails: true });
    const first = await run(["--stack", "acme"], failed);
    expect(first.code).toBe(1);
    expect(first.text).toContain("Connection timed out");
    expect(first.text).toContain("the old admin token still works");
    expect(first.text).toContain("run the same command again");
    const pulumi = fakeAcme({ config: { "gpu-sandbox:previousAdminToken": { value: OLD, secret: true } } });
    const again = await run(["--stack", "acme"], pulumi);
    expect(again.code).toBe(0);
    expect(pulumi.callsOf("up")).toHaveLength(1);
  });

  it("fails when the deploy left the admin token as it was", async () => {
    const pulumi = fakeAcme({ replaces: false });
    const { code, text } = await run(["--stack", "acme"], pulumi);
    expect(code).toBe(1);
    expect(text).toContain("acme's adminToken output is still the old token");
  });

  it("a stack never deployed has no token to rotate (exit 1, nothing changed)", async () => {
    const pulumi = new FakePulumi({ acme: { outputs: {} } });
    const { code, text } = await run(["--stack", "acme"], pulumi);
    expect(code).toBe(1);
    expect(text).toContain("stack acme has no adminToken output");
    expect(pulumi.callsOf("config", "set")).toEqual([]);
  });

  it("needs --stack and the pulumi CLI (exit 2)", async () => {
    expect((await run([], fakeAcme())).code).toBe(2);
    const pulumi = fakeAcme();
    pulumi.installed = false;
    const { code, text } = await run(["--stack", "acme"], pulumi);
    expect(code).toBe(2);
    expect(text).toContain("the pulumi CLI");
  });
});

describe("rotate-admin-token --finish", () => {
  it("removes the previous token and its end from the stack's config and deploys: the old token is refused from then on", async () => {
    const pulumi = fakeAcme({ config: { "gpu-sandbox:previousAdminToken": { value: OLD, secret: true }, "gpu-sandbox:previousAdminTokenUntil": { value: "2026-06-08T12:00:00.000Z", secret: false } } });
    const { code, text } = await run(["--stack", "acme", "--finish"], pulumi);
    expect(code).toBe(0);
    expect(argvs(pulumi)).toEqual([
      "config rm --stack acme gpu-sandbox:previousAdminToken",
      "config rm --stack acme gpu-sandbox:previousAdminTokenUntil",
      "up --yes --non-interactive --skip-preview --stack acme",
    ]);
    expect(text).toContain("the old admin token of acme is refused from now on");
  });

  it("refuses --overlap with --finish (exit 2)", async () => {
    const { code } = await run(["--stack", "acme", "--finish", "--overlap", "7d"], fakeAcme());
    expect(code).toBe(2);
  });
});
