// manage-keys rotate: a key in use gets a new secret in place (POST /admin/keys/{id}/rotate), for a
// key that leaked; its id, name, balance, usage, tier, models and expiry stay.
import { AdminApiError, type AdminClient, type ApiKey, type CreatedKey } from "./admin-client.ts";
import { type Io, UsageError } from "./cli.ts";
import { mayHaveActed, secretLost } from "./lost-answers.ts";

/**
 * Rotates `key` and prints its new secret once, as `create` prints a key. `again`: the command that
 * rotates it again, which a lost answer offers (its new secret was only in that answer). Not made
 * idempotent: a retry that gave back the lost secret would have to keep it somewhere.
 */
export async function rotateKey(client: AdminClient, key: ApiKey, again: string, json: boolean, io: Io): Promise<number> {
  let rotated: CreatedKey;
  try {
    rotated = await client.rotateKey(key.id);
  } catch (err) {
    // A shim from before the route: its 404 names the route it does not know (a key it does not know is "No such key.").
    if (err instanceof AdminApiError && err.status === 404 && err.apiMessage?.startsWith("Unknown route")) {
      throw new UsageError("this shim predates `rotate` (POST /admin/keys/{id}/rotate): upgrade it (pulumi up)", { cause: err });
    }
    if (mayHaveActed(err)) throw secretLost(err, `Key ${key.name} (${key.id}) may have been rotated`, "the old one may no longer work either", `run ${again} again to give it a secret you know`);
    throw err;
  }
  if (json) io.out(JSON.stringify(rotated, null, 2));
  else {
    io.out(`Rotated key ${rotated.name} (id ${rotated.id}): a new secret; its balance (${rotated.balance}), usage, tier and models are unchanged. The old key no longer works (401).`);
    io.out(`Key (shown once; only its hash is stored): ${rotated.key}`);
  }
  return 0;
}
