// Saves a tenant's whole usage ledger before its stack is destroyed: the ledger lives on the
// tenant's Block Storage Volume, which `pulumi destroy` deletes, so afterwards nobody could bill
// from it. One CSV per key and day, from the stack's creation to today, as the shim writes it,
// and the keys (names, tiers, balances, revocations) as JSON: the CSV names keys by id only, and
// the volume holds the only map from ids to the names operators bill by.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { adminClient } from "./admin-client.ts";
import type { ScriptDeps } from "./deps.ts";
import { endpointOf, stackOutputs } from "./pulumi.ts";
import { targetFromOutputs } from "./tenant-target.ts";

export type UsageExport =
  | { readonly kind: "saved"; readonly path: string; readonly rows: number; readonly keysPath: string; readonly keys: number }
  /** Nothing to save: the serving stack never ran, so there is no ledger. */
  | { readonly kind: "none"; readonly reason: string }
  | { readonly kind: "failed"; readonly message: string };

export async function exportUsage(stack: string, dir: string, deps: Pick<ScriptDeps, "pulumi" | "now">, fetchImpl: typeof fetch = fetch): Promise<UsageExport> {
  const r = await stackOutputs(deps.pulumi, stack, { showSecrets: true });
  if (r.kind !== "outputs") return { kind: "failed", message: r.kind === "error" ? r.message : "the stack is not in the backend" };
  const { createdAt } = r.outputs;
  if (!endpointOf(r.outputs)) {
    return { kind: "none", reason: "no endpoint: the serving stack was never deployed" };
  }
  const now = deps.now();
  try {
    const client = adminClient(targetFromOutputs(stack, r.outputs), fetchImpl);
    const csv = await client.usageCsv({
      group: "day",
      from: typeof createdAt === "string" ? createdAt : "2000-01-01",
      to: now.toISOString().slice(0, 10),
    });
    const keys = await client.listKeys();
    mkdirSync(dir, { recursive: true });
    const stamp = now.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
    const path = join(dir, `${stack}-usage-${stamp}.csv`);
    const keysPath = join(dir, `${stack}-keys-${stamp}.json`);
    writeFileSync(keysPath, `${JSON.stringify(keys, null, 2)}\n`);
    writeFileSync(path, csv);
    return { kind: "saved", path, rows: Math.max(0, csv.trim().split(/\r?\n/).length - 1), keysPath, keys: keys.length };
  } catch (err) {
    return { kind: "failed", message: (err as Error).message };
  }
}
