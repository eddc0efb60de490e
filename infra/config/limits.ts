import type { Problems } from "./checks.ts";
import { DEFAULT_LIMITS } from "./defaults.ts";
import type { EdgeLimits } from "./types.ts";

/**
 * nginx's limit_conn per address. nginx refuses 65536 and over (and would not start). A worker
 * holds 4096 connections (worker_connections, templates/nginx/nginx.conf) and each proxied request
 * two of them (client and shim), so 4096 from one address already fill two workers: far more than
 * the model serves at once, and a higher cap would protect nothing.
 */
const MAX_CONNECTIONS_PER_IP = 4096;

/** The stack's `limits`: nginx's per-address protection and the largest body. */
export function checkLimits(p: Problems, value: unknown): EdgeLimits {
  const v = p.settingMap("limits", value, ["requestsPerSecond", "burst", "connections", "maxBodyMb"]);
  return {
    requestsPerSecond: p.number("limits.requestsPerSecond", v.requestsPerSecond, { min: 1, max: 100_000, integer: true }) ?? DEFAULT_LIMITS.requestsPerSecond,
    burst: p.number("limits.burst", v.burst, { min: 0, max: 100_000, integer: true }) ?? DEFAULT_LIMITS.burst,
    connections: p.number("limits.connections", v.connections, { min: 1, max: MAX_CONNECTIONS_PER_IP, integer: true }) ?? DEFAULT_LIMITS.connections,
    maxBodyMb: p.number("limits.maxBodyMb", v.maxBodyMb, { min: 1, max: 1024, integer: true }) ?? DEFAULT_LIMITS.maxBodyMb,
  };
}
