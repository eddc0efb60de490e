/**
 * A key's history (GET /admin/keys/{id}/events, `manage-keys history`): one append-only row per
 * change of the key, written by both stores in the same transaction as the change itself, so a
 * change that committed has its row and one rolled back has none. "My key stopped working at
 * 14:02" is answered from it long after the log line that said so has rotated away.
 *
 * What a row never holds: the secret or its hash (a rotation is a row saying so, nothing more),
 * and a name. A new name is how a person's name is erased (docs/privacy.md): the rename scrubs the
 * old one from the file, and an append-only copy of it here would undo that. So an update says
 * that the name changed, not from what to what; `created` says nothing of it either. Money is the
 * credits statement's (grants, write-offs), not repeated here.
 */
import type { KeyChanges } from "./key-updates.ts";

export type KeyEventKind = "created" | "rotated" | "updated" | "revoked";

/** The fields an event names; `expires_at` in ms (null: never), `models` null: every model. */
export type KeyField = "name" | "tier" | "models" | "expires_at";
type FieldValue = string | number | string[] | null;

/** One field changed: `from` and `to` for all but the name (see above); `created` gives `to` alone. */
export interface FieldChange { field: KeyField; from?: FieldValue; to?: FieldValue }

export interface KeyEvent {
  keyId: string;
  at: number;
  event: KeyEventKind;
  /**
   * The admin request's id (its x-request-id, as its log line has it); null for a change made by a
   * start of the shim (a key from configuration made, or revoked once removed from it).
   */
  requestId: string | null;
  changes: FieldChange[];
}

/** The row an event is written as (both stores): `changes` as JSON text. */
export type KeyEventRow = [keyId: string, at: number, event: KeyEventKind, requestId: string | null, changes: string];

export const eventRow = (e: KeyEvent): KeyEventRow => [e.keyId, e.at, e.event, e.requestId, JSON.stringify(e.changes)];

export const INSERT_EVENT = "INSERT INTO key_events (key_id, at, event, request_id, changes) VALUES ($1, $2, $3, $4, $5)";
/** Oldest first: the row's id is the order of the commits (two changes in one millisecond keep theirs). */
export const SELECT_EVENTS = "SELECT key_id, at, event, request_id, changes FROM key_events WHERE key_id = $1 ORDER BY id";

export function fromRow(r: { key_id: string; at: number | string; event: string; request_id: string | null; changes: string }): KeyEvent {
  return { keyId: r.key_id, at: Number(r.at), event: r.event as KeyEventKind, requestId: r.request_id, changes: JSON.parse(r.changes) as FieldChange[] };
}

/** What a new key was made with (its name left out: see above). */
export function creationChanges(key: { tier: string; models: string[] | null; expiresAt: number | null }): FieldChange[] {
  return [{ field: "tier", to: key.tier }, { field: "models", to: key.models }, { field: "expires_at", to: key.expiresAt }];
}

/** The key's fields as its row has them before a change. */
export interface KeyBefore { name: string; tier: string; models: string[] | null; expiresAt: number | null }

/**
 * The event for `changes` made to a key that was `before`: `rotated` for a new secret (a rotation
 * changes nothing else), else `updated` with the fields whose value changed; null when none did
 * (a PATCH that sets what is already there changed nothing, and says nothing).
 */
export function changeEvent(keyId: string, before: KeyBefore, changes: KeyChanges, at: number, requestId: string | null): KeyEvent | null {
  if (changes.hash !== undefined) return { keyId, at, event: "rotated", requestId, changes: [] };
  const out: FieldChange[] = [];
  if (changes.name !== undefined && changes.name !== before.name) out.push({ field: "name" });
  if (changes.tier !== undefined && changes.tier !== before.tier) out.push({ field: "tier", from: before.tier, to: changes.tier });
  if (changes.models !== undefined && JSON.stringify(changes.models) !== JSON.stringify(before.models)) out.push({ field: "models", from: before.models, to: changes.models });
  if (changes.expiresAt !== undefined && changes.expiresAt !== before.expiresAt) out.push({ field: "expires_at", from: before.expiresAt, to: changes.expiresAt });
  return out.length === 0 ? null : { keyId, at, event: "updated", requestId, changes: out };
}

/**
 * A start's event for a stack key it sets from configuration (ensureBootstrapKey, both stores): its
 * name, tier and models as the configuration has them, against its row before; null when none
 * changed (most starts). No request: a start made it (`request_id` null, as its creation's).
 */
export function startChangeEvent(before: KeyBefore, key: { id: string; name: string; tier: string; models: string[] | null; at: number }): KeyEvent | null {
  return changeEvent(key.id, before, { name: key.name, tier: key.tier, models: key.models }, key.at, null);
}

/** A row's `models` column (JSON text in SQLite, jsonb as parsed by pg) as a list, or null. */
export const modelsOf = (models: string | string[] | null): string[] | null => (typeof models === "string" ? (JSON.parse(models) as string[]) : models);

/**
 * Whether `events` tell the key's whole story: they start with its creation and leave it as its
 * row is now. A change made by a shim older than histories (going back to the previous version, as
 * upgrading.md allows) has no event: the row then disagrees (revoked with no `revoked` event; a
 * tier, models or expiry not where the events leave them), and the history is said to be
 * incomplete rather than shown whole (found by the review of the key history: a key revoked in
 * that window showed `["created"]` and complete). A stack key's tier and models are not compared:
 * a start sets them from the stack, with an `updated` event since 2026-12-07 (startChangeEvent), but
 * without one before, so a stack key changed so earlier would read incomplete for no change anyone
 * made by hand.
 */
export function historyIsComplete(events: readonly KeyEvent[], key: KeyBefore & { revokedAt: number | null; fromConfiguration: boolean }): boolean {
  if (events[0]?.event !== "created") return false;
  if ((key.revokedAt !== null) !== events.some((e) => e.event === "revoked")) return false;
  const last = new Map<KeyField, FieldValue | undefined>();
  for (const e of events) for (const c of e.changes) if ("to" in c) last.set(c.field, c.to);
  const agrees = (field: KeyField, now: FieldValue) => JSON.stringify(last.get(field) ?? null) === JSON.stringify(now);
  return agrees("expires_at", key.expiresAt) && (key.fromConfiguration || (agrees("tier", key.tier) && agrees("models", key.models)));
}
