// `report-usage --group key`: a line per key for a period, with what it spent and what it has
// left, for the end of a workshop or a month's bill. Every key that existed in the period is
// there, those that sent nothing included (the API's report has rows only for keys with usage),
// and, with the statement, every key whose credits are still booked (revoked or expired before it),
// with its balance and status now, from the key list the report already reads for names, and,
// from a shim that has GET /admin/credits, its balance when the period began and ended, the
// credits granted in it and those written off.
import { csvLine } from "../../api-shim/src/csv-cell.ts";
import { creditsNumber, formatCredits, parseCredits } from "../../api-shim/src/money/money.ts";
import { type ApiKey, type CreditsLine, type CreditsStatement, keyStatus, type UsageReport, type UsageRow } from "./admin-client.ts";
import { formatTable } from "./table.ts";

/** A key's line: its usage in the period, summed over models, and its balance and status now. */
export interface KeySummaryRow {
  readonly key_id: string;
  readonly key_name: string;
  readonly requests: number;
  readonly prompt_tokens: number;
  readonly completion_tokens: number;
  readonly total_tokens: number;
  readonly cost: number;
  /** Null for a key the list does not have (it cannot be: keys are never deleted, only revoked). */
  readonly balance: number | null;
  readonly status: "active" | "revoked" | "expired" | null;
  /**
   * Its balance when the period began, the credits granted in it (at creation, top-ups), those
   * written off (`adjusted`: refunds, expired credits) and its balance when it ended (GET
   * /admin/credits): absent when the shim is older than that route; `adjusted` 0 from a shim
   * older than write-offs. opening + granted − cost − adjusted = closing, once the period is over
   * (cost is read first: a request settled between the two reads of a period still running is
   * in `closing` alone).
   */
  readonly opening?: number;
  readonly granted?: number;
  readonly adjusted?: number;
  readonly closing?: number;
  /**
   * The period's grants (at creation, bootstrap), top-ups and write-offs with their notes and
   * Idempotency-Keys (the JSON's alone: the table and the CSV have a line per key), as the
   * statement lists them; `grants` absent from a shim older than that list.
   */
  readonly grants?: CreditsLine["grants"];
  readonly top_ups?: CreditsLine["top_ups"];
  readonly write_offs?: CreditsLine["top_ups"];
}

type CreditsMembers = Pick<KeySummaryRow, "opening" | "granted" | "adjusted" | "closing" | "grants" | "top_ups" | "write_offs">;

export interface KeySummary {
  readonly object: "usage_report";
  readonly period: UsageReport["period"];
  readonly group: "key";
  readonly data: readonly KeySummaryRow[];
  readonly totals: Omit<KeySummaryRow, "key_id" | "key_name" | "status" | "balance"> & { readonly balance: number };
}

/** An instant a report shows; its end is the last second (or millisecond) inside the period: the instant after it. */
export const after = (shownEnd: string): number => Date.parse(shownEnd) + (/\.\d+Z$/.test(shownEnd) ? 1 : 1000);

/** Whether a key could be used at some time in the period: made before its end, neither revoked nor expired before its start. */
function existedIn(k: ApiKey, period: UsageReport["period"]): boolean {
  const [start, end] = [Date.parse(period.start), after(period.end)];
  return Date.parse(k.created_at) < end
    && (k.revoked_at === null || Date.parse(k.revoked_at) >= start)
    && (k.expires_at === null || Date.parse(k.expires_at) > start);
}

/**
 * A line per key of `keys` (the tenant's, or those a --key covers) that existed in the report's
 * period, in the list's order (creation), and per key the report has rows for besides; `report`'s
 * rows (per key and model, or day) summed per key, costs in micro-credits so the sums are exact.
 */
export function keySummary(report: UsageReport, keys: readonly ApiKey[], now = Date.now(), statement?: CreditsStatement): KeySummary {
  const credits = new Map(statement?.data.map((l) => [l.key_id, l]));
  // A key without a line had no ledger row before the period's end: 0 at both ends, nothing granted.
  const creditsOf = (id: string): CreditsMembers => {
    if (!statement) return {};
    const l = credits.get(id);
    // `grants` left out when the shim's line has none (older than them): [] would say its `granted` had no grant.
    const grants = l === undefined ? [] : l.grants;
    return {
      opening: l?.opening ?? 0, granted: l?.granted ?? 0, adjusted: l?.adjusted ?? 0, closing: l?.closing ?? 0,
      ...(grants === undefined ? {} : { grants }), top_ups: l?.top_ups ?? [], write_offs: l?.write_offs ?? [],
    };
  };
  const rows = new Map<string, UsageRow[]>();
  for (const r of report.data) {
    const of = rows.get(r.key_id);
    if (of) of.push(r);
    else rows.set(r.key_id, [r]);
  }
  // A key revoked or expired before the period whose credits are still booked keeps its line
  // (the statement's own rule): left out, the period's opening total was not the last one's closing.
  // (A write-off alone cannot book a key: it takes no more than opening + granted − spent.)
  const booked = (id: string) => { const l = credits.get(id); return l !== undefined && (l.opening !== 0 || l.granted !== 0 || l.spent !== 0 || l.closing !== 0); };
  const listed = keys.filter((k) => rows.has(k.id) || existedIn(k, report.period) || booked(k.id));
  const ids = new Set(keys.map((k) => k.id));
  const unlisted = [...rows.keys()].filter((id) => !ids.has(id));
  const micro = (v: number) => parseCredits(v) ?? 0;
  const line = (id: string, key: ApiKey | undefined): KeySummaryRow & { micro: number } => {
    const of = rows.get(id) ?? [];
    const sum = (f: (r: UsageRow) => number) => of.reduce((s, r) => s + f(r), 0);
    const cost = sum((r) => micro(r.cost));
    return {
      key_id: id, key_name: key?.name ?? "", requests: sum((r) => r.requests), prompt_tokens: sum((r) => r.prompt_tokens),
      completion_tokens: sum((r) => r.completion_tokens), total_tokens: sum((r) => r.total_tokens), cost: creditsNumber(cost),
      balance: key ? key.balance : null, status: key ? keyStatus(key, now) : null, ...creditsOf(id), micro: cost,
    };
  };
  const lines = [...listed.map((k) => line(k.id, k)), ...unlisted.map((id) => line(id, undefined))];
  const total = (f: (l: KeySummaryRow) => number) => lines.reduce((s, l) => s + f(l), 0);
  return {
    object: "usage_report", period: report.period, group: "key",
    data: lines.map(({ micro: _, ...l }) => l),
    totals: {
      requests: total((l) => l.requests), prompt_tokens: total((l) => l.prompt_tokens), completion_tokens: total((l) => l.completion_tokens),
      total_tokens: total((l) => l.total_tokens), cost: creditsNumber(lines.reduce((s, l) => s + l.micro, 0)),
      balance: creditsNumber(total((l) => micro(l.balance ?? 0))),
      ...(statement ? {
        opening: creditsNumber(total((l) => micro(l.opening!))), granted: creditsNumber(total((l) => micro(l.granted!))),
        adjusted: creditsNumber(total((l) => micro(l.adjusted!))), closing: creditsNumber(total((l) => micro(l.closing!))),
      } : {}),
    },
  };
}

/** The summary as CSV, in the shim's CSV's style: its columns' names, formula-safe cells (csvCell), CRLF line ends. */
export function keySummaryCsv(summary: KeySummary): string {
  // The statement's columns last, and `adjusted` (write-offs, which came later) after them: a
  // spreadsheet or script reading the earlier ones by position keeps working.
  const statement = hasStatement(summary);
  const header = ["key_id", "key_name", "requests", "prompt_tokens", "completion_tokens", "total_tokens", "cost", "balance", "status", ...(statement ? ["opening", "granted", "closing", "adjusted"] : [])];
  const credits = (v: number | null | undefined) => (v === null || v === undefined ? "" : formatCredits(parseCredits(v) ?? 0));
  const lines = summary.data.map((r) => [
    r.key_id, r.key_name, r.requests, r.prompt_tokens, r.completion_tokens, r.total_tokens, credits(r.cost), credits(r.balance), r.status ?? "",
    ...(statement ? [credits(r.opening), credits(r.granted), credits(r.closing), credits(r.adjusted)] : []),
  ]);
  return [header, ...lines].map(csvLine).join("");
}

/** The summary as a table, a TOTAL line last; `head`: what the report is of (its period, and the keys a --key covers). */
export function formatKeySummary(summary: KeySummary, head: string): string {
  if (summary.data.length === 0) return `${head}: no keys.`;
  type Line = Omit<KeySummaryRow, "balance" | "status"> & { balance: number | string; status: string };
  const lines: Line[] = summary.data.map((r) => ({ ...r, key_name: r.key_name || "?", balance: r.balance ?? "-", status: r.status ?? "-" }));
  lines.push({ key_id: "TOTAL", key_name: "", ...summary.totals, status: "" });
  // With the statement, the credits read left to right as the month went: OPENING + GRANTED − SPENT − ADJUSTED = CLOSING.
  const statement = hasStatement(summary);
  return `${head}\n\n${formatTable<Line>([
    { header: "KEY", value: (l) => l.key_id },
    { header: "NAME", value: (l) => l.key_name },
    { header: "REQUESTS", value: (l) => l.requests },
    { header: "PROMPT", value: (l) => l.prompt_tokens },
    { header: "COMPLETION", value: (l) => l.completion_tokens },
    { header: "TOKENS", value: (l) => l.total_tokens },
    ...(statement ? [{ header: "OPENING", value: (l: Line) => l.opening!, align: "right" as const }, { header: "GRANTED", value: (l: Line) => l.granted!, align: "right" as const }] : []),
    { header: statement ? "SPENT" : "CREDITS", value: (l) => l.cost },
    ...(statement ? [{ header: "ADJUSTED", value: (l: Line) => l.adjusted!, align: "right" as const }, { header: "CLOSING", value: (l: Line) => l.closing!, align: "right" as const }] : []),
    { header: "BALANCE", value: (l) => l.balance, align: "right" },
    { header: "STATUS", value: (l) => l.status, align: "left" },
  ], lines)}`;
}

/** Whether the summary has the credits statement's members (the shim had GET /admin/credits). */
const hasStatement = (summary: KeySummary): boolean => summary.totals.opening !== undefined;
