// A manage-keys command line to paste, printed by the messages that say what to run next (a
// revoke, a retry, a list), with the target flags as the operator gave them.
import { shellFlag } from "./cli.ts";
import type { TargetFlags } from "./tenant-target.ts";

/**
 * `npm run manage-keys -- <command>` for the same tenant, token and CA, then `values`. Each flag
 * is one word, `--note='-10% promo'`, so a value that starts with "-" parses back.
 */
export function manageKeysCommand(flags: TargetFlags, command: string, values: readonly (readonly [string, string | undefined])[] = []): string {
  const target = (["stack", "url", "admin-token-env", "ca"] as const).map((f) => [f, flags[f]] as const);
  const words = [...target, ...values].flatMap(([name, value]) => (value !== undefined ? [shellFlag(name, value)] : []));
  return ["npm run manage-keys --", command, ...words].join(" ");
}
