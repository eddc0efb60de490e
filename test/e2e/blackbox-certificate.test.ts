import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { closeSync, copyFileSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import { type RenderedEdge, startRenderedEdge } from "../support/rendered-edge.ts";
import { trackChild } from "../support/running-children.ts";
import { pollUntil, tempDir } from "../support/tools.ts";
import { ACTIVE, prometheusApi, type Sample, type Target, type Rule } from "../support/prometheus-api.ts";

/**
 * The kit's optional certificate probe for real: Debian's blackbox_exporter
 * (prometheus-blackbox-exporter, which .ci/run installs) with the kit's blackbox.yml makes a TLS
 * handshake with the rendered nginx's HTTPS port, scraped by a real Prometheus with the kit's probe job and
 * alerts.yml. One tenant's certificate expires in 10 days (under the alert's 14, and under a
 * threshold of a week too), the other's in 400: GpuSandboxCertificateExpiresSoon goes active for
 * the first alone. Both are self-signed stacks (startRenderedEdge makes the certificate with
 * openssl), so the probe verifies each with its own CA, as the kit's self-signed module does: a
 * module without it reports no expiry, and no alert. A third tenant's certificate has expired:
 * the kit's /metrics job fails with the error GpuSandboxShimDown's description names. Fixed ports
 * 62310-62322, outside the ephemeral range and the other nginx tests' ports.
 */
const KIT = join(import.meta.dirname, "..", "..", "templates", "operator", "prometheus");
const SOON = "certsoon";
const LATER = "certlater";
const SOON_PORTS = { http: 62310, https: 62311, local: 62312 };
const LATER_PORTS = { http: 62313, https: 62314, local: 62315 };
const EXPIRED = "certexpired";
const EXPIRED_PORTS = { http: 62320, https: 62321, local: 62322 };
const BLACKBOX_PORT = 62316;
const PROMETHEUS_PORT = 62317;
const DAY = 86_400;
/** Generous: scrapes and evaluations every second, on a 2-core machine shared with other tests. */
const DEADLINE_MS = 60_000;
const TEST_TIMEOUT_MS = 3 * DEADLINE_MS;

const PROMETHEUS = "/usr/bin/prometheus";
const BLACKBOX = "/usr/bin/prometheus-blackbox-exporter";
const works = (program: string) => {
  const r = spawnSync(program, ["--version"], { encoding: "utf8" });
  return r.error === undefined && r.status === 0;
};
const MISSING = !works(PROMETHEUS) ? "prometheus is not installed (apt-get install prometheus; .ci/run installs it)"
  : !works(BLACKBOX) ? "blackbox_exporter is not installed (apt-get install prometheus-blackbox-exporter; .ci/run installs it)" : undefined;

interface Job { job_name: string; metrics_path?: string; tls_config?: { ca_file?: string }; params?: { module: string[] };
  static_configs: { targets: string[]; labels?: Record<string, string> }[]; relabel_configs?: { replacement?: string }[] }
interface Module { tcp?: { tls_config?: { ca_file?: string } } }

/**
 * The kit's files as an operator fills them in for self-signed tenants: the self-signed tenant's
 * probe job (the one whose tenant's /metrics job has a `ca_file`) and its module copied per tenant,
 * with the tenant's name, target and CA file (an absolute path, where the kit's module has one), and
 * the exporter's address (the kit's 127.0.0.1:9115) moved to this test's port; for `scraped`
 * tenants, the kit's self-signed /metrics job too, copied the same way.
 */
function operatorFiles(dir: string, tenants: { name: string; ca: string; target: string; scraped?: boolean }[]): { prometheus: string; blackbox: string } {
  const kit = parse(readFileSync(join(KIT, "prometheus.yml"), "utf8")) as { global: Record<string, unknown>; rule_files: string[]; scrape_configs: Job[] };
  const kitModules = (parse(readFileSync(join(KIT, "blackbox.yml"), "utf8")) as { modules: Record<string, Module> }).modules;
  const selfSignedTenant = kit.scrape_configs.find((j) => j.tls_config?.ca_file !== undefined)?.static_configs[0]?.labels?.tenant;
  const probe = kit.scrape_configs.find((j) => j.metrics_path === "/probe" && j.static_configs[0]?.labels?.tenant === selfSignedTenant);
  if (!probe?.params) throw new Error(`the kit's prometheus.yml has no probe job for its self-signed tenant ${selfSignedTenant}`);
  const kitModule = kitModules[probe.params.module[0]!];
  if (!kitModule) throw new Error(`the kit's blackbox.yml has no module ${probe.params.module[0]}`);
  const scrape = kit.scrape_configs.find((j) => j.tls_config?.ca_file !== undefined)!;
  const modules: Record<string, Module> = {};
  const jobs = tenants.flatMap(({ name, ca, target, scraped }) => {
    const caPath = join(dir, `${name}-ca.pem`);
    writeFileSync(caPath, ca);
    const module = structuredClone(kitModule);
    if (module.tcp?.tls_config?.ca_file !== undefined) module.tcp.tls_config.ca_file = caPath;
    modules[`gpu_sandbox_${name}`] = module;
    const job = structuredClone(probe);
    job.job_name = probe.job_name.replace(/[^-]+$/, name);
    job.params = { module: [`gpu_sandbox_${name}`] };
    const labels = { ...probe.static_configs[0]!.labels };
    if ("tenant" in labels) labels.tenant = name;
    job.static_configs = [{ targets: [target], labels }];
    const exporter = job.relabel_configs?.find((r) => r.replacement === "127.0.0.1:9115");
    if (!exporter) throw new Error("the kit's probe job does not send its scrapes to 127.0.0.1:9115");
    exporter.replacement = `127.0.0.1:${BLACKBOX_PORT}`;
    if (!scraped) return [job];
    const metrics = structuredClone(scrape);
    metrics.job_name = scrape.job_name.replace(/[^-]+$/, name);
    metrics.tls_config = { ...metrics.tls_config, ca_file: caPath };
    metrics.static_configs = [{ targets: [target], labels }];
    return [job, metrics];
  });
  const global = { ...kit.global, scrape_interval: "1s", evaluation_interval: "1s" };
  return { prometheus: stringify({ ...kit, global, scrape_configs: jobs }), blackbox: stringify({ modules }) };
}

const { query, target, rule } = prometheusApi(PROMETHEUS_PORT);
const expiryRule = () => rule("GpuSandboxCertificateExpiresSoon");

/** Starts `program` with its output in `log`; resolves once `ready` answers 200. */
async function startServer(program: string, args: string[], cwd: string, log: string, ready: string): Promise<ChildProcess> {
  const fd = openSync(log, "w");
  let child: ChildProcess;
  try {
    child = spawn(program, args, { cwd, stdio: ["ignore", fd, fd] });
  } finally {
    closeSync(fd);
  }
  trackChild(child);
  const exited = () => child.exitCode !== null || child.signalCode !== null;
  const ok = await pollUntil(async () => exited() || (await fetch(ready).catch(() => undefined))?.status === 200, DEADLINE_MS, 100);
  if (!ok || exited()) throw new Error(`${program} did not get ready${exited() ? " (it exited)" : ""}:\n${readFileSync(log, "utf8")}`);
  return child;
}

async function stop(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  await exited;
}

let soon: RenderedEdge | undefined;
let later: RenderedEdge | undefined;
let expired: RenderedEdge | undefined;
let blackbox: ChildProcess | undefined;
let prometheus: ChildProcess | undefined;
let logs: string[] = [];
const logsText = () => logs.map((l) => `${l}:\n${readFileSync(l, "utf8").slice(-3000)}`).join("\n");

describe("the kit's certificate probe: blackbox_exporter and a real Prometheus, probing the rendered nginx", () => {
  beforeAll(async () => {
    if (MISSING) return;
    soon = await startRenderedEdge({ stack: SOON, settings: {}, ports: SOON_PORTS, certificateDays: 10 });
    later = await startRenderedEdge({ stack: LATER, settings: {}, ports: LATER_PORTS, certificateDays: 400 });
    expired = await startRenderedEdge({ stack: EXPIRED, settings: {}, ports: EXPIRED_PORTS, certificateDays: -1 });
    const dir = tempDir("blackbox-e2e-");
    copyFileSync(join(KIT, "alerts.yml"), join(dir, "alerts.yml"));
    const files = operatorFiles(dir, [
      // The two forms of target the kit's certificate verifies: a host name, and an IP address.
      { name: SOON, ca: soon.nginx.certificate, target: `localhost:${SOON_PORTS.https}` },
      { name: LATER, ca: later.nginx.certificate, target: `127.0.0.1:${LATER_PORTS.https}` },
      { name: EXPIRED, ca: expired.nginx.certificate, target: `localhost:${EXPIRED_PORTS.https}`, scraped: true },
    ]);
    writeFileSync(join(dir, "prometheus.yml"), files.prometheus);
    writeFileSync(join(dir, "blackbox.yml"), files.blackbox);
    logs = [join(dir, "blackbox.log"), join(dir, "prometheus.log")];
    // From /, as Debian's service runs it: a relative ca_file would not be found.
    blackbox = await startServer(BLACKBOX, [`--config.file=${join(dir, "blackbox.yml")}`, `--web.listen-address=127.0.0.1:${BLACKBOX_PORT}`],
      "/", logs[0]!, `http://127.0.0.1:${BLACKBOX_PORT}/-/healthy`);
    prometheus = await startServer(PROMETHEUS, ["--config.file=prometheus.yml", `--storage.tsdb.path=${join(dir, "data")}`,
      `--web.listen-address=127.0.0.1:${PROMETHEUS_PORT}`], dir, logs[1]!, `http://127.0.0.1:${PROMETHEUS_PORT}/-/ready`);
  }, TEST_TIMEOUT_MS);

  afterAll(async () => {
    try {
      await stop(prometheus);
      await stop(blackbox);
    } finally {
      try {
        await soon?.close();
      } finally {
        try {
          await later?.close();
        } finally {
          await expired?.close();
        }
      }
    }
  });

  it("a certificate that expires in 10 days: the probe verifies it with the tenant's CA, and GpuSandboxCertificateExpiresSoon goes active for that tenant", async (ctx) => {
    if (MISSING) return ctx.skip(MISSING);
    const job = `tls-gpu-sandbox-${SOON}`;
    let left: Sample[] = [];
    await pollUntil(async () => (left = await query(`probe_ssl_earliest_cert_expiry{job="${job}"} - time()`)).length > 0, DEADLINE_MS, 250);
    const success = await query(`probe_success{job="${job}"}`);
    expect(success.map((s) => s.value[1]), logsText()).toEqual(["1"]);
    expect(left.map((s) => s.metric), `probe_success ${JSON.stringify(success)}\n${logsText()}`).toEqual([
      { job, tenant: SOON, instance: `localhost:${SOON_PORTS.https}` }]);
    const days = Number(left[0]!.value[1]) / DAY;
    expect(days).toBeGreaterThan(9.9);
    expect(days).toBeLessThanOrEqual(10);

    let rule: Rule | undefined;
    await pollUntil(async () => (rule = await expiryRule())?.alerts.some((a) => a.labels.tenant === SOON) === true, DEADLINE_MS, 250);
    expect(rule?.health, rule?.lastError).toBe("ok");
    const alert = rule?.alerts.find((a) => a.labels.tenant === SOON);
    expect(alert?.labels, logsText()).toMatchObject({ job, tenant: SOON, severity: "warning" });
    expect(ACTIVE).toContain(alert?.state);
  }, TEST_TIMEOUT_MS);

  it("a certificate that expires in 400 days: probed, its expiry read, and no alert for that tenant", async (ctx) => {
    if (MISSING) return ctx.skip(MISSING);
    const job = `tls-gpu-sandbox-${LATER}`;
    let left: Sample[] = [];
    await pollUntil(async () => (left = await query(`probe_ssl_earliest_cert_expiry{job="${job}"} - time()`)).length > 0, DEADLINE_MS, 250);
    expect(left.map((s) => s.metric.tenant), logsText()).toEqual([LATER]);
    expect(Number(left[0]!.value[1]) / DAY).toBeGreaterThan(399);
    // Evaluated after the series arrived: the other tenant's alert is active by then (the rule
    // sees both series at each evaluation), and this one's is not.
    let rule: Rule | undefined;
    await pollUntil(async () => (rule = await expiryRule())?.alerts.some((a) => a.labels.tenant === SOON) === true, DEADLINE_MS, 250);
    await new Promise((r) => setTimeout(r, 2000)); // two more evaluations with its series present
    rule = await expiryRule();
    expect(rule?.alerts.map((a) => a.labels.tenant)).toEqual([SOON]);
  }, TEST_TIMEOUT_MS);

  it("an expired certificate: the /metrics scrape fails with `x509: certificate has expired`, GpuSandboxShimDown goes active, and the probe reports no expiry", async (ctx) => {
    if (MISSING) return ctx.skip(MISSING);
    const job = `gpu-sandbox-${EXPIRED}`;
    let down: Target | undefined;
    await pollUntil(async () => (down = await target(job))?.health === "down", DEADLINE_MS, 250);
    expect(down?.lastError, JSON.stringify(down)).toMatch(/x509: certificate has expired/);
    let shimDown: Rule | undefined;
    await pollUntil(async () => (shimDown = await rule("GpuSandboxShimDown"))?.alerts.some((a) => a.labels.tenant === EXPIRED) === true, DEADLINE_MS, 250);
    expect(ACTIVE).toContain(shimDown?.alerts.find((a) => a.labels.tenant === EXPIRED)?.state);
    // GpuSandboxShimDown's, not the expiry alert's: the failed handshake gives no date.
    const probe = `tls-gpu-sandbox-${EXPIRED}`;
    let success: Sample[] = [];
    await pollUntil(async () => (success = await query(`probe_success{job="${probe}"}`)).length > 0, DEADLINE_MS, 250);
    expect(success.map((s) => s.value[1])).toEqual(["0"]);
    expect(await query(`probe_ssl_earliest_cert_expiry{job="${probe}"}`)).toEqual([]);
  }, TEST_TIMEOUT_MS);
});
