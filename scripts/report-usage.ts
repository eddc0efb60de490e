// npm run report-usage -- (--stack <name> | --url <base>) [--key <id|name>] [--from] [--to | --all]
//   [--group model|day|day,model|model,price|key] [--format table|json|csv]
//   | --request <request id> [--key] | --key <id|name> --itemise [period] [--format csv|json]
// A tenant's usage per key and model or day, or per key with its balance, from its admin API
// (/admin/usage and the key list; --group key: /admin/credits too), with totals; one request's
// ledger row, or a key's requests one row each (/admin/requests).
import { creditsNumber, parseCredits } from "../api-shim/src/money/money.ts";
import { ShimError } from "../api-shim/src/errors.ts";
import { parsePeriod, periodQuery, readInstant } from "../api-shim/src/requests/period.ts";
import { AdminApiError, type AdminClient, adminClient, type ApiKey, type CreditsStatement, findKey, isMissingRoute, keyReference, type UsageQuery, type UsageReport, type UsageRow } from "./lib/admin-client.ts";
import { EXIT_CODES_USAGE, instantFlag, oneOf, parseFlags, runScript, UsageError } from "./lib/cli.ts";
import { type ScriptDeps, withDefaults } from "./lib/deps.ts";
import { formatTable } from "./lib/table.ts";
import { REJECTED_TOKEN_FLAGS, resolveAdminTarget, TARGET_OPTIONS, TARGET_USAGE } from "./lib/tenant-target.ts";
import { after, formatKeySummary, keySummary, keySummaryCsv } from "./lib/key-summary.ts";
import { wholeLedger, withKeyNames } from "./lib/usage-export.ts";
import { itemise, lookUpRequest } from "./lib/request-rows.ts";

const USAGE = `Usage: npm run report-usage -- (--stack <name> | --url <base URL>) [options]

Usage of a tenant's keys: requests, prompt/completion/total tokens and cost in credits, per key
and model (or day), for a period (default: the current UTC month; --all: the whole ledger), with
totals.

  --key <id|name>            one key by its id; a name covers every key that has had it (the
                             old key of a rotation too, revoked), and the output names the keys
                             covered (CSV: on stderr)
  --from <date|timestamp>    start, e.g. 2026-03-01 or 2026-03-01T09:00:00Z (UTC); without --to,
                             the period runs to the end of the current UTC month (at least a day)
  --to <date|timestamp>      end; a date includes that whole day, a timestamp is where it stops
                             (not included: 2026-04-01T00:00:00Z ends with March); without
                             --from, the period starts on the first day of that UTC month
  --all                      the whole ledger: from the stack's creation (its createdAt output;
                             with --url, from 2000-01-01) to the end of tomorrow, UTC (a host
                             whose clock is ahead may have begun the next day); not with --from
                             or --to. Save it (--group day,model --format csv) before a tenant is
                             destroyed or rebuilt: the ledger is on its volume
  --group <model|day|day,model|model,price|key>
                             rows per key and model (default), per key and UTC day, or per
                             key, day and model (a shim older than it refuses it); model,price:
                             per key, model and price charged, with the price's fields, batch
                             requests and cached tokens, so each line's cost can be recomputed
                             (rows from before 2026-12-07: price unknown, empty); key: a
                             line per key that existed in the period, those that sent nothing
                             included, with its usage summed, its balance and status now
                             (active, revoked, expired), e.g. for the end of a workshop, and
                             its credits: its balance when the period began (opening) and
                             ended (closing), the credits granted in it (at creation,
                             top-ups) and those written off (adjusted: manage-keys
                             write-off): opening + granted - cost - adjusted = closing, a
                             month's invoice reconciled (json: with each grant at creation or
                             bootstrap (grants), top-up and write-off, its note and
                             idempotency_key; a shim older than GET /admin/credits: left out,
                             said on stderr; one older than write-offs: adjusted 0); a key revoked
                             or expired before the period with credits left has its line too,
                             so a month's opening total is the last one's closing
  --request <request id>     one request's ledger row by the x-request-id its client saw: its
                             status, tokens, cost and price, and what it means (charged or
                             not, and why; counted in the reports or not); --format json: the
                             API's answer. With --key, only a request of that key. One the
                             shim is still serving has no row yet: said so (since when, its
                             key, its hold), exit 3. Not with the period's flags or --group
  --itemise                  with --key: the key's requests in the period one row each, oldest
                             first (request_id, key_id, at, route, model, status, stream, batch,
                             served, reported, prompt_tokens, cached_tokens, completion_tokens,
                             total_tokens, cost, price_id, ms, joined_request_id), written as
                             the shim sends them; --format csv (default) or json (an array of
                             each key's list). The rows with reported true add up to the
                             period's report; the others were neither served nor charged (a
                             joined_request_id: answered with that request's generation,
                             which has the charge). Not with --group
  --format <table|json|csv>  table (default); json (the API's report, each row with key_name
                             after key_id as in the CSV, plus totals, and with --key the keys
                             covered); csv (the API's CSV, spreadsheet-safe, one row per
                             key and group, with key_name after key_id: key_id,key_name,day,model,
                             requests,… with --group day,model; --group key: key_id,
                             key_name, requests, prompt_tokens, completion_tokens, total_tokens,
                             cost, balance, status, opening, granted, closing, adjusted)

${TARGET_USAGE}

Examples:
  npm run report-usage -- --stack acme
  npm run report-usage -- --stack acme --group day --from 2026-03-01 --to 2026-03-07
  npm run report-usage -- --stack acme --key team-a --from 2026-03-01 --to 2026-03-31
  npm run --silent report-usage -- --stack acme --format csv > acme-usage.csv
  npm run report-usage -- --stack acme --request 3f0c2a9e6b1d4e8f9a7c5b3d1e0f2a4b
  npm run --silent report-usage -- --stack acme --key team-a --itemise --from 2026-11-01 --to 2026-11-30 > team-a-2026-11.csv
  npm run --silent report-usage -- --stack acme --all --group day,model --format csv > acme-ledger.csv
  npm run --silent report-usage -- --stack acme --all --group key --format csv > acme-keys.csv
  npm run --silent report-usage -- --stack acme --group key --from 2026-11-01 --to 2026-11-30 --format csv > acme-2026-11-credits.csv

${EXIT_CODES_USAGE}`;

const OPTIONS = {
  ...TARGET_OPTIONS,
  key: { type: "string" },
  from: { type: "string" },
  to: { type: "string" },
  all: { type: "boolean" },
  group: { type: "string" },
  format: { type: "string" },
  request: { type: "string" },
  itemise: { type: "boolean" },
} as const;

const GROUPS = ["model", "day", "day,model", "model,price", "key"] as const;
const FORMATS = ["table", "json", "csv"] as const;

export interface UsageTotals {
  readonly requests: number;
  readonly prompt_tokens: number;
  readonly completion_tokens: number;
  readonly total_tokens: number;
  readonly cost: number;
}

/** Sums the rows; costs are added in micro-credits so the total has no floating-point drift. */
export function usageTotals(rows: readonly UsageRow[]): UsageTotals {
  let micro = 0;
  for (const r of rows) micro += parseCredits(r.cost) ?? 0;
  const sum = (f: (r: UsageRow) => number) => rows.reduce((s, r) => s + f(r), 0);
  return {
    requests: sum((r) => r.requests),
    prompt_tokens: sum((r) => r.prompt_tokens),
    completion_tokens: sum((r) => r.completion_tokens),
    total_tokens: sum((r) => r.total_tokens),
    cost: creditsNumber(micro),
  };
}

export function formatUsage(report: UsageReport, keys: readonly ApiKey[], covered?: readonly ApiKey[]): string {
  const names = new Map(keys.map((k) => [k.id, k.name]));
  const of = covered ? ` of ${coverage(covered)}` : "";
  // day,model: a column for each, day first, as in the API's CSV.
  const groups = report.group.split(",") as ("day" | "model" | "price")[];
  const head = `Usage ${report.period.start} to ${report.period.end}${of}, per key${groups.length > 1 ? `, ${groups[0]}` : ""} and ${groups.at(-1)}`;
  if (report.data.length === 0) return `${head}: no requests.`;
  const totals = usageTotals(report.data);
  type Line = { key: string; name: string; groups: string[]; requests: number; prompt: number; completion: number; total: number; cost: number };
  const lines: Line[] = report.data.map((r) => ({
    key: r.key_id, name: names.get(r.key_id) ?? "?", groups: groups.map((g) => (g === "price" ? priceLabel(r.price) : String(r[g]))),
    requests: r.requests, prompt: r.prompt_tokens, completion: r.completion_tokens, total: r.total_tokens, cost: r.cost,
  }));
  lines.push({ key: "TOTAL", name: "", groups: groups.map(() => ""), requests: totals.requests, prompt: totals.prompt_tokens, completion: totals.completion_tokens, total: totals.total_tokens, cost: totals.cost });
  const table = formatTable<Line>([
    { header: "KEY", value: (l) => l.key },
    { header: "NAME", value: (l) => l.name },
    ...groups.map((g, i) => ({ header: g.toUpperCase(), value: (l: Line) => l.groups[i]! })),
    { header: "REQUESTS", value: (l) => l.requests },
    { header: "PROMPT", value: (l) => l.prompt },
    { header: "COMPLETION", value: (l) => l.completion },
    { header: "TOKENS", value: (l) => l.total },
    { header: "CREDITS", value: (l) => l.cost },
  ], lines);
  return `${head}\n\n${table}`;
}

/**
 * The keys a report for `--key` covers: the key with that id, or every key that has had that
 * name, sorted by id as the API sorts its rows. A rotation revokes a key and makes a new one with
 * its name: a bill for the name must include what the old key spent earlier in the period
 * (findKey, which picks the one key a top-up goes to, would leave it out).
 */
function reportedKeys(keys: readonly ApiKey[], given: string): ApiKey[] {
  const ref = keyReference(keys, given);
  const byId = keys.find((k) => k.id === ref);
  const named = byId ? [byId] : keys.filter((k) => k.name === ref);
  if (named.length === 0) {
    findKey(keys, ref); // throws: no such key, listing the keys in use
    throw new Error(`--key "${ref}" matched no key, yet findKey found one`); // never an empty report
  }
  return named.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** A price as the table shows it (credits; token prices per 1,000 tokens), or that it is unknown. */
function priceLabel(p: UsageRow["price"]): string {
  if (!p) return "unknown (before prices were recorded)";
  return `${p.id}: request ${p.request}, batch ${p.batch_request}, prompt ${p.prompt_per_1k}, cached ${p.cached_prompt_per_1k}, completion ${p.completion_per_1k} /1k`;
}

/** "team-a (2 keys: AbC… revoked, DeF…)": whose usage a report is. */
function coverage(covered: readonly ApiKey[]): string {
  const ids = covered.map((k) => `${k.id}${k.revoked_at === null ? "" : " revoked"}`).join(", ");
  return `${covered[0]!.name} (${covered.length} key${covered.length === 1 ? "" : "s"}: ${ids})`;
}

/**
 * The query for each key covered. The API filters by one key; a report of several asks each for
 * the same period, its end pinned here when it is open: left to the API, the current month could
 * turn between two of the queries. (Pinned by this machine's clock: as if the report ran when it
 * did.) A given bound goes as given, and so does a `to` alone: the API takes its period's start
 * from `to`, not from its clock. A period no query pins (periodQuery) is left to the API.
 */
function queriesFor(query: UsageQuery, covered: readonly ApiKey[] | undefined, now: Date): UsageQuery[] {
  if (!covered) return [query];
  const open = covered.length > 1 && query.to === undefined;
  const pinned = open ? periodQuery(parsePeriod(query, now.getTime())) : undefined;
  const fixed = pinned ? { from: query.from ?? pinned.from, to: pinned.to } : {};
  return covered.map((k) => ({ ...query, ...fixed, key: k.id }));
}

/** One report of every key queried: their rows in the API's order (each query's rows are one key's). */
async function mergedReport(client: AdminClient, queries: readonly UsageQuery[]): Promise<UsageReport> {
  const reports: UsageReport[] = [];
  for (const q of queries) reports.push(await client.usage(q));
  return { ...reports[0]!, data: reports.flatMap((r) => r.data) };
}

/** One CSV of every key queried: the first one's header, then each one's rows as the shim wrote them. */
async function mergedCsv(client: AdminClient, queries: readonly UsageQuery[]): Promise<string> {
  const csvs: string[] = [];
  for (const q of queries) csvs.push(await client.usageCsv(q));
  const rows = (csv: string) => csv.slice(csv.indexOf("\r\n") + 2);
  return csvs[0]! + csvs.slice(1).map(rows).join("");
}

const OLDER_SHIM = "opening, granted and closing left out: this tenant's shim is older than GET /admin/credits (2026-12-07); upgrade it (pulumi up with this checkout) to have them";

/**
 * The credits statement of the report's own period (its shown bounds: the month cannot turn
 * between the two reads), or undefined from a shim older than GET /admin/credits (its 404
 * not_found), said on stderr: the report is still worth having without it. A report of one key
 * asks for that key's alone, which the shim reads through its index instead of every key's ledger.
 */
async function statementFor(client: AdminClient, report: UsageReport, covered: readonly ApiKey[] | undefined, deps: ScriptDeps): Promise<CreditsStatement | undefined> {
  const period = periodQuery({ from: Date.parse(report.period.start), to: after(report.period.end) });
  if (period === undefined) return undefined; // a period starting past 9999-12-31: nothing to state
  try {
    return await client.credits(covered?.length === 1 ? { ...period, key: covered[0]!.id } : period);
  } catch (err) {
    if (!isMissingRoute(err)) throw err;
    deps.io.err(OLDER_SHIM);
    return undefined;
  }
}

/** --group key: a line per key that existed in the period, with its balance and status, and its credits statement (key-summary.ts). */
async function keyReport(client: AdminClient, report: UsageReport, keys: readonly ApiKey[], covered: readonly ApiKey[] | undefined, format: (typeof FORMATS)[number], deps: ScriptDeps): Promise<number> {
  const summary = keySummary(report, keys, deps.now().getTime(), await statementFor(client, report, covered, deps));
  const of = covered ? ` of ${coverage(covered)}` : "";
  if (format === "csv") {
    deps.io.write(keySummaryCsv(summary));
    if (covered) deps.io.err(`usage of ${coverage(covered)}`);
  } else if (format === "json") {
    deps.io.out(JSON.stringify({ ...summary, ...(covered ? { keys: covered.map((k) => ({ id: k.id, name: k.name, revoked_at: k.revoked_at })) } : {}) }, null, 2));
  } else {
    deps.io.out(formatKeySummary(summary, `Usage ${report.period.start} to ${report.period.end}${of}, per key, with balances now`));
  }
  return 0;
}

const periodFlag = (flag: string, value: string | undefined) => instantFlag(flag, value, "a date (2026-03-01) or a timestamp with a zone (2026-03-01T09:00:00Z)");

/**
 * Refuses a --to that ends the period where or before --from starts it, before any request: the
 * API's "'to' must be after 'from'" names neither flag nor value. The API's own reading decides
 * (parsePeriod: a date --to includes its day, offsets, the calendar's end), so this refuses what
 * it would and nothing more.
 */
function checkOrder(given: { from?: string | undefined; to?: string | undefined }, now: Date): void {
  const { from, to } = given;
  if (from === undefined || to === undefined) return; // one bound alone always makes a period
  try {
    parsePeriod({ from, to }, now.getTime());
  } catch (err) {
    if (!(err instanceof ShimError)) throw err;
    const [start, stop] = [readInstant(from), readInstant(to)].map((r) => ("ms" in r ? r.ms : NaN));
    const how = stop! < start! ? "is before" : "is the same instant as";
    throw new UsageError(`--to ${to} ${how} --from ${from}: the period would be empty (${how === "is before" ? "were they swapped?" : "a timestamp --to is where the period stops, not included; a date includes its whole day"})`);
  }
}

export async function main(argv: readonly string[], partial: Partial<ScriptDeps> = {}): Promise<number> {
  const deps = withDefaults(partial);
  return runScript(deps.io, async () => {
    const { values } = parseFlags(argv, OPTIONS, USAGE, { rejected: REJECTED_TOKEN_FLAGS });
    if (values.help) {
      deps.io.out(USAGE);
      return 0;
    }
    if (values.request !== undefined || values.itemise) return requestRows(values, deps);
    const group = oneOf("group", values.group, GROUPS, "model");
    const format = oneOf("format", values.format, FORMATS, "table");
    if (values.all && (values.from !== undefined || values.to !== undefined)) throw new UsageError("--all is the whole ledger: give it without --from and --to");
    const given = { from: periodFlag("from", values.from), to: periodFlag("to", values.to) };
    checkOrder(given, deps.now());
    const target = await resolveAdminTarget(values, deps);
    const { from, to } = values.all ? wholeLedger(target.createdAt, deps.now()) : given;
    const client = adminClient(target, fetch, { progress: (line) => deps.io.err(line) });
    // Names for every format's rows, balances for --group key, and to accept --key by name; the API
    // filters by id. JSON without --key lists them after the report (withTheRows): a --url that is
    // not a shim is then told by the report's route, as before the JSON had names.
    const keys = values.key !== undefined || format !== "json" || group === "key" ? await client.listKeys() : undefined;
    const covered = values.key === undefined ? undefined : reportedKeys(keys!, values.key);
    // --group key sums the API's rows per key and model: the API groups by model or day only.
    const queries = queriesFor({ group: group === "key" ? "model" : group, ...(from ? { from } : {}), ...(to ? { to } : {}) }, covered, deps.now());
    if (group === "key") return keyReport(client, await mergedReport(client, queries), covered ?? keys!, covered, format, deps);
    return await withTheRows(group, format, queries, keys, covered, client, deps);
  });
}

/** --request (a request's row) and --itemise (a key's requests one row each): lib/request-rows.ts. */
async function requestRows(values: { [K in keyof typeof OPTIONS]?: unknown }, deps: ScriptDeps): Promise<number> {
  const given = (flag: string) => values[flag as keyof typeof OPTIONS] !== undefined;
  if (given("group")) throw new UsageError(`--group is for the usage report: --${values.itemise ? "itemise" : "request"} has a row per request`);
  const key = values.key as string | undefined;
  if (values.request !== undefined) {
    if (values.itemise) throw new UsageError("--request looks up one request, --itemise lists a key's: give one of them");
    const period = ["from", "to", "all"].find(given);
    if (period) throw new UsageError(`--${period} is not for --request: a request is found by its id alone (--key narrows it to a key's)`);
    const json = oneOf("format", values.format as string | undefined, ["table", "json"] as const, "table") === "json";
    const client = adminClient(await resolveAdminTarget(values as Parameters<typeof resolveAdminTarget>[0], deps), fetch, { progress: (line) => deps.io.err(line) });
    const keys = await client.listKeys();
    const only = key === undefined ? undefined : reportedKeys(keys, key).map((k) => k.id);
    return lookUpRequest(client, values.request as string, new Map(keys.map((k) => [k.id, k.name])), only, json, deps.io);
  }
  if (key === undefined) throw new UsageError("--itemise lists one key's requests: give --key <id|name> (a request by its id: --request <id>)");
  const format = oneOf("format", values.format as string | undefined, ["csv", "json"] as const, "csv");
  if (values.all && (given("from") || given("to"))) throw new UsageError("--all is the whole ledger: give it without --from and --to");
  const period = { from: periodFlag("from", values.from as string | undefined), to: periodFlag("to", values.to as string | undefined) };
  checkOrder(period, deps.now());
  const target = await resolveAdminTarget(values as Parameters<typeof resolveAdminTarget>[0], deps);
  const { from, to } = values.all ? wholeLedger(target.createdAt, deps.now()) : period;
  const client = adminClient(target, fetch, { progress: (line) => deps.io.err(line) });
  const covered = reportedKeys(await client.listKeys(), key);
  // Several keys (a name a rotation kept): each asked for the same period, pinned as the report pins it.
  const queries = queriesFor({ ...(from ? { from } : {}), ...(to ? { to } : {}) }, covered, deps.now());
  deps.io.err(`requests of ${coverage(covered)}`);
  return itemise(client, covered.map((k) => k.id), { ...(queries[0]!.from ? { from: queries[0]!.from } : {}), ...(queries[0]!.to ? { to: queries[0]!.to } : {}) }, format, deps.io);
}

/** A shim older than group=day,model refuses it (its 400 naming `group`): said as such, with what works with it. */
function olderThanDayModel(err: unknown, group: string): unknown {
  if ((group !== "day,model" && group !== "model,price") || !(err instanceof AdminApiError && err.status === 400 && err.param === "group")) return err;
  return new UsageError(`${err.message}\nThis tenant's shim is older than --group ${group} (2026-12-07): use --group day or --group model with it, or upgrade it (pulumi up with this checkout).`, { cause: err });
}

/**
 * The report's rows with each key's name right after its id, as the CSV has its key_name column
 * (withKeyNames): a job switching format keeps the names. A key the list does not have: "", as
 * the CSV and --group key name it.
 */
export function rowsWithKeyNames(rows: readonly UsageRow[], keys: readonly Pick<ApiKey, "id" | "name">[]): (UsageRow & { key_name: string })[] {
  const names = new Map(keys.map((k) => [k.id, k.name]));
  return rows.map(({ key_id, ...rest }) => ({ key_id, key_name: names.get(key_id) ?? "", ...rest }));
}

async function withTheRows(group: string, format: string, queries: UsageQuery[], listed: readonly ApiKey[] | undefined, covered: readonly ApiKey[] | undefined, client: AdminClient, deps: ScriptDeps): Promise<number> {
  try {
    if (format === "csv") {
      // As the shim wrote it (CRLF line ends, RFC 4180): a line-printing \n would mix endings.
      deps.io.write(withKeyNames(await mergedCsv(client, queries), listed!));
      if (covered) deps.io.err(`usage of ${coverage(covered)}`);
      return 0;
    }
    const report = await mergedReport(client, queries);
    const keys = listed ?? await client.listKeys();
    const json = () => ({ ...report, data: rowsWithKeyNames(report.data, keys), ...(covered ? { keys: covered.map((k) => ({ id: k.id, name: k.name, revoked_at: k.revoked_at })) } : {}), totals: usageTotals(report.data) });
    deps.io.out(format === "json" ? JSON.stringify(json(), null, 2) : formatUsage(report, keys, covered));
    return 0;
  } catch (err) {
    throw olderThanDayModel(err, group);
  }
}

if (import.meta.main) process.exitCode = await main(process.argv.slice(2));
