// `list-tenants --prometheus <dir>`: Prometheus file-based service discovery targets for every
// tenant with an endpoint, which templates/operator/prometheus/prometheus-fleet.yml's jobs read,
// so that a Prometheus watching many tenants needs no job written by hand per tenant.
//
// One file per TLS kind, as the jobs' TLS settings differ by kind and a job has one: the shim's,
// vLLM's and the certificate probe's jobs of a kind read the same file (their target, the
// endpoint's host:port, is the same). Self-signed tenants share one job too: their CAs go into one
// bundle, self-signed-ca.pem. That trusts no more than a CA per job would: each CA's key stays in
// its stack's Pulumi state (a host holds only its leaf certificate), and each leaf names only its
// own host.
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { syncDirectory } from "../../api-shim/src/sync-directory.ts";
import { endpointOf } from "./pulumi.ts";
import { outputsOf, type Tenant } from "./tenants.ts";

export const TLS_KINDS = ["letsencrypt", "self-signed", "http"] as const;
export type TlsKind = (typeof TLS_KINDS)[number];

/** The CA bundle prometheus-fleet.yml's self-signed jobs (and blackbox.yml's module) trust. */
export const CA_BUNDLE = "self-signed-ca.pem";

/** A file_sd target group: one per tenant, so that each carries its own `tenant` label. */
export interface TargetGroup {
  readonly targets: readonly string[];
  readonly labels: { readonly tenant: string };
}

/** Where a tenant is scraped, or why it is not. */
export type TenantTarget =
  | { readonly kind: TlsKind; readonly group: TargetGroup; readonly ca?: string }
  | { readonly left: string };

/**
 * The endpoint's host:port (443 for https, 80 for http, as the endpoint says), and its kind: http
 * is tls.mode off; a caCertificate output is tls.mode self-signed; otherwise letsencrypt.
 */
export function targetOf(t: Tenant): TenantTarget {
  const outputs = outputsOf(t);
  const endpoint = endpointOf(outputs);
  if (endpoint === undefined) return { left: "no endpoint" };
  const url = new URL(endpoint);
  const https = url.protocol === "https:";
  const group = { targets: [`${url.hostname}:${url.port || (https ? "443" : "80")}`], labels: { tenant: t.stack } };
  if (!https) return { kind: "http", group };
  const ca = outputs.caCertificate;
  if (typeof ca === "string" && ca.includes("BEGIN CERTIFICATE")) return { kind: "self-signed", group, ca };
  return { kind: "letsencrypt", group };
}

export interface TargetsResult {
  /** Target groups written per kind, tenants by name. */
  readonly written: Readonly<Record<TlsKind, number>>;
  /** Tenants whose state could not be read: their previous groups (and CA) kept. */
  readonly kept: readonly string[];
}

/**
 * Writes <dir>/<kind>.json for every kind (an empty list when none, so that each job's file
 * exists) and the CA bundle. A tenant whose state could not be read (`unknown`: why) keeps the group
 * and CA the previous files held for it: one failed `pulumi stack output` must not take a
 * tenant out of monitoring, which would silence its alerts.
 */
export function writeTargets(dir: string, tenants: readonly { tenant: Tenant; unknown: string | null }[], log: (line: string) => void): TargetsResult {
  mkdirSync(dir, { recursive: true });
  const previous = readPrevious(dir);
  const groups: Record<TlsKind, TargetGroup[]> = { letsencrypt: [], "self-signed": [], http: [] };
  const cas: string[] = [];
  const kept: string[] = [];
  for (const { tenant, unknown } of tenants) {
    const stack = tenant.stack;
    if (unknown !== null) {
      const before = previous.get(stack);
      kept.push(stack);
      if (before) {
        groups[before.kind].push(before.group);
        if (before.ca) cas.push(before.ca);
        log(`${stack}: its state could not be read (${unknown}); kept as the previous files had it (${before.kind}, ${before.group.targets.join(", ")})`);
      } else {
        log(`${stack}: its state could not be read (${unknown}), and no previous file has it: not monitored until it can be`);
      }
      continue;
    }
    const t = targetOf(tenant);
    if ("left" in t) {
      log(`${stack}: left out (no endpoint: not deployed, or never served)`);
      continue;
    }
    groups[t.kind].push(t.group);
    if (t.ca) cas.push(caBlock(stack, t.ca));
  }
  // The bundle first: a new self-signed target is only listed once its CA is trusted.
  atomicWrite(join(dir, CA_BUNDLE), cas.join(""));
  for (const kind of TLS_KINDS) atomicWrite(join(dir, `${kind}.json`), `${JSON.stringify(groups[kind], null, 2)}\n`);
  const written = Object.fromEntries(TLS_KINDS.map((k) => [k, groups[k].length])) as Record<TlsKind, number>;
  return { written, kept };
}

/** A tenant's CA in the bundle, headed by its name, so that the previous bundle gives it back. */
function caBlock(stack: string, pem: string): string {
  return `# tenant: ${stack}\n${pem.trim()}\n`;
}

/** Each tenant's group and CA as the files in `dir` hold them now (none when there are none). */
function readPrevious(dir: string): Map<string, { kind: TlsKind; group: TargetGroup; ca?: string }> {
  const found = new Map<string, { kind: TlsKind; group: TargetGroup; ca?: string }>();
  const cas = new Map<string, string>();
  for (const block of readOr(join(dir, CA_BUNDLE), "").split(/^(?=# tenant: )/m)) {
    const m = /^# tenant: (\S+)\n/.exec(block);
    if (m) cas.set(m[1]!, block);
  }
  for (const kind of TLS_KINDS) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readOr(join(dir, `${kind}.json`), "[]"));
    } catch {
      continue; // not ours to read: rewritten whole below
    }
    if (!Array.isArray(parsed)) continue;
    for (const g of parsed as TargetGroup[]) {
      const tenant = g?.labels?.tenant;
      if (typeof tenant === "string" && Array.isArray(g.targets)) found.set(tenant, { kind, group: g, ...(cas.has(tenant) ? { ca: cas.get(tenant)! } : {}) });
    }
  }
  return found;
}

function readOr(path: string, fallback: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return fallback;
    throw err;
  }
}

/**
 * Write then rename, in the same directory: Prometheus re-reads a file_sd file when it changes,
 * and must never read half of one (it would drop the targets it could not parse). The temporary
 * name does not end in .json, so a `*.json` glob in a job never matches it. Flushed before the
 * rename and the directory after it: without, a power cut could leave the new name on an empty
 * file (Prometheus then drops every target of the file until the next run, silencing alerts), and
 * each rename is on disk before the next (the CA bundle before the targets that need it).
 */
function atomicWrite(path: string, content: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, "w", 0o644);
  try {
    writeFileSync(fd, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  syncDirectory(dirname(path));
}
