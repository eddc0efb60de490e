// The Pulumi program (Pulumi.yaml: main: infra/). Node 24 runs this TypeScript directly.
// Config is read and validated before any resource exists; the only stack outputs are here.
import { loadConfig } from "./config.ts";
import { deployTenant } from "./tenant.ts";

const tenant = deployTenant(loadConfig());

export const region = tenant.region;
export const plan = tenant.plan;
export const gpu = tenant.gpu;
export const ip = tenant.ip;
export const ipv6 = tenant.ipv6;
export const sshCommand = tenant.sshCommand;
export const hostKey = tenant.hostKey;
export const sshPrivateKey = tenant.sshPrivateKey;
export const rootPassword = tenant.rootPassword;
export const hourlyCostUsd = tenant.hourlyCostUsd;
export const monthlyCostUsd = tenant.monthlyCostUsd;
export const createdAt = tenant.createdAt;
export const expiresAt = tenant.expiresAt;
export const endpoint = tenant.endpoint;
export const apiKeys = tenant.apiKeys;
export const adminToken = tenant.adminToken;
export const caCertificate = tenant.caCertificate;
export const bundleHash = tenant.bundleHash;
// Read by the scripts (scripts/lib/pulumi.ts endpointOf): false means nothing serves at the
// endpoint yet, so reap-expired has no usage to save and destroys the host.
export const servingDeployed = tenant.servingDeployed;
