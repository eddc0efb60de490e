/**
 * Linode GPU plans and the regions that offer them.
 *
 * Figures are copied from public sources, each named with its date below; Linode changes them
 * over time, so at deploy time the program asks the Linode API (`getInstanceType`,
 * `getRegions`) and reports every disagreement (see catalog-check.ts). Update this file when it
 * reports one. Blackwell (`g3-gpu-rtxpro6000-blackwell-*`) plans are access-gated and their
 * public figures disagree, so they are not listed yet.
 */

export interface Source {
  readonly what: string;
  readonly where: string;
  readonly date: string;
}

export type GpuFamilyId = "rtx4000-ada" | "rtx6000";

export interface GpuFamily {
  readonly id: GpuFamilyId;
  readonly gpu: string;
  readonly vramGbPerGpu: number;
  /** Regions that offer the family (Linode's region capability says only "GPU Linodes"). */
  readonly regions: readonly string[];
  readonly sources: readonly Source[];
}

export interface GpuPlan {
  readonly id: string;
  /** The label the Linode API gives the plan. */
  readonly label: string;
  readonly family: GpuFamilyId;
  readonly gpu: string;
  readonly gpuCount: number;
  readonly vramGbPerGpu: number;
  readonly vcpus: number;
  readonly memoryMb: number;
  readonly hourlyUsd: number;
  /** Linode's monthly cap for the plan (billing stops rising past it within a month). */
  readonly monthlyUsd: number;
}

const RTX4000_ADA: GpuFamily = {
  id: "rtx4000-ada",
  gpu: "NVIDIA RTX 4000 Ada",
  vramGbPerGpu: 20,
  regions: ["us-ord", "us-sea", "de-fra-2", "fr-par", "jp-osa", "sg-sin-2", "in-bom-2"],
  sources: [
    { what: "plans, vCPU, RAM, prices", where: "linode.com/pricing GPU table", date: "2025-08-19" },
    { what: "six launch regions", where: "github.com/linode/ai-quickstart-mistral scripts/deploy-full.sh (RTX4000_REGIONS)", date: "2025" },
    { what: "in-bom-2", where: "third-party provider code, not yet confirmed by Linode", date: "2026-01" },
  ],
};

const RTX6000: GpuFamily = {
  id: "rtx6000",
  gpu: "NVIDIA Quadro RTX 6000",
  vramGbPerGpu: 24,
  regions: ["us-east", "us-southeast", "eu-central", "ap-west", "ap-south"],
  sources: [
    { what: "plans, vCPU, RAM, prices", where: "linode.com/pricing GPU table", date: "2025-08-19" },
    { what: "regions, 24 GB GDDR6", where: "github.com/linode/docs docs/products/compute/compute-instances/plans/gpu/index.md", date: "2024-03-11" },
  ],
};

export const GPU_FAMILIES: readonly GpuFamily[] = [RTX4000_ADA, RTX6000];

/** A plan's GPU facts come from its family, so a family's figures are written once. */
const fromFamily = (f: GpuFamily) => ({ family: f.id, gpu: f.gpu, vramGbPerGpu: f.vramGbPerGpu });
const ada = (id: string, size: string, gpus: number, vcpus: number, memoryGb: number, hourlyUsd: number, monthlyUsd: number): GpuPlan => ({
  id, label: `RTX4000 Ada x${gpus} ${size}`, ...fromFamily(RTX4000_ADA), gpuCount: gpus, vcpus, memoryMb: memoryGb * 1024, hourlyUsd, monthlyUsd,
});
const rtx6000 = (gpus: number, vcpus: number, hourlyUsd: number, monthlyUsd: number): GpuPlan => ({
  id: `g1-gpu-rtx6000-${gpus}`, label: `Dedicated ${32 * gpus}GB + RTX6000 GPU x${gpus}`, ...fromFamily(RTX6000), gpuCount: gpus,
  vcpus, memoryMb: 32_768 * gpus, hourlyUsd, monthlyUsd,
});

export const GPU_PLANS: readonly GpuPlan[] = [
  ada("g2-gpu-rtx4000a1-s", "Small", 1, 4, 16, 0.52, 350),
  ada("g2-gpu-rtx4000a1-m", "Medium", 1, 8, 32, 0.67, 446),
  ada("g2-gpu-rtx4000a1-l", "Large", 1, 16, 64, 0.96, 638),
  ada("g2-gpu-rtx4000a1-xl", "X-Large", 1, 32, 128, 1.53, 1022),
  ada("g2-gpu-rtx4000a2-s", "Small", 2, 8, 32, 1.05, 700),
  ada("g2-gpu-rtx4000a2-m", "Medium", 2, 16, 64, 1.34, 892),
  ada("g2-gpu-rtx4000a2-hs", "Medium High Storage", 2, 16, 64, 1.49, 992),
  ada("g2-gpu-rtx4000a4-s", "Small", 4, 32, 128, 2.96, 1976),
  ada("g2-gpu-rtx4000a4-m", "Medium", 4, 48, 196, 3.57, 2384),
  rtx6000(1, 8, 1.5, 1000),
  rtx6000(2, 16, 3.0, 2000),
  rtx6000(3, 20, 4.5, 3000),
  rtx6000(4, 24, 6.0, 4000),
];

/** Linode core regions (id, label), as of August 2025; edge ("distributed") sites have no GPUs. */
export const LINODE_REGIONS: readonly { readonly id: string; readonly label: string }[] = [
  ["ap-northeast", "Tokyo 2, JP"], ["ap-south", "Singapore, SG"], ["ap-southeast", "Sydney, AU"],
  ["ap-west", "Mumbai, IN"], ["au-mel", "Melbourne, AU"], ["br-gru", "Sao Paulo, BR"], ["ca-central", "Toronto, CA"],
  ["de-fra-2", "Frankfurt 2, DE"], ["es-mad", "Madrid, ES"], ["eu-central", "Frankfurt, DE"], ["eu-west", "London, UK"],
  ["fr-par", "Paris, FR"], ["gb-lon", "London 2, UK"], ["id-cgk", "Jakarta, ID"], ["in-bom-2", "Mumbai 2, IN"],
  ["in-maa", "Chennai, IN"], ["it-mil", "Milan, IT"], ["jp-osa", "Osaka, JP"], ["jp-tyo-3", "Tokyo 3, JP"],
  ["nl-ams", "Amsterdam, NL"], ["se-sto", "Stockholm, SE"], ["sg-sin-2", "Singapore 2, SG"], ["us-central", "Dallas, TX"],
  ["us-east", "Newark, NJ"], ["us-iad", "Washington, DC"], ["us-lax", "Los Angeles, CA"], ["us-mia", "Miami, FL"],
  ["us-ord", "Chicago, IL"], ["us-sea", "Seattle, WA"], ["us-southeast", "Atlanta, GA"], ["us-west", "Fremont, CA"],
].map(([id, label]) => ({ id: id as string, label: label as string }));

/** Hours Linode bills in a month before the monthly cap applies. */
export const HOURS_PER_MONTH = 730;

/** Block Storage price per GB per month (USD), linode.com/pricing, 2025-08-19. */
export const VOLUME_USD_PER_GB_MONTH = 0.1;

export function findPlan(id: string): GpuPlan | undefined {
  return GPU_PLANS.find((p) => p.id === id);
}

export function familyOf(plan: GpuPlan): GpuFamily {
  const family = GPU_FAMILIES.find((f) => f.id === plan.family);
  if (!family) throw new Error(`catalog: plan ${plan.id} names unknown family ${plan.family}`);
  return family;
}

export function regionsOffering(plan: GpuPlan): readonly string[] {
  return familyOf(plan).regions;
}

export interface Cost {
  readonly hourlyUsd: number;
  readonly monthlyUsd: number;
}

/** What a Block Storage Volume of this size costs an hour (USD, not rounded): its monthly price over HOURS_PER_MONTH. */
export function volumeHourlyUsd(volumeSizeGb: number): number {
  return (volumeSizeGb * VOLUME_USD_PER_GB_MONTH) / HOURS_PER_MONTH;
}

/** What the tenant's host costs: the plan (hourly, capped monthly) plus its volume. */
export function costOf(plan: GpuPlan, volumeSizeGb: number): Cost {
  const volumeMonthly = volumeSizeGb * VOLUME_USD_PER_GB_MONTH;
  const round = (usd: number) => Math.round(usd * 100) / 100;
  return {
    hourlyUsd: round(plan.hourlyUsd + volumeHourlyUsd(volumeSizeGb)),
    monthlyUsd: round(Math.min(plan.hourlyUsd * HOURS_PER_MONTH, plan.monthlyUsd) + volumeMonthly),
  };
}

/**
 * What the host costs over `hours` (a stack's ttlHours: what a day's workshop is billed until
 * reap-expired destroys it), in USD to the cent: the plan by the hour, capped at its monthly price
 * for each 730 hours, as costOf caps a month, and the volume by its share of a month.
 */
export function costOver(plan: GpuPlan, volumeSizeGb: number, hours: number): number {
  const months = Math.floor(hours / HOURS_PER_MONTH);
  const rest = hours - months * HOURS_PER_MONTH;
  const planUsd = months * Math.min(plan.hourlyUsd * HOURS_PER_MONTH, plan.monthlyUsd) + Math.min(plan.hourlyUsd * rest, plan.monthlyUsd);
  const volumeUsd = (volumeSizeGb * VOLUME_USD_PER_GB_MONTH * hours) / HOURS_PER_MONTH;
  return Math.round((planUsd + volumeUsd) * 100) / 100;
}
