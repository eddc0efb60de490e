import { copyFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import { type RenderedEdge, startRenderedEdge } from "../support/rendered-edge.ts";
import { tempDir } from "../support/tools.ts";
import { ACTIVE, prometheusApi } from "../support/prometheus-api.ts";
import { NO_PROMETHEUS, type RunningPrometheus, startPrometheus, waitForAnswer } from "../support/prometheus-process.ts";

/**
 * templates/operator/prometheus/ against a real Prometheus (Debian's `prometheus` package, which
 * .ci/run installs for promtool): the kit's self-signed job, filled in as an operator would, scrapes
 * the real shim behind the rendered nginx over TLS (and, with its vllm-gpu-sandbox job, the fake
 * vLLM's own metrics at /metrics/vllm), and alerts.yml, copied unchanged, loads and evaluates on
 * what it scrapes. Each tenant's edge is a self-signed stack, as startRenderedEdge
 * makes it: its certificate names `localhost` and 127.0.0.1 (the stack's own names its host and
 * IP), so the job needs no `server_name`. Fixed ports 62300-62309, outside the ephemeral range,
 * so this file runs beside the other nginx tests.
 */
const KIT = join(import.meta.dirname, "..", "..", "templates", "operator", "prometheus");
const TENANT = "promreal";
const OUTSIDER = "outsider";
const EDGE_PORTS = { http: 62300, https: 62301, local: 62302 };
const OUTSIDER_PORTS = { http: 62304, https: 62305, local: 62306 };
const PROMETHEUS_PORT = 62303;
/** Generous: scrapes and evaluations every second, on a 2-core machine shared with other tests. */
const DEADLINE_MS = 60_000;
/** Room for a test's waits to run out and its assertion to say what was seen instead. */
const TEST_TIMEOUT_MS = 3 * DEADLINE_MS;


interface Job { job_name: string; scheme?: string; tls_config?: { ca_file?: string }; static_configs: { targets: string[]; labels?: Record<string, string> }[] }

/**
 * The kit's prometheus.yml as an operator fills it in for self-signed tenants: its self-signed jobs
 * (those with a `ca_file`: the shim's /metrics and vLLM's /metrics/vllm) copied per tenant, with
 * the tenant's name, CA file and endpoint host and nothing else changed; the letsencrypt examples
 * left out (nothing here answers for them).
 */
function operatorConfig(dir: string, tenants: { name: string; ca: string; target: string }[]): string {
  const kit = parse(readFileSync(join(KIT, "prometheus.yml"), "utf8")) as { global: Record<string, unknown>; rule_files: string[]; scrape_configs: Job[] };
  const selfSignedJobs = kit.scrape_configs.filter((j) => j.tls_config?.ca_file !== undefined);
  if (selfSignedJobs.length === 0) throw new Error("the kit's prometheus.yml has no self-signed job (tls_config.ca_file)");
  const jobs = tenants.flatMap(({ name, ca, target }) => selfSignedJobs.map((selfSigned) => {
    writeFileSync(join(dir, `${name}-ca.pem`), ca);
    const job = structuredClone(selfSigned);
    job.job_name = selfSigned.job_name.replace(/[^-]+$/, name);
    job.tls_config = { ...job.tls_config, ca_file: `${name}-ca.pem` };
    // The kit's labels with the tenant's name where it has one (a kit without the label shows here).
    const labels = { ...selfSigned.static_configs[0]!.labels };
    if ("tenant" in labels) labels.tenant = name;
    job.static_configs = [{ targets: [target], labels }];
    return job;
  }));
  // Shortened for the test (the kit's are 30s): a scrape and an evaluation every second, so
  // each state below shows within seconds.
  const global = { ...kit.global, scrape_interval: "1s", evaluation_interval: "1s" };
  return stringify({ ...kit, global, rule_files: kit.rule_files, scrape_configs: jobs });
}

const { query, target, rules } = prometheusApi(PROMETHEUS_PORT);

/** Polls `read` until `done` holds of its answer or the deadline passes; returns the last answer. */
const waitFor = <T>(read: () => Promise<T>, done: (value: T) => boolean): Promise<T> => waitForAnswer(read, done, DEADLINE_MS);

let edge: RenderedEdge | undefined;
let outsider: RenderedEdge | undefined;
let prometheus: RunningPrometheus | undefined;
let shimStopped = false;

describe("the kit's prometheus.yml and alerts.yml in a real Prometheus, scraping the rendered edge", () => {
  beforeAll(async () => {
    if (NO_PROMETHEUS) return;
    edge = await startRenderedEdge({ stack: TENANT, settings: { adminCidrs: ["127.0.0.1/32"] }, ports: EDGE_PORTS });
    // A tenant whose adminCidrs this Prometheus (127.0.0.1) is not in.
    outsider = await startRenderedEdge({ stack: OUTSIDER, settings: { adminCidrs: ["203.0.113.7/32"] }, ports: OUTSIDER_PORTS });
    const dir = tempDir("prometheus-e2e-");
    copyFileSync(join(KIT, "alerts.yml"), join(dir, "alerts.yml"));
    writeFileSync(join(dir, "prometheus.yml"), operatorConfig(dir, [
      // The two forms of target the kit says the certificate verifies: the endpoint's host name,
      // and the instance's IP (the outsider's 403 comes after its TLS handshake succeeded).
      { name: TENANT, ca: edge.nginx.certificate, target: `localhost:${EDGE_PORTS.https}` },
      { name: OUTSIDER, ca: outsider.nginx.certificate, target: `127.0.0.1:${OUTSIDER_PORTS.https}` },
    ]));
    prometheus = await startPrometheus(dir, PROMETHEUS_PORT, DEADLINE_MS);
  }, TEST_TIMEOUT_MS);

  afterAll(async () => {
    try {
      await prometheus?.stop();
    } finally {
      try {
        await outsider?.close();
      } finally {
        if (shimStopped) await edge?.nginx.stop();
        else await edge?.close();
      }
    }
  });

  const job = `gpu-sandbox-${TENANT}`;

  it("scrapes the tenant over TLS with its CA: up is 1, the shim's series carry the tenant label, and every alert rule evaluates", async (ctx) => {
    if (NO_PROMETHEUS) return ctx.skip(NO_PROMETHEUS);
    const up = await waitFor(() => query(`up{job="${job}", tenant="${TENANT}"}`), (r) => r[0]?.value[1] === "1");
    expect(up.map((s) => s.value[1]), JSON.stringify(await target(job))).toEqual(["1"]);

    const shimSeries = await waitFor(() => query(`count by (tenant) ({__name__=~"shim_.+", job="${job}"})`), (r) => r.length > 0);
    expect(shimSeries.map((s) => s.metric)).toEqual([{ tenant: TENANT }]);
    expect(Number(shimSeries[0]!.value[1])).toBeGreaterThan(5);

    const kitRules = (parse(readFileSync(join(KIT, "alerts.yml"), "utf8")) as { groups: { rules: { alert: string }[] }[] }).groups.flatMap((g) => g.rules.map((r) => r.alert));
    const loaded = await waitFor(rules, (rs) => rs.length > 0 && rs.every((r) => r.health !== "unknown"));
    expect(loaded.map((r) => r.name).sort()).toEqual([...kitRules].sort());
    expect(loaded.filter((r) => r.health !== "ok").map((r) => `${r.name}: ${r.health} ${r.lastError}`)).toEqual([]);
  }, TEST_TIMEOUT_MS);

  it("after upstream failures through nginx, shim_upstream_failures_total is scraped with its reason and the tenant", async (ctx) => {
    if (NO_PROMETHEUS) return ctx.skip(NO_PROMETHEUS);
    edge!.shim.fake.set({ failStatus: 500 });
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`https://localhost:${EDGE_PORTS.https}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${edge!.key}`, "content-type": "application/json" },
        body: JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }] }),
      });
      await res.text();
      expect(res.status).toBeGreaterThanOrEqual(500);
    }
    edge!.shim.fake.reset();
    // `> 0`: each fixed reason is exported at 0 from the start, so that its first failure is an increase.
    const failures = await waitFor(() => query(`shim_upstream_failures_total{job="${job}"} > 0`), (r) => r.some((s) => Number(s.value[1]) >= 3));
    expect(failures.map((s) => ({ reason: s.metric.reason, tenant: s.metric.tenant, value: s.value[1] }))).toEqual([{ reason: "status_500", tenant: TENANT, value: "3" }]);
  }, TEST_TIMEOUT_MS);

  it("scrapes vLLM's own metrics through /metrics/vllm with the kit's vllm-gpu-sandbox job: requests vLLM holds past its batch arrive as waiting, with the tenant and model_name", async (ctx) => {
    if (NO_PROMETHEUS) return ctx.skip(NO_PROMETHEUS);
    const vllmJob = `vllm-gpu-sandbox-${TENANT}`;
    const up = await waitFor(() => query(`up{job="${vllmJob}"}`), (r) => r[0]?.value[1] === "1");
    expect(up.map((s) => s.value[1]), JSON.stringify(await target(vllmJob))).toEqual(["1"]);
    // vLLM runs one request at a time here; three through nginx and the shim: one runs, two wait.
    edge!.shim.fake.set({ hang: true, maxNumSeqs: 1 });
    const aborts = [0, 1, 2].map(() => new AbortController());
    const held = aborts.map((a) => fetch(`https://localhost:${EDGE_PORTS.https}/v1/chat/completions`, {
      method: "POST", signal: a.signal,
      headers: { authorization: `Bearer ${edge!.key}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }] }),
    }).catch(() => undefined));
    try {
      const waiting = await waitFor(() => query(`vllm:num_requests_waiting{job="${vllmJob}"}`), (r) => r[0]?.value[1] === "2");
      expect(waiting.map((s) => ({ ...s.metric, value: s.value[1] }))).toEqual([{
        __name__: "vllm:num_requests_waiting", job: vllmJob, instance: `localhost:${EDGE_PORTS.https}`, tenant: TENANT,
        engine: "0", model_name: "qwen2.5-7b", value: "2",
      }]);
      expect((await query(`vllm:num_requests_running{job="${vllmJob}"}`)).map((s) => s.value[1])).toEqual(["1"]);
    } finally {
      for (const a of aborts) a.abort();
      await Promise.all(held);
      edge!.shim.fake.reset();
    }
    // Let go, the queue empties at the next scrape.
    const drained = await waitFor(() => query(`vllm:num_requests_waiting{job="${vllmJob}"}`), (r) => r[0]?.value[1] === "0");
    expect(drained.map((s) => s.value[1])).toEqual(["0"]);
  }, TEST_TIMEOUT_MS);

  it("with the shim stopped (nginx answering 502) the target goes down and GpuSandboxShimDown goes active (pending) for the tenant", async (ctx) => {
    if (NO_PROMETHEUS) return ctx.skip(NO_PROMETHEUS);
    shimStopped = true;
    const stoppedAt = Date.now();
    await edge!.shim.close();
    const down = await waitFor(() => target(job), (t) => t?.health === "down");
    expect(down?.health).toBe("down");
    expect(down?.lastError).toMatch(/502/);
    const rule = await waitFor(async () => (await rules()).find((r) => r.name === "GpuSandboxShimDown"),
      (r) => r?.alerts.some((a) => a.labels.tenant === TENANT) === true);
    const alert = rule?.alerts.find((a) => a.labels.tenant === TENANT);
    expect(alert).toMatchObject({ labels: { job, tenant: TENANT, severity: "critical" } });
    expect(ACTIVE).toContain(alert?.state);
    expect(Date.parse(alert!.activeAt)).toBeGreaterThanOrEqual(stoppedAt - 1000); // set off by the stop (a second for the clocks' rounding)
  }, TEST_TIMEOUT_MS);

  it("a tenant whose adminCidrs this Prometheus is not in answers its scrapes 403: the target is down, GpuSandboxShimDown active", async (ctx) => {
    if (NO_PROMETHEUS) return ctx.skip(NO_PROMETHEUS);
    const outsiderJob = `gpu-sandbox-${OUTSIDER}`;
    const down = await waitFor(() => target(outsiderJob), (t) => t?.health === "down");
    expect(down?.lastError).toMatch(/403/);
    const rule = await waitFor(async () => (await rules()).find((r) => r.name === "GpuSandboxShimDown"),
      (r) => r?.alerts.some((a) => a.labels.tenant === OUTSIDER) === true);
    expect(ACTIVE).toContain(rule?.alerts.find((a) => a.labels.tenant === OUTSIDER)?.state);
    // vLLM's metrics too: refused to an address outside adminCidrs, and no vLLM series from it.
    const vllmDown = await waitFor(() => target(`vllm-gpu-sandbox-${OUTSIDER}`), (t) => t?.health === "down");
    expect(vllmDown?.lastError).toMatch(/403/);
    expect(await query(`{__name__=~"vllm:.+", tenant="${OUTSIDER}"}`)).toEqual([]);
  }, TEST_TIMEOUT_MS);
});
