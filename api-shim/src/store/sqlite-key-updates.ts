/** The SQLite store's key changes (key-updates.ts), run inside its durable admin transaction (sqlite-store.ts's durably). */
import { keyUpdateRefusal, keyUpdateValues, nameToCheck, type KeyChanges, type KeyUpdateResult } from "./key-updates.ts";
import { type prepareStatements, toKey } from "./sqlite-statements.ts";

/**
 * The store's write lock is held for the whole transaction and the open batch committed before
 * it (durably), so no hold is decided against the key's old row meanwhile: the next batch reads
 * the new one; nor is a namesake brought into use meanwhile (`at`: now).
 */
export function updateKeyIn(stmt: ReturnType<typeof prepareStatements>, id: string, changes: KeyChanges, at: number): KeyUpdateResult {
  const found = stmt.getKey.get(id);
  const refused = keyUpdateRefusal(found && { revokedAt: found.revoked_at, bootstrap: found.bootstrap === 1 }, changes);
  if (refused) return refused;
  const name = nameToCheck({ name: found!.name, expiresAt: found!.expires_at }, changes, at);
  const namesake = name === null ? undefined : stmt.liveNamesake.get(name, id, at);
  if (namesake) return { kind: "name_in_use", name: name!, namesake: namesake.id };
  stmt.updateKey.run(...keyUpdateValues(id, changes));
  return { kind: "done", key: toKey(stmt.getKey.get(id)!) };
}
