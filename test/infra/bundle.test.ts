import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { parse } from "yaml";
import { describe, expect, it, vi } from "vitest";
import { parseShimConfig } from "../../api-shim/src/config.ts";
import { SETTLE_AFTER_DRAIN_MS } from "../../api-shim/src/inflight.ts";
import { SHUTDOWN_MS } from "../../api-shim/src/store/postgres-store.ts";
import { CLOSE_WAIT_MS } from "../../api-shim/src/upstream/upstream.ts";
import { validateConfig, type TenantConfig } from "../../infra/config.ts";
import { configWarnings } from "../../infra/plan.ts";
import { Secret } from "../../infra/secret.ts";
import { BundleDirError, bundleHash, MANIFEST, renderBundle, sha256, writeBundle, type Bundle } from "../../infra/render/bundle.ts";
import { DNS_NAME_PLACEHOLDER, envEntries, renderEnvFile } from "../../infra/render/env-file.ts";
import { NGINX_HTTP_PORT, NGINX_LOCAL_PORT, renderCompose } from "../../infra/render/compose.ts";
import { standaloneLockfile } from "../../infra/render/shim-source.ts";
import type { BootstrapKeyRecord } from "../../infra/render/shim-config.ts";
import { forLocalNginx } from "../support/nginx.ts";
import { spawnShim } from "../support/shim-process.ts";
import { runTool, tempDir } from "../support/tools.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

const base = {
  region: "us-ord", adminCidrs: ["203.0.113.7/32"], model: { id: "Qwen/Qwen2.5-7B-Instruct", servedName: "qwen2.5-7b" },
  keys: [{ name: "app", credits: 1000, tier: "developer", models: ["qwen2.5-7b"] }],
  pricing: { models: { "qwen2.5-7b": { promptPer1k: 0.1, completionPer1k: 0.2 } } },
};

function config(overrides: Record<string, unknown> = {}): TenantConfig {
  const result = validateConfig({ ...base, ...overrides }, { stack: "acme" });
  if (!result.ok) throw new Error(JSON.stringify(result.problems));
  return result.config;
}

const keys: BootstrapKeyRecord[] = [{ id: "AbCdEf123456", name: "app", hash: `sha256:${"ab".repeat(32)}`, credits: 1000, tier: "developer", models: ["qwen2.5-7b"] }];
const render = (c: TenantConfig): Bundle => renderBundle(c, { images: c.images, bootstrapKeys: keys });

/** The TLS modes, each with what changes in the bundle. */
const modes: [string, TenantConfig][] = [
  ["letsencrypt", config({ tls: { mode: "letsencrypt", email: "ops@gpu-sandbox.dev" } })],
  ["self-signed", config({ tls: { mode: "self-signed" }, allowedCidrs: ["198.51.100.0/24"] })],
  ["off, with external providers", config({
    tls: { mode: "off" },
    providers: [
      { name: "llama-70b", model: "groq/llama-3.3-70b-versatile", apiKey: Secret.of("gsk_test") },
      { name: "claude", model: "anthropic/claude-sonnet-4-5", apiKey: Secret.of("sk-ant-test"), maxOutputTokens: 64_000, maxModelLen: 200_000 },
    ],
  })],
];

/**
 * The shim started as its image starts it (`node src/server.ts` in the bundle's api-shim/, with
 * only its production dependencies installed and NODE_ENV=production) on the bundle's own
 * config: it listens, opens its SQLite ledger (better-sqlite3's native binary, which a bare
 * import does not load), answers a request and drains on SIGTERM to exit 0. A runtime import of
 * a dev dependency, or of a file outside api-shim/, would fail here rather than on the host.
 */
async function servesFromProductionInstall(dir: string): Promise<void> {
  const p = await spawnShim({
    NODE_ENV: "production", SHIM_CONFIG: join(dir, "shim", "config.yaml"), SHIM_DATABASE_URL: `sqlite:${join(tempDir(), "shim.db")}`,
    SHIM_UPSTREAM_URL: "http://127.0.0.1:9/v1", SHIM_ADMIN_TOKEN: "adm-production-install-test",
  }, [], undefined, join(dir, "api-shim"));
  try {
    const res = await fetch(`${p.url}/v1/models`);
    expect(res.status).toBe(401);
    expect((await res.json() as { error: { type: string } }).error.type).toBe("authentication_error");
    p.child.kill("SIGTERM");
    expect((await p.exited).code, p.stderr()).toBe(0);
  } finally {
    p.child.kill("SIGKILL");
  }
}

function written(bundle: Bundle): string {
  const dir = tempDir();
  writeBundle(dir, bundle);
  return dir;
}

it("keeps a $ in vLLM flags and the Let's Encrypt email as typed, through docker-compose's substitution", () => {
  const c = config({ model: { ...base.model, extraArgs: ["--chat-template=$HOME {{x}}", "--x=${PATH}"] }, tls: { mode: "letsencrypt", email: "ops$team@acme.io" } });
  const dir = written(render(c));
  copyFileSync(join(dir, ".env.example"), join(dir, ".env"));
  const result = runTool("docker-compose", ["-f", "compose.yaml", "config"], { cwd: dir });
  expect(result.status).toBe(0);
  // `config` prints the resolved file as a compose file again, so a literal $ shows as $$.
  const resolved = parse(result.output.slice(result.output.indexOf("services:")).replaceAll("$$", "$"));
  expect(resolved.services.vllm.command.slice(-2)).toEqual(["--chat-template=$HOME {{x}}", "--x=${PATH}"]);
  expect(resolved.services.certbot.environment.TLS_EMAIL).toBe("ops$team@acme.io");
});

// The `yaml` package writes YAML 1.2, which leaves `yes`, `on`, `Off`, `1_000`, `1:30`, `0b101` and
// `2025-01-01` plain; YAML 1.1 readers take them for booleans, numbers and dates: LiteLLM loads its
// config with PyYAML (proxy_server.py, yaml.safe_load), and Compose's parsers (docker-compose 1.x:
// PyYAML; Go's yaml.v3 in Compose v2: underscored and 0b numbers, dates) read compose.yaml. A model
// served as "yes" reached LiteLLM as True, and every request for it failed ("Invalid model name").
it("writes model names and vLLM arguments that YAML 1.1 reads as other types so that LiteLLM and docker-compose read the same strings", () => {
  const names = ["on", "Off", "No", "1_000", "1:30", "0b101", "2025-01-01", "y"];
  const args = ["--x", "on", "--y", "1_000", "--z", "1:30", "--d", "2025-01-01", "--b", "0b101", "--n", "NO"];
  const c = config({
    model: { ...base.model, servedName: "yes", aliases: ["true", "null", "0x1F"], extraArgs: args }, keys: [], pricing: { models: { yes: { promptPer1k: 1 }, on: { promptPer1k: 2 } } },
    providers: names.map((name, i) => ({ name, model: `groq/m${i}`, apiKey: Secret.of("gsk_x"), ...(i === 0 ? { aliases: ["False"] } : {}) })),
  });
  const dir = written(renderBundle(c, { images: c.images, bootstrapKeys: [] })); // no key allowed a model this stack lacks
  // Aliases reach the shim alone (its SHIM_CONFIG, read with the yaml package), as the strings written.
  const shim = parseShimConfig({ SHIM_UPSTREAM_URL: "http://litellm:4000/v1", SHIM_CONFIG: "/app/config.yaml" }, () => readFileSync(join(dir, "shim/config.yaml"), "utf8"));
  expect([...shim.modelAliases]).toEqual([["true", "yes"], ["null", "yes"], ["0x1F", "yes"], ["False", "on"]]);
  const read = runTool("python3", ["-c", "import json, sys, yaml; print(json.dumps([m['model_name'] for m in yaml.safe_load(sys.stdin)['model_list']]))"],
    { input: readFileSync(join(dir, "litellm/config.yaml"), "utf8") });
  expect(read.status, read.output).toBe(0);
  expect(JSON.parse(read.output)).toEqual(["yes", ...names]);
  copyFileSync(join(dir, ".env.example"), join(dir, ".env"));
  const result = runTool("docker-compose", ["-f", "compose.yaml", "config"], { cwd: dir });
  expect(result.status, result.output).toBe(0);
  const command: string[] = parse(result.output.slice(result.output.indexOf("services:"))).services.vllm.command;
  // One served name: vLLM never sees an alias (the shim forwards the model's name).
  expect(command.slice(command.indexOf("--served-model-name"), command.indexOf("--served-model-name") + 3)).toEqual(["--served-model-name", "yes", "--host"]);
  expect(command.slice(-args.length)).toEqual(args);
});

/** `nginx -t` on a rendered nginx.conf, with the shim's address one nginx can resolve and a certificate. */
function expectNginxAccepts(conf: string): void {
  const dir = tempDir();
  writeFileSync(join(dir, "nginx.conf"), forLocalNginx(conf).replace("server shim:8080;", "server 127.0.0.1:9;"));
  mkdirSync(join(dir, "tls"));
  const cert = runTool("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
    "-subj", "/CN=localhost", "-keyout", join(dir, "tls/privkey.pem"), "-out", join(dir, "tls/fullchain.pem")]);
  expect(cert.status, cert.output).toBe(0);
  const result = runTool("nginx", ["-t", "-p", dir, "-c", join(dir, "nginx.conf"), "-e", join(dir, "error.log"), "-g", `pid ${dir}/nginx.pid;`]);
  expect(result.status, result.output).toBe(0);
  expect(result.output).toContain("test is successful");
  // Printed at every start and every reload (deploy.sh's): a warning there reads as a misconfiguration.
  expect(result.output).not.toMatch(/\[warn\]/);
}

it("publishes the API's port on IPv4 alone when allowedCidrs has no IPv6 entry, so IPv6 clients cannot pass as Docker's gateway", () => {
  // nginx serves the API to Docker's gateway, the address every IPv6 client has behind Docker's
  // proxy. On Linode the firewall has already held them to allowedCidrs; on a host of your own
  // nothing has, so an IPv4-only list left the API open to every IPv6 address.
  const ports = (overrides: Record<string, unknown>) => parse(render(config(overrides)).get("compose.yaml")!).services.nginx.ports;
  const ipv4Only = { allowedCidrs: ["81.2.69.0/24"], tls: { mode: "self-signed" } };
  expect(ports(ipv4Only)).toEqual(["80:8080", "0.0.0.0:443:8443", "127.0.0.1:8081:8081"]);
  expect(ports({ ...ipv4Only, tls: { mode: "off" } })).toEqual(["0.0.0.0:80:8080", "127.0.0.1:8081:8081"]);
  expect(ports({ ...ipv4Only, allowedCidrs: ["81.2.69.0/24", "2001:db8::/32"] })).toEqual(["80:8080", "443:8443", "127.0.0.1:8081:8081"]);
});

// On a host of your own (no Linode firewall) a narrow IPv6 entry publishes 443 on every address,
// and nginx serves the API to Docker's gateway, the address every IPv6 client arrives as: the
// bundle cannot hold IPv6 clients to the entry, so the plan, pulumi up and new-tenant say so.
it("a narrow IPv6 allowedCidrs entry opens the API to every IPv6 address off Linode, and is warned about", () => {
  const c = config({ allowedCidrs: ["81.2.69.0/24", "2001:db8:1::/48"], tls: { mode: "self-signed" } });
  const bundle = render(c);
  const ports = (parse(bundle.get("compose.yaml")!) as { services: { nginx: { ports: string[] } } }).services.nginx.ports;
  const apiGeo = /geo \$api_client \{([\s\S]*?)\}/.exec(bundle.get("nginx/nginx.conf")!)![1]!;
  expect(ports).toContain("443:8443");
  expect(apiGeo).toMatch(/10\.89\.0\.1\/32\s+1;/);
  expect(configWarnings(c)).toContainEqual(expect.stringMatching(/^allowedCidrs 2001:db8:1::\/48: IPv6 entries narrower than ::\/0 are enforced by Linode's firewall only/));
});

// Found by review: the /0 list also has one geo line (`default 1;`), and was labelled "nobody".
it("labels the /admin geo 'nobody' only when adminCidrs is empty, and 'everyone' when it admits every address", () => {
  const adminGeo = (adminCidrs: string[]) => /geo \$admin_client \{\n([\s\S]*?)\n\s*\}/.exec(render(config({ adminCidrs })).get("nginx/nginx.conf")!)![1]!.split("\n").map((l) => l.trim());
  expect(adminGeo([])).toEqual(["default 0;", "# adminCidrs is empty: nobody."]);
  expect(adminGeo(["81.2.69.161/32", "0.0.0.0/0"])).toEqual(["default 1;", "# adminCidrs holds 0.0.0.0/0: everyone."]);
  expect(adminGeo(["81.2.69.161/32"])).toEqual(["default 0;", "81.2.69.161/32 1;"]);
});

it("turns HTTP/2 on with the `http2` directive, as nginx 1.25.1 and later (the image's 1.30) want it without a warning", () => {
  const conf = render(config()).get("nginx/nginx.conf")!;
  expect(conf).toMatch(/^\s+listen 8443 ssl;$/m);
  expect(conf).toMatch(/^\s+http2 on;$/m);
  expect(conf).not.toMatch(/^\s+listen [^;#]*http2/m);
});

it("starts nginx without warnings for address lists written loosely (host bits set, IPv6 uncompressed) or open to everyone", () => {
  const c = config({ tls: { mode: "self-signed" }, allowedCidrs: ["81.2.69.160/24", "2001:DB8:0:0:1::/48"], adminCidrs: ["81.2.69.161/30", "0.0.0.0/0"] });
  expect([c.allowedCidrs, c.adminCidrs]).toEqual([["81.2.69.0/24", "2001:db8::/48"], ["81.2.69.160/30", "0.0.0.0/0"]]);
  expectNginxAccepts(render(c).get("nginx/nginx.conf")!);
  expectNginxAccepts(render(config({ allowedCidrs: ["0.0.0.0/0", "::/0"] })).get("nginx/nginx.conf")!);
  // Entries that are one network once normalised, and Docker's gateway (always let through) listed too.
  const twice = config({ tls: { mode: "self-signed" }, allowedCidrs: ["81.2.69.160/24", "81.2.69.7/24", "10.89.0.1/32"] });
  expect(twice.allowedCidrs).toEqual(["81.2.69.0/24", "10.89.0.1/32"]);
  expectNginxAccepts(render(twice).get("nginx/nginx.conf")!);
});

it("starts nginx with limits.burst 0 (no burst: nginx refuses burst=0), still limiting the rate", () => {
  const conf = render(config({ limits: { burst: 0 } })).get("nginx/nginx.conf")!;
  expectNginxAccepts(conf);
  expect(conf).not.toContain("burst=");
  // location /, /admin, /metrics and /metrics/vllm (not the host's own port).
  expect(conf.match(/limit_req zone=per_ip;/g)).toHaveLength(4);
  expect(render(config()).get("nginx/nginx.conf")!.match(/limit_req zone=per_ip burst=20 nodelay;/g)).toHaveLength(4);
});

it("starts nginx at the largest value the validator accepts for every limits.* key", () => {
  for (const key of ["requestsPerSecond", "burst", "connections", "maxBodyMb"]) {
    // The largest value, as the validator's own message for one past any range states it.
    const refused = validateConfig({ ...base, limits: { [key]: 1e12 } }, { stack: "acme" });
    const message = refused.ok ? "" : refused.problems.map((p) => p.message).join("\n");
    const max = Number(/must be between \d+ and (\d+)/.exec(message)?.[1]);
    expect(max, key).toBeGreaterThan(0);
    expectNginxAccepts(render(config({ limits: { [key]: max } })).get("nginx/nginx.conf")!);
  }
});

/** Each `location` and `if` block of an nginx.conf: its first line, and its own directives (nested blocks left out). */
function nginxBlocks(conf: string): { head: string; own: string[] }[] {
  const blocks: { head: string; own: string[] }[] = [];
  const open: { head: string; own: string[] }[] = [];
  for (const raw of conf.split("\n")) {
    const line = raw.trim();
    if (line.startsWith("#") || line === "") continue;
    if (line.endsWith("{")) {
      open.push({ head: line, own: [] });
      continue;
    }
    // A one-line block (`if (...) { return 403; }`) has no add_header of its own.
    if (line === "}") {
      const done = open.pop()!;
      if (/^(location|if)\b/.test(done.head)) blocks.push(done);
      continue;
    }
    open.at(-1)?.own.push(line);
  }
  return blocks;
}

it("repeats HSTS and CORS in every block of the API's servers that adds headers of its own, which drops those of the blocks around it", () => {
  // nginx's rule: a location (or `if`) with any add_header inherits none from its server or location.
  const conf = render(config({ tls: { mode: "self-signed" } })).get("nginx/nginx.conf")!;
  const https = conf.slice(conf.indexOf("listen 8443 ssl;"), conf.indexOf("listen 8081"));
  const adding = nginxBlocks(`server {\n${https}`).filter((b) => b.own.some((d) => d.startsWith("add_header ")));
  expect(adding.length).toBeGreaterThan(15);
  for (const { head, own } of adding) {
    if (head !== "location @plain_http {") expect(own, head).toContain("add_header Strict-Transport-Security $hsts always;");
    expect(own, head).toContain("add_header Access-Control-Allow-Origin $cors_origin always;");
    expect(own.some((d) => d.startsWith("add_header Access-Control-Expose-Headers ")) || own.includes("return 204;"), head).toBe(true);
  }
  // /admin and /metrics add none, keeping the server's HSTS and getting no CORS.
  expect(nginxBlocks(`server {\n${https}`).filter((b) => /^location \^~ \/(admin|metrics) /.test(b.head)).map((b) => b.own.filter((d) => d.startsWith("add_header")))).toEqual([[], []]);
});

/** The services `docker compose up` runs: not those of a profile (deploy.sh's nginx-check), which it never starts. */
function stackServices(compose: { services: Record<string, { profiles?: string[] }> }) {
  return Object.fromEntries(Object.entries(compose.services).filter(([, s]) => !s.profiles));
}

describe("vLLM's parallel layout", () => {
  const layout = (plan: string, region: string) => {
    const command: string[] = parse(render(config({ plan, region })).get("compose.yaml")!).services.vllm.command;
    // A flag left out is vLLM's default, 1.
    const flag = (name: string) => (command.includes(name) ? Number(command[command.indexOf(name) + 1]) : 1);
    return [flag("--tensor-parallel-size"), flag("--pipeline-parallel-size")];
  };

  it("uses every GPU, with tensor parallelism only where the size divides the models' attention heads", () => {
    // 3 divides neither Qwen2.5-7B's 28 heads nor Llama's 32: vLLM would refuse to start with -tp 3.
    expect(layout("g1-gpu-rtx6000-3", "us-east")).toEqual([1, 3]);
    expect(layout("g1-gpu-rtx6000-2", "us-east")).toEqual([2, 1]);
    expect(layout("g2-gpu-rtx4000a4-m", "us-ord")).toEqual([4, 1]);
    expect(layout("g2-gpu-rtx4000a1-s", "us-ord")).toEqual([1, 1]);
  });
});

describe("vLLM's report of prompt-cache hits", () => {
  const command = (c: TenantConfig): string[] => parse(render(c).get("compose.yaml")!).services.vllm.command;
  const priced = (price: Record<string, number>, extraArgs: string[] = []) =>
    config({ model: { ...base.model, extraArgs }, pricing: { models: { "qwen2.5-7b": { promptPer1k: 1, completionPer1k: 2, ...price } } } });
  const FLAG = "--enable-prompt-tokens-details";

  it("is asked for when the model's cached prompt tokens are priced lower: chat then reports them, as the Responses API does unasked", () => {
    expect(command(priced({ cachedPromptPer1k: 0.1 }))).toContain(FLAG);
  });

  it("is not asked for otherwise (a new flag restarts vLLM on every upgraded host), nor twice, nor over the operator's own choice", () => {
    expect(command(priced({}))).not.toContain(FLAG);
    expect(command(priced({ cachedPromptPer1k: 1 }))).not.toContain(FLAG); // the same price: nothing to tell apart
    expect(command(priced({ cachedPromptPer1k: 0.1 }, [FLAG])).filter((a) => a === FLAG)).toHaveLength(1);
    expect(command(priced({ cachedPromptPer1k: 0.1 }, ["--no-enable-prompt-tokens-details"]))).not.toContain(FLAG);
    expect(command(priced({ cachedPromptPer1k: 0.1 }, ["--enable_prompt_tokens_details=true"]))).not.toContain(FLAG);
  });
});

describe("vLLM's tool calling (tool_choice \"auto\", the default with tools)", () => {
  const command = (model: Record<string, unknown>): string[] => parse(render(config({ model: { ...base.model, ...model } })).get("compose.yaml")!).services.vllm.command;
  const parserOf = (c: string[]) => (c.includes("--tool-call-parser") ? c[c.indexOf("--tool-call-parser") + 1] : undefined);

  it("is on for the example's model, with the parser vLLM's docs name for Qwen2.5", () => {
    const c = command({});
    expect(c).toContain("--enable-auto-tool-choice");
    expect(parserOf(c)).toBe("hermes");
    expect(parserOf(command({ id: "meta-llama/Llama-3.1-8B-Instruct" }))).toBe("llama3_json");
  });

  it("takes the operator's own parser, or their choice to leave it off, from model.extraArgs, once", () => {
    const own = command({ extraArgs: ["--enable-auto-tool-choice", "--tool-call-parser", "pythonic"] });
    expect(own.filter((a) => a === "--enable-auto-tool-choice")).toHaveLength(1);
    expect(own.filter((a) => a === "--tool-call-parser")).toHaveLength(1);
    expect(parserOf(own)).toBe("pythonic");
    const off = command({ extraArgs: ["--no-enable-auto-tool-choice"] });
    expect(off).not.toContain("--enable-auto-tool-choice");
    expect(off).not.toContain("--tool-call-parser");
  });

  it("is left off for a model without a known parser (vLLM would refuse \"auto\"), and the plan and pulumi up warn", () => {
    const c = command({ id: "Qwen/Qwen3-8B" });
    expect(c).not.toContain("--enable-auto-tool-choice");
    expect(c).not.toContain("--tool-call-parser");
    expect(configWarnings(config({ model: { ...base.model, id: "Qwen/Qwen3-8B" } }))).toContainEqual(expect.stringMatching(/^model\.id Qwen\/Qwen3-8B has no tool-call parser the kit knows: vLLM will refuse/));
  });
});

describe.each(modes)("the bundle, tls %s", (_mode, c) => {
  const bundle = render(c);
  const compose = parse(bundle.get("compose.yaml")!);

  it("passes `docker-compose config` with the .env.example filled in", () => {
    const dir = written(bundle);
    copyFileSync(join(dir, ".env.example"), join(dir, ".env"));
    const result = runTool("docker-compose", ["-f", "compose.yaml", "config", "-q"], { cwd: dir });
    expect(result.output).toBe("");
    expect(result.status).toBe(0);
  });

  it("publishes ports from nginx alone, reserves the GPU and passes the model's flags to vLLM", () => {
    const published = Object.entries(compose.services).filter(([, s]) => (s as { ports?: unknown[] }).ports?.length);
    expect(published.map(([name]) => name)).toEqual(["nginx"]);
    // And the port of the host's own requests, on its loopback alone.
    // (The API's port on IPv4 alone when allowedCidrs lists no IPv6 network, as self-signed's here.)
    const api = c.allowedCidrs.some((cidr) => cidr.includes(":")) ? "" : "0.0.0.0:";
    expect(compose.services.nginx.ports).toEqual(c.tls.mode === "off" ? [`${api}80:8080`, "127.0.0.1:8081:8081"] : ["80:8080", `${api}443:8443`, "127.0.0.1:8081:8081"]);
    expect(compose.services.vllm.deploy.resources.reservations.devices).toEqual([{ driver: "nvidia", count: "all", capabilities: ["gpu"] }]);
    expect(compose.services.vllm.ipc).toBe("host");
    expect(compose.services.vllm.command).toEqual([
      "Qwen/Qwen2.5-7B-Instruct", "--served-model-name", "qwen2.5-7b", "--host", "0.0.0.0", "--port", "8000",
      "--max-model-len", "8192", "--gpu-memory-utilization", "0.9", "--tensor-parallel-size", "1",
      // New in this version: a changed command, so an upgraded host's `docker compose up` restarts vLLM once.
      "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
    ]); // no --pipeline-parallel-size 1: the command of hosts deployed before it existed stays the same (no vLLM restart)
    expect(compose.services.vllm.volumes[0]).toMatch(/\/huggingface:\/root\/\.cache\/huggingface$/);
    expect(compose.services.shim.build.context).toBe("./api-shim");
    expect(compose.services.shim.volumes[0]).toMatch(/\/shim:\/app\/data$/);
  });

  it("wires nginx to the shim at fixed addresses, trusting X-Forwarded-For from nginx alone, with timeouts nested inside OpenAI's SDKs' default", () => {
    const { nginx, shim } = compose.services;
    const ipam = compose.networks.backend.ipam.config[0];
    // Fixed addresses outside the range Docker hands out: a restarted shim is where nginx resolved it.
    expect(shim.networks.backend.ipv4_address).toBe("10.89.0.3");
    expect(nginx.networks.backend.ipv4_address).toBe("10.89.0.2");
    expect(ipam).toEqual({ subnet: "10.89.0.0/24", ip_range: "10.89.0.128/25" });
    expect(shim.environment.SHIM_TRUST_PROXY).toBe("10.89.0.2/32");
    for (const service of Object.keys(stackServices(compose)).filter((n) => n !== "nginx" && n !== "shim")) {
      expect(compose.services[service].networks, service).toEqual(["backend"]); // dynamic, from ip_range
    }
    // deploy.sh's `nginx -t` of a new nginx.conf: no network, `shim` resolved to the shim's address.
    expect(compose.services["nginx-check"]).toMatchObject({ network_mode: "none", extra_hosts: { shim: "10.89.0.3" } });
    // Each layer gives up a little after the one inside it, so the inner one's answer comes back.
    const litellm = parse(bundle.get("litellm/config.yaml")!);
    const nginxRead = Number(/proxy_read_timeout (\d+)s;/.exec(bundle.get("nginx/nginx.conf")!)![1]) * 1000;
    expect(litellm.litellm_settings.request_timeout * 1000).toBeLessThan(Number(shim.environment.SHIM_UPSTREAM_TIMEOUT_MS));
    expect(litellm.router_settings.timeout * 1000).toBeLessThan(Number(shim.environment.SHIM_UPSTREAM_TIMEOUT_MS));
    expect(Number(shim.environment.SHIM_UPSTREAM_TIMEOUT_MS)).toBeLessThan(nginxRead);
    // ...and the shim's (final) 504 comes before OpenAI's SDKs give up (client.js DEFAULT_TIMEOUT,
    // 600 s) and send the generation again, twice.
    expect(Number(shim.environment.SHIM_UPSTREAM_TIMEOUT_MS)).toBeLessThan(600_000);
    // A client that stops reading: the shim's idle timeout cuts it (and settles what it cut) before
    // nginx's send_timeout, whose default of 60 s cut a client well before the documented 600 s.
    const nginxSend = Number(/^\s*send_timeout (\d+)s;/m.exec(bundle.get("nginx/nginx.conf")!)?.[1] ?? 60) * 1000;
    expect(Number(shim.environment.SHIM_STREAM_IDLE_TIMEOUT_MS)).toBeLessThan(nginxSend);
    // Stops: the shim's drain fits its grace period; nginx stops gracefully and as long.
    // The drain, the settle window after it, and closing the upstream pool and the store (each
    // bounded) end before Docker's SIGKILL.
    expect(Number(shim.environment.SHIM_DRAIN_TIMEOUT_MS) + SETTLE_AFTER_DRAIN_MS + CLOSE_WAIT_MS + SHUTDOWN_MS).toBeLessThan(parseInt(shim.stop_grace_period, 10) * 1000);
    expect(nginx).toMatchObject({ stop_signal: "SIGQUIT", stop_grace_period: "30s" });
    // A deploy that recreates the shim leaves nginx running (no `restart: true`, with which Compose
    // stops a service's dependents before recreating it): the old shim drains while nginx relays.
    expect(nginx.depends_on).toEqual({ shim: { condition: "service_healthy" } });
  });

  it("`docker compose down` stops vLLM last, so what is in flight can finish and be settled (Compose stops dependents first)", () => {
    const services = compose.services as Record<string, { depends_on?: Record<string, unknown> }>;
    const waves: string[][] = [];
    const stopped = new Set<string>();
    while (stopped.size < Object.keys(services).length) {
      // A service stops once everything that depends on it has stopped.
      const wave = Object.keys(services).filter((s) => !stopped.has(s) && Object.entries(services).every(([other, def]) => other === s || stopped.has(other) || !(s in (def.depends_on ?? {}))));
      expect(wave.length).toBeGreaterThan(0);
      waves.push(wave);
      for (const s of wave) stopped.add(s);
    }
    const waveOf = (s: string) => waves.findIndex((w) => w.includes(s));
    expect(waveOf("nginx")).toBeLessThan(waveOf("shim"));
    expect(waveOf("shim")).toBeLessThan(waveOf("litellm"));
    expect(waveOf("litellm")).toBeLessThan(waveOf("vllm"));
    // It does not wait for the model to load: LiteLLM starts at once, as before.
    expect(compose.services.litellm.depends_on).toEqual({ vllm: { condition: "service_started" } });
  });

  it("bounds every container's log (rotated, on the root disk) and hardens every container, as `docker-compose config` reads the file", () => {
    const dir = written(bundle);
    copyFileSync(join(dir, ".env.example"), join(dir, ".env"));
    const result = runTool("docker-compose", ["-f", "compose.yaml", "config"], { cwd: dir });
    expect(result.status, result.output).toBe(0);
    const resolved = parse(result.output.slice(result.output.indexOf("services:")));
    for (const [name, service] of Object.entries(resolved.services as Record<string, Record<string, unknown>>)) {
      // Docker's default json-file driver keeps every line forever: nginx logs each refused request.
      expect(service.logging, name).toEqual({ driver: "local", options: { "max-size": "20m", "max-file": "5" } });
      expect(service.security_opt, name).toEqual(["no-new-privileges:true"]);
    }
    // The shim runs as the image's `node` user and writes only its data volume (SQLite's temporary
    // files, if any, in /tmp).
    expect(resolved.services.shim).toMatchObject({ cap_drop: ["ALL"], read_only: true, tmpfs: ["/tmp"] });
    // Docker's init is PID 1 and passes signals on: node as PID 1 would not get a SIGTERM that
    // came before its handlers were set (docker stop during start-up was lost).
    expect(resolved.services.shim.init).toBe(true);
    // Left as they were (decisions.md): vLLM's shared memory, one network for all.
    expect(resolved.services.vllm.ipc).toBe("host");
    expect(Object.keys(compose.networks)).toEqual(["backend"]);
  });

  it("caps every service's memory but vLLM's, swap included, and has the kernel, short of RAM, kill any of them before vLLM, as `docker-compose config` reads the file", () => {
    const dir = written(bundle);
    copyFileSync(join(dir, ".env.example"), join(dir, ".env"));
    const result = runTool("docker-compose", ["-f", "compose.yaml", "config"], { cwd: dir });
    expect(result.status, result.output).toBe(0);
    const resolved = stackServices(parse(result.output.slice(result.output.indexOf("services:")))) as Record<string, Record<string, unknown>>;
    const bytes = (v: unknown) => Number(/^(\d+)([mg])$/.exec(String(v))?.[1]) * (String(v).endsWith("g") ? 1024 : 1) * 2 ** 20;
    for (const [name, service] of Object.entries(resolved).filter(([n]) => n !== "vllm")) {
      // A limit without memswap_limit lets a container use as much swap again (Linode's images have a swap disk).
      expect(bytes(service.mem_limit), name).toBeGreaterThanOrEqual(256 * 2 ** 20);
      expect(service.memswap_limit, name).toBe(service.mem_limit);
      expect(Number(service.oom_score_adj), name).toBeGreaterThan(0);
    }
    // Nothing on vLLM: a new key in its definition recreates it on every upgraded host (minutes of 503s).
    expect(Object.keys(resolved.vllm!).filter((k) => /mem|oom/.test(k))).toEqual([]);
    // The shim's cap holds its body budget's worst case (3 times its bytes) over its 1.5 GiB.
    expect(bytes(resolved.shim!.mem_limit)).toBe((1536 + 3 * 64) * 2 ** 20);
    // SQLite's temporary files (a large report's sort) go to the data volume, not the tmpfs /tmp, which is memory under that cap.
    const dataMount = (resolved.shim!.volumes as string[]).find((v) => String(v).includes("/shim:"))!;
    expect((resolved.shim!.environment as Record<string, string>).SQLITE_TMPDIR).toBe(String(dataMount).split(":")[1]);
  });

  it("keeps every secret a ${…} reference to .env", () => {
    const text = bundle.get("compose.yaml")!;
    expect(text).toContain("${VLLM_API_KEY:?set VLLM_API_KEY in .env}");
    expect(text).toContain("${SHIM_ADMIN_TOKEN:?set SHIM_ADMIN_TOKEN in .env}");
    for (const [, file] of bundle) for (const secret of ["gsk_test", "sk-ant-test"]) expect(file).not.toContain(secret);
  });

  it("runs certbot only for Let's Encrypt", () => {
    expect("certbot" in compose.services).toBe(c.tls.mode === "letsencrypt");
    expect(bundle.has("tls/certbot-renew.sh")).toBe(c.tls.mode === "letsencrypt");
    // certbot-renew.sh asks Let's Encrypt for .env's TLS_DOMAIN, and for nothing without it (a mutation review found it unchecked).
    if (c.tls.mode === "letsencrypt") expect(compose.services.certbot.environment).toMatchObject({ TLS_DOMAIN: "${TLS_DOMAIN:?set TLS_DOMAIN in .env}", TLS_EMAIL: "ops@gpu-sandbox.dev" });
  });

  it("renders an nginx.conf that passes `nginx -t` (upstream address substituted)", () => {
    expectNginxAccepts(bundle.get("nginx/nginx.conf")!);
  });

  it("logs nginx errors only (its lines quote the request line, query string included; warn logged every large body), and lets adminCidrs alone reach /admin", () => {
    const conf = bundle.get("nginx/nginx.conf")!;
    expect(conf).toMatch(/^error_log \/dev\/stderr error;$/m);
    expect(conf).toMatch(/geo \$admin_client \{\n\s+default 0;\n\s+203\.0\.113\.7\/32 1;\n\s+\}/);
    expect(conf).not.toMatch(/^\s+allow 203\.0\.113\.7/m); // `deny` would log the request line on each refusal
  });

  // Found by a mutation review: neither the rate's value, the host's own server (tls off), nor port 80's /healthz under TLS was checked.
  it("holds each address to the stack's rate and parallel requests, serves the host's own port (the deploy's readiness wait) without them, and answers the container's health check", () => {
    const conf = bundle.get("nginx/nginx.conf")!;
    const server = (listen: string) => conf.match(new RegExp(`\\n    server \\{\\n        listen ${listen}[\\s\\S]*?\\n    \\}\\n`))?.[0];
    expect(conf).toContain(`limit_req_zone $binary_remote_addr zone=per_ip:10m rate=${c.limits.requestsPerSecond}r/s;`);
    expect(conf).toContain(`limit_conn per_ip_conn ${c.limits.connections};`);
    const host = server(`${NGINX_LOCAL_PORT} default_server;`);
    expect(host).toContain("proxy_pass http://shim;");
    expect(host).not.toMatch(/^\s*limit_(req|conn) /m); // the directives, not a comment naming them
    // compose.yaml's health check asks port 8080: under TLS, the server that only redirects.
    expect(compose.services.nginx.healthcheck.test).toContain(`http://127.0.0.1:${NGINX_HTTP_PORT}/healthz`);
    expect(server(`${NGINX_HTTP_PORT} default_server;`)).toContain("location = /healthz {");
  });

  it("gives LiteLLM the vLLM model and each provider, keys from the environment", () => {
    const litellm = parse(bundle.get("litellm/config.yaml")!);
    expect(litellm.model_list[0]).toEqual({
      model_name: "qwen2.5-7b",
      litellm_params: { model: "hosted_vllm/qwen2.5-7b", api_base: "http://vllm:8000/v1", api_key: "os.environ/VLLM_API_KEY" },
      // LiteLLM fakes a Responses API stream for a model its price map lacks (BerriAI/litellm
      // utils.py supports_native_streaming: an unknown model is False): the whole answer first.
      model_info: { supports_native_streaming: true },
    });
    expect(litellm.model_list.slice(1)).toEqual(c.providers.map((p, i) => ({
      model_name: p.name, litellm_params: { model: p.model, api_key: `os.environ/${p.provider.toUpperCase()}_API_KEY_${i}` },
    })));
    expect(litellm.general_settings.master_key).toBe("os.environ/LITELLM_MASTER_KEY");
    // LiteLLM's Gemini context caching off (found by review): a message marked cache_control made
    // it store the prompt at Google for an hour or more, billed per token-hour and in no usage.
    expect(litellm.litellm_settings.disable_anthropic_gemini_context_caching_transform).toBe(true);
    for (const p of c.providers.map((x, i) => `${x.provider.toUpperCase()}_API_KEY_${i}`)) {
      expect(compose.services.litellm.environment[p]).toBe(`\${${p}:?set ${p} in .env}`);
    }
  });

  it("renders a shim config the shim's own parser accepts, with prices, tiers, models and key hashes", () => {
    const shimConfig = bundle.get("shim/config.yaml")!;
    const parsed = parseShimConfig({ SHIM_UPSTREAM_URL: "http://litellm:4000/v1", SHIM_CONFIG: "/app/config.yaml" }, () => shimConfig);
    expect(parsed.pricing.request).toBe(1_000_000);
    expect(parsed.tiers.get("developer")).toEqual({ rpm: 100, tpm: 100_000, concurrency: null });
    expect([...parsed.models!.keys()]).toEqual(["qwen2.5-7b", ...c.providers.map((p) => p.name)]);
    expect(parsed.models!.get("qwen2.5-7b")?.maxModelLen).toBe(8192);
    // A provider's maxOutputTokens bounds its answers' hold; without it, the shim's default does.
    for (const p of c.providers) expect(parsed.models!.get(p.name)?.maxOutputTokens, p.name).toBe(p.maxOutputTokens);
    // A provider's context, when set, bounds its prompts' hold (media: the whole context); unset, its media hold 32,768 each.
    // Its models are marked as a provider's: vLLM's completions default of 16 is not theirs, context known or not.
    for (const p of c.providers) expect(parsed.models!.get(p.name), p.name).toMatchObject({ maxModelLen: p.maxModelLen ?? null, provider: true });
    expect(parsed.models!.get("qwen2.5-7b")?.provider).toBeUndefined();
    // Every model is reached through LiteLLM, whose text completion takes only text prompts.
    for (const m of parsed.models!.values()) expect(m, m.name).toMatchObject({ tokenPrompts: false, continuousUsage: false });
    expect(parsed.bootstrapKeys).toEqual([expect.objectContaining({ id: "AbCdEf123456", hash: keys[0]!.hash, tier: "developer" })]);
    expect(shimConfig).not.toMatch(/sk-gs-/);
    // A tier's concurrency cap set in the stack reaches the shim.
    const capped = renderBundle(config({ tiers: { developer: { concurrency: 3 } } }), { images: c.images, bootstrapKeys: keys }).get("shim/config.yaml")!;
    expect(parseShimConfig({ SHIM_UPSTREAM_URL: "http://litellm:4000/v1", SHIM_CONFIG: "/app/config.yaml" }, () => capped).tiers.get("developer")).toEqual({ rpm: 100, tpm: 100_000, concurrency: 3 });
  });

  it("renders a model's mediaPartTokens (the served model's and a provider's) where the stack sets it, and none otherwise", () => {
    const parsedOf = (overrides: Record<string, unknown>) => {
      const shimConfig = renderBundle(config(overrides), { images: c.images, bootstrapKeys: keys }).get("shim/config.yaml")!;
      return parseShimConfig({ SHIM_UPSTREAM_URL: "http://litellm:4000/v1", SHIM_CONFIG: "/app/config.yaml" }, () => shimConfig).models!;
    };
    const providers = [
      { name: "gemini-pro", model: "gemini/gemini-2.5-pro", apiKey: Secret.of("AIzaTest"), mediaPartTokens: 258 },
      { name: "llama-70b", model: "groq/llama-3.3-70b-versatile", apiKey: Secret.of("gsk_test") },
    ];
    const set = parsedOf({ model: { ...base.model, mediaPartTokens: 256 }, providers });
    expect(set.get("qwen2.5-7b")?.mediaPartTokens).toBe(256);
    expect(set.get("gemini-pro")?.mediaPartTokens).toBe(258);
    expect(set.get("llama-70b")?.mediaPartTokens).toBeUndefined();
    const unset = parsedOf({});
    expect(unset.get("qwen2.5-7b")?.mediaPartTokens).toBeUndefined(); // no floor: the part's payload alone
    expect(bundle.get("shim/config.yaml")).not.toContain("mediaPartTokens");
  });

  it("renders model.cacheIsolation into SHIM_CONFIG where the stack sets it, and nothing otherwise (the shim's default, shared)", () => {
    const parsedOf = (overrides: Record<string, unknown>) => {
      const shimConfig = renderBundle(config(overrides), { images: c.images, bootstrapKeys: keys }).get("shim/config.yaml")!;
      return { text: shimConfig, parsed: parseShimConfig({ SHIM_UPSTREAM_URL: "http://litellm:4000/v1", SHIM_CONFIG: "/app/config.yaml" }, () => shimConfig) };
    };
    expect(parsedOf({ model: { ...base.model, cacheIsolation: "key" } }).parsed.cacheIsolation).toBe("key");
    expect(parsedOf({ model: { ...base.model, cacheIsolation: "shared" } }).parsed.cacheIsolation).toBe("shared");
    const unset = parsedOf({});
    expect(unset.parsed.cacheIsolation).toBe("shared");
    expect(unset.text).not.toContain("cacheIsolation");
  });
});

it("charges a model's price whatever its name, one an object has from Object.prototype too", () => {
  for (const name of ["__proto__", "constructor", "toString"]) {
    // Parsed, as Pulumi hands the program its config: a literal { __proto__: … } would set the prototype.
    const raw = JSON.parse(JSON.stringify({ model: { ...base.model, servedName: name }, keys: [], pricing: { models: { [name]: { promptPer1k: 0.5, completionPer1k: 1 } } } }));
    const c = config(raw);
    const shimConfig = renderBundle(c, { images: c.images, bootstrapKeys: [] }).get("shim/config.yaml")!;
    const parsed = parseShimConfig({ SHIM_UPSTREAM_URL: "http://litellm:4000/v1", SHIM_CONFIG: "/app/config.yaml" }, () => shimConfig);
    expect(parsed.pricing.models.get(name), name).toEqual({ promptPer1k: 500_000, completionPer1k: 1_000_000 });
  }
});

it("passes a model's cachedPromptPer1k through to the shim's prices, and writes none for a model without one", () => {
  const c = config({ pricing: { models: { "qwen2.5-7b": { promptPer1k: 0.5, completionPer1k: 1, cachedPromptPer1k: 0.05 } } } });
  const shimConfig = render(c).get("shim/config.yaml")!;
  const parsed = parseShimConfig({ SHIM_UPSTREAM_URL: "http://litellm:4000/v1", SHIM_CONFIG: "/app/config.yaml" }, () => shimConfig);
  expect(parsed.pricing.models.get("qwen2.5-7b")).toEqual({ promptPer1k: 500_000, completionPer1k: 1_000_000, cachedPromptPer1k: 50_000 });
  const without = render(config({ pricing: { models: { "qwen2.5-7b": { promptPer1k: 0.5, completionPer1k: 1 } } } })).get("shim/config.yaml")!;
  expect(without).not.toContain("cachedPromptPer1k");
});

describe("writing the bundle to a directory", () => {
  const bundle = render(config());
  const withFile = (path: string, content: string): Bundle => {
    const files = new Map(bundle);
    files.set(path, content);
    files.set(MANIFEST, [...files.keys()].filter((k) => k !== MANIFEST).sort().map((k) => `${sha256(files.get(k)!)}  ${k}\n`).join(""));
    return files;
  };

  it("replaces an earlier bundle whole, leaving no file the new one dropped, and keeps what it did not write", () => {
    const dir = tempDir();
    writeFileSync(join(dir, ".env"), "SHIM_ADMIN_TOKEN=keep-me\n");
    mkdirSync(join(dir, "deploy"));
    writeFileSync(join(dir, "deploy", "notes.txt"), "mine\n");
    writeBundle(dir, withFile("old/only/dropped.txt", "from an older bundle\n"), new Map([["cloud-init.yaml", "#cloud-config\n"]]));
    expect(existsSync(join(dir, "old/only/dropped.txt"))).toBe(true);
    writeBundle(dir, bundle, new Map([["cloud-init.yaml", "#cloud-config\n# new\n"]]));
    expect(existsSync(join(dir, "old"))).toBe(false);
    expect(readFileSync(join(dir, ".env"), "utf8")).toBe("SHIM_ADMIN_TOKEN=keep-me\n");
    expect(readFileSync(join(dir, "deploy", "notes.txt"), "utf8")).toBe("mine\n");
    expect(readFileSync(join(dir, "cloud-init.yaml"), "utf8")).toBe("#cloud-config\n# new\n");
    expect(runTool("sha256sum", ["--strict", "--quiet", "-c", MANIFEST], { cwd: dir }).status).toBe(0);
  });

  it("refuses, changing nothing, to write over a file no earlier bundle wrote", () => {
    const dir = tempDir();
    writeFileSync(join(dir, "compose.yaml"), "services: {} # hand-written\n");
    writeFileSync(join(dir, ".env"), "X=1\n");
    expect(() => writeBundle(dir, bundle)).toThrow(BundleDirError);
    expect(() => writeBundle(dir, bundle)).toThrow(/holds files no earlier render wrote that this one would replace \(compose\.yaml\)/);
    expect(readdirSync(dir).sort()).toEqual([".env", "compose.yaml"]);
    expect(readFileSync(join(dir, "compose.yaml"), "utf8")).toBe("services: {} # hand-written\n");
  });

  // The host (rsync -a, Dockerfile COPY keep modes) has non-root readers: the shim (uid 1000) of
  // its source and bind-mounted config, LiteLLM of its config. The operator's umask must not decide.
  it("writes files and the directories it makes readable by all, whatever the umask", () => {
    const dir = join(tempDir(), "bundle");
    const old = process.umask(0o077);
    try {
      writeBundle(dir, bundle, new Map([["cloud-init.yaml", "#cloud-config\n"]]));
    } finally {
      process.umask(old);
    }
    const walk = (d: string): string[] => readdirSync(d, { withFileTypes: true }).flatMap((e) => e.isDirectory() ? [join(d, e.name), ...walk(join(d, e.name))] : [join(d, e.name)]);
    const modes = [dir, ...walk(dir)].map((p) => [relative(dir, p) || ".", (statSync(p).mode & 0o777).toString(8)]);
    const expected = (p: string) => statSync(join(dir, p)).isDirectory() || p.endsWith(".sh") ? "755" : "644";
    expect(modes).toEqual(modes.map(([p]) => [p, expected(p!)]));
  });

  it("does not follow a manifest's path out of the directory", () => {
    const parent = tempDir();
    const dir = join(parent, "bundle");
    writeBundle(dir, bundle);
    writeFileSync(join(parent, "outside.txt"), "keep\n");
    writeFileSync(join(dir, MANIFEST), `${bundle.get(MANIFEST)}${"0".repeat(64)}  ../outside.txt\n`);
    writeBundle(dir, bundle);
    expect(readFileSync(join(parent, "outside.txt"), "utf8")).toBe("keep\n");
  });
});

describe("the bundle's files", () => {
  const bundle = render(config());

  it("lists every file with its SHA-256 in the manifest the host verifies", () => {
    const dir = written(bundle);
    const result = runTool("sha256sum", ["--strict", "-c", MANIFEST], { cwd: dir });
    expect(result.status, result.output).toBe(0);
    expect(bundle.get(MANIFEST)!.trim().split("\n")).toHaveLength(bundle.size - 1);
    const tampered = written(bundle);
    writeFileSync(join(tampered, "compose.yaml"), "services: {}\n");
    expect(runTool("sha256sum", ["--strict", "--quiet", "-c", MANIFEST], { cwd: tampered }).status).not.toBe(0);
  });

  it("holds every file the shim's Dockerfile copies", () => {
    const dockerfile = bundle.get("api-shim/Dockerfile")!;
    const sources = dockerfile.split("\n").filter((l) => /^COPY\s/.test(l)).flatMap((l) => l.trim().split(/\s+/).slice(1, -1));
    expect(sources).toEqual(["package.json", "package-lock.json", "src/"]);
    for (const source of sources) {
      const path = `api-shim/${source}`;
      expect(source.endsWith("/") ? [...bundle.keys()].some((k) => k.startsWith(path)) : bundle.has(path), path).toBe(true);
    }
    expect(bundle.has("api-shim/src/server.ts")).toBe(true);
    expect(bundle.get("api-shim/.dockerignore")).not.toMatch(/^(src|package(-lock)?\.json)$/m);
  });

  it("builds the shim on a Node 24 slim image, as a non-root user, with production dependencies only (issue #3, item 9)", () => {
    const dockerfile = bundle.get("api-shim/Dockerfile")!;
    // The image the host builds from: compose's NODE_IMAGE build argument, else the ARG's default.
    const nodeImage = String((parse(bundle.get("compose.yaml")!) as { services: { shim: { build: { args: Record<string, unknown> } } } }).services.shim.build.args.NODE_IMAGE);
    expect(dockerfileProblems(dockerfile)).toEqual([]);
    expect(dockerfileProblems(dockerfile, { NODE_IMAGE: nodeImage })).toEqual([]);
    // Each requirement is checked: a Dockerfile that breaks it is caught.
    const broken: [string, string, RegExp][] = [
      [dockerfile.replace("ARG NODE_IMAGE=node:24-slim", "ARG NODE_IMAGE=node:24"), "full image", /not a node:24 slim image/],
      [dockerfile.replace("ARG NODE_IMAGE=node:24-slim", "ARG NODE_IMAGE=node:22-slim"), "Node 22", /not a node:24 slim image/],
      [dockerfile.replace(/^USER node\n/m, ""), "no USER", /no non-root USER/],
      [dockerfile.replace(/^USER node$/m, "USER root"), "USER root", /no non-root USER/],
      [dockerfile.replace(/^(CMD .*)$/m, "USER 0\n$1"), "USER 0 last", /no non-root USER/],
      [dockerfile.replace(/^USER node\n/m, "").replace(/^(CMD .*)$/m, "$1\nUSER node"), "USER only after CMD", /no non-root USER before CMD/],
      [dockerfile.replace("npm ci --omit=dev", "npm ci"), "dev dependencies", /without omitting dev dependencies/],
      [`${dockerfile}\nRUN npm install left-pad\n`, "a later install", /without omitting dev dependencies/],
    ];
    for (const [text, what, problem] of broken) {
      expect(text, what).not.toBe(dockerfile);
      expect(dockerfileProblems(text).join("\n"), what).toMatch(problem);
    }
    expect(dockerfileProblems(dockerfile, { NODE_IMAGE: "node:24-bookworm" })).toEqual(["the base image node:24-bookworm is not a node:24 slim image"]);
    expect(dockerfileProblems(dockerfile, { NODE_IMAGE: `node:24.11.1-bookworm-slim@sha256:${"a".repeat(64)}` })).toEqual([]);
  });

  it("has a standalone lockfile that `npm ci --omit=dev` installs, with the shim's dependencies, from which the shim serves", async () => {
    const dir = written(bundle);
    const pkg = JSON.parse(bundle.get("api-shim/package.json")!);
    expect(pkg.devDependencies).toBeUndefined();
    const lock = JSON.parse(bundle.get("api-shim/package-lock.json")!);
    for (const dep of Object.keys(pkg.dependencies)) expect(lock.packages[`node_modules/${dep}`], dep).toBeDefined();
    const result = runTool("npm", ["ci", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund"], { cwd: join(dir, "api-shim") });
    expect(result.status, result.output).toBe(0);
    const load = runTool("node", ["-e", "import('fastify').then(() => import('better-sqlite3')).then(() => console.log('loaded'))"], { cwd: join(dir, "api-shim") });
    expect(load.output.trim()).toBe("loaded");
    await servesFromProductionInstall(dir);
  }, 120_000);

  it("orders the standalone lockfile's packages by code unit, never by the operator's locale", () => {
    // Lithuanian collation puts y between i and j: a localeCompare sort would follow LANG.
    const names = ["node_modules/yaml", "node_modules/jose", "node_modules/ipaddr.js"];
    expect([...names].sort((a, b) => a.localeCompare(b, "lt"))).not.toEqual([...names].sort());
    const entries = Object.fromEntries(names.map((n) => [n, { version: "1.0.0" }]));
    // This process as an operator whose LANG is lt_LT would run it.
    const localeCompare = String.prototype.localeCompare;
    const lithuanian = vi.spyOn(String.prototype, "localeCompare").mockImplementation(function (this: string, that: string) {
      return localeCompare.call(this, that, "lt");
    });
    try {
      const lock = standaloneLockfile(
        { lockfileVersion: 3, packages: { "": { name: "root" }, ...entries } },
        { name: "shim", version: "1.0.0", dependencies: { yaml: "1", jose: "1", "ipaddr.js": "1" } },
      );
      expect(Object.keys(lock.packages)).toEqual(["", "node_modules/ipaddr.js", "node_modules/jose", "node_modules/yaml"]);
    } finally {
      lithuanian.mockRestore();
    }
    const rendered = Object.keys(JSON.parse(bundle.get("api-shim/package-lock.json")!).packages).slice(1);
    expect(rendered).toEqual([...rendered].sort());
  });

  it("renders the same bundle (no redeploy) under any operator locale", () => {
    // Node's ICU takes its default locale from LANG, with no system locale installed.
    const script = [
      `import { bundleHash, renderBundle } from ${JSON.stringify(join(ROOT, "infra/render/bundle.ts"))};`,
      `import { validateConfig } from ${JSON.stringify(join(ROOT, "infra/config.ts"))};`,
      `const r = validateConfig(${JSON.stringify(base)}, { stack: "acme" });`,
      `if (!r.ok) throw new Error(JSON.stringify(r.problems));`,
      `console.log(Intl.Collator().resolvedOptions().locale, bundleHash(renderBundle(r.config, { images: r.config.images, bootstrapKeys: [] })));`,
    ].join("\n");
    const under = (lang: string) => {
      const run = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", env: { PATH: process.env.PATH, LANG: lang } });
      expect(run.status, run.stderr).toBe(0);
      return run.stdout.trim().split(" ");
    };
    const [, reference] = under("en_US.UTF-8");
    const [locale, hash] = under("lt_LT.UTF-8");
    expect(locale).toBe("lt-LT"); // the child did collate as Lithuanian
    expect(hash).toBe(reference);
  });

  it("bin/make-self-signed-cert.sh writes nginx's certificate with .env's secrets still placeholders, and says what is missing without .env", () => {
    const dir = written(bundle);
    const missing = runTool("bash", [join(dir, "bin/make-self-signed-cert.sh"), "203.0.113.7"]);
    expect(missing.status).toBe(1);
    expect(missing.output).toMatch(/^no \.env in .*: cp \.env\.example \.env/);
    const data = tempDir();
    const example = readFileSync(join(dir, ".env.example"), "utf8");
    writeFileSync(join(dir, ".env"), example.replace(/^GS_DATA_DIR=.*$/m, `GS_DATA_DIR=${data}`));
    const made = runTool("bash", [join(dir, "bin/make-self-signed-cert.sh"), "203.0.113.7"]);
    expect(made.status, made.output).toBe(0);
    const cert = runTool("openssl", ["x509", "-noout", "-ext", "subjectAltName", "-in", join(data, "tls", "fullchain.pem")]);
    expect(cert.output).toContain("IP Address:203.0.113.7");
  });

  it.each(["bin/deploy.sh", "bin/wait-ready.sh", "bin/make-self-signed-cert.sh", "bin/check-certificate.sh", "nginx/reload-on-cert-change.sh"])("%s passes shellcheck", (path) => {
    const dir = written(bundle);
    const result = runTool("shellcheck", ["-x", join(dir, path)]);
    expect(result.output).toBe("");
    expect(result.status).toBe(0);
  });

  it("changes with the model, prices and keys, and only with what is rendered", () => {
    const hash = bundleHash(bundle);
    expect(bundleHash(render(config()))).toBe(hash);
    expect(bundleHash(render(config({ model: { id: "mistralai/Mistral-7B-Instruct-v0.3", servedName: "qwen2.5-7b" } })))).not.toBe(hash);
    expect(bundleHash(render(config({ pricing: { request: 2 } })))).not.toBe(hash);
    expect(bundleHash(renderBundle(config(), { images: config().images, bootstrapKeys: [] }))).not.toBe(hash);
  });
});

describe(".env", () => {
  const c = modes[2]![1];
  const entries = envEntries(c, { vllmApiKey: "v".repeat(48), litellmMasterKey: "sk-m", shimAdminToken: "a".repeat(48), providerKeys: ["gsk_1", "sk-ant-2"] }, "llm.example.com");

  it("carries every variable compose.yaml needs, and the example lists the same ones", () => {
    const text = renderEnvFile(entries);
    expect(text).toContain("GROQ_API_KEY_0=gsk_1\n");
    expect(text).toContain("ANTHROPIC_API_KEY_1=sk-ant-2\n");
    const needed = [...render(c).get("compose.yaml")!.matchAll(/\$\{([A-Z0-9_]+)/g)].map((m) => m[1]);
    const names = entries.map(([n]) => n);
    for (const n of needed) expect(names).toContain(n);
    const example = render(c).get(".env.example")!;
    for (const n of names) expect(example).toMatch(new RegExp(`^${n}=`, "m"));
  });

  // Found by a mutation review: neither was pinned.
  it("names the Compose project, so the containers are gpu-sandbox-<service>-1 in any directory, and refuses a provider without its key", () => {
    expect(entries[0]).toEqual(["COMPOSE_PROJECT_NAME", "gpu-sandbox"]);
    expect(render(c).get(".env.example")).toMatch(/^COMPOSE_PROJECT_NAME=gpu-sandbox$/m);
    // Written as "undefined", the provider would answer every request 401.
    expect(() => envEntries(c, { vllmApiKey: "v", litellmMasterKey: "sk-m", shimAdminToken: "a", providerKeys: ["gsk_1"] }, "llm.example.com"))
      .toThrow("no API key for provider claude");
  });

  // Found by a mutation review: HF_TOKEN written empty (a gated model's download refused) and one
  // secret written under another's name both passed.
  it("writes each secret under its own name, the stack's hfToken (gated models) included", () => {
    const text = renderEnvFile(envEntries(c, { vllmApiKey: "vk", litellmMasterKey: "sk-m", shimAdminToken: "at", hfToken: "hf_gated", providerKeys: ["gsk_1", "sk-ant-2"] }, "llm.example.com"));
    for (const line of ["VLLM_API_KEY=vk\n", "LITELLM_MASTER_KEY=sk-m\n", "SHIM_ADMIN_TOKEN=at\n", "HF_TOKEN=hf_gated\n", "TLS_DOMAIN=llm.example.com\n"]) expect(text).toContain(line);
  });

  it("refuses values Compose would interpret", () => {
    expect(() => renderEnvFile([["HF_TOKEN", "a b"]])).toThrow(/characters Compose would interpret/);
    expect(() => renderEnvFile([["HF_TOKEN", "x$y"]])).toThrow(/characters Compose would interpret/);
    expect(sha256("x")).toHaveLength(64);
  });

  it("asks for the host's DNS name only where certbot needs one (letsencrypt without tls.domain); elsewhere nothing reads it", () => {
    const domain = (cfg: TenantConfig) => /^TLS_DOMAIN=(.*)$/m.exec(render(cfg).get(".env.example")!)![1];
    expect(domain(config({ tls: { mode: "letsencrypt" } }))).toBe(DNS_NAME_PLACEHOLDER);
    expect(domain(config({ tls: { mode: "letsencrypt", domain: "llm.acme.io" } }))).toBe("llm.acme.io");
    expect(domain(config({ tls: { mode: "self-signed" } }))).toBe("");
    expect(domain(config({ tls: { mode: "off" } }))).toBe("");
  });

  it("the shim refuses .env.example's admin token placeholder: an operator who left it would guard /admin with a published token", () => {
    const example = render(c).get(".env.example")!;
    const token = /^SHIM_ADMIN_TOKEN=(.*)$/m.exec(example)![1]!;
    expect(() => parseShimConfig({ SHIM_UPSTREAM_URL: "http://litellm:4000/v1", SHIM_ADMIN_TOKEN: token }, () => "")).toThrow(/SHIM_ADMIN_TOKEN: is still a placeholder/);
    // While what `pulumi up` writes there (48 letters and digits) is accepted.
    expect(parseShimConfig({ SHIM_UPSTREAM_URL: "http://litellm:4000/v1", SHIM_ADMIN_TOKEN: entries.find(([n]) => n === "SHIM_ADMIN_TOKEN")![1] }, () => "").adminToken).toHaveLength(48);
  });
});

it("the rendered cloud-init does not change when serving config changes", async () => {
  const { renderCloudInit } = await import("../../infra/render/cloud-init.ts");
  const a = renderCloudInit({ tenant: "acme", volumeDevice: "/dev/x" });
  expect(readFileSync(new URL("../../templates/cloud-init.yaml", import.meta.url), "utf8")).not.toContain("qwen");
  expect(a).not.toContain("qwen");
});

describe("applying config changes to running containers", () => {
  // Compose recreates a container only when its service definition changes; the content of a
  // bind-mounted file is not part of it. The rendered definitions must change with the files.
  const services = (c: TenantConfig, k = keys) => stackServices(parse(renderBundle(c, { images: c.images, bootstrapKeys: k }).get("compose.yaml")!)) as Record<string, unknown>;
  const changed = (a: Record<string, unknown>, b: Record<string, unknown>) =>
    Object.keys({ ...a, ...b }).filter((name) => JSON.stringify(a[name]) !== JSON.stringify(b[name])).sort();
  const before = services(config());

  // Found by a mutation review: a file compose.yaml mounts but the bundle lacks would have Docker
  // create an empty directory in its place on the host, and the service start without its config.
  it("refuses to render a service that mounts a file the bundle does not have", () => {
    const files = new Map(render(config()));
    files.delete("litellm/config.yaml");
    expect(() => renderCompose(config(), config().images, files)).toThrow("compose.yaml: service litellm mounts ./litellm/config.yaml, which the bundle does not have");
  });

  it("recreates the shim, and only the shim, for a new key, price or tier", () => {
    expect(changed(before, services(config(), [...keys, { ...keys[0]!, id: "ZyXwVu987654", name: "ci" }]))).toEqual(["shim"]);
    expect(changed(before, services(config({ pricing: { request: 3 } })))).toEqual(["shim"]);
    expect(changed(before, services(config({ tiers: { free: { rpm: 1, tpm: 1 } } })))).toEqual(["shim"]);
    // The shim enforces limits.structuredOutputs (SHIM_CONFIG), not nginx; a map setting nothing restarts nothing.
    expect(changed(before, services(config({ limits: { structuredOutputs: { maxDepth: 20 } } })))).toEqual(["shim"]);
    expect(changed(before, services(config({ limits: { structuredOutputs: false } })))).toEqual(["shim"]);
    expect(changed(before, services(config({ limits: { structuredOutputs: {} } })))).toEqual([]);
  });

  it("recreates nginx, and only nginx, for new admin or allowed addresses or edge limits; the shim too for a new body size, which it enforces as well", () => {
    expect(changed(before, services(config({ adminCidrs: ["198.51.100.1/32"] })))).toEqual(["nginx"]);
    const selfSigned = { tls: { mode: "self-signed" } }; // Let's Encrypt needs allowedCidrs open to everyone
    expect(changed(services(config(selfSigned)), services(config({ ...selfSigned, allowedCidrs: ["81.2.69.0/24", "::/0"] })))).toEqual(["nginx"]);
    for (const limits of [{ burst: 5 }, { requestsPerSecond: 20 }, { connections: 50 }]) {
      expect(changed(before, services(config({ limits }))), JSON.stringify(limits)).toEqual(["nginx"]);
    }
    expect(changed(before, services(config({ limits: { maxBodyMb: 16 } })))).toEqual(["nginx", "shim"]);
    // A body larger than the shim's body budget (64 MiB) raises its memory cap: one such body is always let in, at 3 times its bytes.
    const large = services(config({ limits: { maxBodyMb: 256 } })) as Record<string, { mem_limit?: string }>;
    expect(large.shim!.mem_limit).toBe(`${1536 + 3 * 256}m`);
  });

  it("restarts nothing for a new readyTimeoutMinutes, while vLLM's health check still never fails a deploy that waits up to the longest one", () => {
    expect(changed(before, services(config({ readyTimeoutMinutes: 90 })))).toEqual([]);
    const refused = validateConfig({ ...base, readyTimeoutMinutes: 1e9 }, { stack: "acme" });
    const longest = Number(/must be between \d+ and (\d+)/.exec(refused.ok ? "" : refused.problems[0]!.message)?.[1]);
    const vllm = before.vllm as { healthcheck: { start_period: string } };
    // Failed checks count only after start_period: before, `docker compose up --wait` keeps waiting (up to its --wait-timeout).
    expect(parseInt(vllm.healthcheck.start_period, 10)).toBeGreaterThanOrEqual(longest * 60);
  });

  it("recreates vLLM, LiteLLM and the shim together when the served model changes", () => {
    expect(changed(before, services(config({ model: { id: "Qwen/Qwen2.5-7B-Instruct", servedName: "qwen" }, keys: [], pricing: {} }), [])))
      .toEqual(["litellm", "shim", "vllm"]);
  });
});

// Found by a mutation review: the bootstrap keys' credits and names, a configured batch price, the
// unauthenticated rate and the shim's body limit were rendered without a test reading them back.
describe("the shim's settings as the shim reads them", () => {
  const shimEnv = { SHIM_UPSTREAM_URL: "http://litellm:4000/v1", SHIM_CONFIG: "/app/config.yaml" };
  const parsedFor = (c: TenantConfig, k: BootstrapKeyRecord[] = keys) =>
    parseShimConfig(shimEnv, () => renderBundle(c, { images: c.images, bootstrapKeys: k }).get("shim/config.yaml")!);

  it("grants each bootstrap key its credits under its name, and allows a key without models every model", () => {
    const all: BootstrapKeyRecord = { id: "ZyXwVu987654", name: "ci", hash: `sha256:${"cd".repeat(32)}`, credits: 5.5, tier: "free", models: [] };
    const parsed = parsedFor(config(), [...keys, all]);
    expect(parsed.bootstrapKeys).toEqual([
      { id: "AbCdEf123456", name: "app", hash: keys[0]!.hash, credits: 1_000_000_000, tier: "developer", models: ["qwen2.5-7b"] },
      { id: "ZyXwVu987654", name: "ci", hash: all.hash, credits: 5_500_000, tier: "free", models: null },
    ]);
  });

  it("charges the stack's batch request price, and throttles requests without a valid key at 60 a minute per address", () => {
    const parsed = parsedFor(config({ pricing: { ...base.pricing, batchRequest: 3 } }));
    expect(parsed.pricing.batchRequest).toBe(3_000_000);
    expect(parsed.unauthenticatedRpm).toBe(60);
    expect(parsed.defaultTier).toBe("free");
  });

  it("refuses in the shim exactly the bodies nginx refuses: SHIM_MAX_BODY_BYTES is client_max_body_size", () => {
    for (const maxBodyMb of [1, 16]) {
      const bundle = render(config({ limits: { maxBodyMb } }));
      const nginxMb = Number(/^\s*client_max_body_size (\d+)m;/m.exec(bundle.get("nginx/nginx.conf")!)![1]);
      expect(nginxMb).toBe(maxBodyMb);
      // nginx's `m` is 1024 * 1024 bytes.
      expect(Number(parse(bundle.get("compose.yaml")!).services.shim.environment.SHIM_MAX_BODY_BYTES)).toBe(nginxMb * 1024 * 1024);
    }
  });
});

// Found by a mutation review: unpinned, each could be dropped from templates/ with every test passing.
describe.each(modes)("what keeps the tls %s stack up and its edge tight", (_mode, c) => {
  const bundle = render(c);

  it("restarts every container that stops on its own (a crash, an OOM kill, a host reboot)", () => {
    const services = stackServices(parse(bundle.get("compose.yaml")!)) as Record<string, { restart?: string }>;
    expect(Object.keys(services)).toContain("nginx");
    for (const [name, service] of Object.entries(services)) expect(service.restart, name).toBe("unless-stopped");
  });

  it("hides nginx's version, and serves TLS 1.2 and 1.3 only, without session tickets (forward secrecy)", () => {
    const conf = bundle.get("nginx/nginx.conf")!;
    expect(conf).toMatch(/^\s*server_tokens off;$/m);
    if (c.tls.mode === "off") return;
    expect(conf).toMatch(/^\s*ssl_protocols TLSv1\.2 TLSv1\.3;$/m);
    expect(conf).toMatch(/^\s*ssl_session_tickets off;$/m);
  });
});

// Found by a mutation review: a value whose placeholder left a template (nginx's limit_conn line
// deleted, say) would render without it and without a word.
it("refuses to fill a template with a value it has no placeholder for, as with a placeholder it has no value for", async () => {
  const { fillTemplate } = await import("../../infra/render/template.ts");
  expect(fillTemplate("limit_conn per_ip_conn {{connections}};", { connections: 100 })).toBe("limit_conn per_ip_conn 100;");
  expect(() => fillTemplate("limit_req zone=per_ip;", { connections: 100 }, "nginx/api-locations.conf"))
    .toThrow("nginx/api-locations.conf: values without a placeholder: connections");
  expect(() => fillTemplate("{{connections}} {{burst}}", { connections: 100 }, "x")).toThrow("x: no value for placeholder {{burst}}");
});

// Found by a mutation review: LiteLLM's own settings were rendered unread by any test.
it("has LiteLLM make one upstream call per request, keep prompts out of its logs and never cool a model down", () => {
  const litellm = parse(render(config()).get("litellm/config.yaml")!);
  // A retry would be generated, and metered by the upstream, twice; the shim charges once.
  expect(litellm.litellm_settings.num_retries).toBe(0);
  expect(litellm.router_settings.num_retries).toBe(0);
  // With one deployment per model, a cooldown would refuse every request for a while.
  expect(litellm.router_settings.disable_cooldowns).toBe(true);
  expect(litellm.litellm_settings.turn_off_message_logging).toBe(true);
  // Unsupported parameters are the upstream's error to report, not silently dropped.
  expect(litellm.litellm_settings.drop_params).toBe(false);
  expect(litellm.general_settings).toMatchObject({ disable_spend_logs: true, health_check_details: false });
});

// Found by a mutation review: quoting every string reads back the same, so every other test
// passed, but a host upgraded to it gets a changed compose.yaml and LiteLLM config, and restarts
// vLLM (minutes of 503s) for nothing. Only strings YAML 1.1 would misread are quoted.
it("leaves ordinary strings unquoted in the files YAML 1.1 readers load, so an upgrade renders them byte for byte as before", () => {
  const bundle = render(config());
  const litellm = bundle.get("litellm/config.yaml")!;
  expect(litellm).toContain("  - model_name: qwen2.5-7b\n    litellm_params:\n      model: hosted_vllm/qwen2.5-7b\n      api_base: http://vllm:8000/v1\n");
  const compose = bundle.get("compose.yaml")!;
  expect(compose).toMatch(/^ {6}- Qwen\/Qwen2\.5-7B-Instruct\n {6}- --served-model-name\n {6}- qwen2\.5-7b\n/m);
  expect(compose).toMatch(/^ {6}SHIM_TRUST_PROXY: 10\.89\.0\.2\/32$/m);
  // While a name YAML 1.1 reads as a boolean is quoted.
  expect(render(config({ model: { ...base.model, servedName: "yes" }, keys: [], pricing: {} })).get("litellm/config.yaml")).toContain('  - model_name: "yes"\n');
});

// Found by a mutation review: ::/0 listed in the geo beside its default warned at every reload.
it("starts nginx without warnings for an allowedCidrs of some IPv4 networks and every IPv6 address", () => {
  expectNginxAccepts(render(config({ tls: { mode: "self-signed" }, allowedCidrs: ["81.2.69.0/24", "::/0"] })).get("nginx/nginx.conf")!);
});

/**
 * What of issue #3's Dockerfile requirements (Node 24 slim, non-root, production dependencies
 * only) a Dockerfile breaks, read statically: the final stage's base with its ARGs resolved
 * (`args`: the build's --build-arg), a USER other than root set before its CMD/ENTRYPOINT and
 * left so, and every `npm ci`/`npm install` told to omit dev dependencies (explicitly: an ENV
 * NODE_ENV moved or dropped later would otherwise install them without a word).
 */
function dockerfileProblems(text: string, args: Record<string, string> = {}): string[] {
  const instructions = text.replace(/\\\n/g, " ").split("\n").map((l) => l.trim()).filter((l) => l !== "" && !l.startsWith("#"))
    .map((l) => { const [, op, rest] = /^(\S+)\s*(.*)$/.exec(l)!; return { op: op!.toUpperCase(), rest: rest! }; });
  const defaults: Record<string, string> = {};
  let stage: typeof instructions = [];
  let base = "";
  for (const ins of instructions) {
    if (ins.op === "ARG" && stage.length === 0 && base === "") {
      const [name, value] = ins.rest.split("=", 2);
      if (value !== undefined) defaults[name!] = value;
    } else if (ins.op === "FROM") {
      base = ins.rest.split(/\s+/)[0]!.replace(/\$\{?(\w+)\}?/g, (_, name: string) => args[name] ?? defaults[name] ?? "");
      stage = [];
    } else stage.push(ins);
  }
  const problems: string[] = [];
  if (!/^(docker\.io\/(library\/)?)?node:24(\.\d+){0,2}(-[a-z]+)?-slim(@sha256:[0-9a-f]{64})?$/.test(base)) problems.push(`the base image ${base} is not a node:24 slim image`);
  const start = stage.findIndex((i) => i.op === "CMD" || i.op === "ENTRYPOINT");
  const users = (start === -1 ? stage : stage.slice(0, start)).filter((i) => i.op === "USER").map((i) => i.rest.split(":")[0]!);
  const lastUser = stage.filter((i) => i.op === "USER").at(-1)?.rest.split(":")[0];
  if (start === -1 || users.length === 0 || ["root", "0"].includes(users.at(-1)!) || ["root", "0"].includes(lastUser!)) problems.push("no non-root USER before CMD/ENTRYPOINT");
  for (const run of stage.filter((i) => i.op === "RUN")) {
    for (const command of run.rest.split(/&&|;|\|\|/)) {
      if (/\bnpm\s+(ci|install|i)\b/.test(command) && !/--omit[= ]dev\b|--production\b|--only[= ]prod(uction)?\b/.test(command)) problems.push(`\`${command.trim()}\` runs without omitting dev dependencies`);
    }
  }
  return problems;
}
