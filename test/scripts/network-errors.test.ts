import { describe, expect, it } from "vitest";
import { hostUnreachable } from "../../scripts/lib/cli.ts";

/** A fetch failure as undici reports it: TypeError("fetch failed") caused by the system error. */
const fetchFailed = (code: string, message = code) => new TypeError("fetch failed", { cause: Object.assign(new Error(message), { code }) });

describe("hostUnreachable: when \"is the tenant's host up?\" is the right question", () => {
  it.each(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ETIMEDOUT", "UND_ERR_CONNECT_TIMEOUT"])("%s: nothing answered", (code) => {
    expect(hostUnreachable(fetchFailed(code))).toBe(true);
  });

  it("a request that timed out (AbortSignal.timeout)", () => {
    expect(hostUnreachable(new DOMException("The operation was aborted due to timeout", "TimeoutError"))).toBe(true);
  });

  it.each(["DEPTH_ZERO_SELF_SIGNED_CERT", "UNABLE_TO_VERIFY_LEAF_SIGNATURE", "CERT_HAS_EXPIRED", "ERR_TLS_CERT_ALTNAME_INVALID", "ECONNRESET"])(
    "%s: something answered (a certificate, a reset), so the host is up",
    (code) => {
      expect(hostUnreachable(fetchFailed(code))).toBe(false);
    },
  );

  it("not a network failure at all", () => {
    expect(hostUnreachable(new Error("boom"))).toBe(false);
    expect(hostUnreachable(undefined)).toBe(false);
  });
});
