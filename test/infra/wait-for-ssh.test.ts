import { chmodSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { readTemplate } from "../../infra/render/template.ts";
import { expectOperatorScriptClean } from "../support/operator-scripts.ts";
import { runTool, tempDir } from "../support/tools.ts";

/** templates/operator/wait-for-ssh.sh as `pulumi up` runs it: bash -c <script>, env. */
function runWait(pathDirs: string[], env: Record<string, string> = {}) {
  const script = readTemplate("operator/wait-for-ssh.sh");
  const full = {
    PATH: [...pathDirs, "/usr/bin", "/bin"].join(":"), GS_SSH_KEY: "-----BEGIN OPENSSH PRIVATE KEY-----\ntest-key-body\n",
    GS_HOST: "192.0.2.10", GS_WAIT_SECONDS: "0", GS_ADMIN_CIDRS: "81.2.69.160/32", ...env,
  };
  const args = Object.entries(full).map(([k, v]) => `${k}=${v}`);
  return runTool("env", ["-i", ...args, "/bin/bash", "-c", script]);
}

/** A stand-in `ssh` that notes its arguments in `args` beside it and exits `code`, as a dial that times out (255) or a login that works (0). */
function fakeSsh(code: number): string {
  const dir = join(tempDir(), "bin");
  mkdirSync(dir);
  writeFileSync(join(dir, "ssh"), `#!/bin/bash\nprintf '%s\\n' "$*" > ${join(dir, "args")}\nexit ${code}\n`);
  chmodSync(join(dir, "ssh"), 0o755);
  return dir;
}

describe("waiting for SSH on a new host", () => {
  it("returns once SSH answers, offering the generated key alone (an agent's keys would use up the server's tries)", () => {
    const ssh = fakeSsh(0);
    const r = runWait([ssh]);
    expect(r.status).toBe(0);
    expect(r.output).toContain("SSH on 192.0.2.10 answers");
    const args = readFileSync(join(ssh, "args"), "utf8");
    expect(args).toMatch(/^-F \/dev\/null -i \S+ -o IdentitiesOnly=yes /);
    // It sends nothing secret (`true`), and record-host-key.sh records the key after it; still,
    // host key checking stays on: a key it accepts goes to a file of its own, thrown away.
    expect(args).not.toContain("StrictHostKeyChecking=no");
    expect(args).not.toContain("UserKnownHostsFile=/dev/null");
    expect(args).toContain("-o StrictHostKeyChecking=accept-new");
  });

  it("asks whether the operator's address is in adminCidrs when SSH never answers, naming them and how to fix it", () => {
    const r = runWait([fakeSsh(255)]);
    expect(r.status).toBe(1);
    expect(r.output).toContain("SSH on 192.0.2.10 did not answer within 0 minutes");
    expect(r.output).toContain("Is your address in adminCidrs? They are: 81.2.69.160/32");
    expect(r.output).toContain("curl -4s https://ifconfig.me");
    expect(r.output).toContain("pulumi config set --path 'gpu-sandbox:adminCidrs[0]'");
    expect(r.output).not.toContain("test-key-body");
  });

  it("leaves the wait to host-ready without an ssh client", () => {
    const empty = tempDir();
    const r = runWait([empty], { PATH: empty });
    expect(r.status).toBe(0);
    expect(r.output).toContain("no ssh client");
  });

  it("passes shellcheck", () => expectOperatorScriptClean("wait-for-ssh.sh"));
});
