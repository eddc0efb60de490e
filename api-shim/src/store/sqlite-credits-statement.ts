import type Database from "better-sqlite3";
import { creditsColumns, type CreditsLine, type CreditsQuery, type TopUpEntry, topUpRows } from "./credits-statement.ts";

/** A credits statement's question without its signal: what crosses to the report worker. */
export type CreditsAsk = Omit<CreditsQuery, "signal" | "asker">;

/**
 * The SQLite store's credits statement (credits-statement.ts), run where its usage reports run
 * (the report worker for a database file, the store's thread for an in-memory one): every
 * ledger row before `to` is read once, through (key_id, at) for one key. `check` as for a usage
 * report (sqlite-usage-report.ts): about every 4,096 rows, it ends the statement by throwing.
 */
export function creditsStatement(db: Database.Database, q: CreditsAsk, check: () => void = () => {}): CreditsLine[] {
  db.function("shim_report_check", () => {
    check();
    return 1;
  });
  check();
  const lines = db.prepare<CreditsAsk, Omit<CreditsLine, "topUps"> & { topUps: string }>(`SELECT l.key_id AS keyId, k.name AS name, ${creditsColumns("@from")},
      json_group_array(json_object('at', l.at, 'amount', l.amount, 'note', l.ref) ORDER BY l.at, l.id) FILTER (WHERE ${topUpRows("@from")}) AS topUps
    FROM ledger l JOIN keys k ON k.id = l.key_id
    WHERE l.at < @to ${q.keyId === null ? "" : "AND l.key_id = @keyId"} AND (l.id & 4095 <> 0 OR shim_report_check())
    GROUP BY l.key_id ORDER BY l.key_id`).all({ keyId: q.keyId, from: q.from, to: q.to });
  return lines.map((l) => ({ ...l, topUps: JSON.parse(l.topUps) as TopUpEntry[] }));
}
