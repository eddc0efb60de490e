import { HOURS_PER_MONTH, regionsOffering, type GpuPlan } from "./catalog.ts";
import type { StorageEncryption } from "./config/types.ts";

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

/** What the check found: differences to warn about, and reasons not to create the host at all. */
export interface CatalogDisagreements {
  /** The plan's figures (class, vCPU, RAM, price) differ: the host still works, the catalog is stale. */
  readonly warnings: string[];
  /** The region cannot run the host (no GPU Linodes, no Metadata for cloud-init, not listed, no encryption asked for). */
  readonly blockers: string[];
}

/**
 * Compares the catalog with the live Linode API, one sentence per disagreement, so `pulumi up`
 * can say clearly what changed rather than fail later in a confusing way. A price of 0 means
 * the API does not publish one for the plan (seen for GPU plans in 2026), so it is not reported.
 * A region where the host could not boot as a GPU host or run its cloud-init is a blocker: the
 * instance would bill and host-ready would fail. A region's status other than "ok" is a warning.
 */
export function catalogDisagreements(plan: GpuPlan, region: string, type: ApiInstanceType, regions: readonly ApiRegion[], encryption?: StorageEncryption): CatalogDisagreements {
  const warnings: string[] = [];
  const where = `infra/catalog.ts says`;
  if (type.class !== "gpu") warnings.push(`Linode reports ${plan.id} as class "${type.class}", not a GPU plan`);
  if (type.vcpus !== plan.vcpus) warnings.push(`${where} ${plan.id} has ${plan.vcpus} vCPUs; Linode reports ${type.vcpus}`);
  if (type.memory !== plan.memoryMb) warnings.push(`${where} ${plan.id} has ${plan.memoryMb} MB RAM; Linode reports ${type.memory}`);
  const price = type.prices[0];
  if (price && price.hourly > 0 && Math.abs(price.hourly - plan.hourlyUsd) > 0.005) {
    warnings.push(`${where} ${plan.id} costs $${plan.hourlyUsd}/hour; Linode reports $${price.hourly}/hour (cost outputs use the catalog)`);
  }
  // Reported in 2026: GPU plans billed by the hour with no monthly cap (730 h at the hourly rate).
  if (price && price.monthly > 0 && Math.abs(price.monthly - plan.monthlyUsd) > 0.5) {
    warnings.push(`${where} ${plan.id} costs at most $${plan.monthlyUsd}/month; Linode reports $${price.monthly}/month (cost outputs use the catalog)`);
  } else if (price && price.hourly > 0 && !(price.monthly > 0)) {
    const month = Math.round(price.hourly * HOURS_PER_MONTH * 100) / 100;
    warnings.push(`${where} ${plan.id} costs at most $${plan.monthlyUsd}/month; Linode reports $${price.hourly}/hour and no monthly price: billed by the hour without a cap, ${HOURS_PER_MONTH} hours would be $${month} (cost outputs use the catalog)`);
  }
  // An outage passes: a host that exists must stay updatable through one (a ttlHours raise keeps
  // reap-expired from destroying it), and a new one is as likely to come up when it ends.
  const status = regions.find((r) => r.id === region)?.status;
  if (status !== undefined && status !== "ok") warnings.push(`Linode reports region ${region} as "${status}": the instance may be slow to create or to boot until it is "ok"`);
  return { warnings, blockers: regionBlockers(region, regions, encryption) };
}

/**
 * The region capabilities (as Linode's API lists them) that storage.encryption `enabled` needs:
 * without them Linode would refuse the volume or the instance, or create it unencrypted, after
 * the host started billing.
 */
const ENCRYPTION_CAPABILITIES = ["Block Storage Encryption", "Disk Encryption"] as const;

function regionBlockers(region: string, regions: readonly ApiRegion[], encryption?: StorageEncryption): string[] {
  const r = regions.find((x) => x.id === region);
  if (!r) return [`Linode does not list region ${region}`];
  const out: string[] = [];
  if (!r.capabilities.includes("GPU Linodes")) out.push(`Linode does not list GPU Linodes in region ${region}`);
  // User data (cloud-init) only reaches the instance where the Metadata service runs.
  if (!r.capabilities.includes("Metadata")) out.push(`region ${region} has no Metadata service, so the host's cloud-init would not run`);
  if (encryption === "enabled") {
    for (const c of ENCRYPTION_CAPABILITIES) if (!r.capabilities.includes(c)) out.push(`storage.encryption is enabled, but Linode does not list ${c} in region ${region}`);
  }
  return out;
}

/** The error `pulumi up` stops with on blockers: what is wrong, and the regions that would do. */
export function blockedDeployMessage(plan: GpuPlan, region: string, blockers: readonly string[], regions: readonly ApiRegion[], encryption?: StorageEncryption): string {
  const ready = regionsOffering(plan).filter((id) => id !== region && regionBlockers(id, regions, encryption).length === 0 && regions.find((r) => r.id === id)?.status === "ok");
  // Only when encryption is what the region lacks: dropping the setting is then a way out too.
  const unencrypted = encryption === "enabled" && regionBlockers(region, regions, encryption).length > regionBlockers(region, regions).length
    ? ", or leave the volume and disks to Linode's defaults with `pulumi config rm gpu-sandbox:storage.encryption`"
    : "";
  return `not creating the GPU instance: ${blockers.join("; ")}. ` +
    `Choose another region with \`pulumi config set gpu-sandbox:region <id>\`` +
    (ready.length ? ` (${plan.gpu} regions Linode reports ready: ${ready.join(", ")})` : "") +
    unencrypted +
    `, or, if Linode changed where it offers ${plan.gpu}, update infra/catalog.ts.`;
}
