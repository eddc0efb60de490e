import { mkdtempSync, readdirSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { trustedPeers } from "../../api-shim/src/auth/client-address.ts";
import { ConfigError, parseShimConfig } from "../../api-shim/src/config.ts";
import { driverUrl, parseDatabaseUrl, redactUrl } from "../../api-shim/src/store/database-url.ts";
import { openStore } from "../../api-shim/src/store/open-store.ts";
import { SqliteInUseError } from "../../api-shim/src/store/sqlite-owner.ts";
import { checkRoomToStart, MIN_FREE_BYTES, reusableWal, VolumeFullError, watchRoom } from "../../api-shim/src/store/sqlite-space.ts";
import { failureHint } from "../../api-shim/src/store/sqlite-failures.ts";
import { StoreUnavailableError } from "../../api-shim/src/store/store.ts";

const HASH = `sha256:${"a".repeat(64)}`;
const parse = (env: Record<string, string>, yaml?: string) =>
  parseShimConfig({ SHIM_UPSTREAM_URL: "http://litellm:4000/v1", ...(yaml !== undefined ? { SHIM_CONFIG: "/cfg.yaml" } : {}), ...env }, (p) => {
    if (p !== "/cfg.yaml" || yaml === undefined) throw new Error(`ENOENT: ${p}`);
    return yaml;
  });
const problems = (env: Record<string, string>, yaml?: string): string[] => {
  try {
    parse(env, yaml);
  } catch (e) {
    if (e instanceof ConfigError) return [...e.problems];
    throw e;
  }
  throw new Error("expected a ConfigError");
};

describe("parseShimConfig", () => {
  it("SHIM_LOW_CREDITS_SHARE (0.1) and SHIM_LOW_CREDITS_INTERVAL_MS (300000, 0: off): the low-credit gauges' share and refresh, refused out of range", () => {
    expect(parse({})).toMatchObject({ lowCreditsShare: 0.1, lowCreditsIntervalMs: 300_000 });
    expect(parse({ SHIM_LOW_CREDITS_SHARE: "0.25", SHIM_LOW_CREDITS_INTERVAL_MS: "0" })).toMatchObject({ lowCreditsShare: 0.25, lowCreditsIntervalMs: 0 });
    expect(parse({ SHIM_LOW_CREDITS_SHARE: "1" })).toMatchObject({ lowCreditsShare: 1 });
    for (const bad of ["1.5", "-0.1", "10%", "abc"]) expect(problems({ SHIM_LOW_CREDITS_SHARE: bad }).join("\n")).toContain(`SHIM_LOW_CREDITS_SHARE: "${bad}" is not valid; expected a number from 0 to 1`);
    expect(problems({ SHIM_LOW_CREDITS_INTERVAL_MS: "500" }).join("\n")).toContain("SHIM_LOW_CREDITS_INTERVAL_MS: \"500\" is not valid; expected 0 (off) or an integer from 1000");
  });

  it("applies the documented defaults and freezes the result", () => {
    const c = parse({});
    expect(c).toMatchObject({
      port: 8080, host: "0.0.0.0", upstreamUrl: "http://litellm:4000/v1", upstreamApiKey: null, databaseUrl: "sqlite:./data/shim.db",
      adminToken: null, trustProxy: [], upstreamTimeoutMs: 120_000, streamIdleTimeoutMs: 60_000, drainTimeoutMs: 23_000,
      maxBodyBytes: 8 * 1024 * 1024, logLevel: "info", unauthenticatedRpm: 60, defaultTier: "free", models: null, bootstrapKeys: [],
    });
    expect(c.pricing).toMatchObject({ request: 1_000_000, batchRequest: 2_000_000 });
    expect(c.tiers.get("free")).toEqual({ rpm: 10, tpm: 10_000, concurrency: null });
    expect(c.tiers.get("developer")).toEqual({ rpm: 100, tpm: 100_000, concurrency: null });
    expect(c.tiers.get("pro")).toEqual({ rpm: 500, tpm: 500_000, concurrency: null });
    expect(c.tiers.get("enterprise")).toEqual({ rpm: null, tpm: null, concurrency: null });
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.pricing)).toBe(true);
  });

  it("reads the brief's full YAML example", () => {
    const c = parse({ SHIM_TRUST_PROXY: "172.16.0.0/12, 10.0.0.1" }, `
pricing:
  request: 1
  batchRequest: 2
  models:
    qwen2.5-7b: { promptPer1k: 0.1, completionPer1k: 0.2 }
tiers:
  free: { rpm: 10, tpm: 10000 }
  pro: { rpm: 600 }
  workshop: { rpm: 30, tpm: null, concurrency: 4 }
unauthenticatedRpm: 60
defaultTier: free
models:
  - name: qwen2.5-7b
    maxModelLen: 8192
    continuousUsage: true
    tokenPrompts: false
  - name: bge-m3
  - name: gemma-3
    mediaPartTokens: 256
  - name: gemini-pro
    maxOutputTokens: 65536
    maxModelLen: 1048576
    provider: true
bootstrapKeys:
  - id: AbC123xyz789
    name: app
    hash: "${HASH}"
    credits: 1000
    tier: developer
    models: [qwen2.5-7b]
`);
    expect(c.trustProxy).toEqual(["172.16.0.0/12", "10.0.0.1"]);
    expect(c.pricing.models.get("qwen2.5-7b")).toEqual({ promptPer1k: 100_000, completionPer1k: 200_000 });
    expect(c.tiers.get("pro")).toEqual({ rpm: 600, tpm: 500_000, concurrency: null }); // merged over the default
    expect(c.tiers.get("workshop")).toEqual({ rpm: 30, tpm: null, concurrency: 4 });
    expect(c.models!.get("qwen2.5-7b")).toEqual({ name: "qwen2.5-7b", maxModelLen: 8192, continuousUsage: true, tokenPrompts: false });
    // What plain vLLM does, when not said otherwise: token-ID prompts, no running usage asked for.
    expect(c.models!.get("bge-m3")).toEqual({ name: "bge-m3", maxModelLen: null, continuousUsage: false, tokenPrompts: true });
    // The fewest prompt tokens a media part is estimated at (inference-request.ts promptTokens): none unless set.
    expect(c.models!.get("gemma-3")).toEqual({ name: "gemma-3", maxModelLen: null, mediaPartTokens: 256, continuousUsage: false, tokenPrompts: true });
    // A provider's longest answer, which bounds the hold of a request without max_tokens (pricing.ts).
    // Its context, and that it is a provider's (vLLM's completions default does not bound it).
    expect(c.models!.get("gemini-pro")).toMatchObject({ maxModelLen: 1_048_576, maxOutputTokens: 65_536, provider: true });
    expect(c.bootstrapKeys).toEqual([{ id: "AbC123xyz789", name: "app", hash: HASH, credits: 1000_000_000, tier: "developer", models: ["qwen2.5-7b"] }]);
  });

  it("reports every problem at once, each naming the variable or key, the value and what is allowed", () => {
    const p = problems(
      { SHIM_UPSTREAM_URL: "litellm:4000", SHIM_READY_URL: "vllm/health", SHIM_PORT: "80a", SHIM_TRUST_PROXY: "10.0.0.0/33", LOG_LEVEL: "loud", SHIM_DRAIN_TIMEOUT_MS: "-1", SHIM_DATABASE_URL: "mysql://u:hunter2@x/db", SHIM_ADMIN_TOKEN: "letmein" },
      `
pricing: { request: -1, models: { m: { promptPer1k: "abc" }, M: { promptPer1k: 1 } } }
tiers: { free: { rpm: 0 }, pro: { concurrency: 0 }, workshop: { rpm: 30 }, developer: null }
defaultTier: gold
models: [{ name: m, maxModelLen: 1.5, maxOutputTokens: 0, provider: 1, tokenPrompts: "no" }]
bootstrapKeys:
  - { id: short, hash: "md5:x", tier: platinum, models: [other], credits: 0.0000001 }
extra: 1
`,
    );
    const expected = [
      // A value that is no URL, nor what else a variable wants, is shown by its first characters: it may be a secret set in the wrong variable.
      /^SHIM_UPSTREAM_URL: "lit…" \(12 characters\) is not valid; expected an http\(s\) URL/,
      /^SHIM_READY_URL: "vl…" \(11 characters\) is not valid; expected an http\(s\) URL without query, e.g. http:\/\/vllm:8000\/health/,
      /^SHIM_PORT: "80a" is not valid; expected an integer from 0 to 65535/,
      /^SHIM_TRUST_PROXY: "10…" \(11 characters\) is not valid/,
      /^LOG_LEVEL: "loud"/,
      /^SHIM_DRAIN_TIMEOUT_MS: "-1"/,
      /^SHIM_DATABASE_URL: "mysql:\/\/u:\*\*\*@x\/db" is not valid; expected sqlite:<path>, sqlite::memory: or postgres:\/\/…$/,
      /^SHIM_ADMIN_TOKEN: is 7 characters long; expected at least 16 /,
      /^SHIM_CONFIG pricing.request: -1 is not valid; expected a non-negative number of credits/,
      /^SHIM_CONFIG pricing.models.m.promptPer1k: "abc"/,
      /^SHIM_CONFIG pricing.models.M: "M" is not valid; expected a configured model: m$/,
      /^SHIM_CONFIG tiers.free.rpm: 0 is not valid; expected a positive integer, or null for unlimited/,
      /^SHIM_CONFIG tiers.pro.concurrency: 0 is not valid; expected a positive integer, or null for unlimited/,
      // A new tier without tpm would have had unlimited tokens/min, which nobody wrote.
      /^SHIM_CONFIG tiers.workshop: \{"rpm":30\} is not valid; expected both rpm and tpm for a new tier \(a number, or null for unlimited\)/,
      // Read as "unlimited" by whoever wrote it; it changed nothing.
      /^SHIM_CONFIG tiers.developer: null is not valid; expected a mapping of rpm, tpm and concurrency; for no limit, set each to null/,
      /^SHIM_CONFIG defaultTier: "gold" is not valid; expected one of the tiers: free \| developer \| pro \| enterprise \| workshop/,
      /^SHIM_CONFIG models\[0\].maxModelLen: 1.5/,
      /^SHIM_CONFIG models\[0\].maxOutputTokens: 0 is not valid; expected a positive integer/,
      /^SHIM_CONFIG models\[0\].provider: 1 is not valid; expected true or false$/,
      /^SHIM_CONFIG models\[0\].tokenPrompts: "no" is not valid; expected true or false$/,
      /^SHIM_CONFIG bootstrapKeys\[0\].id: "short"/,
      /^SHIM_CONFIG bootstrapKeys\[0\].hash: is not valid \(a string of 5 characters, not repeated\); expected sha256:/,
      /^SHIM_CONFIG bootstrapKeys\[0\].tier: "platinum"/,
      /^SHIM_CONFIG bootstrapKeys\[0\].models: "other" is not valid; expected a configured model: m/,
      /^SHIM_CONFIG bootstrapKeys\[0\].credits: 1e-7/,
      /^SHIM_CONFIG extra: "extra" is not valid; expected one of the keys/,
    ];
    for (const re of expected) expect(p.some((line) => re.test(line)), `${re} in\n${p.join("\n")}`).toBe(true);
    expect(p).toHaveLength(expected.length);
    expect(p.join("\n")).not.toContain("letmein"); // the token is a secret, even a bad one
  });

  it("a model's mediaPartTokens is a non-negative integer up to 1,048,576; 0 (the default) is no floor", () => {
    const models = (v: string) => `models: [{ name: m, mediaPartTokens: ${v} }]`;
    expect(parse({}, models("0")).models!.get("m")!.mediaPartTokens ?? 0).toBe(0);
    expect(parse({}, models("576")).models!.get("m")!.mediaPartTokens).toBe(576);
    expect(parse({}, models("1048576")).models!.get("m")!.mediaPartTokens).toBe(1_048_576);
    expect(parse({}, models("null")).models!.get("m")!.mediaPartTokens ?? 0).toBe(0);
    for (const bad of ["-1", "1.5", '"256"', "1048577", "true"]) { // YAML scalars that are their own JSON
      expect(problems({}, models(bad)), bad).toEqual([
        `SHIM_CONFIG models[0].mediaPartTokens: ${bad} is not valid; expected a non-negative integer up to 1048576 (the fewest prompt tokens a media part is estimated at; 0: no floor)`,
      ]);
    }
  });

  it("a model's cachedPromptPer1k is credits as promptPer1k is, at most promptPer1k; absent, none is set (the prompt price applies)", () => {
    const c = parse({}, "models: [{ name: m }, { name: n }]\npricing: { models: { m: { promptPer1k: 1, cachedPromptPer1k: 0.1 }, n: { promptPer1k: 1 } } }\n");
    expect(c.pricing.models.get("m")).toEqual({ promptPer1k: 1_000_000, completionPer1k: 0, cachedPromptPer1k: 100_000 });
    expect(c.pricing.models.get("n")).toEqual({ promptPer1k: 1_000_000, completionPer1k: 0 });
    const p = problems({}, "models: [{ name: a }, { name: b }, { name: c }, { name: d }]\npricing: { models: { a: { promptPer1k: 1, cachedPromptPer1k: -1 }, b: { promptPer1k: 1, cachedPromptPer1k: abc }, " +
      "c: { promptPer1k: 1, cachedPromptPer1k: 0.0000001 }, d: { promptPer1k: 0.1, cachedPromptPer1k: 0.2 } } }\n");
    expect(p).toEqual([
      "SHIM_CONFIG pricing.models.a.cachedPromptPer1k: -1 is not valid; expected a non-negative number of credits with at most 6 decimals",
      'SHIM_CONFIG pricing.models.b.cachedPromptPer1k: "abc" is not valid; expected a non-negative number of credits with at most 6 decimals',
      "SHIM_CONFIG pricing.models.c.cachedPromptPer1k: 1e-7 is not valid; expected a non-negative number of credits with at most 6 decimals",
      "SHIM_CONFIG pricing.models.d.cachedPromptPer1k: 0.2 is not valid; expected at most promptPer1k (0.1): a cached prompt token is charged no more than a prompt token, which the hold reserves for every prompt token",
    ]);
  });

  // Found by mutation review: taking the price only when above 0 passed every test, and a model
  // whose cache reads are free (the stack's validate.ts takes 0) was charged them at promptPer1k.
  it("a model's cachedPromptPer1k of 0 is set: cached prompt tokens are free, not charged the prompt price", () => {
    const c = parse({}, "models: [{ name: m }]\npricing: { models: { m: { promptPer1k: 1, cachedPromptPer1k: 0 } } }\n");
    expect(c.pricing.models.get("m")).toEqual({ promptPer1k: 1_000_000, completionPer1k: 0, cachedPromptPer1k: 0 });
  });

  // Found by review: a new tier set to null was told so, and then that it lacked rpm and tpm.
  it("a new tier set to null is one problem: the mapping it should be", () => {
    expect(problems({}, "tiers: { gold: null }")).toEqual([
      "SHIM_CONFIG tiers.gold: null is not valid; expected a mapping of rpm, tpm and concurrency; for no limit, set each to null",
    ]);
  });

  it("a bootstrap key's credits are bounded as the admin API's: at most a billion", () => {
    const key = (credits: string) => `bootstrapKeys: [{ id: AbC123xyz789, hash: "${HASH}", credits: ${credits} }]`;
    expect(parse({}, key("1000000000")).bootstrapKeys[0]!.credits).toBe(1e15);
    expect(problems({}, key("1000000000.5"))).toEqual(["SHIM_CONFIG bootstrapKeys[0].credits: 1000000000.5 is not valid; expected at most 1000000000 credits"]);
  });

  // Found by review: a key written where its hash goes was repeated on stderr (docker compose logs).
  it("a bootstrap key's hash that is not one is never repeated, and a key put there is called the key", () => {
    const key = "sk-gs-Q1bQtLn2OM1o_h2qlwFR5YnMf3dlH8FQpTH2ptAoL1ShV";
    const withHash = (hash: string) => `bootstrapKeys:\n  - id: Q1bQtLn2OM1o\n    hash: "${hash}"\n    credits: 10\n`;
    for (const hash of [key, `sha256:${key}`, ` ${key}`, `sha256:${key.slice(6)}`]) {
      expect(problems({}, withHash(hash)), hash).toEqual([
        "SHIM_CONFIG bootstrapKeys[0].hash: is a key (not repeated); expected sha256: and the 64 lowercase hex digits of the key's SHA-256 (printf %s \"$KEY\" | sha256sum), not a key",
      ]);
    }
    // A secret (32 letters and digits) alone or behind another prefix is not called a key (a
    // model name may be shaped so), but is not repeated either.
    for (const hash of ["sha256:not-hex-h2qlwFR5YnMf3dlH8", HASH.toUpperCase(), "sha256:not-hex-h2qlwFR5YnMf3dlH8FQpTH2ptAoL1ShV", key.slice(-32)]) {
      const found = problems({}, withHash(hash));
      expect(found, hash).toEqual([expect.stringMatching(/^SHIM_CONFIG bootstrapKeys\[0\]\.hash: is not valid \(a string of \d+ characters, not repeated\); expected sha256:<64 lowercase hex digits>/)]);
      expect(found[0]).not.toContain(hash.slice(10));
    }
    expect(problems({}, "bootstrapKeys:\n  - { id: Q1bQtLn2OM1o, hash: 12 }\n")).toEqual([expect.stringMatching(/^SHIM_CONFIG bootstrapKeys\[0\]\.hash: is not valid \(a number, not repeated\)/)]);
  });

  // Found by review: only the hash field was covered; a key in any other field, or as a list item,
  // was repeated whole by the common "<value> is not valid" message.
  it("a bootstrap key written anywhere else in SHIM_CONFIG is never repeated, and is called a key", () => {
    const key = "sk-gs-Q1bQtLn2OM1o_h2qlwFR5YnMf3dlH8FQpTH2ptAoL1ShV";
    const hint = `SHIM_CONFIG takes a bootstrap key only as its hash, in bootstrapKeys[].hash: sha256: and the 64 lowercase hex digits of the key's SHA-256 (printf %s "$KEY" | sha256sum)`;
    const cases: [string, string, string][] = [
      [`bootstrapKeys:\n  - id: ${key}\n    hash: "${HASH}"\n    credits: 10\n`, "SHIM_CONFIG bootstrapKeys[0].id", "12 letters or digits (the id part of sk-gs-<id>_<secret>)"],
      [`bootstrapKeys:\n  - ${key}\n`, "SHIM_CONFIG bootstrapKeys[0]", "a mapping"],
      [`bootstrapKeys: ${key}\n`, "SHIM_CONFIG bootstrapKeys", "a list of { id, name, hash, credits, tier, models? }"],
      [`bootstrapKeys: { key: ${key} }\n`, "SHIM_CONFIG bootstrapKeys", "a list of { id, name, hash, credits, tier, models? }"],
      [`defaultTier: ${key}\n`, "SHIM_CONFIG defaultTier", "one of the tiers: free | developer | pro | enterprise"],
    ];
    for (const [yaml, where, allowed] of cases) {
      const found = problems({}, yaml);
      expect(found, yaml).toContain(`${where}: is a key (not repeated); expected ${allowed}, not a key; ${hint}`);
      expect(found.join("\n"), yaml).not.toContain(key.slice(6));
    }
    // A key as a mapping key is in the path the problem names: that part is hidden.
    for (const yaml of [`${key}: 1\n`, `bootstrapKeys:\n  - { ${key}: 1 }\n`, `models: [{ name: m }]\npricing: { models: { ${key}: { promptPer1k: 1 } } }\n`, `x: *${key}\n`]) {
      const found = problems({}, yaml);
      expect(found.length, yaml).toBeGreaterThan(0);
      expect(found.join("\n"), yaml).not.toContain(key.slice(6));
    }
    expect(problems({}, `${key}: 1\n`)).toEqual([expect.stringMatching(/^SHIM_CONFIG sk-gs-\[redacted\]: is a key \(not repeated\); expected one of the keys pricing, /)]);
  });

  // Found by review: a key without its prefix (`<id>_<secret>`, what the id field's hint may lead
  // to pasting) was repeated, and so was a key used as a tier's name, in another setting's list
  // of the tiers it may name.
  it("a bootstrap key without its sk-gs- prefix, or in a list a message offers, is never repeated either", () => {
    const key = "sk-gs-Q1bQtLn2OM1o_h2qlwFR5YnMf3dlH8FQpTH2ptAoL1ShV";
    const secret = key.slice(-32);
    const bare = problems({}, `bootstrapKeys:\n  - id: ${key.slice(6)}\n    hash: "${HASH}"\n    credits: 10\n`);
    expect(bare).toContain(`SHIM_CONFIG bootstrapKeys[0].id: is a key (not repeated); expected 12 letters or digits (the id part of sk-gs-<id>_<secret>), not a key; SHIM_CONFIG takes a bootstrap key only as its hash, in bootstrapKeys[].hash: sha256: and the 64 lowercase hex digits of the key's SHA-256 (printf %s "$KEY" | sha256sum)`);
    expect(bare.join("\n")).not.toContain(secret);
    expect(problems({}, `bootstrapKeys:\n  - { id: Q1bQtLn2OM1o, hash: ${secret} }\n`)).toEqual([expect.stringMatching(/^SHIM_CONFIG bootstrapKeys\[0\]\.hash: is not valid \(a string of 32 characters, not repeated\)/)]);
    const offered = problems({}, `tiers: { ${key}: { rpm: 1, tpm: 1 } }\ndefaultTier: nope\n`);
    expect(offered).toContain(`SHIM_CONFIG defaultTier: "nope" is not valid; expected one of the tiers: free | developer | pro | enterprise | sk-gs-[redacted]`);
    expect(offered.join("\n")).not.toContain(secret);
  });

  // Found by review: the log's heuristic for a key's secret glued to letters (33 or more letters
  // and digits in both cases) called a served model's name a key and hid it, typo and all.
  it("only a key's real shapes are called a key: a name that merely looks like a secret is shown as a bad value is", () => {
    const lora = "AcmeCustomerSupportAdapterV2Final";
    expect(problems({}, `models: [{ name: ${lora} }]\npricing: { models: { ${lora}X: { promptPer1k: 1 } } }\n`)).toEqual([
      `SHIM_CONFIG pricing.models.${lora}X: "Acme…" (34 characters) is not valid; expected a configured model: ${lora}`,
    ]);
    expect(problems({}, `tiers: { ${lora}: { rpm: 1, tpm: 1 } }\ndefaultTier: ${lora}X\n`)).toEqual([
      `SHIM_CONFIG defaultTier: "Acme…" (34 characters) is not valid; expected one of the tiers: free | developer | pro | enterprise | ${lora}`,
    ]);
    // A key's secret alone: its first characters and its length, never the rest.
    const secret = "h2qlwFR5YnMf3dlH8FQpTH2ptAoL1ShV";
    expect(problems({}, `defaultTier: ${secret}\n`)).toEqual([`SHIM_CONFIG defaultTier: "h2ql…" (32 characters) is not valid; expected one of the tiers: free | developer | pro | enterprise`]);
  });

  it("bootstrap key names, allow-lists and model names are held to the admin API's rules: a NUL would fail the Postgres store at every start", () => {
    // YAML's "\0" is a NUL, "\x01" a control character; a name past 200 characters is the admin API's 400 too.
    const long = "n".repeat(201);
    expect(problems({}, `
models: [{ name: "m\\0x" }, { name: "${"m".repeat(257)}" }, { name: ok }]
bootstrapKeys:
  - { id: AbC123xyz789, hash: "${HASH}", name: "team\\0a" }
  - { id: AbC123xyz780, hash: "${HASH}", name: "${long}" }
  - { id: AbC123xyz781, hash: "${HASH}", name: "  " }
  - { id: AbC123xyz782, hash: "${HASH}", name: 7 }
`)).toEqual([
      'SHIM_CONFIG models[0].name: "m\\u0000x" is not valid; expected a model name: 1 to 256 characters, without control characters',
      `SHIM_CONFIG models[1].name: "${"m".repeat(257)}" is not valid; expected a model name: 1 to 256 characters, without control characters`,
      'SHIM_CONFIG bootstrapKeys[0].name: "team\\u0000a" is not valid; expected a name of 1 to 200 characters, without control characters (or leave it out for the id)',
      `SHIM_CONFIG bootstrapKeys[1].name: "${long}" is not valid; expected a name of 1 to 200 characters, without control characters (or leave it out for the id)`,
      'SHIM_CONFIG bootstrapKeys[2].name: "  " is not valid; expected a name of 1 to 200 characters, without control characters (or leave it out for the id)',
      "SHIM_CONFIG bootstrapKeys[3].name: 7 is not valid; expected a name of 1 to 200 characters, without control characters (or leave it out for the id)",
    ]);
    // Without a models list, an allow-list entry is only checked as a name.
    expect(problems({}, `bootstrapKeys: [{ id: AbC123xyz789, hash: "${HASH}", models: [good, "b\\x01d"] }]`)).toEqual([
      'SHIM_CONFIG bootstrapKeys[0].models: ["good","b\\u0001d"] is not valid; expected a non-empty list of model names, or leave it out for all models',
    ]);
    expect(parse({}, `bootstrapKeys: [{ id: AbC123xyz789, hash: "${HASH}", name: "Team A (é)" }]`).bootstrapKeys[0]!.name).toBe("Team A (é)");
    expect(parse({}, `bootstrapKeys: [{ id: AbC123xyz789, hash: "${HASH}" }]`).bootstrapKeys[0]!.name).toBe("AbC123xyz789");
  });

  it("a bootstrap key's empty allow-list is refused, as POST /admin/keys refuses it: it would allow no model at all", () => {
    expect(problems({}, `bootstrapKeys: [{ id: AbC123xyz789, hash: "${HASH}", models: [] }]`)).toEqual([
      "SHIM_CONFIG bootstrapKeys[0].models: [] is not valid; expected a non-empty list of model names, or leave it out for all models",
    ]);
    expect(parse({}, `bootstrapKeys: [{ id: AbC123xyz789, hash: "${HASH}", models: null }]`).bootstrapKeys[0]!.models).toBeNull();
  });

  it("an upstream URL with credentials or a query is refused without repeating them: they would reach stderr and the logs", () => {
    const p = problems({ SHIM_UPSTREAM_URL: "http://shim:TopSecretPw@litellm:4000/v1", SHIM_READY_URL: "http://vllm:8000/health?api_key=sk-live-123" });
    expect(p).toEqual([
      'SHIM_UPSTREAM_URL: "http://***@litellm:4000/v1" has credentials in it, which would not be sent (only the origin is used); give the upstream\'s key in SHIM_UPSTREAM_API_KEY',
      'SHIM_READY_URL: "http://vllm:8000/health?…" is not valid; expected an http(s) URL without query, e.g. http://vllm:8000/health',
    ]);
    // A /0 trusts every peer's X-Forwarded-For and X-Request-Id (and Fastify refused it at start, with a stack trace).
    expect(problems({ SHIM_TRUST_PROXY: "10.89.0.2/32,0.0.0.0/0,::/00" })).toEqual([
      expect.stringMatching(/^SHIM_TRUST_PROXY: "0\.0\.0\.0\/0" is not valid; expected the proxy's own addresses/),
      expect.stringMatching(/^SHIM_TRUST_PROXY: "::\/00" is not valid/),
    ]);
    // The readiness probe sends no key: the advice for its URL is not the upstream's.
    expect(problems({ SHIM_READY_URL: "http://admin:pw@vllm:8000/health" })).toEqual([
      'SHIM_READY_URL: "http://***@vllm:8000/health" has credentials in it, which would not be sent (only the origin is used); the probe sends no credentials, so give a URL that answers without them, such as vLLM\'s /health',
    ]);
    for (const url of ["http://sk-live-SECRET123@litellm:4000/v1", "http://user:pa?SECRET@litellm:4000/v1", "http://user:pa#SECRET@litellm/v1", "litellm:4000/v1?key=SECRET",
      "sk-live-SECRET123@litellm:4000/v1", "user:SECRET123@litellm:4000/v1", "//user:SECRET123@litellm:4000/v1"]) {
      const lines = problems({ SHIM_UPSTREAM_URL: url });
      expect(lines, url).toHaveLength(1);
      expect(lines[0], url).not.toMatch(/SECRET|pa\b/);
    }
  });

  it("a secret set in the wrong variable is not repeated: the upstream's key and URL swapped, a password alone as SHIM_DATABASE_URL", () => {
    const upstreamKey = "sk-proj-Ab3dEf9hIjKlMn0pQrStUvWx";
    const swapped = problems({ SHIM_UPSTREAM_URL: upstreamKey, SHIM_UPSTREAM_API_KEY: "http://litellm:4000/v1" });
    expect(swapped.some((l) => l.startsWith("SHIM_UPSTREAM_URL:")), swapped.join("\n")).toBe(true);
    expect(swapped.join("\n")).not.toContain("Ab3dEf9h");
    for (const name of ["SHIM_READY_URL", "SHIM_TRUST_PROXY", "SHIM_PORT"]) expect(problems({ [name]: upstreamKey }).join("\n"), name).not.toContain("Ab3dEf9h");
    expect(problems({ SHIM_DATABASE_URL: "Zq9Xw7VtPassw0rd" }).join("\n")).not.toContain("Zq9Xw7Vt");
  });

  it("a value that is not valid is shown by its first characters and its length, a short one whole, a secret's never: the operator can tell which value it is", () => {
    const adminToken = "3f9a0c1b2d4e5f60718293a4b5c6d7e8";
    const p = problems({ SHIM_ADMIN_TOKEN: adminToken, SHIM_UPSTREAM_API_KEY: "lm-Upstr3amKeyValue", SHIM_PORT: adminToken, SHIM_READY_URL: "lm-Upstr3amKeyValue",
      SHIM_TRUST_PROXY: "Zq9Xw7VtPassw0rd", SHIM_LOG_PRETTY: "true", SHIM_DATABASE_URL: `x${adminToken}`, SHIM_MAX_BODY_BYTES: "2147483648", LOG_LEVEL: "Authorization: Bearer abcdefgh12345678" });
    expect(p).toEqual([
      "SHIM_PORT: SHIM_ADMIN_TOKEN's value (not repeated) is not valid; expected an integer from 0 to 65535",
      "SHIM_READY_URL: SHIM_UPSTREAM_API_KEY's value (not repeated) is not valid; expected an http(s) URL without query, e.g. http://vllm:8000/health",
      'SHIM_TRUST_PROXY: "Zq9X…" (16 characters) is not valid; expected comma-separated IP addresses or CIDRs, e.g. 172.16.0.0/12',
      "LOG_LEVEL: a value shaped like an API key, a token or a password (not repeated) is not valid; expected fatal | error | warn | info | debug | trace | silent",
      'SHIM_LOG_PRETTY: "true" is not valid; expected 1 to pretty-print, or 0 or unset',
      "SHIM_DATABASE_URL: a value holding SHIM_ADMIN_TOKEN's (not repeated) is not valid; expected sqlite:<path>, sqlite::memory: or postgres://…",
      // An integer out of range parsed as one: shown whole.
      'SHIM_MAX_BODY_BYTES: "2147483648" is not valid; expected an integer from 1024 to 1073741824',
    ]);
    // SHIM_CONFIG's values are shown as written, but not a secret's: a provider's key, the deployment's own, in a value or a mapping key.
    const upstreamKey = "sk-proj-Ab3dEf9hIjKlMn0pQrStUvWx";
    const file = problems({ SHIM_ADMIN_TOKEN: adminToken }, `defaultTier: ${upstreamKey}\nunauthenticatedRpm: "${adminToken}"\n${upstreamKey}: 1\n`);
    expect(file.join("\n")).not.toMatch(/Ab3dEf9h|3f9a0c1b/);
    expect(file).toEqual([
      expect.stringMatching(/^SHIM_CONFIG sk-\[redacted\]: a value shaped like an API key, a token or a password \(not repeated\) is not valid; expected one of the keys pricing, /),
      expect.stringMatching(/^SHIM_CONFIG defaultTier: a value shaped like an API key, a token or a password \(not repeated\) is not valid; expected /),
      expect.stringMatching(/^SHIM_CONFIG unauthenticatedRpm: SHIM_ADMIN_TOKEN's value \(not repeated\) is not valid; expected /),
    ]);
  });

  it("refuses SHIM_TRUST_PROXY entries that trust every IPv4 or every IPv6 client other than as a /0, alone or together", () => {
    // The trust check matches an IPv4 peer against IPv4-mapped entries: ::ffff:0.0.0.0/96 is every IPv4 client.
    expect(trustedPeers(["::ffff:0.0.0.0/96"])("198.51.100.9")).toBe(true);
    // Every client that can connect is enough: no client has a multicast, reserved (224.0.0.0/3) or
    // non-global-unicast IPv6 (outside 2000::/3) address, so those need not be covered as well.
    for (const list of ["::ffff:0.0.0.0/96", "::/1", "0.0.0.0/1,128.0.0.0/1", "::ffff:0:0/97, 128.0.0.0/1", "::/1,8000::/1", "0.0.0.0/2,64.0.0.0/2,128.0.0.0/1,10.89.0.2",
      "2000::/3", "2000::/4,3000::/4", "0.0.0.0/1,128.0.0.0/2,192.0.0.0/3", "::ffff:0:0/97,::ffff:128.0.0.0/98,192.0.0.0/3",
      // In any order, and with host bits set (1.2.3.4/1 is 0.0.0.0/1 to the trust check), as BlockList reads them (found by mutation review).
      "128.0.0.0/1,0.0.0.0/1", "3000::/4,2000::/4", "192.0.0.0/3,128.0.0.0/2,0.0.0.0/1", "1.2.3.4/1,128.0.0.0/1", "2001:db8::1/3"]) {
      expect(problems({ SHIM_TRUST_PROXY: list }), list).toEqual([
        expect.stringMatching(/^SHIM_TRUST_PROXY: ".+" is not valid; expected the proxy's own addresses, not every address \(a \/0/),
      ]);
    }
    // Every IPv4 client, its last addresses named one by one (192.0.0.0/4, 208.0.0.0/5, … 223.255.255.254/32, 223.255.255.255).
    const tail: string[] = [];
    for (let prefix = 4, start = 0xc0000000; prefix <= 32; start += 2 ** (32 - prefix), prefix++) tail.push(`${[24, 16, 8, 0].map((s) => Math.floor(start / 2 ** s) % 256).join(".")}/${prefix}`);
    const oneByOne = ["0.0.0.0/1", "128.0.0.0/2", ...tail, "223.255.255.255"].join(",");
    expect(problems({ SHIM_TRUST_PROXY: oneByOne })).toEqual([expect.stringMatching(/^SHIM_TRUST_PROXY: ".+" is not valid; expected the proxy's own addresses, not every address/)]);
    expect(parse({ SHIM_TRUST_PROXY: oneByOne.replace(/,223\.255\.255\.255$/, "") }).trustProxy).toHaveLength(31);
    // An IPv6 prefix past 128 is refused when the configuration is read, not a crash of BlockList at startup (found by mutation review).
    expect(problems({ SHIM_TRUST_PROXY: "fd00::/129" })).toEqual([expect.stringMatching(/^SHIM_TRUST_PROXY: "fd…" \(10 characters\) is not valid; expected comma-separated IP addresses or CIDRs/)]);
    expect(parse({ SHIM_TRUST_PROXY: "fd00::1/128" }).trustProxy).toEqual(["fd00::1/128"]);
    // Half of IPv4, or all but one /3 of it: not every client (the list a proxy's range takes is far smaller).
    for (const list of ["0.0.0.0/1", "0.0.0.0/2,96.0.0.0/3,128.0.0.0/1", "0.0.0.0/1,128.0.0.0/2,192.0.0.0/4", "2000::/4", "10.89.0.2,172.16.0.0/12,fd00::/8", "::ffff:10.0.0.0/104", "fe80::1%eth0",
      "10.0.0.0/8,::1/128", "fc00::/7", "fe80::/10"]) {
      expect(parse({ SHIM_TRUST_PROXY: list }).trustProxy.join(","), list).toBe(list);
    }
  });

  it("refuses .env.example's placeholder as the admin token, and any token with < >, control characters or non-ASCII, without repeating it", () => {
    // Published in the repository: an operator who left the line as it was would guard /admin with it.
    expect(problems({ SHIM_ADMIN_TOKEN: "<shim-admin-token: openssl rand -hex 32>" })).toEqual([
      "SHIM_ADMIN_TOKEN: is still a placeholder, as in .env.example (<…>); set a secret of your own (random: openssl rand -hex 32)",
    ]);
    expect(problems({ SHIM_ADMIN_TOKEN: "<paste-the-admin-token-here>" })[0]).toMatch(/^SHIM_ADMIN_TOKEN: is still a placeholder/);
    for (const token of ["admin-token-<with>-brackets", "pässwort-pässwort-pässwort", "bell\x07-in-the-admin-token"]) {
      const p = problems({ SHIM_ADMIN_TOKEN: token });
      expect(p, token).toEqual([
        "SHIM_ADMIN_TOKEN: has a character other than ASCII letters, digits, punctuation and spaces (< or >, as in a placeholder, a control character, or one beyond ASCII, whose bytes a client's would not match); expected ASCII letters, digits, punctuation and spaces (random: openssl rand -hex 32)",
      ]);
      expect(p.join("")).not.toContain(token);
    }
    // What the Pulumi program makes (48 letters and digits), `npm run shim`, the tests, and hand-made ones.
    // A passphrase (spaces inside) worked before this check existed: an upgrade must not refuse it.
    for (const token of ["correct horse battery staple", "tab\tseparated-admin-token", "aB3".repeat(16), `dev-admin-${"0f".repeat(16)}`, "admin-k3j5h2-1764750000000", "bench-admin-token-not-secret", "sk-gs-AbC123xyz789_s3cr3t!#%&*+/=?@[]^{|}~"]) {
      expect(parse({ SHIM_ADMIN_TOKEN: token }).adminToken, token).toBe(token);
    }
  });

  it("refuses an upstream key that cannot be sent in a header, or with the Bearer the shim adds, without repeating it", () => {
    // Accepted, it booted, then undici refused every request: 502 upstream_error, and /ready 503 "unreachable".
    for (const key of ["sk-upstream€key", "upstream\x07key"]) {
      const p = problems({ SHIM_UPSTREAM_API_KEY: key });
      expect(p, key).toEqual([
        "SHIM_UPSTREAM_API_KEY: has a character other than ASCII letters, digits, punctuation and spaces (a control character other than a tab, or one beyond ASCII, which a header cannot carry as typed); expected the upstream's key as it was issued",
      ]);
      expect(p.join(""), key).not.toContain(key);
    }
    // .env.example's LITELLM_MASTER_KEY line, which compose passes as SHIM_UPSTREAM_API_KEY, left as it was.
    for (const key of ["sk-<litellm-master-key: openssl rand -hex 32>", "<litellm-master-key>"]) {
      expect(problems({ SHIM_UPSTREAM_API_KEY: key }), key).toEqual([
        "SHIM_UPSTREAM_API_KEY: is still a placeholder, as in .env.example (<…>); set the upstream's key (in the Compose bundle: LITELLM_MASTER_KEY in .env)",
      ]);
    }
    for (const key of ["Bearer sk-1234", "bearer sk-1234"]) {
      expect(problems({ SHIM_UPSTREAM_API_KEY: key }), key).toEqual(["SHIM_UPSTREAM_API_KEY: starts with \"Bearer \", which the shim adds itself; expected the key alone"]);
    }
    // < and > are sent as typed (a generated password with symbols): only the admin token refuses them.
    for (const key of ["sk-1234", "gsk_AbC.123/+=:~", "BearerToken-1234", "a key with spaces", "p4ss<w0rd>Xy!9", "<abc>def"]) expect(parse({ SHIM_UPSTREAM_API_KEY: key }).upstreamApiKey, key).toBe(key);
  });

  it("refuses a SHIM_LOG_PRETTY other than 1 or 0, which was ignored, and a model listed twice, whose last entry silently won", () => {
    for (const v of ["true", "yes", "on"]) expect(problems({ SHIM_LOG_PRETTY: v }), v).toEqual([`SHIM_LOG_PRETTY: "${v}" is not valid; expected 1 to pretty-print, or 0 or unset`]);
    expect([parse({ SHIM_LOG_PRETTY: "1" }).logPretty, parse({ SHIM_LOG_PRETTY: "0" }).logPretty, parse({ SHIM_LOG_PRETTY: "" }).logPretty, parse({}).logPretty]).toEqual([true, false, false, false]);
    // The first entry's maxModelLen was dropped without a word.
    expect(problems({}, "models:\n  - { name: m, maxModelLen: 100000 }\n  - { name: n }\n  - { name: m, maxModelLen: 512 }\n")).toEqual([
      'SHIM_CONFIG models[2].name: "m" is not valid; expected a name no other entry of models has',
    ]);
  });

  it("requires SHIM_UPSTREAM_URL, a readable SHIM_CONFIG and a path in a sqlite: URL", () => {
    expect(problems({ SHIM_DATABASE_URL: "sqlite:" })).toEqual([expect.stringMatching(/^SHIM_DATABASE_URL: sqlite: needs a path/)]);
    expect(() => parseShimConfig({}, () => "")).toThrow(/SHIM_UPSTREAM_URL: is required/);
    expect(problems({ SHIM_CONFIG: "/missing.yaml" })).toEqual([expect.stringMatching(/^SHIM_CONFIG: cannot read or parse "\/missing.yaml"/)]);
    expect(problems({}, "pricing: [unclosed")).toEqual([expect.stringMatching(/^SHIM_CONFIG: cannot read or parse/)]);
  });

  it("applies docs/api-shim/environment.md's defaults for the memory budgets and the largest answer", () => {
    expect(parse({})).toMatchObject({ maxAnswerBytes: 268_435_456, answerMemoryBytes: 536_870_912, bodyMemoryBytes: 67_108_864 });
  });

  it("accepts each integer variable at both ends of its range, and refuses one past them", () => {
    const low = { SHIM_PORT: "0", SHIM_UPSTREAM_TIMEOUT_MS: "1", SHIM_STREAM_IDLE_TIMEOUT_MS: "1", SHIM_DRAIN_TIMEOUT_MS: "0", SHIM_MAX_BODY_BYTES: "1024", SHIM_MAX_ANSWER_BYTES: "1024", SHIM_ANSWER_MEMORY_BYTES: "1024", SHIM_BODY_MEMORY_BYTES: "1024" };
    expect(parse(low)).toMatchObject({ port: 0, upstreamTimeoutMs: 1, streamIdleTimeoutMs: 1, drainTimeoutMs: 0, maxBodyBytes: 1024, maxAnswerBytes: 1024, answerMemoryBytes: 1024, bodyMemoryBytes: 1024 });
    const GiB = 1024 ** 3;
    const high = { SHIM_PORT: "65535", SHIM_UPSTREAM_TIMEOUT_MS: "3600000", SHIM_STREAM_IDLE_TIMEOUT_MS: "3600000", SHIM_DRAIN_TIMEOUT_MS: "3600000", SHIM_MAX_BODY_BYTES: String(GiB), SHIM_MAX_ANSWER_BYTES: String(GiB), SHIM_ANSWER_MEMORY_BYTES: String(64 * GiB), SHIM_BODY_MEMORY_BYTES: String(64 * GiB) };
    expect(parse(high)).toMatchObject({ port: 65535, upstreamTimeoutMs: 3_600_000, streamIdleTimeoutMs: 3_600_000, drainTimeoutMs: 3_600_000, maxBodyBytes: GiB, maxAnswerBytes: GiB, answerMemoryBytes: 64 * GiB, bodyMemoryBytes: 64 * GiB });
    expect(problems({ SHIM_PORT: "65536", SHIM_MAX_BODY_BYTES: "1023" })).toEqual([
      'SHIM_PORT: "65536" is not valid; expected an integer from 0 to 65535',
      'SHIM_MAX_BODY_BYTES: "1023" is not valid; expected an integer from 1024 to 1073741824',
    ]);
  });

  it("an admin token of exactly 16 characters is accepted, one of 15 refused", () => {
    expect(parse({ SHIM_ADMIN_TOKEN: "0123456789abcdef" }).adminToken).toBe("0123456789abcdef");
    expect(problems({ SHIM_ADMIN_TOKEN: "0123456789abcde" })[0]).toMatch(/^SHIM_ADMIN_TOKEN: is 15 characters long; expected at least 16 /);
  });

  it("LOG_LEVEL is read in any case (LOG_LEVEL=DEBUG is debug)", () => {
    expect(parse({ LOG_LEVEL: "DEBUG" }).logLevel).toBe("debug");
  });

  it("a variable of spaces alone is unset: its default, or for SHIM_UPSTREAM_URL, required", () => {
    expect(parse({ SHIM_HOST: "  ", SHIM_DATABASE_URL: " " })).toMatchObject({ host: "0.0.0.0", databaseUrl: "sqlite:./data/shim.db" });
    // The numbers too: an env file's `SHIM_PORT=  ` is the default port, not a refused start.
    expect(parse({ SHIM_PORT: "  ", SHIM_UPSTREAM_TIMEOUT_MS: "\t", SHIM_MAX_BODY_BYTES: " " })).toMatchObject({ port: 8080, upstreamTimeoutMs: 120_000 });
    expect(problems({ SHIM_UPSTREAM_URL: "  " })).toEqual([expect.stringMatching(/^SHIM_UPSTREAM_URL: is required;/)]);
  });

  it("an upstream URL with a fragment is refused, as one with a query (the requests' paths would be lost after the #)", () => {
    expect(problems({ SHIM_UPSTREAM_URL: "http://litellm:4000/v1#x" })).toEqual([expect.stringMatching(/^SHIM_UPSTREAM_URL: .* is not valid; expected an http\(s\) URL without query/)]);
  });

  it("every trailing slash of the upstream URL is dropped", () => {
    expect(parse({ SHIM_UPSTREAM_URL: "http://litellm:4000/v1//" }).upstreamUrl).toBe("http://litellm:4000/v1");
  });

  it("a bootstrap key without a tier gets defaultTier's; two bootstrap keys with one id are refused", () => {
    const key = (id: string, tier = "") => `  - { id: ${id}, hash: "${HASH}", credits: 1${tier} }\n`;
    expect(parse({}, `defaultTier: developer\nbootstrapKeys:\n${key("AbC123xyz789")}`).bootstrapKeys[0]!.tier).toBe("developer");
    expect(problems({}, `bootstrapKeys:\n${key("AbC123xyz789")}${key("AbC123xyz789", ", tier: pro")}`)).toEqual([
      'SHIM_CONFIG bootstrapKeys[1].id: "AbC123xyz789" is not valid; expected an id not used by another bootstrap key',
    ]);
  });
});

describe("a postgres:// SHIM_DATABASE_URL the driver cannot read", () => {
  it("is a configuration error naming SHIM_DATABASE_URL, the password hidden, not a store failure at start", () => {
    // A port past 65535: the driver's URL parser throws "Invalid URL".
    expect(problems({ SHIM_DATABASE_URL: "postgres://shim:pw@db:99999/shim" })).toEqual([
      expect.stringMatching(/^SHIM_DATABASE_URL: "postgres:\/\/shim:\*\*\*@db:99999\/shim" is not valid: .*port/),
    ]);
    // An unencoded "?" in the password makes the rest a query: no URL the driver reads.
    expect(problems({ SHIM_DATABASE_URL: "postgres://app:s3cr?t@host/db" })).toEqual([expect.stringMatching(/^SHIM_DATABASE_URL: "postgres:\/\/app:\*\*\*@host\/db" is not valid: .*percent-encode/)]);
    // Found by review: one that starts the password cut the user info short, and the driver
    // took the user name for the host (getaddrinfo ENOTFOUND shim, a store failure at start);
    // a base64 password starts with "/" one time in 64.
    // So one after digits, which the driver read as the port (a review of the fix found them).
    for (const password of ["/s3cret", "?s3cret", "#s3cret", "1234/s3cret", "8?s3cret", "2024#Winter", "8?s3cret==", "65535#s3cret"]) {
      const found = problems({ SHIM_DATABASE_URL: `postgres://shim:${password}@db.internal:5432/ledger` });
      expect(found, password).toEqual([expect.stringMatching(/^SHIM_DATABASE_URL: .* is not valid: .*percent-encode/)]);
      expect(found[0], password).not.toMatch(/s3cret|Winter/);
    }
    // Found by review: an `@` and a `/` unencoded in the password (`K9x@Lmq7Zr2/Wt5`) passed, and
    // the driver connected to host `Lmq7Zr2` (ENOTFOUND Lmq7Zr2 in the log: a part of the
    // password). An `@` in the path, after the authority, is refused whatever comes before it.
    for (const url of ["postgres://shim:K9x@Lmq7Zr2/Wt5@db.internal:5432/shim", "postgres://shim:K9x@Lmq7Zr2/Wt5@db.internal/shim?sslmode=require", "postgres://db.internal/shim@x"]) {
      const found = problems({ SHIM_DATABASE_URL: url });
      expect(found, url).toEqual([expect.stringMatching(/^SHIM_DATABASE_URL: .* is not valid: .*percent-encode/)]);
      expect(found[0], url).not.toMatch(/K9x|Lmq7Zr2|Wt5/);
    }
    // A user name in the query may hold an `@`: no user info was cut there.
    for (const url of ["postgres://db.internal:5432/ledger?user=me@corp", "postgres://db.internal:/ledger?user=me@corp", "postgres://db.internal:5432/ledger?application_name=a&user=me@corp"]) {
      expect(parse({ SHIM_DATABASE_URL: url }).databaseUrl).toBe(url);
    }
    // verify-ca checks the server's certificate against a CA it must be given (the driver refuses it).
    expect(problems({ SHIM_DATABASE_URL: "postgres://shim:pw@db/shim?sslmode=verify-ca" })).toEqual([
      expect.stringMatching(/^SHIM_DATABASE_URL: "postgres:\/\/shim:\*\*\*@db\/shim\?sslmode=verify-ca" is not valid: .*sslrootcert/),
    ]);
    for (const p of problems({ SHIM_DATABASE_URL: "postgres://shim:hunter2@db:99999/shim?sslmode=verify-ca" })) expect(p).not.toContain("hunter2");
    // What the driver does read is accepted, libpq's host-less form included.
    for (const url of ["postgres://shim:pw@db:5432/shim?sslmode=require", "postgresql://db/shim", "postgres://u:pw@/shim?host=/run/postgresql", "postgres://u:p%3Fw@[::1]:5432/shim?sslmode=verify-full"]) {
      expect(parse({ SHIM_DATABASE_URL: url }).databaseUrl).toBe(url);
    }
  });
});

describe("a postgres:// SHIM_DATABASE_URL with what the driver does not do as libpq does, or what would replace the store's own bounds", () => {
  it("is a configuration error naming the parameter and what to do instead, the password hidden", () => {
    const refused: [string, RegExp][] = [
      // libpq's failover list: the driver resolved "db1,db2" as one name (ENOTFOUND for ever), or,
      // with ports, called it an invalid URL and pointed at the port.
      ["postgres://shim:s3cret@db1,db2/shim", /a list of hosts \(db1,db2\).*one host/],
      ["postgres://shim:s3cret@db1:5432,db2:5432/shim", /a list of hosts \(db1:5432,db2:5432\).*one host/],
      ["postgres://shim:s3cret@/shim?host=db1,db2", /a list of hosts \(db1,db2\)/],
      ["postgres://shim:s3cret@db/shim?port=5432,5433", /a list of ports \(5432,5433\)/],
      // Ignored by the driver: it connects to the host named, a standby included.
      ["postgres://shim:s3cret@db/shim?target_session_attrs=read-write", /target_session_attrs is libpq's: the driver ignores it.*primary/],
      ["postgres://shim:s3cret@db/shim?load_balance_hosts=random", /load_balance_hosts is libpq's: the driver ignores it/],
      // The driver demands a verified TLS connection for it, where libpq tries without TLS first.
      ["postgres://shim:s3cret@db/shim?sslmode=allow", /sslmode=allow .*verify-full.*sslmode=disable/],
      // The driver cannot decrypt a client key with it (bad decrypt at every connection).
      ["postgres://shim:s3cret@db/shim?sslmode=require&sslcert=/c.pem&sslkey=/k.pem&sslpassword=k3yPass", /sslpassword .*without a passphrase/],
      ["postgres://shim:s3cret@db/shim?sslmode=verify-full&sslrootcert=system", /sslrootcert=system .*CA bundle's path/],
      // Sent as session settings after the store's own, which they replaced (0: no bound at all).
      ["postgres://shim:s3cret@db/shim?statement_timeout=0", /statement_timeout is the store's own/],
      ["postgres://shim:s3cret@db/shim?idle_in_transaction_session_timeout=0", /idle_in_transaction_session_timeout is the store's own/],
      ["postgres://shim:s3cret@db/shim?lock_timeout=0", /lock_timeout is the store's own/],
      ["postgres://shim:s3cret@db/shim?query_timeout=0", /query_timeout is the store's own/],
      ["postgres://shim:s3cret@db/shim?synchronous_commit=on", /synchronous_commit is the store's own/],
      ["postgres://shim:s3cret@db/shim?statement%5Ftimeout=0", /statement_timeout is the store's own/],
      // Sent at the start: a replication session, which takes no prepared statements (every start failed, restarted for ever).
      ["postgres://shim:s3cret@db/shim?replication=database", /replication asks for a replication connection.*leave it out/],
      ["postgres://shim:s3cret@db/shim?replication=true", /replication asks for a replication connection/],
    ];
    // Found by review: a comma and a `?` unencoded in the password (`Tr0ub4dor,3?x`) end the
    // authority before the user info's `@`: what is read as a list of hosts may be the user info,
    // and is not quoted (it was: "a list of hosts (shim:Tr0ub4dor,3)").
    for (const url of ["postgres://shim:Tr0ub4dor,3?x@db.internal:5432/shim", "postgres://shim:Tr0ub4dor,3#x@db.internal/shim", "postgres://shim:Tr0ub4dor?host=a,b@db/shim"]) {
      const found = problems({ SHIM_DATABASE_URL: url });
      expect(found, url).toEqual([expect.stringMatching(/^SHIM_DATABASE_URL: .* is not valid: .*percent-encode any \?, \/, #, @ or : in the user name or password/)]);
      expect(found[0], url).not.toMatch(/Tr0ub4dor/);
    }
    for (const [url, why] of refused) {
      const found = problems({ SHIM_DATABASE_URL: url });
      expect(found, url).toEqual([expect.stringMatching(/^SHIM_DATABASE_URL: "postgres:\/\/shim:\*\*\*@[^"]*" is not valid: /)]);
      expect(found[0], url).toMatch(why);
      expect(found[0]).not.toMatch(/s3cret|k3yPass/);
    }
    // What the driver reads as libpq does stays accepted, an `options` setting included (the store's own come after it).
    for (const url of ["postgres://shim:pw@db:5432/shim?sslmode=disable&application_name=ops&client_encoding=UTF8", "postgres://shim@db/shim?options=-c%20statement_timeout%3D0", "postgres://shim@db/shim?sslnegotiation=postgres"]) {
      expect(parse({ SHIM_DATABASE_URL: url }).databaseUrl).toBe(url);
    }
  });
});

describe("PG* variables in the environment with a postgres:// SHIM_DATABASE_URL", () => {
  // Found by review: the driver (pg) takes what the URL leaves out from PGOPTIONS, PGSSLMODE,
  // PGPASSWORD…, past the checks made on the URL: PGOPTIONS="-c statement_timeout=0" undid the
  // store's bound, PGSSLMODE=no-verify turned certificate checks off without a word.
  const set = { PGOPTIONS: "-c statement_timeout=0", PGSSLMODE: "no-verify", PGPASSWORD: "hunter2-pg", PGREPLICATION: "database" };

  it("are refused at start, one line each, naming the variable (never its value) and saying to put it in the URL or unset it", () => {
    const found = problems({ SHIM_DATABASE_URL: "postgres://shim@db.internal:5432/shim", ...set });
    expect(found).toEqual([
      expect.stringMatching(/^PGOPTIONS: is set, .*SHIM_DATABASE_URL, which alone configures the store.*\?options=.*or unset PGOPTIONS/),
      expect.stringMatching(/^PGPASSWORD: is set, .*user:password@.*or unset PGPASSWORD/),
      expect.stringMatching(/^PGREPLICATION: is set, .*unset PGREPLICATION/),
      expect.stringMatching(/^PGSSLMODE: is set, .*\?sslmode=.*or unset PGSSLMODE/),
    ]);
    expect(found.join("\n")).not.toMatch(/hunter2|statement_timeout=0|no-verify/);
    // Every variable pg reads, whatever else is wrong: all problems at once.
    const all = problems({ SHIM_DATABASE_URL: "postgres://shim:pw@db:99999/shim", PGHOST: "h", PGPORT: "1", PGUSER: "u", PGDATABASE: "d", PGBINARY: "true",
      PGCLIENT_ENCODING: "LATIN1", PGSSLNEGOTIATION: "direct", PGAPPNAME: "a", PGCONNECT_TIMEOUT: "1", PGPASSFILE: "/p", PGPASS_NO_DEESCAPE: "1" });
    expect(all.map((p) => p.slice(0, p.indexOf(":")))).toEqual(["SHIM_DATABASE_URL", "PGAPPNAME", "PGBINARY", "PGCLIENT_ENCODING", "PGCONNECT_TIMEOUT", "PGDATABASE",
      "PGHOST", "PGPASSFILE", "PGPASS_NO_DEESCAPE", "PGPORT", "PGSSLNEGOTIATION", "PGUSER"]);
  });

  it("set but empty are not read by the driver and pass; so do PG* variables it never reads, and all of them with a SQLite database", () => {
    expect(parse({ SHIM_DATABASE_URL: "postgres://shim@db/shim", PGPASSWORD: "", PGSSLMODE: "", PGDATA: "/var/lib/postgresql", PGTZ: "UTC" }).databaseUrl).toBe("postgres://shim@db/shim");
    expect(parse({ SHIM_DATABASE_URL: "sqlite:./data/shim.db", ...set }).databaseUrl).toBe("sqlite:./data/shim.db");
    expect(parse(set).databaseUrl).toBe("sqlite:./data/shim.db");
  });
});

describe("checkRoomToStart (a SQLite store's volume, before the shim listens)", () => {
  const statfs = (bavail: number, bsize = 4096) => (dir: string) => (dir === "/data" ? { bavail, bsize } : (() => { throw new Error(`statfs of ${dir}`); })());
  it("refuses a volume with less than MIN_FREE_BYTES free, naming the file and the free bytes", () => {
    const err = (() => { try { checkRoomToStart("/data/shim.db", statfs(12)); } catch (e) { return e; } })();
    expect(err).toBeInstanceOf(VolumeFullError);
    // The exit line's err.code and hint, as a store's SQLITE_FULL gets them.
    expect((err as { code?: string }).code).toBe("SQLITE_FULL");
    expect(failureHint(err, "/data/shim.db")).toBe("the volume holding /data/shim.db is full: free space on it (df -h)");
    expect((err as Error).message).toBe(`the volume holding /data/shim.db has 49152 bytes free, less than the ${MIN_FREE_BYTES} (16 MiB) the shim needs to start: free space on it (df -h); until then the shim would take requests it cannot record`);
    expect((err as Error).message).not.toContain("\n");
  });
  it("lets a start with enough room (bavail counts: the blocks an unprivileged user, uid 1000 in the image, may take) go on", () => {
    expect(() => checkRoomToStart("/data/shim.db", statfs(MIN_FREE_BYTES / 4096))).not.toThrow();
    expect(() => checkRoomToStart("/data/shim.db", statfs(MIN_FREE_BYTES / 512, 512))).not.toThrow();
    expect(() => checkRoomToStart("/data/shim.db", statfs(MIN_FREE_BYTES / 4096 - 1))).toThrow(VolumeFullError);
  });
});

describe("watchRoom (a SQLite store's volume, while the shim serves)", () => {
  it("checks the volume at each tick, off the request path, and says once, in words for a shim that was serving (not the start check's \"needs to start\"), when it has filled up", async () => {
    let bavail = MIN_FREE_BYTES / 4096;
    const asked: string[] = [];
    const stat = (dir: string, cb: (err: Error | null, stats: { bavail: number; bsize: number }) => void) => {
      asked.push(dir);
      setImmediate(() => cb(null, { bavail, bsize: 4096 }));
    };
    const full: VolumeFullError[] = [];
    const stop = watchRoom("/data/shim.db", 10, () => ({ walBytes: 0, at: 0 }), { full: (e) => full.push(e) }, stat);
    try {
      // Two ticks at least (polled: a loaded machine runs 10 ms timers late, and a fixed 60 ms wait saw one).
      await expect.poll(() => asked.length, { timeout: 5000, interval: 10 }).toBeGreaterThanOrEqual(2);
      expect(new Set(asked)).toEqual(new Set(["/data"]));
      expect(full).toEqual([]); // exactly 16 MiB is enough, as at start
      bavail = 3;
      await expect.poll(() => full.length, { timeout: 2000, interval: 10 }).toBe(1);
      expect(full[0]).toBeInstanceOf(VolumeFullError);
      expect(full[0]!.message).toBe(`the volume holding /data/shim.db has 12288 bytes free, less than the ${MIN_FREE_BYTES} (16 MiB) the shim needs to go on serving, so it fails closed and exits (and is refused a restart until there is room): free space on it (df -h); serving on, it would take requests it cannot record`);
      const after = asked.length;
      await new Promise((r) => setTimeout(r, 60));
      expect(asked.length).toBe(after); // once: the store has failed closed, the process restarts
      expect(full).toHaveLength(1);
    } finally {
      stop();
    }
  });

  it("counts the store's own WAL as room as far as it is reused (the next start finds it free once close() removed it), asked for off the request path after the statfs; no WAL counts nothing", async () => {
    const free = MIN_FREE_BYTES - 1024 * 1024; // the WAL has grown into the space over 16 MiB
    let wal: number | null = 1024 * 1024;
    const asked: string[] = [];
    const statWal = (path: string, cb: (err: Error | null, stats: { size: number }) => void) => {
      asked.push(path);
      setImmediate(() => (wal === null ? cb(Object.assign(new Error("ENOENT"), { code: "ENOENT" }), { size: 0 }) : cb(null, { size: wal })));
    };
    const full: VolumeFullError[] = [];
    const stop = watchRoom("/data/shim.db", 10, () => ({ walBytes: 0, at: performance.now() }), { full: (e) => full.push(e) }, (_dir, cb) => setImmediate(() => cb(null, { bavail: free / 4096, bsize: 4096 })), statWal);
    try {
      // Two ticks at least (polled: a loaded machine runs 10 ms timers late, and a fixed 60 ms wait saw one).
      await expect.poll(() => asked.length, { timeout: 5000, interval: 10 }).toBeGreaterThanOrEqual(2);
      expect(new Set(asked)).toEqual(new Set(["/data/shim.db-wal"]));
      expect(full).toEqual([]); // free + WAL = 16 MiB
      wal = 1024 * 1024 - 1;
      await expect.poll(() => full.length, { timeout: 2000, interval: 10 }).toBe(1);
      expect(full[0]!.message).toBe(`the volume holding /data/shim.db has ${free} bytes free (and ${1024 * 1024 - 1} in the store's own WAL, which it reuses), less than the ${MIN_FREE_BYTES} (16 MiB) the shim needs to go on serving, so it fails closed and exits (and is refused a restart until there is room): free space on it (df -h); serving on, it would take requests it cannot record`);
    } finally {
      stop();
    }
    wal = null;
    const none: VolumeFullError[] = [];
    const stop2 = watchRoom("/data/shim.db", 10, () => ({ walBytes: 0, at: performance.now() }), { full: (e) => none.push(e) }, (_dir, cb) => setImmediate(() => cb(null, { bavail: free / 4096, bsize: 4096 })), statWal);
    await expect.poll(() => none.length, { timeout: 2000, interval: 10 }).toBe(1);
    stop2();
    expect(none[0]!.message).toMatch(new RegExp(`has ${free} bytes free, less than`));
  });

  it("counts all of the WAL while checkpoints copy it whole, and once they stop, only what it had at the last that did (at most 16 MiB): what it grew past that (a read snapshot held, or failing checkpoints) is taken from the volume", async () => {
    const at = (walBytes: number, ago: number) => ({ walBytes, at: 1000 - ago });
    expect(reusableWal(3 << 20, at(1 << 20, 10), 1000, 10)).toBe(3 << 20); // one completed an interval ago: the next resets it
    expect(reusableWal(3 << 20, at(1 << 20, 20), 1000, 10)).toBe(3 << 20);
    expect(reusableWal(3 << 20, at(1 << 20, 21), 1000, 10)).toBe(1 << 20); // none for over two intervals: grown past it
    expect(reusableWal(1 << 20, at(3 << 20, 50), 1000, 10)).toBe(1 << 20); // cut back since
    expect(reusableWal(20 << 20, at(20 << 20, 0), 1000, 10)).toBe(MIN_FREE_BYTES); // cut back to journal_size_limit when started over
    // Checkpoints stop copying the WAL whole; it grows by 2 MiB past its size at the last that did,
    // the free space shrinks by as much: free + WAL stays the same, yet the volume fills.
    let free = MIN_FREE_BYTES - (1 << 20);
    let wal = 1 << 20;
    let last = { walBytes: 1 << 20, at: performance.now() };
    const full: VolumeFullError[] = [];
    const refresh = setInterval(() => (last = { walBytes: wal, at: performance.now() }), 5);
    const stop = watchRoom("/data/shim.db", 5, () => last, { full: (e) => full.push(e) }, (_dir, cb) => setImmediate(() => cb(null, { bavail: free / 4096, bsize: 4096 })), (_p, cb) => setImmediate(() => cb(null, { size: wal })));
    try {
      await new Promise((r) => setTimeout(r, 40));
      expect(full).toEqual([]); // free + WAL = 16 MiB
      clearInterval(refresh);
      free -= 2 << 20;
      wal += 2 << 20;
      await expect.poll(() => full.length, { timeout: 2000, interval: 5 }).toBe(1);
      expect(full[0]!.message).toMatch(new RegExp(`has ${free} bytes free \\(and ${1 << 20} in the store's own WAL, which it reuses\\), less than`));
    } finally {
      clearInterval(refresh);
      stop();
    }
  });

  it("a statfs that fails says nothing about room, and one that has not answered is not asked again meanwhile", async () => {
    let calls = 0;
    const full: unknown[] = [];
    const failing = watchRoom("/data/shim.db", 5, () => ({ walBytes: 0, at: 0 }), { full: (e) => full.push(e) }, (_dir, cb) => (calls++, setImmediate(() => cb(new Error("ENOENT"), { bavail: 0, bsize: 4096 }))));
    await expect.poll(() => calls, { timeout: 5000, interval: 5 }).toBeGreaterThanOrEqual(2); // polled: timers run late under load
    failing();
    expect(full).toEqual([]);
    let hanging = 0;
    const stalled = watchRoom("/data/shim.db", 5, () => ({ walBytes: 0, at: 0 }), { full: (e) => full.push(e) }, () => void hanging++); // never answers
    await new Promise((r) => setTimeout(r, 50));
    stalled();
    expect(hanging).toBe(1);
  });
});

describe("openStore", () => {
  it("opens sqlite::memory: and rejects unknown schemes with the variable named and no password", async () => {
    const s = await openStore("sqlite::memory:");
    await s.ping();
    await s.close();
    await expect(openStore("mysql://u:hunter2@x/db")).rejects.toThrow(/^SHIM_DATABASE_URL: "mysql:\/\/u:\*\*\*@x\/db" is not valid; expected sqlite:<path>, sqlite::memory: or postgres:\/\/…$/);
    await expect(openStore("sqlite:")).rejects.toThrow(/needs a path/);
    expect(redactUrl("postgres://shim:p%40ss@db:5432/shim?sslmode=require&password=x")).toBe("postgres://shim:***@db:5432/shim?sslmode=require&password=***");
    // An unencoded "@" in the password: the driver takes the last one before the query.
    expect(redactUrl("postgres://shim:p@ss/w@rd9@db:5432/shim")).toBe("postgres://shim:***@db:5432/shim");
    expect(redactUrl("postgres://db:5432/shim?application_name=a@b")).toBe("postgres://db:5432/shim?application_name=a@b");
    expect(redactUrl("postgres://shim@db/shim")).toBe("postgres://shim@db/shim");
    // An unencoded "?" in the password is not the query's start.
    expect(redactUrl("postgres://app:s3cr?t@host/db")).toBe("postgres://app:***@host/db");
    expect(redactUrl("postgres://app:s3/cr?t@host/db?sslmode=require")).toBe("postgres://app:***@host/db?sslmode=require");
    expect(redactUrl("postgres://app:s3cr?x=1@host/db")).toBe("postgres://app:***@host/db");
    expect(redactUrl("postgres://app:pw@host/db?application_name=a@b")).toBe("postgres://app:***@host/db?application_name=a@b");
    // A "?" inside a query value is not the query's start: the host stays shown, and a URL without user info is left as it is.
    expect(redactUrl("postgres://app:pw@host/db?application_name=a?b@c")).toBe("postgres://app:***@host/db?application_name=a?b@c");
    expect(redactUrl("postgres://host:5432/db?application_name=a?b@c")).toBe("postgres://host:5432/db?application_name=a?b@c");
    expect(redactUrl("postgres://app:pw@[::1]:5432/db?application_name=a?b@c")).toBe("postgres://app:***@[::1]:5432/db?application_name=a?b@c");
    expect(redactUrl("postgres://[::1]:5432/db?application_name=a@b")).toBe("postgres://[::1]:5432/db?application_name=a@b");
    expect(redactUrl("postgres://u:pw@/shim?host=/run/postgresql&application_name=a?b@c")).toBe("postgres://u:***@/shim?host=/run/postgresql&application_name=a?b@c");
    // A password holding "?", "=" and "@" unencoded is hidden whole.
    expect(redactUrl("postgres://app:x?y=z@w@host/db")).toBe("postgres://app:***@host/db");
    expect(redactUrl("postgres://app:p/x?k=v@q@host/db")).toBe("postgres://app:***@host/db");
    expect(redactUrl("postgres://u:p?w@d@/shim?host=/run/postgresql")).toBe("postgres://u:***@/shim?host=/run/postgresql");
    // Passwords psql reads (libpq ends the user info at the first '@' before a '/'), though the
    // WHATWG parser takes `admin` for the host and the rest for a query.
    expect(redactUrl("postgres://admin:?s3cret@db.example.com:5432/app")).toBe("postgres://admin:***@db.example.com:5432/app");
    expect(redactUrl("postgres://admin:8412?aK9z@db.example.com/app?sslmode=require")).toBe("postgres://admin:***@db.example.com/app?sslmode=require");
    for (const password of ["?Tr0ub4dor", "1234?Tr0ub4dor", "pa?Tr0ub4dor", "12#Tr0ub4dor", "/Tr0ub4dor"]) {
      expect(redactUrl(`postgres://gs:${password}@db.internal:5432/shim`)).not.toContain("Tr0ub4dor");
    }
    // Query secrets by their decoded names: the key's passphrase, a percent-encoded `password`.
    expect(redactUrl("postgres://admin@db/app?sslkey=k.pem&sslpassword=k3yPass&sslmode=verify-full")).toBe("postgres://admin@db/app?sslkey=k.pem&sslpassword=***&sslmode=verify-full");
    expect(redactUrl("postgres://admin@db/app?pass%77ord=s3cret")).toBe("postgres://admin@db/app?pass%77ord=***");
    // libpq has no URL fragment: a '#' is part of the value.
    expect(redactUrl("postgres://shim@db:5432/shim?sslmode=require&password=s3c#ret")).toBe("postgres://shim@db:5432/shim?sslmode=require&password=***");
  });

  it("a SHIM_DATABASE_URL that is no URL is refused without its password", () => {
    for (const [url, shown] of [
      ["host=db user=app password=s3cret dbname=shim", '"host…" (44 characters)'],
      ["postgres:/app:s3cret@db/shim", '"post…" (28 characters)'],
      ["app:s3cret@db", '"app…" (13 characters)'],
    ] as const) {
      let message = "";
      try {
        parseDatabaseUrl(url);
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message).toBe(`SHIM_DATABASE_URL: ${shown} is not valid; expected sqlite:<path>, sqlite::memory: or postgres://…`);
      expect(message).not.toContain("s3cret");
      expect(redactUrl(url)).not.toContain("s3cret");
    }
    expect(redactUrl("sqlite:./data/sh:im.db")).toBe("sqlite:./data/sh:im.db");
  });

  it("hands the driver SHIM_DATABASE_URL with libpq's reading of sslmode and the URL's own options taken out", () => {
    expect(driverUrl("postgres://u:p%40w@db:5432/shim?sslmode=require&options=-c%20search_path%3Dx")).toEqual({
      connectionString: "postgres://u:p%40w@db:5432/shim?sslmode=require&uselibpqcompat=true", urlOptions: "-c search_path=x",
    });
    // libpq's host-less form (a Unix socket or a host given as a parameter) keeps its empty host.
    expect(driverUrl("postgres://u:pw@/shim?host=/run/postgresql&options=-c%20a%3Db")).toEqual({
      connectionString: "postgres://u:pw@/shim?host=%2Frun%2Fpostgresql&uselibpqcompat=true", urlOptions: "-c a=b",
    });
    expect(driverUrl("postgres:///shim?host=/run/postgresql").connectionString).toBe("postgres:///shim?host=%2Frun%2Fpostgresql&uselibpqcompat=true");
    expect(driverUrl("postgres://[::1]:5432/shim").connectionString).toBe("postgres://[::1]:5432/shim?uselibpqcompat=true");
    expect(driverUrl("postgres://db/shim?uselibpqcompat=false").connectionString).toBe("postgres://db/shim?uselibpqcompat=false");
    // "@/" elsewhere than in a host-less authority is left as it is; so is an empty user info.
    for (const [url, expected] of [
      ["postgres://db:5432/shim?user=u&password=p@/w", "postgres://db:5432/shim?user=u&password=p%40%2Fw&uselibpqcompat=true"],
      ["postgres://u:pw@db/shim?application_name=ops@/shim", "postgres://u:pw@db/shim?application_name=ops%40%2Fshim&uselibpqcompat=true"],
    ]) expect(driverUrl(url!).connectionString).toBe(expected);
    expect(driverUrl("postgres://@/shim").connectionString).toBe("postgres:///shim?uselibpqcompat=true");
  });

  it("claims a SQLite file for one store at a time, until that store closes", async () => {
    const url = `sqlite:${join(mkdtempSync(join(tmpdir(), "shim-owner-")), "shim.db")}`;
    const first = await openStore(url);
    await expect(openStore(url)).rejects.toBeInstanceOf(SqliteInUseError);
    await first.close();
    const again = await openStore(url);
    await again.ping();
    // Another spelling of the same file (a symlink) meets the same lock.
    const dir = url.slice("sqlite:".length, -"/shim.db".length);
    symlinkSync(join(dir, "shim.db"), join(dir, "link.db"));
    await expect(openStore(`sqlite:${join(dir, "link.db")}`)).rejects.toBeInstanceOf(SqliteInUseError);
    // While held, the lock leaves no journal file beside the database (a SIGKILL would leave it).
    expect(readdirSync(dir).filter((f) => f.includes("journal"))).toEqual([]);
    await again.close();
  });

  it("a postgres:// URL that cannot be reached is StoreUnavailableError within the connect timeout", async () => {
    const started = Date.now();
    await expect(openStore("postgres://shim:secret@127.0.0.1:1/shim")).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(Date.now() - started).toBeLessThan(5000);
  });
});
