import { spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { readTemplate } from "../../infra/render/template.ts";
import { expectOperatorScriptClean } from "../support/operator-scripts.ts";
import { tempDir } from "../support/tools.ts";

const HOST_KEY = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBM0GDBncovXQkG1s0HURSW4GC4PN1gClkiFn9zEDH6Bwi6u5elyXIfDslXxYds3MapPLIgN8lrQuEXl9DH6thL0=";

/** templates/operator/record-host-key.sh as `pulumi up` runs it (bash -c <script>, env), stdout apart: Pulumi keeps it as the key. */
function runRecord(pathDirs: string[], env: Record<string, string> = {}) {
  const full = {
    PATH: [...pathDirs, "/usr/bin", "/bin"].join(":"), GS_SSH_KEY: "-----BEGIN OPENSSH PRIVATE KEY-----\ntest-key-body\n", GS_HOST: "192.0.2.10", ...env,
  };
  const r = spawnSync("env", ["-i", ...Object.entries(full).map(([k, v]) => `${k}=${v}`), "/bin/bash", "-c", readTemplate("operator/record-host-key.sh")], { encoding: "utf8" });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/**
 * A stand-in `ssh` that notes its arguments in `args` beside it and, as OpenSSH does with
 * StrictHostKeyChecking=accept-new, writes the key the host presented (`presented`, or nothing)
 * to the UserKnownHostsFile it was given, then exits `code`.
 */
function fakeSsh(code: number, presented = `192.0.2.10 ${HOST_KEY}`): string {
  const dir = join(tempDir(), "bin");
  mkdirSync(dir);
  writeFileSync(join(dir, "ssh"), [
    "#!/bin/bash",
    `printf '%s\\n' "$*" > ${join(dir, "args")}`,
    `for a in "$@"; do case $a in UserKnownHostsFile=*) [ -z '${presented}' ] || printf '%s\\n' '${presented}' >> "\${a#UserKnownHostsFile=}";; esac; done`,
    `exit ${code}`,
  ].join("\n") + "\n");
  chmodSync(join(dir, "ssh"), 0o755);
  return dir;
}

describe("recording a new host's SSH key", () => {
  it("prints the key the host presented at the first login, as `<type> <base64>`, alone on stdout", () => {
    const ssh = fakeSsh(0);
    const r = runRecord([ssh]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe(`${HOST_KEY}\n`);
    // Its fingerprint is shown, to compare with the one the host's first boot wrote to its console (Lish).
    expect(r.stderr).toContain("SHA256:t2oSj44+cWGlnyt+zWAeKG91utDheYeu5JrN0QzTqKc");
    const args = readFileSync(join(ssh, "args"), "utf8");
    expect(args).toMatch(/^-F \/dev\/null -i \S+ -o IdentitiesOnly=yes /);
    expect(args).toContain("-o StrictHostKeyChecking=accept-new");
    expect(args).not.toContain("StrictHostKeyChecking=no");
    expect(args).not.toContain("UserKnownHostsFile=/dev/null");
    // The type @pulumi/command's Go SSH client asks for first, so the key recorded is the one it is shown.
    expect(args).toContain("-o HostKeyAlgorithms=ecdsa-sha2-nistp256,");
    expect(args).not.toContain("test-key-body");
  });

  it("keeps the key it recorded before, without connecting, when Pulumi runs it again on the same host", () => {
    const ssh = fakeSsh(255);
    const r = runRecord([ssh], { PULUMI_COMMAND_STDOUT: HOST_KEY });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe(`${HOST_KEY}\n`);
    expect(() => readFileSync(join(ssh, "args"))).toThrow();
  });

  it("records the key when the output it had is not one (a step whose earlier run printed something else)", () => {
    const r = runRecord([fakeSsh(0)], { PULUMI_COMMAND_STDOUT: "gpu-sandbox: SSH on 192.0.2.10 answers" });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe(`${HOST_KEY}\n`);
  });

  it("fails, saying why, when it cannot log in or the host presented no key: no step over SSH runs unpinned", () => {
    const refused = runRecord([fakeSsh(255)]);
    expect(refused.status).toBe(1);
    expect(refused.stdout).toBe("");
    expect(refused.stderr).toContain("could not log in to 192.0.2.10 to record its SSH key");
    const none = runRecord([fakeSsh(0, "")]);
    expect(none.status).toBe(1);
    expect(none.stdout).toBe("");
    const empty = tempDir();
    const noSsh = runRecord([empty], { PATH: empty });
    expect(noSsh.status).toBe(1);
    expect(noSsh.stderr).toContain("no ssh client");
  });

  it("passes shellcheck", () => expectOperatorScriptClean("record-host-key.sh"));
});
