import { chmodSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { readTemplate } from "../../infra/render/template.ts";
import { expectOperatorScriptClean } from "../support/operator-scripts.ts";
import { runTool, tempDir } from "../support/tools.ts";

/** The host's SSH key, as record-host-key.sh recorded it in the stack. */
const HOST_KEY = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBM0GDBncovXQkG1s0HURSW4GC4PN1gClkiFn9zEDH6Bwi6u5elyXIfDslXxYds3MapPLIgN8lrQuEXl9DH6thL0=";

/** templates/operator/stop-serving-stack.sh as `pulumi destroy` runs it: bash -c <script>, env. */
function runStop(pathDirs: string[], env: Record<string, string> = {}) {
  const script = readTemplate("operator/stop-serving-stack.sh");
  const full = {
    PATH: [...pathDirs, "/usr/bin", "/bin"].join(":"), GS_SSH_KEY: "-----BEGIN OPENSSH PRIVATE KEY-----\ntest-key-body\n", GS_HOST: "192.0.2.10",
    GS_HOST_KEY: HOST_KEY, GS_DIR: "/opt/gpu-sandbox", ...env,
  };
  const args = Object.entries(full).map(([k, v]) => `${k}=${v}`);
  return runTool("env", ["-i", ...args, "/bin/bash", "-c", script]);
}

/** A stand-in `ssh` that records its arguments and the key file's content, then exits `code`. */
function fakeSsh(code: number): { dir: string; record: () => { args: string; key: string; knownHosts: string } } {
  const dir = tempDir();
  mkdirSync(join(dir, "bin"));
  const log = join(dir, "ssh.log");
  const known = join(dir, "known_hosts.log");
  writeFileSync(join(dir, "bin", "ssh"), [
    "#!/bin/bash",
    `printf '%s\\n' "$*" > ${log}`,
    `while [ $# -gt 0 ]; do [ "$1" = -i ] && cat "$2" >> ${log}; case $2 in UserKnownHostsFile=*) cat "\${2#UserKnownHostsFile=}" > ${known};; esac; shift; done`,
    `exit ${code}`,
  ].join("\n") + "\n");
  chmodSync(join(dir, "bin", "ssh"), 0o755);
  return {
    dir: join(dir, "bin"),
    record: () => {
      const [args, ...key] = readFileSync(log, "utf8").split("\n");
      let knownHosts = "";
      try { knownHosts = readFileSync(known, "utf8"); } catch { /* ssh was given no file */ }
      return { args: args!, key: key.join("\n"), knownHosts };
    },
  };
}

describe("stopping the stack on destroy", () => {
  it("stops the stack on the host over SSH, with the key in a file, not on the command line", () => {
    const ssh = fakeSsh(0);
    const r = runStop([ssh.dir]);
    expect(r.status).toBe(0);
    expect(r.output).toContain("stopped the serving stack on 192.0.2.10");
    const { args, key } = ssh.record();
    expect(args).toContain("root@192.0.2.10");
    expect(args).toMatch(/^-F \/dev\/null -i \S+ -o IdentitiesOnly=yes /); // not the agent's keys: they would use up the server's tries
    expect(args).toContain("cd /opt/gpu-sandbox && ");
    expect(args).not.toContain("test-key-body");
    expect(key).toContain("test-key-body");
  });

  it("talks to the host whose key pulumi up recorded, and to no other", () => {
    const ssh = fakeSsh(0);
    expect(runStop([ssh.dir]).status).toBe(0);
    const { args, knownHosts } = ssh.record();
    expect(args).toContain("-o StrictHostKeyChecking=yes");
    expect(args).not.toContain("StrictHostKeyChecking=no");
    expect(args).not.toContain("UserKnownHostsFile=/dev/null");
    expect(knownHosts).toBe(`192.0.2.10 ${HOST_KEY}\n`);
  });

  it("does not connect when no key was recorded (SSH was never open to pulumi up), and the destroy goes on", () => {
    const ssh = fakeSsh(0);
    const r = runStop([ssh.dir], { GS_HOST_KEY: "" });
    expect(r.status).toBe(0);
    expect(r.output).toContain("no SSH key of 192.0.2.10 was recorded");
    expect(() => ssh.record()).toThrow();
  });

  it("stops the shim first, for its whole grace period, while nginx still relays its streams (it drains and ends them with an error event), then the rest", () => {
    // An ssh that runs the remote command here, against a `docker` that records its calls.
    const dir = tempDir();
    mkdirSync(join(dir, "bin"));
    mkdirSync(join(dir, "bundle"));
    writeFileSync(join(dir, "bundle", "compose.yaml"), "services: {}\n");
    const log = join(dir, "docker.log");
    writeFileSync(join(dir, "bin", "ssh"), `#!/bin/bash\nexec /bin/bash -c "\${@: -1}"\n`);
    writeFileSync(join(dir, "bin", "docker"), `#!/bin/bash\nprintf '%s\\n' "$*" >> ${log}\n[ "$2" != stop ] || exit "\${STOP_EXIT:-0}"\n`);
    chmodSync(join(dir, "bin", "ssh"), 0o755);
    chmodSync(join(dir, "bin", "docker"), 0o755);
    const shim = (parse(readTemplate("compose.yaml")) as { services: { shim: { stop_grace_period: string } } }).services.shim;
    const grace = parseInt(shim.stop_grace_period, 10);
    expect(shim.stop_grace_period).toBe(`${grace}s`);

    const r = runStop([join(dir, "bin")], { GS_DIR: join(dir, "bundle") });
    expect(r.status).toBe(0);
    expect(readFileSync(log, "utf8").trim().split("\n")).toEqual([`compose stop --timeout ${grace} shim`, "compose down --remove-orphans --timeout 30"]);

    // A shim that will not stop (already gone, say) does not keep the rest running.
    writeFileSync(log, "");
    const failed = runStop([join(dir, "bin")], { GS_DIR: join(dir, "bundle"), STOP_EXIT: "1" });
    expect(failed.status).toBe(0);
    expect(readFileSync(log, "utf8")).toContain("compose down --remove-orphans --timeout 30");
  });

  it("never fails the destroy: an unreachable host or a missing ssh client only warns", () => {
    const unreachable = runStop([fakeSsh(255).dir]);
    expect(unreachable.status).toBe(0);
    expect(unreachable.output).toContain("could not stop the serving stack on 192.0.2.10");
    const noSsh = runStop([tempDir()], { PATH: tempDir() });
    expect(noSsh.status).toBe(0);
    expect(noSsh.output).toContain("destroying anyway");
  });

  it("passes shellcheck", () => expectOperatorScriptClean("stop-serving-stack.sh"));
});
