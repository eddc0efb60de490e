import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { parseShimConfig } from "../../api-shim/src/config.ts";
import { describeProblems, validateConfig } from "../../infra/config.ts";
import type { ConfigProblem, TenantConfig } from "../../infra/config.ts";
import { formatProblem } from "../../infra/config/checks.ts";
import { envEntries, renderEnvExample, renderEnvFile } from "../../infra/render/env-file.ts";
import { Secret } from "../../infra/secret.ts";

// previousAdminToken and previousAdminTokenUntil: the admin token being rotated out, carried into
// the host's .env as SHIM_ADMIN_TOKEN_PREVIOUS(_UNTIL) for a planned rotation's overlap.
const base = { region: "us-ord", allowedCidrs: ["0.0.0.0/0"], adminCidrs: ["81.2.69.160/32"] };
const OLD = "Old0admin0token0made0by0pulumi0aaaaaaaaaaaaaaaaa";
const NEW = "New0admin0token0made0by0pulumi0bbbbbbbbbbbbbbbbb";

function ok(raw: Record<string, unknown>, fileConfig?: Record<string, unknown>): TenantConfig {
  const result = validateConfig({ ...base, ...raw }, { stack: "acme", ...(fileConfig ? { fileConfig } : {}) });
  if (!result.ok) throw new Error(`expected valid config, got:\n${describeProblems(result.problems, "acme")}`);
  return result.config;
}
function problems(raw: Record<string, unknown>, fileConfig?: Record<string, unknown>): string[] {
  const result = validateConfig({ ...base, ...raw }, { stack: "acme", ...(fileConfig ? { fileConfig } : {}) });
  if (result.ok) throw new Error("expected problems, config was accepted");
  return result.problems.map((p: ConfigProblem) => formatProblem(p, "gpu-sandbox"));
}

describe("validateConfig: previousAdminToken and previousAdminTokenUntil", () => {
  it.each([
    ["neither", {}, undefined, undefined],
    ["a previous token alone (until the rotation is finished)", { previousAdminToken: OLD }, OLD, undefined],
    ["with an end, kept as UTC", { previousAdminToken: OLD, previousAdminTokenUntil: "2026-06-08T14:00:00+02:00" }, OLD, "2026-06-08T12:00:00.000Z"],
  ])("accepted: %s", (_, raw, token, until) => {
    const c = ok(raw);
    expect(c.previousAdminToken?.token.reveal()).toBe(token);
    expect(c.previousAdminToken?.until).toBe(until);
    // Never printed by accident: the validated config is logged and printed by render.
    expect(JSON.stringify(c)).not.toContain(OLD);
  });

  it("an encrypted one (npm run render reads the stack file without Pulumi) is accepted, unread", () => {
    const c = ok({ previousAdminToken: Secret.encrypted(), previousAdminTokenUntil: "2026-06-08T12:00:00Z" });
    expect(c.previousAdminToken?.token.readable).toBe(false);
  });

  it.each([
    ["an end without a previous token", { previousAdminTokenUntil: "2026-06-08T12:00:00Z" },
      ['gpu-sandbox:previousAdminTokenUntil = "2026-06-08T12:00:00Z": is set without previousAdminToken; set both (npm run rotate-admin-token does) or neither']],
    ["an end that is no instant", { previousAdminToken: OLD, previousAdminTokenUntil: "next week" },
      ['gpu-sandbox:previousAdminTokenUntil = "next week": must be an ISO-8601 instant with its time zone, e.g. 2026-06-08T12:00:00Z']],
    ["an end without a time zone", { previousAdminToken: OLD, previousAdminTokenUntil: "2026-06-08T12:00:00" },
      ['gpu-sandbox:previousAdminTokenUntil = "2026-06-08T12:00:00": must be an ISO-8601 instant with its time zone, e.g. 2026-06-08T12:00:00Z']],
    ["an end that is a number", { previousAdminToken: OLD, previousAdminTokenUntil: 1780920000 },
      ["gpu-sandbox:previousAdminTokenUntil = 1780920000: must be an ISO-8601 instant with its time zone, e.g. 2026-06-08T12:00:00Z"]],
    ["a short token", { previousAdminToken: "short-token" },
      ["gpu-sandbox:previousAdminToken: is 11 characters long; the shim takes at least 16 (the admin token Pulumi makes has 48): set the admin token being rotated out (its value is not shown: it may be a secret)"]],
    ["a token .env cannot carry (a placeholder's angle brackets)", { previousAdminToken: "<the-old-admin-token-goes-here>" },
      ['gpu-sandbox:previousAdminToken = "[secret]": has characters the host\'s .env cannot carry (a space, quote, $ or #, a line break…); it may hold only letters, digits and _ . : / @ + = , ~ -']],
  ])("refused: %s", (_, raw, expected) => {
    const got = problems(raw);
    expect(got).toEqual(expected);
    expect(got.join("\n")).not.toContain(OLD);
  });

  it("refused in plaintext in the stack file, which is committed", () => {
    const got = problems({ previousAdminToken: OLD }, { previousAdminToken: OLD });
    expect(got).toEqual([`gpu-sandbox:previousAdminToken = "[plaintext]": is in plaintext in stacks/Pulumi.acme.yaml, which is committed; store it encrypted: printenv PREVIOUS_ADMIN_TOKEN | pulumi config set --secret --path 'gpu-sandbox:previousAdminToken' --stack acme`]);
  });
});

describe(".env: SHIM_ADMIN_TOKEN_PREVIOUS and SHIM_ADMIN_TOKEN_PREVIOUS_UNTIL", () => {
  const secrets = { vllmApiKey: "vk", litellmMasterKey: "sk-m", shimAdminToken: NEW, providerKeys: [] };
  const envOf = (c: TenantConfig, s: Parameters<typeof envEntries>[1]) => Object.fromEntries(envEntries(c, s, "llm.example.com"));

  it("written from the stack's config during an overlap, and read by the shim as it was meant", () => {
    const c = ok({ previousAdminToken: OLD, previousAdminTokenUntil: "2026-06-08T12:00:00Z" });
    const text = renderEnvFile(envEntries(c, { ...secrets, shimAdminTokenPrevious: OLD }, "llm.example.com"));
    expect(text).toContain(`SHIM_ADMIN_TOKEN=${NEW}\n`);
    expect(text).toContain(`SHIM_ADMIN_TOKEN_PREVIOUS=${OLD}\n`);
    expect(text).toContain("SHIM_ADMIN_TOKEN_PREVIOUS_UNTIL=2026-06-08T12:00:00.000Z\n");
    const env = envOf(c, { ...secrets, shimAdminTokenPrevious: OLD });
    const shim = parseShimConfig({ SHIM_UPSTREAM_URL: "http://litellm:4000/v1", ...env }, () => "");
    expect(shim.adminTokenPrevious).toEqual({ token: OLD, until: Date.UTC(2026, 5, 8, 12) });
  });

  it("empty outside a rotation (Compose passes them empty, which the shim reads as unset)", () => {
    const env = envOf(ok({}), secrets);
    expect(env.SHIM_ADMIN_TOKEN_PREVIOUS).toBe("");
    expect(env.SHIM_ADMIN_TOKEN_PREVIOUS_UNTIL).toBe("");
    expect(parseShimConfig({ SHIM_UPSTREAM_URL: "http://litellm:4000/v1", ...env }, () => "").adminTokenPrevious).toBeNull();
  });

  it("refuses a previous token that is the current one: the admin token was not replaced, and the shim would not start", () => {
    const c = ok({ previousAdminToken: NEW });
    expect(() => envEntries(c, { ...secrets, shimAdminTokenPrevious: NEW }, "llm.example.com"))
      .toThrow("previousAdminToken is the stack's current admin token: the admin token was not replaced (npm run rotate-admin-token replaces it), or the rotation is over (npm run rotate-admin-token -- --finish)");
  });

  it(".env.example asks for the previous token only during a rotation, with the end as configured", () => {
    const during = renderEnvExample(ok({ previousAdminToken: Secret.encrypted(), previousAdminTokenUntil: "2026-06-08T12:00:00Z" }));
    expect(during).toMatch(/^SHIM_ADMIN_TOKEN_PREVIOUS=<shim-admin-token-previous: the admin token being rotated out>$/m);
    expect(during).toMatch(/^SHIM_ADMIN_TOKEN_PREVIOUS_UNTIL=2026-06-08T12:00:00.000Z$/m);
    const outside = renderEnvExample(ok({}));
    expect(outside).toMatch(/^SHIM_ADMIN_TOKEN_PREVIOUS=$/m);
    expect(outside).toMatch(/^SHIM_ADMIN_TOKEN_PREVIOUS_UNTIL=$/m);
  });
});

it("compose.yaml hands both to the shim alone, so a rotation's deploys recreate the shim and nothing else", () => {
  const compose = parse(readFileSync(new URL("../../templates/compose.yaml", import.meta.url), "utf8")) as { services: Record<string, unknown> };
  const using = (name: string) => Object.entries(compose.services).filter(([, s]) => JSON.stringify(s).includes(`\${${name}`)).map(([n]) => n);
  expect(using("SHIM_ADMIN_TOKEN_PREVIOUS:")).toEqual(["shim"]);
  expect(using("SHIM_ADMIN_TOKEN_PREVIOUS_UNTIL:")).toEqual(["shim"]);
  const shim = compose.services.shim as { environment: Record<string, string> };
  // Empty when .env has none (a bundle run by hand from an older .env.example): the shim reads that as unset.
  expect(shim.environment.SHIM_ADMIN_TOKEN_PREVIOUS).toBe("${SHIM_ADMIN_TOKEN_PREVIOUS:-}");
  expect(shim.environment.SHIM_ADMIN_TOKEN_PREVIOUS_UNTIL).toBe("${SHIM_ADMIN_TOKEN_PREVIOUS_UNTIL:-}");
});
