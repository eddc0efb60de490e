import { isoSeconds } from "../api-shim/src/requests/period.ts";
import { coveredBy, isIPv6Cidr } from "./config/addresses.ts";
import type { TlsMode } from "./config/types.ts";

/**
 * Where things live on the tenant's host, and what its Linode resources are called. One place,
 * so cloud-init, the host scripts (through host.env), the compose bundle and the deployment
 * commands agree.
 */
export const HOST_PATHS = {
  /** The bootstrap scripts (templates/host/*.sh). */
  libDir: "/usr/local/lib/gpu-sandbox",
  /** Settings for the bootstrap scripts, written by cloud-init. */
  envFile: "/etc/gpu-sandbox/host.env",
  /** Markers: ready, failed, reboot-required. */
  stateDir: "/var/lib/gpu-sandbox",
  /** The Block Storage Volume: model weights, the shim's ledger, certificates. */
  dataDir: "/mnt/gpu-sandbox",
  /** The serving bundle (compose file and configs), as in the Linode AI sandbox's /opt layout. */
  bundleDir: "/opt/gpu-sandbox",
} as const;

/**
 * The NVIDIA server driver branch: the open kernel module of this branch supports every GPU
 * family in the catalog (Turing, Ada and Blackwell) and CUDA 13.0 images, which vLLM's are from
 * 0.29 on (the default, 0.33.0, included; 0.30 and later need this branch or a newer one). An image
 * built on a later CUDA 13 minor (nvidia/cuda sets NVIDIA_REQUIRE_CUDA) would need a newer branch.
 */
export const NVIDIA_DRIVER_BRANCH = "580";

export interface ResourceNames {
  readonly instance: string;
  readonly firewall: string;
  readonly volume: string;
}

/** Linode labels for a tenant; the tenant name is validated to keep them within Linode's limits. */
export function resourceNames(tenant: string): ResourceNames {
  return { instance: `gs-${tenant}`, firewall: `gs-${tenant}-fw`, volume: `gs-${tenant}-data` };
}

/** The tag on every Linode resource the kit makes: `list-tenants --linode` finds them by it. */
export const KIT_TAG = "gpu-sandbox";
/** The tag naming the tenant a resource is for: `tenant:<tenant>`. */
export const TENANT_TAG_PREFIX = "tenant:";

/** The tags the kit puts on a tenant's instance, volume and firewall (before the stack's own `tags`). */
export function kitTags(tenant: string): string[] {
  return [KIT_TAG, `${TENANT_TAG_PREFIX}${tenant}`];
}

/** The stable device path Linode gives a Block Storage Volume with this label. */
export function volumeDevicePath(volumeLabel: string): string {
  return `/dev/disk/by-id/scsi-0Linode_Volume_${volumeLabel}`;
}

/**
 * The host's creation time is kept in state by a resource whose name ends so; the operator
 * scripts find it there for a stack whose first `pulumi up` failed before writing outputs.
 */
export const CREATED_AT_SUFFIX = "-created-at";

/** When a host created at `createdAt` (ISO 8601) expires after `ttlHours`: ISO 8601, to the second. */
export function hostExpiry(createdAt: string, ttlHours: number): string {
  return isoSeconds(Date.parse(createdAt) + ttlHours * 3_600_000);
}

/**
 * The ports the host serves clients on, by TLS mode: with TLS, 80 (ACME challenges with Let's
 * Encrypt, and the redirect to HTTPS) and 443; without, nginx listens on 80 alone, so 443 is not
 * opened for nothing. The firewall and the plan `npm run render` prints both come from here.
 */
function webPorts(tlsMode: TlsMode): { port: number; purpose: string; api: boolean }[] {
  if (tlsMode === "off") return [{ port: 80, purpose: "HTTP: the OpenAI-compatible API (tls.mode off: no TLS)", api: true }];
  return [
    { port: 80, purpose: tlsMode === "letsencrypt" ? "HTTP: ACME challenge and redirect to HTTPS" : "HTTP: redirect to HTTPS", api: false },
    { port: 443, purpose: "HTTPS: the OpenAI-compatible API", api: true },
  ];
}

/**
 * Who the firewall lets reach each web port: allowedCidrs, and on the port that serves the API
 * (and /admin) also the adminCidrs entries allowedCidrs does not cover, so the operator's machine
 * reaches /admin from outside allowedCidrs; nginx keeps those to /admin and /metrics ($api_client
 * in templates/nginx/nginx.conf). IPv6 entries are left out: nginx sees IPv6 clients as Docker's
 * gateway, so they could never reach /admin, only the API.
 */
export function webPortSources(tlsMode: TlsMode, allowedCidrs: readonly string[], adminCidrs: readonly string[]): { port: number; purpose: string; sources: string[] }[] {
  const adminOnly = adminCidrs.filter((cidr) => !isIPv6Cidr(cidr) && !coveredBy(cidr, allowedCidrs));
  return webPorts(tlsMode).map(({ port, purpose, api }) => (api && adminOnly.length > 0
    ? { port, purpose: `${purpose} (${adminOnly.join(", ")}: /admin and /metrics only)`, sources: [...allowedCidrs, ...adminOnly] }
    : { port, purpose, sources: [...allowedCidrs] }));
}

/** The `sshCommand` output of a host without adminCidrs (scripts read it to tell SSH is closed). */
export const SSH_CLOSED = "SSH is closed: set gpu-sandbox:adminCidrs to open port 22 to your address";

/**
 * The `sshCommand` output of a host SSH is open to: writes the root key (created private by the
 * umask, never readable by others even for a moment) and the host's recorded SSH key beside it,
 * then logs in checking the host against that key alone. `hostKey` is "<type> <base64>", as
 * record-host-key.sh prints it (no quote can be in it).
 */
export function sshLoginCommand(tenant: string, stack: string, ip: string, hostKey: string): string {
  const key = `gs-${tenant}.key`;
  const knownHosts = `gs-${tenant}.known_hosts`;
  return `(umask 077 && pulumi stack output sshPrivateKey --show-secrets --stack ${stack} > ${key}) && ` +
    `printf '%s\\n' '${ip} ${hostKey}' > ${knownHosts} && ` +
    `ssh -i ${key} -o UserKnownHostsFile=${knownHosts} -o StrictHostKeyChecking=yes root@${ip}`;
}
