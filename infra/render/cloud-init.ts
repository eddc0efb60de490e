import { readdirSync } from "node:fs";
import { gzipSync } from "fflate";
import { stringify } from "yaml";
import { HOST_PATHS, NVIDIA_DRIVER_BRANCH, resourceNames, volumeDevicePath } from "../host.ts";
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
  owner?: string;
}

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
 * The instance's cloud-init user data. Depends only on the tenant's name (through the volume
 * label), never on secrets or on serving config, so model or key changes never replace the
 * instance: they travel in the serving bundle instead.
 */
export function renderCloudInit(input: CloudInitInput): string {
  const doc = readYamlTemplate<CloudConfig>("cloud-init.yaml");
  const readyMarker = `${HOST_PATHS.stateDir}/ready`;
  const hostEnv = {
    TENANT: input.tenant,
    STATE_DIR: HOST_PATHS.stateDir,
    DATA_DIR: HOST_PATHS.dataDir,
    VOLUME_DEVICE: input.volumeDevice,
    NVIDIA_DRIVER_BRANCH,
  };

  // bootcmd runs on every boot, before write_files, so the gate's script is inlined here.
  doc.bootcmd = [["bash", "-c", readTemplate("host/ssh-gate.sh"), "ssh-gate.sh", "close-unless", readyMarker, `${HOST_PATHS.stateDir}/failed`]];
  doc.write_files = [
    { path: HOST_PATHS.envFile, permissions: "0644", content: toEnvFile(hostEnv) },
    ...hostScriptNames().map((name) => ({
      path: `${HOST_PATHS.libDir}/${name}`,
      permissions: "0755",
      content: readTemplate(`host/${name}`),
    })),
    {
      path: "/etc/systemd/system/gpu-sandbox-finish.service",
      permissions: "0644",
      content: fillTemplateFile("host/gpu-sandbox-finish.service", { libDir: HOST_PATHS.libDir }),
    },
    { path: "/etc/ssh/sshd_config.d/60-gpu-sandbox.conf", permissions: "0644", content: readTemplate("host/sshd-hardening.conf") },
    { path: "/etc/apt/apt.conf.d/52gpu-sandbox-unattended-upgrades", permissions: "0644", content: readTemplate("host/unattended-upgrades.conf") },
  ];
  doc.runcmd = [
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
 * Cloud-config as the Linode Metadata service takes it: base64 of gzip. cloud-init decompresses
 * gzip user data by itself; compressing keeps the scripts (kept readable, with comments, for
 * whoever debugs the host) far below any user-data size limit.
 *
 * The bytes must not depend on the machine that runs `pulumi up`: user data forces a new
 * instance, so a different encoding of the same config would rebuild the host (new IP, new
 * endpoint, 15–30 minutes down). Node's zlib writes its build's OS into the gzip header (3 on
 * Linux, 19 on macOS) and Chromium's zlib, which Node ships, may choose other matches with the
 * CPU's SIMD hashing. fflate is plain JavaScript pinned to one version (an exact version in
 * package.json): the same input always gives the same bytes, with no timestamp (mtime 0) and a
 * fixed OS byte.
 */
export function encodeUserData(cloudConfig: string): string {
  return Buffer.from(gzipSync(Buffer.from(cloudConfig, "utf8"), { level: 9, mtime: 0 })).toString("base64");
}
