import { describe, expect, it } from "vitest";
import { validateConfig, type TenantConfig } from "../../infra/config.ts";
import { readStackConfig } from "../../infra/stack-file.ts";
import { deployTenant } from "../../infra/tenant.ts";
import { installMocks, settle, type RecordedResource } from "../support/pulumi-mocks.ts";
import { tempDir } from "../support/tools.ts";

// What an operator finds in Cloud Manager for a stack (found unpinned by a mutation review).
const ROOT = new URL("../../", import.meta.url).pathname;

function configFor(overrides: Record<string, unknown> = {}): TenantConfig {
  const raw = { ...(readStackConfig(ROOT, "example") as Record<string, unknown>), hfToken: undefined, providers: [], ...overrides };
  const result = validateConfig(raw, { stack: "example" });
  if (!result.ok) throw new Error(JSON.stringify(result.problems));
  return result.config;
}

async function run(config: TenantConfig): Promise<RecordedResource[]> {
  const { resources } = installMocks("example");
  deployTenant(config, { stagingDir: tempDir() });
  await settle();
  return resources;
}

describe("what an operator finds in Cloud Manager", () => {
  it("tags every billable Linode resource (instance, volume, firewall) with gpu-sandbox, tenant:<tenant> and the stack's tags", async () => {
    // docs/operations.md: "Check in Cloud Manager that no instance or volume with the stack's tags is left, since those bill."
    const resources = await run(configFor({ tags: ["team-a"] }));
    for (const type of ["linode:index/instance:Instance", "linode:index/volume:Volume", "linode:index/firewall:Firewall"]) {
      const r = resources.filter((x) => x.type === type);
      expect(r, type).toHaveLength(1);
      expect(r[0]!.inputs.tags, type).toEqual(expect.arrayContaining(["gpu-sandbox", "tenant:example", "team-a"]));
    }
  });

  it("makes a long random root password (32 characters), as the design promises", async () => {
    const resources = await run(configFor());
    const pw = resources.find((r) => r.type === "random:index/randomPassword:RandomPassword" && r.name === "example-root-password");
    expect(pw?.inputs.length).toBeGreaterThanOrEqual(32);
  });
});
