// `manage-keys top-up --up-to <credits>`: a budget that resets each period (LiteLLM's max_budget
// with a budget_duration). Tops a key up by what it lacks to reach its allowance, counted in exact
// micro-credits (a float subtraction gives amounts the API refuses), at most once a period: the
// top-up's Idempotency-Key is the key's id and the period, so a cron job run twice grants once.
import { creditsNumber, formatCredits, parseCredits } from "../../api-shim/src/money/money.ts";
import { AdminApiError, type AdminClient, type ApiKey, findKey, keyStatus } from "./admin-client.ts";
import { creditsFlag, noteFlag } from "./credits-flags.ts";
import { type Io, required, UsageError } from "./cli.ts";
import { shownTime } from "./key-list.ts";
import { mayHaveActed } from "./lost-answers.ts";
import { manageKeysCommand } from "./manage-keys-command.ts";
import type { TargetFlags } from "./tenant-target.ts";

export interface UpToFlags extends TargetFlags {
  key?: string;
  amount?: string;
  note?: string;
  "idempotency-key"?: string;
  "up-to"?: string;
  period?: string;
  all?: boolean;
  json?: boolean;
}

/** What one key's run came to, as --json prints it. */
export interface UpToResult {
  readonly key_id: string;
  readonly name: string;
  readonly period: string;
  readonly allowance: number;
  readonly idempotency_key: string;
  readonly outcome: "topped_up" | "at_or_above" | "already_this_period" | "failed";
  readonly added?: number;
  readonly balance?: number;
  readonly credits_remaining?: number;
  readonly error?: string;
}

/** A period label: it goes in the Idempotency-Key (a header) and on the grant's note. */
const PERIOD = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/;

/** Whether the command line asks for top-up's --up-to form (a flag of it without --up-to is an error there). */
export const isUpTo = (flags: UpToFlags): boolean => flags["up-to"] !== undefined || flags.period !== undefined || flags.all === true;

/** The default period: the UTC month of `now`, 2026-12 (LiteLLM's budget_duration of 30d, as a calendar month). */
export const utcMonth = (now: Date): string => now.toISOString().slice(0, 7);

/** Refuses a top-up to a revoked or expired key, naming its state and what to do instead. */
export function notActiveForTopUp(flags: TargetFlags, key: ApiKey): void {
  const status = keyStatus(key);
  const which = `key ${key.name} (${key.id})`;
  if (status === "revoked") throw new UsageError(`top-up refused: ${which} is revoked (since ${shownTime(key.revoked_at!)}), and a revoked key cannot be credited: create a new key instead`, { exit: "refused" });
  if (status === "expired") throw new UsageError(`top-up refused: ${which} is expired (since ${shownTime(key.expires_at!)}): move its expiry on first (${manageKeysCommand(flags, "update", [["key", key.id]])} --expires-at <time>), then top it up`, { exit: "refused" });
}

/** `top-up --up-to`, for one key (--key) or every key in use (--all). Exit 0, or 1 when any of --all's failed. */
export async function topUpTo(flags: UpToFlags, client: AdminClient, io: Io, now: Date): Promise<number> {
  const upTo = flags["up-to"];
  if (upTo === undefined) throw new UsageError(`${flags.all ? "--all" : "--period"} goes with --up-to: the allowance to top a key up to, e.g. --up-to 50 (--amount adds a fixed amount)`);
  if (flags.amount !== undefined) throw new UsageError("--amount and --up-to contradict each other: give one");
  if (flags["idempotency-key"] !== undefined) throw new UsageError("--idempotency-key does not go with --up-to: its Idempotency-Key is the key's id and the period (--period), so that a run again in the period adds nothing");
  if (flags.all && flags.key !== undefined) throw new UsageError("--all and --key contradict each other: give one");
  if (!flags.all) required("key", flags.key, "the id or name of the key to top up (or --all: every key in use)");
  const allowance = { micro: parseCredits(creditsFlag("up-to", upTo, true))! };
  const period = flags.period ?? utcMonth(now);
  if (!PERIOD.test(period)) throw new UsageError(`--period "${period}" must be a label of letters, digits and . _ : - (at most 64 characters), e.g. 2026-12, 2026-W49 or 2026-12-07`);
  const note = flags.note ?? `allowance ${formatCredits(allowance.micro)}, period ${period}`;
  noteFlag(note);
  const run = { flags, client, io, allowance: allowance.micro, period, note };
  const keys = await client.listKeys();
  if (!flags.all) {
    const key = findKey(keys, flags.key!);
    notActiveForTopUp(flags, key);
    const result = await upToOne(run, key, true);
    if (flags.json) io.out(JSON.stringify(result, null, 2));
    return 0;
  }
  return upToAll(run, keys);
}

interface Run {
  readonly flags: UpToFlags;
  readonly client: AdminClient;
  readonly io: Io;
  readonly allowance: number;
  readonly period: string;
  readonly note: string;
}

/** One key's top-up to the allowance; `single`: the retry line first, and an error thrown as it is. */
async function upToOne(run: Run, key: ApiKey, single: boolean): Promise<UpToResult> {
  const { flags, client, io, allowance, period } = run;
  const idem = `up-to-${key.id}-${period}`;
  const base = { key_id: key.id, name: key.name, period, allowance: creditsNumber(allowance), idempotency_key: idem };
  const say = (line: string) => {
    if (!flags.json) io.out(line);
  };
  // The ledger's balance, not what is left after requests in flight: their holds are settled
  // (charged what they cost, the rest released) after the top-up, as LiteLLM charges a request
  // that ends after a reset to the new period.
  const balance = parseCredits(key.balance)!;
  const lack = allowance - balance;
  if (lack <= 0) {
    say(`Key ${key.name} (${key.id}) has ${formatCredits(balance)} credits, at or above its allowance of ${formatCredits(allowance)}: nothing added for ${period}.`);
    return { ...base, outcome: "at_or_above", added: 0, balance: key.balance, credits_remaining: key.credits_remaining };
  }
  const amount = formatCredits(lack);
  // The same command again, with the period spelled out: a retry the next month still means this one.
  const retry = manageKeysCommand(flags, "top-up", [["key", key.id], ["up-to", formatCredits(allowance)], ["period", period], ["note", flags.note]]);
  if (single) io.err(`Idempotency-Key: ${idem}; to retry safely: ${retry}`);
  try {
    const grant = await client.topUp(key.id, { amount, note: run.note }, idem);
    if (grant.replayed) return already(run, key, base); // grant.balance is the balance right after the first
    say(`Added ${amount} credits to ${key.name} (${key.id}), up to its allowance of ${formatCredits(allowance)} for ${period}: balance ${grant.balance}, remaining ${grant.credits_remaining}.`);
    return { ...base, outcome: "topped_up", added: creditsNumber(lack), balance: grant.balance, credits_remaining: grant.credits_remaining };
  } catch (err) {
    // This period's grant was made (the key has spent since, so what it lacks differs): once a period.
    if (err instanceof AdminApiError && err.code === "idempotency_key_reused") return already(run, key, base);
    if (mayHaveActed(err)) {
      throw new UsageError(`${err.message}\nThe top-up may have been applied. Running the same command again is safe (its Idempotency-Key is the key's and the period's): ${retry}`, { cause: err });
    }
    throw err;
  }
}

/** Nothing added: the listing's balance and credits remaining, the fields every other success row has (the top-up's answer is the first's). */
function already(run: Run, key: ApiKey, base: Omit<UpToResult, "outcome">): UpToResult {
  if (!run.flags.json) run.io.out(`Key ${key.name} (${key.id}) was topped up for ${run.period} already (Idempotency-Key ${base.idempotency_key}); nothing added: balance ${key.balance}. The next top-up is for the next period.`);
  return { ...base, outcome: "already_this_period", added: 0, balance: key.balance, credits_remaining: key.credits_remaining };
}

/** --all: every key in use, in the list's order, one line each as it is done; a failure does not stop the others. */
async function upToAll(run: Run, keys: readonly ApiKey[]): Promise<number> {
  const { flags, io } = run;
  const live = keys.filter((k) => keyStatus(k) === "active");
  const results: UpToResult[] = [];
  for (const key of live) {
    try {
      results.push(await upToOne(run, key, false));
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      io.err(`${key.name} (${key.id}): ${message}`);
      // Told, and the others still get theirs: exit 1 at the end (as reap-expired's), with the command
      // to run again, which is safe (a key whose grant was applied gets nothing more this period).
      results.push({ key_id: key.id, name: key.name, period: run.period, allowance: creditsNumber(run.allowance), idempotency_key: `up-to-${key.id}-${run.period}`, outcome: "failed", error: message.split("\n")[0]! });
    }
  }
  if (flags.json) io.out(JSON.stringify(results, null, 2));
  const count = (o: UpToResult["outcome"]) => results.filter((r) => r.outcome === o).length;
  const topped = count("topped_up");
  io.err(`Up to ${formatCredits(run.allowance)} for ${run.period}: ${topped} key${topped === 1 ? "" : "s"} topped up, ${count("at_or_above")} at or above, ${count("already_this_period")} topped up already, ${count("failed")} failed; ${keys.length - live.length} revoked or expired skipped.`);
  if (count("failed") > 0) io.err(`Running the same command again is safe: a key topped up for ${run.period} gets nothing more (${manageKeysCommand(flags, "top-up --all", [["up-to", formatCredits(run.allowance)], ["period", run.period], ["note", flags.note]])}).`);
  return count("failed") > 0 ? 1 : 0;
}
