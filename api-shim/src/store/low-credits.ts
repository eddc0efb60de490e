/**
 * Which keys are running low on credits, for the gauges an operator alerts on
 * (observability/low-credits.ts), by the rule templates/operator/fleet-status.sh applies to a
 * month's report, so the two name the same keys: an active key (neither revoked nor expired) is
 * low when its balance is 0 or less, or under `share` of the credits it had in the current UTC
 * month, its opening balance plus what was granted in it (credits-statement.ts' opening +
 * granted).
 *
 * opening + granted = closing + spent + adjusted (the statement's identity), and closing is the
 * key's balance now: so what it had is its balance less the month's usage and write-off rows
 * (both negative). Only the month's rows are read, each key's through (key_id, at): not the
 * whole history a credits statement scans.
 */
import type Database from "better-sqlite3";

export interface LowCreditsQuery {
  /** The start of the month (UTC) the credits it had are counted from (period.ts monthStart: fleet-status.sh's report period, report-usage's default). */
  from: number;
  /** Now: a key that expired before it is not active. */
  now: number;
}

/** An active key's balance and the credits it had this month (µc, integers). */
export interface KeyCredits {
  keyId: string;
  name: string;
  balance: number;
  had: number;
}

/** fleet-status.sh's rule: `.balance <= 0 or .balance < $share * ((.opening // 0) + (.granted // 0))`. */
export const isLow = (k: KeyCredits, share: number): boolean => k.balance <= 0 || k.balance < share * k.had;

/**
 * The query both stores run: `from` and `now` their placeholders, `integer` makes a sum an integer
 * (Postgres' sum of bigints is a numeric), `collate` orders ids in byte order (Postgres' ` COLLATE "C"`,
 * as SQLite's own), `rows` a further condition on the ledger rows summed (SQLite's stop check).
 * One row per active key, in id order.
 */
export function lowCreditsSql(from: string, now: string, integer: (sum: string) => string = (sum) => sum, collate = "", rows = ""): string {
  return `SELECT k.id AS "keyId", k.name AS name, k.balance AS balance,
      k.balance - ${integer(`coalesce((SELECT sum(l.amount) FROM ledger l WHERE l.key_id = k.id AND l.at >= ${from} AND l.kind IN ('usage', 'adjustment')${rows}), 0)`)} AS had
    FROM keys k WHERE k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > ${now})
    ORDER BY k.id${collate}`;
}

/**
 * The SQLite store's (on the report worker for a database file: sqlite-report-worker.ts), with
 * `check` as a report's (sqlite-usage-report.ts): about every 4,096 rows summed it may end the
 * statement by throwing, so the read keeps the reports' time bound and stops when the store
 * closes, as the Postgres store's read (a report's statement) does. A month of a busy ledger is
 * millions of rows, and the operator's reports wait behind it.
 */
export function sqliteLowCredits(db: Database.Database, q: LowCreditsQuery, check: () => void = () => {}): KeyCredits[] {
  db.function("shim_report_check", () => {
    check();
    return 1;
  });
  check();
  return db.prepare<LowCreditsQuery, KeyCredits>(lowCreditsSql("@from", "@now", undefined, "", " AND (l.id & 4095 <> 0 OR shim_report_check())")).all(q);
}
