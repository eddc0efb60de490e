import { isStructuredLimit, STRUCTURED_LIMIT_NAMES } from "../../api-shim/src/requests/structured-limits.ts";
import type { Problems } from "./checks.ts";
import { DEFAULT_LIMITS } from "./defaults.ts";
import type { EdgeLimits, StructuredOutputsSetting } from "./types.ts";

/**
 * nginx's limit_conn per address. nginx refuses 65536 and over (and would not start). A worker
 * holds 4096 connections (worker_connections, templates/nginx/nginx.conf) and each proxied request
 * two of them (client and shim), so 4096 from one address already fill two workers: far more than
 * the model serves at once, and a higher cap would protect nothing.
 */
const MAX_CONNECTIONS_PER_IP = 4096;

/** The stack's `limits`: nginx's per-address protection, the largest body, the shim's structured-output bounds. */
export function checkLimits(p: Problems, value: unknown): EdgeLimits {
  const v = p.settingMap("limits", value, ["requestsPerSecond", "burst", "connections", "maxBodyMb", "structuredOutputs"]);
  const structuredOutputs = checkStructuredOutputs(p, v.structuredOutputs);
  return {
    requestsPerSecond: p.number("limits.requestsPerSecond", v.requestsPerSecond, { min: 1, max: 100_000, integer: true }) ?? DEFAULT_LIMITS.requestsPerSecond,
    burst: p.number("limits.burst", v.burst, { min: 0, max: 100_000, integer: true }) ?? DEFAULT_LIMITS.burst,
    connections: p.number("limits.connections", v.connections, { min: 1, max: MAX_CONNECTIONS_PER_IP, integer: true }) ?? DEFAULT_LIMITS.connections,
    maxBodyMb: p.number("limits.maxBodyMb", v.maxBodyMb, { min: 1, max: 1024, integer: true }) ?? DEFAULT_LIMITS.maxBodyMb,
    ...(structuredOutputs !== undefined ? { structuredOutputs } : {}),
  };
}

const STRUCTURED = "limits.structuredOutputs";

/**
 * limits.structuredOutputs, for SHIM_CONFIG structuredOutputs: refused here whenever the shim
 * would refuse what it renders (the members and each limit's rule are the shim's own), in the
 * stack's forms too: "null" and "false" are what `pulumi config set --path` stores for null and a
 * quoted false, and a number may be written as text. Unset, or a map setting nothing: undefined,
 * so nothing is rendered and an existing stack's shim is not recreated.
 */
function checkStructuredOutputs(p: Problems, value: unknown): StructuredOutputsSetting | undefined {
  if (value === undefined || p.encrypted(STRUCTURED, value)) return undefined;
  if (value === false || value === "false") return false;
  // null is refused as the shim refuses it: "no limits" to some readers, "the defaults" to others.
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return p.add(STRUCTURED, value, `must be false (no check) or a map of limits, each a whole number of at least 1 or null for none: ` +
      `set one with \`pulumi config set --path 'gpu-sandbox:${STRUCTURED}.<member>' <value>\`, <member> one of ${STRUCTURED_LIMIT_NAMES.join(", ")}`);
  }
  const map = value as Record<string, unknown>;
  p.unknownKeys(STRUCTURED, map, STRUCTURED_LIMIT_NAMES);
  const limits: Partial<Record<(typeof STRUCTURED_LIMIT_NAMES)[number], number | null>> = {};
  for (const name of STRUCTURED_LIMIT_NAMES) {
    const v = map[name];
    if (v === null || v === "null") {
      limits[name] = null;
      continue;
    }
    const n = p.number(`${STRUCTURED}.${name}`, v, { min: -Infinity, max: Infinity, integer: true });
    if (n === undefined) continue;
    if (isStructuredLimit(n)) limits[name] = n;
    else p.add(`${STRUCTURED}.${name}`, v, "must be a whole number of at least 1, or null for no limit");
  }
  return Object.keys(limits).length > 0 ? limits : undefined;
}
