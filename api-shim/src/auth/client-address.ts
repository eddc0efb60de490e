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
 * IPv4-mapped IPv6 peer (a dual-stack socket's view) matches its IPv4 entry. An address with a
 * zone id (fe80::1%eth0) matches on that interface alone: the same link-local address on another
 * link is another machine, and BlockList ignores zones.
 */
export function trustedPeers(cidrs: readonly string[]): (peer: string | undefined) => boolean {
  if (cidrs.length === 0) return () => false;
  // One list for entries without a zone (any link's), one per zone for the others.
  const lists = new Map<string, BlockList>();
  const listOf = (zone: string) => lists.get(zone) ?? lists.set(zone, new BlockList()).get(zone)!;
  for (const cidr of cidrs) {
    const [zoned, prefix] = cidr.split("/") as [string, string | undefined];
    const [address, zone = ""] = zoned.split("%") as [string, string | undefined];
    const family = isIP(address) === 6 ? "ipv6" : "ipv4";
    if (prefix === undefined) listOf(zone).addAddress(address, family);
    else listOf(zone).addSubnet(address, Number(prefix), family);
  }
  return (peer) => {
    if (peer === undefined) return false;
    const [address, zone] = peer.split("%") as [string, string | undefined];
    const family = isIPv6(address) ? "ipv6" : "ipv4";
    return (lists.get("")?.check(address, family) ?? false) || (zone !== undefined && (lists.get(zone)?.check(address, family) ?? false));
  };
}

/**
 * An IP address, or a CIDR with its prefix in range: a SHIM_TRUST_PROXY entry. A zone id is an
 * interface's name (fe80::1%eth0), as a peer's address carries it; a number (%2) never matches one.
 */
export function isCidr(s: string): boolean {
  const [addr, prefix, ...rest] = s.split("/");
  const family = isIP(addr ?? "");
  if (family === 0 || rest.length > 0 || /%\d+$/.test(addr ?? "")) return false;
  if (prefix === undefined) return true;
  return /^\d{1,3}$/.test(prefix) && Number(prefix) <= (family === 4 ? 32 : 128);
}

const IPV4_MAPPED = 0xffffn << 32n; // ::ffff:0.0.0.0
const GLOBAL_UNICAST_IPV6 = 0x2000n << 112n; // 2000::/3

/**
 * Whether valid `cidrs` (isCidr) cover every client that can connect over IPv4 or over IPv6, as
 * trustedPeers matches them. A client's address is unicast: over IPv4 anything but 224.0.0.0/3
 * (multicast and reserved), over the Internet's IPv6 one in 2000::/3 (global unicast). So
 * `0.0.0.0/1,128.0.0.0/2,192.0.0.0/3` holds every IPv4 client, and `2000::/3` every public IPv6
 * one. BlockList matches an IPv4 peer as its IPv4-mapped IPv6 address, so `::ffff:0.0.0.0/96` or
 * `::/1` hold every IPv4 client too. Each entry is a range of IPv6 addresses (IPv4 ones mapped),
 * and the ranges, in order, must leave no gap in either family's client range. Private and
 * loopback ranges (`10.0.0.0/8`, `fc00::/7`, `fe80::/10`, `::1`) never do.
 */
export function coversEveryAddress(cidrs: readonly string[]): boolean {
  const ranges = cidrs.map((cidr): [bigint, bigint] => {
    const [address, prefix] = cidr.split("/") as [string, string | undefined];
    const v4 = isIP(address) === 4;
    const value = v4 ? IPV4_MAPPED | address.split(".").reduce((n, octet) => (n << 8n) | BigInt(octet), 0n)
      : expandIPv6(address.replace(/%.*$/, "")).reduce((n, group) => (n << 16n) | BigInt(group), 0n);
    const hostBits = BigInt(128 - (prefix === undefined ? 128 : Number(prefix) + (v4 ? 96 : 0)));
    const first = (value >> hostBits) << hostBits;
    return [first, first + (1n << hostBits) - 1n];
  }).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const covers = (first: bigint, last: bigint): boolean => {
    let next = first; // the first address not yet covered
    for (const [from, to] of ranges) {
      if (from > next) break;
      if (to >= next) next = to + 1n;
      if (next > last) return true;
    }
    return false;
  };
  return covers(IPV4_MAPPED, IPV4_MAPPED | 0xdfffffffn) || covers(GLOBAL_UNICAST_IPV6, GLOBAL_UNICAST_IPV6 + (1n << 125n) - 1n);
}
