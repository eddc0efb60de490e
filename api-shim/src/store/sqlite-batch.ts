import type { JoinedRowValues, KeyRow, prepareStatements, RequestRow } from "./sqlite-statements.ts";
import { keyIsLive, StoreUnavailableError, type AuditRow, type JoinedRow, type ReserveInput, type ReserveResult, type SettleInput } from "./store.ts";

/** An open hold of this process: its key and amount (the key row has the sum and the count). */
export interface Hold { keyId: string; amount: number }

/** This process's open holds per key: how many and their sum. */
export function holdsByKey(holds: Record<string, Hold>): Map<string, { count: number; sum: number }> {
  const mine = new Map<string, { count: number; sum: number }>();
  for (const h of Object.values(holds)) {
    const m = mine.get(h.keyId) ?? { count: 0, sum: 0 };
    m.count++;
    m.sum += h.amount;
    mine.set(h.keyId, m);
  }
  return mine;
}

/**
 * Releases what the database holds beyond this process's own holds, which belongs to a dead
 * process (run in a transaction: the store's releaseStaleReservations); how many holds.
 */
export function releaseStaleHolds(stmt: ReturnType<typeof prepareStatements>, holds: Record<string, Hold>): number {
  const mine = holdsByKey(holds);
  let released = 0;
  for (const k of stmt.openHolds.all()) {
    const m = mine.get(k.id) ?? { count: 0, sum: 0 };
    if (k.held === m.sum && k.holds === m.count) continue;
    released += Math.max(0, k.holds - m.count);
    stmt.setHolds.run(m.sum, m.count, k.id);
  }
  return released;
}

/**
 * A key's money as the open batch sees it: the row as the batch found it (read under the write
 * lock, so nobody else can change it until COMMIT) with the batch's changes applied, and those
 * changes, written to the row as one UPDATE at COMMIT.
 */
interface Account { id: string; balance: number; held: number; dBalance: number; dHeld: number; dHolds: number; revokedAt: number | null; expiresAt: number | null; models: string[] | null; hash: string }

/**
 * The SQLite store's open group-commit batch (sqlite-store.ts opens and commits it): holds and
 * charges decided in memory against the key rows as the batch read them, which is exact because
 * one process, one connection and one thread do all of it, and written at COMMIT: the settled
 * requests' ledger rows, and each touched key's net changes as one UPDATE.
 */
export class Batch {
  private readonly accounts = new Map<string, Account>();
  private readonly rows: RequestRow[] = [];
  /** Joined requests' rows (store.ts, JoinedRow): no money moves, so no account is read for them. */
  private readonly joinedRows: JoinedRowValues[] = [];
  private readonly stmt: ReturnType<typeof prepareStatements>;
  /** The process's open holds by reservation id (the store's, kept across batches). */
  private readonly holds: Record<string, Hold>;

  /** How the batch ended: committed, or rolled back (or dropped) with why. Undefined while open. */
  private outcome: { readonly error: unknown } | "committed" | undefined;
  /** What whenWritten() handed out, made at its first call: a batch of holds alone makes none. */
  private written: PromiseWithResolvers<void> | undefined;

  constructor(stmt: ReturnType<typeof prepareStatements>, holds: Record<string, Hold>) {
    this.stmt = stmt;
    this.holds = holds;
  }

  /** Resolves once the batch has committed; rejects (StoreUnavailableError) once it is rolled back or dropped. */
  whenWritten(): Promise<void> {
    if (this.outcome === "committed") return Promise.resolve();
    if (this.outcome !== undefined) return Promise.reject(new StoreUnavailableError(this.outcome.error));
    return (this.written ??= Promise.withResolvers<void>()).promise;
  }

  /** The store committed it (the first of ended() and committed() is how it ended). */
  committed(): void {
    if (this.outcome !== undefined) return;
    this.outcome = "committed";
    this.written?.resolve();
  }

  /** The store rolled it back or dropped it, for `error`. */
  ended(error: unknown): void {
    if (this.outcome !== undefined) return;
    this.outcome = { error };
    this.written?.reject(new StoreUnavailableError(error));
  }

  /** The key's account in the batch, read from its row at the batch's first use of it. */
  private account(keyId: string): Account | undefined {
    let a = this.accounts.get(keyId);
    if (a === undefined) {
      const row = this.stmt.money.get(keyId);
      if (row === undefined) return undefined;
      a = { id: keyId, balance: row.balance, held: row.held, dBalance: 0, dHeld: 0, dHolds: 0, revokedAt: row.revokedAt, expiresAt: row.expiresAt, hash: row.hash,
        models: row.models === null ? null : (JSON.parse(row.models) as string[]) }; // parsed once a batch, only for a key with an allow-list
      this.accounts.set(keyId, a);
    }
    return a;
  }

  /**
   * The hold: admitted only if the key is live, still has the hash the request authenticated
   * with, allows the model and balance − held covers it (decided under the batch's write lock).
   */
  reserve(input: ReserveInput): ReserveResult {
    const a = this.account(input.keyId);
    if (a === undefined || !keyIsLive(a, input.at) || (input.hash !== undefined && input.hash !== a.hash)) return { ok: false, available: a ? a.balance - a.held : 0, inactive: true };
    const available = a.balance - a.held;
    if (input.model !== undefined && a.models !== null && !a.models.includes(input.model)) return { ok: false, available, notAllowed: true };
    if (available < input.amount) return { ok: false, available, balance: a.balance };
    a.held += input.amount;
    a.dHeld += input.amount;
    a.dHolds++;
    this.holds[input.reservationId] = { keyId: input.keyId, amount: input.amount };
    return { ok: true, available: available - input.amount };
  }

  /**
   * The settlement: the hold gone, the request's ledger row (−cost and its usage), balance −= cost,
   * held −= hold. The cost charged is at most the hold (the hold's own amount), as in the Postgres
   * store: a caller's cost beyond it would take credit other holds count on, and fail the batch's
   * COMMIT (balance − held ≥ 0) with every other settlement in it.
   */
  settle(input: SettleInput): { available: number; charged: number } {
    const hold = this.holds[input.reservationId];
    if (hold === undefined) {
      // Already settled (e.g. by a concurrent shutdown path): a hold is never released twice.
      const a = this.account(input.keyId);
      return { available: a === undefined ? 0 : a.balance - a.held, charged: 0 };
    }
    const a = this.account(hold.keyId)!;
    delete this.holds[input.reservationId];
    const u = input.usage;
    const charged = Math.min(input.cost, hold.amount);
    // Inserted at COMMIT, with the batch's other writes: off the response's critical path.
    this.rows.push([hold.keyId, u.at, -charged, u.requestId, u.route, u.model, u.status, u.promptTokens, u.completionTokens, u.stream ? 1 : 0, u.ms, u.served ? 1 : 0, u.priceId, u.batch ? 1 : 0, u.cachedTokens]);
    a.balance -= charged;
    a.dBalance -= charged;
    a.held -= hold.amount;
    a.dHeld -= hold.amount;
    a.dHolds--;
    return { available: a.balance - a.held, charged };
  }

  /** A joined request's row, written at COMMIT with the settlements' (nothing charged). */
  joined(r: JoinedRow): void {
    this.joinedRows.push([r.keyId, r.at, r.requestId, r.route, r.model, r.status, r.ms, r.batch ? 1 : 0, r.joined]);
  }

  /** A key row read inside the batch does not have the batch's changes yet: they are added. */
  applyTo(r: KeyRow): void {
    const a = this.accounts.get(r.id);
    if (a === undefined) return;
    r.balance += a.dBalance;
    r.held += a.dHeld;
    r.holds += a.dHolds;
  }

  /** The batch's writes, before its COMMIT: the settled requests' ledger rows, each touched key's net changes. */
  write(): void {
    for (const row of this.rows) this.stmt.requestRow.run(...row);
    for (const row of this.joinedRows) this.stmt.joinedRow.run(...row);
    for (const a of this.accounts.values()) {
      if (a.dBalance !== 0 || a.dHeld !== 0 || a.dHolds !== 0) this.stmt.applyMoney.run(a.dBalance, a.dHeld, a.dHolds, a.id);
    }
  }
}

/** The money invariants per key (Store.audit): `reservations` is the database's count of open holds; `reservedSum` the sum of this process's own. */
export function auditRows(stmt: ReturnType<typeof prepareStatements>, holds: Record<string, Hold>): AuditRow[] {
  const mine = holdsByKey(holds);
  return stmt.audit.all().map((r) => ({ keyId: r.keyId, balance: r.balance, held: r.held, ledgerSum: r.ledgerSum, reservations: r.holds, reservedSum: mine.get(r.keyId)?.sum ?? 0 }));
}
