import { parse } from "yaml";
import { describe, expect, it } from "vitest";
import { HOST_PATHS, volumeDevicePath } from "../../infra/host.ts";
import { hostScriptNames, renderCloudInit } from "../../infra/render/cloud-init.ts";
import { TEMPLATES_DIR } from "../../infra/render/template.ts";
import { runTool, writeTemp } from "../support/tools.ts";

const cloudInit = renderCloudInit({ tenant: "acme", volumeDevice: volumeDevicePath("gs-acme-data") });

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

  const doc = parse(cloudInit);

  it("turns off SSH passwords and installs security updates unattended, without reboots", () => {
    expect(doc.ssh_pwauth).toBe(false);
    const file = (path: string) => doc.write_files.find((f: { path: string }) => f.path === path)?.content as string;
    expect(file("/etc/ssh/sshd_config.d/60-gpu-sandbox.conf")).toMatch(/^PasswordAuthentication no$/m);
    expect(file("/etc/ssh/sshd_config.d/60-gpu-sandbox.conf")).toMatch(/^PermitRootLogin prohibit-password$/m);
    const upgrades = file("/etc/apt/apt.conf.d/52gpu-sandbox-unattended-upgrades");
    expect(upgrades).toContain('APT::Periodic::Unattended-Upgrade "1";');
    expect(upgrades).toContain('Unattended-Upgrade::Automatic-Reboot "false";');
    expect(doc.packages).toContain("unattended-upgrades");
  });

  it("reboots only when the driver asked for it", () => {
    expect(doc.power_state).toMatchObject({ mode: "reboot", condition: ["test", "-f", `${HOST_PATHS.stateDir}/reboot-required`] });
  });

  it("closes SSH on every boot until the host is ready, then runs the bootstrap", () => {
    expect(doc.bootcmd[0].slice(-3)).toEqual(["ssh-gate.sh", "close-unless", `${HOST_PATHS.stateDir}/ready`]);
    expect(doc.runcmd.at(-1)).toEqual([`${HOST_PATHS.libDir}/bootstrap.sh`]);
  });

  it("ships every host script, executable, and the settings they read", () => {
    const paths = doc.write_files.filter((f: { permissions: string }) => f.permissions === "0755").map((f: { path: string }) => f.path);
    expect(paths.sort()).toEqual(hostScriptNames().map((n) => `${HOST_PATHS.libDir}/${n}`).sort());
    const env = doc.write_files.find((f: { path: string }) => f.path === HOST_PATHS.envFile).content;
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
