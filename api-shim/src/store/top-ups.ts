/**
 * A change of a key's credits by the operator (POST /admin/keys/{id}/credits, a top-up; POST
 * /admin/keys/{id}/debits, a write-off): what both stores are asked, and the ledger row they
 * append. Either is one ledger row, so a key's balance stays the ledger's sum.
 */
import type { KeyRecord } from "./store.ts";

export interface TopUpInput {
  keyId: string;
  /** µc, > 0: added by a top-up, taken off by a write-off. */
  amount: number;
  note: string | null;
  at: number;
  /**
   * A write-off (a refund, sold credits that expired, a revoked key's leftover): the amount is
   * taken off, as a ledger row of kind `adjustment`. Left out: a top-up.
   */
  writeOff?: true;
  /** Idempotency-Key header and a fingerprint of the request it came with. */
  idempotency: { key: string; fingerprint: string } | null;
  /** Builds the response body stored for replays, from the key's state after the top-up. */
  respond: (key: KeyRecord) => string;
  /**
   * Why this top-up must not be made to this key (its state before it, read under the key's
   * lock: no hold is made between), or null. Asked after a replay is recognised, so a retry
   * still gets the answer its first attempt got.
   */
  refuse: (key: KeyRecord) => string | null;
}
export type TopUpResult =
  | { kind: "done"; body: string }
  | { kind: "replay"; body: string }
  | { kind: "conflict" }
  | { kind: "not_found" }
  | { kind: "refused"; reason: string };

/** The top-up's answer before any grant, for a key that does not exist or that `refuse` turns away. */
export function topUpRefusal(input: TopUpInput, key: KeyRecord | undefined): TopUpResult | null {
  if (!key) return { kind: "not_found" };
  const reason = input.refuse(key);
  return reason === null ? null : { kind: "refused", reason };
}

/**
 * The ledger row a top-up or a write-off appends: its kind, its signed amount, and its
 * idempotency key, scoped to the key and to the route (`credits:` or `debits:`), so an invoice
 * number used as a top-up's key can be a refund's key too. Older shims read an `adjustment` row
 * as one more non-usage row: in their statement's `granted`, negative, which still reconciles.
 */
export function creditsChangeRow(input: TopUpInput): { kind: "topup" | "adjustment"; amount: number; idem: string | null } {
  const scope = input.writeOff ? IDEMPOTENCY_SCOPES.writeOff : IDEMPOTENCY_SCOPES.topUp;
  return {
    kind: input.writeOff ? "adjustment" : "topup",
    amount: input.writeOff ? -input.amount : input.amount,
    idem: input.idempotency && `${scope}:${input.keyId}:${input.idempotency.key}`,
  };
}

/** The scopes of the ledger's idempotency keys for a top-up and a write-off (named for their routes). */
const IDEMPOTENCY_SCOPES = { topUp: "credits", writeOff: "debits" } as const;

/**
 * The Idempotency-Key a client sent, from a ledger row's `idem` as creditsChangeRow scoped it
 * (`credits:<key>:<idem>`, `debits:<key>:<idem>`). Anything else (a bootstrap grant's
 * `bootstrap:<key>`, the shim's own) is no client's: null.
 */
export function clientIdempotencyKey(keyId: string, idem: string | null): string | null {
  if (idem === null) return null;
  for (const scope of Object.values(IDEMPOTENCY_SCOPES)) {
    const prefix = `${scope}:${keyId}:`;
    if (idem.startsWith(prefix)) return idem.slice(prefix.length);
  }
  return null;
}
