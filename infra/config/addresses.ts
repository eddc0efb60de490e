import { BlockList, isIPv4, SocketAddress } from "node:net";

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

/** Whether a CIDR (or address) is IPv6: the one test of it, for the firewall, nginx, compose and the warnings. */
export function isIPv6Cidr(cidr: string): boolean {
  return cidr.includes(":");
}

/** Docker's gateway on the Compose network: nginx sees IPv6 clients and the host's own requests as it. */
export const DOCKER_GATEWAY = "10.89.0.1";

/**
 * The warning for allowedCidrs' IPv6 entries narrower than ::/0 (normalised `address/prefix`),
 * or undefined when there are none. Docker's proxy hands nginx every IPv6 client as the gateway,
 * which nginx serves the API to (the host's own requests come from it too), so only Linode's
 * firewall holds IPv6 clients to such an entry; on a host of your own, with the API's port
 * published on every address, they all reach it.
 */
export function narrowIpv6AllowedWarning(allowedCidrs: readonly string[]): string | undefined {
  const ipv6 = allowedCidrs.filter(isIPv6Cidr);
  // Beside ::/0, a narrower entry restricts nothing, on Linode or off it.
  const narrow = ipv6.some((cidr) => cidr.endsWith("/0")) ? [] : ipv6;
  return narrow.length === 0 ? undefined : `allowedCidrs ${narrow.join(", ")}: IPv6 entries narrower than ::/0 are enforced by Linode's firewall only: ` +
    "nginx sees every IPv6 client as Docker's gateway, so on a host of your own (npm run render) every IPv6 address reaches the API (a key is still needed)";
}

/** Whether `cidr` lies wholly inside one of `cidrs` (all normalised `address/prefix`). */
export function coveredBy(cidr: string, cidrs: readonly string[]): boolean {
  const [address, bits] = cidr.split("/") as [string, string];
  const family = isIPv4(address) ? "ipv4" : "ipv6";
  return cidrs.some((outer) => {
    const [network, prefix] = outer.split("/") as [string, string];
    if ((isIPv4(network) ? "ipv4" : "ipv6") !== family || Number(prefix) > Number(bits)) return false;
    const list = new BlockList();
    list.addSubnet(network, Number(prefix), family);
    return list.check(address, family);
  });
}

export interface UnreachableAdminEntries {
  /** Entries nobody connects to the host's public address from, with their index and why. */
  readonly entries: readonly { index: number; cidr: string; what: string }[];
  /** `pulumi up` refuses the list: no IPv4 entry lets anyone in, and it dials the host's IPv4 address. */
  readonly refused: boolean;
}

/** What unreachableSource says about each (normalised) adminCidrs entry; `undefined` entries are invalid ones, skipped. */
export function unreachableAdminEntries(cidrs: readonly (string | undefined)[]): UnreachableAdminEntries {
  const entries = cidrs.flatMap((cidr, index) => {
    const what = cidr === undefined ? undefined : unreachableSource(cidr);
    return cidr !== undefined && what ? [{ index, cidr, what }] : [];
  });
  const reachableV4 = cidrs.some((cidr) => cidr !== undefined && isIPv4(cidr.split("/")[0]!) && unreachableSource(cidr) === undefined);
  return { entries, refused: entries.length > 0 && !reachableV4 };
}

/** The plan's and `pulumi up`'s warning for an unreachable entry beside a reachable one. */
export function unreachableAdminWarning(cidr: string, what: string): string {
  const [address, bits] = cidr.split("/") as [string, string];
  const gateway = new BlockList();
  if (isIPv4(address)) gateway.addSubnet(address, Number(bits), "ipv4");
  const opensAdmin = isIPv4(address) && gateway.check(DOCKER_GATEWAY, "ipv4");
  return `adminCidrs ${cidr} is ${what}: nobody reaches the host's public address from it` + (opensAdmin
    ? `; and it holds Docker's gateway ${DOCKER_GATEWAY}, which nginx sees every IPv6 client as, so it opens /admin (still behind the admin token) to them`
    : "; remove it unless you mean it");
}

/** Where an operator finds the address to put in adminCidrs. */
export const OWN_ADDRESS_HINT = "put your own public IPv4 address as a /32 instead (`curl -4s https://ifconfig.me` prints it)";

/** The 16 (IPv6) or 4 (IPv4) bytes of a valid address. */
function addressBytes(address: string, family: "ipv4" | "ipv6"): number[] {
  if (family === "ipv4") return address.split(".").map(Number);
  // An IPv4 tail (::ffff:1.2.3.4) as two groups; then "::" stands for the groups left out.
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(address);
  const text = v4 ? address.slice(0, v4.index) + [((+v4[1]! << 8) | +v4[2]!).toString(16), ((+v4[3]! << 8) | +v4[4]!).toString(16)].join(":") : address;
  const [head, tail] = text.split("::") as [string, string | undefined];
  const groups = (part: string | undefined) => (part ? part.split(":").map((g) => parseInt(g, 16)) : []);
  const [h, t] = [groups(head), groups(tail)];
  const all = tail === undefined ? h : [...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t];
  return all.flatMap((g) => [g >> 8, g & 0xff]);
}

/** A valid address with the bits past `prefix` cleared, in its usual text (IPv6 compressed, lower case). */
export function networkAddress(address: string, prefix: number, family: "ipv4" | "ipv6"): string {
  const bytes = addressBytes(address, family).map((b, i) => b & (0xff << Math.max(0, Math.min(8, 8 * (i + 1) - prefix)) & 0xff));
  if (family === "ipv4") return bytes.join(".");
  const groups = Array.from({ length: 8 }, (_, i) => ((bytes[2 * i]! << 8) | bytes[2 * i + 1]!).toString(16));
  return new SocketAddress({ address: groups.join(":"), family }).address; // inet_ntop's form
}
