import { costOf, costOver, VOLUME_USD_PER_GB_MONTH } from "./catalog.ts";
import type { TenantConfig } from "./config.ts";
import { narrowIpv6AllowedWarning, OWN_ADDRESS_HINT, unreachableAdminEntries, unreachableAdminWarning } from "./config/addresses.ts";
import { modelSizeWarnings } from "./config/model-size.ts";
import { toolCallingWarnings } from "./config/tool-calling.ts";
import { contentLoggingWarnings } from "./config/vllm.ts";
import { resourceNames, webPortSources } from "./host.ts";

export interface PlannedResource {
  /** Pulumi type token, e.g. `linode:index/instance:Instance`. */
  readonly type: string;
  readonly name: string;
  readonly note: string;
}

export interface OpenPort {
  readonly port: number;
  readonly sources: readonly string[];
  readonly purpose: string;
}

/** What `pulumi up` would make for a tenant, for `npm run render` to print. */
export interface Plan {
  readonly tenant: string;
  readonly resources: readonly PlannedResource[];
  readonly ports: readonly OpenPort[];
  readonly lines: readonly [label: string, text: string][];
}

/**
 * Describes the deployment from validated config alone (no cloud): the resources, who can
 * reach which port, the GPU, the model and what it costs. The resource list is checked against
 * what the program registers under Pulumi's mock runtime, so it cannot drift from the program.
 */
export function planFor(config: TenantConfig): Plan {
  const names = resourceNames(config.tenant);
  const { plan } = config;
  const cost = costOf(plan, config.volumeSizeGb);
  const resources: PlannedResource[] = [
    { type: "tls:index/privateKey:PrivateKey", name: `${config.tenant}-ssh-key`, note: "SSH key pair (ED25519), secret" },
    { type: "random:index/randomPassword:RandomPassword", name: `${config.tenant}-root-password`, note: "root password for the Lish console, secret" },
    { type: "linode:index/firewall:Firewall", name: names.firewall, note: "inbound DROP except the ports below; outbound ACCEPT" },
    { type: "linode:index/instance:Instance", name: names.instance, note: `${plan.id} in ${config.region}, ${config.image}, cloud-init user data` },
    { type: "linode:index/volume:Volume", name: names.volume, note: `${config.volumeSizeGb} GB Block Storage: model weights, ledger, certificates` },
    { type: "random:index/randomString:RandomString", name: `${config.tenant}-created-at`, note: "creation time, kept for the TTL" },
    ...servingResources(config),
  ];
  const ports: OpenPort[] = [
    ...webPortSources(config.tls.mode, config.allowedCidrs, config.adminCidrs),
    ...(config.adminCidrs.length ? [{ port: 22, sources: config.adminCidrs, purpose: "SSH for the operator and `pulumi up`" }] : []),
  ];
  const usd = (n: number) => `$${n.toFixed(2)}`;
  const lines: [string, string][] = [
    ["GPU", `${plan.gpuCount} x ${plan.gpu} (${plan.vramGbPerGpu} GB each), ${plan.vcpus} vCPU, ${plan.memoryMb / 1024} GB RAM: ${plan.id} in ${config.region}`],
    ["Cost", `${usd(cost.hourlyUsd)}/hour, ${usd(cost.monthlyUsd)}/month (plan ${usd(plan.hourlyUsd)}/hour capped at ${usd(plan.monthlyUsd)}/month; ` +
      `volume ${config.volumeSizeGb} GB at ${usd(VOLUME_USD_PER_GB_MONTH)}/GB-month)`],
    ["Expires", config.ttlHours === undefined ? "never (no ttlHours)" : `${config.ttlHours} hours after the first \`pulumi up\` (\`npm run reap-expired\` destroys it), ` +
      `about ${usd(costOver(plan, config.volumeSizeGb, config.ttlHours))} until then`],
    ["Model", `${config.model.id} served as "${config.model.servedName}"${config.model.aliases.length ? ` (aliases: ${config.model.aliases.map((a) => `"${a}"`).join(", ")})` : ""}, up to ${config.model.maxModelLen} tokens, ${parallelism(config)}`],
    ["SSH", config.adminCidrs.length ? `from ${config.adminCidrs.join(", ")} only, by the generated key` : "closed (no adminCidrs): the serving stack cannot be deployed over SSH"],
    ...configWarnings(config).map((warning): [string, string] => ["Warning", warning]),
    ...adminReachLines(config.adminCidrs),
  ];
  return { tenant: config.tenant, resources, ports, lines };
}

/** adminCidrs entries from which nobody reaches the host, when `pulumi up` refuses the list for them (else configWarnings warns). */
function adminReachLines(cidrs: readonly string[]): [string, string][] {
  const { entries, refused } = unreachableAdminEntries(cidrs);
  return refused ? entries.map(({ cidr, what }): [string, string] =>
    ["Problem", `adminCidrs ${cidr} is ${what}, from which nobody reaches the host: \`pulumi up\` refuses it; ${OWN_ADDRESS_HINT}`]) : [];
}

/** How vLLM spreads the model over the plan's GPUs, as the plan prints it. */
function parallelism(config: TenantConfig): string {
  const { tensorParallelSize: tp, pipelineParallelSize: pp } = config.model;
  const gpus = config.plan.gpuCount;
  if (gpus === 1) return "on 1 GPU";
  return `on ${gpus} GPUs: tensor-parallel ${tp} x pipeline-parallel ${pp}` +
    (pp > 1 ? " (pipeline: a GPU count that is not a power of two does not divide the model's attention heads)" : "");
}

/** adminCidrs lets in the whole internet (a /0), which is legal but rarely meant. */
export function adminOpenToAll(config: TenantConfig): boolean {
  return config.adminCidrs.some((cidr) => cidr.endsWith("/0"));
}

export const ADMIN_OPEN_WARNING = "adminCidrs has a /0: SSH (key only) and /admin (token only) are open to the whole internet; " +
  "list your own addresses instead unless you mean it";

export const CLEARTEXT_WARNING = "tls.mode is off and allowedCidrs has a /0: API keys, prompts and answers cross the internet in " +
  "cleartext, for anyone on the way to read; use tls.mode letsencrypt or self-signed, or list only the addresses of a network you trust";

export const ADMIN_CLEARTEXT_WARNING = "tls.mode is off and adminCidrs is set: the operator scripts (manage-keys, report-usage, " +
  "reap-expired's cron) send the admin token to /admin over plain http, and created keys come back so, for anyone on the way to " +
  "read; use tls.mode letsencrypt or self-signed unless the path from adminCidrs is a network you trust";

/**
 * What is legal but rarely meant, for `pulumi up` (as warnings) and the plan `npm run render`
 * prints: an endpoint open to everyone without TLS, SSH open to everyone, IPv6 allowedCidrs
 * entries only Linode's firewall enforces, tls settings the chosen mode ignores, a model that
 * looks too large for the plan or the volume, or whose tool calls vLLM cannot parse (tool_choice
 * "auto" refused), vLLM flags that log prompts or answers, and a provider model without token prices (the
 * provider bills its tokens; the key is charged per request).
 */
export function configWarnings(config: TenantConfig): string[] {
  const { tls } = config;
  const warnings: string[] = [];
  if (adminOpenToAll(config)) warnings.push(ADMIN_OPEN_WARNING);
  if (tls.mode === "off" && config.allowedCidrs.some((cidr) => cidr.endsWith("/0"))) warnings.push(CLEARTEXT_WARNING);
  if (tls.mode === "off" && config.adminCidrs.length > 0) warnings.push(ADMIN_CLEARTEXT_WARNING);
  if (tls.email !== undefined && tls.mode !== "letsencrypt") {
    warnings.push(`tls.email is ignored with tls.mode ${tls.mode}: only Let's Encrypt uses it (as its account's contact); remove it or use letsencrypt`);
  }
  if (tls.domain !== undefined && tls.mode === "off") {
    warnings.push("tls.domain is ignored with tls.mode off: there is no certificate, and the endpoint is http://<ip>/v1; remove it or choose a TLS mode");
  }
  const ipv6 = narrowIpv6AllowedWarning(config.allowedCidrs);
  if (ipv6 !== undefined) warnings.push(ipv6);
  const admin = unreachableAdminEntries(config.adminCidrs);
  if (!admin.refused) warnings.push(...admin.entries.map(({ cidr, what }) => unreachableAdminWarning(cidr, what)));
  warnings.push(...modelSizeWarnings(config));
  warnings.push(...toolCallingWarnings(config));
  warnings.push(...contentLoggingWarnings(config.model.extraArgs));
  warnings.push(...unpricedProviderWarnings(config));
  return warnings;
}

function unpricedProviderWarnings(config: TenantConfig): string[] {
  const request = `${config.pricing.request} credit${config.pricing.request === 1 ? "" : "s"}`;
  return config.providers.flatMap((p, i) => Object.hasOwn(config.pricing.models, p.name) ? [] : [
    `providers[${i}] ${p.name} (${p.model}) has no pricing.models entry: its requests are charged the request price only (${request}), ` +
    `whatever tokens the provider bills you; add pricing.models.${p.name} with promptPer1k and completionPer1k (0 for a provider that is free to you)`,
  ]);
}

export function formatPlan(plan: Plan): string {
  const width = Math.max(...plan.lines.map(([label]) => label.length));
  const out = [`Plan for tenant ${plan.tenant}`, ""];
  for (const [label, text] of plan.lines) out.push(`  ${label.padEnd(width)}  ${text}`);
  out.push("", "  Open to the internet (Linode Cloud Firewall; everything else is dropped):");
  for (const p of plan.ports) out.push(`    ${String(p.port).padStart(3)}/tcp  from ${p.sources.join(", ").padEnd(32)}  ${p.purpose}`);
  out.push("", "  Resources:");
  const typeWidth = Math.max(...plan.resources.map((r) => shortType(r.type).length));
  for (const r of plan.resources) out.push(`    ${shortType(r.type).padEnd(typeWidth)}  ${r.name.padEnd(22)}  ${r.note}`);
  return out.join("\n");
}

/** `linode:index/instance:Instance` → `linode:Instance`. */
function shortType(type: string): string {
  const [pkg, , kind] = type.split(":");
  return `${pkg}:${kind}`;
}

/** What ServingStack makes (infra/components/serving-stack.ts); its SSH steps only with adminCidrs. */
function servingResources(config: TenantConfig): PlannedResource[] {
  const t = config.tenant;
  const secret = (name: string, note: string): PlannedResource => ({ type: "random:index/randomPassword:RandomPassword", name: `${t}-${name}`, note });
  const tlsResources: Record<string, PlannedResource[]> = {
    letsencrypt: [
      { type: "tls:index/privateKey:PrivateKey", name: `${t}-tls-key`, note: "placeholder certificate's key, until Let's Encrypt issues" },
      { type: "tls:index/selfSignedCert:SelfSignedCert", name: `${t}-tls-placeholder`, note: "placeholder certificate nginx starts with" },
    ],
    "self-signed": [
      { type: "tls:index/privateKey:PrivateKey", name: `${t}-tls-ca-key`, note: "the tenant's CA key, secret" },
      { type: "tls:index/selfSignedCert:SelfSignedCert", name: `${t}-tls-ca`, note: "the CA clients trust (output caCertificate)" },
      { type: "tls:index/privateKey:PrivateKey", name: `${t}-tls-key`, note: "the server's key, secret" },
      { type: "tls:index/certRequest:CertRequest", name: `${t}-tls-request`, note: "for the host's name and address" },
      { type: "tls:index/locallySignedCert:LocallySignedCert", name: `${t}-tls-cert`, note: "the server certificate, signed by the CA" },
    ],
    off: [],
  };
  const command = (name: string, note: string): PlannedResource => ({ type: "command:remote:Command", name: `${t}-${name}`, note });
  return [
    secret("vllm-api-key", "vLLM's API key (private network), secret"),
    secret("litellm-master-key", "LiteLLM's master key, secret"),
    secret("admin-token", "the shim's admin token (output adminToken), secret"),
    ...config.keys.flatMap((k): PlannedResource[] => [
      { type: "random:index/randomString:RandomString", name: `${t}-key-${k.name}-id`, note: `API key "${k.name}": public id` },
      secret(`key-${k.name}-secret`, `API key "${k.name}": secret part (output apiKeys)`),
    ]),
    ...tlsResources[config.tls.mode]!,
    { type: "pulumi:providers:docker", name: `${t}-registry`, note: "asks the registries for image digests (no local Docker daemon)" },
    ...(config.adminCidrs.length === 0 ? [] : [
      { type: "command:local:Command", name: `${t}-ssh-wait`, note: "waits until SSH answers this machine (a new host); if it never does, asks whether your address is in adminCidrs" },
      { type: "command:local:Command", name: `${t}-host-key`, note: "records the host's SSH key at the first login (output hostKey); every later SSH connection checks it" },
      command("host-ready", "waits over SSH until the host has finished its setup"),
      command("env", "writes /opt/gpu-sandbox/.env (0600) through stdin"),
      ...(config.tls.mode === "off" ? [] : [command("certificate", "installs the certificate through stdin")]),
      { type: "command:remote:CopyToRemote", name: `${t}-bundle`, note: "copies the bundle to /opt/gpu-sandbox" },
      command("deploy", "docker compose up -d --build --wait, whenever the bundle, the secrets or the volume's size change"),
    ]),
    { type: "random:index/randomString:RandomString", name: `${t}-deployed`, note: "remembers that the stack was deployed once (output servingDeployed)" },
    { type: "command:local:Command", name: `${t}-stop-on-destroy`, note: "on destroy: stops the shim (it drains), then `docker compose down` on the host, before the volume goes" },
  ];
}
