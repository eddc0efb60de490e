import { chmodSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { realPulumi, setSecretArgs, stackOutputs } from "../../scripts/lib/pulumi.ts";
import { tempDir } from "../support/tools.ts";

/**
 * The real seam (zx) against a stand-in `pulumi` program on PATH that records its argv, stdin
 * and working directory: what the other tests' FakePulumi assumes about the real one. The stand-in
 * reads stdin to its end, so a command run without input must get EOF, not wait forever.
 */
function fakeCli(stdout = "", exitCode = 0) {
  const bin = tempDir();
  const record = tempDir();
  const script = `#!/bin/sh
printf '%s\\n' "$@" > "${record}/argv"
pwd > "${record}/cwd"
cat > "${record}/stdin"
printf '%s' '${stdout}'
echo "warning from pulumi" >&2
exit ${exitCode}
`;
  writeFileSync(join(bin, "pulumi"), script);
  chmodSync(join(bin, "pulumi"), 0o755);
  const root = tempDir();
  mkdirSync(join(root, "stacks"));
  const env = { ...process.env, PATH: `${bin}:${process.env.PATH}` };
  const read = (f: string) => readFileSync(join(record, f), "utf8");
  return { root, env, argv: () => read("argv").trimEnd().split("\n"), stdin: () => read("stdin"), cwd: () => read("cwd").trim() };
}

describe("the Pulumi CLI seam (zx)", () => {
  it("passes a secret on stdin only, runs in the project root, and reports exit code and output", async () => {
    const f = fakeCli("done", 0);
    const cli = realPulumi(f.root, f.env);
    expect(await cli.available()).toBe(true);
    const r = await cli.run(setSecretArgs("acme", "linode:token"), { input: "s3cret-token value" });
    expect(r).toEqual({ exitCode: 0, stdout: "done", stderr: "warning from pulumi\n" });
    expect(f.argv()).toEqual(["config", "set", "--secret", "--stack", "acme", "linode:token", "--color", "never"]);
    expect(f.argv().join(" ")).not.toContain("s3cret");
    expect(f.stdin()).toBe("s3cret-token value");
    expect(f.cwd()).toBe(f.root);
  });

  it("a failing command resolves with its exit code (no throw); outputs are parsed as JSON", async () => {
    const failing = fakeCli("", 3);
    expect((await realPulumi(failing.root, failing.env).run(["stack", "init", "acme"])).exitCode).toBe(3);
    const outputs = fakeCli('{"endpoint":"https://x.example/v1","expiresAt":"2026-03-01T00:00:00Z"}');
    const r = await stackOutputs(realPulumi(outputs.root, outputs.env), "acme", { showSecrets: true });
    expect(r).toEqual({ kind: "outputs", outputs: { endpoint: "https://x.example/v1", expiresAt: "2026-03-01T00:00:00Z" } });
    expect(outputs.argv()).toEqual(["stack", "output", "--json", "--stack", "acme", "--show-secrets", "--color", "never"]);
  });

  it("streams output to onOutput as it comes", async () => {
    const f = fakeCli("Destroying (acme)");
    const chunks: string[] = [];
    await realPulumi(f.root, f.env).run(["destroy", "--yes", "--stack", "acme"], { onOutput: (c) => chunks.push(c) });
    expect(chunks.join("")).toContain("Destroying (acme)");
    expect(chunks.join("")).toContain("warning from pulumi");
  });

  it("is not available when pulumi is not on PATH", async () => {
    expect(await realPulumi(tempDir(), { PATH: tempDir() }).available()).toBe(false);
  });

  it("a pulumi killed by a signal (no exit code) is a failure, not exit 0", async () => {
    const bin = tempDir();
    writeFileSync(join(bin, "pulumi"), "#!/bin/sh\nkill -KILL $$\n");
    chmodSync(join(bin, "pulumi"), 0o755);
    const r = await realPulumi(tempDir(), { ...process.env, PATH: `${bin}:${process.env.PATH}` }).run(["destroy", "--yes", "--stack", "acme"]);
    expect(r.exitCode).not.toBe(0);
  });

  it("turns the update check off: its notice would land in parsed output and in cron mail", async () => {
    const bin = tempDir();
    writeFileSync(join(bin, "pulumi"), '#!/bin/sh\nprintf %s "$PULUMI_SKIP_UPDATE_CHECK"\n');
    chmodSync(join(bin, "pulumi"), 0o755);
    const r = await realPulumi(tempDir(), { ...process.env, PATH: `${bin}:${process.env.PATH}` }).run(["whoami"]);
    expect(r.stdout).toBe("true");
  });
});
