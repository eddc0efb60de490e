// Saves a tenant's whole usage ledger before its stack is destroyed: the ledger lives on the
// tenant's Block Storage Volume, which `pulumi destroy` deletes, so afterwards nobody could bill
// from it. One CSV per key and day, from the stack's creation to today, as the shim writes it,
// and the keys (names, tiers, balances, revocations) as JSON: the CSV names keys by id only, and
// the volume holds the only map from ids to the names operators bill by. The keys are revoked
// first (retire-keys.ts), so the saved ledger is the whole of it.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { AdminApiError, adminClient } from "./admin-client.ts";
import type { ScriptDeps } from "./deps.ts";
import { endpointOf, stackOutputs } from "./pulumi.ts";
import { type RetireOptions, retireKeys } from "./retire-keys.ts";
import { targetFromOutputs } from "./tenant-target.ts";

export type UsageExport =
  | { readonly kind: "saved"; readonly path: string; readonly rows: number; readonly keysPath: string; readonly keys: number }
  /** Saved by an earlier run for this same expiry (whose destroy failed): not exported again. */
  | { readonly kind: "already-saved"; readonly marker: ExportMarker }
  /** Nothing to save: the serving stack never ran, so there is no ledger. */
  | { readonly kind: "none"; readonly reason: string }
  /** `revokedKeys`: how many of its keys reap-expired has revoked for this expiry (this run or an earlier one). */
  | { readonly kind: "failed"; readonly message: string; readonly revokedKeys: number };

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
}

export const markerPath = (dir: string, stack: string) => join(dir, `${stack}.exported`);

/**
 * One of the records kept for a stack's expiry (the marker, the revoked keys): undefined when
 * there is none, it is unreadable, or it is for another expiry (the stack was deployed again).
 */
function readRecord<T extends { stack: string; expiresAt: string }>(path: string, stack: string, expiresAt: Date): T | undefined {
  try {
    const record = JSON.parse(readFileSync(path, "utf8")) as T;
    return record.stack === stack && record.expiresAt === expiresAt.toISOString() ? record : undefined;
  } catch {
    return undefined; // none yet, or unreadable: treated as none
  }
}

function writeJson(path: string, value: unknown): void {
  writeFileSync(path, `${JSON.stringify(value, null, 2)}\n`);
}

/**
 * The keys reap-expired revoked for one expiry, written before each revoke. An export that fails
 * after the revokes keeps the tenant, and the next run finds no live key to revoke: from this it
 * still marks them "revoked_by": "reap-expired" in the keys file, and says they are revoked.
 * (Marking every key revoked after the expiry would also claim those an operator revoked then.)
 */
interface RevokedRecord {
  readonly stack: string;
  readonly expiresAt: string;
  readonly ids: readonly string[];
}

const revokedPath = (dir: string, stack: string) => join(dir, `${stack}.revoked`);

function writeRevoked(dir: string, stack: string, expiresAt: Date, ids: ReadonlySet<string>): void {
  mkdirSync(dir, { recursive: true });
  const record: RevokedRecord = { stack, expiresAt: expiresAt.toISOString(), ids: [...ids] };
  writeJson(revokedPath(dir, stack), record);
}

export interface ExportOptions extends Omit<RetireOptions, "progress" | "revoking"> {
  /** When the stack expired: the marker is for this expiry only. */
  readonly expiresAt: Date;
  readonly progress?: (line: string) => void;
  readonly fetchImpl?: typeof fetch;
}

export async function exportUsage(stack: string, dir: string, deps: Pick<ScriptDeps, "pulumi" | "now">, options: ExportOptions): Promise<UsageExport> {
  const marker = readRecord<ExportMarker>(markerPath(dir, stack), stack, options.expiresAt);
  if (marker) return { kind: "already-saved", marker };
  // The keys revoked for this expiry by an earlier run are still marked (unreadable: they are not).
  const revoked = new Set(readRecord<RevokedRecord>(revokedPath(dir, stack), stack, options.expiresAt)?.ids ?? []);
  const r = await stackOutputs(deps.pulumi, stack, { showSecrets: true });
  if (r.kind !== "outputs") return { kind: "failed", message: r.kind === "error" ? r.message : "the stack is not in the backend", revokedKeys: revoked.size };
  const { createdAt } = r.outputs;
  if (!endpointOf(r.outputs)) {
    return { kind: "none", reason: "no endpoint: the serving stack was never deployed" };
  }
  try {
    const client = adminClient(targetFromOutputs(stack, r.outputs), options.fetchImpl);
    const progress = options.progress ?? (() => {});
    const retired = await retireKeys(client, {
      ...options, progress,
      revoking: (key) => {
        revoked.add(key.id);
        writeRevoked(dir, stack, options.expiresAt, revoked);
      },
    });
    if (retired.stillHolding.length > 0) {
      progress(`requests of ${retired.stillHolding.length} key(s) were still in flight when the wait ended (${retired.stillHolding.map((k) => k.id).join(", ")}): their usage may be missing from what is saved`);
    }
    const now = deps.now();
    const csv = await client.usageCsv({
      group: "day",
      from: typeof createdAt === "string" ? createdAt : "2000-01-01",
      to: now.toISOString().slice(0, 10),
    });
    mkdirSync(dir, { recursive: true });
    const stamp = now.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
    const path = join(dir, `${stack}-usage-${stamp}.csv`);
    const keysPath = join(dir, `${stack}-keys-${stamp}.json`);
    const keys = retired.keys.map((k) => (revoked.has(k.id) && k.revoked_at !== null ? { ...k, revoked_by: "reap-expired" } : k));
    writeJson(keysPath, keys);
    writeFileSync(path, csv);
    const saved: ExportMarker = { stack, expiresAt: options.expiresAt.toISOString(), savedAt: now.toISOString(), usage: path, keys: keysPath };
    writeJson(markerPath(dir, stack), saved);
    rmSync(revokedPath(dir, stack), { force: true }); // in the keys file now
    return { kind: "saved", path, rows: Math.max(0, csv.trim().split(/\r?\n/).length - 1), keysPath, keys: keys.length };
  } catch (err) {
    // No connection, or no answer: the host may be down, e.g. stopped by a destroy that then
    // failed before this export was ever made.
    const down = err instanceof AdminApiError && err.status === undefined && err.outcome !== "refused";
    return { kind: "failed", message: `${(err as Error).message}${down ? " (is the tenant's host up? a destroy that failed after its stop step leaves the serving stack down)" : ""}`, revokedKeys: revoked.size };
  }
}
