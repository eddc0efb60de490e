/**
 * The `logs` setting: what the host's logs keep of a client. `logs.clientAddress` is how much of
 * its address nginx's access log writes (rendered by infra/render/nginx.ts): Docker keeps those
 * lines until size-based rotation or the container's recreation, months on a quiet tenant, and an
 * address is personal data (docs/privacy.md).
 */
import type { Problems } from "./checks.ts";
import type { ClientAddressLogging, LogsConfig } from "./types.ts";

/** `full` first: the default, which renders nginx.conf as it was before the setting existed. */
export const CLIENT_ADDRESS_LOGGING: readonly ClientAddressLogging[] = ["full", "truncated", "none"];

export function checkLogs(p: Problems, value: unknown): LogsConfig {
  const v = p.settingMap("logs", value, ["clientAddress"], "clientAddress");
  return { clientAddress: p.oneOf("logs.clientAddress", v.clientAddress, CLIENT_ADDRESS_LOGGING) ?? "full" };
}
