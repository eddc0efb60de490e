// GET /admin/credits's answer, as the scripts read it (admin-client.ts's credits()).

export interface CreditsQuery {
  readonly from: string;
  readonly to: string;
  /** One key's statement (its ledger rows through the per-key index), not every key's. */
  readonly key?: string;
}

/** A key's credits over a period (GET /admin/credits), in credits: opening + granted − spent − adjusted = closing. */
export interface CreditsLine {
  readonly key_id: string;
  readonly name: string;
  readonly opening: number;
  readonly granted: number;
  readonly spent: number;
  readonly closing: number;
  /** Credits written off in the period; absent from a shim older than write-offs (its `granted` has them, negative). */
  readonly adjusted?: number;
  /**
   * The period's top-ups, each with its note and the Idempotency-Key it was sent with (absent
   * from a shim older than that); its write-offs so too (absent as `adjusted` is).
   */
  readonly top_ups: readonly CreditsEntry[];
  readonly write_offs?: readonly CreditsEntry[];
  /**
   * The period's other grants (a key's credits at creation, a stack key's bootstrap grant): with
   * `top_ups`, all `granted` sums. Absent from a shim older than that (its `granted` has them).
   */
  readonly grants?: readonly (CreditsEntry & { readonly kind: "creation" | "bootstrap" })[];
}

export interface CreditsEntry {
  readonly at: string;
  readonly amount: number;
  readonly note: string | null;
  readonly idempotency_key?: string | null;
}

export interface CreditsStatement {
  readonly object: "credits_statement";
  readonly period: { readonly start: string; readonly end: string };
  readonly data: readonly CreditsLine[];
}
