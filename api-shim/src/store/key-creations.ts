/**
 * A key creation sent with an Idempotency-Key (POST /admin/keys): what both stores are asked and
 * what they keep. A retry of a creation whose answer was lost must not make a second key with a
 * second creation grant. The row kept (the `idempotency` table, as a top-up's) holds the key's id
 * only, never its answer: the answer had the secret, which is kept hashed, and the name, which a
 * rename erases (docs/privacy.md) and must not outlive it here.
 */
import type { KeyRecord } from "./store.ts";

/** Idempotency-Key header and a fingerprint of the request it came with. */
export interface CreationIdempotency { key: string; fingerprint: string }

export type KeyCreationResult =
  | { kind: "done"; key: KeyRecord }
  | { kind: "replay"; keyId: string }
  | { kind: "conflict" };

/**
 * The `idempotency` row's key: scoped to creations (`keys:`), so a top-up's or write-off's key (scoped
 * `credits:<key>:`, `debits:<key>:`) never meets one. Not scoped to a key: there is none before it.
 */
export const creationRowKey = (once: CreationIdempotency): string => `keys:${once.key}`;

/** The row's body: the key made. */
export const creationBody = (keyId: string): string => JSON.stringify({ key_id: keyId });

/** A prior row's answer to a creation with its key: the same request replays its key, another is a conflict. */
export function priorCreation(prior: { fingerprint: string; body: string } | undefined, once: CreationIdempotency): KeyCreationResult | null {
  if (prior === undefined) return null;
  if (prior.fingerprint !== once.fingerprint) return { kind: "conflict" };
  return { kind: "replay", keyId: (JSON.parse(prior.body) as { key_id: string }).key_id };
}
