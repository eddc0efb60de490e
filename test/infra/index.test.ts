import * as pulumi from "@pulumi/pulumi";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../infra/config.ts";
import { endpointOf } from "../../scripts/lib/pulumi.ts";
import { installMocks, settle, valueOf } from "../support/pulumi-mocks.ts";

/** Stack config as the Pulumi CLI hands it to a program: every value a string, objects as JSON. */
function setStackConfig(values: Record<string, string>, secretKeys: string[] = []): void {
  pulumi.runtime.setAllConfig(
    Object.fromEntries(Object.entries(values).map(([k, v]) => [`gpu-sandbox:${k}`, v])),
    secretKeys.map((k) => `gpu-sandbox:${k}`),
  );
}

describe("loadConfig (the program's one read of stack config)", () => {
  it("reads strings, numbers as strings, JSON objects and secrets", () => {
    installMocks("acme");
    setStackConfig({
      region: "us-ord", ttlHours: "24", hfToken: "hf_from_config",
      model: JSON.stringify({ id: "Qwen/Qwen2.5-7B-Instruct", servedName: "qwen" }),
      keys: JSON.stringify([{ name: "app", credits: 10, tier: "pro" }]),
      adminCidrs: JSON.stringify(["81.2.69.160/32"]),
    }, ["hfToken"]);
    const config = loadConfig();
    expect(config.tenant).toBe("acme");
    expect(config.ttlHours).toBe(24);
    expect(config.model.servedName).toBe("qwen");
    expect(config.keys).toEqual([{ name: "app", credits: 10, tier: "pro", models: [] }]);
    expect(config.hfToken?.reveal()).toBe("hf_from_config");
    expect(JSON.stringify(config)).not.toContain("hf_from_config");
  });

  it("stops the deployment with every problem, before any resource exists", () => {
    installMocks("acme");
    setStackConfig({ region: "mars-1", ttlHours: "0" });
    let error: unknown;
    try {
      loadConfig();
    } catch (err) {
      error = err;
    }
    expect(pulumi.RunError.isInstance(error)).toBe(true);
    const message = (error as Error).message;
    expect(message).toContain("the stack config has 2 problems");
    expect(message).toContain('gpu-sandbox:region = "mars-1": is not a Linode region');
    expect(message).toContain('gpu-sandbox:ttlHours = "0": must be between 1 and 2160');
  });

  it("stops the deployment when adminCidrs holds an address nobody connects from, such as the example's", () => {
    installMocks("acme");
    setStackConfig({ region: "us-ord", adminCidrs: JSON.stringify(["203.0.113.7/32", "192.168.1.20/32"]) });
    expect(() => loadConfig()).toThrow(/the stack config has 2 problems:\n {2}- gpu-sandbox:adminCidrs\[0\] = "203\.0\.113\.7\/32": is a documentation address/);
    expect(() => loadConfig()).toThrow(/adminCidrs\[1\] = "192\.168\.1\.20\/32": is a private address \(RFC 1918\).*curl -4s https:\/\/ifconfig\.me/);
  });
});

describe("infra/index.ts, the entry point Pulumi runs", () => {
  it("loads config, creates the host and exports the stack outputs", async () => {
    const { resources } = installMocks("acme");
    // No adminCidrs: the host alone, so nothing is staged on disk.
    setStackConfig({ region: "us-ord", ttlHours: "8" });
    const program = await import("../../infra/index.ts");
    await settle();
    expect(resources.some((r) => r.type === "linode:index/instance:Instance")).toBe(true);
    expect(program.region).toBe("us-ord");
    expect(await valueOf(program.ip)).toBe("192.0.2.10");
    expect(await valueOf(program.endpoint)).toBe("https://192-0-2-10.ip.linodeusercontent.com/v1");
    expect(await valueOf(program.sshCommand)).toContain("SSH is closed");
    expect(await valueOf(program.expiresAt)).toMatch(/Z$/);
    expect(Object.keys(program).sort()).toEqual([
      "adminToken", "apiKeys", "bundleHash", "caCertificate", "createdAt", "endpoint", "expiresAt", "gpu", "hostKey", "hourlyCostUsd",
      "ip", "ipv6", "monthlyCostUsd", "plan", "region", "rootPassword", "servingDeployed", "sshCommand", "sshPrivateKey",
    ]);
    // What \`pulumi stack output --json\` holds, as the operator scripts read it: a stack that never
    // had adminCidrs says nothing serves at its endpoint, so reap-expired destroys it without an
    // export and list-tenants shows "host only".
    const outputs: Record<string, unknown> = {};
    for (const [name, value] of Object.entries(program)) outputs[name] = await valueOf(value as pulumi.Output<unknown>);
    expect(outputs.servingDeployed).toBe(false);
    expect(endpointOf(outputs)).toBeUndefined();
  });
});
