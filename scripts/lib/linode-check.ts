// `list-tenants --linode`: what Linode itself holds of the kit's (every instance and volume tagged
// gpu-sandbox), which tenant each is for, whether a stack's state holds it (so that its
// `pulumi destroy` deletes it) and what it costs an hour. The stacks' state alone cannot show
// what no stack holds: an interrupted first `pulumi up`, a deleted stack file, a destroy that
// failed half way; this asks Linode.
import { findPlan, volumeHourlyUsd } from "../../infra/catalog.ts";
import { KIT_TAG, resourceNames, TENANT_TAG_PREFIX } from "../../infra/host.ts";
import { listStackNames, STACKS_DIR } from "../../infra/stack-file.ts";
import type { ScriptDeps } from "./deps.ts";
import { type LinodeInstance, type LinodeVolume, linodeApi, listInstances, listVolumes } from "./linode-api.ts";
import { type StackState, stackState } from "./pulumi.ts";
import { formatTable } from "./table.ts";
import { mapLimit } from "./tenants.ts";

export interface LinodeRow {
  readonly kind: "instance" | "volume";
  /** Linode's id. */
  readonly id: number;
  readonly label: string;
  /** From its `tenant:` tag, else the stack whose resource names its label is; null when neither. */
  readonly tenant: string | null;
  readonly region: string;
  /** The instance's plan (Linode's type); null for a volume. */
  readonly plan: string | null;
  /** The volume's size; null for an instance. */
  readonly sizeGb: number | null;
  /** Linode's status: an `offline` instance bills as a running one. */
  readonly status: string;
  readonly created: string;
  /** The instance a volume is attached to; null for an instance or a volume attached to none. */
  readonly attachedTo: number | null;
  /** The catalog's price (infra/catalog.ts); null for a plan it does not list. */
  readonly hourlyUsd: number | null;
  /** The stack whose state holds it: its `pulumi destroy` deletes it. */
  readonly stack: string | null;
  /** held: a stack's state holds it; orphaned: none does; unknown: its stack's state could not be read. */
  readonly held: "held" | "orphaned" | "unknown";
  /** Why no stack holds it, or why that cannot be told; null when held. */
  readonly reason: string | null;
  /** The linode-cli commands that delete an orphan, in order; null for the others. */
  readonly delete: readonly string[] | null;
}

/** What a tenant's stack holds, as far as can be told. */
type Holding =
  | { readonly kind: "state"; readonly state: Extract<StackState, { kind: "state" }> }
  | { readonly kind: "none"; readonly reason: string }
  | { readonly kind: "unknown"; readonly reason: string };

/** Asks Linode, then the states of the stacks concerned; prints the rows. Exits 1 when one is orphaned or cannot be told. */
export async function checkLinode(deps: ScriptDeps, options: { json: boolean }): Promise<number> {
  const api = linodeApi(deps.env);
  const progress = (line: string) => deps.io.err(line);
  const tagged = <T extends { tags: readonly string[] }>(items: T[]) => items.filter((i) => i.tags.includes(KIT_TAG));
  const instances = tagged(await listInstances(api, progress));
  const volumes = tagged(await listVolumes(api, progress));
  const stacks = listStackNames(deps.root);
  const tenantOf = (kind: "instance" | "volume", r: { tags: readonly string[]; label: string }) => tenantFrom(kind, r, stacks);
  const tenants = [...new Set([...instances.map((i) => tenantOf("instance", i)), ...volumes.map((v) => tenantOf("volume", v))])]
    .filter((t): t is string => t !== null);
  // A tenant without a stack file here is still asked of the backend: a teammate's stack in a
  // shared backend (Pulumi Cloud, a bucket) holds its resources, and its file may just not be in
  // this checkout. A delete command for a live tenant's host is the worst this check could print.
  const holdings = await holdingsOf(deps, tenants, stacks);
  const holdingOf = (tenant: string | null): Holding => {
    if (tenant === null) return { kind: "none", reason: "it has no tenant: tag, and its label is no stack's" };
    return holdings.get(tenant)!;
  };
  const rows = linodeRows(instances, volumes, tenantOf, holdingOf);
  deps.io.out(options.json ? JSON.stringify(rows, null, 2) : formatLinodeRows(rows));
  // Something billing that no destroy removes, or that cannot be told: cron must hear of it.
  return rows.some((r) => r.held !== "held") ? 1 : 0;
}

/** The tenant a resource is for: its `tenant:` tag, else the stack whose instance or volume label it has. */
function tenantFrom(kind: "instance" | "volume", r: { tags: readonly string[]; label: string }, stacks: readonly string[]): string | null {
  const tag = r.tags.find((t) => t.startsWith(TENANT_TAG_PREFIX));
  if (tag !== undefined) return tag.slice(TENANT_TAG_PREFIX.length);
  return stacks.find((s) => resourceNames(s)[kind] === r.label) ?? null;
}

/** Each tenant's stack state, read as list-tenants reads it (`pulumi stack export`), a few at a time. */
async function holdingsOf(deps: ScriptDeps, tenants: readonly string[], stacks: readonly string[]): Promise<Map<string, Holding>> {
  if (tenants.length === 0) return new Map();
  if (!(await deps.pulumi.available())) return new Map(tenants.map((t) => [t, { kind: "unknown", reason: "no pulumi CLI" }]));
  deps.io.err(`Reading the state of ${tenants.length} stack${tenants.length === 1 ? "" : "s"} with \`pulumi stack export\`…`);
  const states = await mapLimit(tenants, 4, (t) => stackState(deps.pulumi, t));
  return new Map(tenants.map((t, i): [string, Holding] => {
    const state = states[i]!;
    if (state.kind === "state") return [t, { kind: "state", state }];
    if (state.kind === "no-stack") {
      const file = stacks.includes(t) ? "" : `no stack file ${STACKS_DIR}/Pulumi.${t}.yaml here, and `;
      return [t, { kind: "none", reason: `${file}stack ${t} is not in this Pulumi backend (\`pulumi stack ls\` lists those it has; a tenant deployed from another backend, such as a teammate's, is not seen)` }];
    }
    return [t, { kind: "unknown", reason: state.message }];
  }));
}

function linodeRows(
  instances: readonly LinodeInstance[],
  volumes: readonly LinodeVolume[],
  tenantOf: (kind: "instance" | "volume", r: { tags: readonly string[]; label: string }) => string | null,
  holdingOf: (tenant: string | null) => Holding,
): LinodeRow[] {
  const judge = (kind: "instance" | "volume", id: number, tenant: string | null) => {
    const holding = holdingOf(tenant);
    if (holding.kind !== "state") return { stack: null, held: holding.kind === "none" ? "orphaned" as const : "unknown" as const, reason: holding.reason };
    const { linodeIds, pendingCreates } = holding.state;
    if ((kind === "instance" ? linodeIds.instances : linodeIds.volumes).includes(String(id))) return { stack: tenant, held: "held" as const, reason: null };
    const pending = pendingCreates.length > 0 ? `; an interrupted \`pulumi up\` left a create pending there: \`pulumi refresh --stack ${tenant}\` may take it into the state` : "";
    return { stack: null, held: "orphaned" as const, reason: `stack ${tenant}'s state does not hold it${pending}` };
  };
  const instanceRows = [...instances].sort((a, b) => a.id - b.id).map((i): LinodeRow => {
    const tenant = tenantOf("instance", i);
    const verdict = judge("instance", i.id, tenant);
    return {
      kind: "instance", id: i.id, label: i.label, tenant, region: i.region, plan: i.type, sizeGb: null, status: i.status, created: i.created,
      attachedTo: null, hourlyUsd: findPlan(i.type)?.hourlyUsd ?? null, ...verdict,
      delete: verdict.held === "orphaned" ? [`linode-cli linodes delete ${i.id}`] : null,
    };
  });
  const orphanInstances = new Set(instanceRows.filter((r) => r.held === "orphaned").map((r) => r.id));
  const volumeRows = [...volumes].sort((a, b) => a.id - b.id).map((v): LinodeRow => {
    const tenant = tenantOf("volume", v);
    const verdict = judge("volume", v.id, tenant);
    // An attached volume is detached before it is deleted; deleting its instance detaches it.
    const detach = v.linode_id !== null && !orphanInstances.has(v.linode_id) ? [`linode-cli volumes detach ${v.id}`] : [];
    return {
      kind: "volume", id: v.id, label: v.label, tenant, region: v.region, plan: null, sizeGb: v.size, status: v.status, created: v.created,
      attachedTo: v.linode_id, hourlyUsd: Math.round(volumeHourlyUsd(v.size) * 1e6) / 1e6, ...verdict,
      delete: verdict.held === "orphaned" ? [...detach, `linode-cli volumes delete ${v.id}`] : null,
    };
  });
  return [...instanceRows, ...volumeRows];
}

const perHour = (usd: number | null) => (usd === null ? "?" : usd.toFixed(3));
const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;
const total = (rows: readonly LinodeRow[]) => `$${(rows.reduce((sum, r) => sum + (r.hourlyUsd ?? 0), 0)).toFixed(2)}/hour`;

/** How an orphan is deleted, in words: the commands, and when a volume's may run. */
function deleteWith(r: LinodeRow): string {
  const commands = r.delete ?? [];
  if (r.kind === "instance") return `\`${commands[0]}\``;
  if (commands.length === 2) return `\`${commands[0]}\`, then \`${commands[1]}\` once it is detached`;
  return `\`${commands[0]}\`${r.attachedTo !== null ? ` once instance ${r.attachedTo} is deleted (which detaches it)` : ""}`;
}

export function formatLinodeRows(rows: readonly LinodeRow[]): string {
  if (rows.length === 0) return `Linode holds nothing of the kit's: no instance or volume is tagged ${KIT_TAG}.`;
  const table = formatTable<LinodeRow>([
    { header: "KIND", value: (r) => r.kind },
    { header: "ID", value: (r) => String(r.id) },
    { header: "LABEL", value: (r) => r.label },
    { header: "TENANT", value: (r) => r.tenant ?? "?" },
    { header: "REGION", value: (r) => r.region },
    { header: "PLAN/SIZE", value: (r) => r.plan ?? `${r.sizeGb} GB` },
    { header: "STATUS", value: (r) => r.status },
    { header: "$/HOUR", value: (r) => perHour(r.hourlyUsd), align: "right" },
    { header: "HELD BY", value: (r) => (r.held === "held" ? `stack ${r.stack}` : r.held === "orphaned" ? "no stack" : "cannot tell") },
  ], rows);
  const what = (r: LinodeRow) => `${r.label} (${r.kind} ${r.id}, tenant ${r.tenant ?? "?"}, ${r.hourlyUsd === null ? "price not in infra/catalog.ts" : `$${perHour(r.hourlyUsd)}/hour`})`;
  const notes = rows.filter((r) => r.held !== "held").map((r) => (r.held === "orphaned"
    ? `${what(r)}: no stack holds it (${r.reason}): \`pulumi destroy\` cannot remove it; delete it in Cloud Manager or with ${deleteWith(r)}`
    : `${what(r)}: cannot tell whether stack ${r.tenant} holds it: ${r.reason}`));
  const counted = rows.filter((r) => r.kind === "instance").length;
  const onLinode = `${plural(counted, "instance")} and ${plural(rows.length - counted, "volume")} on Linode tagged ${KIT_TAG}`;
  const unpriced = rows.filter((r) => r.hourlyUsd === null).length;
  const together = `${total(rows)} together${unpriced > 0 ? `, not counting ${unpriced} whose plan infra/catalog.ts does not list` : ""}`;
  if (notes.length === 0) return `${table}\n\n${onLinode}, each held by a stack: ${together}.`;
  const orphans = rows.filter((r) => r.held === "orphaned");
  const unknown = rows.filter((r) => r.held === "unknown").length;
  const parts = [
    ...(orphans.length > 0 ? [`${orphans.length} that no stack holds: ${total(orphans)}`] : []),
    ...(unknown > 0 ? [`${unknown} whose stack's state could not be read`] : []),
  ];
  return `${table}\n\n${notes.join("\n")}\n\n${onLinode} (${together}); ${parts.join("; ")}.`;
}
