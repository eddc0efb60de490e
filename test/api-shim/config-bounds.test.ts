import { describe, expect, it } from "vitest";
import { ConfigError, parseShimConfig } from "../../api-shim/src/config.ts";

/**
 * From a mutation review of config.ts: every integer variable is refused one past each end of the
 * range docs/api-shim/environment.md documents (config.test.ts pinned that for SHIM_PORT's top and
 * SHIM_MAX_BODY_BYTES' bottom only). A 0 timeout reaching undici disables it (bodyTimeout: "Use 0
 * to disable it entirely"): a stalled upstream would hold its request for good.
 */
const problems = (env: Record<string, string>): string[] => {
  try {
    parseShimConfig({ SHIM_UPSTREAM_URL: "http://litellm:4000/v1", ...env }, () => "");
  } catch (e) {
    if (e instanceof ConfigError) return [...e.problems];
    throw e;
  }
  return [];
};
const GiB = 1024 ** 3;
const ranges: [string, number, number][] = [
  ["SHIM_PORT", 0, 65535],
  ["SHIM_UPSTREAM_TIMEOUT_MS", 1, 3_600_000],
  ["SHIM_STREAM_IDLE_TIMEOUT_MS", 1, 3_600_000],
  ["SHIM_DRAIN_TIMEOUT_MS", 0, 3_600_000],
  ["SHIM_MAX_BODY_BYTES", 1024, GiB],
  ["SHIM_MAX_ANSWER_BYTES", 1024, GiB],
  ["SHIM_ANSWER_MEMORY_BYTES", 1024, 64 * GiB],
  ["SHIM_BODY_MEMORY_BYTES", 1024, 64 * GiB],
];

describe("each integer variable's range, both ends", () => {
  for (const [name, min, max] of ranges) {
    it(`${name}: ${min} to ${max}`, () => {
      const expected = (v: number) => [`${name}: "${v}" is not valid; expected an integer from ${min} to ${max}`];
      if (min > 0) expect(problems({ [name]: String(min - 1) })).toEqual(expected(min - 1));
      expect(problems({ [name]: String(max + 1) })).toEqual(expected(max + 1));
      expect(problems({ [name]: String(min) })).toEqual([]);
      expect(problems({ [name]: String(max) })).toEqual([]);
    });
  }
});

describe("SHIM_CONFIG's null limits", () => {
  const parse = (yaml: string) => parseShimConfig({ SHIM_UPSTREAM_URL: "http://litellm:4000/v1", SHIM_CONFIG: "/c.yaml" }, () => yaml);
  it("null lifts a default tier's limit (not its default kept), and unauthenticatedRpm: null is unlimited", () => {
    const c = parse("tiers:\n  pro: { rpm: null, tpm: null, concurrency: null }\n  free: { tpm: null }\nunauthenticatedRpm: null\n");
    expect(c.tiers.get("pro")).toEqual({ rpm: null, tpm: null, concurrency: null });
    expect(c.tiers.get("free")).toEqual({ rpm: 10, tpm: null, concurrency: null });
    expect(c.unauthenticatedRpm).toBeNull();
  });
});
