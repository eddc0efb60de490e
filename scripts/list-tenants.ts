// npm run list-tenants [-- [--linode] [--json] [--prometheus <dir>]]
// One line per stack file in stacks/: where it runs, what it costs, when it expires, its
// endpoint and whether it is deployed (from `pulumi stack output --json` when the CLI is there).
// With --linode, what Linode itself holds of the kit's, stack or no stack (lib/linode-check.ts).
import { join, resolve } from "node:path";
import { costOf, findPlan } from "../infra/catalog.ts";
import { DEFAULT_PLAN, DEFAULT_VOLUME_SIZE_GB } from "../infra/config/defaults.ts";
import { SSH_CLOSED } from "../infra/host.ts";
import { EXIT_CODES_USAGE, parseFlags, runScript, UsageError } from "./lib/cli.ts";
import { type ScriptDeps, withDefaults } from "./lib/deps.ts";
import { TOKEN_FLAG_REFUSAL } from "./lib/linode-api.ts";
import { checkLinode } from "./lib/linode-check.ts";
import { writeTargets } from "./lib/prometheus-targets.ts";
import { endpointOf, type StackOutputs } from "./lib/pulumi.ts";
import { formatTable } from "./lib/table.ts";
import { expiryOf, FAILED_DEPLOY, outputsOf, readTenants, relative, type Tenant } from "./lib/tenants.ts";

const USAGE = `Usage: npm run list-tenants [-- [--linode] [--json] [--prometheus <dir>]]

Lists every tenant (stacks/Pulumi.<tenant>.yaml): region, plan, GPU, cost per hour, expiry,
endpoint and status. Status and expiry come from \`pulumi stack output --json\` when the pulumi
CLI and the stack's state are available: deployed, SSH closed (no adminCidrs), host only, expired, failed
deploy (resources exist: a first \`pulumi up\` that failed left a billing instance), not
deployed, or unknown (why). The last line adds up the cost per hour of those running; stacks
whose state could not be read are counted apart, as unknown, and their cost is not in it.
Exits 1 when any stack is unknown (its state could not be read, or there is no pulumi CLI),
after printing every row.

  --json    print the rows as a JSON array: stack, region, plan, gpu, hourlyUsd (null when not
            known), expires (the table's text), expiresAt (ISO, null when it never expires or
            cannot be told), endpoint, and status, one of the words above ("unknown" without
            its why; "ssh-closed" for SSH closed); beside it failedDeploy (true for a stack whose
            first \`pulumi up\` failed, "expired" ones too), reason (why the status is unknown,
            the table's sentence for ssh-closed, else null) and problem
            (what is wrong with its stack file, else null)
  --linode  ask Linode's API instead, for what it bills whether a stack holds it or not (an
            interrupted first \`pulumi up\`, a deleted stack file, a destroy that failed half way):
            every instance and volume tagged gpu-sandbox, its tenant (its tenant: tag), region,
            plan or size, status, cost per hour (infra/catalog.ts) and the stack whose state
            holds it (\`pulumi stack export\`). One that no stack holds is flagged with the
            linode-cli command that deletes it, since \`pulumi destroy\` cannot; the run then exits
            1, as it does when a stack's state cannot be read. With nothing tagged, one line says
            Linode holds nothing of the kit's. Needs LINODE_TOKEN in the environment (never a
            flag): a token with read-only Linodes and Volumes suffices. LINODE_URL (the API's
            address, https://api.linode.com) and LINODE_API_VERSION (v4) point it elsewhere, as
            they do the Linode provider. With --json, a row per instance and volume: kind, id,
            label, tenant, region, plan, sizeGb, status, created, attachedTo, hourlyUsd, stack,
            held ("held", "orphaned" or "unknown"), reason (why not held, else null) and delete
            (the linode-cli commands that delete an orphan, in order, else null)
  --prometheus <dir>
            instead of the table, write Prometheus file_sd targets for every tenant with an
            endpoint, for templates/operator/prometheus/prometheus-fleet.yml's jobs: <dir>/
            letsencrypt.json, self-signed.json and http.json (tls.mode off), a target group per
            tenant (its endpoint's host:port, labelled tenant), and self-signed-ca.pem, the
            self-signed tenants' CAs. Each file is written whole then renamed, so Prometheus never
            reads half of one; <dir> is made if missing. A stack without an endpoint is left out,
            said on stderr; one whose state cannot be read keeps what the previous files held for
            it (and the run exits 1). docs/operations.md, "Monitoring many tenants"

Examples:
  npm run list-tenants
  npm run --silent list-tenants -- --json | jq -r '.[] | select(.status == "expired") | .stack'
  npm run --silent list-tenants -- --json | jq -r --arg by "$(date -u -d '+7 days' +%FT%T.000Z)" '.[] | select(.expiresAt != null and .expiresAt < $by) | .stack'
  npm run list-tenants -- --linode
  npm run --silent list-tenants -- --prometheus /etc/prometheus/gpu-sandbox
  npm run --silent list-tenants -- --linode --json | jq -r '.[] | select(.held == "orphaned") | .delete[]'

${EXIT_CODES_USAGE}`;

export interface TenantRow {
  readonly stack: string;
  readonly region: string;
  readonly plan: string;
  readonly gpu: string;
  /** From the stack's outputs when deployed, else the catalog price of the configured plan and volume. */
  readonly hourlyUsd: number | null;
  /** ISO time to the minute and how far it is from now, or a sentence when there is none: for a reader. */
  readonly expires: string;
  /**
   * When it expires, as the stack's expiresAt (ISO, to the millisecond), for a script: null
   * when it never does, is not deployed, or cannot be told (the `expires` text says which).
   */
  readonly expiresAt: string | null;
  readonly endpoint: string;
  /**
   * One of a few fixed words, so that a script can compare it (`select(.status == "expired")`):
   * what is known is in the fields below, which the table shows beside it.
   */
  readonly status: string;
  /** Its first `pulumi up` failed, leaving a billing instance (status "failed deploy …", or "expired"). */
  readonly failedDeploy: boolean;
  /** Why the status is "unknown" (its state could not be read), or what "ssh-closed" means (the table's text); null otherwise. */
  readonly reason: string | null;
  /** What is wrong with its stack file (problems the validator found, or why it cannot be read); null when nothing. */
  readonly problem: string | null;
}

/** A row from what is known about a tenant; `now` decides "expired". */
export function tenantRow(t: Tenant, now: Date): TenantRow {
  const outputs = outputsOf(t);
  const str = (v: unknown) => (typeof v === "string" && v !== "" ? v : undefined);
  // A stack file that cannot be read says nothing of its plan: "?", not the default's as if known.
  const planId = str(outputs.plan) ?? t.config?.plan.id ?? str(t.raw.plan) ?? (t.unreadableFile ? "?" : DEFAULT_PLAN);
  const plan = findPlan(planId);
  const volume = t.config?.volumeSizeGb ?? DEFAULT_VOLUME_SIZE_GB;
  const hourly = typeof outputs.hourlyCostUsd === "number" ? outputs.hourlyCostUsd : plan ? costOf(plan, volume).hourlyUsd : null;
  const gpu = plan ? `${plan.gpuCount} x ${plan.gpu.replace(/^NVIDIA /, "")} ${plan.vramGbPerGpu} GB` : "?";

  const expiry = expiryOf(t, now);
  let status: string;
  let expires: string;
  let expiresAt: string | null = null;
  let reason: string | null = null;
  switch (expiry.kind) {
    case "expired":
    case "expires":
      expires = `${expiry.at.toISOString().replace(/:\d\d\.\d+Z$/, "Z")} (${relative(expiry.at, now)})`;
      expiresAt = expiry.at.toISOString();
      status = expiry.kind === "expired" ? "expired" : expiry.failedDeploy ? FAILED_DEPLOY : deployedStatus(outputs);
      if (status === SSH_CLOSED_STATUS) reason = SSH_CLOSED_TEXT;
      break;
    case "no-ttl":
      expires = "never";
      status = expiry.failedDeploy ? FAILED_DEPLOY : deployedStatus(outputs);
      if (status === SSH_CLOSED_STATUS) reason = SSH_CLOSED_TEXT;
      break;
    case "not-deployed":
      expires = ttlText(t);
      status = "not deployed";
      break;
    case "unknown":
      expires = ttlText(t);
      status = "unknown";
      reason = expiry.reason;
      break;
  }
  return {
    stack: t.stack,
    region: str(outputs.region) ?? t.config?.region ?? (str(t.raw.region) ?? "?"),
    plan: planId,
    gpu,
    hourlyUsd: hourly,
    expires,
    expiresAt,
    endpoint: endpointOf(outputs) ?? "-",
    status,
    failedDeploy: "failedDeploy" in expiry && expiry.failedDeploy === true,
    reason,
    problem: t.configProblem ?? null,
  };
}

/** SSH closed: one word in the JSON's status, for a script to compare; the sentence is its reason, and the table's text. */
const SSH_CLOSED_STATUS = "ssh-closed";
const SSH_CLOSED_TEXT = "SSH closed (no adminCidrs): not updated";

/**
 * Deployed with an endpoint; deployed with SSH closed (no adminCidrs: whatever was deployed
 * before serves as it was, nothing is updated); or, from a kit that output no endpoint then,
 * only the host.
 */
function deployedStatus(outputs: StackOutputs): string {
  if (!endpointOf(outputs)) return "host only (no endpoint)";
  return outputs.sshCommand === SSH_CLOSED ? SSH_CLOSED_STATUS : "deployed";
}

function ttlText(t: Tenant): string {
  const ttl = t.config?.ttlHours;
  return ttl === undefined ? (t.config ? "never" : "?") : `${ttl}h after deploy`;
}

/** A row whose stack's state could not be read: it may be billing. */
const isUnknown = (r: TenantRow) => r.status === "unknown";

/** The table's STATUS: the status with what the JSON gives fields of their own, as a sentence. */
function statusText(r: TenantRow): string {
  if (r.status === SSH_CLOSED_STATUS) return `${SSH_CLOSED_TEXT}${r.problem !== null ? `; ${r.problem}` : ""}`;
  const marker = r.failedDeploy && r.status !== FAILED_DEPLOY ? ` (${FAILED_DEPLOY})` : "";
  return `${r.status}${marker}${r.reason !== null ? ` (${r.reason})` : ""}${r.problem !== null ? `; ${r.problem}` : ""}`;
}

export function formatTenants(rows: readonly TenantRow[]): string {
  if (rows.length === 0) return "No tenants: stacks/ has no Pulumi.<tenant>.yaml. Create one with `npm run new-tenant`.";
  const table = formatTable<TenantRow>([
    { header: "STACK", value: (r) => r.stack },
    { header: "REGION", value: (r) => r.region },
    { header: "PLAN", value: (r) => r.plan },
    { header: "GPU", value: (r) => r.gpu },
    { header: "$/HOUR", value: (r) => (r.hourlyUsd === null ? "?" : r.hourlyUsd.toFixed(2)), align: "right" },
    { header: "EXPIRES", value: (r) => r.expires },
    { header: "ENDPOINT", value: (r) => r.endpoint },
    { header: "STATUS", value: statusText },
  ], rows);
  const running = rows.filter((r) => ["deployed", SSH_CLOSED_STATUS, "host only", "expired", FAILED_DEPLOY].some((s) => r.status.startsWith(s)));
  const perHour = running.reduce((sum, r) => sum + Math.round((r.hourlyUsd ?? 0) * 100), 0) / 100;
  const tenants = `${rows.length} tenant${rows.length === 1 ? "" : "s"}`;
  // A stack whose state could not be read may well be billing: a total without it is a floor, not the cost.
  const unknown = rows.filter(isUnknown).length;
  if (unknown === 0) return `${table}\n\n${tenants}, ${running.length} running: $${perHour.toFixed(2)}/hour together.`;
  return `${table}\n\n${tenants}, ${running.length} running ($${perHour.toFixed(2)}/hour together), ${unknown} unknown: their cost is not included.`;
}

export async function main(argv: readonly string[], partial: Partial<ScriptDeps> = {}): Promise<number> {
  const deps = withDefaults(partial);
  return runScript(deps.io, async () => {
    const { values } = parseFlags(argv, { json: { type: "boolean" }, linode: { type: "boolean" }, prometheus: { type: "string" } }, USAGE, {
      rejected: { "linode-token": TOKEN_FLAG_REFUSAL, token: TOKEN_FLAG_REFUSAL },
    });
    if (values.help) {
      deps.io.out(USAGE);
      return 0;
    }
    if (values.prometheus !== undefined && (values.linode || values.json)) throw new UsageError(`--prometheus writes target files instead of the listing: leave out --${values.linode ? "linode" : "json"}`);
    if (values.prometheus === "") throw new UsageError("--prometheus needs a directory: --prometheus /etc/prometheus/gpu-sandbox");
    if (values.linode) return checkLinode(deps, { json: values.json === true });
    const now = deps.now();
    // Each stack's outputs cost one `pulumi` run; say so on stderr (stdout may be piped JSON).
    if (await deps.pulumi.available()) deps.io.err("Reading stack outputs with `pulumi stack output`…");
    const tenants = await readTenants(deps);
    const rows = tenants.map((t) => tenantRow(t, now));
    if (values.prometheus !== undefined) return prometheusTargets(deps, values.prometheus, tenants.map((tenant, i) => ({ tenant, unknown: isUnknown(rows[i]!) ? rows[i]!.reason ?? "unknown" : null })));
    deps.io.out(values.json ? JSON.stringify(rows, null, 2) : formatTenants(rows));
    // A listing with holes is not a success: a script (or cron) reading it must not take it for the whole picture.
    return rows.some(isUnknown) ? 1 : 0;
  });
}

/** --prometheus: the files written, a line each on stdout; what was left out or kept, on stderr. */
function prometheusTargets(deps: ScriptDeps, dir: string, tenants: Parameters<typeof writeTargets>[1]): number {
  const { written, kept } = writeTargets(resolve(deps.root, dir), tenants, deps.io.err);
  for (const [kind, n] of Object.entries(written)) deps.io.out(`${join(dir, `${kind}.json`)}: ${n} tenant${n === 1 ? "" : "s"}`);
  // Kept from the previous run is not a success: a cron job's mail should say that a stack cannot be read.
  return kept.length > 0 ? 1 : 0;
}

if (import.meta.main) process.exitCode = await main(process.argv.slice(2));
