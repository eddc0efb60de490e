import { ShimError } from "./errors.ts";

/**
 * Usage periods. Default: the current UTC month. `from` and `to` accept an ISO date
 * (`2026-01-31`, a whole UTC day: `to` includes that day) or an ISO timestamp. Internally the
 * end is exclusive; reports show it inclusive to the second, as seed 004 does
 * (`2024-12-31T23:59:59Z`).
 */
export interface Period {
  from: number;
  to: number; // exclusive
}

const DATE = /^\d{4}-\d{2}-\d{2}$/;
const DAY_MS = 86_400_000;

export function parsePeriod(query: { from?: unknown; to?: unknown }, nowMs: number): Period {
  const now = new Date(nowMs);
  const monthStart = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1);
  const nextMonth = Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1);
  const from = query.from === undefined ? monthStart : instant(query.from, "from", false);
  const to = query.to === undefined ? (query.from === undefined ? nextMonth : Math.max(nextMonth, from + DAY_MS)) : instant(query.to, "to", true);
  if (to <= from) throw new ShimError("invalid_request", { param: "to", message: "'to' must be after 'from'." });
  return { from, to };
}

function instant(v: unknown, param: string, end: boolean): number {
  if (typeof v !== "string" || v.length > 40 || !isPeriodValue(v)) throw bad(param);
  const ms = Date.parse(DATE.test(v) ? `${v}T00:00:00Z` : v);
  return DATE.test(v) && end ? ms + DAY_MS : ms;
}

/** A period bound as the usage routes take it: an ISO date, or a timestamp with its zone. */
export function isPeriodValue(v: string): boolean {
  return /^\d{4}-\d{2}-\d{2}(T[\d:.]+(Z|[+-]\d{2}:?\d{2}))?$/.test(v) && Number.isFinite(Date.parse(DATE.test(v) ? `${v}T00:00:00Z` : v));
}

const bad = (param: string) =>
  new ShimError("invalid_request", { param, message: `'${param}' must be an ISO date (2026-01-31) or timestamp (2026-01-31T12:00:00Z).` });

/** An ISO timestamp without milliseconds: 2026-01-31T23:59:59Z. */
export function isoSeconds(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace(".000Z", "Z");
}

/** The period as reports show it: start, and the last second inside it. */
export function showPeriod(p: Period): { start: string; end: string } {
  return { start: isoSeconds(p.from), end: isoSeconds(p.to - 1000) };
}
