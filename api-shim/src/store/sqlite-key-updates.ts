/** The SQLite store's key changes (key-updates.ts) and revocations, run inside its durable admin transaction (sqlite-store.ts's durably), each with its event (key-events.ts). */
import { changeEvent, eventRow, type KeyEvent } from "./key-events.ts";
import { keyUpdateRefusal, keyUpdateValues, nameToCheck, type KeyChanges, type KeyUpdateResult } from "./key-updates.ts";
import { type prepareStatements, toKey } from "./sqlite-statements.ts";

type Statements = ReturnType<typeof prepareStatements>;

/**
 * The store's write lock is held for the whole transaction and the open batch committed before
 * it (durably), so no hold is decided against the key's old row meanwhile: the next batch reads
 * the new one; nor is a namesake brought into use meanwhile (`at`: now).
 */
export function updateKeyIn(stmt: Statements, id: string, changes: KeyChanges, at: number, requestId: string | null = null): KeyUpdateResult {
  const found = stmt.getKey.get(id);
  const refused = keyUpdateRefusal(found && { revokedAt: found.revoked_at, bootstrap: found.bootstrap === 1 }, changes);
  if (refused) return refused;
  const name = nameToCheck({ name: found!.name, expiresAt: found!.expires_at }, changes, at);
  const namesake = name === null ? undefined : stmt.liveNamesake.get(name, id, at);
  if (namesake) return { kind: "name_in_use", name: name!, namesake: namesake.id };
  stmt.updateKey.run(...keyUpdateValues(id, changes));
  const before = toKey(found!);
  record(stmt, changeEvent(id, before, changes, at, requestId));
  return { kind: "done", key: toKey(stmt.getKey.get(id)!) };
}

/** Revokes the key (false: no such key); its `revoked` event only when it was not revoked already (the first time stands). */
export function revokeKeyIn(stmt: Statements, id: string, at: number, requestId: string | null): boolean {
  const found = stmt.getKey.get(id);
  if (found === undefined) return false;
  if (found.revoked_at !== null) return true;
  stmt.revoke.run({ id, at });
  record(stmt, { keyId: id, at, event: "revoked", requestId, changes: [] });
  return true;
}

function record(stmt: Statements, event: KeyEvent | null): void {
  if (event !== null) stmt.insertEvent.run(...eventRow(event));
}

/** The configuration's keys that are no longer in it (`keep`) revoked, by the start (no request); their ids. As postgres-admin.ts's revokeRemovedIn. */
export function revokeRemovedIn(stmt: Statements, keep: readonly string[], at: number): string[] {
  const kept = new Set(keep);
  const removed = stmt.liveBootstrapIds.all().map((r) => r.id).filter((id) => !kept.has(id));
  for (const id of removed) revokeKeyIn(stmt, id, at, null);
  return removed;
}
