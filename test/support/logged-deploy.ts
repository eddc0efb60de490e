import * as pulumi from "@pulumi/pulumi";
import { vi } from "vitest";
import type { TenantConfig } from "../../infra/config/types.ts";
import { deployTenant } from "../../infra/tenant.ts";
import { installMocks, settle } from "./pulumi-mocks.ts";
import { tempDir } from "./tools.ts";

/**
 * Runs the whole tenant program under the mock runtime (installMocks with `overrides`): what it
 * registered, what it warned and logged as errors, and its unhandled rejections, which are what
 * `pulumi up` reports as errors (and fails on).
 */
export async function loggedDeploy(config: TenantConfig, overrides: Parameters<typeof installMocks>[1] = {}) {
  const warn = vi.spyOn(pulumi.log, "warn").mockImplementation(async () => {});
  const error = vi.spyOn(pulumi.log, "error").mockImplementation(async () => {});
  const failures: unknown[] = [];
  const onRejection = (e: unknown) => { failures.push(e); };
  process.on("unhandledRejection", onRejection);
  try {
    const { resources, hubRequests } = installMocks(config.tenant, overrides);
    deployTenant(config, { stagingDir: tempDir() });
    await settle();
    await new Promise((r) => setTimeout(r, 50)); // lets the rejections left unhandled be reported
    const text = (spy: typeof warn) => spy.mock.calls.map(([t]) => String(t));
    return { resources, hubRequests, warnings: text(warn), errors: text(error), failures };
  } finally {
    process.off("unhandledRejection", onRejection);
    warn.mockRestore();
    error.mockRestore();
  }
}
