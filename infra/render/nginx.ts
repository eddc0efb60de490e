import type { TenantConfig } from "../config.ts";
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
 * nginx.conf for the tenant, from the fragments in templates/nginx/: an HTTPS server and an
 * HTTP server that only redirects and answers ACME challenges, or (tls.mode off) one HTTP
 * server for the API. The only upstream address in it is `shim:8080`.
 */
export function renderNginxConf(config: TenantConfig): string {
  const { limits } = config;
  const geo = (cidrs: readonly string[]) => cidrs.map((cidr) => `        ${cidr} 1;`).join("\n");
  const adminGeo = geo(config.adminCidrs) || "        # adminCidrs is empty: nobody.";
  const apiGeo = geo([DOCKER_GATEWAY_CIDR, ...config.allowedCidrs]);
  // nginx's own errors as JSON, on every server: port 80's redirect server meets them too.
  const errorPages = fill("error-pages.conf", { connections: limits.connections, maxBodyMb: limits.maxBodyMb }).trimEnd();
  const apiLocations = fill("api-locations.conf", {
    burst: burstOption(limits.burst),
    connections: limits.connections,
    errorPages,
  }).trimEnd();
  const healthz = readTemplate("nginx/healthz.conf").trimEnd();
  const servers = config.tls.mode === "off"
    ? [fill("server-http-api.conf", { healthz, apiLocations })]
    : [
      fill("server-http-redirect.conf", { healthz, errorPages }),
      fill("server-https.conf", { apiLocations }),
    ];
  return fill("nginx.conf", {
    adminGeo,
    apiGeo,
    maxBodyMb: limits.maxBodyMb,
    requestsPerSecond: limits.requestsPerSecond,
    servers: servers.map((s) => s.trimEnd()).join("\n\n"),
  });
}
