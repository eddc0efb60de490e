import { createHash } from "node:crypto";
import { isMap, isSeq, type Document } from "yaml";
import { DEFAULT_BODY_MEMORY_BYTES } from "../../api-shim/src/limits/body-memory.ts";
import type { Images, TenantConfig } from "../config.ts";
import { isIPv6Cidr } from "../config/addresses.ts";
import { MAX_READY_TIMEOUT_MINUTES } from "../config/defaults.ts";
import { toolCallingVllmFlags } from "../config/tool-calling.ts";
import { pricingVllmFlags } from "../config/vllm.ts";
import { providerKeyVar } from "./env-file.ts";
import { readYamlDocument, yamlText } from "./template.ts";

/** nginx's ports inside its container (see templates/nginx/nginx.conf). */
export const NGINX_HTTP_PORT = 8080;
export const NGINX_HTTPS_PORT = 8443;
/**
 * The host's own requests (the deploy's readiness wait): plain HTTP, published on the host's
 * loopback alone, without nginx's per-address limits (templates/nginx/server-host.conf).
 */
export const NGINX_LOCAL_PORT = 8081;

/** The label that makes compose recreate a service when a file it mounts from the bundle changes. */
export const MOUNTS_LABEL = "gpu-sandbox.mounted-files-sha256";

/**
 * A value from config, kept as typed: Compose substitutes `$NAME` and `${NAME}` anywhere in the
 * file (`ops$team@acme.io` became `ops@acme.io`), and `$$` is its literal `$`.
 */
const composeLiteral = (value: string): string => value.replaceAll("$", "$$$$");

/**
 * docker compose's file for the tenant: vLLM with the GPU reserved and the model's flags,
 * LiteLLM, the shim (built from the bundle's api-shim/), nginx (the only service that publishes
 * ports) and, for Let's Encrypt, certbot. Secrets stay `${…}` references to `.env`.
 * `bundleFiles` are the other files of the bundle: each service is labelled with the hash of
 * those it mounts.
 */
export function renderCompose(config: TenantConfig, images: Images, bundleFiles: ReadonlyMap<string, string>): string {
  const doc = readYamlDocument("compose.yaml");
  const m = config.model;
  doc.setIn(["services", "vllm", "image"], images.vllm);
  doc.setIn(["services", "vllm", "command"], [
    m.id,
    "--served-model-name", m.servedName,
    "--host", "0.0.0.0",
    "--port", "8000",
    "--max-model-len", String(m.maxModelLen),
    "--gpu-memory-utilization", String(m.gpuMemoryUtilization),
    "--tensor-parallel-size", String(m.tensorParallelSize),
    // Only when there is a pipeline: the flag on every stack would change the service's command,
    // and `docker compose up` would restart vLLM (minutes of 503s) on every upgraded host.
    ...(m.pipelineParallelSize > 1 ? ["--pipeline-parallel-size", String(m.pipelineParallelSize)] : []),
    ...pricingVllmFlags(m.extraArgs, config.pricing.models[m.servedName]),
    ...toolCallingVllmFlags(m.extraArgs, m.id),
    ...m.extraArgs.map(composeLiteral),
  ]);
  // The first start downloads the weights: failed checks count only after start_period, so it is
  // the longest wait `pulumi up` may be given, and `--wait-timeout` (deploy.sh) holds the stack's
  // own readyTimeoutMinutes. Fixed, not that setting: a new value in the service's definition
  // made Compose recreate vLLM, reloading the model (minutes of 503s, generations cut).
  doc.setIn(["services", "vllm", "healthcheck", "start_period"], `${MAX_READY_TIMEOUT_MINUTES * 60}s`);

  doc.setIn(["services", "litellm", "image"], images.litellm);
  config.providers.forEach((p, i) => {
    const name = providerKeyVar(p, i);
    doc.setIn(["services", "litellm", "environment", name], `\${${name}:?set ${name} in .env}`);
  });

  doc.setIn(["services", "shim", "build", "args", "NODE_IMAGE"], images.node);
  doc.setIn(["services", "shim", "environment", "SHIM_MAX_BODY_BYTES"], String(config.limits.maxBodyMb * 1024 * 1024));
  const shimMemory = `${shimMemoryMb(config.limits.maxBodyMb)}m`;
  doc.setIn(["services", "shim", "mem_limit"], shimMemory);
  doc.setIn(["services", "shim", "memswap_limit"], shimMemory);

  doc.setIn(["services", "nginx", "image"], images.nginx);
  // deploy.sh's `nginx -t` of a new bundle's nginx.conf: the same image as the nginx it will run.
  doc.setIn(["services", "nginx-check", "image"], images.nginx);
  // The host's own port on its loopback alone: the firewall never sees it, no other machine reaches it.
  const local = `127.0.0.1:${NGINX_LOCAL_PORT}:${NGINX_LOCAL_PORT}`;
  // IPv6 clients reach nginx through Docker's proxy, from the gateway, which nginx serves the API
  // to. On Linode the firewall has held them to allowedCidrs first; on a host of your own nothing
  // has, so with no IPv6 entry in allowedCidrs the API's port is published on IPv4 alone. Port 80
  // beside HTTPS only redirects and answers ACME (Let's Encrypt may validate over IPv6).
  const api = config.allowedCidrs.some(isIPv6Cidr) ? "" : "0.0.0.0:";
  const ports = config.tls.mode === "off"
    ? [`${api}80:${NGINX_HTTP_PORT}`, local]
    : [`80:${NGINX_HTTP_PORT}`, `${api}443:${NGINX_HTTPS_PORT}`, local];
  doc.setIn(["services", "nginx", "ports"], ports);

  if (config.tls.mode === "letsencrypt") {
    doc.setIn(["services", "certbot", "image"], images.certbot);
    doc.setIn(["services", "certbot", "environment", "TLS_DOMAIN"], "${TLS_DOMAIN:?set TLS_DOMAIN in .env}");
    doc.setIn(["services", "certbot", "environment", "TLS_EMAIL"], composeLiteral(config.tls.email ?? ""));
  } else {
    doc.deleteIn(["services", "certbot"]);
  }
  labelMountedFiles(doc, bundleFiles);
  return yamlText(doc);
}

/** The shim's own memory beyond its request bodies: idle (~120 MB), answers (SHIM_ANSWER_MEMORY_BYTES, held about twice), a report's worker. */
const SHIM_BASE_MEMORY_MB = 1536;
/** The shim's budget for request bodies in memory (SHIM_BODY_MEMORY_BYTES' default), in MiB. */
const SHIM_BODY_MEMORY_MB = DEFAULT_BODY_MEMORY_BYTES / 2 ** 20;

/**
 * The shim's container memory cap: a body costs about 3 times its bytes while it is read and
 * parsed (docs/api-shim/operations.md), and the bodies in memory are bounded by their budget, or by one body
 * of limits.maxBodyMb when that is larger (one is always admitted).
 */
export const shimMemoryMb = (maxBodyMb: number): number => SHIM_BASE_MEMORY_MB + 3 * Math.max(SHIM_BODY_MEMORY_MB, maxBodyMb);

/**
 * Compose recreates a container when its service definition changes, but not when the content
 * of a file it bind-mounts does: a new price or key in shim/config.yaml, or a new adminCidrs in
 * nginx.conf, would never reach the running container. So each service that mounts bundle files
 * (`./…` sources) carries a label with their hash, and a changed file changes the definition.
 */
function labelMountedFiles(doc: Document, bundleFiles: ReadonlyMap<string, string>): void {
  const services = doc.get("services");
  if (!isMap(services)) throw new Error("compose.yaml: services must be a map");
  for (const pair of services.items) {
    const name = String(pair.key);
    const volumes = doc.getIn(["services", name, "volumes"]);
    if (!isSeq(volumes)) continue;
    const sources = volumes.items.map((v) => String(v).split(":")[0]!).filter((src) => src.startsWith("./")).map((src) => src.slice(2));
    if (sources.length === 0) continue;
    const hash = createHash("sha256");
    for (const source of sources) {
      const files = [...bundleFiles.keys()].filter((f) => f === source || f.startsWith(`${source}/`)).sort();
      if (files.length === 0) throw new Error(`compose.yaml: service ${name} mounts ./${source}, which the bundle does not have`);
      for (const f of files) hash.update(`${f}\0${bundleFiles.get(f)}\0`);
    }
    doc.setIn(["services", name, "labels", MOUNTS_LABEL], hash.digest("hex"));
  }
}
