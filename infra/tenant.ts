import * as pulumi from "@pulumi/pulumi";
import { GpuHost } from "./components/gpu-host.ts";
import { ServingStack } from "./components/serving-stack.ts";
import type { TenantConfig } from "./config.ts";
import { configWarnings } from "./plan.ts";
import { SSH_CLOSED, sshLoginCommand } from "./host.ts";

/** The host's outputs, as GpuHost documents them. */
type HostOutputs = Pick<GpuHost, "ip" | "ipv6" | "sshPrivateKey" | "rootPassword" | "hourlyCostUsd" | "monthlyCostUsd" | "createdAt" | "expiresAt">;

/** Everything `pulumi stack output` shows for a tenant. */
export interface TenantOutputs extends HostOutputs {
  readonly tenant: string;
  readonly region: string;
  readonly plan: string;
  readonly gpu: string;
  /** How to log in as root, checking the host's recorded SSH key, or why one cannot (no adminCidrs). */
  readonly sshCommand: pulumi.Output<string>;
  /** The host's SSH key ("<type> <base64>") recorded at the first login; undefined without adminCidrs. */
  readonly hostKey: pulumi.Output<string | undefined>;
  /** The OpenAI base URL (without adminCidrs, where a host deployed before serves). */
  readonly endpoint: pulumi.Output<string>;
  /** Bootstrap keys by name. Secret. */
  readonly apiKeys: pulumi.Output<Record<string, string>>;
  /** Bearer token for /admin. Secret. */
  readonly adminToken: pulumi.Output<string | undefined>;
  /** The CA to trust for tls.mode self-signed. */
  readonly caCertificate: pulumi.Output<string | undefined>;
  readonly bundleHash: pulumi.Output<string | undefined>;
  /** Whether the serving stack was ever deployed (false: nothing serves at the endpoint yet). */
  readonly servingDeployed: pulumi.Output<boolean>;
}

export interface DeployOptions {
  /** Where the serving bundle is staged before it is copied. Defaults to out/<tenant>/deploy. */
  readonly stagingDir?: string;
}

/**
 * The whole program for one tenant, from validated config. infra/index.ts calls it with the
 * stack's config; tests call it under Pulumi's mock runtime with each stack in stacks/.
 */
export function deployTenant(config: TenantConfig, options: DeployOptions = {}): TenantOutputs {
  const host = new GpuHost(config.tenant, config);
  // Always built, so that its secrets and keys outlive a spell without adminCidrs; it deploys
  // over SSH only when adminCidrs lets it through the firewall.
  const serving = new ServingStack(config.tenant, {
    config, ip: host.ip, sshPrivateKey: host.sshPrivateKey, instanceId: host.instance.id, volume: host.volume, ...(options.stagingDir ? { stagingDir: options.stagingDir } : {}),
  });
  const deployed = config.adminCidrs.length > 0;
  for (const warning of configWarnings(config)) pulumi.log.warn(`gpu-sandbox:${warning}.`);
  if (!deployed) {
    pulumi.log.warn("gpu-sandbox:adminCidrs is empty, so SSH is closed and the serving stack is not deployed or updated " +
      "(a host deployed before keeps serving as it was, with the same keys). " +
      "Add your public address (`curl -4s https://ifconfig.me`, as a /32) to gpu-sandbox:adminCidrs and run `pulumi up` again.");
  }
  return {
    tenant: config.tenant,
    region: config.region,
    plan: config.plan.id,
    gpu: `${config.plan.gpuCount} x ${config.plan.gpu} (${config.plan.vramGbPerGpu} GB)`,
    ip: host.ip,
    ipv6: host.ipv6,
    sshCommand: deployed
      ? pulumi.all([host.ip, serving.hostKey]).apply(([ip, hostKey]) => sshLoginCommand(config.tenant, pulumi.getStack(), ip, hostKey ?? ""))
      : pulumi.output(SSH_CLOSED),
    hostKey: serving.hostKey,
    sshPrivateKey: host.sshPrivateKey,
    rootPassword: host.rootPassword,
    hourlyCostUsd: host.hourlyCostUsd,
    monthlyCostUsd: host.monthlyCostUsd,
    createdAt: host.createdAt,
    expiresAt: host.expiresAt,
    // The address either way: a host deployed before adminCidrs were emptied still serves there
    // (and reap-expired must save its ledger from it); sshCommand says that SSH is closed.
    endpoint: serving.endpoint,
    apiKeys: serving.apiKeys,
    adminToken: serving.adminToken,
    caCertificate: serving.caCertificate,
    bundleHash: serving.bundleHash,
    servingDeployed: serving.servingDeployed,
  };
}
