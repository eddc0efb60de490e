import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { stringify } from "yaml";
import { tempDir } from "../support/tools.ts";
import { FakePulumi, type FakeStack } from "./fake-pulumi.ts";

/** The moment the fixtures are read at. */
export const NOW = new Date("2026-03-01T12:00:00Z");

const config = (region: string, plan: string, extra: Record<string, unknown> = {}) => ({
  config: { "gpu-sandbox:region": region, "gpu-sandbox:plan": plan, "gpu-sandbox:adminCidrs": ["81.2.69.160/32"], ...extra },
});

/** Outputs shaped as infra/index.ts exports them. */
const deployed = (tenant: string, region: string, plan: string, gpu: string, hourly: number, expiresAt?: string): Record<string, unknown> => ({
  region, plan, gpu, ip: "203.0.113.9", ipv6: "2001:db8::9", sshCommand: "ssh root@203.0.113.9",
  sshPrivateKey: "-----BEGIN OPENSSH PRIVATE KEY-----", rootPassword: "pw", hourlyCostUsd: hourly, monthlyCostUsd: 360,
  createdAt: "2026-02-28T10:00:00Z", ...(expiresAt ? { expiresAt } : {}),
  endpoint: `https://${tenant}.example.test/v1`, apiKeys: { app: "sk-gs-x" }, adminToken: "admin-x", bundleHash: "abc",
});

/**
 * Stack files and fake outputs covering every case list-tenants and reap-expired tell apart:
 * expired (two, one long ago), not yet expired, deployed without TTL (and adminCidrs emptied
 * since), initialised but never deployed, never initialised, host only (never deployed: no
 * adminCidrs), unreadable state, invalid config.
 */
export const FIXTURE_FILES: Record<string, unknown> = {
  alpha: config("us-ord", "g2-gpu-rtx4000a1-s", { "gpu-sandbox:ttlHours": 48 }),
  bravo: config("de-fra-2", "g2-gpu-rtx4000a2-s", { "gpu-sandbox:ttlHours": 24 }),
  charlie: config("us-east", "g1-gpu-rtx6000-1"),
  delta: config("us-sea", "g2-gpu-rtx4000a1-m", { "gpu-sandbox:ttlHours": 1 }),
  echo: config("fr-par", "g2-gpu-rtx4000a1-s", { "gpu-sandbox:ttlHours": 1 }),
  foxtrot: { config: { "gpu-sandbox:region": "us-ord", "gpu-sandbox:ttlHours": 2 } },
  golf: config("jp-osa", "g2-gpu-rtx4000a1-s", { "gpu-sandbox:ttlHours": 1 }),
  hotel: config("mars-1", "g2-gpu-rtx4000a1-s", { "gpu-sandbox:ttlHours": 1 }),
  india: config("sg-sin-2", "g2-gpu-rtx4000a1-l", { "gpu-sandbox:ttlHours": 6 }),
};

export function fixtureStacks(): Record<string, FakeStack> {
  return {
    alpha: { outputs: deployed("alpha", "us-ord", "g2-gpu-rtx4000a1-s", "1 x NVIDIA RTX 4000 Ada (20 GB)", 0.53, "2026-03-02T10:00:00Z") },
    bravo: { outputs: deployed("bravo", "de-fra-2", "g2-gpu-rtx4000a2-s", "2 x NVIDIA RTX 4000 Ada (20 GB)", 1.06, "2026-03-01T10:00:00Z") },
    // Deployed, then adminCidrs emptied: it serves as it was, SSH closed.
    charlie: { outputs: { ...deployed("charlie", "us-east", "g1-gpu-rtx6000-1", "1 x NVIDIA Quadro RTX 6000 (24 GB)", 1.51), servingDeployed: true, sshCommand: "SSH is closed: set gpu-sandbox:adminCidrs to open port 22 to your address" } },
    delta: { outputs: {} },
    // echo: no stack in the backend
    // Never deployed (no adminCidrs ever): the endpoint it will have, nothing behind it.
    foxtrot: { outputs: { ...deployed("foxtrot", "us-ord", "g2-gpu-rtx4000a1-s", "1 x NVIDIA RTX 4000 Ada (20 GB)", 0.53, "2026-03-01T11:59:00Z"), servingDeployed: false, sshCommand: "SSH is closed: set gpu-sandbox:adminCidrs to open port 22 to your address" } },
    golf: { outputError: "failed to load checkpoint: permission denied" },
    hotel: { outputs: {} },
    india: { outputs: deployed("india", "sg-sin-2", "g2-gpu-rtx4000a1-l", "1 x NVIDIA RTX 4000 Ada (20 GB)", 0.97, "2026-03-01T12:00:01Z") },
  };
}

/** What a first `pulumi up` that failed after the host was made leaves in the state: no outputs, these resources. */
export function failedDeployResources(stack: string, createdAt: string): { type: string; urn: string; outputs?: Record<string, unknown> }[] {
  const urn = (type: string, name: string) => `urn:pulumi:${stack}::gpu-sandbox::gpu-sandbox:index:GpuHost$${type}::${name}`;
  return [
    { type: "random:index/randomString:RandomString", urn: urn("random:index/randomString:RandomString", `gs-${stack}-created-at`), outputs: { keepers: { createdAt }, result: "abcdefgh" } },
    { type: "linode:index/firewall:Firewall", urn: urn("linode:index/firewall:Firewall", `gs-${stack}-fw`) },
    { type: "linode:index/instance:Instance", urn: urn("linode:index/instance:Instance", `gs-${stack}`) },
  ];
}

/** A temp project root with the fixture stack files and a fake Pulumi CLI that knows their outputs. */
export function fixtureTenants(): { root: string; pulumi: FakePulumi } {
  const root = tempDir();
  mkdirSync(join(root, "stacks"));
  for (const [name, doc] of Object.entries(FIXTURE_FILES)) writeFileSync(join(root, "stacks", `Pulumi.${name}.yaml`), stringify(doc));
  return { root, pulumi: new FakePulumi(fixtureStacks()) };
}
