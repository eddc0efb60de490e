// manage-keys top-up and write-off in a CI job without --idempotency-key (found by a CI/CD pipeline
// author): the generated Idempotency-Key is new each run, so a job re-run after a later step
// failed credits the key twice. A warning on stderr names the flag; the job is not refused.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ApiKey } from "../../scripts/lib/admin-client.ts";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { main } from "../../scripts/manage-keys.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";
import { tempDir } from "../support/tools.ts";
import { FakePulumi } from "./fake-pulumi.ts";

let h: Harness;
beforeAll(async () => {
  h = await startShim();
});
afterAll(() => h.close());

async function run(argv: string[], env: Record<string, string>, stdinIsTTY: boolean) {
  const io = memoryIo();
  const code = await main([argv[0]!, "--url", h.url, ...argv.slice(1)], { io, env: { GPU_SANDBOX_ADMIN_TOKEN: h.adminToken, ...env }, pulumi: new FakePulumi(), root: tempDir(), stdinIsTTY });
  return { code, out: io.stdout.join("\n"), err: io.stderr.join("\n") };
}
const balance = async (id: string) => (JSON.parse((await run(["list", "--json"], {}, true)).out) as ApiKey[]).find((k) => k.id === id)!.balance;
const WARNING = /^Warning: top-up without --idempotency-key in an unattended run \((.+)\): the Idempotency-Key above is new each run, so running this job again credits the key again\. Give --idempotency-key /m;

describe("manage-keys top-up without --idempotency-key, unattended", () => {
  it.each([
    ["CI=true", { CI: "true" }, true],
    ["CI=1 (GitLab, Travis)", { CI: "1" }, true],
    ["stdin not a terminal (cron)", {}, false],
  ] as const)("%s: credits as before, exit 0, stdout the JSON alone, and a warning on stderr naming the flag", async (_case, env, tty) => {
    const { id } = await h.createKey({ name: `ci-${Math.random().toString(36).slice(2, 8)}`, credits: 10 });
    const r = await run(["top-up", "--key", id, "--amount", "5", "--json"], env, tty);
    expect(r.code, r.err).toBe(0);
    expect((JSON.parse(r.out) as { amount: number }).amount).toBe(5);
    expect(r.err).toMatch(WARNING);
    expect(r.err.match(WARNING)![1]).toBe(tty ? `CI=${env.CI}` : "stdin is not a terminal");
    expect(await balance(id)).toBe(15);
  });

  it.each([
    ["at a terminal, CI unset", {}, true],
    ["at a terminal, CI=false", { CI: "false" }, true],
    ["at a terminal, CI=False (any case)", { CI: "False" }, true],
    ["at a terminal, CI=0", { CI: "0" }, true],
    ["at a terminal, CI set but blank", { CI: " " }, true],
  ] as const)("%s: no warning", async (_case, env, tty) => {
    const { id } = await h.createKey({ name: `tty-${Math.random().toString(36).slice(2, 8)}`, credits: 10 });
    const r = await run(["top-up", "--key", id, "--amount", "5"], env, tty);
    expect(r.code, r.err).toBe(0);
    expect(r.err).not.toContain("Warning");
  });

  it("with --idempotency-key, in CI: no warning, and a re-run credits once", async () => {
    const { id } = await h.createKey({ name: "ci-named", credits: 10 });
    for (let i = 0; i < 2; i++) {
      const r = await run(["top-up", "--key", id, "--amount", "5", "--idempotency-key", "nightly-2026-12-07"], { CI: "true" }, false);
      expect(r.code, r.err).toBe(0);
      expect(r.err).not.toContain("Warning");
    }
    expect(await balance(id)).toBe(15);
  });

  it("a top-up refused before anything is sent (a revoked key) has no warning, only the refusal", async () => {
    const { id } = await h.createKey({ name: "ci-revoked", credits: 10 });
    expect((await h.admin(`/admin/keys/${id}`, { method: "DELETE" })).status).toBe(200);
    const r = await run(["top-up", "--key", id, "--amount", "5"], { CI: "true" }, false);
    expect(r.code).toBe(4);
    expect(r.err).not.toContain("Warning");
  });
});

describe("manage-keys write-off without --idempotency-key, unattended", () => {
  it("CI=true: written off as before, with the warning naming the flag; with the flag, none", async () => {
    const { id } = await h.createKey({ name: "ci-refund", credits: 10 });
    const r = await run(["write-off", "--key", id, "--amount", "2", "--note", "refund"], { CI: "true" }, true);
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(/^Warning: write-off without --idempotency-key in an unattended run \(CI=true\): the Idempotency-Key above is new each run, so running this job again takes the credits off again\. Give --idempotency-key /m);
    expect(await balance(id)).toBe(8);
    const named = await run(["write-off", "--key", id, "--amount", "2", "--note", "refund", "--idempotency-key", "cn-1"], { CI: "true" }, false);
    expect(named.code, named.err).toBe(0);
    expect(named.err).not.toContain("Warning");
    const tty = await run(["write-off", "--key", id, "--amount", "1", "--note", "refund"], {}, true);
    expect(tty.err).not.toContain("Warning");
  });
});
