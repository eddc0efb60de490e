import type Database from "better-sqlite3";
import { creditsColumns, creditsLine, type CreditsLine, type CreditsQuery, type CreditsRow, entryColumns, grantRows, topUpRows, writeOffRows } from "./credits-statement.ts";

/** A credits statement's question without its signal: what crosses to the report worker. */
export type CreditsAsk = Omit<CreditsQuery, "signal" | "asker">;

/**
 * The SQLite store's credits statement (credits-statement.ts), run where its usage reports run
 * (the report worker for a database file, the store's thread for an in-memory one): every
 * ledger row before `to` is read once, through (key_id, at) for one key. Every key's: in the
 * table's order, then sorted by key (NOT INDEXED). Through (key_id, at), as the planner chose
 * for the GROUP BY, each key's rows are spread over the whole table, so its pages were read once
 * per key that has rows on them, each row a page lookup: a year of 3 million rows of 50 keys took
 * 11 s, its table scan and sort 2.2 s (a month's usage report of all keys: 0.3 s). The statement
 * reads the whole history before `to`, not the period alone: at that rate 16 million rows filled
 * the report's 60 s bound, and a statement past it fails report-usage --group key.
 * `check` as for a usage report (sqlite-usage-report.ts): about every 4,096 rows, it ends the
 * statement by throwing.
 */
export function creditsStatement(db: Database.Database, q: CreditsAsk, check: () => void = () => {}): CreditsLine[] {
  db.function("shim_report_check", () => {
    check();
    return 1;
  });
  check();
  const rows = db.prepare<CreditsAsk, Omit<CreditsRow, "grants" | "topUps" | "writeOffs"> & { grants: string; topUps: string; writeOffs: string }>(`SELECT l.key_id AS keyId, k.name AS name, ${creditsColumns("@from")},
      json_group_array(${entryColumns("json_object")} ORDER BY l.at, l.id) FILTER (WHERE ${grantRows("@from")}) AS grants,
      json_group_array(${entryColumns("json_object")} ORDER BY l.at, l.id) FILTER (WHERE ${topUpRows("@from")}) AS topUps,
      json_group_array(${entryColumns("json_object", "-")} ORDER BY l.at, l.id) FILTER (WHERE ${writeOffRows("@from")}) AS writeOffs
    FROM ledger l ${q.keyId === null ? "NOT INDEXED " : ""}JOIN keys k ON k.id = l.key_id
    WHERE l.at < @to ${q.keyId === null ? "" : "AND l.key_id = @keyId"} AND (l.id & 4095 <> 0 OR shim_report_check())
    GROUP BY l.key_id ORDER BY l.key_id`).all({ keyId: q.keyId, from: q.from, to: q.to });
  return rows.map((r) => creditsLine({ ...r, grants: JSON.parse(r.grants), topUps: JSON.parse(r.topUps), writeOffs: JSON.parse(r.writeOffs) }));
}
