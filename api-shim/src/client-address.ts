import { BlockList, isIP, isIPv6 } from "node:net";

/**
 * The unit the unauthenticated per-address limit counts: an IPv4 address, or an IPv6 address's
 * /64. One IPv6 host usually holds a whole /64 (SLAAC, privacy addresses, a VPS's allocation),
 * so counting single IPv6 addresses would let one client multiply its limit by rotating through
 * them. IPv4-mapped IPv6 (`::ffff:203.0.113.7`, a dual-stack socket's view of an IPv4 client) is
 * the IPv4 address.
 */
export function addressBucket(ip: string): string {
  const address = ip.replace(/%.*$/, ""); // a zone id (fe80::1%eth0) names an interface, not a client
  if (!isIPv6(address)) return address;
  const groups = expandIPv6(address);
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return [groups[6]! >> 8, groups[6]! & 0xff, groups[7]! >> 8, groups[7]! & 0xff].join(".");
  }
  return `${groups.slice(0, 4).map((g) => g.toString(16)).join(":")}::/64`;
}

/** The eight 16-bit groups of a valid IPv6 address (`::` and a dotted IPv4 tail expanded). */
function expandIPv6(address: string): number[] {
  // The WHATWG URL parser canonicalizes IPv6: lower case, hex groups only (a dotted IPv4 tail
  // becomes two groups), the longest zero run as `::`.
  const canonical = new URL(`http://[${address}]/`).hostname.slice(1, -1);
  const [head, tail] = canonical.split("::") as [string, string | undefined];
  const parse = (part: string) => (part ? part.split(":").map((g) => parseInt(g, 16)) : []);
  const left = parse(head);
  const right = tail === undefined ? [] : parse(tail);
  return [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
}

/**
 * Whether a peer is one of SHIM_TRUST_PROXY's addresses or CIDRs (validated by config.ts). An
 * IPv4-mapped IPv6 peer (a dual-stack socket's view) matches its IPv4 entry.
 */
export function trustedPeers(cidrs: readonly string[]): (peer: string | undefined) => boolean {
  if (cidrs.length === 0) return () => false;
  const list = new BlockList();
  for (const cidr of cidrs) {
    const [address, prefix] = cidr.split("/") as [string, string | undefined];
    const family = isIP(address) === 6 ? "ipv6" : "ipv4";
    if (prefix === undefined) list.addAddress(address, family);
    else list.addSubnet(address, Number(prefix), family);
  }
  return (peer) => peer !== undefined && list.check(peer.replace(/%.*$/, ""), isIPv6(peer) ? "ipv6" : "ipv4");
}
