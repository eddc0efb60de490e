import { ShimError } from "../errors.ts";

/**
 * Usage periods. Default: the current UTC month. `from` and `to` accept an ISO date
 * (`2026-01-31`, a whole UTC day: `to` includes that day) or an ISO timestamp (its offset's `+`
 * may arrive unencoded, as a space). A `to` alone
 * reports the UTC month it falls in, up to it; a `from` alone, up to the end of the current month
 * (at least one day). A timestamp `to` is exclusive, as the end is internally (half-open periods
 * tile without overlap: `to` of one is `from` of the next); reports show the end inclusive to the
 * second, as seed 004 does (`2024-12-31T23:59:59Z`), or to the millisecond for a bound with
 * milliseconds (showPeriod).
 */
export interface Period {
  from: number;
  to: number; // exclusive
}

const DATE = /^\d{4}-\d{2}-\d{2}$/;
const DAY_MS = 86_400_000;
/** 10000-01-01T00:00:00Z: a period ends by then, so its shown end is a 4-digit year the API reads back. */
const LAST_MS = Date.UTC(10000, 0, 1);

export function parsePeriod(query: { from?: unknown; to?: unknown }, nowMs: number): Period {
  const from = query.from === undefined ? undefined : instant(query.from, "from", false);
  const to = query.to === undefined ? undefined : instant(query.to, "to", true);
  // Without a `from`, the month of `to` (or of now): `to=2026-11-30` alone asks about November.
  const start = from ?? monthStart(to === undefined ? nowMs : to - 1, 0);
  const end = to ?? (from === undefined ? monthStart(nowMs, 1) : Math.max(monthStart(nowMs, 1), from + DAY_MS));
  if (end <= start) throw new ShimError("invalid_request", { param: "to", message: "'to' must be after 'from'." });
  // Cut at LAST_MS only once the order is checked, and only a period that starts before it (one
  // given with a negative offset late on 9999-12-31 may start after it in UTC).
  return { from: start, to: start < LAST_MS ? Math.min(LAST_MS, end) : end };
}

/**
 * A period as `from`/`to` values the API reads back as that same period, for a client that pins
 * one itself (report-usage asking for several keys' usage over one period). An end on a UTC
 * midnight goes as the day before it (a date `to` includes its day): the API's last end,
 * 10000-01-01T00:00:00Z, has no timestamp with a 4-digit year, and `toISOString()`'s
 * `+010000-01-01T…` was refused, so `--to 9999-12-31` failed. Undefined for a period that starts
 * past that end (a negative offset late on 9999-12-31): no query writes its bounds, and none is
 * needed, as it ends a day after its `from` whatever the clock.
 */
export function periodQuery(p: Period): { from: string; to: string } | undefined {
  if (p.from >= LAST_MS) return undefined;
  const to = p.to % DAY_MS === 0 ? new Date(p.to - DAY_MS).toISOString().slice(0, 10) : new Date(p.to).toISOString();
  return { from: new Date(p.from).toISOString(), to };
}

/** The first instant of the UTC month `months` after the one `ms` is in (0: its own month). */
export function monthStart(ms: number, months: number): number {
  const d = new Date(ms);
  const start = new Date(0); // not Date.UTC: it reads years 0-99 as 1900-1999
  start.setUTCFullYear(d.getUTCFullYear(), d.getUTCMonth() + months, 1);
  return start.getTime();
}

/**
 * A `+` typed unencoded in a URL arrives as a space (query strings decode `+` so): a space before
 * a timestamp's trailing hh:mm can only have been the `+` of its offset.
 */
const OFFSET_AS_SPACE = /(T[\d:.]+) (\d{2}:?\d{2})$/;

function instant(given: unknown, param: string, end: boolean): number {
  const v = typeof given === "string" ? given.replace(OFFSET_AS_SPACE, "$1+$2") : given;
  const read = readInstant(v, end);
  if ("ms" in read) return read.ms;
  if (read.why !== null) throw new ShimError("invalid_request", { param, message: `'${param}': ${read.why}.` });
  throw new ShimError("invalid_request", { param, message: `'${param}' must be an ISO date (2026-01-31) or timestamp (2026-01-31T12:00:00Z).` });
}

const INSTANT = /^\d{4}-\d{2}-\d{2}(T[\d:.]+(Z|[+-]\d{2}:?\d{2}))?$/;

/**
 * An instant as the API and the scripts take it (period bounds, key expiry, date flags): an ISO
 * date (a UTC day: its first instant, or with `end` the next day's), or a timestamp with its zone.
 * Not whatever `Date.parse` reads: a timestamp without a zone would be read in the server's zone,
 * "March 3, 2027" is not ISO, and `2026-02-30` rolls over to March 2. Otherwise why not: notADay's
 * reason for a date's shape naming no day, or null for any other wrong shape (each caller says
 * which shapes it takes). The one place the shim and the scripts read instants.
 */
export function readInstant(v: unknown, end = false): { ms: number } | { why: string | null } {
  if (typeof v !== "string") return { why: null };
  const why = notADay(v);
  if (why !== null) return { why };
  if (v.length > 40 || !INSTANT.test(v)) return { why: null };
  const date = DATE.test(v);
  const ms = Date.parse(date ? `${v}T00:00:00Z` : v);
  if (!Number.isFinite(ms)) return { why: null };
  return { ms: date && end ? ms + DAY_MS : ms };
}

/** Whether `v` is an instant readInstant reads. */
export const isIsoInstant = (v: string): boolean => "ms" in readInstant(v);

const MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];

/**
 * Why a value shaped as a date (or a timestamp's date) names no day, or null when it does or is
 * not so shaped: `2026-11-31 is not a day: November 2026 has 30 days`. A date's shape with a day
 * that does not exist was refused as a value of the wrong shape, which sent the reader looking
 * for a typo in the format (for the shim's periods and the scripts' date flags alike).
 */
export function notADay(v: string): string | null {
  const m = /^(\d{4})-(\d{2})-(\d{2})(?:$|T)/.exec(v);
  if (!m) return null;
  const [date, year, month, day] = [`${m[1]}-${m[2]}-${m[3]}`, Number(m[1]), Number(m[2]), Number(m[3])];
  if (month < 1 || month > 12) return `${date} is not a day: the month is 01 to 12`;
  const last = new Date(0);
  last.setUTCFullYear(year, month, 0); // day 0 of the next month: the month's last day
  const days = last.getUTCDate();
  return day >= 1 && day <= days ? null : `${date} is not a day: ${MONTHS[month - 1]} ${m[1]} has ${days} days`;
}

/** An ISO timestamp without milliseconds: 2026-01-31T23:59:59Z. */
export function isoSeconds(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace(".000Z", "Z");
}

/**
 * The period as reports show it. Bounds on whole seconds (dates, the default month): start, and
 * the last second inside it, as seed 004 shows them (`2024-12-31T23:59:59Z`). A bound with
 * milliseconds (a JS client's `toISOString()`) shows both to the millisecond, start and last
 * millisecond inside: floored to its second, the shown start named instants the report left out,
 * and the shown period asked again counted other requests.
 */
export function showPeriod(p: Period): { start: string; end: string } {
  if (p.from % 1000 === 0 && p.to % 1000 === 0) return { start: isoSeconds(p.from), end: isoSeconds(p.to - 1) };
  return { start: new Date(p.from).toISOString(), end: new Date(p.to - 1).toISOString() };
}

/** `2026-03-15T12:00:05.123Z` → `20260315T120005Z`: an instant in a file's name (a backup's, an export's), sorting as it reads. */
export const fileStamp = (ms: number): string => new Date(ms).toISOString().replace(/[-:]|\.\d+/g, "");
