import * as pulumi from "@pulumi/pulumi";
import { describe, expect, it, vi } from "vitest";
import { costOf, findPlan, GPU_FAMILIES, GPU_PLANS, LINODE_REGIONS, regionsOffering } from "../../infra/catalog.ts";
import { catalogDisagreements, type ApiInstanceType, type ApiRegion } from "../../infra/catalog-check.ts";
import { GpuHost } from "../../infra/components/gpu-host.ts";
import { installMocks, settle } from "../support/pulumi-mocks.ts";

const plan = findPlan("g2-gpu-rtx4000a1-s")!;
const apiType: ApiInstanceType = { class: "gpu", vcpus: 4, memory: 16384, prices: [{ hourly: 0.52, monthly: 350 }] };
const apiRegions: ApiRegion[] = [{ id: "us-ord", status: "ok", capabilities: ["Linodes", "GPU Linodes", "Metadata"] }];

describe("the GPU catalog", () => {
  it("places every family's regions among Linode's regions, and every plan in a family", () => {
    const ids = LINODE_REGIONS.map((r) => r.id);
    for (const family of GPU_FAMILIES) {
      expect(family.regions.length).toBeGreaterThan(0);
      for (const region of family.regions) expect(ids).toContain(region);
      expect(family.sources.every((s) => /^\d{4}(-\d\d){0,2}$/.test(s.date))).toBe(true);
    }
    for (const p of GPU_PLANS) expect(regionsOffering(p).length).toBeGreaterThan(0);
  });

  it("records GPU count, VRAM and price for each plan", () => {
    expect(findPlan("g2-gpu-rtx4000a4-m")).toMatchObject({ gpuCount: 4, vramGbPerGpu: 20, vcpus: 48, hourlyUsd: 3.57 });
    expect(findPlan("g1-gpu-rtx6000-2")).toMatchObject({ gpuCount: 2, vramGbPerGpu: 24, hourlyUsd: 3 });
  });

  it("prices the host with its volume, hourly and capped monthly", () => {
    expect(costOf(plan, 100)).toEqual({ hourlyUsd: 0.53, monthlyUsd: 360 });
  });
});

describe("catalog cross-check with the Linode API", () => {
  it("finds nothing to report when they agree", () => {
    expect(catalogDisagreements(plan, "us-ord", apiType, apiRegions)).toEqual([]);
  });

  it("reports each disagreement in a sentence", () => {
    const lines = catalogDisagreements(
      plan, "us-ord",
      { class: "dedicated", vcpus: 8, memory: 32768, prices: [{ hourly: 0.6, monthly: 400 }] },
      [{ id: "us-ord", status: "outage", capabilities: ["Linodes"] }],
    );
    expect(lines).toEqual([
      'Linode reports g2-gpu-rtx4000a1-s as class "dedicated", not a GPU plan',
      "infra/catalog.ts says g2-gpu-rtx4000a1-s has 4 vCPUs; Linode reports 8",
      "infra/catalog.ts says g2-gpu-rtx4000a1-s has 16384 MB RAM; Linode reports 32768",
      "infra/catalog.ts says g2-gpu-rtx4000a1-s costs $0.52/hour; Linode reports $0.6/hour (cost outputs use the catalog)",
      "Linode does not list GPU Linodes in region us-ord",
      "region us-ord has no Metadata service, so the host's cloud-init would not run",
      'Linode reports region us-ord as "outage"',
    ]);
  });

  it("does not treat an unpublished price (0) as a disagreement", () => {
    expect(catalogDisagreements(plan, "us-ord", { ...apiType, prices: [{ hourly: 0, monthly: 0 }] }, apiRegions)).toEqual([]);
  });

  it("warns at deploy time, on the host component, when the API disagrees", async () => {
    const warn = vi.spyOn(pulumi.log, "warn").mockImplementation(async () => {});
    const { calls } = installMocks("acme", {
      calls: { "linode:index/getInstanceType:getInstanceType": () => ({ ...apiType, vcpus: 6, prices: [{ hourly: 0.52, monthly: 350 }] }) },
    });
    const host = new GpuHost("acme", { tenant: "acme", region: "us-ord", plan, image: "linode/ubuntu24.04", allowedCidrs: ["0.0.0.0/0"], adminCidrs: [], tls: { mode: "self-signed" }, volumeSizeGb: 100, tags: [] });
    await settle();
    expect(calls.map((c) => c.token)).toEqual(expect.arrayContaining([
      "linode:index/getInstanceType:getInstanceType", "linode:index/getRegions:getRegions",
    ]));
    expect(warn).toHaveBeenCalledWith("infra/catalog.ts says g2-gpu-rtx4000a1-s has 4 vCPUs; Linode reports 6", host);
    warn.mockRestore();
  });
});
