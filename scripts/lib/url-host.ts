// The host part of a URL for a server's listen address, as a client dials it: an IPv6 address
// bracketed (`http://::1:8000` does not parse), and an every-interface address as loopback (a
// client cannot dial 0.0.0.0 or ::). Used for the base URLs the dev servers print.
import { isIPv6 } from "node:net";

export function urlHost(host: string): string {
  if (host === "0.0.0.0") return "127.0.0.1";
  if (isIPv6(host)) return /^[0:]+$/.test(host) ? "[::1]" : `[${host}]`;
  return host;
}
