import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse } from "yaml";
import { describe, expect, it } from "vitest";
import { HOST_PATHS, NVIDIA_DRIVER_BRANCH, volumeDevicePath } from "../../infra/host.ts";
import { encodeHostFiles, encodeUserData, HOST_FILES_ARCHIVE, hostCloudInit, hostFiles, hostScriptNames, renderCloudInit, USER_DATA_LIMIT_BYTES } from "../../infra/render/cloud-init.ts";
import { TEMPLATES_DIR } from "../../infra/render/template.ts";
import { unpackHostFiles } from "../support/host-files.ts";
import { runTool, writeTemp } from "../support/tools.ts";

const input = { tenant: "acme", volumeDevice: volumeDevicePath("gs-acme-data") };
const cloudInit = renderCloudInit(input);

describe("cloud-init user data", () => {
  it("passes `cloud-init schema`", () => {
    const result = runTool("cloud-init", ["schema", "-c", writeTemp("user-data.yaml", cloudInit)]);
    expect(result.output).toContain("Valid cloud-config");
    expect(result.status).toBe(0);
  });

  it("is rejected by `cloud-init schema` when broken (the check can fail)", () => {
    const broken = cloudInit.replace("ssh_pwauth: false", "ssh_pwauth: [not, a, boolean]");
    const result = runTool("cloud-init", ["schema", "-c", writeTemp("user-data.yaml", broken)]);
    expect(result.status).not.toBe(0);
    expect(result.output).toContain("ssh_pwauth");
  });

  it("is plain text within Linode's limit, even for the longest tenant name", () => {
    // cloud-init's Akamai datasource reads user data as UTF-8 text (b64decode(...).decode()):
    // gzipped user data left the host with none, so no setup ran at all.
    for (const tenant of ["acme", "abcdefghijklmnopqrstuvwx"]) {
      const decoded = Buffer.from(encodeUserData(hostCloudInit(tenant)), "base64");
      const text = new TextDecoder("utf-8", { fatal: true }).decode(decoded);
      expect(text.startsWith("#cloud-config\n")).toBe(true);
      expect(decoded.length, tenant).toBeLessThanOrEqual(USER_DATA_LIMIT_BYTES);
    }
  });

  it("refuses, with its size, user data Linode would refuse", () => {
    expect(() => encodeUserData(`#cloud-config\n#${"x".repeat(USER_DATA_LIMIT_BYTES)}\n`))
      .toThrow(/cloud-init user data is 16400 bytes; Linode takes at most 16384/);
    // Linode's limit itself is taken.
    expect(Buffer.from(encodeUserData("x".repeat(USER_DATA_LIMIT_BYTES)), "base64").length).toBe(USER_DATA_LIMIT_BYTES);
  });

  const doc = parse(cloudInit);
  const files = unpackHostFiles(cloudInit);

  it("unpacks the host's files, as tar gives them back, before anything uses them", () => {
    expect(doc.runcmd[0][0]).toBe("tar");
    expect(new Map(hostFiles(input).map((f) => [f.path, { content: f.content, mode: f.mode }]))).toEqual(files);
    expect(files.get(`${HOST_PATHS.libDir}/bootstrap.sh`)!.content).toBe(readFileSync(new URL("host/bootstrap.sh", TEMPLATES_DIR), "utf8"));
  });

  it("turns off SSH passwords and installs security updates unattended, without reboots", () => {
    expect(doc.ssh_pwauth).toBe(false);
    const file = (path: string) => files.get(path)?.content as string;
    expect(file("/etc/ssh/sshd_config.d/60-gpu-sandbox.conf")).toMatch(/^PasswordAuthentication no$/m);
    expect(file("/etc/ssh/sshd_config.d/60-gpu-sandbox.conf")).toMatch(/^PermitRootLogin prohibit-password$/m);
    const upgrades = file("/etc/apt/apt.conf.d/52gpu-sandbox-unattended-upgrades");
    expect(upgrades).toContain('APT::Periodic::Unattended-Upgrade "1";');
    expect(upgrades).toContain('Unattended-Upgrade::Automatic-Reboot "false";');
    expect(doc.packages).toContain("unattended-upgrades");
  });

  it("keeps the NVIDIA driver's packages from unattended upgrades, and only those (not the container toolkit's)", () => {
    const upgrades = files.get("/etc/apt/apt.conf.d/52gpu-sandbox-unattended-upgrades")!.content;
    const blacklist = [.../Package-Blacklist \{([^}]*)\}/.exec(upgrades)![1]!.matchAll(/^\s*"([^"]+)";/gm)].map((m) => m[1]!);
    const script = (name: string) => readFileSync(new URL(`host/${name}`, TEMPLATES_DIR), "utf8");
    // The packages install-nvidia.sh names, and what they pull in (Ubuntu's driver packaging).
    const driver = [...script("install-nvidia.sh").matchAll(/"((?:lib)?nvidia-[^"]+)"/g)].map((m) => m[1]!.replace("${NVIDIA_DRIVER_BRANCH}", NVIDIA_DRIVER_BRANCH));
    expect(driver).toEqual([`nvidia-headless-${NVIDIA_DRIVER_BRANCH}-server-open`, `nvidia-utils-${NVIDIA_DRIVER_BRANCH}-server`]);
    driver.push(...["nvidia-headless-no-dkms-%-server-open", "nvidia-dkms-%-server-open", "nvidia-kernel-source-%-server-open", "nvidia-kernel-common-%-server",
      "nvidia-compute-utils-%-server", "nvidia-firmware-%-server-%.95.05", "libnvidia-compute-%-server", "libnvidia-cfg1-%-server", "libnvidia-decode-%-server"]
      .map((p) => p.replaceAll("%", NVIDIA_DRIVER_BRANCH)));
    // install-container-toolkit.sh's package and its dependencies: not the driver, upgraded like anything else.
    const toolkit = ["nvidia-container-toolkit", "nvidia-container-toolkit-base", "libnvidia-container1", "libnvidia-container-tools"];
    expect(script("install-container-toolkit.sh")).toContain("apt_get install nvidia-container-toolkit");
    // unattended-upgrades reads each entry as a Python regular expression, with re.match.
    const matched = runTool("python3", ["-c", "import json, re, sys; b, names = json.load(sys.stdin); print(json.dumps([n for n in names if any(re.match(r, n) for r in b)]))"],
      { input: JSON.stringify([blacklist, [...driver, ...toolkit]]) });
    expect(matched.status, matched.output).toBe(0);
    expect(JSON.parse(matched.output)).toEqual(driver);
  });

  it("reboots only when the driver asked for it", () => {
    expect(doc.power_state).toMatchObject({ mode: "reboot", condition: ["test", "-f", `${HOST_PATHS.stateDir}/reboot-required`] });
  });

  it("closes SSH on every boot until the host is ready (or its setup failed), then runs the bootstrap", () => {
    expect(doc.bootcmd[0].slice(-4)).toEqual(["ssh-gate.sh", "close-unless", `${HOST_PATHS.stateDir}/ready`, `${HOST_PATHS.stateDir}/failed`]);
    expect(doc.runcmd.at(-1)).toEqual([`${HOST_PATHS.libDir}/bootstrap.sh`]);
  });

  // Found by a mutation review: only the scripts' mode was checked. A file of the host's setup that
  // another user may write (its settings, a unit, sshd's or apt's config, a script root runs) is
  // root's setup in that user's hands.
  it("gives no other user than root a host file to write, nor the archive they come in", () => {
    for (const [path, f] of files) expect(f.mode & 0o022, `${path}: ${f.mode.toString(8)}`).toBe(0);
    expect(doc.write_files).toEqual([expect.objectContaining({ path: HOST_FILES_ARCHIVE, permissions: "0600" })]);
  });

  it("ships every host script, executable, and the settings they read", () => {
    const paths = [...files].filter(([, f]) => f.mode === 0o755).map(([path]) => path);
    expect(paths.sort()).toEqual(hostScriptNames().map((n) => `${HOST_PATHS.libDir}/${n}`).sort());
    const env = files.get(HOST_PATHS.envFile)!.content;
    expect(env).toBe(
      "TENANT='acme'\nSTATE_DIR='/var/lib/gpu-sandbox'\nDATA_DIR='/mnt/gpu-sandbox'\n" +
      "VOLUME_DEVICE='/dev/disk/by-id/scsi-0Linode_Volume_gs-acme-data'\nNVIDIA_DRIVER_BRANCH='580'\n",
    );
  });
});

describe("host scripts", () => {
  const dir = new URL("host/", TEMPLATES_DIR).pathname;

  it.each(hostScriptNames())("%s passes shellcheck", (name) => {
    const result = runTool("shellcheck", ["-x", "-P", dir, `${dir}${name}`]);
    expect(result.output).toBe("");
    expect(result.status).toBe(0);
  });

  it("shellcheck fails a script with a real bug (the check can fail)", () => {
    const result = runTool("shellcheck", [writeTemp("bad.sh", '#!/usr/bin/env bash\nrm -rf $DIR/*\n')]);
    expect(result.status).not.toBe(0);
    expect(result.output).toContain("SC2086");
  });
});

describe("the SSH gate run at every boot", () => {
  /** Runs the bootcmd as cloud-init does, with iptables and ip6tables replaced by a recorder. */
  function boot(markers: string[]): string[] {
    const dir = mkdtempSync(join(tmpdir(), "gate-"));
    const calls = join(dir, "calls");
    for (const tool of ["iptables", "ip6tables"]) {
      const fake = join(dir, tool);
      // -D fails (no rule to delete), so the gate's delete loop ends; everything else is recorded.
      writeFileSync(fake, `#!/bin/sh\necho "${tool} $*" >> "${calls}"\n[ "$1" != -D ]\n`);
      chmodSync(fake, 0o755);
    }
    for (const m of markers) writeFileSync(join(dir, m), "");
    const [, , script, ...args] = parse(cloudInit).bootcmd[0] as string[];
    const stateArgs = args.map((a) => a.replace(HOST_PATHS.stateDir, dir));
    const r = spawnSync("bash", ["-c", script!, ...stateArgs], { env: { ...process.env, PATH: `${dir}:${process.env.PATH}` }, encoding: "utf8" });
    expect(r.status, r.stderr).toBe(0);
    return existsSync(calls) ? readFileSync(calls, "utf8").trim().split("\n").filter((l) => !l.includes(" -D ")) : [];
  }

  it("closes SSH while setup is under way, and leaves it open on a ready host and on one whose setup failed", () => {
    expect(boot([])).toEqual([
      "iptables -I INPUT -p tcp --dport 22 -m comment --comment gpu-sandbox-bootstrap -j DROP",
      "ip6tables -I INPUT -p tcp --dport 22 -m comment --comment gpu-sandbox-bootstrap -j DROP",
    ]);
    expect(boot(["ready"])).toEqual([]);
    // A reboot after a failed setup (by hand, or Linode maintenance) must not lock the operator out.
    expect(boot(["failed"])).toEqual([]);
  });
});

// Found by a mutation review: neither was pinned.
describe("the host files' archive and their first use", () => {
  it("keeps every file when one fills its last 512-byte block exactly (a zero block there ends the archive for tar)", () => {
    const files = [
      { path: "/etc/a/full.conf", mode: 0o644, content: "x".repeat(1024) },
      { path: "/etc/a/after.sh", mode: 0o755, content: "echo after\n" },
    ];
    const archive = join(mkdtempSync(join(tmpdir(), "tar-")), "a.tar.gz");
    writeFileSync(archive, Buffer.from(encodeHostFiles(files), "base64"));
    const listed = runTool("tar", ["-tzvf", archive]);
    expect(listed.status, listed.output).toBe(0);
    expect(listed.output).not.toMatch(/lone zero block/i);
    expect(listed.output.trim().split("\n").map((l) => l.split(/\s+/).at(-1))).toEqual(["etc/a/full.conf", "etc/a/after.sh"]);
  });

  it("reloads sshd after unpacking its hardening and before the bootstrap, so password and root logins are off from the first boot", () => {
    const doc = parse(renderCloudInit(input));
    const at = (cmd: string[]) => doc.runcmd.findIndex((c: string[]) => JSON.stringify(c) === JSON.stringify(cmd));
    const reload = at(["systemctl", "try-reload-or-restart", "ssh"]);
    expect(reload).toBeGreaterThan(doc.runcmd.findIndex((c: string[]) => c[0] === "tar"));
    expect(reload).toBeLessThan(at([`${HOST_PATHS.libDir}/bootstrap.sh`]));
  });
});
