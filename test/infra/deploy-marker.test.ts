// servingDeployed (and the `-deployed` marker behind it) under the mock runtime: it must say
// "deployed" only once the deploy over SSH has succeeded. Pulumi writes the stack outputs a
// failed update registered (pulumi/pulumi#15754), so an output that resolved before the deploy
// failed would leave a first `pulumi up` that never deployed looking deployed, and reap-expired
// would keep its host billing (it tries to save usage where nothing listens).
import type * as pulumi from "@pulumi/pulumi";
import { expect, it } from "vitest";
import { type TenantConfig, validateConfig } from "../../infra/config.ts";
import { readStackConfig } from "../../infra/stack-file.ts";
import { deployTenant } from "../../infra/tenant.ts";
import { installMocks, settle, valueOf } from "../support/pulumi-mocks.ts";
import { tempDir } from "../support/tools.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

function exampleConfig(): TenantConfig {
  const r = validateConfig({ ...readStackConfig(ROOT, "example"), adminCidrs: ["81.2.69.160/32"], ttlHours: 1 }, { stack: "example" });
  if (!r.ok) throw new Error(JSON.stringify(r.problems));
  return r.config;
}

/** The output's value, or "unresolved" when it has none after `ms`. */
function within<T>(output: pulumi.Output<T>, ms: number): Promise<T | "unresolved"> {
  return Promise.race([valueOf(output), new Promise<"unresolved">((r) => setTimeout(() => r("unresolved"), ms))]);
}

it("a first deploy that has not succeeded (SSH never answers) leaves servingDeployed unresolved and the marker unwritten", async () => {
  // The SSH wait still running (it fails after 45 minutes with a wrong adminCidrs): nothing after it runs.
  const { resources } = installMocks("example", {
    resource: (args) => (args.name === "example-ssh-wait" ? new Promise<never>(() => undefined) : undefined),
  });
  const out = deployTenant(exampleConfig(), { stagingDir: tempDir() });
  // The other outputs resolve (the host exists and bills)…
  expect(await valueOf(out.endpoint)).toMatch(/^https:\/\//);
  expect(await valueOf(out.expiresAt)).toBeTruthy();
  // …but not this one, which the stack outputs wait for: a failed update registers none, so a
  // first one leaves a stack without outputs (the scripts' "failed deploy").
  expect(await within(out.servingDeployed, 500)).toBe("unresolved");
  expect(resources.some((r) => r.name === "example-deploy")).toBe(false);
  expect(resources.some((r) => r.name === "example-deployed")).toBe(false);
});

it("writes the marker only after the deploy succeeded, with the same keeper as before (no replacement on upgrade)", async () => {
  const { resources } = installMocks("example");
  const out = deployTenant(exampleConfig(), { stagingDir: tempDir() });
  await settle();
  const at = (name: string) => resources.findIndex((r) => r.name === name);
  expect(at("example-deploy")).toBeGreaterThanOrEqual(0);
  expect(at("example-deployed")).toBeGreaterThan(at("example-deploy"));
  expect(resources[at("example-deployed")]!.inputs.keepers).toEqual({ deployed: "yes" });
  expect(await valueOf(out.servingDeployed)).toBe(true);
});
