// npm run new-tenant -- <name> --region <id> --admin-cidrs <a,b> [...]
// Writes stacks/Pulumi.<name>.yaml from flags, checked by the same validator as `pulumi up`
// (nothing is written when it finds a problem), then initialises the Pulumi stack and stores
// the Linode and Hugging Face tokens as secrets, read from the environment and passed on stdin.
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, relative } from "node:path";
import { Document, isMap, isScalar, type Pair } from "yaml";
import { isoSeconds } from "../api-shim/src/requests/period.ts";
import { validateConfig } from "../infra/config.ts";
import { decimalNumber, formatProblem } from "../infra/config/checks.ts";
import { CONFIG_NAMESPACE, type ConfigProblem, type TenantConfig } from "../infra/config/types.ts";
import { configWarnings, planFor } from "../infra/plan.ts";
import { Secret } from "../infra/secret.ts";
import { stackFilePath } from "../infra/stack-file.ts";
import { commaList, EXIT_CODES_USAGE, npmDashHint, parseFlags, runScript, UsageError } from "./lib/cli.ts";
import { type ScriptDeps, withDefaults } from "./lib/deps.ts";
import { TOKEN_FLAG_REFUSAL } from "./lib/linode-api.ts";
import { stackFileDifferences } from "./lib/stack-file-match.ts";
import { finishExisting, initStack, manualSteps, reportExisting, SECRETS_FROM_ENV } from "./lib/stack-setup.ts";

const USAGE = `Usage: npm run new-tenant -- <name> --region <id> --admin-cidrs <a,b> [options]

Writes stacks/Pulumi.<name>.yaml, validated like \`pulumi up\` (nothing is written if a flag is
wrong; an existing file is never overwritten). With the pulumi CLI on PATH it then runs
\`pulumi stack init <name>\` (with your current login; \`pulumi login --local\` if there is none)
and stores secrets from the environment with \`pulumi config set --secret\` (values on stdin):
LINODE_TOKEN → linode:token, and with --hf-token-from-env HF_TOKEN → gpu-sandbox:hfToken.
Without the CLI it prints those commands; when a step fails, the ones left to run.

A stack already in the backend under the name is used only if nothing is deployed in it: one
with outputs or resources may be a live tenant, so new-tenant sets nothing, removes the file it
wrote and exits 1.

Safe to run again with the same flags (a pipeline retrying): when the stack file is there with
the same settings (its header's time, and what Pulumi adds, aside), it finishes what an earlier
run left undone (\`stack init\`, a secret not stored) and exits 0, or says "nothing to do" on
stderr and exits 0; it never changes a deployed stack (one lacking a secret: exit 1, with the
command). A stored secret's value is not compared. When the file differs from what the flags
would write, it is never overwritten: new-tenant says how it differs (e.g.
"gpu-sandbox:ttlHours is 48 in the file, 24 from the flags"), what the backend holds and the
steps left, and exits 1.

  <name>                     3-24 lowercase letters, digits and hyphens: the stack and tenant name
  --region <id>              Linode region with the plan's GPU, e.g. us-ord (required)
  --plan <id>                GPU plan (default g2-gpu-rtx4000a1-s); see docs/configuration.md
  --model <hf id>            Hugging Face model, e.g. Qwen/Qwen2.5-7B-Instruct (a gated one needs --hf-token-from-env)
  --served-name <name>       the name clients send as "model" (default: the model id)
  --allowed-cidrs <a,b>      who may reach 80/443 (default 0.0.0.0/0,::/0)
  --admin-cidrs <a,b>        who may reach SSH and /admin (required): \`pulumi up\` deploys over
                             SSH, so put your own public address here: "$(curl -4s https://ifconfig.me)/32"
  --ttl-hours <n>            destroy by \`npm run reap-expired\` n hours after the first \`pulumi up\`
  --key <name:credits[:tier]>  a bootstrap API key (repeatable), e.g. app:1000:developer; tier free when left out
  --tls <mode>               letsencrypt (default), self-signed or off
  --email <address>          Let's Encrypt account email
  --hf-token-from-env        store $HF_TOKEN as gpu-sandbox:hfToken (gated models)

Examples:
  npm run new-tenant -- acme --region us-ord --plan g2-gpu-rtx4000a1-s \\
    --model Qwen/Qwen2.5-7B-Instruct --served-name qwen2.5-7b --allowed-cidrs 0.0.0.0/0,::/0 \\
    --admin-cidrs "$(curl -4s https://ifconfig.me)/32" --ttl-hours 24 --key app:1000:developer
  HF_TOKEN=hf_… npm run new-tenant -- team-01 --region de-fra-2 --model meta-llama/Llama-3.1-8B-Instruct \\
    --admin-cidrs "$(curl -4s https://ifconfig.me)/32" --tls self-signed --allowed-cidrs 198.51.100.0/24 --hf-token-from-env

${EXIT_CODES_USAGE}`;

const OPTIONS = {
  region: { type: "string" },
  plan: { type: "string" },
  model: { type: "string" },
  "served-name": { type: "string" },
  "allowed-cidrs": { type: "string" },
  "admin-cidrs": { type: "string" },
  "ttl-hours": { type: "string" },
  key: { type: "string", multiple: true },
  tls: { type: "string" },
  email: { type: "string" },
  "hf-token-from-env": { type: "boolean" },
} as const;

export type NewTenantFlags = {
  readonly [K in keyof typeof OPTIONS]?: (typeof OPTIONS)[K] extends { multiple: true } ? string[] : (typeof OPTIONS)[K] extends { type: "boolean" } ? boolean : string;
};

/** The flag behind each config key, so a validator message can name what to change. */
const FLAG_OF: readonly [configKey: string, flag: string][] = [
  ["(stack name)", "<name>"], ["region", "--region"], ["plan", "--plan"], ["model.id", "--model"],
  ["model.servedName", "--served-name"], ["allowedCidrs", "--allowed-cidrs"], ["adminCidrs", "--admin-cidrs"],
  ["ttlHours", "--ttl-hours"], ["keys", "--key"], ["tls.mode", "--tls"], ["tls.email", "--email"], ["hfToken", "--hf-token-from-env"],
];

/** A number when the text is one ("24" → 24), else the text, so the validator names the bad value. */
const numeric = (s: string): number | string => decimalNumber(s) ?? s;

/**
 * Flags → raw stack config (keys without the namespace), in the order the file shows them.
 * Only what the operator gave is written: defaults stay defaults (docs/configuration.md).
 */
export function configFromFlags(flags: NewTenantFlags): Record<string, unknown> {
  const raw: Record<string, unknown> = {};
  if (flags.region !== undefined) raw.region = flags.region;
  if (flags.plan !== undefined) raw.plan = flags.plan;
  if (flags.model !== undefined || flags["served-name"] !== undefined) {
    raw.model = { ...(flags.model !== undefined ? { id: flags.model } : {}), ...(flags["served-name"] !== undefined ? { servedName: flags["served-name"] } : {}) };
  }
  const allowed = commaList(flags["allowed-cidrs"]);
  if (allowed) raw.allowedCidrs = allowed;
  const admin = commaList(flags["admin-cidrs"]);
  if (admin) raw.adminCidrs = admin;
  if (flags.tls !== undefined || flags.email !== undefined) {
    raw.tls = { ...(flags.tls !== undefined ? { mode: flags.tls } : {}), ...(flags.email !== undefined ? { email: flags.email } : {}) };
  }
  if (flags.key?.length) raw.keys = flags.key.map(parseKeyFlag);
  if (flags["ttl-hours"] !== undefined) raw.ttlHours = numeric(flags["ttl-hours"]);
  return raw;
}

/** `app:1000:developer` → { name, credits, tier }; the validator judges the values. */
export function parseKeyFlag(text: string): Record<string, unknown> {
  const parts = text.split(":");
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => p.trim() === "")) {
    throw new UsageError(`--key "${text}" must be name:credits[:tier], e.g. app:1000:developer (tiers: free, the default, developer, pro, enterprise; a tier of your own goes in the stack file's tiers, then in a key's tier there)`);
  }
  const [name, credits, tier] = parts as [string, string, string | undefined];
  return { name, credits: numeric(credits), ...(tier !== undefined ? { tier } : {}) };
}

/**
 * What new-tenant refuses beyond the validator: no adminCidrs. The validator allows an empty list
 * for an existing stack (emptied after a deploy, it closes SSH while the host keeps serving), but
 * a new tenant's first `pulumi up` deploys over SSH: without it, it would create the GPU host,
 * which bills, and never deploy the endpoint.
 */
export function newTenantProblems(raw: Record<string, unknown>): ConfigProblem[] {
  // `--admin-cidrs ","` gives an empty list, which is none too.
  if (Array.isArray(raw.adminCidrs) && raw.adminCidrs.length > 0) return [];
  return [{ key: "adminCidrs", value: raw.adminCidrs, message: "is required for a new tenant: `pulumi up` deploys the endpoint over SSH, which only these addresses reach, " +
    'and without one would create the GPU host (which bills) and serve nothing; put your own public address: --admin-cidrs "$(curl -4s https://ifconfig.me)/32"' }];
}

/** Each validator problem, prefixed with the flag to change. */
export function describeFlagProblems(problems: readonly ConfigProblem[]): string {
  const lines = problems.map((p) => {
    const flag = FLAG_OF.find(([key]) => p.key === key || p.key.startsWith(`${key}.`) || p.key.startsWith(`${key}[`))?.[1];
    return `  - ${flag ? `${flag}: ` : ""}${formatProblem(p, CONFIG_NAMESPACE)}`;
  });
  const noun = problems.length === 1 ? "problem" : "problems";
  return `new-tenant: ${problems.length} ${noun}; nothing was written:\n${lines.join("\n")}\nSee \`npm run new-tenant -- --help\` and docs/configuration.md.`;
}

/** The stack file: YAML built as objects, a header saying what it is and costs, comments on the keys that matter. */
export function stackFileText(raw: Record<string, unknown>, config: TenantConfig, now: Date): string {
  const planLines = new Map(planFor(config).lines);
  const doc = new Document({ config: Object.fromEntries(Object.entries(raw).map(([k, v]) => [`${CONFIG_NAMESPACE}:${k}`, v])) });
  doc.commentBefore = [
    ` Tenant ${config.tenant}: written by \`npm run new-tenant\` on ${isoSeconds(now.getTime())}.`,
    ` GPU: ${planLines.get("GPU")}`,
    ` Cost: ${planLines.get("Cost")}`,
    ` Expires: ${planLines.get("Expires")}`,
    ` Review: npm run render -- --stack ${config.tenant}    Deploy: pulumi up --stack ${config.tenant}`,
    " Every key is described in docs/configuration.md; secrets are added by `pulumi config set --secret`.",
  ].join("\n");
  const comments: Record<string, string> = {
    allowedCidrs: " Who may reach HTTPS (443) and HTTP (80); 80 alone with tls.mode off.",
    adminCidrs: " Who may reach SSH (22) and /admin; `pulumi up` deploys over SSH from here.",
    keys: " Made at deploy time; plaintext only in the secret output apiKeys.",
  };
  const map = doc.get("config", true);
  if (isMap(map)) {
    for (const pair of map.items as Pair[]) {
      const key = isScalar(pair.key) ? String(pair.key.value).slice(CONFIG_NAMESPACE.length + 1) : "";
      if (comments[key] && isScalar(pair.key)) pair.key.commentBefore = comments[key];
    }
  }
  return doc.toString();
}

export interface NewTenantRequest {
  readonly name: string;
  readonly flags: NewTenantFlags;
}

/**
 * Creates the stack file with `text`; false when it is there already ("wx": also when another run
 * creates it at the same moment). When a write fails after the create (a full disk, a quota, an
 * I/O error), the file this run created is removed: left empty, list-tenants would list it and the
 * next run would take it for an earlier run's and say to go on with it. The file comes before
 * anything in Pulumi, so a failure here has changed nothing there.
 */
function createStackFile(path: string, shownFile: string, text: string): boolean {
  const cannot = (err: unknown, left = "nothing was written") => new UsageError(`new-tenant: cannot write ${shownFile}: ${(err as Error).message}; ${left}. ` +
    "No Pulumi stack was created or changed (new-tenant writes the file first). Fix the cause (disk space, a quota, permissions) and run again.", { exit: "failed" });
  try {
    mkdirSync(dirname(path), { recursive: true });
  } catch (err) {
    throw cannot(err);
  }
  let fd: number;
  try {
    fd = openSync(path, "wx");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw cannot(err); // not created: nothing to remove
  }
  try {
    try {
      writeFileSync(fd, text);
    } finally {
      closeSync(fd); // a quota on a network file system may fail only here
    }
  } catch (err) {
    try {
      rmSync(path);
    } catch (rmErr) {
      throw cannot(err, `the partly written file could not be removed (${(rmErr as Error).message}): remove it before running again`);
    }
    throw cannot(err);
  }
  return true;
}

/** How the stack file there differs from what this run would write (stackFileDifferences). */
function existingDifferences(path: string, raw: Record<string, unknown>, secretKeys: readonly string[]): string[] {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    return [`it cannot be read (${(err as Error).message})`];
  }
  return stackFileDifferences(text, raw, secretKeys);
}

/** Validates, writes the stack file, then sets the stack up in Pulumi (or says how). */
export async function newTenant(req: NewTenantRequest, deps: ScriptDeps): Promise<number> {
  const { io, env } = deps;
  const raw = configFromFlags(req.flags);
  const hfToken = req.flags["hf-token-from-env"] ? env.HF_TOKEN : undefined;
  if (req.flags["hf-token-from-env"] && !hfToken) {
    throw new UsageError("--hf-token-from-env: HF_TOKEN is not set; export your Hugging Face token (hf_…) first. Nothing was written.");
  }
  // The token is not written to the file, but the validator is told it is set (as `pulumi up` will be).
  const result = validateConfig(hfToken ? { ...raw, hfToken: Secret.of(hfToken) } : raw, { stack: req.name });
  // The file is for `pulumi up`, which refuses an adminCidrs nobody can connect from; new-tenant
  // also refuses none at all (newTenantProblems). Every problem is reported at once.
  const problems = [...(result.ok ? result.deployProblems : result.problems), ...newTenantProblems(raw)];
  if (!result.ok || problems.length > 0) throw new UsageError(describeFlagProblems(problems));

  const path = stackFilePath(deps.root, req.name);
  const secrets = SECRETS_FROM_ENV.filter((s) => s.always || hfToken !== undefined);
  const ctx = { pulumi: deps.pulumi, io, env, root: deps.root, stack: req.name, secrets, shownFile: relative(deps.root, path), discardFile: () => rmSync(path),
    smokeTest: { selfSigned: result.config.tls.mode === "self-signed", keyName: result.config.keys[0]?.name } };
  // There already: an earlier run's, re-run (finish what it left, or nothing to do), or another
  // tenant's file (refused, saying how it differs).
  if (!createStackFile(path, ctx.shownFile, stackFileText(raw, result.config, deps.now()))) {
    const rerun = { ...ctx, discardFile: undefined };
    const differences = existingDifferences(path, raw, secrets.map((s) => s.key));
    return differences.length ? reportExisting(rerun, differences) : finishExisting(rerun);
  }
  io.out(`Wrote ${ctx.shownFile} (${planFor(result.config).lines.find(([l]) => l === "Cost")?.[1].split(" (")[0]}).`);
  // The plan's and `pulumi up`'s warnings, now: the README goes from here to `pulumi up`, and a
  // model too large for the GPU shows only once the host bills.
  for (const warning of configWarnings(result.config)) io.out(`Warning: ${warning}`);

  if (!(await deps.pulumi.available())) {
    io.out(`The pulumi CLI is not on PATH.\n${manualSteps(req.name, secrets, env)}`);
    return 0;
  }
  return (await initStack(ctx)) ? 0 : 1;
}

export async function main(argv: readonly string[], partial: Partial<ScriptDeps> = {}): Promise<number> {
  const deps = withDefaults(partial);
  return runScript(deps.io, async () => {
    const { values, positionals } = parseFlags(argv, OPTIONS, USAGE, { positionals: true, rejected: {
      "hf-token": "a token on the command line lands in shell history; export HF_TOKEN and pass --hf-token-from-env",
      "linode-token": TOKEN_FLAG_REFUSAL,
    } });
    if (values.help) {
      deps.io.out(USAGE);
      return 0;
    }
    if (positionals.length !== 1) throw new UsageError(`give exactly one tenant name${positionals.length ? ` (got: ${positionals.join(" ")})\n${npmDashHint(USAGE)}` : ""}\n\n${USAGE}`);
    const { help: _help, ...flags } = values;
    return newTenant({ name: positionals[0]!, flags }, deps);
  });
}

if (import.meta.main) process.exitCode = await main(process.argv.slice(2));
