// manage-keys list: the tenant's keys as a table (its --json is the API's list).
import { type ApiKey, keyStatus } from "./admin-client.ts";
import { formatTable } from "./table.ts";

/** A time the admin API gives (`2030-01-01T00:00:00.000Z`) as every command shows it, to the second: `2030-01-01T00:00:00Z`. */
export const shownTime = (iso: string): string => iso.replace(/\.\d+Z$/, "Z");

/** The keys as a table, one line per key in the API's order (creation). */
export function formatKeys(keys: readonly ApiKey[]): string {
  if (keys.length === 0) return "No keys. Create one with `npm run manage-keys -- create --name <name> --credits <n> …`.";
  return formatTable<ApiKey>([
    { header: "ID", value: (k) => k.id },
    { header: "NAME", value: (k) => k.name },
    { header: "TIER", value: (k) => k.tier },
    { header: "BALANCE", value: (k) => k.balance },
    { header: "HELD", value: (k) => k.held },
    // "-": a shim older than the count does not say.
    { header: "IN-FLIGHT", value: (k) => k.requests_in_flight ?? "-" },
    { header: "REMAINING", value: (k) => k.credits_remaining },
    { header: "MODELS", value: (k) => (k.models ? k.models.join(",") : "all") },
    { header: "CREATED", value: (k) => shownTime(k.created_at) },
    { header: "EXPIRES", value: (k) => (k.expires_at ? shownTime(k.expires_at) : "-") },
    // When it stopped working: "my key stopped at 14:02" is answered here (its history: `history`).
    { header: "REVOKED", value: (k) => (k.revoked_at ? shownTime(k.revoked_at) : "-") },
    { header: "STATUS", value: (k) => keyStatus(k) },
    // config: the stack's gpu-sandbox:keys (changed there: update and rotate are refused); api: made
    // with create. "-": a shim older than the flag does not say.
    { header: "SOURCE", value: (k) => (k.from_configuration === undefined ? "-" : k.from_configuration ? "config" : "api") },
  ], keys);
}
