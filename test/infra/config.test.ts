import { describe, expect, it } from "vitest";
import { validateConfig } from "../../infra/config.ts";
import { describeProblems } from "../../infra/config.ts";
import { formatProblem } from "../../infra/config/checks.ts";
import type { ConfigProblem, TenantConfig } from "../../infra/config.ts";
import { GPU_PLANS, regionsOffering } from "../../infra/catalog.ts";
import { Secret } from "../../infra/secret.ts";
import { renderEnvFile } from "../../infra/render/env-file.ts";
import { parseStackConfig } from "../../infra/stack-file.ts";

const base = { region: "us-ord", allowedCidrs: ["0.0.0.0/0"], adminCidrs: ["81.2.69.160/32"] };

function ok(raw: Record<string, unknown>, stack = "acme"): TenantConfig {
  const result = validateConfig(raw, { stack });
  if (!result.ok) throw new Error(`expected valid config, got:\n${describeProblems(result.problems, "test")}`);
  return result.config;
}

function problems(raw: Record<string, unknown>, stack = "acme"): string[] {
  const result = validateConfig(raw, { stack });
  if (result.ok) throw new Error("expected problems, config was accepted");
  return result.problems.map((p: ConfigProblem) => formatProblem(p, "gpu-sandbox"));
}

describe("validateConfig: good configs", () => {
  it("fills every default from a region alone", () => {
    const c = ok({ region: "us-ord" });
    expect(c.plan.id).toBe("g2-gpu-rtx4000a1-s");
    expect(c.image).toBe("linode/ubuntu24.04");
    expect(c.model).toEqual({
      id: "Qwen/Qwen2.5-7B-Instruct", servedName: "Qwen/Qwen2.5-7B-Instruct", aliases: [], maxModelLen: 8192,
      gpuMemoryUtilization: 0.9, extraArgs: [], tensorParallelSize: 1, pipelineParallelSize: 1,
    });
    expect(c.allowedCidrs).toEqual(["0.0.0.0/0", "::/0"]);
    expect(c.adminCidrs).toEqual([]);
    expect(c.tls).toEqual({ mode: "letsencrypt" });
    expect(c.tiers.developer).toEqual({ rpm: 100, tpm: 100_000, concurrency: null });
    expect(c.tiers.enterprise).toEqual({ rpm: null, tpm: null, concurrency: null });
    expect(c.pricing).toEqual({ request: 1, batchRequest: 2, models: {} });
    expect(c.volumeSizeGb).toBe(100);
    expect(c.ttlHours).toBeUndefined();
    expect(c.limits).toEqual({ requestsPerSecond: 10, burst: 20, connections: 100, maxBodyMb: 8 });
  });

  it("takes numbers written as strings, as `pulumi config set` stores them", () => {
    const c = ok({ ...base, ttlHours: "24", volumeSizeGb: " 200 ", model: { id: "a/b", maxModelLen: "4096", gpuMemoryUtilization: "0.85" }, keys: [{ name: "app", credits: "12.5" }] });
    expect(c.ttlHours).toBe(24);
    expect(c.volumeSizeGb).toBe(200);
    expect(c.model.maxModelLen).toBe(4096);
    expect(c.model.gpuMemoryUtilization).toBe(0.85);
    expect(c.keys[0]!.credits).toBe(12.5);
    expect(ok({ ...base, model: { id: "a/b", mediaPartTokens: "576" } }).model.mediaPartTokens).toBe(576);
    expect(ok({ ...base, model: { id: "a/b", mediaPartTokens: 0 } }).model.mediaPartTokens).toBe(0);
    expect(ok({ ...base, model: { id: "a/b", cacheIsolation: "key" } }).model.cacheIsolation).toBe("key");
    expect(ok({ ...base, model: { id: "a/b", cacheIsolation: "shared" } }).model.cacheIsolation).toBe("shared");
    expect(ok({ ...base, model: { id: "a/b" } }).model.cacheIsolation).toBeUndefined();
    // Decimal with a sign or a bare point, as Number() read them before non-decimal forms were refused.
    const signed = ok({ ...base, model: { id: "a/b", gpuMemoryUtilization: ".85" }, ttlHours: "+24", keys: [{ name: "app", credits: "12." }] });
    expect([signed.model.gpuMemoryUtilization, signed.ttlHours, signed.keys[0]!.credits]).toEqual([0.85, 24, 12]);
    // Real numbers are read as YAML wrote them, exponents included.
    expect(ok({ ...base, model: { id: "a/b", maxModelLen: 1e4 } }).model.maxModelLen).toBe(10_000);
  });

  // Found by review: `::ffff:81.2.69.1/128` (a dual-stack socket's view of an IPv4 client, as logs
  // and `ss` show it) was kept as IPv6: nginx's geo matched no IPv4 client with it (403), and as an
  // IPv6 entry it published 443 to every IPv6 address.
  it("reads an IPv4-mapped IPv6 CIDR as the IPv4 CIDR it means", () => {
    const c = ok({ ...base, allowedCidrs: ["::ffff:81.2.69.1/128", "::FFFF:198.51.100.0/120", "::ffff:0:0/96"], adminCidrs: ["::ffff:5102:45a0/128"] });
    expect(c.allowedCidrs).toEqual(["81.2.69.1/32", "198.51.100.0/24", "0.0.0.0/0"]);
    expect(c.adminCidrs).toEqual(["81.2.69.160/32"]);
    // A prefix shorter than 96 spans more than IPv4-mapped space: an IPv6 network, as written.
    expect(ok({ ...base, allowedCidrs: ["::ffff:0:0/95"], tls: { mode: "self-signed" } }).allowedCidrs).toEqual(["::fffe:0:0/95"]);
  });

  it("takes numbers in string lists, as YAML (`- 64`) and `pulumi config set --path … 64` store them", () => {
    // docs: a flag and its value go in two items, ["--max-num-seqs", "64"]; unquoted, the value is the number 64.
    const c = ok({ ...base, model: { id: "a/b", extraArgs: ["--max-num-seqs", 64, "--max-num-batched-tokens", 8192, "--seed", -1] }, tags: [2025, "team-a"] });
    expect(c.model.extraArgs).toEqual(["--max-num-seqs", "64", "--max-num-batched-tokens", "8192", "--seed", "-1"]);
    expect(c.tags).toEqual(["2025", "team-a"]);
  });

  // Found by review: `.` and `..` fell out of the Hugging Face check's URLs as path segments, so
  // `pulumi up` checked main and passed a revision vLLM cannot download.
  it("refuses --revision . and .. in model.extraArgs (no such revision exists; the Hub check would have checked main)", () => {
    for (const extraArgs of [["--revision", ".."], ["--revision=."], ["--rev", ".."]]) {
      expect(problems({ ...base, model: { id: "a/b", extraArgs } })).toEqual([
        `gpu-sandbox:model.extraArgs = ${JSON.stringify(extraArgs.at(-1)!.replace(/^--revision=/, ""))}: is no revision of a Hugging Face repository (\`--revision\` takes a branch, tag or commit, e.g. main)`,
      ]);
    }
    expect(ok({ ...base, model: { id: "a/b", extraArgs: ["--revision", "..", "--revision", "v1.0"] } }).model.extraArgs).toEqual(["--revision", "..", "--revision", "v1.0"]); // the last one counts
  });

  // Found by review: any finite number was taken as String(n), which is not what was written.
  it("refuses, with the quoted form, a number in a string list that is not kept as written: a fraction, an exponent, past 2^53, a leading 0", () => {
    const quote = (key: string, value: string, text: string) =>
      `gpu-sandbox:${key} = ${value}: is a number, which is not kept as written (1.10 is read as 1.1, 1e3 as 1000, digits past 2^53 change); quote it: "${text}"`;
    expect(problems({ ...base, model: { id: "a/b", extraArgs: ["--rope-scaling-factor", 0.5, "--x", 1e21, "--y", 2 ** 53] }, tags: [20.25] })).toEqual([
      quote("model.extraArgs[1]", "0.5", "0.5"), quote("model.extraArgs[3]", "1e+21", "1e+21"), quote("model.extraArgs[5]", "9007199254740992", "9007199254740992"), quote("tags[0]", "20.25", "20.25"),
    ]);
    // From the stack file, what was written is known: a leading 0 (octal to Pulumi's reader:
    // 0123456 is 42798 at pulumi up, 123456 to the yaml package), 1.10, 1e3, 0x1F, +12.
    const text = "config:\n  gpu-sandbox:region: us-ord\n  gpu-sandbox:adminCidrs: [81.2.69.160/32]\n" +
      "  gpu-sandbox:model:\n    id: Qwen/Qwen2.5-7B-Instruct\n    extraArgs: [--tokenizer-revision, 0123456, --code-revision, 1.10, --max-num-seqs, 64, --x, 1e3]\n" +
      "  gpu-sandbox:tags:\n    - 0x1F\n    - +12\n    - 2025\n";
    const fileConfig = parseStackConfig(text);
    const written = (raw: Record<string, unknown>) => {
      const r = validateConfig(raw, { stack: "acme", fileConfig });
      return r.ok ? [] : r.problems.map((p) => formatProblem(p, "gpu-sandbox"));
    };
    const asWritten = (key: string, value: string, text: string) =>
      `gpu-sandbox:${key} = ${value}: was written ${text}, which YAML reads as a number, not as those characters (a leading 0 is octal to Pulumi: 0123456 is 42798); quote it: "${text}"`;
    const expected = [
      asWritten("model.extraArgs[1]", "123456", "0123456"), asWritten("model.extraArgs[3]", "1.1", "1.10"), asWritten("model.extraArgs[7]", "1000", "1e3"),
      asWritten("tags[0]", "31", "0x1F"), asWritten("tags[1]", "12", "+12"),
    ];
    expect(written(fileConfig)).toEqual(expected);
    // pulumi up: Pulumi's own reading of the same file (Go yaml.v2: 0123456 is octal).
    const fromPulumi = { ...fileConfig, model: { id: "Qwen/Qwen2.5-7B-Instruct", extraArgs: ["--tokenizer-revision", 42798, "--code-revision", 1.1, "--max-num-seqs", 64, "--x", 1000] }, tags: [31, 12, 2025] };
    expect(written(fromPulumi)).toEqual(expected.map((line) => line.replace("= 123456:", "= 42798:")));
    // Quoted, they are strings, taken as written.
    const quoted = parseStackConfig(text.replace("0123456", '"0123456"').replace("1.10", '"1.10"').replace("1e3", '"1e3"').replace("0x1F", '"0x1F"').replace("+12", '"+12"'));
    const c = validateConfig(quoted, { stack: "acme", fileConfig: quoted });
    expect(c.ok && [c.config.model.extraArgs, c.config.tags]).toEqual([["--tokenizer-revision", "0123456", "--code-revision", "1.10", "--max-num-seqs", "64", "--x", "1e3"], ["0x1F", "+12", "2025"]]);
  });

  // Found by review: a number setting read only as its value. Pulumi's reader (Go yaml.v2,
  // strconv.ParseInt base 0) takes 0100 inside a map as octal 64, the yaml package as 100.
  it("refuses a number setting written in the stack file with a leading 0 or 0x/0o/0b, whichever reader read it", () => {
    const text = "config:\n  gpu-sandbox:region: us-ord\n  gpu-sandbox:adminCidrs: [81.2.69.160/32]\n  gpu-sandbox:volumeSizeGb: 0100\n" +
      "  gpu-sandbox:model:\n    id: a/b\n    maxModelLen: 4e3\n    gpuMemoryUtilization: 0.90\n" +
      "  gpu-sandbox:keys:\n    - {name: app, credits: 0100}\n    - {name: b, credits: 0.5}\n" +
      "  gpu-sandbox:tiers:\n    team: {rpm: 0x10, tpm: 0o20, concurrency: +4}\n  gpu-sandbox:limits:\n    connections: 0100\n    burst: 0\n" +
      "  gpu-sandbox:pricing:\n    request: 00\n";
    const fileConfig = parseStackConfig(text);
    const got = (raw: Record<string, unknown>) => {
      const r = validateConfig(raw, { stack: "acme", fileConfig });
      return r.ok ? [] : r.problems.map((p) => formatProblem(p, "gpu-sandbox"));
    };
    const form = (key: string, value: string, written: string) =>
      `gpu-sandbox:${key} = ${value}: was written ${written}, which is not plain decimal (inside a map a leading 0 is octal to Pulumi's reader: 0100 is 64 at \`pulumi up\`, 100 at \`npm run render\`; ` +
      "0x, 0o and 0b are refused as they are in quotes); write it in plain decimal digits, e.g. 100 or 0.5";
    const expected = [
      form("tiers.team.rpm", "16", "0x10"), form("tiers.team.tpm", "16", "0o20"),
      form("pricing.request", "0", "00"), form("keys[0].credits", "100", "0100"), form("limits.connections", "100", "0100"),
    ];
    expect(got(fileConfig)).toEqual(expected);
    // pulumi up: Pulumi's reading of the same file (octal inside a map; a top-level scalar as its
    // text, "0100", read as 100 like the yaml package: taken by both).
    const fromPulumi = { ...fileConfig, volumeSizeGb: "0100", keys: [{ name: "app", credits: 64 }, { name: "b", credits: 0.5 }], limits: { connections: 64, burst: 0 } };
    expect(got(fromPulumi)).toEqual(expected.map((line) => line.replace(/(credits|connections) = 100:/, "$1 = 64:")));
    // At the top level the text is what counts: 0x10 and 1e3 (numbers to the yaml package, refused
    // as text by `pulumi up`) are refused by both, with why.
    const top = parseStackConfig("config:\n  gpu-sandbox:region: us-ord\n  gpu-sandbox:adminCidrs: [81.2.69.160/32]\n  gpu-sandbox:ttlHours: 1e1\n  gpu-sandbox:volumeSizeGb: 0x64\n");
    const topGot = validateConfig(top, { stack: "acme", fileConfig: top });
    const topForm = (key: string, value: string, written: string) =>
      `gpu-sandbox:${key} = ${value}: was written ${written}, which is not plain decimal (a top-level setting reaches \`pulumi up\` as its text, which is read in decimal digits only ` +
      "(0x, 0o, 0b and exponents are refused, as in quotes)); write it in plain decimal digits, e.g. 100 or 0.5";
    expect(topGot.ok ? [] : topGot.problems.map((p) => formatProblem(p, "gpu-sandbox"))).toEqual([topForm("volumeSizeGb", "100", "0x64"), topForm("ttlHours", "10", "1e1")]);
    // Plain decimal is taken as it always was: 100, 0, 0.9 (0.90, +4 and 1. read the same in every reader).
    const plain = parseStackConfig(text.replaceAll("0100", "100").replace("4e3", "4000").replace("0x10", "16").replace("0o20", "1.").replace("request: 00", "request: 0"));
    const c = validateConfig(plain, { stack: "acme", fileConfig: plain });
    if (!c.ok) throw new Error(describeProblems(c.problems, "test"));
    expect([c.config.keys[0]!.credits, c.config.limits.connections, c.config.model.gpuMemoryUtilization, c.config.tiers.team, c.config.pricing.request])
      .toEqual([100, 100, 0.9, { rpm: 16, tpm: 1, concurrency: 4 }, 0]);
  });

  // Found by review: Pulumi rewrites the whole stack file at any `pulumi config set`, and writes a
  // map's floats with Go's FormatFloat(f, 'g', -1, 64): an exponent below 1e-4 and from 1e6 up.
  it("takes the numbers Pulumi itself writes with an exponent (5e-05, 1.0000005e+06), which every reader reads alike", () => {
    const text = "config:\n  gpu-sandbox:region: us-ord\n  gpu-sandbox:adminCidrs: [81.2.69.160/32]\n  gpu-sandbox:model:\n    id: Qwen/Qwen2.5-7B-Instruct\n    servedName: qwen\n    maxModelLen: 4e3\n" +
      "  gpu-sandbox:pricing:\n    models:\n      qwen:\n        promptPer1k: 5e-05\n        completionPer1k: 0.0001\n  gpu-sandbox:keys:\n    - name: big\n      credits: 1.0000005e+06\n";
    const fileConfig = parseStackConfig(text);
    const r = validateConfig(fileConfig, { stack: "acme", fileConfig });
    if (!r.ok) throw new Error(describeProblems(r.problems, "test"));
    expect([r.config.pricing.models.qwen?.promptPer1k, r.config.keys[0]!.credits, r.config.model.maxModelLen]).toEqual([0.00005, 1_000_000.5, 4000]);
  });

  it("takes a model's cachedPromptPer1k, from 0 up to its promptPer1k, and leaves it out where it is not set", () => {
    const c = ok({ ...base, model: { id: "a/b", servedName: "m" }, pricing: { models: { m: { promptPer1k: 1, completionPer1k: 2, cachedPromptPer1k: 0.1 } } } });
    expect(c.pricing.models.m).toEqual({ promptPer1k: 1, completionPer1k: 2, cachedPromptPer1k: 0.1 });
    expect(ok({ ...base, model: { id: "a/b", servedName: "m" }, pricing: { models: { m: { promptPer1k: 1, cachedPromptPer1k: 0 } } } }).pricing.models.m?.cachedPromptPer1k).toBe(0);
    expect(ok({ ...base, model: { id: "a/b", servedName: "m" }, pricing: { models: { m: { promptPer1k: 1, cachedPromptPer1k: "1" } } } }).pricing.models.m?.cachedPromptPer1k).toBe(1);
    expect(ok({ ...base, model: { id: "a/b", servedName: "m" }, pricing: { models: { m: { promptPer1k: 1 } } } }).pricing.models.m).toEqual({ promptPer1k: 1, completionPer1k: 0 });
  });

  it("takes a tier limit of \"null\", which `pulumi config set --path 'gpu-sandbox:tiers.team.rpm' null` stores, as unlimited", () => {
    const c = ok({ ...base, tiers: { team: { rpm: "null", tpm: 1000, concurrency: "null" }, free: { tpm: "null" } } });
    expect(c.tiers.team).toEqual({ rpm: null, tpm: 1000, concurrency: null });
    expect(c.tiers.free).toEqual({ rpm: 10, tpm: null, concurrency: null });
  });

  it("sets tensor and pipeline parallelism from the plan's GPU count, using every GPU", () => {
    const layout = (plan: string, region = "us-east") => {
      const { tensorParallelSize, pipelineParallelSize } = ok({ ...base, region, plan }).model;
      return [tensorParallelSize, pipelineParallelSize];
    };
    expect(layout("g2-gpu-rtx4000a4-m", "us-ord")).toEqual([4, 1]);
    expect(layout("g1-gpu-rtx6000-2")).toEqual([2, 1]);
    // Tensor parallel 3 divides almost no model's attention heads (28 for Qwen2.5-7B, 32 for Llama).
    expect(layout("g1-gpu-rtx6000-3")).toEqual([1, 3]);
    for (const plan of GPU_PLANS) {
      const [tp, pp] = layout(plan.id, regionsOffering(plan)[0]);
      expect(tp! * pp!, plan.id).toBe(plan.gpuCount);
      expect(Math.log2(tp!) % 1, `${plan.id}: tensor parallel ${tp} is a power of two`).toBe(0);
    }
  });

  it("accepts a full config: keys, tiers, prices, providers, tls", () => {
    const c = ok({
      ...base,
      model: { id: "mistralai/Mistral-7B-Instruct-v0.3", servedName: "mistral-7b", extraArgs: ["--enable-prefix-caching"] },
      hfToken: "hf_abc",
      tls: { mode: "self-signed" },
      allowedCidrs: ["198.51.100.0/24", "2001:DB8::/32"],
      tiers: { team: { rpm: 50, tpm: 50_000, concurrency: 8 }, free: { rpm: 20 } },
      keys: [{ name: "app", credits: 1000, tier: "team", models: ["mistral-7b"] }, { name: "ci", credits: 0.5 }],
      pricing: { request: 0.5, models: { "mistral-7b": { promptPer1k: 0.01, completionPer1k: 0.03 } } },
      providers: [
        { name: "llama-70b", model: "groq/llama-3.3-70b-versatile", apiKey: Secret.encrypted() },
        { name: "gemini-pro", model: "gemini/gemini-2.5-pro", apiKey: Secret.encrypted(), maxOutputTokens: "65536", maxModelLen: "1048576", mediaPartTokens: "258" },
      ],
      ttlHours: 8,
      tags: ["workshop"],
    });
    expect(c.model.servedName).toBe("mistral-7b");
    expect(c.hfToken?.reveal()).toBe("hf_abc");
    expect(c.allowedCidrs).toEqual(["198.51.100.0/24", "2001:db8::/32"]);
    expect(c.tiers.team).toEqual({ rpm: 50, tpm: 50_000, concurrency: 8 });
    expect(c.tiers.free).toEqual({ rpm: 20, tpm: 10_000, concurrency: null });
    expect(c.keys).toEqual([
      { name: "app", credits: 1000, tier: "team", models: ["mistral-7b"] },
      { name: "ci", credits: 0.5, tier: "free", models: [] },
    ]);
    expect(c.pricing.request).toBe(0.5);
    expect(c.pricing.batchRequest).toBe(2);
    expect(c.providers[0]).toMatchObject({ name: "llama-70b", provider: "groq" });
    expect(c.providers[0]!.maxOutputTokens).toBeUndefined();
    expect(c.providers[0]!.maxModelLen).toBeUndefined();
    expect(c.providers[1]).toMatchObject({ name: "gemini-pro", provider: "gemini", maxOutputTokens: 65_536, maxModelLen: 1_048_576, mediaPartTokens: 258 });
    expect(c.providers[0]!.mediaPartTokens).toBeUndefined();
    expect(c.model.mediaPartTokens).toBeUndefined();
  });

  it("takes an internal name for a self-signed certificate, and any address a mode without Let's Encrypt ignores", () => {
    // Only Let's Encrypt needs a public name: a self-signed certificate names the host as clients know it.
    expect(ok({ ...base, tls: { mode: "self-signed", domain: "GPU.corp.local" } }).tls).toEqual({ mode: "self-signed", domain: "gpu.corp.local" });
    expect(ok({ ...base, tls: { mode: "self-signed", domain: "llm.acme.internal", email: "josé@acme.internal" } }).tls.email).toBe("josé@acme.internal");
    expect(ok({ ...base, tls: { mode: "off", domain: "llm.home.arpa", email: "ops@acme.lan" } }).tls.domain).toBe("llm.home.arpa");
    // Public names are taken, whatever a label holds (only the last ones are reserved).
    const c = ok({ ...base, tls: { domain: "local.internal-tools.acme.io", email: "first.last+llm@mail.xn--bcher-kva.de" } });
    expect(c.tls).toEqual({ mode: "letsencrypt", domain: "local.internal-tools.acme.io", email: "first.last+llm@mail.xn--bcher-kva.de" });
    // An international TLD in its xn-- form, as the message asks for it (.рф, .онлайн, .中国):
    // delegated TLDs, for which Let's Encrypt issues. Found by review: the last label had to be letters.
    for (const [domain, email] of [["llm.xn--80aswg.xn--p1ai", "ops@xn--80aswg.xn--p1ai"], ["xn--fiqs8s-test.xn--fiqs8s", "ops@shop.xn--80asehdb"]]) {
      expect(ok({ ...base, tls: { mode: "letsencrypt", domain, email } }).tls).toEqual({ mode: "letsencrypt", domain, email });
    }
  });

  it("takes a vLLM flag's value with spaces, as its own item or after =", () => {
    // An item after a flag without "=" may be its value: argparse takes an item starting with "-"
    // and holding a space as a value, never as a flag.
    const args = ["--chat-template", "{{ messages }}", "--override-generation-config={\"top_k\": 20}", "--chat-template", "-{{ messages }} x"];
    expect(ok({ ...base, model: { id: "a/b", extraArgs: args } }).model.extraArgs).toEqual(args);
  });

  it("returns a frozen object whose secrets never print", () => {
    const c = ok({ ...base, hfToken: "hf_very_secret" });
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.model)).toBe(true);
    expect(JSON.stringify(c)).not.toContain("hf_very_secret");
    expect(String(c.hfToken)).toBe("[secret]");
  });
});

describe("validateConfig: firewall rules Linode would refuse", () => {
  const nets = (n: number, second = 0) => Array.from({ length: n }, (_, i) => `20.${second}.${i}.0/24`);
  const problems = (raw: Record<string, unknown>) => {
    const r = validateConfig({ ...base, tls: { mode: "self-signed" }, ...raw }, { stack: "acme" });
    return r.ok ? [] : r.problems.map((x) => `${x.key} ${JSON.stringify(x.value)}: ${x.message}`);
  };
  it("refuses a rule of more than 255 addresses, which Linode refuses only at pulumi up (the firewall keeping its old rules); 255 is taken", () => {
    expect(problems({ allowedCidrs: nets(255), adminCidrs: ["20.0.7.9/32"] })).toEqual([]); // the admin address within them
    expect(problems({ allowedCidrs: [...nets(255), "2001:db8::/32"], adminCidrs: ["20.0.7.9/32"] })).toEqual([
      'allowedCidrs "256 entries": makes Linode firewall rules of 256 addresses; a rule takes at most 255: list wider ranges',
    ]);
  });
  it("counts the adminCidrs entries the API's port takes too, and SSH's rule of adminCidrs alone", () => {
    expect(problems({ allowedCidrs: nets(250), adminCidrs: nets(6, 1) })).toEqual([
      'allowedCidrs "250 entries": makes Linode firewall rules of 256 addresses; a rule takes at most 255: list wider ranges (with the adminCidrs entries it does not cover, for /admin)',
    ]);
    expect(problems({ allowedCidrs: ["0.0.0.0/0"], adminCidrs: nets(256, 1) })).toEqual([
      'adminCidrs "256 entries": makes Linode firewall rules of 256 addresses; a rule takes at most 255: list wider ranges (SSH\'s)',
    ]);
    expect(problems({ allowedCidrs: ["0.0.0.0/0"], adminCidrs: nets(255, 1) })).toEqual([]); // SSH's rule of 255: Linode takes it
  });
});

describe("validateConfig: bad configs name the key, the value and what is allowed", () => {
  const cases: [string, Record<string, unknown>, string[], string?][] = [
    ["missing region", {}, ['gpu-sandbox:region = (not set): is required']],
    ["unknown region", { region: "mars-1" }, ['gpu-sandbox:region = "mars-1": is not a Linode region; regions with GPU plans: ap-south, ap-west,']],
    ["not a GPU plan", { ...base, plan: "g6-standard-2" }, ['gpu-sandbox:plan = "g6-standard-2": is not a Linode GPU plan; GPU plans: g2-gpu-rtx4000a1-s,']],
    // Found by review: Linode's access-gated Blackwell plans exist; "not a GPU plan" was false.
    ["a GPU plan the kit does not list", { ...base, region: "us-sea", plan: "g3-gpu-rtxpro6000-blackwell-1" },
      ['gpu-sandbox:plan = "g3-gpu-rtxpro6000-blackwell-1": is not in the kit\'s catalog (infra/catalog.ts): Linode may offer it (its Blackwell RTX PRO 6000 plans are access-gated and not listed yet), but the kit deploys only the plans it lists, whose GPUs, prices and regions it checks; GPU plans: g2-gpu-rtx4000a1-s,']],
    ["plan not offered in region", { ...base, region: "us-east" },
      ['gpu-sandbox:plan = "g2-gpu-rtx4000a1-s": is not offered in region us-east; regions with NVIDIA RTX 4000 Ada: us-ord, us-sea,']],
    ["region without GPUs", { ...base, region: "br-gru" }, ['gpu-sandbox:plan = "g2-gpu-rtx4000a1-s": is not offered in region br-gru']],
    ["bad CIDR", { ...base, allowedCidrs: ["0.0.0.0/0", "10.0.0.300/8", "1.2.3.4", "::ffff:1.2.3.4%eth0/128"] },
      ['gpu-sandbox:allowedCidrs[1] = "10.0.0.300/8": is not a CIDR', 'gpu-sandbox:allowedCidrs[2] = "1.2.3.4": is not a CIDR',
        'gpu-sandbox:allowedCidrs[3] = "::ffff:1.2.3.4%eth0/128": is not a CIDR']], // a zone id names an interface, not a network
    ["CIDR list given as a string", { ...base, adminCidrs: "203.0.113.7/32" }, ['gpu-sandbox:adminCidrs = "203.0.113.7/32": must be a list']],
    ["stack name breaks label rules", { ...base }, ['gpu-sandbox:(stack name) = "Acme_Corp": must be 3-24 characters'], "Acme_Corp"],
    ["stack name too long", { ...base }, ['gpu-sandbox:(stack name) = "a-very-long-tenant-name-indeed": must be 3-24'], "a-very-long-tenant-name-indeed"],
    // 25 characters: gs-<tenant>-data would be 33, past Linode's 32-character volume label.
    ["stack name one character too long", { ...base }, ['gpu-sandbox:(stack name) = "abcdefghijklmnopqrstuvwxy": must be 3-24'], "abcdefghijklmnopqrstuvwxy"],
    // Linode labels refuse consecutive hyphens.
    ["stack name with a double hyphen", { ...base }, ['gpu-sandbox:(stack name) = "acme--corp": must be 3-24'], "acme--corp"],
    ["a provider named as the vLLM model", { ...base, model: { id: "a/b", servedName: "qwen" }, providers: [{ name: "qwen", model: "groq/llama-3.3-70b-versatile", apiKey: "gsk_x" }] },
      ['gpu-sandbox:providers[0].name = "qwen": is already the name of another model']],
    ["an IPv4 prefix past 32", { ...base, allowedCidrs: ["0.0.0.0/0", "81.2.69.0/33"] }, ['gpu-sandbox:allowedCidrs[1] = "81.2.69.0/33": is not a CIDR']],
    ["connections past nginx's per-address cap", { ...base, limits: { connections: 4097 } }, ["gpu-sandbox:limits.connections = 4097: must be between 1 and 4096"]],
    ["negative credits", { ...base, keys: [{ name: "app", credits: -5 }] }, ["gpu-sandbox:keys[0].credits = -5: must not be negative"]],
    ["too many decimals", { ...base, keys: [{ name: "app", credits: 0.0000001 }] }, ["gpu-sandbox:keys[0].credits = 1e-7: must have at most 6 decimal places"]],
    ["unknown tier", { ...base, keys: [{ name: "app", credits: 1, tier: "gold" }] },
      ['gpu-sandbox:keys[0].tier = "gold": is not a tier; tiers: free, developer, pro, enterprise']],
    // Names an object has from Object.prototype are not tiers: the shim (a Map) would refuse the rendered config.
    ...["constructor", "toString", "valueOf", "hasOwnProperty", "__proto__"].map((tier): [string, Record<string, unknown>, string[]] =>
      [`a tier named ${tier}, as Object.prototype has`, { ...base, keys: [{ name: "app", credits: 1, tier }] },
        [`gpu-sandbox:keys[0].tier = "${tier}": is not a tier; tiers: free, developer, pro, enterprise`]]),
    ["duplicate key names", { ...base, keys: [{ name: "app", credits: 1 }, { name: "app", credits: 2 }] },
      ['gpu-sandbox:keys[1].name = "app": is used by another key']],
    ["key for an unserved model", { ...base, keys: [{ name: "app", credits: 1, models: ["gpt-4"] }] },
      ['gpu-sandbox:keys[0].models[0] = "gpt-4": is not a served model; served models: Qwen/Qwen2.5-7B-Instruct']],
    // An empty allow-list is refused, as the admin API and SHIM_CONFIG refuse it: rendered as no
    // list, it would let the key use every model, paid providers included.
    ["key with an empty models list", { ...base, keys: [{ name: "app", credits: 1, models: [] }] },
      ["gpu-sandbox:keys[0].models = []: must list at least one served model (served models: Qwen/Qwen2.5-7B-Instruct); leave it out for every model"]],
    ["ttl too long", { ...base, ttlHours: 10_000 }, ["gpu-sandbox:ttlHours = 10000: must be between 1 and 2160"]],
    ["ttl zero", { ...base, ttlHours: 0 }, ["gpu-sandbox:ttlHours = 0: must be between 1 and 2160"]],
    ["ttl fractional", { ...base, ttlHours: 1.5 }, ["gpu-sandbox:ttlHours = 1.5: must be a whole number"]],
    ["ttl not a number", { ...base, ttlHours: "tomorrow" }, ['gpu-sandbox:ttlHours = "tomorrow": must be a number']],
    // Number() reads these as 16, 16, 16 and 1000; the shim and the admin API refuse "0x10" credits.
    ["numbers not in decimal digits", { ...base, keys: [{ name: "app", credits: "0x10" }], volumeSizeGb: "0b10000000", ttlHours: "0o20", model: { maxModelLen: "1e3" } },
      ['gpu-sandbox:model.maxModelLen = "1e3": must be a number', 'gpu-sandbox:keys[0].credits = "0x10": must be a number',
        'gpu-sandbox:volumeSizeGb = "0b10000000": must be a number', 'gpu-sandbox:ttlHours = "0o20": must be a number']],
    ["letsencrypt behind an allow-list", { ...base, allowedCidrs: ["198.51.100.0/24"] },
      ['gpu-sandbox:tls.mode = "letsencrypt": needs port 80 open to everyone']],
    ["an image the host scripts do not support", { ...base, image: "linode/debian12" },
      ['gpu-sandbox:image = "linode/debian12": must be an Ubuntu LTS Linode image (linode/ubuntu22.04, linode/ubuntu24.04 or a later LTS), which the host scripts are written for']],
    ["an Ubuntu interim release (not LTS)", { ...base, image: "linode/ubuntu25.04" }, ['gpu-sandbox:image = "linode/ubuntu25.04": must be an Ubuntu LTS Linode image']],
    ["nobody allowed in", { ...base, allowedCidrs: [], tls: { mode: "self-signed" } },
      ['gpu-sandbox:allowedCidrs = "[]": is empty, so nothing could reach the endpoint; list the client addresses, or 0.0.0.0/0 and ::/0 for everyone']],
    ["adminCidrs with no IPv4 address", { ...base, adminCidrs: ["2a01:4f8::/48"] },
      ['gpu-sandbox:adminCidrs = "2a01:4f8::/48": needs an IPv4 address: pulumi up deploys over SSH to the host\'s IPv4 address, and /admin is reached over IPv4 only']],
    ["unknown TLS mode", { ...base, tls: { mode: "acme" } }, ['gpu-sandbox:tls.mode = "acme": must be one of: letsencrypt, self-signed, off']],
    ["an email Let's Encrypt refuses", { ...base, tls: { mode: "letsencrypt", email: "ops@example.com" } },
      ['gpu-sandbox:tls.email = "ops@example.com": is at a reserved or private domain (example.com), which Let\'s Encrypt refuses: it takes only an address at a public domain; use a real address or leave tls.email out']],
    // Let's Encrypt (Boulder) refuses a contact not under a public suffix, a non-ASCII one, and one
    // net/mail cannot parse (certbot sends "mailto:" + the value): certbot-renew.sh then failed
    // every 15 minutes forever, and every client got a certificate error.
    ...["ops@acme.internal", "admin@corp.local", "ops@acme.lan", "ops@x.home.arpa"].map((email): [string, Record<string, unknown>, string[]] =>
      [`tls.email ${email}, at a private domain`, { ...base, tls: { email } },
        [`gpu-sandbox:tls.email = "${email}": is at a reserved or private domain (.${email.split(".").slice(-1)[0]}), which Let's Encrypt refuses: it takes only an address at a public domain`]]),
    ...["josé@acme.io", "ops@bücher.de", "mailto:ops@acme.io", "\"ops\"@acme.io", "ops(x)@acme.io", "ops@[81.2.69.160]"].map((email): [string, Record<string, unknown>, string[]] =>
      [`tls.email ${email}, which Let's Encrypt cannot parse`, { ...base, tls: { mode: "letsencrypt", email } },
        [`gpu-sandbox:tls.email = ${JSON.stringify(email)}: is not an address Let's Encrypt accepts: it must be plain ASCII (an international domain in its xn-- form), at a DNS name, ` +
          'with none of : < > ( ) , ; " [ ] \\ before the @ (no "mailto:"), e.g. ops@your-company.com; or leave tls.email out']]),
    // The last label is letters, or an international one in its xn-- form: never digits (an IP address) nor a bare "xn--".
    ...["81.2.69.160", "llm.acme.123", "llm.acme.xn--", "llm.xn--p1ai."].map((domain): [string, Record<string, unknown>, string[]] =>
      [`tls.domain ${domain}, not a DNS name`, { ...base, tls: { mode: "self-signed", domain } },
        [`gpu-sandbox:tls.domain = "${domain}": must be a DNS name such as llm.example.com`]]),
    // "Cannot issue for …: Domain name does not end with a valid public suffix (TLD)".
    ...["llm.acme.internal", "gpu.corp.local", "llm.home.arpa", "llm.example.com"].map((domain): [string, Record<string, unknown>, string[]] =>
      [`tls.domain ${domain} with letsencrypt`, { ...base, tls: { domain } },
        [`gpu-sandbox:tls.domain = "${domain}": is under a reserved or private domain (${domain.endsWith("example.com") ? "example.com" : `.${domain.split(".").slice(-1)[0]}`}), ` +
          "for which Let's Encrypt does not issue certificates; use a public DNS name, or tls.mode self-signed for an internal one"]]),
    ["reserved vLLM flag", { ...base, model: { id: "a/b", extraArgs: ["--port=9000", "--port 9000", "--api-key"] } },
      ['gpu-sandbox:model.extraArgs[0] = "--port=9000": is set by the kit', 'gpu-sandbox:model.extraArgs[2] = "--api-key": is set by the kit',
        'gpu-sandbox:model.extraArgs[1] = "--port 9000": is set by the kit']],
    // As vLLM's parser reads them: underscores for dashes, the short -tp, an abbreviation.
    ["reserved vLLM flag, spelt otherwise", { ...base, model: { id: "a/b", extraArgs: ["--api_key=x", "--served_model_name", "-tp", "--max-model=4096", "--enable_prefix_caching"] } },
      ['gpu-sandbox:model.extraArgs[0] = "--api_key=x": is set by the kit; use nothing: the kit generates', 'gpu-sandbox:model.extraArgs[1] = "--served_model_name": is set by the kit; use model.servedName',
        'gpu-sandbox:model.extraArgs[2] = "-tp": is set by the kit; use the plan', 'gpu-sandbox:model.extraArgs[3] = "--max-model=4096": is set by the kit; use model.maxModelLen']],
    // The pipeline size comes from the plan like the tensor size: together they must use every GPU.
    // Found by review: the token sat in clear in the stack file, compose.yaml and vLLM's log; the message does not repeat it.
    ["the Hugging Face token as a vLLM flag", { ...base, model: { id: "a/b", extraArgs: ["--hf-token", "hf_abcdefghijklmnopqrstuvwxyz0123", "--hf_token=hf_abcdefghijklmnopqrstuvwxyz0123", "--hf-tok hf_abcdefghijklmnopqrstuvwxyz0123"] } },
      ['gpu-sandbox:model.extraArgs[0] = "--hf-token": is set by the kit; use hfToken (printenv HF_TOKEN | pulumi config set --secret --path \'gpu-sandbox:hfToken\')',
        'gpu-sandbox:model.extraArgs[2] = "--hf_token <value not shown>": is set by the kit; use hfToken (printenv HF_TOKEN | pulumi config set --secret --path \'gpu-sandbox:hfToken\')',
        'gpu-sandbox:model.extraArgs[3] = "--hf-tok <value not shown>": is set by the kit; use hfToken (printenv HF_TOKEN | pulumi config set --secret --path \'gpu-sandbox:hfToken\')']],
    ["reserved vLLM flag: pipeline parallelism", { ...base, model: { id: "a/b", extraArgs: ["--pipeline-parallel-size=2", "-pp", "--pipeline_parallel_size", "--pipeline-par"] } },
      ['gpu-sandbox:model.extraArgs[0] = "--pipeline-parallel-size=2": is set by the kit; use the plan', 'gpu-sandbox:model.extraArgs[1] = "-pp": is set by the kit; use the plan',
        'gpu-sandbox:model.extraArgs[2] = "--pipeline_parallel_size": is set by the kit; use the plan', 'gpu-sandbox:model.extraArgs[3] = "--pipeline-par": is set by the kit; use the plan']],
    // One argv element (compose's exec form): argparse reads a token with a space before any "=" as a
    // positional, and vLLM exits "unrecognized arguments" while pulumi up waits with the GPU billing.
    ["a vLLM flag and its value in one item", { ...base, model: { id: "a/b", extraArgs: ["--max-num-seqs 64", "-q\tawq", "--enable-prefix-caching"] } },
      ['gpu-sandbox:model.extraArgs[0] = "--max-num-seqs 64": is one argument to vLLM, which does not split a flag from its value at a space and would exit; write ["--max-num-seqs", "64"] or "--max-num-seqs=64"',
        'gpu-sandbox:model.extraArgs[1] = "-q\\tawq": is one argument to vLLM, which does not split a flag from its value at a space and would exit; write ["-q", "awq"] or "-q=awq"']],
    // Right after a flag too: argparse takes an item as a value only when it is none of its flags.
    ["a vLLM flag and its value in one item, after a flag", { ...base, model: { id: "a/b", extraArgs: ["--enable-prefix-caching", "--max-num-seqs 64"] } },
      ['gpu-sandbox:model.extraArgs[1] = "--max-num-seqs 64": is one argument to vLLM, which does not split a flag from its value at a space and would exit; write ["--max-num-seqs", "64"] or "--max-num-seqs=64"']],
    // A YAML block scalar leaves a newline: an empty argument or `--enforce-eager=` would make vLLM exit too.
    ["a vLLM flag with whitespace after it", { ...base, model: { id: "a/b", extraArgs: ["--enforce-eager ", "--enable-prefix-caching\n"] } },
      ['gpu-sandbox:model.extraArgs[0] = "--enforce-eager ": is one argument to vLLM, whitespace included, and vLLM would exit; remove the trailing whitespace: "--enforce-eager"',
        'gpu-sandbox:model.extraArgs[1] = "--enable-prefix-caching\\n": is one argument to vLLM, whitespace included, and vLLM would exit; remove the trailing whitespace: "--enable-prefix-caching"']],
    // vLLM gets `--served-model-name <name>`: argparse reads "-q" or "--help" as a flag and exits.
    ...["--qwen", "-q", ".qwen"].map((servedName): [string, Record<string, unknown>, string[]] => [`served name ${servedName}`, { ...base, model: { id: "a/b", servedName } },
      [`gpu-sandbox:model.servedName = "${servedName}": must be 1-128 characters of letters, digits and . _ - / :, starting with a letter, digit or _`]]),
    ["bad model id", { ...base, model: { id: "not a repo" } }, ['gpu-sandbox:model.id = "not a repo": must be a Hugging Face repository id']],
    ["model id of three parts", { ...base, model: { id: "org/name/extra" } }, ['gpu-sandbox:model.id = "org/name/extra": must be a Hugging Face repository id']],
    // The Hub's own rule (huggingface_hub's validate_repo_id): what it refuses, vLLM's download
    // would too, on the host; "org/.." even reached the Hub's check as another URL (/api/models/).
    ...["org/..", "org/.", "org/-name", "org/name-", "org/na..me", "org/na--me", "-org/name", "org/name.git", `org/${"n".repeat(97)}`].map((id): [string, Record<string, unknown>, string[]] =>
      [`model id ${id.slice(0, 20)}`, { ...base, model: { id } }, [`gpu-sandbox:model.id = "${id}": must be a Hugging Face repository id`]]),
    ["GPU memory out of range", { ...base, model: { gpuMemoryUtilization: 1.5 } }, ["gpu-sandbox:model.gpuMemoryUtilization = 1.5: must be between 0.1 and 0.99"]],
    ["typo in a key", { ...base, ttlHour: 5 }, ['gpu-sandbox:ttlHour: is not a gpu-sandbox setting; known: region, plan,']],
    ["typo in a nested key", { ...base, model: { id: "a/b", maxLen: 4 } }, ["gpu-sandbox:model.maxLen: is not a known setting; known: id, servedName,"]],
    ["provider without key", { ...base, providers: [{ model: "groq/llama" }] }, ["gpu-sandbox:providers[0].apiKey = (not set): is required: printenv PROVIDER_API_KEY | pulumi config set --secret --path 'gpu-sandbox:providers[0].apiKey'"]],
    ["unknown provider", { ...base, providers: [{ model: "acme/x", apiKey: "k" }] }, ['gpu-sandbox:providers[0].model = "acme/x": must be <provider>/<model>']],
    ...[0, 1.5, "many"].map((maxOutputTokens): [string, Record<string, unknown>, string[]] => [`a provider's maxOutputTokens of ${JSON.stringify(maxOutputTokens)}`,
      { ...base, providers: [{ name: "g", model: "gemini/gemini-2.5-pro", apiKey: Secret.encrypted(), maxOutputTokens }] }, [`gpu-sandbox:providers[0].maxOutputTokens = ${JSON.stringify(maxOutputTokens)}: must be`]]),
    // A provider's context is bounded as model.maxModelLen is (256 to 1,048,576 tokens), and shown: it is no secret.
    ...[0, 255, 1_048_577, 1.5, "long"].map((maxModelLen): [string, Record<string, unknown>, string[]] => [`a provider's maxModelLen of ${JSON.stringify(maxModelLen)}`,
      { ...base, providers: [{ name: "g", model: "gemini/gemini-2.5-pro", apiKey: Secret.encrypted(), maxModelLen }] }, [`gpu-sandbox:providers[0].maxModelLen = ${JSON.stringify(maxModelLen)}: must be`]]),
    ...["groq/", "groq/ ", "groq/llama 3"].map((model): [string, Record<string, unknown>, string[]] => [`provider model ${JSON.stringify(model)}`,
      { ...base, providers: [{ name: "fast", model, apiKey: Secret.encrypted() }] }, [`gpu-sandbox:providers[0].model = ${JSON.stringify(model)}: must be <provider>/<model>`]]),
    ["price for an unserved model", { ...base, pricing: { models: { "gpt-4": { promptPer1k: 1 } } } },
      ['gpu-sandbox:pricing.models.gpt-4 = {"promptPer1k":1}: prices a model that is not served']],
    // A cached prompt token is priced as a prompt token is, and never above it: the hold reserves the prompt price.
    ...[-1, "cheap", 0.0000001].map((cachedPromptPer1k): [string, Record<string, unknown>, string[]] => [`a cachedPromptPer1k of ${JSON.stringify(cachedPromptPer1k)}`,
      { ...base, model: { id: "a/b", servedName: "m" }, pricing: { models: { m: { promptPer1k: 1, cachedPromptPer1k } } } }, [`gpu-sandbox:pricing.models.m.cachedPromptPer1k = ${JSON.stringify(cachedPromptPer1k)}: must`]]),
    ["a cachedPromptPer1k above promptPer1k", { ...base, model: { id: "a/b", servedName: "m" }, pricing: { models: { m: { promptPer1k: 0.1, cachedPromptPer1k: 0.2 } } } },
      ["gpu-sandbox:pricing.models.m.cachedPromptPer1k = 0.2: must not be more than promptPer1k (0.1)"]],
    ["a cachedPromptPer1k without promptPer1k (0)", { ...base, model: { id: "a/b", servedName: "m" }, pricing: { models: { m: { cachedPromptPer1k: 0.2 } } } },
      ["gpu-sandbox:pricing.models.m.cachedPromptPer1k = 0.2: must not be more than promptPer1k (0)"]],
    ["tier without limits", { ...base, tiers: { team: { rpm: 5 } } }, ['gpu-sandbox:tiers.team = {"rpm":5}: a new tier needs both rpm and tpm']],
    // Read as "unlimited" by whoever wrote it; it changed nothing (free stayed at 10 rpm).
    ["tier set to null", { ...base, tiers: { free: null } }, ["gpu-sandbox:tiers.free = null: must be a map of rpm, tpm and concurrency; for no limit, set each to null"]],
    // The fewest prompt tokens a media part is estimated at: 0 (no floor) up to a context's worth, shown (no secret).
    ...[-1, 1.5, 1_048_577, "many"].map((mediaPartTokens): [string, Record<string, unknown>, string[]] => [`a model's mediaPartTokens of ${JSON.stringify(mediaPartTokens)}`,
      { ...base, model: { id: "a/b", mediaPartTokens } }, [`gpu-sandbox:model.mediaPartTokens = ${JSON.stringify(mediaPartTokens)}: must be`]]),
    ...[-1, 1.5, 1_048_577, "many"].map((mediaPartTokens): [string, Record<string, unknown>, string[]] => [`a provider's mediaPartTokens of ${JSON.stringify(mediaPartTokens)}`,
      { ...base, providers: [{ name: "g", model: "gemini/gemini-2.5-pro", apiKey: Secret.encrypted(), mediaPartTokens }] }, [`gpu-sandbox:providers[0].mediaPartTokens = ${JSON.stringify(mediaPartTokens)}: must be`]]),
    // Whose prompts share vLLM's prefix cache: a typo is refused, never read as the default `shared`.
    ...["Key", "per-key", true].map((cacheIsolation): [string, Record<string, unknown>, string[]] => [`a model's cacheIsolation of ${JSON.stringify(cacheIsolation)}`,
      { ...base, model: { id: "a/b", cacheIsolation } }, [`gpu-sandbox:model.cacheIsolation = ${JSON.stringify(cacheIsolation)}: must be one of: shared, key`]]),
    ["a new tier set to null", { ...base, tiers: { gold: null } }, ["gpu-sandbox:tiers.gold = null: must be a map of rpm, tpm and concurrency; for no limit, set each to null"]],
    // What `pulumi config set --path 'gpu-sandbox:tiers.free' null` stores.
    ["a tier set to \"null\"", { ...base, tiers: { free: "null" } }, ['gpu-sandbox:tiers.free = "null": must be a map of rpm, tpm and concurrency; for no limit, set each to null']],
    ["a tier's concurrency below 1", { ...base, tiers: { free: { concurrency: 0 } } }, ["gpu-sandbox:tiers.free.concurrency = 0: must be"]],
    ["volume too small", { ...base, volumeSizeGb: 5 }, ["gpu-sandbox:volumeSizeGb = 5: must be between 10 and 10240"]],
    ["short tag", { ...base, tags: ["x"] }, ['gpu-sandbox:tags[0] = "x": Linode tags are 3-50 characters']],
    // Not "3-50 characters", which true and a map are not refused for.
    ["tags that are not strings", { ...base, tags: [true, { team: "a" }, 12] },
      ["gpu-sandbox:tags[0] = true: must be a string (a tag such as team-a)", 'gpu-sandbox:tags[1] = {"team":"a"}: must be a string (a tag such as team-a)',
        'gpu-sandbox:tags[2] = 12: Linode tags are 3-50 characters']],
    ["vLLM arguments that are neither strings nor numbers", { ...base, model: { id: "a/b", extraArgs: ["--max-num-seqs", Infinity, true, ""] } },
      ["gpu-sandbox:model.extraArgs[1] = Infinity: must be a non-empty string such as --enable-prefix-caching", "gpu-sandbox:model.extraArgs[2] = true: must be",
        'gpu-sandbox:model.extraArgs[3] = "": must be']],
    // The limit's own problem says it all: not also "needs both rpm and tpm", which it has.
    ["a new tier's limit that is not a number", { ...base, tiers: { team: { rpm: "lots", tpm: 1000 } } }, ['gpu-sandbox:tiers.team.rpm = "lots": must be a number in decimal digits']],
    ["a new tier's limit that is not a number, the other unset", { ...base, tiers: { team: { rpm: "lots" } } },
      ['gpu-sandbox:tiers.team.rpm = "lots": must be a number in decimal digits', 'gpu-sandbox:tiers.team = {"rpm":"lots"}: a new tier needs both rpm and tpm']],
    ["image without tag or digest", { ...base, images: { vllm: "vllm/vllm-openai" } }, ['gpu-sandbox:images.vllm = "vllm/vllm-openai": must be an image reference']],
  ];

  it.each(cases)("%s", (_name, raw, expected, stack) => {
    const got = problems(raw, stack ?? "acme");
    for (const line of expected) {
      expect(got.some((g) => g.startsWith(line)), `expected a problem starting with:\n  ${line}\ngot:\n  ${got.join("\n  ")}`).toBe(true);
    }
    expect(got).toHaveLength(expected.length);
  });

  it("takes real Hugging Face ids, a 96-character name included (the Hub's most)", () => {
    for (const id of ["Qwen/Qwen2.5-7B-Instruct", "meta-llama/Llama-3.1-8B-Instruct", "01-ai/Yi-1.5-9B-Chat", "TheBloke/Mistral-7B-Instruct-v0.2-AWQ", "_x/y_", `org/${"n".repeat(96)}`]) {
      expect(validateConfig({ ...base, model: { id } }, { stack: "acme" }).ok, id).toBe(true);
    }
  });

  it("reports every problem at once, not one per run", () => {
    const got = problems({ region: "mars-1", ttlHours: -1, keys: [{ name: "app", credits: -1, tier: "gold" }], adminCidrs: ["nope"] });
    expect(got).toHaveLength(5);
  });

  it("never prints a secret in a problem", () => {
    const got = problems({ region: "us-ord", hfToken: { token: "hf_leak_me" } });
    expect(got.join("\n")).toContain("gpu-sandbox:hfToken");
    expect(got.join("\n")).not.toContain("hf_leak_me");
  });

  it("never prints a provider's or the HF token's value, whatever shape it was given in", () => {
    // `--path 'gpu-sandbox:providers.apiKey'` (no [0]) makes providers an object holding the key.
    const got = problems({ ...base, hfToken: ["hf_SECRET_A"], providers: { apiKey: "gsk_SECRET_B" } });
    expect(got).toContainEqual(expect.stringMatching(/^gpu-sandbox:providers: must be a list/));
    const more = problems({ ...base, providers: ["gsk_SECRET_C", { name: "g", model: "groq/x", apiKey: { nested: "gsk_SECRET_D" } }] });
    expect([...got, ...more].join("\n")).not.toMatch(/SECRET/);
    // A provider's name and model are no secret: they are shown.
    expect(problems({ ...base, providers: [{ name: "g", model: "nope", apiKey: "k" }] }).join("\n")).toContain('"nope"');
  });

  it("refuses, naming the setting, a secret the host's .env cannot carry, before any resource is made, without printing it", () => {
    const got = problems({ region: "us-ord", adminCidrs: ["81.2.69.160/32"], hfToken: "hf_abc def",
      providers: [{ name: "g", model: "groq/llama", apiKey: "gsk_$ECRET#1" }, { name: "h", model: "groq/x", apiKey: "gsk_fine-key_2" }] });
    expect(got).toEqual([
      "gpu-sandbox:hfToken = \"[secret]\": has characters the host's .env cannot carry (a space, quote, $ or #, a line break…); it may hold only letters, digits and _ . : / @ + = , ~ -",
      "gpu-sandbox:providers[0].apiKey = \"[secret]\": has characters the host's .env cannot carry (a space, quote, $ or #, a line break…); it may hold only letters, digits and _ . : / @ + = , ~ -",
    ]);
    expect(got.join("\n")).not.toMatch(/abc def|ECRET/);
    // What the validator accepts, the .env render takes: the same rule.
    const c = ok({ ...base, hfToken: "hf_a.b:c/d@e+f=g,h~i-j", providers: [{ name: "g", model: "groq/llama", apiKey: Secret.of("sk-ant_AZ09") }] });
    expect(renderEnvFile([["HF_TOKEN", c.hfToken!.reveal()], ["GROQ_API_KEY_0", c.providers[0]!.apiKey.reveal()]])).toBe("HF_TOKEN=hf_a.b:c/d@e+f=g,h~i-j\nGROQ_API_KEY_0=sk-ant_AZ09\n");
    expect(ok({ ...base, hfToken: Secret.encrypted() }).hfToken?.readable).toBe(false);
  });

  // Found by review: `HF_TOKEN=hf_…` typed without export leaves printenv nothing to pipe, pulumi
  // stores "" (and exits 0), and the empty token was taken as none: a gated model then failed on
  // a GPU host that bills.
  it("refuses a secret set but empty, asking whether its variable was exported, and how to remove it", () => {
    const hf = "gpu-sandbox:hfToken = \"\": is set but empty, which is what `printenv HF_TOKEN | pulumi config set --secret --path 'gpu-sandbox:hfToken'` stores when HF_TOKEN was set without `export` " +
      "(printenv sees only exported variables): was it exported? `export HF_TOKEN=…`, then set it again; if no token is wanted, remove it: `pulumi config rm 'gpu-sandbox:hfToken'`";
    const provider = "gpu-sandbox:providers[0].apiKey = \"\": is set but empty, which is what `printenv PROVIDER_API_KEY | pulumi config set --secret --path 'gpu-sandbox:providers[0].apiKey'` stores when PROVIDER_API_KEY was set without `export` " +
      "(printenv sees only exported variables): was it exported? `export PROVIDER_API_KEY=…`, then set it again; if the provider is not wanted, remove it: `pulumi config rm --path 'gpu-sandbox:providers[0]'`";
    expect(problems({ ...base, model: { id: "meta-llama/Llama-3.1-8B-Instruct" }, hfToken: "" })).toEqual([hf]);
    expect(problems({ ...base, hfToken: Secret.of("") })).toEqual([hf]);
    // One problem for the provider: not also "is required".
    expect(problems({ ...base, providers: [{ name: "g", model: "groq/x", apiKey: "" }] })).toEqual([provider]);
    expect(problems({ ...base, providers: [{ name: "g", model: "groq/x", apiKey: Secret.of("") }] })).toEqual([provider]);
    // Written so in the stack file (plaintext, but empty): the same problem, not also "in plaintext".
    const inFile = validateConfig({ ...base, hfToken: "" }, { stack: "acme", fileConfig: { ...base, hfToken: "" } });
    expect(inFile.ok ? [] : inFile.problems.map((p) => formatProblem(p, "gpu-sandbox"))).toEqual([hf]);
    // Left out or null, it is no token, as before.
    expect(ok({ ...base, hfToken: null }).hfToken).toBeUndefined();
    expect(ok({ ...base }).hfToken).toBeUndefined();
  });

  it("gives a secret that is not a string the --path command that sets it (without --path, pulumi makes a setting named 'providers[0].apiKey')", () => {
    const got = problems({ ...base, hfToken: ["hf_x"], providers: [{ name: "g", model: "groq/x", apiKey: { nested: "gsk_x" } }] });
    expect(got).toEqual([
      "gpu-sandbox:hfToken = \"[secret]\": must be a string; set it with `printenv HF_TOKEN | pulumi config set --secret --path 'gpu-sandbox:hfToken'`",
      "gpu-sandbox:providers[0].apiKey = \"[secret]\": must be a string; set it with `printenv PROVIDER_API_KEY | pulumi config set --secret --path 'gpu-sandbox:providers[0].apiKey'`",
    ]);
  });

  it("never prints the value of a misspelt setting, which may be a secret Pulumi decrypted", () => {
    const got = problems({ ...base, hf_token: "hf_REALSECRET123", providers: [{ name: "g", model: "groq/llama", apiKey: "gsk_ok", apikey: "gsk_REALSECRET456" }] });
    expect(got).toContainEqual(expect.stringContaining("gpu-sandbox:hf_token: is not a gpu-sandbox setting"));
    expect(got).toContainEqual(expect.stringContaining("gpu-sandbox:providers[0].apikey: is not a known setting"));
    expect(got.join("\n")).not.toMatch(/REALSECRET/);
  });

  it("refuses a secret the stack file holds in plaintext, and accepts the same value stored encrypted", () => {
    const providers = [{ name: "groq", model: "groq/llama-3.1-8b-instant", apiKey: "gsk_in_the_file" }];
    // What Pulumi hands over is the same either way; only the stack file tells them apart.
    const values = { ...base, hfToken: "hf_in_the_file", providers };
    const plain = validateConfig(values, { stack: "acme", fileConfig: { ...base, hfToken: "hf_in_the_file", providers } });
    expect(plain.ok).toBe(false);
    const got = plain.ok ? [] : plain.problems.map((p) => formatProblem(p, "gpu-sandbox"));
    expect(got).toEqual([
      "gpu-sandbox:hfToken = \"[plaintext]\": is in plaintext in stacks/Pulumi.acme.yaml, which is committed; store it encrypted: printenv HF_TOKEN | pulumi config set --secret --path 'gpu-sandbox:hfToken' --stack acme",
      "gpu-sandbox:providers[0].apiKey = \"[plaintext]\": is in plaintext in stacks/Pulumi.acme.yaml, which is committed; store it encrypted: printenv PROVIDER_API_KEY | pulumi config set --secret --path 'gpu-sandbox:providers[0].apiKey' --stack acme",
    ]);
    const encrypted = { secure: "v1:AAAA" };
    const fileConfig = { ...base, hfToken: encrypted, providers: [{ ...providers[0], apiKey: encrypted }] };
    expect(validateConfig(values, { stack: "acme", fileConfig }).ok).toBe(true);
  });

  // Found by review: a setting that is not secret, stored with `pulumi config set --secret` (an
  // admin's home address, a contact email), was refused by render as a value of the wrong kind.
  it("says of a non-secret setting encrypted in the stack file that render cannot decrypt it, once, naming the key (not that it is of the wrong kind)", () => {
    const secure = "{secure: v1:AAAA}";
    const text = `config:\n  gpu-sandbox:region: ${secure}\n  gpu-sandbox:adminCidrs: [${secure}]\n  gpu-sandbox:tls: {mode: self-signed, email: ${secure}}\n` +
      `  gpu-sandbox:ttlHours: ${secure}\n  gpu-sandbox:tags: [${secure}]\n  gpu-sandbox:model: {id: a/b, extraArgs: [${secure}]}\n` +
      `  gpu-sandbox:keys: [{name: app, credits: ${secure}, models: [${secure}]}]\n  gpu-sandbox:hfToken: ${secure}\n` +
      `  gpu-sandbox:providers: [{model: groq/llama-3.1-8b-instant, apiKey: ${secure}}]\n`;
    const fileConfig = parseStackConfig(text);
    const r = validateConfig(fileConfig, { stack: "acme", fileConfig });
    const got = r.ok ? [] : r.problems.map((p) => formatProblem(p, "gpu-sandbox"));
    const encrypted = (key: string) =>
      `gpu-sandbox:${key} = "[encrypted]": is encrypted in the stack file (\`secure:\`), which \`npm run render\` and the operator scripts read without Pulumi ` +
      "(no Pulumi CLI, no passphrase), so they can neither decrypt nor check it; `pulumi up` decrypts and checks it. " +
      `To render the stack, store it in clear: \`pulumi config set --path 'gpu-sandbox:${key}' <value>\``;
    expect(got).toEqual(["region", "model.extraArgs[0]", "adminCidrs[0]", "tls.email", "keys[0].credits", "keys[0].models[0]", "ttlHours", "tags[0]"].map(encrypted));
    // The same settings as pulumi up hands them over, decrypted, are good; and the secrets that are secret stay accepted encrypted.
    const decrypted = { ...fileConfig, region: "us-ord", adminCidrs: ["81.2.69.161/32"], tls: { mode: "self-signed", email: "ops@my-company.io" }, ttlHours: "24",
      tags: ["team-a"], model: { id: "a/b", extraArgs: ["--enforce-eager"] }, keys: [{ name: "app", credits: 100, models: ["a/b"] }], hfToken: "hf_x", providers: [{ model: "groq/llama-3.1-8b-instant", apiKey: "gsk_x" }] };
    expect(validateConfig(decrypted, { stack: "acme", fileConfig }).ok).toBe(true);
    // A list with an encrypted entry cannot be judged whole: no false "is empty" or "letsencrypt
    // needs 0.0.0.0/0" beside the one problem that is true.
    const list = parseStackConfig(`config:\n  gpu-sandbox:region: us-ord\n  gpu-sandbox:adminCidrs: [81.2.69.160/32]\n  gpu-sandbox:allowedCidrs: [${secure}]\n`);
    const listed = validateConfig(list, { stack: "acme", fileConfig: list });
    expect(listed.ok ? [] : listed.problems.map((p) => formatProblem(p, "gpu-sandbox"))).toEqual([encrypted("allowedCidrs[0]")]);
  });

  it("refuses, for deploying, adminCidrs from which nobody can connect, and only when no entry lets anyone in", () => {
    const deployProblems = (adminCidrs: string[]) => {
      const result = validateConfig({ ...base, adminCidrs }, { stack: "acme" });
      if (!result.ok) throw new Error(describeProblems(result.problems, "test"));
      return result.deployProblems.map((p) => formatProblem(p, "gpu-sandbox"));
    };
    const got = deployProblems(["203.0.113.7/32", "81.2.69.160/32", "198.51.100.0/24", "192.0.2.1/32", "10.0.0.0/8", "172.16.4.4/32",
      "192.168.1.10/32", "127.0.0.1/32", "169.254.1.1/32", "100.64.1.1/32", "2001:db8::1/128", "fd00::1/128", "fe80::1/128", "::1/128"].filter((c) => c !== "81.2.69.160/32"));
    expect(got[0]).toBe('gpu-sandbox:adminCidrs[0] = "203.0.113.7/32": is a documentation address (RFC 5737 TEST-NET-3), which never reaches ' +
      "the host's public address: `pulumi up` would wait for SSH until its timeout (45 minutes) while the GPU host bills; " +
      "put your own public IPv4 address as a /32 instead (`curl -4s https://ifconfig.me` prints it)");
    expect(got.map((line) => /adminCidrs\[(\d+)\] = "[^"]+": is (.*?),/.exec(line)!.slice(1).join(" "))).toEqual([
      "0 a documentation address (RFC 5737 TEST-NET-3)", "1 a documentation address (RFC 5737 TEST-NET-2)",
      "2 a documentation address (RFC 5737 TEST-NET-1)", "3 a private address (RFC 1918)", "4 a private address (RFC 1918)",
      "5 a private address (RFC 1918)", "6 a loopback address", "7 a link-local address", "8 a carrier-grade NAT address (RFC 6598)",
      "9 a documentation address (RFC 3849)", "10 a private address (IPv6 unique local", "11 a link-local address", "12 a loopback address",
    ]);
    // Beside an IPv4 entry someone connects from, a private one is allowed; the plan and pulumi up warn about it.
    expect(deployProblems(["81.2.69.160/32", "10.89.0.1/32"])).toEqual([]);
    // pulumi up dials the host's IPv4 address: a public IPv6 entry does not make a private IPv4 one enough.
    expect(deployProblems(["10.0.0.5/32", "2a01:4f8::1/128"])).toEqual([expect.stringMatching(/^gpu-sandbox:adminCidrs\[0\] = "10\.0\.0\.5\/32": is a private address/)]);
    // 0.0.0.0/0 alone lets everyone in: not the "this network" 0.0.0.0/8, nor any range it holds. Nor is 172.20/16 public.
    expect(deployProblems(["0.0.0.0/0"])).toEqual([]);
    expect(deployProblems(["172.20.0.1/32"])).toEqual([expect.stringMatching(/^gpu-sandbox:adminCidrs\[0\] = "172\.20\.0\.1\/32": is a private address/)]);
    // Public addresses, and ranges wider than a private one (a /0 has its own warning), are fine.
    expect(deployProblems(["81.2.69.160/32", "0.0.0.0/0", "::/0", "192.0.0.0/8", "2a01:4f8::/32"])).toEqual([]);
    // With other problems they are listed with them, so one run shows everything to fix.
    expect(problems({ ...base, adminCidrs: ["203.0.113.7/32"], ttlHours: 0 })).toEqual([
      "gpu-sandbox:ttlHours = 0: must be between 1 and 2160", expect.stringMatching(/^gpu-sandbox:adminCidrs\[0\] = "203\.0\.113\.7\/32": is a documentation address/),
    ]);
  });

  it("says to use --path for a nested setting set without it, never showing the value", () => {
    // `pulumi config set gpu-sandbox:tls.mode self-signed` makes a top-level setting named "tls.mode".
    const got = problems({ ...base, "tls.mode": "self-signed", "adminCidrs[0]": "81.2.69.160/32", "providers[0].apiKey": "gsk_SECRET_E", "tsl.mode": "off" });
    expect(got).toEqual([
      "gpu-sandbox:tls.mode: is not a gpu-sandbox setting: `pulumi config set` without --path took \"tls.mode\" for one name. " +
        "Set tls's part with `pulumi config set --path 'gpu-sandbox:tls.mode' <value>`, then remove this one with " +
        "`pulumi config rm 'gpu-sandbox:tls.mode'` (its value is not shown: it may be a secret)",
      expect.stringContaining("`pulumi config set --path 'gpu-sandbox:adminCidrs[0]' <value>`"),
      expect.stringContaining("`printenv PROVIDER_API_KEY | pulumi config set --secret --path 'gpu-sandbox:providers[0].apiKey'`"),
      expect.stringMatching(/^gpu-sandbox:tsl\.mode: is not a gpu-sandbox setting; known: region, plan/),
    ]);
    expect(got.join("\n")).not.toMatch(/self-signed|81\.2\.69|SECRET/);
  });

  it("puts the [0] a list's item needs in the --path command for a list setting set without --path", () => {
    // `pulumi config set --secret gpu-sandbox:providers.apiKey sk-…`: with --path as typed it
    // would store providers as a map, refused next as "must be a list".
    const result = validateConfig({ region: "us-ord", adminCidrs: ["8.8.8.8/32"], "providers.apiKey": "sk-provider", "keys.credits": "5", "tags.team": "a" }, { stack: "acme" });
    expect(result.ok).toBe(false);
    const text = result.ok ? "" : describeProblems(result.problems, "test");
    expect(text).toContain("Set providers's part with `printenv PROVIDER_API_KEY | pulumi config set --secret --path 'gpu-sandbox:providers[0].apiKey'`, then remove this one with `pulumi config rm 'gpu-sandbox:providers.apiKey'`");
    expect(text).toContain("`pulumi config set --path 'gpu-sandbox:keys[0].credits' <value>`");
    expect(text).toContain("`pulumi config set --path 'gpu-sandbox:tags[0]' <value>`");
    expect(text).not.toContain("sk-provider");
  });

  it("shows how to replace a list setting stored as a map (--path without [0]) by its first item", () => {
    const got = problems({ ...base, providers: { apiKey: "gsk_SECRET_G" }, keys: { name: "app" }, adminCidrs: { home: "81.2.69.160/32" } });
    expect(got).toEqual([
      "gpu-sandbox:adminCidrs = {\"home\":\"81.2.69.160/32\"}: must be a list; --path without [0] stores a map. Remove it with " +
        "`pulumi config rm gpu-sandbox:adminCidrs`, then set the first item with `pulumi config set --path 'gpu-sandbox:adminCidrs[0]' <value>` (then [1], [2], …)",
      expect.stringContaining("Remove it with `pulumi config rm gpu-sandbox:providers`, then set the first item with `printenv PROVIDER_API_KEY | pulumi config set --secret --path 'gpu-sandbox:providers[0].apiKey'`"),
      expect.stringContaining("then set the first item with `pulumi config set --path 'gpu-sandbox:keys[0].name' <value>`"),
    ]);
    expect(got.join("\n")).not.toContain("SECRET");
  });

  it("shows the --path form for a list setting given one string, as `pulumi config set` without --path stores it", () => {
    expect(problems({ ...base, adminCidrs: "198.51.100.7/32", tags: "team-a", keys: "app" })).toEqual([
      'gpu-sandbox:adminCidrs = "198.51.100.7/32": must be a list; `pulumi config set` without --path stores one string. ' +
        "Set the first item with `pulumi config set --path 'gpu-sandbox:adminCidrs[0]' <value>` (then [1], [2], …)",
      expect.stringContaining("`pulumi config set --path 'gpu-sandbox:keys[0].name' <value>`"),
      expect.stringContaining("`pulumi config set --path 'gpu-sandbox:tags[0]' <value>`"),
    ]);
    // A secret list (providers holds API keys) is named without its value.
    const secret = problems({ ...base, providers: "gsk_SECRET_F" });
    expect(secret).toEqual([expect.stringContaining("gpu-sandbox:providers: must be a list; `pulumi config set` without --path stores one string")]);
    expect(secret[0]).toContain("--path 'gpu-sandbox:providers[0].model' <value>");
    expect(secret.join("\n")).not.toContain("SECRET");
  });

  it("shows the --path form for a map setting given one string: its main member, or each member", () => {
    // `pulumi config set gpu-sandbox:tls self-signed`, `… gpu-sandbox:model Qwen/…`, `… gpu-sandbox:limits 10`.
    expect(problems({ ...base, tls: "self-signed", model: "Qwen/Qwen2.5-7B-Instruct", limits: "10" })).toEqual([
      'gpu-sandbox:model = "Qwen/Qwen2.5-7B-Instruct": must be a map of keys to values; `pulumi config set` without --path stores one string. ' +
        "Set model.id with `pulumi config set --path 'gpu-sandbox:model.id' <value>`",
      'gpu-sandbox:tls = "self-signed": must be a map of keys to values; `pulumi config set` without --path stores one string. ' +
        "Set tls.mode with `pulumi config set --path 'gpu-sandbox:tls.mode' <value>`",
      'gpu-sandbox:limits = "10": must be a map of keys to values; `pulumi config set` without --path stores one string. ' +
        "Set each member with `pulumi config set --path 'gpu-sandbox:limits.<member>' <value>`, <member> one of requestsPerSecond, burst, connections, maxBodyMb, structuredOutputs",
    ]);
  });

  it("says what a key name must be when the one set is not allowed, and that it is required only when none is set", () => {
    const rule = "1-32 lowercase letters, digits, _ and -, starting with a letter or digit, e.g. app";
    expect(problems({ ...base, keys: [{ name: "Team-A", credits: 1 }, { credits: 2 }, { name: 7, credits: 3 }, { name: "-app", credits: 4 }] })).toEqual([
      `gpu-sandbox:keys[0].name = "Team-A": must be ${rule}`,
      `gpu-sandbox:keys[1].name = (not set): is required: ${rule}`,
      "gpu-sandbox:keys[2].name = 7: must be a string",
      `gpu-sandbox:keys[3].name = "-app": must be ${rule}`,
    ]);
  });

  it("explains where to fix the problems", () => {
    const result = validateConfig({}, { stack: "acme" });
    expect(result.ok).toBe(false);
    if (!result.ok) {
      expect(describeProblems(result.problems, "acme")).toMatch(/the stack config has 1 problem:\n {2}- gpu-sandbox:region/);
      expect(describeProblems(result.problems, "acme")).toContain("docs/configuration.md");
      expect(describeProblems(result.problems, "acme")).toContain("Fix them in stacks/Pulumi.acme.yaml or with `pulumi config set`");
    }
  });
});
