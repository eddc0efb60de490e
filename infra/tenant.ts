import * as pulumi from "@pulumi/pulumi";
import { GpuHost } from "./components/gpu-host.ts";
import type { TenantConfig } from "./config.ts";

/** Everything `pulumi stack output` shows for a tenant. */
export interface TenantOutputs {
  readonly tenant: string;
  readonly region: string;
  readonly plan: string;
  readonly gpu: string;
  readonly ip: pulumi.Output<string>;
  readonly ipv6: pulumi.Output<string>;
  readonly sshCommand: pulumi.Output<string>;
  readonly sshPrivateKey: pulumi.Output<string>;
  readonly rootPassword: pulumi.Output<string>;
  readonly hourlyCostUsd: number;
  readonly monthlyCostUsd: number;
  readonly createdAt: pulumi.Output<string>;
  readonly expiresAt: pulumi.Output<string | undefined>;
}

/**
 * The whole program for one tenant, from validated config. infra/index.ts calls it with the
 * stack's config; tests call it under Pulumi's mock runtime with each stack in stacks/.
 */
export function deployTenant(config: TenantConfig): TenantOutputs {
  const host = new GpuHost(config.tenant, {
    tenant: config.tenant,
    region: config.region,
    plan: config.plan,
    image: config.image,
    allowedCidrs: config.allowedCidrs,
    adminCidrs: config.adminCidrs,
    volumeSizeGb: config.volumeSizeGb,
    ...(config.ttlHours !== undefined ? { ttlHours: config.ttlHours } : {}),
    tags: config.tags,
  });
  return {
    tenant: config.tenant,
    region: config.region,
    plan: config.plan.id,
    gpu: `${config.plan.gpuCount} x ${config.plan.gpu} (${config.plan.vramGbPerGpu} GB)`,
    ip: host.ip,
    ipv6: host.ipv6,
    sshCommand: host.sshCommand,
    sshPrivateKey: host.sshPrivateKey,
    rootPassword: host.rootPassword,
    hourlyCostUsd: host.hourlyCostUsd,
    monthlyCostUsd: host.monthlyCostUsd,
    createdAt: host.createdAt,
    expiresAt: host.expiresAt,
  };
}
