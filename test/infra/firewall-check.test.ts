import * as pulumi from "@pulumi/pulumi";
import { describe, expect, it, vi } from "vitest";
import { findPlan } from "../../infra/catalog.ts";
import { GpuHost } from "../../infra/components/gpu-host.ts";
import { firewallCovers } from "../../infra/firewall-check.ts";
import { installMocks, settle } from "../support/pulumi-mocks.ts";

/**
 * Found by review: on an account whose new Linodes use Linode Interfaces, the firewall given at
 * creation is applied per interface, which the provider version the kit uses cannot ask for;
 * nothing told the operator whether the host ended up behind its firewall.
 */
describe("whether the firewall covers the instance", () => {
  const legacy = { type: "linode", entityId: 12345, url: "/v4/linode/instances/12345" };
  const iface = { type: "linode_interface", entityId: 77, url: "/v4/linode/instances/12345/interfaces/77" };

  it("covers it as a Linode (legacy interfaces) or through one of its interfaces, and not another instance's", () => {
    expect(firewallCovers({ linodes: [12345], devices: [legacy] }, 12345)).toBe(true);
    expect(firewallCovers({ devices: [legacy] }, 12345)).toBe(true);
    expect(firewallCovers({ linodes: [], devices: [iface] }, 12345)).toBe(true);
    expect(firewallCovers({ linodes: [123], devices: [{ ...legacy, entityId: 123, url: "/v4/linode/instances/123" }] }, 12345)).toBe(false);
    expect(firewallCovers({ devices: [{ ...iface, url: "/v4/linode/instances/123456/interfaces/77" }] }, 12345)).toBe(false);
    expect(firewallCovers({}, 12345)).toBe(false);
    // The provider's `linodes` alone, and another entity that has the instance's id.
    expect(firewallCovers({ linodes: [12345], devices: [] }, 12345)).toBe(true);
    expect(firewallCovers({ devices: [{ type: "nodebalancer", entityId: 12345, url: "/v4/nodebalancers/12345" }] }, 12345)).toBe(false);
  });

  const plan = findPlan("g2-gpu-rtx4000a1-s")!;
  const host = () => new GpuHost("acme", { tenant: "acme", region: "us-ord", plan, image: "linode/ubuntu24.04", allowedCidrs: ["0.0.0.0/0"], adminCidrs: ["81.2.69.7/32"], tls: { mode: "self-signed" }, volumeSizeGb: 100, tags: [], model: { id: "Qwen/Qwen2.5-7B-Instruct", maxModelLen: 8192, extraArgs: [], gpuMemoryUtilization: 0.9, tensorParallelSize: 1, pipelineParallelSize: 1 } });
  const warnings = async (answer?: () => unknown) => {
    const warn = vi.spyOn(pulumi.log, "warn").mockImplementation(async () => {});
    try {
      const { calls } = installMocks("acme", answer ? { calls: { "linode:index/getFirewall:getFirewall": answer } } : {});
      host();
      await settle();
      return { asked: calls.filter((c) => c.token === "linode:index/getFirewall:getFirewall"), said: warn.mock.calls.map((c) => String(c[0])) };
    } finally {
      warn.mockRestore();
    }
  };

  it("asks Linode once the instance exists, and says nothing when the firewall covers it", async () => {
    const { asked, said } = await warnings();
    expect(asked.map((c) => c.inputs)).toEqual([{ id: 4242 }]);
    expect(said.filter((w) => /firewall/i.test(w))).toEqual([]);
  });

  it("warns, naming the setting to check, when Linode lists neither the instance nor one of its interfaces", async () => {
    const { said } = await warnings(() => ({ id: 4242, label: "gs-acme-fw", linodes: [], devices: [] }));
    expect(said).toContainEqual(expect.stringMatching(/^Linode lists neither instance 12345 nor one of its interfaces among the devices of firewall gs-acme-fw: .*Linode Interfaces/));
  });

  it("stops waiting for Linode's answer after 60 s with a warning: the deployment waits for the check", async () => {
    const warn = vi.spyOn(pulumi.log, "warn").mockImplementation(async () => {});
    const said = () => warn.mock.calls.map((c) => String(c[0])).filter((w) => w.startsWith("could not ask Linode"));
    /** Turns of the event loop (setImmediate is not faked) until `done`, at most `turns`. */
    const until = async (done: () => boolean, turns = 5000) => {
      for (let i = 0; i < turns && !done(); i++) await new Promise((r) => setImmediate(r));
    };
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    try {
      const { calls } = installMocks("acme", { calls: { "linode:index/getFirewall:getFirewall": () => new Promise(() => {}) } });
      host();
      await until(() => calls.some((c) => c.token === "linode:index/getFirewall:getFirewall"));
      await vi.advanceTimersByTimeAsync(59_000);
      expect(said()).toEqual([]);
      await vi.advanceTimersByTimeAsync(2_000);
      await until(() => said().length > 0);
      expect(said()).toEqual([expect.stringMatching(/^could not ask Linode whether firewall gs-acme-fw covers the instance \(no answer within 60 s\)/)]);
    } finally {
      vi.useRealTimers();
      warn.mockRestore();
    }
  });

  it("warns, and does not fail the deployment, when the firewall cannot be read", async () => {
    const { said } = await warnings(() => { throw new Error("403 Forbidden"); });
    expect(said).toContainEqual(expect.stringMatching(/^could not ask Linode whether firewall gs-acme-fw covers the instance.*: check the instance.s Firewall tab/));
  });
});
