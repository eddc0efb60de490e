/**
 * The SQLite store's admin writes that move money or make keys (key creation, bootstrap keys,
 * top-ups), run inside its durable admin transaction (sqlite-store.ts's durably): the write lock
 * is held for the whole of each, after the open batch has committed.
 */
import { type prepareStatements, toKey } from "./sqlite-statements.ts";
import { creditsChangeRow, grantRefusal, isAdminApiKey, topUpRefusal, type BootstrapResult, type KeyRecord, type NewKey, type TopUpInput, type TopUpResult } from "./store.ts";

import { type CreationIdempotency, creationBody, creationRowKey, type KeyCreationResult, priorCreation } from "./key-creations.ts";
import { creationChanges, eventRow, modelsOf, startChangeEvent } from "./key-events.ts";

type Statements = ReturnType<typeof prepareStatements>;

/** A ledger row and the matching balance change (a write-off's amount is negative); false when the idempotency key was used. */
function grant(stmt: Statements, keyId: string, amount: number, at: number, kind: string, ref: string | null, idem: string | null): boolean {
  if (amount === 0) return false;
  if (stmt.credit.run({ keyId, at, amount, kind, ref, idem }).changes === 0) return false;
  stmt.addBalance.run({ keyId, amount });
  return true;
}

/** The key's `created` event (key-events.ts), in its creation's transaction. */
function createdEvent(stmt: Statements, key: NewKey): void {
  stmt.insertEvent.run(...eventRow({ keyId: key.id, at: key.at, event: "created", requestId: key.requestId ?? null, changes: creationChanges(key) }));
}

export function createKeyIn(stmt: Statements, key: NewKey): KeyRecord {
  stmt.insertKey.run({ ...key, models: key.models && JSON.stringify(key.models) });
  createdEvent(stmt, key);
  grant(stmt, key.id, key.credits, key.at, "grant", null, null);
  return toKey(stmt.getKey.get(key.id)!);
}

/** createKeyIn under an Idempotency-Key (key-creations.ts), inside the same transaction as its row. */
export function createKeyOnceIn(stmt: Statements, key: NewKey, once: CreationIdempotency): KeyCreationResult {
  const prior = priorCreation(stmt.getIdem.get(creationRowKey(once)), once);
  if (prior) return prior;
  const made = createKeyIn(stmt, key);
  stmt.putIdem.run(creationRowKey(once), once.fingerprint, creationBody(made.id), key.at);
  return { kind: "done", key: made };
}

export function ensureBootstrapKeyIn(stmt: Statements, key: NewKey): BootstrapResult {
  const fields = { ...key, models: key.models && JSON.stringify(key.models) };
  const found = stmt.getKey.get(key.id);
  if (found && isAdminApiKey({ bootstrap: found.bootstrap === 1, hash: found.hash }, key)) return { created: false, granted: false, adminKey: true };
  const created = found === undefined;
  if (created) {
    stmt.insertKey.run(fields);
    createdEvent(stmt, key); // by the start: no request
  } else if (found!.hash !== key.hash) {
    // The stack's secret replaced (operations.md, "Rotate a stack key"): the old one gets 401 from
    // this start on, which is what a "my key stopped working" ticket asks about.
    stmt.insertEvent.run(...eventRow({ keyId: key.id, at: key.at, event: "rotated", requestId: null, changes: [] }));
  }
  // Its name, tier or models changed in the configuration: said in its history, as a PATCH's change
  // is ("when did my key lose model X"), by the start. Nothing when the start changes nothing.
  const changed = found && startChangeEvent({ name: found.name, tier: found.tier, models: modelsOf(found.models), expiresAt: found.expires_at }, key);
  if (changed) stmt.insertEvent.run(...eventRow(changed));
  stmt.updateBootstrap.run(fields); // and marks it as configuration's
  if (key.credits <= 0 || stmt.bootstrapGranted.get(key.id) !== undefined) return { created, granted: false };
  const refused = grantRefusal(toKey(stmt.getKey.get(key.id)!), key.credits, key.at);
  if (refused !== null) return { created, granted: false, refused };
  return { created, granted: grant(stmt, key.id, key.credits, key.at, "bootstrap", null, `bootstrap:${key.id}`) };
}

export function topUpIn(stmt: Statements, input: TopUpInput): TopUpResult {
  const { kind, amount, idem: idemKey } = creditsChangeRow(input);
  if (idemKey) {
    const prior = stmt.getIdem.get(idemKey);
    if (prior) return prior.fingerprint === input.idempotency!.fingerprint ? { kind: "replay", body: prior.body } : { kind: "conflict" };
  }
  const row = stmt.getKey.get(input.keyId);
  const refused = topUpRefusal(input, row && toKey(row));
  if (refused) return refused;
  grant(stmt, input.keyId, amount, input.at, kind, input.note, idemKey);
  const body = input.respond(toKey(stmt.getKey.get(input.keyId)!));
  if (idemKey) stmt.putIdem.run(idemKey, input.idempotency!.fingerprint, body, input.at);
  return { kind: "done", body };
}
