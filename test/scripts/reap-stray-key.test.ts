// A deployed, expired tenant whose stack file has a stray top-level "ns:key" (ignored by Pulumi,
// which deploys and destroys from config: alone) is reaped: its expiry is in the outputs.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { expect, it } from "vitest";
import { planReap } from "../../scripts/reap-expired.ts";
import { readTenants } from "../../scripts/lib/tenants.ts";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { tempDir } from "../support/tools.ts";
import { FakePulumi } from "./fake-pulumi.ts";

it("reaps an expired deployed tenant whose file has a stray top-level key Pulumi ignores", async () => {
  const root = tempDir();
  mkdirSync(join(root, "stacks"));
  writeFileSync(join(root, "stacks", "Pulumi.bravo.yaml"),
    "gpu-sandbox:note: moved here by mistake\nconfig:\n  gpu-sandbox:region: us-ord\n  gpu-sandbox:adminCidrs: [\"81.2.69.160/32\"]\n  gpu-sandbox:ttlHours: 1\n");
  const pulumi = new FakePulumi({ bravo: { outputs: {
    region: "us-ord", plan: "g2-gpu-rtx4000a1-s", hourlyCostUsd: 0.53, createdAt: "2026-02-28T10:00:00Z", expiresAt: "2026-02-28T11:00:00Z",
    endpoint: "https://bravo.example.test/v1", adminToken: "admin-x", servingDeployed: true,
  } } });
  const now = new Date("2026-03-01T12:00:00Z");
  const tenants = await readTenants({ root, pulumi, io: memoryIo(), env: {}, now: () => now } as never);
  const plan = planReap(tenants, now);
  expect(plan.lines.join("\n")).toMatch(/expired .*: destroy/);
});
