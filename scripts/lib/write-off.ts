// `manage-keys write-off`: credits taken off a key (POST /admin/keys/{id}/debits), for a refund,
// sold credits that expired, or a revoked key's leftover, which otherwise stays a liability on
// every month's credits statement. Shaped as top-up: an Idempotency-Key, generated unless
// given, printed first in the one command that retries it safely.
import { randomUUID } from "node:crypto";
import { AdminApiError, type AdminClient, type ApiKey, type CreditGrant, findKey, isMissingRoute } from "./admin-client.ts";
import { creditsFlag, idempotencyKeyFlag, noteFlag } from "./credits-flags.ts";
import { type Io, required, shellWord, UsageError } from "./cli.ts";
import { mayHaveActed } from "./lost-answers.ts";
import { manageKeysCommand } from "./manage-keys-command.ts";
import { noIdempotencyKeyWarning } from "./unattended.ts";
import type { TargetFlags } from "./tenant-target.ts";

export interface WriteOffFlags extends TargetFlags {
  key?: string;
  amount?: string;
  note?: string;
  "idempotency-key"?: string;
  json?: boolean;
}

/** What a shim from before write-offs answers (its router's 404, no `param`: isMissingRoute) told as what to do. */
export const OLDER_SHIM = "this tenant's shim is older than write-offs (POST /admin/keys/{id}/debits, 2026-12-07); nothing was written off. Upgrade it (pulumi up with this checkout), then run this again";

/** `unattended`: why the run looks like a CI job (unattended.ts): without --idempotency-key, a warning. */
export async function writeOff(flags: WriteOffFlags, client: AdminClient, io: Io, unattended?: string): Promise<number> {
  const ref = required("key", flags.key, "the id or name of the key to write credits off");
  const amount = creditsFlag("amount", required("amount", flags.amount, "the credits to take off, e.g. 250"), true);
  // The reason is what an auditor asks of a write-off (a refund's credit note, "expired"): required here.
  const note = required("note", flags.note, 'why, e.g. "refund, credit note CN-7" or "expired credits"');
  noteFlag(note);
  const given = flags["idempotency-key"];
  const idem = given ?? `writeoff-${randomUUID()}`;
  idempotencyKeyFlag(idem);
  const keys = await client.listKeys();
  const key = findKey(keys, ref);
  // As top-up: a retry must reach the key its first attempt went to, not a namesake made since.
  const namesakes = keys.filter((k) => k.name === key.name && k.id !== key.id);
  if (given !== undefined && key.id !== ref.trim() && namesakes.length > 0) {
    throw new UsageError(`--key "${ref}" names other keys too (${namesakes.map((k) => k.id).join(", ")}), revoked or not; with --idempotency-key give the id of the key the first attempt went to`, { exit: "refused" });
  }
  const retry = manageKeysCommand(flags, "write-off", [["key", key.id], ["amount", amount], ["note", note], ["idempotency-key", idem]]);
  io.err(`Idempotency-Key: ${idem}; to retry safely: ${retry}`);
  if (given === undefined && unattended !== undefined) io.err(noIdempotencyKeyWarning("write-off", unattended));
  let done: CreditGrant;
  try {
    done = await client.writeOff(key.id, { amount, note }, idem);
  } catch (err) {
    throw refusal(err, { flags, key, amount, note, idem, retry });
  }
  if (flags.json) io.out(JSON.stringify(done, null, 2));
  else {
    io.out(done.replayed
      ? `Already applied with this Idempotency-Key; nothing taken off now. Key ${key.name} (${key.id}) had a balance of ${done.balance} right after it; now ${key.balance}.`
      : `Wrote off ${done.amount} credits from ${key.name} (${key.id}): balance ${done.balance}, remaining ${done.credits_remaining}.`);
  }
  return 0;
}

/** The API's refusal (or a lost answer) as what the operator should do next. */
function refusal(err: unknown, c: { flags: WriteOffFlags; key: ApiKey; amount: string; note: string; idem: string; retry: string }): unknown {
  if (mayHaveActed(err)) return new UsageError(`${err.message}\nThe write-off may have been applied. Retry it with the same Idempotency-Key, which takes the credits off at most once: ${c.retry}`, { cause: err });
  if (!(err instanceof AdminApiError)) return err;
  // The key was just listed: a 404 without `param` is the route missing, not the key.
  if (isMissingRoute(err) && err.param !== "id") return new UsageError(`write-off refused: ${OLDER_SHIM}`, { cause: err });
  if (err.code === "idempotency_key_reused") {
    return new UsageError(`${err.message}\nThe first write-off with Idempotency-Key ${c.idem} was applied to ${c.key.name} (${c.key.id}); this one (--amount ${c.amount}, --note ${shellWord(c.note)}) is a different request, so nothing was taken off now. Compare the key's balance (${manageKeysCommand(c.flags, "list")}); to write off these credits too, run it without --idempotency-key.`, { cause: err });
  }
  // More than is available now (the balance less what requests in flight hold): nothing taken.
  if (err.param === "amount") return new UsageError(`${err.message}\nNothing was written off; the key's remaining credits: ${manageKeysCommand(c.flags, "list")}`, { cause: err });
  return err;
}
