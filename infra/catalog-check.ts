import type { GpuPlan } from "./catalog.ts";

/** What the Linode API says about a plan (the fields of `linode.getInstanceType` we compare). */
export interface ApiInstanceType {
  readonly class: string;
  readonly vcpus: number;
  readonly memory: number;
  readonly prices: readonly { readonly hourly: number; readonly monthly: number }[];
}

/** What the Linode API says about a region (`linode.getRegions`). */
export interface ApiRegion {
  readonly id: string;
  readonly capabilities: readonly string[];
  readonly status: string;
}

/**
 * Compares the catalog with the live Linode API and returns one sentence per disagreement, so
 * `pulumi up` can say clearly what changed rather than fail later in a confusing way. A price
 * of 0 means the API does not publish one for the plan (seen for GPU plans in 2026), so it is
 * not reported as a disagreement.
 */
export function catalogDisagreements(plan: GpuPlan, region: string, type: ApiInstanceType, regions: readonly ApiRegion[]): string[] {
  const out: string[] = [];
  const where = `infra/catalog.ts says`;
  if (type.class !== "gpu") out.push(`Linode reports ${plan.id} as class "${type.class}", not a GPU plan`);
  if (type.vcpus !== plan.vcpus) out.push(`${where} ${plan.id} has ${plan.vcpus} vCPUs; Linode reports ${type.vcpus}`);
  if (type.memory !== plan.memoryMb) out.push(`${where} ${plan.id} has ${plan.memoryMb} MB RAM; Linode reports ${type.memory}`);
  const price = type.prices[0];
  if (price && price.hourly > 0 && Math.abs(price.hourly - plan.hourlyUsd) > 0.005) {
    out.push(`${where} ${plan.id} costs $${plan.hourlyUsd}/hour; Linode reports $${price.hourly}/hour (cost outputs use the catalog)`);
  }
  const r = regions.find((x) => x.id === region);
  if (!r) {
    out.push(`Linode does not list region ${region}`);
  } else {
    if (!r.capabilities.includes("GPU Linodes")) out.push(`Linode does not list GPU Linodes in region ${region}`);
    // User data (cloud-init) only reaches the instance where the Metadata service runs.
    if (!r.capabilities.includes("Metadata")) out.push(`region ${region} has no Metadata service, so the host's cloud-init would not run`);
    if (r.status !== "ok") out.push(`Linode reports region ${region} as "${r.status}"`);
  }
  return out;
}
