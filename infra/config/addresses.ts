import { BlockList, isIPv4 } from "node:net";

/**
 * Address ranges that are never the source of a connection to a host's public address: an
 * `adminCidrs` entry inside one of them lets nobody in, so `pulumi up` would wait for SSH on a
 * GPU host that bills by the hour until its timeout. The documentation ranges are the usual
 * case: the example stack's 203.0.113.7/32, copied and never replaced.
 */
const UNREACHABLE: readonly (readonly [network: string, prefix: number, what: string])[] = [
  ["192.0.2.0", 24, "a documentation address (RFC 5737 TEST-NET-1)"],
  ["198.51.100.0", 24, "a documentation address (RFC 5737 TEST-NET-2)"],
  ["203.0.113.0", 24, "a documentation address (RFC 5737 TEST-NET-3)"],
  ["2001:db8::", 32, "a documentation address (RFC 3849)"],
  ["10.0.0.0", 8, "a private address (RFC 1918)"],
  ["172.16.0.0", 12, "a private address (RFC 1918)"],
  ["192.168.0.0", 16, "a private address (RFC 1918)"],
  ["100.64.0.0", 10, "a carrier-grade NAT address (RFC 6598)"],
  ["fc00::", 7, "a private address (IPv6 unique local, RFC 4193)"],
  ["127.0.0.0", 8, "a loopback address"],
  ["::1", 128, "a loopback address"],
  ["169.254.0.0", 16, "a link-local address"],
  ["fe80::", 10, "a link-local address"],
  ["0.0.0.0", 8, "a \"this network\" address (RFC 1122)"],
];

const RANGES = UNREACHABLE.map(([network, prefix, what]) => {
  const family = isIPv4(network) ? "ipv4" : "ipv6";
  const list = new BlockList();
  list.addSubnet(network, prefix, family);
  return { prefix, what, family, list } as const;
});

/**
 * Why nobody can reach the host's public address from `cidr` (a normalised `address/prefix`),
 * or undefined when someone can. Only a CIDR wholly inside such a range counts: `0.0.0.0/0` and
 * `192.0.0.0/8` let real addresses in.
 */
export function unreachableSource(cidr: string): string | undefined {
  const [address, bits] = cidr.split("/") as [string, string];
  const family = isIPv4(address) ? "ipv4" : "ipv6";
  const prefix = Number(bits);
  return RANGES.find((r) => r.family === family && prefix >= r.prefix && r.list.check(address, family))?.what;
}

/** Where an operator finds the address to put in adminCidrs. */
export const OWN_ADDRESS_HINT = "put your own public IPv4 address as a /32 instead (`curl -4s https://ifconfig.me` prints it)";
