// Saves a tenant's whole usage ledger before its stack is destroyed: the ledger lives on the
// tenant's Block Storage Volume, which `pulumi destroy` deletes, so afterwards nobody could bill
// from it. One CSV per key, day and model, from the stack's creation to the end of tomorrow, UTC
// (wholeLedger), as the shim writes it with each key's name beside its id (withKeyNames, as
// `report-usage --format csv` prints it: the volume holds the only map from ids to the names
// operators bill by), the keys (names, tiers, balances, revocations) as JSON, and the credits
// statement of the same period as JSON (every grant, top-up and write-off with its note and
// Idempotency-Key: a last month's opening, granted and closing, and the invoice numbers the
// top-ups were sold under, which the usage alone cannot give once the volume is gone). The keys are
// revoked first (retire-keys.ts), so the saved ledger is the whole of it.
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { csvCell } from "../../api-shim/src/csv-cell.ts";
import { fileStamp, isIsoInstant } from "../../api-shim/src/requests/period.ts";
import { type AdminClient, AdminApiError, adminClient, type ApiKey, type CreditsStatement, isMissingRoute } from "./admin-client.ts";
import { hostUnreachable } from "./cli.ts";
import type { ScriptDeps } from "./deps.ts";
import { endpointOf, stackOutputs } from "./pulumi.ts";
import { type RetireOptions, retireKeys } from "./retire-keys.ts";
import { targetFromOutputs } from "./tenant-target.ts";

/**
 * `revokedKeys`: how many of its keys reap-expired has revoked for this expiry (this run or an
 * earlier one), as the shim confirmed; `unsureKeys`: how many more it tried to revoke without
 * a confirmation (the revoke failed, or its answer was lost). What the operator must hear if the
 * tenant is not destroyed after all: its clients get 401 while its host bills on.
 * `configuredKeys`: the names of the revoked keys that are the stack's own (from configuration,
 * `from_configuration` in the listing), which a kept tenant must give new ids with `pulumi up`.
 */
export interface RevokedCount {
  readonly revokedKeys: number;
  readonly unsureKeys: number;
  readonly configuredKeys: readonly string[];
}

export type UsageExport =
  | ({ readonly kind: "saved"; readonly path: string; readonly rows: number; readonly keysPath: string; readonly keys: number; readonly creditsPath: string | null } & RevokedCount)
  /** Saved by an earlier run for this same expiry (whose destroy failed): not exported again. */
  | ({ readonly kind: "already-saved"; readonly marker: ExportMarker } & RevokedCount)
  /** Nothing to save: the serving stack never ran, so there is no ledger. */
  | { readonly kind: "none"; readonly reason: string }
  /**
   * The stack's expiresAt output is not the one this run judged by (read again just before its
   * keys would be revoked): a `pulumi up` changed its ttlHours since. Nothing revoked.
   */
  | { readonly kind: "expiry-moved"; readonly expiresAt: string | undefined }
  | ({ readonly kind: "failed"; readonly message: string } & RevokedCount);

/**
 * Written next to the saved files once they are complete. A destroy can fail after its stop
 * step (the serving stack is down, the instance still billing): the next run cannot export
 * again, and need not: it finds this for the same stack and expiry, and destroys.
 */
export interface ExportMarker {
  readonly stack: string;
  /** The expiry the export was made for: a stack deployed again since expires at another time. */
  readonly expiresAt: string;
  readonly savedAt: string;
  readonly usage: string;
  readonly keys: string;
  /** The credits statement; absent from a shim older than GET /admin/credits (and from older markers). */
  readonly credits?: string;
}

export const markerPath = (dir: string, stack: string) => join(dir, `${stack}.exported`);

/**
 * The period of a tenant's whole ledger, as the API takes it: from the stack's creation (its
 * createdAt output, fixed at the first `pulumi up`, before the volume the ledger is on was made;
 * when not known, 2000-01-01, before any ledger) to the end of tomorrow (UTC), by this machine's
 * clock: the host stamps its rows by its own, and one a little ahead has begun the next day when
 * this one has not (a row it stamped at 00:00:01 would be missing from the only copy of the ledger
 * that outlives `pulumi destroy`). Nothing can be stamped later than now. What reap-expired saves,
 * and `report-usage --all` reports.
 */
export function wholeLedger(createdAt: unknown, now: Date): { from: string; to: string } {
  return {
    from: typeof createdAt === "string" && isIsoInstant(createdAt) ? createdAt : "2000-01-01",
    to: new Date(now.getTime() + DAY_MS).toISOString().slice(0, 10),
  };
}

const DAY_MS = 86_400_000;

/**
 * The shim's CSV with a `key_name` column after `key_id`, from the key list: a bill is read by
 * name. A key the list does not have gets an empty name. The shim's rows are otherwise kept byte
 * for byte (CRLF ends); a key id (12 letters and digits) is never quoted, so each line's first
 * comma ends it. `report-usage --format csv` prints it, and reap-expired saves it.
 */
export function withKeyNames(csv: string, keys: readonly Pick<ApiKey, "id" | "name">[]): string {
  const names = new Map(keys.map((k) => [k.id, k.name]));
  return csv.split("\r\n").map((line, i) => {
    const cut = line.indexOf(",");
    if (cut < 0) return line; // the empty string after the last CRLF
    const id = line.slice(0, cut);
    return `${id},${i === 0 ? "key_name" : csvCell(names.get(id) ?? "")}${line.slice(cut)}`;
  }).join("\r\n");
}

/**
 * The whole ledger's CSV per key, day and model (what an invoice needs when prices differ per
 * model); from a shim older than group=day,model (its 400 naming `group`), per key and day, as
 * before, with a line saying the model column is missing: the tenant is still saved and destroyed.
 */
async function ledgerCsv(client: AdminClient, period: { from: string; to: string }, warn: (line: string) => void): Promise<string> {
  try {
    return await client.usageCsv({ group: "day,model", ...period });
  } catch (err) {
    if (!(err instanceof AdminApiError && err.status === 400 && err.param === "group")) throw err;
    warn("its usage is saved per key and day without the model column: this tenant's shim is older than group=day,model (GET /admin/usage refused it); `pulumi up` a tenant with this checkout before it expires to have it");
    return client.usageCsv({ group: "day", ...period });
  }
}

/**
 * The whole ledger's credits statement (GET /admin/credits), or undefined from a shim older than
 * it (its router's 404), said as a warning: the usage and keys are still saved, and the tenant destroyed.
 */
async function ledgerCredits(client: AdminClient, period: { from: string; to: string }, warn: (line: string) => void): Promise<CreditsStatement | undefined> {
  try {
    return await client.credits(period);
  } catch (err) {
    if (!isMissingRoute(err)) throw err;
    warn("its credits statement (grants, top-ups, write-offs) is not saved: this tenant's shim is older than GET /admin/credits (2026-12-07); `pulumi up` a tenant with this checkout before it expires to have it");
    return undefined;
  }
}

/** A JSON file, or undefined when there is none or it cannot be read: treated as none. */
function readJson<T>(path: string): T | undefined {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as T;
  } catch {
    return undefined;
  }
}

/**
 * One of the records kept for a stack's expiry (the marker, the revoked keys): undefined when
 * there is none, it is unreadable, or it is for another expiry (the stack was deployed again).
 */
function readRecord<T extends { stack: string; expiresAt: string }>(path: string, stack: string, expiresAt: Date): T | undefined {
  return recordWhere<T>(path, stack, (at) => at === expiresAt.toISOString());
}

/** A stack's record whose expiry `matches`; undefined when there is none or it is unreadable. */
function recordWhere<T extends { stack?: unknown; expiresAt?: unknown }>(path: string, stack: string, matches: (expiresAt: string) => boolean): (T & { expiresAt: string }) | undefined {
  const record = readJson<T>(path);
  return record?.stack === stack && typeof record.expiresAt === "string" && matches(record.expiresAt) ? (record as T & { expiresAt: string }) : undefined;
}

/** The keys a revoked-keys record shows revoked (a record from before `confirmed`: all it names). */
const confirmedIn = (record: Partial<RevokedRecord> | undefined) => new Set(record?.confirmed ?? record?.ids ?? []);

/** A file a record names, beside the record (the directory may have been moved, records and files together). */
const beside = (dir: string, f: string) => join(dir, basename(f));

/** How many keys a saved keys file marks as revoked by reap-expired, and the names of the stack's own among them. */
const revokedIn = (keysPath: string) => revokedAmong(readJson<unknown>(keysPath));

/** How many of `keys` (a keys file's content) are marked revoked by reap-expired, and the names of the stack's own among them. */
function revokedAmong(keys: unknown): Pick<RevokedCount, "revokedKeys" | "configuredKeys"> {
  const revoked = Array.isArray(keys) ? keys.filter((k): k is Partial<ApiKey> => (k as { revoked_by?: unknown } | null)?.revoked_by === REVOKED_BY) : [];
  return { revokedKeys: revoked.length, configuredKeys: configuredNames(revoked) };
}

/** The names of the keys from configuration (the stack's own) among `keys`. */
const configuredNames = (keys: readonly Partial<ApiKey>[]): string[] => keys.filter((k) => k.from_configuration === true).map((k) => String(k.name));

const REVOKED_BY = "reap-expired";

function writeJson(path: string, value: unknown): void {
  writePrivate(path, `${JSON.stringify(value, null, 2)}\n`);
}

/**
 * A tenant's billing (its usage, its keys' names and balances) is for the operator alone,
 * whatever the umask (0022 would leave it readable by every user of the machine): a directory
 * made here is 0700 (one that exists keeps its mode: a --usage-dir may be shared on purpose),
 * each file written 0600, a file written again (a marker) included.
 */
function privateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
}

function writePrivate(path: string, text: string): void {
  writeFileSync(path, text, { mode: 0o600 });
  chmodSync(path, 0o600); // the mode above applies only to a file it creates
}

/**
 * The keys reap-expired revoked for one expiry, written before each revoke. An export that fails
 * after the revokes keeps the tenant, and the next run finds no live key to revoke: from this it
 * still marks them "revoked_by": "reap-expired" in the keys file, and says they are revoked.
 * (Marking every key revoked after the expiry would also claim those an operator revoked then.)
 * `confirmed` are those the shim has shown revoked: a revoke that failed or lost its answer is in
 * `ids` only, so the operator is not told that a key still served is locked out.
 */
interface RevokedRecord {
  readonly stack: string;
  readonly expiresAt: string;
  readonly ids: readonly string[];
  readonly confirmed?: readonly string[];
  /** The names of those from configuration (the stack's own keys), by id. */
  readonly configured?: Readonly<Record<string, string>>;
}

const revokedPath = (dir: string, stack: string) => join(dir, `${stack}.revoked`);

/** A revoked-keys record's counts: the confirmed ones revoked, the rest unsure, the stack's own named among the confirmed. */
function countOf(ids: Iterable<string>, confirmed: ReadonlySet<string>, configured: ReadonlyMap<string, string>): RevokedCount {
  const all = [...ids];
  return {
    revokedKeys: confirmed.size, unsureKeys: all.filter((id) => !confirmed.has(id)).length,
    configuredKeys: all.flatMap((id) => (confirmed.has(id) && configured.has(id) ? [configured.get(id)!] : [])),
  };
}

/** What reap-expired has revoked for one expiry, kept in `<stack>.revoked` as it goes. */
class RevokedKeys {
  readonly ids: Set<string>;
  readonly confirmed: Set<string>;
  private readonly configured: Map<string, string>;
  private readonly path: string;
  private readonly dir: string;
  private readonly stack: string;
  private readonly expiresAt: Date;

  constructor(dir: string, stack: string, expiresAt: Date) {
    this.dir = dir;
    this.stack = stack;
    this.expiresAt = expiresAt;
    this.path = revokedPath(dir, stack);
    const record = readRecord<RevokedRecord>(this.path, stack, expiresAt);
    this.ids = new Set(record?.ids ?? []);
    this.confirmed = confirmedIn(record);
    this.configured = new Map(Object.entries(record?.configured ?? {}));
  }

  /** Before the revoke is sent (a write-ahead record). */
  revoking(key: ApiKey): void {
    this.ids.add(key.id);
    if (key.from_configuration === true) this.configured.set(key.id, key.name);
    this.write();
  }

  /** The shim shows the key revoked: this run's revoke answered, or a listing shows it. */
  confirm(id: string): void {
    if (!this.ids.has(id) || this.confirmed.has(id)) return;
    this.confirmed.add(id);
    this.write();
  }

  /** What the run tells of them: revoked, unsure, the stack's own among those revoked. */
  get count(): RevokedCount {
    return countOf(this.ids, this.confirmed, this.configured);
  }

  remove(): void {
    rmSync(this.path, { force: true });
  }

  private write(): void {
    privateDir(this.dir);
    const record: RevokedRecord = { stack: this.stack, expiresAt: this.expiresAt.toISOString(), ids: [...this.ids], confirmed: [...this.confirmed], configured: Object.fromEntries(this.configured) };
    writeJson(this.path, record);
  }
}

export interface ExportOptions extends Omit<RetireOptions, "progress" | "revoking" | "now"> {
  /** When the stack expired: the marker is for this expiry only. */
  readonly expiresAt: Date;
  readonly progress?: (line: string) => void;
  /** What the operator must hear though the export succeeds (stderr; default: progress). */
  readonly warn?: (line: string) => void;
  readonly fetchImpl?: typeof fetch;
}

export async function exportUsage(stack: string, dir: string, deps: Pick<ScriptDeps, "pulumi" | "now">, options: ExportOptions): Promise<UsageExport> {
  const progress = options.progress ?? (() => {});
  // The keys revoked for this expiry by an earlier run are still marked (unreadable: they are not).
  const revoked = new RevokedKeys(dir, stack, options.expiresAt);
  const failed = (message: string): UsageExport => ({ kind: "failed", message, ...revoked.count });
  const r = await stackOutputs(deps.pulumi, stack, { showSecrets: true });
  if (r.kind !== "outputs") return failed(r.kind === "error" ? r.message : "the stack is not in the backend");
  const { createdAt } = r.outputs;
  if (!endpointOf(r.outputs)) {
    return { kind: "none", reason: "no endpoint: the serving stack was never deployed" };
  }
  // Judged expired from outputs read when the run began, maybe minutes ago (other destroys
  // first): an operator's `pulumi up` may have raised its ttlHours since. Its keys stay, and so
  // does the stack, whether or not an earlier run saved its usage.
  const { expiresAt } = r.outputs;
  if (typeof expiresAt !== "string" || Date.parse(expiresAt) !== options.expiresAt.getTime()) {
    return { kind: "expiry-moved", expiresAt: typeof expiresAt === "string" ? expiresAt : undefined };
  }
  const marker = readRecord<ExportMarker>(markerPath(dir, stack), stack, options.expiresAt);
  // The marker lets a destroy go ahead without the tenant's usage in hand: only while the files
  // it names are there, beside it (the directory may have been moved, marker and files together,
  // and given with --usage-dir; or files cleaned from it).
  const gone = marker ? [marker.usage, marker.keys].map((f) => beside(dir, f)).filter((f) => !existsSync(f)) : [];
  if (marker && gone.length === 0) {
    const keys = beside(dir, marker.keys);
    // Not required for a destroy (a shim older than it saved none), so named only while it is there.
    const credits = marker.credits !== undefined && existsSync(beside(dir, marker.credits)) ? { credits: beside(dir, marker.credits) } : {};
    const { credits: _named, ...rest } = marker;
    return { kind: "already-saved", marker: { ...rest, usage: beside(dir, marker.usage), keys, ...credits }, ...revokedIn(keys), unsureKeys: 0 };
  }
  if (marker) progress(`${markerPath(dir, stack)} says its usage was saved, but ${gone.join(" and ")} ${gone.length === 1 ? "is" : "are"} gone: exporting again`);
  try {
    const client = adminClient(targetFromOutputs(stack, r.outputs), options.fetchImpl, { progress });
    const retired = await retireKeys(client, {
      // Whether a key has expired is the host's real time, not the --now that judged the stack.
      ...options, progress, now: deps.now().getTime(),
      revoking: (key) => revoked.revoking(key),
      revoked: (key) => revoked.confirm(key.id),
    });
    if (retired.stillHolding.length > 0) {
      progress(`requests of ${retired.stillHolding.length} key(s) were still in flight when the wait ended (${retired.stillHolding.map((k) => k.id).join(", ")}): their usage may be missing from what is saved`);
    }
    const now = deps.now();
    const csv = withKeyNames(await ledgerCsv(client, wholeLedger(createdAt, now), options.warn ?? progress), retired.keys);
    const credits = await ledgerCredits(client, wholeLedger(createdAt, now), options.warn ?? progress);
    privateDir(dir);
    const stamp = fileStamp(now.getTime());
    const path = join(dir, `${stack}-usage-${stamp}.csv`);
    const keysPath = join(dir, `${stack}-keys-${stamp}.json`);
    const keys = retired.keys.map((k) => (revoked.ids.has(k.id) && k.revoked_at !== null ? { ...k, revoked_by: REVOKED_BY } : k));
    const creditsPath = credits === undefined ? null : join(dir, `${stack}-credits-${stamp}.json`);
    writeJson(keysPath, keys);
    if (creditsPath !== null) writeJson(creditsPath, credits);
    writePrivate(path, csv);
    const saved: ExportMarker = { stack, expiresAt: options.expiresAt.toISOString(), savedAt: now.toISOString(), usage: path, keys: keysPath, ...(creditsPath !== null ? { credits: creditsPath } : {}) };
    writeJson(markerPath(dir, stack), saved);
    revoked.remove(); // in the keys file now
    return {
      kind: "saved", path, rows: Math.max(0, csv.trim().split(/\r?\n/).length - 1), keysPath, keys: keys.length, creditsPath,
      ...revokedAmong(keys), unsureKeys: 0, // what was just written, not read back
    };
  } catch (err) {
    // Nothing answered (refused, timed out, a name not resolved): the host may be down, e.g.
    // stopped by a destroy that then failed before this export was ever made. Not when something
    // did answer, e.g. with a certificate not trusted: the message already says what that means.
    const down = err instanceof AdminApiError && hostUnreachable(err.cause);
    return failed(`${(err as Error).message}${down ? " (is the tenant's host up? a destroy that failed after its stop step leaves the serving stack down)" : ""}`);
  }
}

/**
 * What reap-expired did to a stack for an expiry it no longer has (a `pulumi up` raised its
 * ttlHours, e.g. while the destroy failed on the lock it held): its keys revoked, and its usage
 * saved (`saved`, the marker) or not (the revoked keys' record). `record`: the file it is from.
 */
export type EarlierExpiry = {
  readonly expiresAt: string;
  readonly record: string;
  readonly saved: string | undefined;
} & RevokedCount;

/**
 * The record of an earlier expiry of a stack that is not expired now, when that run revoked some
 * of its keys; undefined when there is none. A record from a deployment destroyed since does not
 * count: a stack deployed again was created after that expiry (`createdAt`, its output).
 */
export function earlierExpiry(dir: string, stack: string, createdAt: unknown): EarlierExpiry | undefined {
  const created = typeof createdAt === "string" ? Date.parse(createdAt) : NaN;
  const ofThisDeployment = (at: string) => Date.parse(at) > created;
  const marker = recordWhere<Partial<ExportMarker>>(markerPath(dir, stack), stack, ofThisDeployment);
  if (marker && typeof marker.keys === "string" && typeof marker.usage === "string") {
    const revoked = revokedIn(beside(dir, marker.keys));
    return revoked.revokedKeys > 0 ? { expiresAt: marker.expiresAt, record: markerPath(dir, stack), saved: beside(dir, marker.usage), ...revoked, unsureKeys: 0 } : undefined;
  }
  const path = revokedPath(dir, stack);
  const revoked = recordWhere<Partial<RevokedRecord>>(path, stack, ofThisDeployment);
  if (!revoked || !Array.isArray(revoked.ids)) return undefined;
  const count = countOf(revoked.ids, confirmedIn(revoked), new Map(Object.entries(revoked.configured ?? {})));
  if (count.revokedKeys + count.unsureKeys === 0) return undefined;
  return { expiresAt: revoked.expiresAt, record: path, saved: undefined, ...count };
}
