import { stringify } from "yaml";
import { describe, expect, it } from "vitest";
import { parseShimConfig } from "../../api-shim/src/config.ts";
import { DEFAULT_STRUCTURED_LIMITS } from "../../api-shim/src/requests/structured-limits.ts";
import { describeProblems, validateConfig, type TenantConfig } from "../../infra/config.ts";
import { formatProblem } from "../../infra/config/checks.ts";
import { renderShimConfig } from "../../infra/render/shim-config.ts";

// limits.structuredOutputs: the stack's key for SHIM_CONFIG structuredOutputs, which a Pulumi-deployed
// operator could not set before (the rendered SHIM_CONFIG is rewritten on every `pulumi up`).

const base = { region: "us-ord", allowedCidrs: ["0.0.0.0/0"], adminCidrs: ["81.2.69.160/32"] };
const shimEnv = { SHIM_UPSTREAM_URL: "http://litellm:4000/v1", SHIM_CONFIG: "/app/config.yaml" };

const validate = (structuredOutputs: unknown) =>
  validateConfig({ ...base, limits: structuredOutputs === undefined ? {} : { structuredOutputs } }, { stack: "acme" });

function ok(structuredOutputs: unknown): TenantConfig {
  const result = validate(structuredOutputs);
  if (!result.ok) throw new Error(`expected valid config, got:\n${describeProblems(result.problems, "test")}`);
  return result.config;
}

function problems(structuredOutputs: unknown): string[] {
  const result = validate(structuredOutputs);
  if (result.ok) throw new Error("expected problems, config was accepted");
  return result.problems.map((p) => formatProblem(p, "gpu-sandbox"));
}

/** The rendered SHIM_CONFIG's text, and the shim's own reading of it (which throws on a file it refuses). */
function rendered(structuredOutputs: unknown) {
  const text = renderShimConfig(ok(structuredOutputs), []);
  return { text, limits: parseShimConfig(shimEnv, () => text).structuredOutputs };
}

/** Whether the shim starts with `structuredOutputs: value` in SHIM_CONFIG. */
function shimAccepts(value: unknown): boolean {
  try {
    parseShimConfig(shimEnv, () => stringify({ structuredOutputs: value }));
    return true;
  } catch {
    return false;
  }
}

describe("limits.structuredOutputs rendered into SHIM_CONFIG", () => {
  it("renders nothing when the stack does not set it: SHIM_CONFIG as before, the shim's defaults", () => {
    const { text, limits } = rendered(undefined);
    expect(text).not.toContain("structuredOutputs");
    expect(ok(undefined).limits).not.toHaveProperty("structuredOutputs");
    expect(limits).toEqual(DEFAULT_STRUCTURED_LIMITS);
    // An empty map sets no limit: nothing either, so the shim is not recreated for it.
    expect(rendered({}).text).not.toContain("structuredOutputs");
  });

  it("renders false, which turns the shim's check off", () => {
    for (const off of [false, "false"]) { // "false": as a hand-written quoted value
      const { text, limits } = rendered(off);
      expect(text).toContain("structuredOutputs: false");
      expect(Object.values(limits)).toEqual(Object.values(DEFAULT_STRUCTURED_LIMITS).map(() => null));
    }
  });

  it("renders a partial map: the limits set, null for none, the shim's defaults for the rest", () => {
    const { limits } = rendered({ maxProperties: 8000, maxDepth: 20, maxRegexChars: null });
    expect(limits).toEqual({ ...DEFAULT_STRUCTURED_LIMITS, maxProperties: 8000, maxDepth: 20, maxRegexChars: null });
    // What `pulumi config set --path 'gpu-sandbox:limits.structuredOutputs.maxDepth' null` stores, and a quoted number.
    expect(rendered({ maxDepth: "null", maxGrammarChars: "200000" }).limits)
      .toEqual({ ...DEFAULT_STRUCTURED_LIMITS, maxDepth: null, maxGrammarChars: 200_000 });
  });
});

describe("limits.structuredOutputs refused", () => {
  it.each<[string, unknown, string[]]>([
    ["a zero limit", { maxDepth: 0 }, ["gpu-sandbox:limits.structuredOutputs.maxDepth = 0: must be a whole number of at least 1, or null for no limit"]],
    ["a negative limit", { maxProperties: -5 }, ["gpu-sandbox:limits.structuredOutputs.maxProperties = -5: must be a whole number of at least 1"]],
    ["a fraction", { maxEnumValues: 2.5 }, ["gpu-sandbox:limits.structuredOutputs.maxEnumValues = 2.5: must be a whole number"]],
    ["a word", { maxSchemaChars: "lots" }, ['gpu-sandbox:limits.structuredOutputs.maxSchemaChars = "lots": must be a number in decimal digits']],
    ["past a safe integer", { maxRepetition: 2 ** 53 }, ["gpu-sandbox:limits.structuredOutputs.maxRepetition = 9007199254740992: must be a whole number of at least 1"]],
    ["a misspelt member", { maxDeph: 20 },
      ["gpu-sandbox:limits.structuredOutputs.maxDeph: is not a known setting; known: maxProperties, maxDepth, maxEnumValues, maxSchemaChars, maxRegexChars, maxRepetition, maxGrammarChars"]],
    // The shim refuses null for the whole: "no limits" to some readers, "the defaults" to others.
    ["null for the whole", null, ["gpu-sandbox:limits.structuredOutputs = null: must be false (no check) or a map of limits"]],
    ["true", true, ["gpu-sandbox:limits.structuredOutputs = true: must be false (no check) or a map of limits"]],
    ["a number for the whole", 20, ["gpu-sandbox:limits.structuredOutputs = 20: must be false (no check) or a map of limits"]],
    ["a list", [5000], ["gpu-sandbox:limits.structuredOutputs = [5000]: must be false (no check) or a map of limits"]],
  ])("%s", (_name, value, expected) => {
    const got = problems(value);
    expect(got).toHaveLength(expected.length);
    expected.forEach((e, i) => expect(got[i]).toContain(e));
  });

  it("names limits.structuredOutputs among the limits' members", () => {
    expect(validateConfig({ ...base, limits: { structuredOutput: false } }, { stack: "acme" })).toMatchObject({
      ok: false, problems: [{ key: "limits.structuredOutput", message: expect.stringContaining("known: requestsPerSecond, burst, connections, maxBodyMb, structuredOutputs") }],
    });
  });
});

describe("limits.structuredOutputs: the stack's verdicts are the shim's", () => {
  // Values both read alike (typed YAML): what the stack takes, the shim starts with, and what it refuses the shim refuses.
  const values: unknown[] = [
    undefined, false, true, null, 0, 20, "x", [], [1], {},
    { maxDepth: 20 }, { maxDepth: null }, { maxDepth: 0 }, { maxDepth: -1 }, { maxDepth: 1.5 }, { maxDepth: 2 ** 53 }, { maxDepth: 2 ** 53 - 1 },
    { maxDepth: true }, { maxDepth: [] }, { maxDepth: {} }, { nope: 1 },
    Object.fromEntries(Object.keys(DEFAULT_STRUCTURED_LIMITS).map((k) => [k, 1])),
    Object.fromEntries(Object.keys(DEFAULT_STRUCTURED_LIMITS).map((k) => [k, null])),
  ];
  it.each(values.map((v) => [JSON.stringify(v) ?? "absent", v]))("%s", (_name, value) => {
    expect(validate(value).ok).toBe(shimAccepts(value));
  });
});
