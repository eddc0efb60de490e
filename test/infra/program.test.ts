import { spawnSync } from "node:child_process";
import { BlockList } from "node:net";
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { isDeepStrictEqual } from "node:util";
import { gunzipSync } from "node:zlib";
import { parse } from "yaml";
import * as pulumi from "@pulumi/pulumi";
import { beforeAll, describe, expect, it, vi } from "vitest";
import { validateConfig, type TenantConfig } from "../../infra/config.ts";
import { Secret } from "../../infra/secret.ts";
import { listStackNames, readStackConfig } from "../../infra/stack-file.ts";
import { deployTenant, type TenantOutputs } from "../../infra/tenant.ts";
import { installMocks, isSecretInput, MOCK_HOST_KEY, MOCK_IP, plain, settle, valueOf, type RecordedResource } from "../support/pulumi-mocks.ts";
import { tempDir } from "../support/tools.ts";
import { encodeHostFiles } from "../../infra/render/cloud-init.ts";
import { unpackHostFiles } from "../support/host-files.ts";
import { renderNginxConf } from "../../infra/render/nginx.ts";

/**
 * SHA-256 of encodeHostFiles(SAMPLE_HOST_FILES) as fflate 0.8.3 writes it (Node's zlib gives
 * other bytes for this text, as for the real host files).
 */
const GOLDEN_HOST_FILES_SHA256 = "325f2b0369e5944b241f825d1baebde20ea02a08ece57f29cbb990114f0169c9";
const SAMPLE_HOST_FILES = [
  { path: "/usr/local/lib/sample/a.sh", mode: 0o755, content: Array.from({ length: 600 }, (_, i) => `# ${i}: ${"gpu sandbox ".repeat(i % 13)}${(i * 7919) % 1000}`).join("\n") },
  { path: "/etc/sample.conf", mode: 0o644, content: "key = value\n" },
];

const ROOT = new URL("../../", import.meta.url).pathname;

/** Encrypted values in a stack file become readable test secrets (only `pulumi up` can decrypt). */
function withTestSecrets(value: unknown, path = "secret"): unknown {
  if (value instanceof Secret) return value.readable ? value : Secret.of(`test-${path}`);
  if (Array.isArray(value)) return value.map((v, i) => withTestSecrets(v, `${path}-${i}`));
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, withTestSecrets(v, `${path}-${k}`)]));
  }
  return value;
}

function configFor(stack: string, overrides: Record<string, unknown> = {}): TenantConfig {
  const raw = { ...(withTestSecrets(readStackConfig(ROOT, stack)) as Record<string, unknown>), ...overrides };
  const result = validateConfig(raw, { stack });
  if (!result.ok) throw new Error(`stacks/Pulumi.${stack}.yaml does not validate: ${JSON.stringify(result.problems)}`);
  return result.config;
}

async function run(stack: string, config: TenantConfig) {
  const recorded = installMocks(stack);
  const stagingDir = tempDir();
  const outputs = deployTenant(config, { stagingDir });
  await settle();
  return { ...recorded, outputs, stagingDir };
}

/**
 * The config's warnings, `expected` in order, as the plan lists them (then shown as a "Warning"
 * line matching `shown`) and as `pulumi up` logs them (prefixed with the project's name).
 */
async function expectWarnings(config: TenantConfig, expected: readonly RegExp[], shown: RegExp, label?: string) {
  const { formatPlan, planFor } = await import("../../infra/plan.ts");
  expect(planFor(config).lines.filter(([l]) => l === "Warning").map(([, text]) => text), label).toEqual(expected.map((re) => expect.stringMatching(re)));
  if (expected.length) expect(formatPlan(planFor(config)), label).toMatch(shown);
  const warn = vi.spyOn(pulumi.log, "warn").mockImplementation(async () => {});
  try {
    await run("example", config);
    expect(warn.mock.calls.map(([text]) => text), label).toEqual(expected.map((re) => expect.stringMatching(new RegExp(`^gpu-sandbox:${re.source.slice(1)}`))));
  } finally {
    warn.mockRestore();
  }
}

const byType = (resources: readonly RecordedResource[], type: string) => resources.filter((r) => r.type === type);
const one = (resources: readonly RecordedResource[], type: string) => {
  const found = byType(resources, type);
  expect(found, `exactly one ${type}`).toHaveLength(1);
  return found[0]!;
};

const stacks = listStackNames(ROOT);

it("has at least the documented example stack", () => {
  expect(stacks).toContain("example");
});

describe.each(stacks)("stack %s under the mock runtime", (stack) => {
  let config: TenantConfig;
  let resources: RecordedResource[];
  let outputs: TenantOutputs;

  beforeAll(async () => {
    config = configFor(stack);
    ({ resources, outputs } = await run(stack, config));
  });

  it("opens nothing but 80/443 to allowedCidrs and 22 only to adminCidrs", () => {
    const fw = one(resources, "linode:index/firewall:Firewall");
    expect(fw.inputs.inboundPolicy).toBe("DROP");
    expect(fw.inputs.outboundPolicy).toBe("ACCEPT");
    const v4 = config.allowedCidrs.filter((c) => !c.includes(":"));
    const v6 = config.allowedCidrs.filter((c) => c.includes(":"));
    const web = (port: string) => ({
      label: port === "80" ? "allow-http" : "allow-https", action: "ACCEPT", protocol: "TCP", ports: port,
      ...(v4.length ? { ipv4s: v4 } : {}), ...(v6.length ? { ipv6s: v6 } : {}),
    });
    const expected: unknown[] = [web("80"), web("443")];
    if (config.adminCidrs.length > 0) {
      const a4 = config.adminCidrs.filter((c) => !c.includes(":"));
      const a6 = config.adminCidrs.filter((c) => c.includes(":"));
      expected.push({ label: "allow-ssh-admin", action: "ACCEPT", protocol: "TCP", ports: "22",
        ...(a4.length ? { ipv4s: a4 } : {}), ...(a6.length ? { ipv6s: a6 } : {}) });
    }
    expect(fw.inputs.inbounds).toEqual(expected);
  });

  it("creates the instance already attached to the firewall, and the volume attached to it", () => {
    const instance = one(resources, "linode:index/instance:Instance");
    expect(instance.inputs.firewallId).toBe(4242);
    expect(instance.inputs.region).toBe(config.region);
    expect(instance.inputs.type).toBe(config.plan.id);
    expect(instance.inputs.label).toBe(`gs-${stack}`);
    expect(instance.inputs.tags).toEqual(expect.arrayContaining(["gpu-sandbox", `tenant:${stack}`]));
    const volume = one(resources, "linode:index/volume:Volume");
    expect(volume.inputs.linodeId).toBe(12345);
    expect(volume.inputs.region).toBe(config.region);
    expect(volume.inputs.size).toBe(config.volumeSizeGb);
  });

  it("keeps the host's creation time in the state until the instance is gone", () => {
    // reap-expired reads a failed deploy's expiry from this record: a destroy that deleted it
    // first and then failed on the instance left a billing host it could no longer judge.
    // Its name is its URN: another name would be a new record, and a new createdAt.
    expect(resources.find((r) => r.name === `${stack}-created-at`)?.type).toBe("random:index/randomString:RandomString");
    const instance = one(resources, "linode:index/instance:Instance");
    expect(instance.dependencies).toContain(`urn:pulumi:${stack}::gpu-sandbox::gpu-sandbox:infra:GpuHost$random:index/randomString:RandomString::${stack}-created-at`);
  });

  it("gives the instance decodable cloud-init user data with no secret in it", () => {
    const instance = one(resources, "linode:index/instance:Instance");
    const encoded: string = instance.inputs.metadatas[0].userData;
    const text = Buffer.from(encoded, "base64").toString("utf8");
    expect(text.startsWith("#cloud-config\n")).toBe(true);
    expect(parse(text).ssh_pwauth).toBe(false);
    const files = unpackHostFiles(text);
    expect([...files.keys()]).toContain("/usr/local/lib/gpu-sandbox/bootstrap.sh");
    expect(files.get("/etc/gpu-sandbox/host.env")!.content).toContain(`VOLUME_DEVICE='/dev/disk/by-id/scsi-0Linode_Volume_gs-${stack}-data'`);
    const everything = [text, ...[...files.values()].map((f) => f.content)].join("\n");
    for (const secret of ["test-secret", "mock-", "mock-private-key", "hf_"]) expect(everything).not.toContain(secret);
  });

  it("encodes the host's files to the same bytes on every machine, so a pulumi up from another OS or CPU does not rebuild the host", () => {
    const encoded = encodeHostFiles(SAMPLE_HOST_FILES);
    const gz = Buffer.from(encoded, "base64");
    expect(gunzipSync(gz).toString("utf8")).toContain(SAMPLE_HOST_FILES[0]!.content);
    expect(gz.readUInt32LE(4)).toBe(0); // no timestamp
    expect(gz[9]).toBe(3); // a fixed OS byte, not the build's (Node's zlib writes 19 on macOS)
    // The exact bytes, pinned: a change here (another compressor, another fflate version) changes
    // every tenant's user data, and user data forces a new instance on the next pulumi up.
    expect(createHash("sha256").update(encoded).digest("hex")).toBe(GOLDEN_HOST_FILES_SHA256);
  });

  it("logs in by the generated key only, with a random root password", () => {
    const instance = one(resources, "linode:index/instance:Instance");
    expect(instance.inputs.authorizedKeys).toEqual(["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMockKey test"]);
    expect(isSecretInput(instance.inputs.rootPass)).toBe(true);
    expect(plain(instance.inputs.rootPass)).toMatch(/^mock-/);
    expect(resources.find((r) => r.name === `${stack}-ssh-key`)?.inputs.algorithm).toBe("ED25519");
  });

  it("marks every credential output secret", async () => {
    expect(await pulumi.isSecret(outputs.sshPrivateKey)).toBe(true);
    expect(await pulumi.isSecret(outputs.rootPassword)).toBe(true);
    expect(await valueOf(outputs.sshPrivateKey)).toContain("OPENSSH PRIVATE KEY");
  });

  it("outputs the address, SSH command, costs and expiry", async () => {
    expect(await valueOf(outputs.ip)).toBe(MOCK_IP);
    expect(await valueOf(outputs.ipv6)).toBe("2600:3c00::f03c:91ff:fe00:1");
    const ssh = await valueOf(outputs.sshCommand);
    if (config.adminCidrs.length > 0) {
      // It logs in to the host whose key pulumi up recorded, and to no other.
      expect(ssh).toContain(`printf '%s\\n' '${MOCK_IP} ${MOCK_HOST_KEY}' > gs-${stack}.known_hosts`);
      expect(ssh).toContain(`ssh -i gs-${stack}.key -o UserKnownHostsFile=gs-${stack}.known_hosts -o StrictHostKeyChecking=yes root@${MOCK_IP}`);
      expect(ssh).toMatch(/^\(umask 077 && pulumi stack output sshPrivateKey --show-secrets --stack \S+ > /);
      // It writes the root key into the checkout, where stack files are committed: git ignores it.
      const keyFile = /> (\S+)\)/.exec(ssh!)![1]!;
      for (const file of [keyFile, `gs-${stack}.known_hosts`]) {
        const ignored = spawnSync("git", ["check-ignore", "-q", file], { cwd: ROOT, encoding: "utf8" });
        expect(ignored.status, `git check-ignore ${file}: ${ignored.stderr}`).toBe(0);
      }
    }
    else expect(ssh).toContain("SSH is closed");
    expect(outputs.hourlyCostUsd).toBeGreaterThanOrEqual(config.plan.hourlyUsd);
    expect(outputs.monthlyCostUsd).toBeGreaterThan(outputs.hourlyCostUsd);
    const created = await valueOf(outputs.createdAt);
    expect(created).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    const expires = await valueOf(outputs.expiresAt);
    if (config.ttlHours === undefined) expect(expires).toBeUndefined();
    else expect(Date.parse(expires!) - Date.parse(created)).toBe(config.ttlHours * 3_600_000);
  });
});

describe("firewall edge cases", () => {
  it("has no rule at all for port 22 when adminCidrs is empty", async () => {
    const { resources, outputs } = await run("example", configFor("example", { adminCidrs: [] }));
    const fw = one(resources, "linode:index/firewall:Firewall");
    expect(fw.inputs.inbounds.map((r: { ports: string }) => r.ports)).toEqual(["80", "443"]);
    expect(JSON.stringify(fw.inputs)).not.toContain('"22"');
    expect(await valueOf(outputs.sshCommand)).toContain("SSH is closed");
  });

  it("opens port 80 alone without TLS (nginx serves the API there), and says so in the plan", async () => {
    const config = configFor("example", { tls: { mode: "off" } });
    const { resources } = await run("example", config);
    expect(one(resources, "linode:index/firewall:Firewall").inputs.inbounds.map((r: { ports: string }) => r.ports)).toEqual(["80", "22"]);
    const { planFor } = await import("../../infra/plan.ts");
    expect(planFor(config).ports.map((p) => [p.port, p.purpose])).toEqual([
      [80, "HTTP: the OpenAI-compatible API (tls.mode off: no TLS)"], [22, "SSH for the operator and `pulumi up`"],
    ]);
    expect(planFor(configFor("example", { tls: { mode: "self-signed" } })).ports.map((p) => p.purpose).slice(0, 2)).toEqual(["HTTP: redirect to HTTPS", "HTTPS: the OpenAI-compatible API"]);
  });

  it("splits IPv4 and IPv6 sources into their own lists", async () => {
    const { resources } = await run("example", configFor("example", {
      allowedCidrs: ["198.51.100.0/24", "2001:db8::/32"], tls: { mode: "self-signed" }, adminCidrs: ["203.0.113.7/32", "2001:db8:1::/48"],
    }));
    const rules = one(resources, "linode:index/firewall:Firewall").inputs.inbounds;
    expect(rules[0]).toEqual({ label: "allow-http", action: "ACCEPT", protocol: "TCP", ports: "80", ipv4s: ["198.51.100.0/24"], ipv6s: ["2001:db8::/32"] });
    // 443 also from the IPv4 admin address, for /admin.
    expect(rules[1]).toEqual({ label: "allow-https", action: "ACCEPT", protocol: "TCP", ports: "443", ipv4s: ["198.51.100.0/24", "203.0.113.7/32"], ipv6s: ["2001:db8::/32"] });
    expect(rules[2]).toEqual({ label: "allow-ssh-admin", action: "ACCEPT", protocol: "TCP", ports: "22", ipv4s: ["203.0.113.7/32"], ipv6s: ["2001:db8:1::/48"] });
  });

  it("lets an adminCidrs address outside allowedCidrs through to the API's port, where nginx keeps it to /admin (as the plan says)", async () => {
    const { firewallRules } = await import("../../infra/components/gpu-host.ts");
    const { planFor } = await import("../../infra/plan.ts");
    const admits = (rule: { ipv4s?: unknown }, ip: string) => ((rule.ipv4s ?? []) as string[]).some((cidr) => {
      const [net, bits] = cidr.split("/");
      const list = new BlockList();
      list.addSubnet(net!, Number(bits), "ipv4");
      return list.check(ip, "ipv4");
    });
    const c = configFor("example", { tls: { mode: "self-signed" }, allowedCidrs: ["198.51.100.0/24", "2001:db8::/32"], adminCidrs: ["8.8.8.8/32", "198.51.100.7/32", "2001:db8:1::/48"] });
    expect(renderNginxConf(c)).toMatch(/geo \$admin_client \{[^}]*8\.8\.8\.8\/32 1;/);
    const [http, https] = firewallRules(c.allowedCidrs, c.adminCidrs, c.tls.mode);
    expect(admits(https!, "8.8.8.8")).toBe(true);
    expect(admits(http!, "8.8.8.8")).toBe(false); // port 80 only redirects with TLS
    // An entry allowedCidrs already covers is not repeated; an IPv6 one would reach the API only
    // (nginx sees IPv6 clients as Docker's gateway), so it opens SSH alone, as before.
    expect(https).toEqual({ label: "allow-https", action: "ACCEPT", protocol: "TCP", ports: "443", ipv4s: ["198.51.100.0/24", "8.8.8.8/32"], ipv6s: ["2001:db8::/32"] });
    expect(planFor(c).ports.find((p) => p.port === 443)).toMatchObject({
      sources: ["198.51.100.0/24", "2001:db8::/32", "8.8.8.8/32"],
      purpose: "HTTPS: the OpenAI-compatible API (8.8.8.8/32: /admin and /metrics only)",
    });
    // Without TLS, port 80 carries the API, and /admin.
    const off = configFor("example", { tls: { mode: "off" }, allowedCidrs: ["198.51.100.0/24"], adminCidrs: ["8.8.8.8/32"] });
    expect(admits(firewallRules(off.allowedCidrs, off.adminCidrs, off.tls.mode)[0]!, "8.8.8.8")).toBe(true);
  });
});

describe("an adminCidrs network wider than allowedCidrs", () => {
  it("opens the API's port to all of it, not only the allowedCidrs network it starts in", async () => {
    const { firewallRules } = await import("../../infra/components/gpu-host.ts");
    const [, https] = firewallRules(["81.2.68.0/24"], ["81.2.68.0/23"], "self-signed");
    expect(https!.ipv4s).toEqual(["81.2.68.0/24", "81.2.68.0/23"]);
  });
});

describe("the plan that `npm run render` prints", () => {
  it("warns when adminCidrs lets in the whole internet, and only then", async () => {
    const { configWarnings, formatPlan, planFor } = await import("../../infra/plan.ts");
    expect(formatPlan(planFor(configFor("example", { adminCidrs: ["0.0.0.0/0"] })))).toMatch(/Warning +adminCidrs has a \/0: SSH \(key only\) and \/admin \(token only\) are open to the whole internet/);
    expect(formatPlan(planFor(configFor("example", { adminCidrs: ["203.0.113.7/32", "::/0"] })))).toContain("Warning");
    expect(formatPlan(planFor(configFor("example")))).not.toContain("Warning");
    // One private entry beside a public one is a warning, not a refusal.
    const mixedConfig = configFor("example", { adminCidrs: ["81.2.69.160/32", "10.89.0.1/32", "192.168.1.0/24"] });
    const mixed = formatPlan(planFor(mixedConfig));
    expect(mixed).toMatch(/Warning +adminCidrs 10\.89\.0\.1\/32 is a private address \(RFC 1918\): nobody reaches the host's public address from it; and it holds Docker's gateway 10\.89\.0\.1, which nginx sees every IPv6 client as/);
    expect(mixed).toMatch(/Warning +adminCidrs 192\.168\.1\.0\/24 is a private address \(RFC 1918\): nobody reaches the host's public address from it; remove it unless you mean it/);
    expect(mixed).not.toContain("Problem");
    // The same warnings come from pulumi up.
    expect(configWarnings(mixedConfig).filter((w) => w.startsWith("adminCidrs"))).toHaveLength(2);
  });

  it("warns when keys or the admin token would cross the internet in cleartext, and when a tls setting is ignored by the mode, in the plan and in pulumi up", async () => {
    const { formatPlan, planFor } = await import("../../infra/plan.ts");
    // The example's adminCidrs is set: with tls off, the operator scripts send the admin token over plain http.
    const adminInClear = /^tls\.mode is off and adminCidrs is set: the operator scripts \(manage-keys, report-usage, reap-expired's cron\) send the admin token to \/admin over plain http/;
    const cases: [Record<string, unknown>, RegExp[]][] = [
      [{ tls: { mode: "off" } }, [/^tls\.mode is off and allowedCidrs has a \/0: API keys, prompts and answers cross the internet in cleartext/, adminInClear]],
      [{ tls: { mode: "off" }, allowedCidrs: ["81.2.69.0/24"] }, [adminInClear]],
      [{ tls: { mode: "self-signed", email: "ops@gpu-sandbox.dev" } }, [/^tls\.email is ignored with tls\.mode self-signed: only Let's Encrypt uses it/]],
      // Only Let's Encrypt refuses a reserved domain: a mode that ignores the address only warns.
      [{ tls: { mode: "self-signed", email: "ops@example.com" } }, [/^tls\.email is ignored with tls\.mode self-signed/]],
      [{ tls: { mode: "off", domain: "llm.gpu-sandbox.dev", email: "ops@gpu-sandbox.dev" }, allowedCidrs: ["81.2.69.0/24"] },
        [adminInClear, /^tls\.email is ignored with tls\.mode off/, /^tls\.domain is ignored with tls\.mode off: there is no certificate/]],
      [{ tls: { mode: "self-signed", domain: "llm.gpu-sandbox.dev" } }, []],
      [{ tls: { mode: "letsencrypt", domain: "llm.gpu-sandbox.dev", email: "ops@gpu-sandbox.dev" } }, []],
    ];
    for (const [overrides, expected] of cases) {
      await expectWarnings(configFor("example", overrides), expected, /\n {2}Warning +tls\./, JSON.stringify(overrides));
    }
  });

  // nginx serves the API to Docker's gateway, which every IPv6 client arrives as: only Linode's
  // firewall holds IPv6 clients to allowedCidrs, and a host of your own (npm run render) has none.
  it("warns that an IPv6 allowedCidrs entry narrower than ::/0 holds on Linode only, in the plan and in pulumi up", async () => {
    const { formatPlan, planFor } = await import("../../infra/plan.ts");
    const expected = "allowedCidrs 2001:db8:1::/48, 2a02:8010::/32: IPv6 entries narrower than ::/0 are enforced by Linode's firewall only: " +
      "nginx sees every IPv6 client as Docker's gateway, so on a host of your own (npm run render) every IPv6 address reaches the API (a key is still needed)";
    const config = configFor("example", { allowedCidrs: ["81.2.69.0/24", "2001:db8:1::/48", "2a02:8010::/32"], tls: { mode: "self-signed" } });
    expect(planFor(config).lines.filter(([label]) => label === "Warning").map(([, text]) => text)).toEqual([expected]);
    expect(formatPlan(planFor(config))).toMatch(/\n {2}Warning +allowedCidrs 2001:db8:1::\/48/);
    const warn = vi.spyOn(pulumi.log, "warn").mockImplementation(async () => {});
    try {
      await run("example", config);
      expect(warn.mock.calls.map(([text]) => text)).toEqual([`gpu-sandbox:${expected}.`]);
    } finally {
      warn.mockRestore();
    }
    // ::/0 (every IPv6 address, on Linode too) or no IPv6 entry (443 published on IPv4 alone): nothing to say.
    // A narrower entry beside ::/0 restricts nothing anywhere: nothing to say either.
    for (const allowedCidrs of [["81.2.69.0/24", "::/0"], ["81.2.69.0/24"], ["0.0.0.0/0", "0::0/0"], ["0.0.0.0/0", "::/0", "2001:db8:1::/48"]]) {
      expect(formatPlan(planFor(configFor("example", { allowedCidrs, tls: { mode: "self-signed" } }))), allowedCidrs.join()).not.toContain("Warning");
    }
  });

  it("warns when a provider model has no token price (charged the request price only), in the plan and in pulumi up", async () => {
    const { formatPlan, planFor } = await import("../../infra/plan.ts");
    const providers = [
      { name: "gemini-pro", model: "gemini/gemini-2.5-pro", apiKey: "AIza_test_key" },
      { name: "llama-70b", model: "groq/llama-3.3-70b-versatile", apiKey: "gsk_test_key" },
    ];
    const priced = { request: 1, models: { "qwen2.5-7b": { promptPer1k: 0.1, completionPer1k: 0.2 }, "llama-70b": { promptPer1k: 0.5, completionPer1k: 1 } } };
    const config = configFor("example", { providers, pricing: priced });
    const expected = /^providers\[0\] gemini-pro \(gemini\/gemini-2\.5-pro\) has no pricing\.models entry: its requests are charged the request price only \(1 credit\), whatever tokens the provider bills/;
    await expectWarnings(config, [expected], /\n {2}Warning +providers\[0\] gemini-pro/);
    // Priced, even at 0 per token (a free provider), it says nothing.
    const free = configFor("example", { providers, pricing: { ...priced, models: { ...priced.models, "gemini-pro": { promptPer1k: 0, completionPer1k: 0 } } } });
    expect(formatPlan(planFor(free))).not.toContain("Warning");
  });

  // vLLM refuses tool_choice "auto" (what agent frameworks send with tools) without a tool-call parser.
  it("warns when vLLM will refuse tool_choice \"auto\" for the model (no parser the kit knows), in the plan and in pulumi up, and says how to set one", async () => {
    const { formatPlan, planFor } = await import("../../infra/plan.ts");
    const config = configFor("example", { model: { id: "Qwen/Qwen3-8B", servedName: "qwen3-8b" }, pricing: { request: 1 } });
    const expected = /^model\.id Qwen\/Qwen3-8B has no tool-call parser the kit knows: vLLM will refuse chat requests with tools and tool_choice "auto" .*add \["--enable-auto-tool-choice", "--tool-call-parser", "<parser>"\] to model\.extraArgs/;
    await expectWarnings(config, [expected], /\n {2}Warning +model\.id Qwen\/Qwen3-8B has no tool-call parser/);
    // The operator's own parser in model.extraArgs: nothing to say.
    const own = configFor("example", { model: { id: "Qwen/Qwen3-8B", servedName: "qwen3-8b", extraArgs: ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"] }, pricing: { request: 1 } });
    expect(formatPlan(planFor(own))).not.toContain("Warning");
  });

  it("shows how vLLM spreads the model over the plan's GPUs", async () => {
    const { formatPlan, planFor } = await import("../../infra/plan.ts");
    const model = (plan: string, region: string) => formatPlan(planFor(configFor("example", { plan, region }))).split("\n").find((l) => l.includes("Model"));
    expect(model("g2-gpu-rtx4000a1-s", "us-ord")).toMatch(/up to 8192 tokens, on 1 GPU$/);
    expect(model("g1-gpu-rtx6000-3", "us-east")).toContain("on 3 GPUs: tensor-parallel 1 x pipeline-parallel 3");
    expect(model("g2-gpu-rtx4000a4-s", "us-ord")).toMatch(/on 4 GPUs: tensor-parallel 4 x pipeline-parallel 1$/);
  });

  it.each([["with adminCidrs", {}], ["without adminCidrs", { adminCidrs: [] }], ["self-signed", { tls: { mode: "self-signed" } }]])("lists exactly the resources the program registers, %s", async (_name, overrides) => {
    const { planFor } = await import("../../infra/plan.ts");
    const config = configFor("example", overrides);
    const { resources } = await run("example", config);
    const registered = resources.map((r) => r.type).filter((t) => !t.startsWith("gpu-sandbox:")).sort();
    expect(planFor(config).resources.map((r) => r.type).sort()).toEqual(registered);
  });
});

describe("the serving stack under the mock runtime", () => {
  const withProvider = () => configFor("example", {
    hfToken: "hf_test_token_value",
    providers: [{ name: "llama-70b", model: "groq/llama-3.3-70b-versatile", apiKey: "gsk_test_provider_key" }],
    keys: [{ name: "app", credits: 1000, tier: "developer" }, { name: "ci", credits: 5 }],
  });

  /** Every secret value the program handled: generated ones (the mocks prefix them) and configured ones. */
  function secretsIn(resources: readonly RecordedResource[]): string[] {
    const generated = resources
      .filter((r) => r.type === "random:index/randomPassword:RandomPassword")
      .map((r) => `mock-${r.name}`.slice(0, 20));
    return [...generated, "hf_test_token_value", "gsk_test_provider_key", "mock-private-key", "mock-private-pem"];
  }

  it("puts no secret in a command line, the copied bundle, or a plaintext output", async () => {
    const config = withProvider();
    const { resources, outputs, stagingDir } = await run("example", config);
    const secrets = secretsIn(resources);
    const commands = byType(resources, "command:remote:Command");
    expect(commands.map((c) => c.name).sort()).toEqual(["example-certificate", "example-deploy", "example-env", "example-host-ready"]);
    // One updated in place does not send its last output as environment variables, which the host's sshd refuses (a warning at every update).
    for (const c of commands.filter((x) => x.inputs.update !== undefined)) expect(c.inputs.addPreviousOutputInEnv, c.name).toBe(false);
    expect(commands.filter((x) => x.inputs.update !== undefined).map((c) => c.name).sort()).toEqual(["example-certificate", "example-deploy"]);
    for (const c of commands) {
      const lines = JSON.stringify([c.inputs.create, c.inputs.update, c.inputs.delete, plain(c.inputs.triggers)]);
      for (const s of secrets) expect(lines, `${c.name} command line`).not.toContain(s);
      if (c.inputs.stdin !== undefined) expect(isSecretInput(c.inputs.stdin), `${c.name} stdin is secret`).toBe(true);
    }
    // The env file does hold them, and reaches the host only through stdin.
    const envStdin = plain(commands.find((c) => c.name === "example-env")!.inputs.stdin) as string;
    expect(envStdin).toContain("HF_TOKEN=hf_test_token_value\n");
    expect(envStdin).toContain("GROQ_API_KEY_0=gsk_test_provider_key\n");
    // Its hash replaces the step when they change, and is hidden too (a hash of a short secret can be guessed).
    const envTriggers = commands.find((c) => c.name === "example-env")!.inputs.triggers;
    expect(isSecretInput(envTriggers) || isSecretInput(envTriggers[0]), "env triggers are secret").toBe(true);
    expect(plain(envTriggers)).toEqual([createHash("sha256").update(envStdin).digest("hex")]);
    const staged = join(stagingDir, "bundle");
    for (const file of listFiles(staged)) {
      const text = readFileSync(file, "utf8");
      for (const s of secrets) expect(text, file).not.toContain(s);
    }
    const plaintextOutputs = [outputs.endpoint, outputs.bundleHash, outputs.ip, outputs.sshCommand, outputs.createdAt];
    for (const o of plaintextOutputs) {
      const v = JSON.stringify(await valueOf(o));
      for (const s of secrets) expect(v).not.toContain(s);
    }
    expect(await pulumi.isSecret(outputs.apiKeys)).toBe(true);
    expect(await pulumi.isSecret(outputs.adminToken as pulumi.Output<string>)).toBe(true);
    const keys = await valueOf(outputs.apiKeys);
    expect(Object.keys(keys)).toEqual(["app", "ci"]);
    for (const key of Object.values(keys)) expect(key).toMatch(/^sk-gs-.{12}_.{32}$/);
  });

  it("copies the bundle it staged, pinned by digest, with the keys' hashes and not the keys", async () => {
    const { resources, outputs, stagingDir } = await run("example", withProvider());
    const copy = one(resources, "command:remote:CopyToRemote");
    expect(copy.inputs.remotePath).toBe("/opt/gpu-sandbox/.incoming");
    const hash = await valueOf(outputs.bundleHash);
    // The instance id: a replacement host gets the bundle even when the bundle is unchanged.
    expect(plain(copy.inputs.triggers)).toEqual([hash, "12345"]);
    const staged = join(stagingDir, "bundle");
    expect(readFileSync(join(staged, "compose.yaml"), "utf8")).toContain(`vllm/vllm-openai:v0.33.0@sha256:${"d".repeat(64)}`);
    const shimConfig = readFileSync(join(staged, "shim/config.yaml"), "utf8");
    expect(shimConfig).toMatch(/hash: sha256:[0-9a-f]{64}/);
    for (const key of Object.values(await valueOf(outputs.apiKeys))) expect(shimConfig).not.toContain(key);
    expect(await valueOf(outputs.endpoint)).toBe("https://192-0-2-10.ip.linodeusercontent.com/v1");
  });

  it("redirects port 80 to the host's own name, Linode's when tls.domain is unset, not to the Host a client sends", async () => {
    // Found by the penetration test: the 308 copied the client's Host into its Location.
    const { stagingDir } = await run("example", withProvider());
    const nginx = readFileSync(join(stagingDir, "bundle", "nginx/nginx.conf"), "utf8");
    expect(nginx).toContain("return 308 https://192-0-2-10.ip.linodeusercontent.com$request_uri;");
    expect(nginx).not.toContain("$host$request_uri");
  });

  it("puts each bootstrap key's credits, tier and model list in the bundle: without the list the key could use every model, paid ones included", async () => {
    const { stagingDir } = await run("example", configFor("example", {
      providers: [{ name: "llama-70b", model: "groq/llama-3.3-70b-versatile", apiKey: "gsk_test_provider_key" }],
      keys: [{ name: "app", credits: 7, tier: "pro", models: ["qwen2.5-7b"] }],
    }));
    const shim = parse(readFileSync(join(stagingDir, "bundle", "shim/config.yaml"), "utf8"));
    expect(shim.bootstrapKeys).toEqual([expect.objectContaining({ name: "app", credits: 7, tier: "pro", models: ["qwen2.5-7b"] })]);
  });

  it("changes the bundle, and not the instance, when the model, prices or keys change", async () => {
    const first = await run("example", configFor("example"));
    const changed = await run("example", configFor("example", {
      model: { id: "mistralai/Mistral-7B-Instruct-v0.3", servedName: "mistral-7b" },
      pricing: { request: 3 },
      keys: [{ name: "other", credits: 1 }],
    }));
    const instance = (r: typeof first) => one(r.resources, "linode:index/instance:Instance").inputs;
    expect(instance(changed)).toEqual(instance(first));
    expect(one(changed.resources, "linode:index/volume:Volume").inputs).toEqual(one(first.resources, "linode:index/volume:Volume").inputs);
    expect(await valueOf(changed.outputs.bundleHash)).not.toBe(await valueOf(first.outputs.bundleHash));
    const deployTriggers = (r: typeof first) => plain(r.resources.find((x) => x.name === "example-deploy")!.inputs.triggers)[0];
    expect(deployTriggers(changed)).not.toEqual(deployTriggers(first));
  });

  it("does not deploy again when the tls provider renews Let's Encrypt's placeholder (every 30 days), but does for a self-signed certificate", async () => {
    const triggers = async (mode: string) => {
      const { resources } = await run("example", configFor("example", { tls: { mode, email: "ops@gpu-sandbox.dev" } }));
      const of = (name: string) => plain(resources.find((x) => x.name === name)!.inputs.triggers);
      return { deploy: of("example-deploy")[4], install: of("example-certificate") };
    };
    // The placeholder is updated in place (its id stays), and the deploy's triggers leave it out.
    expect(await triggers("letsencrypt")).toEqual({ deploy: "no-pulumi-certificate", install: undefined });
    // A new self-signed certificate replaces its install (by its hash), whose new id deploys again.
    const selfSigned = await triggers("self-signed");
    expect(selfSigned.deploy).toBe("example-certificate-id");
    expect(selfSigned.install).toEqual([expect.stringMatching(/^[0-9a-f]{64}$/)]);
  });

  it("grows the volume in place and deploys again, so its filesystem is grown to the new size", async () => {
    const first = await run("example", configFor("example", { volumeSizeGb: 100 }));
    const larger = await run("example", configFor("example", { volumeSizeGb: 200 }));
    const volume = (r: typeof first) => one(r.resources, "linode:index/volume:Volume").inputs;
    expect([volume(first).size, volume(larger).size]).toEqual([100, 200]);
    expect(one(larger.resources, "linode:index/instance:Instance").inputs).toEqual(one(first.resources, "linode:index/instance:Instance").inputs);
    const deployTriggers = (r: typeof first) => plain(r.resources.find((x) => x.name === "example-deploy")!.inputs.triggers);
    expect(deployTriggers(larger)).not.toEqual(deployTriggers(first));
    expect(readFileSync(join(ROOT, "templates/bundle/bin/deploy.sh"), "utf8")).toMatch(/resize2fs "\$volume"/);
  });

  it("updates in place, and on destroy stops the stack from the operator's machine, never failing for want of SSH", async () => {
    const { resources } = await run("example", configFor("example"));
    const deploy = resources.find((r) => r.name === "example-deploy")!;
    expect(deploy.inputs.update).toBe(deploy.inputs.create);
    expect(deploy.inputs.create).toContain("deploy.sh");
    expect(deploy.inputs.delete).toBeUndefined();
    // On a host where the bundle never arrived it says so, instead of bash's "No such file".
    const missing = spawnSync("bash", ["-c", String(deploy.inputs.create).replaceAll("/opt/gpu-sandbox", join(tempDir(), "nothing-here"))], { encoding: "utf8" });
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/^gpu-sandbox: no bundle in .*nothing-here \(the copy did not happen\); run pulumi up again\n$/);
    // With Let's Encrypt, deploy.sh gets the host's address, for the certificate check's A-record hint.
    expect(String(deploy.inputs.create).endsWith(`exec bash "$s" "$d" 1800 http://127.0.0.1:8081/ready ${MOCK_IP}`)).toBe(true);
    const selfSigned = (await run("example", configFor("example", { tls: { mode: "self-signed" } }))).resources.find((r) => r.name === "example-deploy")!;
    expect(String(selfSigned.inputs.create).endsWith(`exec bash "$s" "$d" 1800 http://127.0.0.1:8081/ready`)).toBe(true);
    const stop = resources.find((r) => r.name === "example-stop-on-destroy")!;
    expect(stop.type).toBe("command:local:Command");
    expect(stop.inputs.create).toBeUndefined();
    expect(stop.inputs.delete).toContain("docker compose down");
    // Pulumi marks the whole environment secret because the key is in it.
    expect(isSecretInput(stop.inputs.environment)).toBe(true);
    expect(plain(stop.inputs.environment)).toMatchObject({ GS_HOST: MOCK_IP, GS_DIR: "/opt/gpu-sandbox" });
  });

  /**
   * Which deploy.sh the deploy command runs, on a fake install directory holding `layout`
   * (directory → what its deploy.sh prints), under the environment `env`.
   */
  let deployCommand: string | undefined;
  async function deployScriptRun(layout: Record<string, string>, env: NodeJS.ProcessEnv = {}): Promise<string> {
    deployCommand ??= String((await run("example", configFor("example"))).resources.find((r) => r.name === "example-deploy")!.inputs.create);
    const create = deployCommand;
    const dest = tempDir();
    for (const [dir, says] of Object.entries(layout)) {
      mkdirSync(join(dest, dir), { recursive: true });
      writeFileSync(join(dest, dir, "deploy.sh"), `echo ${says}\n`);
    }
    const ran = spawnSync("bash", ["-c", create.replaceAll("/opt/gpu-sandbox", dest)], { encoding: "utf8", env: { ...process.env, ...env } });
    return ran.stdout + ran.stderr;
  }

  /** Every update after the first must run the new bundle's deploy.sh, not the installed one. */
  async function expectNewBundleFirst(env: NodeJS.ProcessEnv): Promise<void> {
    expect(await deployScriptRun({ bin: "installed", ".incoming/bundle/bin": "new" }, env)).toBe("new\n");
    // CopyToRemote makes .incoming the bundle itself when .incoming does not exist yet.
    expect(await deployScriptRun({ bin: "installed", ".incoming/bin": "new-flat" }, env)).toBe("new-flat\n");
    expect(await deployScriptRun({ bin: "installed", ".incoming/bin": "stale-flat", ".incoming/bundle/bin": "new" }, env)).toBe("new\n");
    // A change of secrets alone copies nothing: the installed bundle is restarted.
    expect(await deployScriptRun({ bin: "installed" }, env)).toBe("installed\n");
  }

  it("runs the newly copied bundle's deploy.sh before the installed one", async () => {
    await expectNewBundleFirst({ LC_ALL: "C" });
  });

  it("runs the newly copied bundle's deploy.sh under a locale that sorts bin/ before .incoming/ (en_US.UTF-8)", async (ctx) => {
    // glibc's en_US collation ignores punctuation: built here, since images often ship only C.
    const locpath = tempDir();
    const built = spawnSync("localedef", ["-i", "en_US", "-f", "UTF-8", join(locpath, "en_US.UTF-8")], { encoding: "utf8" });
    if (built.error || built.status !== 0) ctx.skip("localedef cannot build en_US.UTF-8 here (apt-get install locales)");
    await expectNewBundleFirst({ LOCPATH: locpath, LC_ALL: "en_US.UTF-8" });
  });

  it("waits for SSH on a new host from the operator's machine first, so a timeout can ask about adminCidrs", async () => {
    const { resources } = await run("example", configFor("example"));
    const wait = resources.find((r) => r.name === "example-ssh-wait")!;
    expect(wait.type).toBe("command:local:Command");
    expect(wait.inputs.create).toContain("Is your address in adminCidrs?");
    // Once per host: a replacement is waited for again, an update of the same host is not.
    expect(plain(wait.inputs.triggers)).toEqual(["12345"]);
    expect(isSecretInput(wait.inputs.environment)).toBe(true);
    expect(plain(wait.inputs.environment)).toMatchObject({ GS_HOST: MOCK_IP, GS_WAIT_SECONDS: "2700", GS_ADMIN_CIDRS: "203.0.113.7/32" });
  });

  it("records the new host's SSH key at the first login, and pins every later step over SSH to it", async () => {
    const { resources, outputs } = await run("example", configFor("example"));
    const record = resources.find((r) => r.name === "example-host-key")!;
    expect(record.type).toBe("command:local:Command");
    expect(record.inputs.create).toContain("StrictHostKeyChecking=accept-new");
    // Run again on the same host (a new version of the script), it keeps the key it has.
    expect(record.inputs.update).toBe(record.inputs.create);
    expect(record.inputs.addPreviousOutputInEnv).not.toBe(false);
    // Once per host: a replacement (a new instance, a new key) records its key again.
    expect(plain(record.inputs.triggers)).toEqual(["12345"]);
    expect(record.dependencies).toContain(resources.find((r) => r.name === "example-ssh-wait")!.urn);
    const steps = resources.filter((r) => r.type.startsWith("command:remote:"));
    expect(steps.map((s) => s.name).sort()).toEqual(["example-bundle", "example-certificate", "example-deploy", "example-env", "example-host-ready"]);
    for (const step of steps) expect(plain(step.inputs.connection).hostKey, step.name).toBe(MOCK_HOST_KEY);
    // pulumi destroy's stop over SSH, and the operator's own login (sshCommand), check the same key.
    expect(plain(resources.find((r) => r.name === "example-stop-on-destroy")!.inputs.environment).GS_HOST_KEY).toBe(MOCK_HOST_KEY);
    expect(await valueOf(outputs.hostKey)).toBe(MOCK_HOST_KEY);
    expect(await valueOf(outputs.sshCommand)).toContain(MOCK_HOST_KEY);
    // A public key: `pulumi stack output sshCommand` must show the command, not "[secret]",
    // though the provider marks the step's stdout secret (the private key is among its inputs).
    expect(await pulumi.isSecret(outputs.hostKey as pulumi.Output<string | undefined>)).toBe(false);
    expect(await pulumi.isSecret(outputs.sshCommand)).toBe(false);
  });

  it("records no key without adminCidrs (SSH is closed), and the stop on destroy then does not connect", async () => {
    const { resources, outputs } = await run("example", configFor("example", { adminCidrs: [] }));
    expect(resources.find((r) => r.name === "example-host-key")).toBeUndefined();
    expect(plain(resources.find((r) => r.name === "example-stop-on-destroy")!.inputs.environment).GS_HOST_KEY).toBe("");
    expect(await valueOf(outputs.hostKey)).toBeUndefined();
  });

  it("looks image digests up without a local Docker daemon", async () => {
    const { resources, calls } = await run("example", configFor("example"));
    const provider = resources.find((r) => r.type === "pulumi:providers:docker")!;
    // Provider inputs reach the engine as strings.
    expect(plain(provider.inputs.disableDockerDaemonCheck)).toBe("true");
    expect(calls.filter((c) => c.token === "docker:index/getRegistryImage:getRegistryImage")).toHaveLength(5);
  });

  it("installs a self-signed certificate and exports its CA", async () => {
    const { resources, outputs } = await run("example", configFor("example", { tls: { mode: "self-signed" } }));
    const cert = resources.find((r) => r.name === "example-certificate")!;
    expect(cert.inputs.create).toContain("install-certificate.sh replace");
    expect(isSecretInput(cert.inputs.stdin)).toBe(true);
    expect(await valueOf(outputs.caCertificate)).toContain("mock-cert-example-tls-ca");
    // Any `pulumi up` in the server certificate's last 30 days renews it, not only one after it expired.
    const server = one(resources, "tls:index/locallySignedCert:LocallySignedCert");
    expect(server.inputs.validityPeriodHours).toBe(24 * 825);
    expect(server.inputs.earlyRenewalHours).toBe(24 * 30);
  });

  it("serves plain HTTP with tls off, with no certificate at all", async () => {
    const { resources, outputs } = await run("example", configFor("example", { tls: { mode: "off" } }));
    expect(resources.find((r) => r.name === "example-certificate")).toBeUndefined();
    expect(resources.some((r) => r.type.startsWith("tls:") && r.name !== "example-ssh-key")).toBe(false);
    expect(await valueOf(outputs.endpoint)).toBe(`http://${MOCK_IP}/v1`);
  });

  it("does not deploy the serving stack without adminCidrs, and says why", async () => {
    const { resources, outputs } = await run("example", configFor("example", { adminCidrs: [] }));
    expect(resources.some((r) => r.type.startsWith("command:remote:"))).toBe(false);
    expect(await valueOf(outputs.sshCommand)).toContain("SSH is closed");
    // Nothing serves at its endpoint: scripts (reap-expired, manage-keys) must know.
    expect(await valueOf(outputs.servingDeployed)).toBe(false);
    expect(resources.find((r) => r.name === "example-deployed")!.inputs.keepers).toEqual({ deployed: "no" });
  });

  it("keeps every secret, key and certificate when adminCidrs is emptied after a deploy, so re-adding them revokes no client's key", async () => {
    const deployed = await run("example", configFor("example", { tls: { mode: "self-signed" } }));
    const closed = await run("example", configFor("example", { tls: { mode: "self-signed" }, adminCidrs: [] }));
    const names = (rs: readonly RecordedResource[], keep: (r: RecordedResource) => boolean) => rs.filter(keep).map((r) => `${r.type} ${r.name}`).sort();
    // Only the steps over SSH (and the wait for SSH and the recording of its key) go; the random secrets, the keys' ids and secrets and the CA stay,
    // and so does the stop on destroy (dropping it would run its delete at once).
    const ssh = (r: RecordedResource) => r.type.startsWith("command:remote:") || r.name === "example-ssh-wait" || r.name === "example-host-key";
    expect(names(closed.resources, () => true)).toEqual(names(deployed.resources, (r) => !ssh(r)));
    expect(names(deployed.resources, ssh).length).toBeGreaterThan(0);
    expect(closed.resources.some((r) => r.type.startsWith("random:") && r.name.includes("admin-token"))).toBe(true);
    expect(closed.resources.some((r) => r.type === "command:local:Command" && r.name.endsWith("stop-on-destroy"))).toBe(true);
    // The outputs an operator's scripts use still work against the host that keeps serving:
    // reap-expired saves its ledger from this endpoint before the volume goes.
    expect(await valueOf(closed.outputs.endpoint)).toBe(await valueOf(deployed.outputs.endpoint));
    expect(await valueOf(deployed.outputs.servingDeployed)).toBe(true);
    // Emptied after a deploy, the marker keeps "yes": its keeper is ignored while SSH is closed
    // (the mock runtime has no state to keep, so this checks the input it is given).
    expect(deployed.resources.find((r) => r.name === "example-deployed")!.inputs.keepers).toEqual({ deployed: "yes" });
    expect(Object.keys(await valueOf(closed.outputs.apiKeys))).toEqual(Object.keys(await valueOf(deployed.outputs.apiKeys)));
    expect(await valueOf(closed.outputs.adminToken)).toBeTruthy();
    expect(await valueOf(closed.outputs.caCertificate)).toContain("BEGIN CERTIFICATE");
  });
});

describe("what keeps the tenant's data, dates and secrets across updates", () => {
  it("deletes a replaced instance, volume or firewall before creating the new one: Linode labels are unique", async () => {
    const { resources } = await run("example", configFor("example"));
    for (const type of ["linode:index/instance:Instance", "linode:index/volume:Volume", "linode:index/firewall:Firewall"]) {
      expect(one(resources, type).deleteBeforeReplace, type).toBe(true);
    }
  });

  it("keeps the creation time of the first pulumi up (later ones must not move the expiry), and the deploy marker while SSH is closed", async () => {
    const open = await run("example", configFor("example"));
    expect(open.resources.find((r) => r.name === "example-created-at")!.ignoreChanges).toEqual(["keepers"]);
    expect(open.resources.find((r) => r.name === "example-deployed")!.ignoreChanges).toEqual([]);
    const closed = await run("example", configFor("example", { adminCidrs: [] }));
    expect(closed.resources.find((r) => r.name === "example-deployed")!.ignoreChanges).toEqual(["keepers"]);
  });

  it("deploys, and on destroy stops the stack, with the volume in place: the ledger is settled before the volume goes", async () => {
    const { resources } = await run("example", configFor("example"));
    const volume = one(resources, "linode:index/volume:Volume").urn;
    expect(resources.find((r) => r.name === "example-deploy")!.dependencies).toContain(volume);
    expect(resources.find((r) => r.name === "example-stop-on-destroy")!.dependencies).toContain(volume);
  });

  it("writes .env on the host readable by root alone, whatever the login shell's umask", async () => {
    const { resources } = await run("example", configFor("example"));
    const create = String(resources.find((r) => r.name === "example-env")!.inputs.create);
    const dest = tempDir();
    const ran = spawnSync("bash", ["-c", `umask 022; ${create.replaceAll("/opt/gpu-sandbox", dest)}`], { input: "A=1\n", encoding: "utf8" });
    expect(ran.status, ran.stderr).toBe(0);
    expect(readFileSync(join(dest, ".env"), "utf8")).toBe("A=1\n");
    expect(statSync(join(dest, ".env")).mode & 0o777).toBe(0o600);
  });

  it("waits for SSH once per host: a later update (a new adminCidrs) runs no wait", async () => {
    const { resources } = await run("example", configFor("example"));
    const wait = resources.find((r) => r.name === "example-ssh-wait")!;
    expect(wait.inputs.update).toBe("true");
  });

  it("gives host-ready as long as the host's first boot to open SSH", async () => {
    const { resources } = await run("example", configFor("example"));
    const { dialErrorLimit, perDialTimeout } = plain(resources.find((r) => r.name === "example-host-ready")!.inputs.connection);
    expect(dialErrorLimit * perDialTimeout).toBeGreaterThanOrEqual(45 * 60);
  });

  it("certifies the self-signed server for its name and address, for server auth, signed by a CA", async () => {
    const { resources } = await run("example", configFor("example", { tls: { mode: "self-signed" } }));
    const request = one(resources, "tls:index/certRequest:CertRequest");
    expect(plain(request.inputs.dnsNames)).toEqual(["192-0-2-10.ip.linodeusercontent.com"]);
    expect(plain(request.inputs.ipAddresses)).toEqual([MOCK_IP]);
    expect(resources.find((r) => r.name === "example-tls-ca")!.inputs.isCaCertificate).toBe(true);
    expect(one(resources, "tls:index/locallySignedCert:LocallySignedCert").inputs.allowedUses).toContain("serverAuth");
  });

  it("installs Let's Encrypt's placeholder with its private key, so nginx starts before certbot's first certificate", async () => {
    const { resources } = await run("example", configFor("example"));
    const pem = String(plain(resources.find((r) => r.name === "example-certificate")!.inputs.stdin));
    expect(pem).toContain("BEGIN CERTIFICATE");
    expect(pem).toContain("PRIVATE KEY");
  });
});

describe("pulumi up after a deploy that failed", () => {
  /**
   * `pulumi up`s of the example stack against one Pulumi state of the steps over SSH, modelled on
   * @pulumi/command 1.2.1: a step whose inputs equal its state runs nothing; one whose `triggers`
   * or `connection` changed (replaceOnChanges) is replaced, and its create gets a new random id
   * (resource.NewUniqueHex); any other change updates it in place, keeping its id; and a step
   * whose command fails is not recorded, so the state keeps its last successful inputs.
   * Each call returns the steps that ran.
   */
  function stackState() {
    const saved = new Map<string, { inputs: Record<string, unknown>; id: string }>();
    const stagingDir = tempDir();
    let created = 0;
    return async (config: TenantConfig, failing: string[] = []): Promise<string[]> => {
      const ran: string[] = [];
      installMocks("example", {
        resource: (args) => {
          if (!args.type.startsWith("command:remote:")) return undefined;
          const inputs = plain(args.inputs) as Record<string, unknown>;
          const before = saved.get(args.name);
          const replaced = !before || !isDeepStrictEqual([inputs.triggers, inputs.connection], [before.inputs.triggers, before.inputs.connection]);
          if (!before || !isDeepStrictEqual(inputs, before.inputs)) ran.push(args.name);
          const id = replaced ? `${args.name}-${++created}` : before.id;
          if (!failing.includes(args.name)) saved.set(args.name, { inputs, id });
          return { id, state: { ...args.inputs } };
        },
      });
      deployTenant(config, { stagingDir });
      await settle();
      return ran;
    };
  }
  const good = () => configFor("example");
  // vLLM reserves KV cache for 32k tokens, which does not fit the 20 GB card: vLLM never gets
  // healthy, and deploy.sh fails after recreating vllm and the shim (the bundle stays installed).
  const tooLong = () => configFor("example", { model: { ...(readStackConfig(ROOT, "example") as { model: object }).model, maxModelLen: 32768 } });

  it("runs nothing at all when nothing changed", async () => {
    const up = stackState();
    expect(await up(good())).toContain("example-deploy");
    expect(await up(good())).toEqual([]);
  });

  it("deploys again when the setting is reverted, so the host leaves the failed bundle", async () => {
    const up = stackState();
    await up(good());
    expect(await up(tooLong(), ["example-deploy"])).toEqual(expect.arrayContaining(["example-bundle", "example-deploy"]));
    // The copy puts the good bundle in .incoming; the deploy's inputs are those of its last
    // success, but it must run: the host still runs the failed bundle.
    expect(await up(good())).toEqual(expect.arrayContaining(["example-bundle", "example-deploy"]));
    expect(await up(good())).toEqual([]);
  });

  it("deploys again when a secret is reverted, so the containers leave the failed one", async () => {
    const up = stackState();
    await up(configFor("example", { hfToken: "hf_good_token_value" }));
    expect(await up(configFor("example", { hfToken: "hf_revoked_token_value" }), ["example-deploy"])).toContain("example-env");
    expect(await up(configFor("example", { hfToken: "hf_good_token_value" }))).toEqual(expect.arrayContaining(["example-env", "example-deploy"]));
  });

  it("deploys again after the failure itself when nothing changed, to finish installing the bundle", async () => {
    const up = stackState();
    await up(good());
    await up(tooLong(), ["example-deploy"]);
    expect(await up(tooLong())).toEqual(["example-deploy"]);
  });
});

function listFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? listFiles(join(dir, e.name)) : [join(dir, e.name)]);
}
