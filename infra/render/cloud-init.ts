import { readdirSync } from "node:fs";
import { gzipSync } from "fflate";
import { stringify } from "yaml";
import { HOST_PATHS, NVIDIA_DRIVER_BRANCH, resourceNames, volumeDevicePath } from "../host.ts";
import { tarArchive, type TarFile } from "./tar.ts";
import { fillTemplateFile, readTemplate, readYamlTemplate, TEMPLATES_DIR } from "./template.ts";

export interface CloudInitInput {
  readonly tenant: string;
  /** The volume's by-id device path (known from its label before the volume exists). */
  readonly volumeDevice: string;
}

interface WriteFile {
  path: string;
  content: string;
  permissions: string;
  encoding?: "b64";
}

/** A file the host gets from its user data: an absolute path, its text and its mode. */
export type HostFile = TarFile;

/**
 * Where the archive of the host's files is written before `runcmd` unpacks it into `/`. Kept
 * afterwards: it is what the host was given, for whoever debugs it.
 */
export const HOST_FILES_ARCHIVE = `${HOST_PATHS.stateDir}/host-files.tar.gz`;

/**
 * Linode refuses user data larger than this once base64-decoded ("decoded user_data must not
 * exceed 16384 bytes").
 */
export const USER_DATA_LIMIT_BYTES = 16_384;

interface CloudConfig {
  bootcmd: unknown[];
  write_files: WriteFile[];
  runcmd: unknown[];
  power_state: { condition: unknown };
  [key: string]: unknown;
}

/** The host's bootstrap scripts: every `.sh` in templates/host/. */
export function hostScriptNames(): string[] {
  return readdirSync(new URL("host/", TEMPLATES_DIR)).filter((f) => f.endsWith(".sh")).sort();
}

/** The user data of a tenant's host: its volume found by the label the program gives it. */
export function hostCloudInit(tenant: string): string {
  return renderCloudInit({ tenant, volumeDevice: volumeDevicePath(resourceNames(tenant).volume) });
}

/**
 * The files the host's setup needs: the settings the scripts read, the scripts, the unit that
 * finishes setup after a reboot, SSH hardening and unattended upgrades.
 */
export function hostFiles(input: CloudInitInput): HostFile[] {
  const hostEnv = {
    TENANT: input.tenant,
    STATE_DIR: HOST_PATHS.stateDir,
    DATA_DIR: HOST_PATHS.dataDir,
    VOLUME_DEVICE: input.volumeDevice,
    NVIDIA_DRIVER_BRANCH,
  };
  return [
    { path: HOST_PATHS.envFile, mode: 0o644, content: toEnvFile(hostEnv) },
    ...hostScriptNames().map((name) => ({ path: `${HOST_PATHS.libDir}/${name}`, mode: 0o755, content: readTemplate(`host/${name}`) })),
    {
      path: "/etc/systemd/system/gpu-sandbox-finish.service",
      mode: 0o644,
      content: fillTemplateFile("host/gpu-sandbox-finish.service", { libDir: HOST_PATHS.libDir }),
    },
    { path: "/etc/ssh/sshd_config.d/60-gpu-sandbox.conf", mode: 0o644, content: readTemplate("host/sshd-hardening.conf") },
    { path: "/etc/apt/apt.conf.d/52gpu-sandbox-unattended-upgrades", mode: 0o644, content: readTemplate("host/unattended-upgrades.conf") },
  ];
}

/**
 * The instance's cloud-init user data. Depends only on the tenant's name (through the volume
 * label), never on secrets or on serving config, so model or key changes never replace the
 * instance: they travel in the serving bundle instead.
 *
 * The host's files travel as one gzipped tar in `write_files`, unpacked by the first `runcmd`.
 * The document itself must stay plain text: cloud-init's Akamai datasource decodes user data
 * as UTF-8 text (canonical/cloud-init PR #5751, still open, would let it take gzip), so gzipped
 * user data leaves a Linode host with none at all. Uncompressed, the scripts (kept readable,
 * with comments, for whoever debugs the host) would pass Linode's 16 KB limit; compressed
 * inside, the document is about three quarters of it (12.6 KB: under 4 KB to spare).
 */
export function renderCloudInit(input: CloudInitInput): string {
  const doc = readYamlTemplate<CloudConfig>("cloud-init.yaml");
  const readyMarker = `${HOST_PATHS.stateDir}/ready`;

  // bootcmd runs on every boot, before write_files, so the gate's script is inlined here.
  doc.bootcmd = [["bash", "-c", readTemplate("host/ssh-gate.sh"), "ssh-gate.sh", "close-unless", readyMarker, `${HOST_PATHS.stateDir}/failed`]];
  doc.write_files = [{ path: HOST_FILES_ARCHIVE, permissions: "0600", encoding: "b64", content: encodeHostFiles(hostFiles(input)) }];
  doc.runcmd = [
    // -m: the files' times are the extraction's (the archive holds none); owned by root.
    ["tar", "-xzmf", HOST_FILES_ARCHIVE, "-C", "/", "--no-same-owner"],
    ["systemctl", "try-reload-or-restart", "ssh"],
    [`${HOST_PATHS.libDir}/bootstrap.sh`],
  ];
  // Reboot only when the driver could not be loaded into the running kernel.
  doc.power_state.condition = ["test", "-f", `${HOST_PATHS.stateDir}/reboot-required`];

  return `#cloud-config\n# gpu-sandbox host for tenant ${input.tenant}. Rendered from templates/cloud-init.yaml; no secrets.\n${stringify(doc, { lineWidth: 0 })}`;
}

/** KEY='value' lines that `.` in bash reads back exactly. */
function toEnvFile(values: Readonly<Record<string, string>>): string {
  return Object.entries(values)
    .map(([k, v]) => `${k}='${v.replaceAll("'", `'\\''`)}'`)
    .join("\n") + "\n";
}

/**
 * The host's files as base64 of a gzipped tar.
 *
 * The bytes must not depend on the machine that runs `pulumi up`: user data forces a new
 * instance, so a different encoding of the same files would rebuild the host (new IP, new
 * endpoint, 15–30 minutes down). The tar holds no times or owner names (tar.ts). Node's zlib
 * writes its build's OS into the gzip header (3 on Linux, 19 on macOS) and Chromium's zlib,
 * which Node ships, may choose other matches with the CPU's SIMD hashing. fflate is plain
 * JavaScript pinned to one version (an exact version in package.json): the same input always
 * gives the same bytes, with no timestamp (mtime 0) and a fixed OS byte.
 */
export function encodeHostFiles(files: readonly HostFile[]): string {
  return Buffer.from(gzipSync(tarArchive(files), { level: 9, mtime: 0 })).toString("base64");
}

/** Cloud-config as the Linode Metadata service takes it: base64 of the text, within its limit. */
export function encodeUserData(cloudConfig: string): string {
  const bytes = Buffer.from(cloudConfig, "utf8");
  if (bytes.length > USER_DATA_LIMIT_BYTES) {
    throw new Error(`cloud-init user data is ${bytes.length} bytes; Linode takes at most ${USER_DATA_LIMIT_BYTES}. Shorten templates/host/ or templates/cloud-init.yaml.`);
  }
  return bytes.toString("base64");
}
