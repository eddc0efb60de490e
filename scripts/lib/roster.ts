// A roster for `manage-keys create --from`: one key a line of a CSV file with a header line, a
// `name` column and optional `credits`, `tier` and `expires_at` columns (a cell left empty takes
// the flag's value). Checked whole before any key is made: every line's problem is listed with its
// line number, so a roster is fixed once rather than a line a run.
import { creditsInput } from "../../api-shim/src/money/money.ts";
import { readInstant } from "../../api-shim/src/requests/period.ts";
import type { ApiKey } from "./admin-client.ts";
import { closestName } from "./closest-name.ts";
import { keyNameProblem, nameTaken } from "./create-key.ts";
import { readCsv } from "./csv-read.ts";

export const ROSTER_COLUMNS = ["name", "credits", "tier", "expires_at"] as const;
type Column = (typeof ROSTER_COLUMNS)[number];

/** What a line without a value of its own takes: the command's flags. */
export interface RosterDefaults {
  readonly credits?: string | undefined;
  readonly tier?: string | undefined;
  readonly expiresAt?: string | undefined;
}

/** One key to make: its line in the file, for messages, and its values (a line's own, else the defaults). */
export interface RosterEntry extends RosterDefaults {
  readonly line: number;
  readonly name: string;
}

/** A line of the roster and what is wrong with it, as listed: `line 4: …`. */
export interface RosterProblem {
  readonly line: number;
  readonly message: string;
}

export const problemText = (p: RosterProblem): string => `line ${p.line}: ${p.message}`;

/** A value in a message, shortened: a cell may hold a paragraph pasted by mistake. */
const shown = (v: string): string => JSON.stringify(v.length > 60 ? `${v.slice(0, 60)}…` : v);

/**
 * An expiry as the admin API takes it (readInstant, the shim's reading), in the future (the shim
 * refuses a past one); else why not, to follow what it is (`expires_at "…"`, `--expires-at "…"`).
 */
export function expiryProblem(value: string, now: number): string | undefined {
  const read = readInstant(value);
  if (!("ms" in read)) return read.why !== null ? `: ${read.why}` : " must be an ISO timestamp with its zone, e.g. 2026-12-31T23:59:59Z, or a date (00:00 UTC that day)";
  if (read.ms <= now) return ` is not in the future (it is ${new Date(now).toISOString().replace(/\.\d+Z$/, "Z")} now): a key cannot be made expired`;
  return undefined;
}

/**
 * The roster's keys, or its problems (then nothing is to be made): the header's (no `name`
 * column, a column not known, twice the same), each line's (a name the admin API refuses or on
 * another line too, credits it would refuse, an expiry that is no time or is past, more cells than
 * columns), and a shape no spreadsheet writes. Blank lines are skipped.
 */
export function readRoster(text: string, defaults: RosterDefaults, now: number): { entries: RosterEntry[]; problems: RosterProblem[] } {
  const { records, problems: shapes } = readCsv(text);
  const problems: RosterProblem[] = [...shapes];
  const [header, ...rows] = records;
  if (header === undefined) return { entries: [], problems: [...problems, { line: 1, message: `no header line: the first line names the columns, e.g. name,credits (${ROSTER_COLUMNS.join(", ")})` }] };
  const columns = header.cells.map((c) => c.trim().toLowerCase());
  const at = new Map<Column, number>();
  columns.forEach((c, i) => {
    if (c === "") return; // a spreadsheet's empty column: harmless while its cells are empty (below)
    if (!(ROSTER_COLUMNS as readonly string[]).includes(c)) {
      const meant = closestName(c, ROSTER_COLUMNS);
      problems.push({ line: header.line, message: `unknown column ${shown(header.cells[i]!.trim())}${meant ? ` (did you mean ${meant}?)` : ""}: the columns are ${ROSTER_COLUMNS.join(", ")}` });
    } else if (at.has(c as Column)) problems.push({ line: header.line, message: `the column ${c} is given twice` });
    else at.set(c as Column, i);
  });
  if (!at.has("name")) problems.push({ line: header.line, message: `no name column: the first line names the columns, e.g. name,credits (${ROSTER_COLUMNS.join(", ")})` });
  const entries: RosterEntry[] = [];
  const firstLine = new Map<string, number>();
  for (const row of rows) {
    const say = (message: string) => problems.push({ line: row.line, message });
    if (row.cells.length > columns.length) {
      say(`${row.cells.length} cells, but line ${header.line} names ${columns.length} column${columns.length === 1 ? "" : "s"} (a comma in a name needs the name in quotes)`);
      continue;
    }
    const stray = row.cells.findIndex((c, i) => columns[i] === "" && c.trim() !== "");
    if (stray >= 0) say(`cell ${stray + 1} (${shown(row.cells[stray]!)}) is under no column: line ${header.line} leaves its name empty`);
    /** A column's cell, trimmed; undefined when empty or not there. */
    const cell = (c: Column): string | undefined => {
      const v = row.cells[at.get(c) ?? -1]?.trim();
      return v === "" ? undefined : v;
    };
    if (!at.has("name")) continue; // said once, for the header
    // Trimmed as the shim stores it: "alice " is the name "alice".
    const name = cell("name") ?? "";
    const nameProblem = keyNameProblem(name);
    if (nameProblem) say(`name ${name === "" ? "" : `${shown(name)} `}${nameProblem}`);
    else if (firstLine.has(name)) say(`name ${shown(name)} is on line ${firstLine.get(name)} too: a name names one key`);
    else firstLine.set(name, row.line);
    const credits = cell("credits");
    const given = credits === undefined ? undefined : creditsInput(credits, "non-negative"); // the shim's own rule
    if (given && "must" in given) say(`credits ${shown(credits!)} must be ${given.must}, e.g. 250 or 12.5`);
    const expiresAt = cell("expires_at");
    const expiry = expiresAt === undefined ? undefined : expiryProblem(expiresAt, now);
    if (expiry) say(`expires_at ${shown(expiresAt!)}${expiry}`);
    entries.push({ line: row.line, name, credits: credits ?? defaults.credits, tier: cell("tier") ?? defaults.tier, expiresAt: expiresAt ?? defaults.expiresAt });
  }
  if (entries.length === 0 && problems.length === 0) problems.push({ line: header.line, message: "no names after the header line: nothing to create" });
  return { entries, problems: problems.sort((a, b) => a.line - b.line) };
}

/**
 * The roster judged against the tenant's keys: a name that is another key's id is a problem (the
 * new key could never be named by `--key`); a name that a key in use has is skipped, so a run
 * again after a failure makes only the keys still missing.
 */
export function againstKeys(entries: readonly RosterEntry[], keys: readonly ApiKey[]): { create: RosterEntry[]; skipped: { entry: RosterEntry; key: ApiKey }[]; problems: RosterProblem[] } {
  const create: RosterEntry[] = [];
  const skipped: { entry: RosterEntry; key: ApiKey }[] = [];
  const problems: RosterProblem[] = [];
  for (const entry of entries) {
    const taken = nameTaken(keys, entry.name);
    if (taken?.by === "id") problems.push({ line: entry.line, message: `name ${shown(entry.name)} is the id of another key (${taken.key.name}), and --key ${shown(entry.name)} would always mean that key: choose another name` });
    else if (taken) skipped.push({ entry, key: taken.key });
    else create.push(entry);
  }
  return { create, skipped, problems };
}
