import { describe, expect, it } from "vitest";
import { addressBucket, isCidr, trustedPeers } from "../../api-shim/src/auth/client-address.ts";
import { manualClock } from "../support/clocks.ts";
import { MAX_TRACKED_ADDRESSES, RateLimiter } from "../../api-shim/src/limits/rate-limit.ts";

describe("unauthenticated limits per client address", () => {
  it.each([
    ["203.0.113.7", "203.0.113.7"],
    ["2001:db8:1:2::1", "2001:db8:1:2::/64"],
    ["2001:DB8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"],
    ["2001:db8::1", "2001:db8:0:0::/64"],
    ["::1", "0:0:0:0::/64"],
    ["fe80::1%eth0", "fe80:0:0:0::/64"],
    ["::ffff:203.0.113.7", "203.0.113.7"],
    ["::ffff:cb00:7107", "203.0.113.7"],
    ["64:ff9b::203.0.113.7", "64:ff9b:0:0::/64"],
    // Only ::ffff:0:0/96 is an IPv4 client: an address that merely has ffff in its sixth group is IPv6.
    ["::1:ffff:cb00:7107", "0:0:0:0::/64"],
  ])("%s counts as %s", (ip, bucket) => {
    expect(addressBucket(ip)).toBe(bucket);
  });

  it("one IPv6 client cannot multiply its limit by rotating addresses in its /64; other /64s are apart", () => {
    const limiter = new RateLimiter(manualClock(), 2);
    expect(limiter.takeIp("2001:db8:1:2::1").ok).toBe(true);
    expect(limiter.takeIp("2001:db8:1:2::2").ok).toBe(true);
    expect(limiter.takeIp("2001:db8:1:2:ffff:ffff:ffff:ffff").ok).toBe(false);
    expect(limiter.takeIp("2001:db8:1:3::1").ok).toBe(true);
  });

  it("an IPv4 client seen through a dual-stack socket shares its IPv4 bucket", () => {
    const limiter = new RateLimiter(manualClock(), 1);
    expect(limiter.takeIp("203.0.113.7").ok).toBe(true);
    expect(limiter.takeIp("::ffff:203.0.113.7").ok).toBe(false);
  });

  it("address spraying is bounded, and a client being limited stays limited through it", () => {
    const clock = manualClock();
    const limiter = new RateLimiter(clock, 2);
    limiter.takeIp("198.51.100.1");
    limiter.takeIp("198.51.100.1");
    for (let i = 0; i < 3 * MAX_TRACKED_ADDRESSES; i++) {
      limiter.takeIp(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
      // The limited client keeps asking (every 1,000 sprayed requests): it is seen recently, so
      // it is never the one forgotten.
      if (i % 1000 === 0) expect(limiter.takeIp("198.51.100.1").ok).toBe(false);
    }
    expect(limiter.trackedAddresses).toBe(MAX_TRACKED_ADDRESSES);
  });
});

describe("trustedPeers (SHIM_TRUST_PROXY, for the request id nginx sends)", () => {
  it("matches addresses and CIDRs of both families, IPv4-mapped peers included; nothing when unset", () => {
    const trusted = trustedPeers(["10.89.0.2/32", "192.168.0.0/16", "fd00::/8", "127.0.0.1"]);
    expect(["10.89.0.2", "::ffff:10.89.0.2", "192.168.44.1", "fd12::1", "127.0.0.1"].filter((p) => trusted(p))).toHaveLength(5);
    expect(["10.89.0.3", "::ffff:10.89.0.3", "193.168.0.1", "fe80::1", "127.0.0.2", undefined].some((p) => trusted(p))).toBe(false);
    expect(trustedPeers([])("127.0.0.1")).toBe(false);
  });

  // Found by review: the zone was dropped from the entry and the peer, so fe80::1 on any link was trusted.
  it("trusts an entry with a zone id (fe80::1%eth0) on that interface alone", () => {
    const trusted = trustedPeers(["fe80::1%eth0", "10.89.0.2"]);
    expect(trusted("fe80::1%eth0")).toBe(true);
    expect(["fe80::1%wlan0", "fe80::1", "fe80::2%eth0"].some((p) => trusted(p))).toBe(false);
    expect(trusted("10.89.0.2")).toBe(true);
    // Without a zone, an entry is any link's, as written.
    expect(trustedPeers(["fe80::/10"])("fe80::1%wlan0")).toBe(true);
    // A zoned network (accepted by SHIM_TRUST_PROXY) is that network on that link.
    const subnet = trustedPeers(["fe80::%eth0/64"]);
    expect(subnet("fe80::1%eth0")).toBe(true);
    expect(["fe80::1%wlan0", "fe80:0:0:1::1%eth0", "fe80::1"].some((p) => subnet(p))).toBe(false);
    // A numeric zone never matches a peer (Node names the interface): refused as an entry.
    expect([isCidr("fe80::1%eth0"), isCidr("fe80::%eth0/64"), isCidr("fe80::1%2")]).toEqual([true, true, false]);
    // A second prefix is a typo, not a CIDR.
    expect([isCidr("10.0.0.0/8/16"), isCidr("fd00::/8/"), isCidr("10.89.0.2/")]).toEqual([false, false, false]);
  });
});
