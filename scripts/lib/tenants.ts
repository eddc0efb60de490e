// Every tenant the repository knows (one stack file each in stacks/), with its validated config
// and, when the Pulumi CLI is there, its stack outputs. Shared by list-tenants and reap-expired,
// so both agree on what "deployed" and "expired" mean.
import { checkTtlHours, validateConfig } from "../../infra/config.ts";
import { formatProblem, Problems } from "../../infra/config/checks.ts";
import { numberAsWritten } from "../../infra/config/settings.ts";
import { CONFIG_NAMESPACE, type TenantConfig } from "../../infra/config/types.ts";
import { hostExpiry } from "../../infra/host.ts";
import { listStackNames, misplacedSetting, readStackConfig, StackFileError } from "../../infra/stack-file.ts";
import type { ScriptDeps } from "./deps.ts";
import { commandLine, destroyArgs, type OutputsResult, type StackOutputs, type StackState, stackOutputsAndState } from "./pulumi.ts";

export interface Tenant {
  readonly stack: string;
  /** The stack file's gpu-sandbox keys (empty when the file cannot be read). */
  readonly raw: Readonly<Record<string, unknown>>;
  /** Validated config, or undefined with `configProblem` saying why. */
  readonly config: TenantConfig | undefined;
  /** One line, for a table cell. */
  readonly configProblem: string | undefined;
  /**
   * The stack file could not be read or parsed (configProblem says why): its ttlHours is not
   * known, and Pulumi cannot use the stack until it is fixed.
   */
  readonly unreadableFile?: true;
  /** Stack outputs, or "no-cli" when the pulumi CLI is not on PATH. */
  readonly outputs: OutputsResult | "no-cli";
  /** For a stack with no outputs: what its state holds (a failed first deploy leaves resources). */
  readonly state?: StackState;
}

/** A tenant's stack outputs; none when they could not be read (or there is no pulumi CLI). */
export function outputsOf(t: Tenant): StackOutputs {
  return t.outputs !== "no-cli" && t.outputs.kind === "outputs" ? t.outputs.outputs : {};
}

/** Reads every stack file and, with the CLI, each stack's outputs (a few at a time: each call starts Pulumi). */
export async function readTenants(deps: ScriptDeps, options: { concurrency?: number } = {}): Promise<Tenant[]> {
  const stacks = listStackNames(deps.root);
  const cli = await deps.pulumi.available();
  return mapLimit(stacks, options.concurrency ?? 4, async (stack): Promise<Tenant> => {
    let raw: Record<string, unknown> = {};
    let config: TenantConfig | undefined;
    let configProblem: string | undefined;
    let unreadableFile = false;
    try {
      raw = readStackConfig(deps.root, stack);
      const r = validateConfig(raw, { stack, fileConfig: raw });
      if (r.ok) config = r.config;
      else configProblem = misplacedSetting(deps.root, stack) ?? `${r.problems.length} config problem${r.problems.length === 1 ? "" : "s"} (npm run render -- --stack ${stack})`;
    } catch (err) {
      // One file that cannot be read (EISDIR, EACCES, not YAML) is that tenant's problem: the others are still listed and reaped.
      if (!(err instanceof StackFileError)) throw err;
      configProblem = firstLine(err.message);
      unreadableFile = true;
    }
    const { outputs, state } = cli ? await stackOutputsAndState(deps.pulumi, stack) : { outputs: "no-cli" as const, state: undefined };
    return { stack, raw, config, configProblem, outputs, ...(state ? { state } : {}), ...(unreadableFile ? { unreadableFile: true } : {}) };
  });
}

/**
 * A message's first line, for a table cell: a YAML error goes on to quote the file with a caret
 * under the fault, and its first line already says where ("… at line 3, column 1:").
 */
function firstLine(message: string): string {
  return message.split("\n")[0]!.replace(/:\s*$/, "");
}

/** How a stack with a billing instance but no outputs (a first `pulumi up` that failed half way) is shown. */
export const FAILED_DEPLOY = "failed deploy (resources exist)";

/**
 * `failedDeploy`: the stack has resources (a billing instance) but no outputs: its first `pulumi up`
 * failed (the outputs wait for the deploy, so a failed one writes none).
 */
export type Expiry =
  | { readonly kind: "expired"; readonly at: Date; readonly failedDeploy?: true }
  | { readonly kind: "expires"; readonly at: Date; readonly failedDeploy?: true }
  /** Deployed without ttlHours: never reaped. */
  | { readonly kind: "no-ttl"; readonly failedDeploy?: true }
  /** No stack, or a stack with neither outputs nor an instance (never deployed, or destroyed). */
  | { readonly kind: "not-deployed" }
  | { readonly kind: "unknown"; readonly reason: string };

/**
 * Whether a tenant is past its TTL, from its `expiresAt` output (createdAt + ttlHours, computed
 * at each `pulumi up`; createdAt is fixed at the first). A stack whose first `pulumi up` failed
 * has no outputs but may have an instance: its expiry is the state's createdAt + the stack
 * file's ttlHours, so the TTL still reaps what a failed deploy left billing.
 */
export function expiryOf(tenant: Tenant, now: Date): Expiry {
  const o = tenant.outputs;
  if (o === "no-cli") return { kind: "unknown", reason: "no pulumi CLI" };
  if (o.kind === "no-stack") return { kind: "not-deployed" };
  if (o.kind === "error") return { kind: "unknown", reason: o.message };
  if (Object.keys(o.outputs).length === 0) return failedDeployExpiry(tenant, now);
  const at = o.outputs.expiresAt;
  if (at === undefined || at === null || at === "") return { kind: "no-ttl" };
  const ms = typeof at === "string" ? Date.parse(at) : NaN;
  if (!Number.isFinite(ms)) return { kind: "unknown", reason: `expiresAt output "${String(at)}" is not a timestamp` };
  return ms <= now.getTime() ? { kind: "expired", at: new Date(ms) } : { kind: "expires", at: new Date(ms) };
}

function failedDeployExpiry(tenant: Tenant, now: Date): Expiry {
  const state = tenant.state;
  if (state?.kind === "state" && state.pendingCreates.length > 0) {
    // A first `pulumi up` killed while it waited for the boot: nothing will delete what Linode made.
    const what = state.pendingCreates.join(" and ");
    const [it, they] = state.pendingCreates.length > 1 ? ["them", "they"] : ["it", "it"];
    return {
      kind: "unknown",
      reason: `\`pulumi up\` was interrupted while Linode created ${what}: the state does not hold ${it}, so no destroy deletes ${it}, and ${they} may bill. ` +
        `Find ${it} with \`npm run list-tenants -- --linode\`, which gives the command that deletes ${it} (or in Linode's Cloud Manager, by label); delete ${it}, or take ${it} into the state with \`pulumi refresh --stack ${tenant.stack}\` ` +
        `(interactive: it asks what became of each pending create), then \`${commandLine(destroyArgs(tenant.stack))}\``,
    };
  }
  if (state === undefined || state.kind === "no-stack" || (state.kind === "state" && !state.hasInstance)) return { kind: "not-deployed" };
  if (state.kind === "error") return { kind: "unknown", reason: `no outputs, and the state could not be read: ${state.message}` };
  // Its ttlHours is in the stack file alone: one that cannot be read at all says nothing of it,
  // and "no ttlHours" (`never`) would show a billing host as kept on purpose.
  if (tenant.unreadableFile) {
    return { kind: "unknown", reason: `a failed deploy left an instance, and its stack file cannot be read: ${tenant.configProblem}` };
  }
  const ttl = tenant.config ? { hours: tenant.config.ttlHours } : fileTtlHours(tenant.raw);
  if ("problem" in ttl) {
    return { kind: "unknown", reason: `a failed deploy left an instance, and its stack file's ttlHours cannot be read (${ttl.problem}); fix it (npm run render -- --stack ${tenant.stack})` };
  }
  if (ttl.hours === undefined) return { kind: "no-ttl", failedDeploy: true };
  if (state.createdAt === undefined || !Number.isFinite(Date.parse(state.createdAt))) {
    // Its expiry cannot be judged, so it is not reaped, not even with --force (which destroys an
    // expired stack without its usage, and never makes one expire). A destroy from before the
    // instance depended on the record deleted the record first: say how to finish it by hand.
    return {
      kind: "unknown",
      reason: "a failed deploy left an instance, but its creation time is not in the state (an earlier `pulumi destroy` deleted it, then failed on the instance); " +
        `to destroy the instance, from the repository's root: \`${commandLine(destroyArgs(tenant.stack))}\``,
    };
  }
  const at = new Date(hostExpiry(state.createdAt, ttl.hours));
  return { kind: at.getTime() <= now.getTime() ? "expired" : "expires", at, failedDeploy: true };
}

/**
 * The ttlHours of a stack file that does not validate as a whole (its other settings' problems
 * do not make a failed deploy's TTL go away), read by the validator's own rule: "24", which
 * `pulumi config set` stores, is 24. A value that rule refuses is a problem, not "no ttlHours":
 * read as none, the host would be kept, billing, forever.
 */
function fileTtlHours(raw: Readonly<Record<string, unknown>>): { hours: number | undefined } | { problem: string } {
  // The file's text of it too, as the validator reads it: a top-level setting reaches `pulumi up`
  // as that text (1e1 is refused there, 010 is 10).
  const p = new Problems(undefined, (path) => numberAsWritten(raw, path));
  const hours = checkTtlHours(p, raw.ttlHours);
  return p.list[0] ? { problem: formatProblem(p.list[0], CONFIG_NAMESPACE) } : { hours };
}

/** "in 3h 5m" / "2h 10m ago", to the minute. */
export function relative(at: Date, now: Date): string {
  const mins = Math.round((at.getTime() - now.getTime()) / 60_000);
  const abs = Math.abs(mins);
  const d = Math.floor(abs / 1440);
  const h = Math.floor((abs % 1440) / 60);
  const m = abs % 60;
  const text = d > 0 ? `${d}d ${h}h` : h > 0 ? `${h}h ${m}m` : `${m}m`;
  return mins >= 0 ? `in ${text}` : `${text} ago`;
}

/** Like Promise.all(items.map(fn)) with at most `limit` running; results in input order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}
