// npm run rotate-admin-token -- --stack <name> [--overlap 7d] | --stack <name> --finish
// A planned rotation of a tenant's admin token: the old token keeps working beside the new one
// for the overlap, so the cron jobs, dashboards and tools that hold it have time to move.
import { finishRotation, startRotation } from "./lib/admin-token-rotation.ts";
import { EXIT_CODES_USAGE, parseFlags, required, runScript, UsageError } from "./lib/cli.ts";
import { type ScriptDeps, withDefaults } from "./lib/deps.ts";

const USAGE = `Usage: npm run rotate-admin-token -- --stack <name> [--overlap <n>d|<n>h|<n>m]
       npm run rotate-admin-token -- --stack <name> --finish

Rotates a tenant's admin token in two steps, with an overlap (docs/operations.md, "Rotate the
admin token"). A leaked token is not rotated this way: it must stop working at once (the same
page says how).

Start (without --finish): stores the stack's current admin token as the secret config
gpu-sandbox:previousAdminToken, with gpu-sandbox:previousAdminTokenUntil the overlap's end, then
replaces the admin token and deploys (\`pulumi up --replace <the admin token's URN>\`). From then
on the shim takes the new token and lets the old one in until the end, marking each request
that used it (a header, its log line, shim_admin_previous_token_requests_total). Run again after a
failed deploy, it goes on; while another rotation is under way it refuses (finish that first).
Neither token is printed: the new one is \`pulumi stack output adminToken --show-secrets\`.

  --stack <name>       the tenant's stack (required)
  --overlap <n>d|h|m   how long the old token is still let in: days, hours or minutes, from 1
                       minute to 90 days (default 7d)
  --finish             the end: removes both settings and deploys; the old token is refused from
                       then on (as it is anyway once the overlap is over)

Examples:
  npm run rotate-admin-token -- --stack acme --overlap 14d
  npm run rotate-admin-token -- --stack acme --finish

${EXIT_CODES_USAGE}`;

const OPTIONS = { stack: { type: "string" }, overlap: { type: "string" }, finish: { type: "boolean" } } as const;
const UNIT_MS = { d: 86_400_000, h: 3_600_000, m: 60_000 } as const;
const MAX_OVERLAP_MS = 90 * UNIT_MS.d;

/** `--overlap` in milliseconds: a whole number of days, hours or minutes, 1 minute to 90 days. */
export function overlapMs(value: string | undefined): number {
  if (value === undefined) return 7 * UNIT_MS.d;
  const m = /^(\d{1,6})([dhm])$/.exec(value);
  const ms = m ? Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS] : NaN;
  if (!(ms >= UNIT_MS.m && ms <= MAX_OVERLAP_MS)) throw new UsageError(`--overlap "${value}" must be a whole number of days, hours or minutes (7d, 36h, 90m), from 1m to 90d`);
  return ms;
}

export async function main(argv: readonly string[], partial: Partial<ScriptDeps> = {}): Promise<number> {
  const deps = withDefaults(partial);
  return runScript(deps.io, async () => {
    const { values } = parseFlags(argv, OPTIONS, USAGE);
    if (values.help) {
      deps.io.out(USAGE);
      return 0;
    }
    const stack = required("stack", values.stack, "the tenant's stack whose admin token to rotate");
    if (values.finish && values.overlap !== undefined) throw new UsageError("--overlap is for the start of a rotation, not with --finish");
    const overlap = values.finish ? 0 : overlapMs(values.overlap);
    if (!(await deps.pulumi.available())) throw new UsageError("rotate-admin-token needs the pulumi CLI on PATH");
    return values.finish ? finishRotation(stack, deps) : startRotation(stack, overlap, deps);
  });
}

if (import.meta.main) process.exitCode = await main(process.argv.slice(2));
