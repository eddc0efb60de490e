// npm run reap-expired [-- --yes] [--now <iso>]
// Finds the stacks whose `expiresAt` output is in the past and destroys them with
// `pulumi destroy`. A dry run unless --yes. Meant for cron: plain output, one prefix per stack
// (--json: a row per stack on stdout, for a pipeline),
// exit 1 when a destroy failed or a stack's state could not be read.
import { resolve } from "node:path";
import { isoSeconds } from "../api-shim/src/requests/period.ts";
import { EXIT_CODES_USAGE, formatDuration, instantFlag, numberFlag, parseFlags, runScript, UsageError } from "./lib/cli.ts";
import { type ScriptDeps, withDefaults } from "./lib/deps.ts";
import { INTERRUPTED_EXIT_CODE, watchInterruption } from "./lib/interruption.ts";
import { commandLine, destroyArgs, tail } from "./lib/pulumi.ts";
import { lineSplitter, takeForce } from "./lib/reap-args.ts";
import { earlierExpiryNote, revokedLines } from "./lib/reap-messages.ts";
import { ReapReport } from "./lib/reap-report.ts";
import { type Expiry, expiryOf, FAILED_DEPLOY, mapLimit, outputsOf, readTenants, relative, type Tenant } from "./lib/tenants.ts";
import { earlierExpiry, exportUsage } from "./lib/usage-export.ts";

const USAGE = `Usage: npm run reap-expired [-- --yes] [--now <iso>] [--concurrency <n>] [--usage-dir <dir>] [--force [<stack>]] [--json]

Destroys every stack (stacks/Pulumi.<tenant>.yaml) whose expiresAt output (first \`pulumi up\`
+ ttlHours) is in the past, with \`pulumi destroy --yes --non-interactive --refresh --stack <tenant>\`. Without --yes it only
lists what it would destroy (and changes nothing). Stacks without ttlHours, not deployed, or not yet expired are kept.
The stack and its file stay (with no resources), so a second run does nothing.

Before destroying a tenant it revokes the tenant's live keys (the tenant is being destroyed;
one already expired is left as it is; revoked keys are marked "revoked_by": "reap-expired" in the keys file), waits up to 60 s for the
requests in flight to settle, then saves the tenant's usage (per key, day and model, since the stack
was created: key_id,key_name,day,model,requests,…; from a shim older than group=day,model, per key
and day without the model column, said on stderr) to <usage-dir>/<tenant>-usage-<time>.csv, and its keys (names, tiers, balances) to
<usage-dir>/<tenant>-keys-<time>.json: the ledger is on the tenant's volume, which the destroy
deletes. <usage-dir>/<tenant>.exported records that they were saved, for that expiry: a destroy
that failed (possibly after stopping the serving stack) is retried by the next run without
exporting again. If the export fails (e.g. this machine is not in adminCidrs), the tenant is
kept and the run exits 1; --force destroys it anyway, without its usage. Keys it revoked before
such a failure stay revoked (the KEPT line says so: clients get 401); <usage-dir>/<tenant>.revoked
lists them, so the run that saves the usage still marks them. So does the FAILED line of a destroy
that fails after the export. Just before revoking (or destroying a stack whose usage a run saved),
it reads the stack's expiresAt again: moved since the run began (a \`pulumi up\` raised ttlHours),
the stack is kept, nothing revoked or destroyed. A stack
kept because it is no longer expired, whose keys a run revoked for its earlier expiry, gets a line
on every run saying so and what to do, until its <tenant>.exported or <tenant>.revoked is deleted.
Exits 1 if a destroy or an export failed, or a stack's outputs could not be read, or the stack file
of a deployed stack could not be read (a stack with nothing deployed is only reported).
Ctrl-C (or SIGTERM) during --yes starts no further stack and lets a running destroy finish
Pulumi's safe cancel, then names each stack interrupted and exits 130: run it again (first
\`pulumi cancel --stack <stack>\` if pulumi says the stack is locked). A second Ctrl-C kills pulumi.

  --yes               destroy (default: dry run)
  --usage-dir <dir>   where usage is saved before a destroy (default: usage/; relative to the
                      repository's root, where npm runs the script)
  --force [<stack>]   destroy even when the usage could not be saved: that stack only (repeat
                      for more), or, without a name, every expired stack; a named stack that
                      is not expired is kept, and a line says so
  --now <iso>         judge expiry at this time instead of now: a timestamp with its zone,
                      e.g. 2026-03-01T18:00:00Z
  --concurrency <n>   destroys at a time (default 2)
  --json              once the run is over (failed, interrupted or stopped by an error too, its
                      exit code as without it), a JSON array on stdout, a row per stack: stack, action ("destroyed",
                      "would-destroy" in a dry run, "kept", "failed", "unknown" when its expiry
                      cannot be told, "interrupted"), expiresAt (null: none), failedDeploy,
                      reason (why kept, failed, unknown or interrupted, or destroyed without its
                      usage; else null), usageFile, keysFile and creditsFile (its saved usage,
                      keys and credits statement, else null),
                      revokedKeys and unsureKeys; every line goes to stderr then. A bad flag, or
                      no pulumi CLI, prints no JSON

Needs the pulumi CLI, and for the local backend PULUMI_CONFIG_PASSPHRASE (and LINODE_TOKEN
unless the stack stores linode:token).

Examples:
  npm run reap-expired
  npm run reap-expired -- --yes
  npm run reap-expired -- --yes --force acme     # acme's endpoint is gone: destroy it without its usage
  npm run --silent reap-expired -- --yes --json > reap.json   # in CI: jq -r '.[] | select(.action == "failed") | .stack' reap.json
  # from cron every 15 minutes, with the environment it needs: README.md, "Operate many tenants"
  */15 * * * * . $HOME/.config/gpu-sandbox/cron.env && cd /srv/gpu-sandbox && flock -n /tmp/gpu-sandbox-reap.lock npm run --silent reap-expired -- --yes >> $HOME/gpu-sandbox-reap.log 2>&1

${EXIT_CODES_USAGE}`;

export interface ReapPlan {
  readonly expired: readonly { tenant: Tenant; at: Date }[];
  /** Deployed and not expired (or without ttlHours): kept. */
  readonly notExpired: readonly Tenant[];
  readonly unreadable: readonly { tenant: Tenant; reason: string }[];
  /** Why each stack that is not destroyed is not: "not expired (expires in 22h 0m)". */
  readonly kept: ReadonlyMap<string, string>;
  readonly lines: readonly string[];
  /** A row per stack, as judged (--json). */
  readonly report: ReapReport;
}

/** Decides per stack: destroy (expired), keep (and why), or cannot tell. */
export function planReap(tenants: readonly Tenant[], now: Date): ReapPlan {
  const expired: { tenant: Tenant; at: Date }[] = [];
  const notExpired: Tenant[] = [];
  const unreadable: { tenant: Tenant; reason: string }[] = [];
  const kept = new Map<string, string>();
  const report = new ReapReport();
  const width = Math.max(0, ...tenants.map((t) => t.stack.length));
  const lines = tenants.map((t) => {
    const name = t.stack.padEnd(width);
    let e: Expiry = expiryOf(t, now);
    // A stack file that cannot be read: of a deployed stack, "cannot tell" (`pulumi destroy` reads
    // the same file, and a failed deploy's expiry needs its ttlHours); with nothing deployed, the
    // file's fault is the operator's to fix, not a failure of every cron run.
    const fileProblem = t.unreadableFile ? `its stack file cannot be read: ${t.configProblem}` : undefined;
    if (fileProblem !== undefined && e.kind !== "not-deployed") e = { kind: "unknown", reason: fileProblem };
    switch (e.kind) {
      case "expired":
        expired.push({ tenant: t, at: e.at });
        report.add(t.stack, e, "would-destroy", null);
        return `${name}  expired ${relative(e.at, now)} (${iso(e.at)})${failed(e)}: destroy`;
      case "expires":
        notExpired.push(t);
        kept.set(t.stack, `not expired (expires ${relative(e.at, now)})`);
        report.add(t.stack, e, "kept", kept.get(t.stack)!);
        return `${name}  expires ${relative(e.at, now)} (${iso(e.at)})${failed(e)}: keep`;
      case "no-ttl":
        notExpired.push(t);
        kept.set(t.stack, "not expired (no ttlHours)");
        report.add(t.stack, e, "kept", kept.get(t.stack)!);
        return `${name}  no ttlHours${failed(e)}: keep`;
      case "not-deployed":
        kept.set(t.stack, `not deployed (nothing to destroy${fileProblem ? `; ${fileProblem}` : ""})`);
        report.add(t.stack, e, "kept", kept.get(t.stack)!);
        return `${name}  not deployed: nothing to destroy${fileProblem ? ` (${fileProblem})` : ""}`;
      case "unknown":
        unreadable.push({ tenant: t, reason: e.reason });
        kept.set(t.stack, `cannot tell whether it expired (${e.reason})`);
        report.add(t.stack, e, "unknown", e.reason);
        return `${name}  cannot tell: ${e.reason}`;
    }
  });
  return { expired, notExpired, unreadable, kept, lines, report };
}

const failed = (e: { failedDeploy?: true }) => (e.failedDeploy ? `, ${FAILED_DEPLOY}` : "");
const iso = (d: Date) => isoSeconds(d.getTime());

export interface ReapOptions {
  readonly yes: boolean;
  readonly now: Date;
  readonly concurrency: number;
  /** Where each tenant's usage is saved before its destroy. */
  readonly usageDir: string;
  /** Destroy even when the usage could not be saved: every stack ("all"), or those named. */
  readonly force: "all" | ReadonlySet<string>;
  /** How long to wait for requests in flight after revoking a tenant's keys (default 60 s). */
  readonly settleTimeoutMs?: number;
  /** stdout holds only a JSON array, a ReapRow per stack, printed at the end; the lines go to stderr. */
  readonly json?: boolean;
}

export async function reapExpired(options: ReapOptions, deps: ScriptDeps): Promise<number> {
  if (!options.json) return (await reap(options, deps)).code;
  // Every line the run prints goes to stderr, so that stdout parses; the rows once it is over,
  // failed or interrupted too (a bad flag, or no pulumi CLI, prints none: nothing was considered).
  const { io } = deps;
  const print = (report: ReapReport) => io.out(JSON.stringify(report.rows(), null, 2));
  // Once the stacks are judged, the rows exist: a run that then throws (a bug's path) prints them
  // before its error, the stack it threw in marked failed, and exits as it would without --json.
  let judged: ReapReport | undefined;
  try {
    const { code, report } = await reap(options, { ...deps, io: { ...io, out: io.err, write: io.err } }, { beforeExit: print, judged: (r) => (judged = r) });
    print(report);
    return code;
  } catch (err) {
    if (judged) print(judged);
    throw err;
  }
}

/**
 * `beforeExit`: called with the rows when a second signal is about to exit the script at once;
 * `judged`: with the report once every stack has its row (what a run that throws later can print).
 */
async function reap(options: ReapOptions, deps: ScriptDeps, hooks: { beforeExit?: (report: ReapReport) => void; judged?: (report: ReapReport) => void } = {}): Promise<{ code: number; report: ReapReport }> {
  const { beforeExit } = hooks;
  const { io, pulumi } = deps;
  if (!(await pulumi.available())) throw new UsageError("reap-expired needs the pulumi CLI on PATH (and, in cron, PATH set to include it)");
  io.out(`Checking stacks at ${iso(options.now)}…`);
  const tenants = await readTenants(deps);
  const unknownForced = options.force === "all" ? [] : [...options.force].filter((f) => !tenants.some((t) => t.stack === f));
  if (unknownForced.length) throw new UsageError(`--force ${unknownForced.join(", ")}: no such stack file in stacks/ (stacks: ${tenants.map((t) => t.stack).join(", ") || "none"})`);
  const forced = (stack: string) => options.force === "all" || options.force.has(stack);
  const plan = planReap(tenants, options.now);
  const { report } = plan;
  hooks.judged?.(report);
  const done = (code: number) => ({ code, report });
  for (const line of plan.lines) io.out(`  ${line}`);
  // --force names a stack to destroy even without its usage: it does not make one expire. Said,
  // so that an operator who named the wrong stack, or one not yet due, does not read exit 0 as done.
  for (const stack of options.force === "all" ? [] : options.force) {
    const why = plan.kept.get(stack);
    if (why !== undefined) io.err(`--force ${stack}: ${why}: kept (--force destroys an expired stack without its usage; it does not expire one)`);
  }
  // Kept now, with its keys revoked by a run for an expiry it no longer has: every run says so
  // (the tenant bills on while its clients get 401) until the operator acts and deletes the record.
  for (const t of plan.notExpired) {
    const createdAt = outputsOf(t).createdAt;
    const earlier = earlierExpiry(options.usageDir, t.stack, createdAt);
    if (earlier) {
      io.err(earlierExpiryNote(t.stack, earlier));
      report.set(t.stack, { revokedKeys: earlier.revokedKeys, unsureKeys: earlier.unsureKeys });
    }
  }
  const unreadableNote = plan.unreadable.length
    ? `\n${plan.unreadable.length} stack(s) could not be checked: ${plan.unreadable.map((u) => u.tenant.stack).join(", ")}.`
    : "";
  if (plan.expired.length === 0) {
    io.out(`Nothing expired.${unreadableNote}`);
    return done(plan.unreadable.length ? 1 : 0);
  }
  const names = plan.expired.map((e) => e.tenant.stack);
  if (!options.yes) {
    io.out(`Dry run: would destroy ${names.length} stack(s): ${names.join(", ")}. Run with --yes to destroy them.${unreadableNote}`);
    return done(plan.unreadable.length ? 1 : 0);
  }

  let finished = 0;
  const failed: string[] = [];
  // Kept because a `pulumi up` moved its expiresAt during the run: neither destroyed nor failed.
  const moved: string[] = [];
  // Ctrl-C or SIGTERM: the stacks under way finish what they started (a destroy its safe cancel),
  // none is started; `working` says what each one under way is doing, for the lines a signal prints.
  const interrupted: string[] = [];
  const notStarted: string[] = [];
  const working = new Map<string, "export" | "destroy">();
  // An error thrown in a stack's reap (not a failure it reports: a bug's path): no further stack is
  // started, those under way finish, then it is thrown, after the rows (--json) say what was done.
  let thrown: { stack: string; error: unknown } | undefined;
  const interruption = watchInterruption(deps.signals, {
    first: () => {
      if (working.size === 0) io.err("interrupted: starting no further stack (again to stop now)");
      for (const [stack, step] of working) {
        io.err(step === "destroy"
          ? `[${stack}] interrupted: waiting for pulumi to cancel safely (again to stop now)`
          : `[${stack}] interrupted: finishing its usage export; it will not be destroyed (again to stop now)`);
      }
    },
    second: () => {
      for (const [stack, step] of working) {
        const what = step === "destroy" ? "pulumi was killed during its destroy" : "its usage export was cut short";
        io.err(`[${stack}] stopped: ${what}; ${runAgain(stack)}`);
        report.set(stack, { action: "interrupted", reason: `stopped: ${what}` });
      }
      for (const row of report.rows()) if (row.action === "would-destroy") report.set(row.stack, { action: "interrupted", reason: "not started: the run was interrupted" });
      beforeExit?.(report);
    },
  });
  try {
    await mapLimit(plan.expired, options.concurrency, async ({ tenant, at }) => {
      const stack = tenant.stack;
      if (interruption.requested) {
        notStarted.push(stack);
        report.set(stack, { action: "interrupted", reason: "not started: the run was interrupted" });
        return;
      }
      if (thrown) {
        report.set(stack, { action: "interrupted", reason: `not started: the run stopped on an error in ${thrown.stack}` });
        return;
      }
      working.set(stack, "export");
      try {
        await reapOne(stack, at);
      } catch (error) {
        report.set(stack, { action: "failed", reason: (error as Error).message ?? String(error) });
        thrown ??= { stack, error };
      } finally {
        working.delete(stack);
      }
    });
  } finally {
    interruption.dispose();
  }
  if (thrown) {
    const skipped = report.rows().filter((r) => r.reason === `not started: the run stopped on an error in ${thrown!.stack}`).map((r) => r.stack);
    if (skipped.length) io.err(`Stopped on an error in ${thrown.stack}; not started: ${skipped.join(", ")}. Run reap-expired again once it is fixed.`);
    throw thrown.error;
  }

  async function reapOne(stack: string, at: Date): Promise<void> {
    const usage = await exportUsage(stack, options.usageDir, deps, {
      expiresAt: at, progress: (line) => io.out(`[${stack}] ${line}`), warn: (line) => io.err(`[${stack}] ${line}`),
      ...(options.settleTimeoutMs !== undefined ? { settleTimeoutMs: options.settleTimeoutMs } : {}),
    });
    report.usage(stack, usage);
    if (usage.kind === "none") report.set(stack, { reason: `no usage to save: ${usage.reason}` });
    if (usage.kind === "saved") io.out(`[${stack}] saved its usage (${usage.rows} rows) to ${usage.path} and its keys (${usage.keys}) to ${usage.keysPath}${usage.creditsPath ? `, its credits statement to ${usage.creditsPath}` : ""}`);
    else if (usage.kind === "already-saved") io.out(`[${stack}] usage already saved at ${usage.marker.savedAt} (${usage.marker.usage}, ${usage.marker.keys}), by a run whose destroy failed; destroying without exporting again`);
    else if (usage.kind === "none") io.out(`[${stack}] no usage to save: ${usage.reason}`);
    else if (usage.kind === "expiry-moved") {
      finished++;
      moved.push(stack);
      report.set(stack, { action: "kept", expiresAt: usage.expiresAt ?? null, reason: `its expiresAt is ${usage.expiresAt ?? "gone (no ttlHours)"} now, not ${iso(at)} as this run read it` });
      io.out(`[${stack}] kept: its expiresAt is ${usage.expiresAt ?? "gone (no ttlHours)"} now, not ${iso(at)} as this run read it (a \`pulumi up\` since?); no key revoked, nothing destroyed: the next run judges it again (${finished}/${names.length})`);
      return;
    } else if (interruption.requested) {
      // A terminal's ^C reaches the export's own pulumi too, which fails it: the operator's doing,
      // told as the interruption below, not a failure to fix (whose --force advice would destroy
      // the stack without its usage).
    } else if (forced(stack)) {
      io.err(`[${stack}] could not save its usage (${usage.message}); destroying anyway (--force)`);
      report.set(stack, { reason: `could not save its usage (${usage.message}); destroyed anyway (--force)` });
    } else {
      finished++;
      failed.push(stack);
      report.set(stack, { action: "failed", reason: `could not save its usage: ${usage.message}` });
      // Its keys may be revoked already (the export failed after that step): its customers get
      // 401 while its host bills on, which the operator must hear now, not at the next run.
      io.err(`[${stack}] KEPT: could not save its usage before the destroy would delete it: ${usage.message}${revokedLines(stack, usage)}\n` +
        `[${stack}] fix that and run again, or run with --force ${stack} to destroy it without its usage (${finished}/${names.length})`);
      return;
    }
    const saved = usage.kind === "saved" || usage.kind === "already-saved" ? `\n[${stack}] its usage is saved: the next run destroys it again without exporting` : "";
    // Its keys were revoked for the destroy: if it is kept after all (e.g. the destroy failed on
    // the lock of the operator's own `pulumi up`, raising its ttlHours), they stay revoked.
    const revoked = usage.kind === "none" ? "" : revokedLines(stack, usage);
    if (interruption.requested) {
      finished++;
      interrupted.push(stack);
      report.set(stack, { action: "interrupted", reason: "interrupted before its destroy" });
      io.err(`[${stack}] interrupted before its destroy; ${runAgain(stack)}${saved}${revoked}`);
      return;
    }
    io.out(`[${stack}] destroying (expired ${relative(at, options.now)})…`);
    working.set(stack, "destroy");
    const started = Date.now();
    const lines = lineSplitter((line) => io.out(`[${stack}] ${line}`));
    const r = await pulumi.run(destroyArgs(stack), { onOutput: lines.push, interrupt: interruption.interrupt, kill: interruption.kill });
    lines.flush();
    finished++;
    if (r.exitCode === 0) {
      report.set(stack, { action: "destroyed" });
      io.out(`[${stack}] destroyed in ${formatDuration(Date.now() - started)} (${finished}/${names.length})`);
    } else if (interruption.requested) {
      interrupted.push(stack);
      report.set(stack, { action: "interrupted", reason: "interrupted: its destroy did not finish" });
      io.err(`[${stack}] interrupted: its destroy did not finish; ${runAgain(stack)}${saved}${revoked}`);
    } else {
      failed.push(stack);
      report.set(stack, { action: "failed", reason: `\`${commandLine(destroyArgs(stack))}\` exited ${r.exitCode}: ${tail(r, 1).trim()}` });
      io.err(`[${stack}] FAILED: \`${commandLine(destroyArgs(stack))}\` exited ${r.exitCode} (${finished}/${names.length}):\n${tail(r)}${saved}${revoked}`);
    }
  }
  const ok = names.length - failed.length - moved.length - interrupted.length - notStarted.length;
  const movedNote = moved.length ? `; kept ${moved.length} whose expiry moved: ${moved.join(", ")}` : "";
  const failedNote = failed.length ? ` Failed: ${failed.join(", ")}.` : "";
  if (interruption.requested) {
    const cut = [interrupted.length ? `interrupted: ${interrupted.join(", ")}` : "", notStarted.length ? `not started: ${notStarted.join(", ")}` : ""].filter((p) => p !== "");
    io.err(`Interrupted: destroyed ${ok} of ${names.length} expired stack(s)${movedNote}${cut.map((p) => `; ${p}`).join("")}.${failedNote} Run reap-expired again to finish.${unreadableNote}`);
    return done(INTERRUPTED_EXIT_CODE);
  }
  io.out(`Destroyed ${ok} of ${names.length} expired stack(s)${movedNote}.${failedNote}${unreadableNote}`);
  return done(failed.length || plan.unreadable.length ? 1 : 0);
}

/** What to do about a stack whose destroy a signal cut short: Pulumi's lock may outlive it (pulumi/pulumi#1077). */
const runAgain = (stack: string) => `run reap-expired again to destroy it (if pulumi says the stack is locked, first \`pulumi cancel --stack ${stack}\`)`;

export async function main(argv: readonly string[], partial: Partial<ScriptDeps> = {}): Promise<number> {
  const deps = withDefaults(partial);
  return runScript(deps.io, async () => {
    const { rest, force } = takeForce(argv);
    const { values } = parseFlags(rest, {
      yes: { type: "boolean" }, now: { type: "string" }, concurrency: { type: "string" }, "usage-dir": { type: "string" }, json: { type: "boolean" },
    }, USAGE, { known: ["force"] });
    if (values.help) {
      deps.io.out(USAGE);
      return 0;
    }
    let now = deps.now();
    if (values.now !== undefined) {
      // A timestamp with its zone, as the shim's API takes them: without one Date.parse reads
      // the machine's local time (cron's zone decides what is destroyed), and 2026-02-30 rolls over.
      // A day that does not exist is named as the other scripts' date flags name it (instantFlag).
      const shape = "an ISO timestamp with its zone, e.g. 2026-03-01T18:00:00Z";
      const at = instantFlag("now", values.now, shape)!;
      if (!at.includes("T")) throw new UsageError(`--now "${at}" must be ${shape}`);
      now = new Date(Date.parse(at));
    }
    const concurrency = numberFlag("concurrency", values.concurrency, { min: 1, max: 16, integer: true, what: "a whole number", fallback: 2 });
    const usageDir = resolve(deps.root, values["usage-dir"] ?? "usage");
    return reapExpired({ yes: values.yes ?? false, now, concurrency, usageDir, force, json: values.json === true }, deps);
  });
}

if (import.meta.main) process.exitCode = await main(process.argv.slice(2));
