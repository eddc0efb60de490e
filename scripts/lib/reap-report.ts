// reap-expired --json: a row per stack the run considered and what became of it, for a pipeline
// to branch on instead of parsing `[tenant] KEPT: …` lines. Field names as list-tenants --json's.
import { isoSeconds } from "../../api-shim/src/requests/period.ts";
import type { Expiry } from "./tenants.ts";
import type { UsageExport } from "./usage-export.ts";

/**
 * What became of a stack: "would-destroy" is a dry run's "destroy"; "kept" is not expired (or
 * not deployed, or its expiry moved during the run); "failed" is a usage export or a destroy that
 * failed, and "unknown" a stack whose expiry could not be told (both make the run exit 1);
 * "interrupted" a stack a signal stopped before or during its destroy, or before it started.
 */
export type ReapAction = "destroyed" | "would-destroy" | "kept" | "failed" | "unknown" | "interrupted";

export interface ReapRow {
  readonly stack: string;
  action: ReapAction;
  /** The expiresAt judged by (the one it has now, when a `pulumi up` moved it during the run); null: none. */
  expiresAt: string | null;
  /** Its first `pulumi up` failed, leaving a billing instance (as list-tenants --json). */
  readonly failedDeploy: boolean;
  /** Why it was kept, failed, unknown or interrupted, or destroyed without its usage saved; else null. */
  reason: string | null;
  /** Where its usage, keys and credits statement are saved (this run, or an earlier one whose destroy failed); else null. */
  usageFile: string | null;
  keysFile: string | null;
  /** Null too when its shim was older than the credits statement. */
  creditsFile: string | null;
  /** How many of its keys reap-expired revoked (clients get 401), and tried to without an answer. */
  revokedKeys: number;
  unsureKeys: number;
}

export class ReapReport {
  private readonly byStack = new Map<string, ReapRow>();

  /** A stack as the plan judged it. */
  add(stack: string, expiry: Expiry, action: ReapAction, reason: string | null): void {
    const at = "at" in expiry ? isoSeconds(expiry.at.getTime()) : null;
    const failedDeploy = "failedDeploy" in expiry && expiry.failedDeploy === true;
    this.byStack.set(stack, { stack, action, expiresAt: at, failedDeploy, reason, usageFile: null, keysFile: null, creditsFile: null, revokedKeys: 0, unsureKeys: 0 });
  }

  set(stack: string, change: Partial<Omit<ReapRow, "stack" | "failedDeploy">>): void {
    const row = this.byStack.get(stack);
    if (!row) return;
    Object.assign(row, change);
    // An output's time, as every time in the rows is written (to the second, Z); as it is when not one.
    const at = change.expiresAt ? Date.parse(change.expiresAt) : NaN;
    if (Number.isFinite(at)) row.expiresAt = isoSeconds(at);
  }

  /** What a usage export left: the files saved, the keys revoked. */
  usage(stack: string, usage: UsageExport): void {
    if (usage.kind === "saved") this.set(stack, { usageFile: usage.path, keysFile: usage.keysPath, creditsFile: usage.creditsPath });
    if (usage.kind === "already-saved") this.set(stack, { usageFile: usage.marker.usage, keysFile: usage.marker.keys, creditsFile: usage.marker.credits ?? null });
    if (usage.kind === "saved" || usage.kind === "already-saved" || usage.kind === "failed") this.set(stack, { revokedKeys: usage.revokedKeys, unsureKeys: usage.unsureKeys });
  }

  rows(): ReapRow[] {
    return [...this.byStack.values()];
  }
}
