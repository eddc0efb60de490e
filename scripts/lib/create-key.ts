// What `manage-keys create` checks and says about one key, shared by a single create (--name) and
// a roster's (--from): the name's rules, the names a new key must not take, a create whose answer
// is lost, and a shim that ignored the expiry.
import { isWithin, MAX_KEY_NAME_CHARACTERS, notPlainCharacter } from "../../api-shim/src/names.ts";
import type { AdminClient, ApiKey, CreatedKey, ReplayedCreation } from "./admin-client.ts";
import { AdminApiError, keyStatus } from "./admin-client.ts";
import { UsageError } from "./cli.ts";
import { mayHaveActed, secretLost } from "./lost-answers.ts";
import { manageKeysCommand } from "./manage-keys-command.ts";
import type { TargetFlags } from "./tenant-target.ts";

/** A create's body, as the admin API takes it (`expiresAt`: the spelling every shim version reads). */
export interface CreateBody {
  name: string;
  credits?: string;
  tier?: string;
  models?: string[];
  expiresAt?: string;
}

/**
 * Why the admin API would refuse `name` (already trimmed, as the shim stores it), as the end of a
 * sentence that starts with what it is ("--name", "line 4: name"); undefined when it takes it.
 * The shim's own rule (names.ts isKeyName), checked before anything is sent.
 */
export function keyNameProblem(name: string): string | undefined {
  if (name === "") return "is empty: a key needs a name";
  if (!isWithin(name, MAX_KEY_NAME_CHARACTERS)) return `has ${[...name].length} characters: a key's name is at most ${MAX_KEY_NAME_CHARACTERS}`;
  const stray = notPlainCharacter(name);
  if (stray) return `has ${stray.kind === "control" ? "a control character" : "half of a UTF-16 surrogate pair"} (${stray.code}): a key's name is plain text`;
  return undefined;
}

/**
 * The key that keeps a new key from taking `name`: one whose id it is (`--key` matches ids before
 * names, so the new key could never be named), or one in use with that name (the shim does not make
 * names unique, but `--key <name>` means the one key in use with it). Undefined when it is free.
 */
export function nameTaken(existing: readonly ApiKey[], name: string): { readonly by: "id" | "in-use"; readonly key: ApiKey } | undefined {
  const idHolder = existing.find((k) => k.id === name);
  if (idHolder) return { by: "id", key: idHolder };
  const now = Date.now();
  const namesake = existing.find((k) => k.name.trim() === name && keyStatus(k, now) === "active");
  return namesake ? { by: "in-use", key: namesake } : undefined;
}

/**
 * POST /admin/keys. An answer lost after the request was sent (admin-client's outcome "unknown")
 * is told as what it may have done: the key and its credits may exist, with a secret that was only
 * in the lost answer, and a second create would make a second key; find it and revoke it instead.
 * With an Idempotency-Key (`once`: it and the command that sends this create again with it), the
 * retry is safe instead: the shim answers it with the key the first attempt made, never a second.
 */
export async function createKey(client: AdminClient, body: CreateBody, target: TargetFlags): Promise<CreatedKey>;
export async function createKey(client: AdminClient, body: CreateBody, target: TargetFlags, once: { key: string; retry: string } | undefined): Promise<CreatedKey | ReplayedCreation>;
export async function createKey(client: AdminClient, body: CreateBody, target: TargetFlags, once?: { key: string; retry: string }): Promise<CreatedKey | ReplayedCreation> {
  try {
    return once ? await client.createKeyOnce(body, once.key) : await client.createKey(body);
  } catch (err) {
    if (once && err instanceof AdminApiError && err.code === "idempotency_key_reused") {
      throw new UsageError(`${err.message}\nIdempotency-Key ${once.key} made another key, from another --name, --credits, --tier, --models or --expires-at: nothing was created now. Give its first command's flags to get that key back, or another --idempotency-key for a new key.`, { cause: err });
    }
    if (!mayHaveActed(err)) throw err;
    if (once) throw new UsageError(`${err.message}\nThe key may have been created. Retry with the same Idempotency-Key, which makes it at most once and answers its id (not its secret, which was only in the lost answer: rotate the key for a new one): ${once.retry}`, { cause: err });
    throw secretLost(err, `A key named "${body.name}" may have been created`, "a second create would make a second key",
      `run ${manageKeysCommand(target, "list")}, and if a key named "${body.name}" that you do not know of is there, revoke it with ${manageKeysCommand(target, "revoke")} --key <its id>`);
  }
}

/**
 * What `create --idempotency-key` says when the shim answered with the key an earlier attempt made:
 * its id and state, and how to get a secret (rotate: the same id, balance and usage).
 */
export function replayedLines(key: ReplayedCreation, target: TargetFlags): string[] {
  const state = key.revoked_at === null ? `balance ${key.balance}` : `revoked at ${key.revoked_at}`;
  return [
    `Already created with this Idempotency-Key; nothing made now: key ${key.name} (id ${key.id}), ${state}.`,
    `Its secret was only in the first answer (only its hash is kept). To get a new one: ${manageKeysCommand(target, "rotate", [["key", key.id]])}`,
  ];
}

/**
 * What to say when the shim made a key without the expiry it was given (a shim that does not read
 * the field): a key that never expires. Undefined when the expiry was applied, or none was given.
 * `what`: where the expiry came from (a flag, a roster's column).
 */
export function expiryNotApplied(created: CreatedKey, given: string | undefined, what = "--expires-at"): string | undefined {
  if (given === undefined || created.expires_at !== null) return undefined;
  return `The shim did not apply ${what}: this key never expires. If it must not outlive ${given}, revoke it: npm run manage-keys -- revoke --key ${created.id} (with the same --stack or --url).`;
}

/** The line for keys made with no credits: every request they send is a 402 until a top-up (`topUp`: the command that gives some). */
export function noCreditsLine(subject: string, several: boolean, why: string, topUp: string): string {
  return `${subject} ${several ? "have" : "has"} no credits (${why}): ${several ? "their" : "its"} requests get 402 insufficient_credits until a top-up: ${topUp}`;
}
