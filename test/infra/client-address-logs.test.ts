import { parse } from "yaml";
import { describe, expect, it } from "vitest";
import { describeProblems, validateConfig, type TenantConfig } from "../../infra/config.ts";
import { formatProblem } from "../../infra/config/checks.ts";
import { renderBundle } from "../../infra/render/bundle.ts";
import { MOUNTS_LABEL } from "../../infra/render/compose.ts";
import { renderNginxConf } from "../../infra/render/nginx.ts";
import { testNginxConf } from "../support/nginx.ts";

// logs.clientAddress: how much of a client's address nginx's access log keeps (a privacy review:
// full addresses in Docker's log files, rotated by size only, were months of personal data).

const base = { region: "us-ord", adminCidrs: ["81.2.69.160/32"], tls: { mode: "self-signed" } };

function config(overrides: Record<string, unknown> = {}): TenantConfig {
  const result = validateConfig({ ...base, ...overrides }, { stack: "acme" });
  if (!result.ok) throw new Error(describeProblems(result.problems, "acme"));
  return result.config;
}

function problems(overrides: Record<string, unknown>): string[] {
  const result = validateConfig({ ...base, ...overrides }, { stack: "acme" });
  if (result.ok) throw new Error("expected problems, config was accepted");
  return result.problems.map((p) => formatProblem(p, "gpu-sandbox"));
}

/** The access log's format line of a rendered nginx.conf. */
const logFormat = (conf: string) => /log_format gpu_sandbox [^;]*;/.exec(conf)![0];

describe("logs.clientAddress: validation", () => {
  it("defaults to full, and takes full, truncated and none", () => {
    expect(config().logs).toEqual({ clientAddress: "full" });
    for (const v of ["full", "truncated", "none"]) expect(config({ logs: { clientAddress: v } }).logs.clientAddress).toBe(v);
  });

  it("refuses another value, a bare string and an unknown member, naming the key and what is allowed", () => {
    expect(problems({ logs: { clientAddress: "anonymized" } })).toEqual([
      'gpu-sandbox:logs.clientAddress = "anonymized": must be one of: full, truncated, none',
    ]);
    // What `pulumi config set gpu-sandbox:logs truncated` (no --path) stores.
    expect(problems({ logs: "truncated" })).toEqual([
      expect.stringMatching(/^gpu-sandbox:logs = "truncated": must be a map .*pulumi config set --path 'gpu-sandbox:logs\.clientAddress' <value>/),
    ]);
    expect(problems({ logs: { clientAdress: "none" } }).join("\n")).toMatch(/logs\.clientAdress.*is not a known setting; known: clientAddress/);
  });
});

describe("logs.clientAddress: the rendered nginx.conf", () => {
  it("full, set or not, renders the same file as before the setting existed: the access log keeps $remote_addr", () => {
    const before = renderNginxConf(config());
    expect(renderNginxConf(config({ logs: { clientAddress: "full" } }))).toBe(before);
    expect(logFormat(before)).toContain('"remote_addr":"$remote_addr"');
    expect(before).not.toContain("log_remote_addr");
    // The same bundle hash: a stack that never sets it sees no change, and `full` restarts nothing.
    const bundle = (c: TenantConfig) => renderBundle(c, { images: c.images, bootstrapKeys: [] });
    expect(bundle(config({ logs: { clientAddress: "full" } })).get("MANIFEST.sha256")).toBe(bundle(config()).get("MANIFEST.sha256"));
  });

  it("truncated and none change the access log's address alone: the limits and the shim's X-Forwarded-For keep the whole address", () => {
    for (const v of ["truncated", "none"]) {
      const conf = renderNginxConf(config({ logs: { clientAddress: v } }));
      expect(logFormat(conf)).not.toContain("$remote_addr");
      expect(conf).toContain("limit_req_zone $binary_remote_addr zone=per_ip");
      expect(conf).toContain("limit_conn_zone $binary_remote_addr zone=per_ip_conn");
      expect(conf.match(/proxy_set_header X-Forwarded-For \$remote_addr;/g)!.length).toBeGreaterThan(0);
      expect(conf).not.toMatch(/X-Forwarded-For \$log_remote_addr/);
    }
    expect(logFormat(renderNginxConf(config({ logs: { clientAddress: "truncated" } })))).toContain('"remote_addr":"$log_remote_addr"');
    expect(logFormat(renderNginxConf(config({ logs: { clientAddress: "none" } })))).toContain('"remote_addr":""');
  });

  it("a change recreates nginx alone (its mounted files' label), not the shim or the instance", () => {
    const labels = (c: TenantConfig) => {
      const compose = parse(renderBundle(c, { images: c.images, bootstrapKeys: [] }).get("compose.yaml")!) as { services: Record<string, { labels?: Record<string, string> }> };
      return Object.fromEntries(Object.entries(compose.services).map(([name, s]) => [name, s.labels?.[MOUNTS_LABEL]]));
    };
    const full = labels(config());
    const truncated = labels(config({ logs: { clientAddress: "truncated" } }));
    expect(truncated.nginx).not.toBe(full.nginx);
    // nginx-check is the deploy's `nginx -t` of the new file (profile check), no running service.
    expect({ ...truncated, nginx: undefined, "nginx-check": undefined }).toEqual({ ...full, nginx: undefined, "nginx-check": undefined });
    expect(Object.keys(full)).toEqual(expect.arrayContaining(["shim", "litellm", "vllm"]));
  });

  for (const tls of ["letsencrypt", "self-signed", "off"]) {
    for (const v of ["full", "truncated", "none"]) {
      it(`nginx -t accepts it: tls.mode ${tls}, logs.clientAddress ${v}`, () => {
        const c = config({ tls: { mode: tls }, allowedCidrs: ["0.0.0.0/0", "::/0"], logs: { clientAddress: v } });
        const result = testNginxConf(renderNginxConf(c));
        expect(result.status, result.output).toBe(0);
        expect(result.output).toContain("test is successful");
        expect(result.output).not.toMatch(/\[warn\]/);
      });
    }
  }
});
