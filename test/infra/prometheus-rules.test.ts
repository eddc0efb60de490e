import { spawnSync } from "node:child_process";
import { copyFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { anchorsOf } from "../support/doc-anchors.ts";
import { runTool, tempDir } from "../support/tools.ts";

/**
 * templates/operator/prometheus/: the scrape job and alerts an operator copies into a Prometheus
 * of their own, checked with Prometheus' own promtool (Debian's `prometheus` package; .ci/run
 * installs it; blackbox_exporter's modules with Debian's prometheus-blackbox-exporter): the config and rules load, each alert fires on the series that should fire it and
 * not on a healthy tenant's (alerts.test.yml), and the docs quote the rules as they are written.
 */
const ROOT = join(import.meta.dirname, "..", "..");
const DIR = join(ROOT, "templates", "operator", "prometheus");
const read = (path: string) => readFileSync(join(ROOT, path), "utf8");

const promtool = spawnSync("promtool", ["--version"], { encoding: "utf8" });
const hasPromtool = promtool.error === undefined && promtool.status === 0;
const NO_PROMTOOL = "promtool is not installed (apt-get install prometheus; .ci/run installs it)";
/** A promtool run per mutation, about a second each on a busy 2-core machine: past vitest's 30 s. */
const MUTATIONS_TIMEOUT_MS = 120_000;

interface Rule { alert: string; expr: string; for?: string; labels?: Record<string, string>; annotations?: Record<string, string> }
const rules = (parse(readFileSync(join(DIR, "alerts.yml"), "utf8")) as { groups: { rules: Rule[] }[] }).groups.flatMap((g) => g.rules);

const BLACKBOX = "prometheus-blackbox-exporter"; // Debian's name for blackbox_exporter
const blackbox = spawnSync(BLACKBOX, ["--version"], { encoding: "utf8" });
const hasBlackbox = blackbox.error === undefined && blackbox.status === 0;
const NO_BLACKBOX = "blackbox_exporter is not installed (apt-get install prometheus-blackbox-exporter; .ci/run installs it)";

interface Job { job_name: string; metrics_path: string; params: { module: string[] }; static_configs: unknown; relabel_configs?: unknown; tls_config?: unknown }
const jobs = () => (parse(readFileSync(join(DIR, "prometheus.yml"), "utf8")) as { scrape_configs: Job[] }).scrape_configs;
/** The jobs scraping the shim's /metrics, and the optional blackbox_exporter jobs probing the certificate. */
const metricsJobs = () => jobs().filter((j) => j.metrics_path === "/metrics");
const probeJobs = () => jobs().filter((j) => j.metrics_path === "/probe");
/** The optional jobs scraping vLLM's own metrics through nginx. */
const vllmJobs = () => jobs().filter((j) => j.metrics_path === "/metrics/vllm");
interface Module { prober: string; tcp: { tls_config?: { ca_file?: string } } }
const blackboxModules = () => (parse(readFileSync(join(DIR, "blackbox.yml"), "utf8")) as { modules: Record<string, Module> }).modules;

/** promtool on copies of the files in a directory of their own, `alerts.yml` replaced when given. */
function promtoolOn(args: (dir: string) => string[], alerts?: string) {
  const dir = tempDir("prometheus-");
  for (const f of ["prometheus.yml", "alerts.yml", "alerts.test.yml"]) copyFileSync(join(DIR, f), join(dir, f));
  if (alerts !== undefined) writeFileSync(join(dir, "alerts.yml"), alerts);
  return runTool("promtool", args(dir), { cwd: dir });
}

describe("the Prometheus files an operator copies", () => {
  it("`promtool check config` takes prometheus.yml with alerts.yml, and `promtool check rules` every alert", (ctx) => {
    if (!hasPromtool) return ctx.skip(NO_PROMTOOL);
    const config = promtoolOn(() => ["check", "config", "prometheus.yml"]);
    expect(config.status, config.output).toBe(0);
    expect(config.output).toContain(`SUCCESS: ${rules.length} rules found`);
  });

  it("`promtool test rules alerts.test.yml`: each alert fires on its series and not on a healthy tenant's", (ctx) => {
    if (!hasPromtool) return ctx.skip(NO_PROMTOOL);
    const r = promtoolOn(() => ["test", "rules", "alerts.test.yml"]);
    expect(r.status, r.output).toBe(0);
    expect(r.output).toContain("SUCCESS");
  });

  it("the unit tests catch a rule that fires on another job's failed scrape, too late for a restart loop, on requests that were not refused for lack of credits, on keys low for minutes or only past two of them, on /ready's 503s, on a model still loading at a start or reloading under a running shim, a certificate's expiry at another threshold or on other jobs, a failing probe missed or mistaken, vLLM's queue on bursts or other jobs, or its KV cache without preemptions, without it full, or for one burst", (ctx) => {
    if (!hasPromtool) return ctx.skip(NO_PROMTOOL);
    const alerts = readFileSync(join(DIR, "alerts.yml"), "utf8");
    const broken: [string, string][] = [['up{job=~"gpu-sandbox.*"} == 0', "up == 0"], ["[15m]) > 2", "[15m]) > 5"], ["< 2e9", "< 1e8"], ["for: 0m", "for: 5m"],
      // The out-of-credit alert: on another status, on a window too short to hold it 15 minutes.
      ['{status="402"}[15m]', '{status!="402"}[15m]'], ['{status="402"}[15m]', '{status="402"}[5m]'],
      // The low-credit alert: for a key topped up within minutes, or only past two keys.
      ["(shim_keys_low_credits) > 0\n        for: 15m", "(shim_keys_low_credits) > 0\n        for: 5m"], ["(shim_keys_low_credits) > 0", "(shim_keys_low_credits) > 2"],
      // The 503 alert: on /ready's answers too, on another status.
      ['{status="503", route!="/ready"}', '{status="503"}'], ['{status="503", route!="/ready"}', '{status="502", route!="/ready"}'],
      // The model server alert: at a start while the model loads, never for a start whose model does not load, or
      // within a reload of vLLM alone (8 minutes) under a running shim.
      ["(time() - process_start_time_seconds) > 1800", "(time() - process_start_time_seconds) > 0"], ["(time() - process_start_time_seconds) > 1800", "(time() - process_start_time_seconds) > 86400"],
      ["> 1800\n        for: 10m", "> 1800\n        for: 5m"],
      // The certificate alert: too late (7 days), too early (30: letsencrypt's own renewal window),
      // on the /metrics jobs' names (which have no probe_*), on any job's probes.
      ["< 14 * 86400", "< 7 * 86400"], ["< 14 * 86400", "< 30 * 86400"], ['{job=~"tls-gpu-sandbox.*"}', '{job=~"gpu-sandbox.*"}'],
      ['probe_ssl_earliest_cert_expiry{job=~"tls-gpu-sandbox.*"}', "probe_ssl_earliest_cert_expiry"],
      // The probe alert: blind to an exporter that stopped, or firing on the /metrics jobs' `up`.
      ['(probe_success{job=~"tls-gpu-sandbox.*"} == 0) or (up{job=~"tls-gpu-sandbox.*"} == 0)', 'probe_success{job=~"tls-gpu-sandbox.*"} == 0'],
      ['(up{job=~"tls-gpu-sandbox.*"} == 0)', '(up{job=~".*gpu-sandbox.*"} == 0)'],
      // The queue alert: on any job's vLLM, on bursts that queue for minutes at a time.
      ['vllm:num_requests_waiting{job=~"vllm-gpu-sandbox.*"} > 0', "vllm:num_requests_waiting > 0"], ["> 0\n        for: 10m", "> 0\n        for: 5m"],
      // The KV cache alert: on a full cache that preempts nothing, on preemptions with room in the
      // cache, at 99% (a cache that preempts at 97% missed), on one burst of preemptions, on any job's vLLM.
      [' and increase(vllm:num_preemptions_total{job=~"vllm-gpu-sandbox.*"}[5m]) > 0', ""],
      ['vllm:kv_cache_usage_perc{job=~"vllm-gpu-sandbox.*"} > 0.9 and ', ""], ["> 0.9 and", "> 0.99 and"], ["[5m]) > 0\n        for: 10m", "[15m]) > 0\n        for: 10m"],
      ['vllm:kv_cache_usage_perc{job=~"vllm-gpu-sandbox.*"} > 0.9 and increase(vllm:num_preemptions_total{job=~"vllm-gpu-sandbox.*"}[5m])',
        "vllm:kv_cache_usage_perc > 0.9 and increase(vllm:num_preemptions_total[5m])"]];
    for (const [from, to] of broken) {
      expect(alerts).toContain(from);
      const r = promtoolOn(() => ["test", "rules", "alerts.test.yml"], alerts.replace(from, to));
      expect(r.status, `${from} → ${to}`).not.toBe(0);
    }
  }, MUTATIONS_TIMEOUT_MS);

  it("every alert has a for:, a severity, a summary, a description, and a runbook naming a section of docs/troubleshooting.md; alerts.test.yml fires each", () => {
    const anchors = anchorsOf(read("docs/troubleshooting.md"));
    const tests = readFileSync(join(DIR, "alerts.test.yml"), "utf8");
    expect(rules.length).toBeGreaterThanOrEqual(6);
    for (const r of rules) {
      expect(r.for, r.alert).toMatch(/^\d+[smh]$/);
      expect(["critical", "warning"], r.alert).toContain(r.labels?.severity);
      expect(r.annotations?.summary, r.alert).toMatch(/\{\{ \$labels\.tenant \}\}/);
      expect(r.annotations?.description?.length, r.alert).toBeGreaterThan(80);
      const [page, anchor] = (r.annotations?.runbook ?? "").split("#");
      expect(page, r.alert).toBe("docs/troubleshooting.md");
      expect(anchors, r.alert).toContain(anchor);
      // A case where it is expected to fire (exp_alerts with labels), not only one where it is not.
      expect(tests, r.alert).toMatch(new RegExp(`alertname: ${r.alert}\\n\\s+exp_alerts:\\n\\s+- exp_labels:`));
    }
  });

  it("the scrape job: HTTPS to the endpoint's host at /metrics, no token, a tenant label, the self-signed tenant's CA", () => {
    const config = parse(readFileSync(join(DIR, "prometheus.yml"), "utf8")) as { rule_files: string[]; scrape_configs: Record<string, unknown>[] };
    expect(config.rule_files).toEqual(["alerts.yml"]);
    for (const job of metricsJobs()) {
      expect(job).toMatchObject({ job_name: expect.stringMatching(/^gpu-sandbox-/), scheme: "https", metrics_path: "/metrics" });
      expect(job).not.toHaveProperty("authorization"); // the shim's /metrics wants none; the admin token stays out
      expect(job.static_configs).toEqual([{ targets: [expect.stringMatching(/^[\w.-]+\.ip\.linodeusercontent\.com:443$/)], labels: { tenant: expect.any(String) } }]);
    }
    expect(metricsJobs().map((j) => j.tls_config)).toEqual([undefined, { ca_file: "bravo-ca.pem" }]);
  });

  it("the probe jobs: one per tenant, blackbox_exporter's TLS handshake with the scrape job's target, with the tenant label and a self-signed tenant's CA", () => {
    const modules = blackboxModules();
    const probes = probeJobs();
    expect(probes.map((p) => p.job_name)).toEqual(metricsJobs().map((j) => `tls-${j.job_name}`));
    for (const scrape of metricsJobs()) {
      const probe = probes.find((p) => p.job_name === `tls-${scrape.job_name}`)!;
      expect(probe).toMatchObject({ metrics_path: "/probe", static_configs: scrape.static_configs as object });
      expect(probe).not.toHaveProperty("scheme"); // the exporter is asked over http on loopback
      // host:443 is the probe's target and the instance; the exporter is what is scraped.
      expect(probe.relabel_configs).toEqual([
        { source_labels: ["__address__"], target_label: "__param_target" },
        { source_labels: ["__param_target"], target_label: "instance" },
        { target_label: "__address__", replacement: "127.0.0.1:9115" },
      ]);
      const module = modules[probe.params.module[0]!];
      // The handshake alone: nginx's HTTPS server has no route it answers without a key.
      expect(module, probe.params.module[0]).toMatchObject({ prober: "tcp", tcp: { tls: true } });
      // The module trusts what the scrape job trusts: the same CA, by an absolute path (the
      // exporter reads a relative one from its working directory), or the system's.
      const ca = module!.tcp.tls_config?.ca_file;
      const scrapeCa = (scrape.tls_config as { ca_file?: string } | undefined)?.ca_file;
      if (scrapeCa === undefined) expect(ca, probe.job_name).toBeUndefined();
      else expect(ca, probe.job_name).toBe(`/etc/prometheus/${scrapeCa}`);
    }
  });

  it("the vLLM jobs: one per tenant at /metrics/vllm, the tenant's scrape job's target, scheme and TLS settings, and no token", () => {
    expect(vllmJobs().map((j) => j.job_name)).toEqual(metricsJobs().map((j) => `vllm-${j.job_name}`));
    for (const scrape of metricsJobs()) {
      const job = vllmJobs().find((j) => j.job_name === `vllm-${scrape.job_name}`)! as Job & { scheme?: string };
      expect(job).toMatchObject({ scheme: "https", static_configs: scrape.static_configs as object });
      expect(job.tls_config).toEqual(scrape.tls_config);
      expect(job).not.toHaveProperty("authorization"); // nginx asks none, and vLLM's key stays on the host
    }
  });

  it("the alerts' job selectors: the certificate alert reads the probe jobs alone, the scrape alerts the /metrics jobs alone", () => {
    // PromQL's =~ is anchored at both ends.
    const selector = (alert: string) => new RegExp(`^(?:${/job=~"([^"]+)"/.exec(rules.find((r) => r.alert === alert)!.expr)![1]})$`);
    for (const p of probeJobs()) {
      expect(p.job_name).toMatch(selector("GpuSandboxCertificateExpiresSoon"));
      expect(p.job_name).not.toMatch(selector("GpuSandboxShimDown"));
      expect(p.job_name).not.toMatch(selector("GpuSandboxShimRestarting"));
    }
    for (const j of metricsJobs()) expect(j.job_name).not.toMatch(selector("GpuSandboxCertificateExpiresSoon"));
    // vLLM's jobs: read by its alerts; their `up` is not the shim's.
    for (const v of vllmJobs()) {
      expect(v.job_name).toMatch(selector("GpuSandboxModelQueueing"));
      expect(v.job_name).toMatch(selector("GpuSandboxKvCacheFull"));
      expect(v.job_name).toMatch(selector("GpuSandboxModelMetricsFailing"));
      expect(v.job_name).not.toMatch(selector("GpuSandboxShimDown"));
      expect(v.job_name).not.toMatch(selector("GpuSandboxShimRestarting"));
    }
    for (const j of [...metricsJobs(), ...probeJobs()]) {
      expect(j.job_name).not.toMatch(selector("GpuSandboxModelQueueing"));
      // The shim's `up` and the probes' are their own alerts'.
      expect(j.job_name).not.toMatch(selector("GpuSandboxModelMetricsFailing"));
    }
  });

  it("`blackbox_exporter --config.check` takes blackbox.yml", (ctx) => {
    if (!hasBlackbox) return ctx.skip(NO_BLACKBOX);
    const r = runTool(BLACKBOX, ["--config.check", `--config.file=${join(DIR, "blackbox.yml")}`]);
    expect(r.status, r.output).toBe(0);
    expect(r.output).toContain("Config file is ok");
  });
});

describe("the docs quote the alerts as alerts.yml writes them", () => {
  // Whitespace as Markdown reflows it; every backticked PromQL comparison on a series an alert reads.
  const docs = ["docs/operations.md", "docs/troubleshooting.md", "docs/api-shim/operations.md"].map(read).join("\n");
  const quoted = [...docs.matchAll(/`([^`\n]*\b(?:shim_\w+|probe_\w+|vllm:\w+|up|process_start_time_seconds)\b[^`\n]* (?:==|!=|>=|<=|>|<) [^`\n]*)`/g)].map((m) => m[1]!);
  const flat = docs.replace(/\s+/g, " ");

  it("every alert expression in the docs is a rule's, so none is left behind by a change of the rules", () => {
    expect(quoted.length).toBeGreaterThanOrEqual(rules.length);
    for (const e of quoted) expect(rules.map((r) => r.expr), e).toContain(e);
  });

  it("docs/operations.md's Monitoring table has each alert with its expression, for and severity", () => {
    for (const r of rules) {
      const row = `| \`${r.alert}\` | \`${r.expr}\` | ${r.for} | ${r.labels!.severity} |`;
      expect(flat.includes(row), `no row ${row}`).toBe(true);
    }
  });
});

describe("prometheus-fleet.yml: a job per TLS kind over the targets list-tenants --prometheus writes", () => {
  interface FleetJob { job_name: string; scheme?: string; metrics_path: string; tls_config?: { ca_file?: string }; params?: { module: string[] }; file_sd_configs: { files: string[] }[]; relabel_configs?: unknown }
  const fleet = () => (parse(readFileSync(join(DIR, "prometheus-fleet.yml"), "utf8")) as { rule_files: string[]; scrape_configs: FleetJob[] }).scrape_configs;
  const selector = (alert: string) => new RegExp(`^(?:${/job=~"([^"]+)"/.exec(rules.find((r) => r.alert === alert)!.expr)![1]})$`);

  it("each job reads its kind's file, with the kind's scheme and trust; the alerts' selectors find the shim's, vLLM's and the probes' jobs apart", () => {
    const byName = Object.fromEntries(fleet().map((j) => [j.job_name, j]));
    const kinds = ["letsencrypt", "self-signed", "http"];
    expect(Object.keys(byName).sort()).toEqual([...kinds.flatMap((k) => [`gpu-sandbox-${k}`, `vllm-gpu-sandbox-${k}`]), "tls-gpu-sandbox-letsencrypt", "tls-gpu-sandbox-self-signed"].sort());
    for (const [name, job] of Object.entries(byName)) {
      const kind = kinds.find((k) => name.endsWith(`gpu-sandbox-${k}`))!;
      expect(job.file_sd_configs, name).toEqual([{ files: [`gpu-sandbox/${kind}.json`] }]);
      expect(job).not.toHaveProperty("authorization");
      if (name.startsWith("tls-")) {
        expect(job.relabel_configs, name).toEqual(probeJobs()[0]!.relabel_configs);
        const module = blackboxModules()[job.params!.module[0]!];
        expect(module, name).toMatchObject({ prober: "tcp", tcp: { tls: true } });
        expect(module!.tcp.tls_config?.ca_file, name).toBe(kind === "self-signed" ? "/etc/prometheus/gpu-sandbox/self-signed-ca.pem" : undefined);
        expect(name).toMatch(selector("GpuSandboxCertificateExpiresSoon"));
        expect(name).not.toMatch(selector("GpuSandboxShimDown"));
        continue;
      }
      expect(job.scheme, name).toBe(kind === "http" ? "http" : "https");
      expect(job.tls_config, name).toEqual(kind === "self-signed" ? { ca_file: "gpu-sandbox/self-signed-ca.pem" } : undefined);
      const vllm = name.startsWith("vllm-");
      expect(job.metrics_path, name).toBe(vllm ? "/metrics/vllm" : "/metrics");
      expect(selector("GpuSandboxShimDown").test(name), name).toBe(!vllm);
      expect(selector("GpuSandboxModelMetricsFailing").test(name), name).toBe(vllm);
      expect(name).not.toMatch(selector("GpuSandboxCertificateExpiresSoon"));
    }
  });
});
