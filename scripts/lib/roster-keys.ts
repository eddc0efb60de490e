// `manage-keys create --from roster.csv`: a key for each line of a roster (a workshop's attendees),
// in one command. The roster is checked whole before anything is sent (roster.ts); names that have
// a key in use are skipped, so a run again after a failure makes only the keys still missing; each
// key goes to the hand-out as soon as it is made (handout.ts), so a run cut short loses none.
import { existsSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import { fileStamp } from "../../api-shim/src/requests/period.ts";
import type { AdminClient, AdminTarget, CreatedKey } from "./admin-client.ts";
import { UsageError } from "./cli.ts";
import { type CreateBody, createKey, expiryNotApplied, noCreditsLine } from "./create-key.ts";
import type { ScriptDeps } from "./deps.ts";
import { type Handout, handoutRefusal, handoutText, openHandout } from "./handout.ts";
import { INTERRUPTED_EXIT_CODE, watchInterruption } from "./interruption.ts";
import { manageKeysCommand } from "./manage-keys-command.ts";
import { againstKeys, expiryProblem, problemText, type RosterDefaults, type RosterEntry, type RosterProblem, readRoster } from "./roster.ts";
import { originOf, resolveAdminTarget, type TargetFlags } from "./tenant-target.ts";

export interface RosterRun {
  /** The roster file, as given (a relative path from deps.root, where npm runs the script). */
  readonly from: string;
  /** The hand-out file, as given; undefined: `<stack or host>-keys-<UTC time>.csv` in deps.root. */
  readonly handout: string | undefined;
  readonly json: boolean;
  /** What a line without a value of its own takes (the flags, checked), and the models of every key. */
  readonly defaults: RosterDefaults & { readonly models?: string[] | undefined };
  readonly target: TargetFlags;
}

/** The roster file's text: UTF-8, as a spreadsheet's "CSV UTF-8" saves it (a legacy code page's é would become a name no one typed). */
function rosterText(path: string, given: string, root: string): string {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const where = given === path ? "" : ` (a relative path starts at ${root}, where npm runs the script)`;
    throw new UsageError(`--from ${given}: ${code === "ENOENT" ? "no such file" : (err as Error).message}${where}`);
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    const text = new TextDecoder("utf-8").decode(bytes);
    const line = text.slice(0, text.indexOf("\uFFFD")).split(/\r\n|\r|\n/).length;
    throw new UsageError(`--from ${given} is not UTF-8 text (line ${line} is the first with a character that is not): save it as "CSV UTF-8" (a spreadsheet's "CSV" may use another encoding); nothing was created`);
  }
}

/**
 * `<stack>-keys-<UTC time>.csv` in `root` (with --url, the host's name for the stack's), the first
 * of `…-2.csv`, `…-3.csv` that is free when a run in the same second made it.
 */
function defaultHandout(target: TargetFlags, root: string, now: number): string {
  const name = target.stack ?? (target.url !== undefined ? new URL(originOf(target.url, "--url")).hostname : "keys");
  const base = resolve(root, `${name}-keys-${fileStamp(now)}`);
  for (let n = 1; ; n++) {
    const path = `${base}${n === 1 ? "" : `-${n}`}.csv`;
    if (!existsSync(path)) return path;
  }
}

/** The problems, one a line, and that nothing was created; `exit` "refused" when they were found against the tenant's keys. */
function refused(path: string, problems: readonly RosterProblem[], exit?: "refused"): UsageError {
  const n = problems.length;
  return new UsageError(`${path}: ${n} problem${n === 1 ? "" : "s"}; nothing was created:\n${problems.map((p) => `  ${problemText(p)}`).join("\n")}`, { exit });
}

/** A create's body from a roster's line: its values, else the flags'. */
function bodyOf(entry: RosterEntry, models: string[] | undefined): CreateBody {
  return {
    name: entry.name,
    ...(entry.credits !== undefined ? { credits: entry.credits } : {}),
    ...(entry.tier !== undefined ? { tier: entry.tier } : {}),
    ...(models ? { models } : {}),
    ...(entry.expiresAt !== undefined ? { expiresAt: entry.expiresAt } : {}),
  };
}

const plural = (n: number, what: string) => `${n} ${what}${n === 1 ? "" : "s"}`;

/**
 * Runs it: exit 0 when every key was made (or every name has one), 1 when the run stopped on a
 * failure, INTERRUPTED_EXIT_CODE on Ctrl-C or SIGTERM (after the key being made is saved).
 * `connect`: the admin client for the target (tests put a front in the way).
 */
export async function createFromRoster(run: RosterRun, deps: ScriptDeps, connect: (target: AdminTarget) => AdminClient): Promise<number> {
  const { io } = deps;
  const now = deps.now().getTime();
  const flagExpiry = run.defaults.expiresAt === undefined ? undefined : expiryProblem(run.defaults.expiresAt, now);
  if (flagExpiry) throw new UsageError(`--expires-at ${JSON.stringify(run.defaults.expiresAt)}${flagExpiry}`);
  const rosterPath = resolve(deps.root, run.from);
  const roster = readRoster(rosterText(rosterPath, run.from, deps.root), run.defaults, now);
  if (roster.problems.length > 0) throw refused(run.from, roster.problems);
  // Before anything is sent: a hand-out is never overwritten.
  const handoutPath = run.handout !== undefined ? resolve(deps.root, run.handout) : defaultHandout(run.target, deps.root, now);
  const refusal = handoutRefusal(handoutPath);
  if (refusal) throw new UsageError(refusal);
  const target = await resolveAdminTarget(run.target, deps);
  const client = connect(target);
  const handout = openHandout(handoutPath, `${target.baseUrl}/v1`);
  const made: CreatedKey[] = [];
  /** The line whose create is in flight: what a second Ctrl-C leaves unknown. */
  let inFlight: RosterEntry | undefined;
  const interruption = watchInterruption(deps.signals, {
    first: () => io.err(`interrupted: stopping once the key being made is saved to ${handout.path} (Ctrl-C again to stop at once)`),
    second: () => io.err(inFlight
      ? `stopped at once: ${lostCreate(run, inFlight.name)}; ${keptIn(made.length, handout, "made before it")}`
      : `stopped: ${keptIn(made.length, handout, "made")}`),
  });
  try {
    const plan = againstKeys(roster.entries, await client.listKeys());
    if (plan.problems.length > 0) throw refused(run.from, plan.problems, "refused");
    for (const { entry, key } of plan.skipped) io.err(`skipped line ${entry.line}: ${entry.name} has a key in use (id ${key.id}), made by an earlier run or by hand`);
    const total = plan.create.length;
    if (total === 0) {
      // With --json, stdout is the JSON array alone (`[]`, printed below): a pipeline's re-run parses it.
      (run.json ? io.err : io.out)(`Every name in ${run.from} has a key in use: nothing to create (${manageKeysCommand(run.target, "list")} shows them).`);
      return 0;
    }
    for (const entry of plan.create) {
      if (interruption.requested) break;
      inFlight = entry;
      let created: CreatedKey;
      try {
        created = await createKey(client, bodyOf(entry, run.defaults.models), run.target);
      } catch (err) {
        if (!(err instanceof UsageError)) throw err;
        // A lost answer says what to check (createKey); any failure says what was made and what next.
        throw new UsageError(`${err.message}\n${stoppedAt(entry, made.length, total, handout)}`, { cause: err });
      } finally {
        inFlight = undefined;
      }
      made.push(created);
      try {
        handout.add(created);
      } catch (err) {
        throw unwritten(err, created, handout, { entry, made: made.length, total, json: run.json, io });
      }
      io.err(`created ${made.length}/${total}: ${created.name}`);
      const expiryLost = expiryNotApplied(created, entry.expiresAt, entry.expiresAt === run.defaults.expiresAt ? "--expires-at" : `line ${entry.line}'s expires_at`);
      // Exit 1, as a single create's: the API made the key (nothing refused), only not as asked.
      if (expiryLost) throw new UsageError(`${expiryLost}\nStopped: this shim does not read expiries (upgrade it: pulumi up); ${plural(made.length, "key")} made, in ${handout.path}.`, { exit: "failed" });
    }
    if (interruption.requested) {
      io.err(`interrupted after ${made.length} of ${total} keys, all in ${handout.path}; run the same command again (without --handout, or with another) to make the ${total - made.length} still missing: it skips the names that have a key`);
      return INTERRUPTED_EXIT_CODE;
    }
    // Neither a cell nor --credits: such a key can send nothing until a top-up (every request a 402).
    const penniless = plan.create.filter((entry, i) => entry.credits === undefined && made[i]?.balance === 0).map((e) => e.name);
    if (penniless.length > 0) {
      const names = penniless.length > 5 ? `${penniless.slice(0, 5).join(", ")} and ${penniless.length - 5} more` : penniless.join(", ");
      io.err(noCreditsLine(`${plural(penniless.length, "key")} (${names})`, penniless.length > 1, "no credits cell and no --credits", `${manageKeysCommand(run.target, "top-up")} --key <name> --amount <credits>`));
    }
    if (!run.json) {
      const skipped = plan.skipped.length > 0 ? ` (${plural(plan.skipped.length, "name")} skipped: a key in use has it)` : "";
      io.out(`Created ${plural(total, "key")}${skipped}. The hand-out, a line per key (name,base_url,key_id,key; mode 0600): ${handout.path}`);
      io.out("The keys are shown nowhere else: give each user their line, and keep the file private.");
    }
    return 0;
  } finally {
    interruption.dispose();
    handout.close();
    // For scripts: the keys made, however the run ended (the hand-out has them too).
    if (run.json) io.out(JSON.stringify(made, null, 2));
  }
}

/**
 * The hand-out could not take a key just made (a full disk, EIO): its secret, shown nowhere else,
 * is printed instead, so that no key is left billable with a secret nobody has (decisions.md). With
 * --json it is in the array printed on stdout; else its hand-out line goes to stdout, header first,
 * for `> elsewhere.csv`. Exit 1: a key was made, so not "nothing was sent". The run stops: the
 * next key would meet the same disk.
 */
function unwritten(err: unknown, key: CreatedKey, handout: Handout, at: { entry: RosterEntry; made: number; total: number; json: boolean; io: ScriptDeps["io"] }): UsageError {
  if (!at.json) at.io.out(handoutText([key], handout.baseUrl).trimEnd());
  const where = at.json ? "in the JSON printed on stdout" : "printed on stdout above, as its hand-out line (name,base_url,key_id,key)";
  const before = at.made - 1;
  return new UsageError(
    `cannot write the hand-out ${handout.path}: ${(err as Error).message}\n` +
      `The key for line ${at.entry.line} (${key.name}, id ${key.id}) was created, and its secret is ${where}: save it now, it is shown nowhere else.\n` +
      `Stopped at line ${at.entry.line}, ${at.made} of ${at.total} keys made: ${keptIn(before, handout, "made before it")}. Free some space (or give another --handout), then run the same command again: it skips the names that have a key, ${key.name} too.`,
    { cause: err, exit: "failed" },
  );
}

/** What a create whose answer a second Ctrl-C cut off may have left: as createKey says it for a lost answer. */
function lostCreate(run: RosterRun, name: string): string {
  return `a key named "${name}" may have been created, its secret not saved: run ${manageKeysCommand(run.target, "list")}, and if it is there, revoke it (${manageKeysCommand(run.target, "revoke")} --key <its id>) before running this again`;
}

/** Where the keys made are: "the 3 keys made before it are in <file>". */
function keptIn(made: number, handout: Handout, what: string): string {
  return made === 0 ? `no key was ${what}` : `the ${plural(made, "key")} ${what} ${made === 1 ? "is" : "are"} in ${handout.path}`;
}

/** Where a failed create left the run: what was made, where it is, and what to run next. */
function stoppedAt(entry: RosterEntry, made: number, total: number, handout: Handout): string {
  return `Stopped at line ${entry.line} (${entry.name}), ${made} of ${total} keys made: ${keptIn(made, handout, "made before it")}. Once the cause is fixed, run the same command again (without --handout, or with another): it skips the names that have a key and makes the rest.`;
}
