import type { ClientAddressLogging, TenantConfig } from "../config.ts";
import { DOCKER_GATEWAY } from "../config/addresses.ts";
import { fillTemplateFile, readTemplate } from "./template.ts";

/** The host's own requests and every IPv6 client reach nginx from Docker's gateway (see nginx.conf's $api_client). */
const DOCKER_GATEWAY_CIDR = `${DOCKER_GATEWAY}/32`;

const fill = (name: string, values: Readonly<Record<string, string | number>>) => fillTemplateFile(`nginx/${name}`, values);

/**
 * limit_req's burst, served at once (nodelay) rather than spaced out at the rate. nginx refuses
 * `burst=0` (and would not start): 0 is its default, so no burst leaves both out.
 */
function burstOption(burst: number): string {
  return burst > 0 ? ` burst=${burst} nodelay` : "";
}

/**
 * A `geo` block's lines: 1 for the addresses in `cidrs` (normalised networks), 0 for the rest.
 * nginx's `default` is 0.0.0.0/0 and ::/0 themselves, so a list holding either makes the default
 * 1 instead of listing it (nginx warns of a "duplicate network" at every start and reload). nginx
 * sees only IPv4 peers (IPv6 clients arrive from Docker's gateway), so the IPv4 one decides.
 * `say`: a comment for a reader of nginx.conf when the block is its `default` line alone, which
 * it is both for an empty list (nobody) and for one holding 0.0.0.0/0 (everyone).
 */
function geoEntries(cidrs: readonly string[], say?: { empty: string; everyone: string }): string {
  const everyone = cidrs.includes("0.0.0.0/0");
  const listed = [...new Set(cidrs)].filter((c) => c !== "::/0"); // once each: nginx warns of a duplicate network
  const lines = everyone ? ["default 1;"] : ["default 0;", ...listed.map((c) => `${c} 1;`)];
  const note = say && (cidrs.length === 0 ? say.empty : everyone ? say.everyone : undefined);
  if (note) lines.push(`# ${note}`);
  return lines.map((l) => `        ${l}`).join("\n");
}

/**
 * How the access log's `remote_addr` is filled for logs.clientAddress: the map it needs, if any
 * (before log_format), and the value. `full` adds nothing, so nginx.conf stays as it was before
 * the setting existed and a stack that never sets it is not redeployed.
 */
function clientAddressLog(mode: ClientAddressLogging): { clientAddressMap: string; loggedAddress: string } {
  if (mode === "truncated") return { clientAddressMap: readTemplate("nginx/client-address-truncated.conf"), loggedAddress: "$log_remote_addr" };
  if (mode === "none") {
    const why = "    # logs.clientAddress none: no client address in the access log; $remote_addr itself (the\n" +
      "    # per-address limits, the shim's X-Forwarded-For) stays whole.\n";
    return { clientAddressMap: why, loggedAddress: "" };
  }
  return { clientAddressMap: "", loggedAddress: "$remote_addr" };
}

/**
 * nginx.conf for the tenant, from the fragments in templates/nginx/: an HTTPS server and an
 * HTTP server that only redirects and answers ACME challenges, or (tls.mode off) one HTTP
 * server for the API; and the host's own port (NGINX_LOCAL_PORT), the API without per-address
 * limits. Its upstreams: `shim:8080`, and `vllm:8000` for /metrics/vllm alone (resolved at each
 * request, so nginx never waits for vLLM to start). `tlsDomain`: the certificate's name, which
 * port 80 redirects to (the stack's tls.domain unless `pulumi up` knows Linode's name for the host).
 */
export function renderNginxConf(config: TenantConfig, tlsDomain = config.tls.domain): string {
  const { limits } = config;
  const adminGeo = geoEntries(config.adminCidrs, { empty: "adminCidrs is empty: nobody.", everyone: "adminCidrs holds 0.0.0.0/0: everyone." });
  const apiGeo = geoEntries([DOCKER_GATEWAY_CIDR, ...config.allowedCidrs]);
  // nginx's own errors as JSON, on every server: port 80's redirect server meets them too.
  const errorPages = fill("error-pages.conf", { connections: limits.connections, maxBodyMb: limits.maxBodyMb }).trimEnd();
  const refuseAmbiguousPath = readTemplate("nginx/refuse-ambiguous-path.conf").trimEnd();
  // A browser's preflight for the API, answered by nginx: in location /, and before a location is chosen for one with a key in its URL.
  const preflightAnswer = readTemplate("nginx/preflight-answer.conf").trimEnd();
  const refuseKeyInUrl = fill("refuse-key-in-url.conf", { preflightAnswer }).trimEnd();
  const refuseRawBytesInUrl = readTemplate("nginx/refuse-raw-bytes-in-url.conf").trimEnd();
  // The API's locations, with the per-address limits, or (for the host's own port) without them.
  const locations = (perAddress: boolean) => {
    const none = "# No per-address limit on this port: the host's own requests (server-host.conf).";
    return fill("api-locations.conf", {
      requestLimit: perAddress ? `limit_req zone=per_ip${burstOption(limits.burst)};` : none,
      connectionLimit: perAddress ? `limit_conn per_ip_conn ${limits.connections};` : none,
      errorPages,
      refuseAmbiguousPath,
      refuseKeyInUrl,
      refuseRawBytesInUrl,
      preflightAnswer,
    }).trimEnd();
  };
  const apiLocations = locations(true);
  const healthz = readTemplate("nginx/healthz.conf").trimEnd();
  const host = fill("server-host.conf", { apiLocations: locations(false) });
  const servers = config.tls.mode === "off"
    ? [fill("server-http-api.conf", { healthz, apiLocations }), host]
    : [
      // The name port 80 redirects to: `tlsDomain` (a DNS name, checked by tls.ts, or Linode's
      // name for the host), known to `pulumi up`; `$host` only for a render of a stack without
      // tls.domain, whose name only the host's .env holds (TLS_DOMAIN, read by certbot alone).
      fill("server-http-redirect.conf", { healthz, errorPages, redirectHost: tlsDomain ?? "$host" }),
      fill("server-https.conf", { apiLocations }),
      host,
    ];
  return fill("nginx.conf", {
    adminGeo,
    apiGeo,
    ...clientAddressLog(config.logs.clientAddress),
    maxBodyMb: limits.maxBodyMb,
    requestsPerSecond: limits.requestsPerSecond,
    servers: servers.map((s) => s.trimEnd()).join("\n\n"),
  });
}
