// The host scripts (templates/host/) run on a fake host: stubs for the programs they call,
// their absolute paths moved into a temp directory (test/support/host-scripts.ts).
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { renderCloudInit } from "../../infra/render/cloud-init.ts";
import { unpackHostFiles } from "../support/host-files.ts";
import { fakeHost } from "../support/host-scripts.ts";
import { runTool, tempDir } from "../support/tools.ts";

describe("mount-volume.sh: a volume that may hold the ledger is never formatted", () => {
  /** A 64 MiB image holding an ext4 filesystem, as a volume reattached to a new instance. */
  /** A program's path (the fake host's stubs of the same name come first on its PATH). */
  const which = (program: string) =>
    spawnSync("bash", ["-c", `PATH="$PATH:/usr/sbin:/sbin" command -v ${program}`], { encoding: "utf8" }).stdout.trim();

  function ext4Image(): string {
    const image = join(tempDir("volume-"), "volume.img");
    expect(runTool("truncate", ["-s", "64M", image]).status).toBe(0);
    const made = runTool("mkfs.ext4", ["-q", "-L", "gpu-sandbox", image]);
    expect(made.status, made.output).toBe(0);
    return image;
  }

  /**
   * blkid with every read(2) of the device failing with EIO (attachment in progress, a storage
   * hiccup): the reads after the ones the dynamic loader makes, counted on a normal run.
   */
  function blkidWithEio(image: string): string {
    const trace = runTool("strace", ["-e", "trace=openat,read", "blkid", "-p", image]).output;
    const loaderReads = trace.slice(0, trace.indexOf(image)).split("\n").filter((l) => l.startsWith("read(")).length;
    return `exec strace -o /dev/null -e trace=read -e inject=read:error=EIO:when=${loaderReads + 1}+ ${which("blkid")} "$@"`;
  }

  it("does not format a volume holding ext4 whose reads fail, though blkid -p then exits 2 as for a blank one", () => {
    const image = ext4Image();
    const eio = blkidWithEio(image);
    expect(spawnSync("bash", ["-c", eio, "blkid", "-p", image]).status).toBe(2); // as for "no signature at all"

    const host = fakeHost({ blkid: eio, "mkfs.ext4": `exec ${which("mkfs.ext4")} "$@"` });
    host.setVolume(image);
    const r = host.run("mount-volume.sh");
    expect({ formatted: host.read("calls").includes("mkfs.ext4"), status: r.status }).toEqual({ formatted: false, status: 1 });
    expect(host.read("bootstrap.log")).toContain("not formatting it");
    expect(spawnSync("blkid", ["-p", image]).status).toBe(0); // the filesystem is still there
  });

  it("formats a blank volume (blkid -p finds nothing and its first MiB is zeros), then mounts it", () => {
    const host = fakeHost({ blkid: "exit 2" });
    const r = host.run("mount-volume.sh");
    expect(r.status, r.stderr).toBe(0);
    expect(host.read("calls")).toContain(`mkfs.ext4 -q -L gpu-sandbox ${host.root}/volume`);
    expect(host.read("fstab")).toContain(`${host.root}/volume ${host.root}/data ext4 `);
  });
});

describe("bootstrap.sh run by hand, as host.md and wait-host-ready.sh tell the operator to", () => {
  /** A host whose setup failed after the driver asked for a reboot, since rebooted by hand. */
  function hostAfterFailure(stubs: Record<string, string> = {}) {
    const host = fakeHost(stubs);
    mkdirSync(host.state);
    writeFileSync(join(host.state, "reboot-required"), "");
    writeFileSync(join(host.state, "failed"), "install-container-toolkit\n");
    return host;
  }

  it("shows its progress on the terminal and finishes a host whose driver already works, despite a leftover reboot marker", () => {
    const host = hostAfterFailure();
    const r = host.run("bootstrap.sh", [], { tty: true });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain("step install-nvidia: started");
    expect(r.stdout).toMatch(/bootstrap finished: the host is ready/);
    expect(existsSync(join(host.state, "reboot-required"))).toBe(false);
    expect(existsSync(join(host.state, "ready"))).toBe(true);
    const wait = host.run("wait-host-ready.sh", ["30"]);
    expect(wait.status).toBe(0);
    expect(wait.stdout).toContain("host ready: ready ");
  });

  it("says on the terminal that a reboot is needed when the driver cannot be loaded into the running kernel", () => {
    const host = hostAfterFailure({ "nvidia-smi": "exit 9" });
    const r = host.run("bootstrap.sh", [], { tty: true });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain("run `reboot` now");
    expect(host.read("calls")).toContain("systemctl enable gpu-sandbox-finish.service");
    expect(existsSync(join(host.state, "ready"))).toBe(false);
  });

  it("under cloud-init (no terminal) writes each line once, to the log, and nothing to its output", () => {
    const host = fakeHost();
    const r = host.run("bootstrap.sh");
    expect({ status: r.status, stdout: r.stdout, stderr: r.stderr }).toEqual({ status: 0, stdout: "", stderr: "" });
    const log = host.read("bootstrap.log");
    expect(log.match(/step install-nvidia: started/g)).toHaveLength(1);
    expect(log.match(/host ready: 1 GPU\(s\), NVIDIA driver 580\.95\.05/g)).toHaveLength(1);
  });
});

describe("finish.sh: a failed check says which one failed and what to do", () => {
  it("names the missing NVIDIA runtime in Docker, in the log, with FAILED logged once", () => {
    const host = fakeHost({ docker: `case "$*" in "compose version") echo v2;; info*) echo '{"runc":{}}';; esac` });
    const r = host.run("bootstrap.sh");
    expect(r.status).not.toBe(0);
    const log = host.read("bootstrap.log");
    expect(log).toContain("Docker has no NVIDIA runtime");
    expect(log).toContain("nvidia-ctk runtime configure --runtime=docker");
    expect(log.match(/FAILED at step 'finish'/g)).toHaveLength(1);
    expect(host.read("state/failed")).toBe("finish\n");
    expect(host.read("calls")).toContain("iptables -D INPUT"); // SSH opened for debugging
  });

  it("shows the cause on the terminal when run by hand", () => {
    const host = fakeHost({ docker: `case "$*" in "compose version") echo v2;; info*) echo '{"runc":{}}';; esac` });
    const r = host.run("bootstrap.sh", [], { tty: true });
    expect(r.status).not.toBe(0);
    expect(r.stdout).toContain("Docker has no NVIDIA runtime");
  });

  it("keeps nvidia-smi's error and says the GPU is not visible, when the driver does not see it after the reboot", () => {
    const host = fakeHost();
    writeFileSync(join(host.root, "bin", "nvidia-smi"), `#!/bin/bash\necho "No devices were found" >&2; exit 6\n`);
    mkdirSync(host.state);
    writeFileSync(join(host.state, "reboot-required"), "");
    const r = host.run("finish.sh"); // as gpu-sandbox-finish.service runs it, its output appended to the log
    expect(r.status).not.toBe(0);
    const log = host.read("bootstrap.log") + r.stdout + r.stderr;
    expect(log).toContain("No devices were found");
    expect(host.read("bootstrap.log")).toContain("nvidia-smi sees no GPU");
    expect(host.read("bootstrap.log")).toContain("FAILED at step 'finish'");
  });

  it("runs after the reboot with its output appended to the bootstrap log", () => {
    const unit = unpackHostFiles(renderCloudInit({ tenant: "acme", volumeDevice: "/dev/sdc" })).get("/etc/systemd/system/gpu-sandbox-finish.service")!.content;
    expect(unit).toMatch(/^StandardOutput=append:\/var\/log\/gpu-sandbox-bootstrap\.log$/m);
    expect(unit).toMatch(/^StandardError=inherit$/m);
  });
});

describe("install-nvidia.sh: unloading nouveau", () => {
  it("unloads a loaded nouveau, which lsmod | grep -q could miss by SIGPIPE under pipefail", () => {
    const host = fakeHost({
      // A long module list with nouveau first: grep -q exits at once, lsmod gets SIGPIPE.
      lsmod: `echo "Module                  Size  Used by"; echo "nouveau              2899968  0"; for i in $(seq 1 400); do echo "mod_$i 16384 0 holder_a,holder_b"; done`,
      modprobe: `case "$*" in "-r nouveau") touch "$(dirname "$0")/../nouveau-gone";; esac`,
      "nvidia-smi": `[ -f "$(dirname "$0")/../nouveau-gone" ] && [ -f "$(dirname "$0")/../installed" ] || exit 9`,
      "apt-get": `touch "$(dirname "$0")/../installed"`,
    });
    writeFileSync(join(host.root, "modules"), "nouveau 2899968 0 - Live 0x0000000000000000\nvideo 73728 1 nouveau, Live 0x0000000000000000\n");
    const r = host.run("install-nvidia.sh");
    expect(r.status, r.stderr).toBe(0);
    expect(host.read("calls")).toContain("modprobe -r nouveau");
    expect(existsSync(join(host.state, "reboot-required"))).toBe(false);
  });

  it("leaves modules alone when nouveau is not loaded (a module named nouveau_something is not it)", () => {
    const host = fakeHost({ "nvidia-smi": `[ -f "$(dirname "$0")/../installed" ] || exit 9`, "apt-get": `touch "$(dirname "$0")/../installed"` });
    writeFileSync(join(host.root, "modules"), "nouveau_something 16384 0 - Live 0x0000000000000000\n");
    expect(host.run("install-nvidia.sh").status).toBe(0);
    expect(host.read("calls")).not.toContain("modprobe -r nouveau");
  });
});

describe("install-certificate.sh on a host whose volume is not mounted", () => {
  it("refuses, as deploy.sh does, rather than write the certificate on the root disk (Pulumi would record it as installed)", () => {
    const host = fakeHost({ mountpoint: "exit 1" });
    mkdirSync(join(host.root, "data")); // the mount point's empty directory, on the root disk
    const pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";
    const r = spawnSync("bash", [join(host.root, "lib", "install-certificate.sh"), "replace"], {
      input: pem, encoding: "utf8", env: { ...process.env, PATH: `${join(host.root, "bin")}:${process.env.PATH}` },
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`the volume is not mounted at ${join(host.root, "data")}`);
    expect(existsSync(join(host.root, "data", "tls", "fullchain.pem"))).toBe(false);
  });
});

describe("the volume's fstab entry, as systemd reads it at boot", () => {
  const GENERATOR = "/lib/systemd/system-generators/systemd-fstab-generator";

  it("makes Docker require the mount, so the containers' restart at boot never runs on the root disk when the volume is missing", () => {
    if (!existsSync(GENERATOR)) throw new Error(`${GENERATOR} is not installed: apt-get install systemd (.ci/run installs it)`);
    const host = fakeHost();
    expect(host.run("mount-volume.sh").status).toBe(0);
    const out = tempDir("fstab-generator-");
    for (const d of ["normal", "early", "late"]) mkdirSync(join(out, d));
    const r = runTool("env", [`SYSTEMD_FSTAB=${join(host.root, "fstab")}`, GENERATOR, ...["normal", "early", "late"].map((d) => join(out, d))]);
    expect(r.status, r.output).toBe(0);
    const requires = join(out, "normal", "docker.service.requires");
    expect(existsSync(requires)).toBe(true);
    const [unit] = readdirSync(requires);
    expect(readFileSync(join(requires, unit!), "utf8")).toContain(`Where=${host.root}/data`);
    expect(readFileSync(join(requires, unit!), "utf8")).toMatch(/^Before=docker\.service$/m);
    expect(readFileSync(join(requires, unit!), "utf8")).toMatch(/^Options=.*\bnofail\b/m); // the boot itself never waits on it
  });
});
