import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { sha256 } from "../../infra/render/bundle.ts";
import { hostScriptNames } from "../../infra/render/cloud-init.ts";
import { readTemplate } from "../../infra/render/template.ts";
import { tempDir } from "./tools.ts";

export interface ScriptRun {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
  /** Wall-clock time the script took, in seconds. */
  readonly seconds: number;
}

/**
 * Stand-ins for the programs a script runs, in `dir`: name → shell body. Each records its
 * arguments as a line "<name> <args>" in `calls` before running its body.
 */
export function writeStubs(dir: string, calls: string, stubs: Record<string, string>): void {
  mkdirSync(dir, { recursive: true });
  for (const [name, body] of Object.entries(stubs)) {
    writeFileSync(join(dir, name), `#!/bin/bash\necho "${name} $*" >> "${calls}"\n${body}\n`, { mode: 0o755 });
  }
}

/** Runs `bash <script> <args>` with `bin` first on PATH; `tty` runs it on a pseudo-terminal (script(1)). */
function runBash(bin: string, script: string, args: readonly string[], options: { tty?: boolean; env?: Record<string, string> } = {}): ScriptRun {
  const env = { ...process.env, PATH: `${bin}:${process.env.PATH}`, ...options.env };
  const quoted = [script, ...args].map((a) => `'${a.replaceAll("'", `'\\''`)}'`).join(" ");
  const started = Date.now();
  const r = options.tty
    ? spawnSync("script", ["-qefc", `bash ${quoted}`, "/dev/null"], { encoding: "utf8", env, timeout: 30_000 })
    : spawnSync("bash", [script, ...args], { encoding: "utf8", env, timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, seconds: (Date.now() - started) / 1000 };
}

/** Programs every host script finds working on a healthy GPU host. */
function healthyHostStubs(root: string): Record<string, string> {
  return {
    sleep: "", udevadm: "", logger: "", systemctl: "", "apt-get": "", curl: "", gpg: "", modprobe: "",
    lsmod: "", iptables: "exit 1", ip6tables: "exit 1", chown: "",
    mountpoint: `[ -f "${root}/mounted" ]`, mount: `touch "${root}/mounted"`,
    "mkfs.ext4": "", blkid: "exit 0",
    "nvidia-smi": `case "$*" in *driver_version*) echo 580.95.05;; *) echo "NVIDIA RTX 4000 Ada Generation";; esac`,
    "nvidia-ctk": "",
    docker: `case "$*" in "compose version") echo v2;; info*) echo '{"nvidia":{},"runc":{}}';; esac`,
  };
}

/**
 * A fake GPU host: the host scripts (templates/host/) in <root>/lib with their absolute paths
 * (host.env, the bootstrap log, fstab, the console, /proc/modules) moved into <root>, and stubs
 * for the programs they run in <root>/bin (`stubs` replaces the healthy defaults by name),
 * recording to <root>/calls. The volume's device is <root>/volume, a 2 MiB blank file.
 */
export function fakeHost(stubs: Record<string, string> = {}) {
  const root = tempDir("host-scripts-");
  const lib = join(root, "lib");
  const bin = join(root, "bin");
  mkdirSync(lib);
  for (const name of hostScriptNames()) {
    const text = readTemplate(`host/${name}`)
      .replaceAll("/etc/gpu-sandbox/host.env", join(root, "host.env"))
      .replaceAll("/var/log/gpu-sandbox-bootstrap.log", join(root, "bootstrap.log"))
      .replaceAll("/etc/fstab", join(root, "fstab"))
      .replaceAll("/dev/console", join(root, "console"))
      .replaceAll("/proc/modules", join(root, "modules"));
    writeFileSync(join(lib, name), text, { mode: 0o755 });
  }
  const setVolume = (device: string) =>
    writeFileSync(join(root, "host.env"),
      `TENANT='acme'\nSTATE_DIR='${root}/state'\nDATA_DIR='${root}/data'\nVOLUME_DEVICE='${device}'\nNVIDIA_DRIVER_BRANCH='580'\n`);
  setVolume(join(root, "volume"));
  writeFileSync(join(root, "volume"), Buffer.alloc(2 * 1024 * 1024)); // attached, blank
  writeFileSync(join(root, "fstab"), "");
  writeFileSync(join(root, "modules"), "");
  writeStubs(bin, join(root, "calls"), { ...healthyHostStubs(root), ...stubs });
  const read = (path: string) => (existsSync(join(root, path)) ? readFileSync(join(root, path), "utf8") : "");
  return {
    root,
    state: join(root, "state"),
    /** Runs templates/host/<script>; `tty`: on a terminal, as an operator over `ssh` would. */
    run: (script: string, args: string[] = [], options: { tty?: boolean } = {}) => runBash(bin, join(lib, script), args, options),
    read,
    setVolume,
  };
}

/**
 * The bundle's bin/ scripts (templates/bundle/bin/) installed in <root>/opt, with stubs in
 * <root>/bin recording to <root>/calls, and /etc/gpu-sandbox/host.env moved to <root>/host.env
 * (absent unless `hostEnv` is given). `stage` copies a new bundle to <root>/opt/.incoming/bundle
 * as `pulumi up` does (the bin/ scripts, `files`, their manifest); `runIncoming` runs its
 * deploy.sh as `pulumi up` then does.
 */
export function fakeBundle(stubs: Record<string, string>, hostEnv?: string) {
  const root = tempDir("bundle-scripts-");
  const dest = join(root, "opt");
  const bin = join(root, "bin");
  const incoming = join(dest, ".incoming", "bundle");
  const scripts = Object.fromEntries(["deploy.sh", "wait-ready.sh"].map((name) =>
    [`bin/${name}`, readTemplate(`bundle/bin/${name}`).replaceAll("/etc/gpu-sandbox/host.env", join(root, "host.env"))]));
  mkdirSync(join(dest, "bin"), { recursive: true });
  for (const [path, text] of Object.entries(scripts)) writeFileSync(join(dest, path), text);
  writeFileSync(join(dest, "MANIFEST.sha256"), "");
  if (hostEnv !== undefined) writeFileSync(join(root, "host.env"), hostEnv);
  writeStubs(bin, join(root, "calls"), stubs);
  const read = (path: string) => (existsSync(join(dest, path)) ? readFileSync(join(dest, path), "utf8") : undefined);
  return {
    root,
    dest,
    run: (script: string, args: string[]) => runBash(bin, join(dest, "bin", script), args),
    runIncoming: (args: string[]) => runBash(bin, join(incoming, "bin", "deploy.sh"), args),
    stage: (files: Record<string, string>) => {
      const all = { ...scripts, ...files };
      for (const [path, text] of Object.entries(all)) {
        mkdirSync(dirname(join(incoming, path)), { recursive: true });
        writeFileSync(join(incoming, path), text);
      }
      writeFileSync(join(incoming, "MANIFEST.sha256"),
        Object.keys(all).sort().map((path) => `${sha256(all[path]!)}  ${path}\n`).join(""));
    },
    /** A file of the installed bundle (under <root>/opt), undefined when there is none. */
    read,
    calls: () => (existsSync(join(root, "calls")) ? readFileSync(join(root, "calls"), "utf8") : ""),
  };
}
