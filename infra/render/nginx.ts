import type { TenantConfig } from "../config.ts";
import { fillTemplate, readTemplate } from "./template.ts";

const fragment = (name: string) => readTemplate(`nginx/${name}`);

/**
 * nginx.conf for the tenant, from the fragments in templates/nginx/: an HTTPS server and an
 * HTTP server that only redirects and answers ACME challenges, or (tls.mode off) one HTTP
 * server for the API. The only upstream address in it is `shim:8080`.
 */
export function renderNginxConf(config: TenantConfig): string {
  const { limits } = config;
  const adminAllow = config.adminCidrs.map((cidr) => `            allow ${cidr};`).join("\n") || "            # adminCidrs is empty: nobody.";
  const apiLocations = fillTemplate(fragment("api-locations.conf"), {
    burst: limits.burst,
    connections: limits.connections,
    adminAllow,
    maxBodyMb: limits.maxBodyMb,
  }, "nginx/api-locations.conf").trimEnd();
  const healthz = fragment("healthz.conf").trimEnd();
  const servers = config.tls.mode === "off"
    ? [fillTemplate(fragment("server-http-api.conf"), { healthz, apiLocations }, "nginx/server-http-api.conf")]
    : [
      fillTemplate(fragment("server-http-redirect.conf"), { healthz }, "nginx/server-http-redirect.conf"),
      fillTemplate(fragment("server-https.conf"), { apiLocations }, "nginx/server-https.conf"),
    ];
  return fillTemplate(fragment("nginx.conf"), {
    maxBodyMb: limits.maxBodyMb,
    requestsPerSecond: limits.requestsPerSecond,
    servers: servers.map((s) => s.trimEnd()).join("\n\n"),
  }, "nginx/nginx.conf");
}
