/**
 * A credits statement: per key, what its ledger says of a period [from, to), for an operator who
 * sells credits and reconciles a month (GET /admin/credits, report-usage --group key). Both
 * stores' SQL reads the ledger alone: the balance a key shows is the ledger's sum, so the
 * statement's closing is the balance the key had at `to`.
 */
import { clientIdempotencyKey } from "./top-ups.ts";

export interface CreditsQuery {
  /** The key reported on; null: all keys. */
  keyId: string | null;
  /** Who asks (the operator: null): its line of reports, as UsageQuery.asker. */
  asker: string | null;
  from: number;
  to: number; // exclusive
  /** As UsageQuery.signal: the asker no longer wants it. */
  signal?: AbortSignal;
}

/**
 * One key's statement, integer µc: opening + granted − spent − adjusted = closing exactly.
 * `granted` is every ledger row of the period that is neither a usage charge nor a write-off (a
 * key's credits at its creation, a stack key's bootstrap grant, top-ups); `spent` the period's
 * usage charges (positive); `adjusted` its write-offs (positive: credits taken off, top-ups.ts).
 */
export interface CreditsLine {
  keyId: string;
  /** The key's name now (a name may change hands after a revoke: the id is the key). */
  name: string;
  opening: number;
  granted: number;
  spent: number;
  adjusted: number;
  closing: number;
  /**
   * The period's other grants (part of `granted`): a key's credits at its creation, a stack key's
   * bootstrap grant, in the order made. A list of their own, not in `topUps`, so a reader summing
   * the top-ups (to tie them to invoices) reads what it read before they were listed; `granted` is
   * the sum of both lists.
   */
  grants: GrantEntry[];
  /** The period's top-ups (part of `granted`), in the order they were made, each with its note (an invoice number). */
  topUps: TopUpEntry[];
  /** The period's write-offs (`adjusted`), so too; each amount positive, as `adjusted` sums them. */
  writeOffs: TopUpEntry[];
}

export interface TopUpEntry {
  at: number;
  amount: number;
  note: string | null;
  /** The Idempotency-Key its request came with, as the client sent it (the ledger's is scoped: top-ups.ts); null: none. */
  idempotencyKey: string | null;
}

/** `creation`: POST /admin/keys' `credits` (ledger kind `grant`); `bootstrap`: a stack key's. */
export type GrantKind = "creation" | "bootstrap";
export type GrantEntry = TopUpEntry & { kind: GrantKind };
/** The ledger's kinds of grantRows' rows, as a statement names them (the shim writes no other). */
const GRANT_KINDS: Record<string, GrantKind> = { grant: "creation", bootstrap: "bootstrap" };

/**
 * The statement's columns over the ledger rows before `to`, as SQL both stores run (`from` their
 * placeholder for the period's start; `integer` makes a sum an integer where it is not one
 * already: Postgres' sum of bigints is a numeric). Every key with a row before `to` has a line;
 * one created later (or with no credits and no request yet) has none.
 */
export function creditsColumns(from: string, integer: (sum: string) => string = (sum) => sum): string {
  // (The top-ups' and write-offs' lists are each store's own SQL: JSON aggregates differ.)
  return `${integer(`coalesce(sum(CASE WHEN l.at < ${from} THEN l.amount END), 0)`)} AS opening,
      ${integer(`coalesce(sum(CASE WHEN l.at >= ${from} AND l.kind NOT IN ('usage', 'adjustment') THEN l.amount END), 0)`)} AS granted,
      ${integer(`coalesce(-sum(CASE WHEN l.at >= ${from} AND l.kind = 'usage' THEN l.amount END), 0)`)} AS spent,
      ${integer(`coalesce(-sum(CASE WHEN ${writeOffRows(from)} THEN l.amount END), 0)`)} AS adjusted,
      ${integer("sum(l.amount)")} AS closing`;
}

/** Which of the rows summed are the period's grants other than top-ups: `granted`'s rows less topUpRows. */
export const grantRows = (from: string): string => `l.at >= ${from} AND l.kind NOT IN ('usage', 'adjustment', 'topup')`;
/** Which of the rows summed are the period's top-ups (`from` the store's placeholder for its start). */
export const topUpRows = (from: string): string => `l.at >= ${from} AND l.kind = 'topup'`;
/** Which are its write-offs (top-ups.ts: negative rows of kind `adjustment`). */
export const writeOffRows = (from: string): string => `l.at >= ${from} AND l.kind = 'adjustment'`;

/**
 * An entry as both stores' SQL aggregates it (JSON objects: at, amount, note, the ledger's kind
 * and idem), `sign` -1 for a write-off's (its row's amount is negative).
 */
export function entryColumns(jsonObject: string, sign: "" | "-" = ""): string {
  return `${jsonObject}('at', l.at, 'amount', ${sign}l.amount, 'note', l.ref, 'kind', l.kind, 'idem', l.idem)`;
}

export interface EntryRow { at: number; amount: number; note: string | null; kind: string; idem: string | null }
/** A statement's row as both stores read it: its entries as their SQL aggregates them. */
export type CreditsRow = Omit<CreditsLine, "grants" | "topUps" | "writeOffs"> & { grants: EntryRow[]; topUps: EntryRow[]; writeOffs: EntryRow[] };

/** A statement's line from its row: each entry with the client's Idempotency-Key, each grant its kind. */
export function creditsLine(row: CreditsRow): CreditsLine {
  const entry = (e: EntryRow): TopUpEntry => ({ at: e.at, amount: e.amount, note: e.note, idempotencyKey: clientIdempotencyKey(row.keyId, e.idem) });
  return {
    ...row,
    grants: row.grants.map((e) => ({ kind: (GRANT_KINDS[e.kind] ?? e.kind) as GrantKind, ...entry(e) })),
    topUps: row.topUps.map(entry),
    writeOffs: row.writeOffs.map(entry),
  };
}
