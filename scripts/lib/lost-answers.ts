// What manage-keys tells an operator when a write's answer is lost after it was sent: the API may
// have acted (admin-client.ts's outcome "unknown"), and whether running it again is safe differs.
import { AdminApiError } from "./admin-client.ts";
import { UsageError } from "./cli.ts";

/** Whether a failed write may have been applied by the API: sent, and its answer lost or a 5xx. */
export const mayHaveActed = (err: unknown): err is AdminApiError => err instanceof AdminApiError && err.outcome === "unknown";

/**
 * A write whose answer carried a key's secret (create, rotate), lost: `happened` (what may have
 * been done) and `so` (why not simply run it again), with what to run (`next`). The secret is
 * gone for good: no call shows it again.
 */
export function secretLost(err: AdminApiError, happened: string, so: string, next: string): UsageError {
  return new UsageError(`${err.message}\n${happened} (its secret was only in the lost answer, and ${so}): ${next}.`, { cause: err });
}
