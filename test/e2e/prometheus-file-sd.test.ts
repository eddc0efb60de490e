import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { main } from "../../scripts/list-tenants.ts";
import { FakePulumi, type FakeStack } from "../scripts/fake-pulumi.ts";
import { prometheusApi } from "../support/prometheus-api.ts";
import { NO_PROMETHEUS, type RunningPrometheus, startPrometheus, waitForAnswer } from "../support/prometheus-process.ts";
import { type RenderedEdge, startRenderedEdge } from "../support/rendered-edge.ts";
import { freePort, tempDir } from "../support/tools.ts";

/**
 * templates/operator/prometheus/prometheus-fleet.yml in a real Prometheus (Debian's package),
 * its targets written by `list-tenants --prometheus` from the stacks' outputs (a fake Pulumi CLI
 * giving each rendered edge's endpoint and CA): two self-signed tenants, each nginx with a
 * certificate of its own, scraped by the one gpu-sandbox-self-signed job through the CA bundle,
 * with the tenant label; the second added to a Prometheus already running, by running the
 * command again, with no reload. Both certificates name the same issuer (as every stack's CA is
 * "gpu-sandbox CA"): Go's verifier tries each CA of that name in the bundle. Ports: the OS's (freePort).
 */
const KIT = join(import.meta.dirname, "..", "..", "templates", "operator", "prometheus");
const DEADLINE_MS = 60_000;
const TEST_TIMEOUT_MS = 3 * DEADLINE_MS;

const edges = new Map<string, { edge: RenderedEdge; host: string }>();
let prometheus: RunningPrometheus | undefined;
let api: ReturnType<typeof prometheusApi>;
let dir = "";
let root = "";

async function startEdge(tenant: string, host: string): Promise<void> {
  const [http, https, local] = [await freePort(), await freePort(), await freePort()];
  const edge = await startRenderedEdge({ stack: tenant, settings: { adminCidrs: ["127.0.0.1/32"] }, ports: { http, https, local } });
  edges.set(tenant, { edge, host: `${host}:${https}` });
}

/** `list-tenants --prometheus <dir>/gpu-sandbox` over stack files and outputs for the edges started so far. */
async function generate(): Promise<{ code: number; stderr: string }> {
  const stacks: Record<string, FakeStack> = {};
  for (const [tenant, { edge, host }] of edges) {
    writeFileSync(join(root, "stacks", `Pulumi.${tenant}.yaml`), stringify({ config: { "gpu-sandbox:region": "us-ord", "gpu-sandbox:adminCidrs": ["127.0.0.1/32"], "gpu-sandbox:tls": { mode: "self-signed" } } }));
    stacks[tenant] = { outputs: { region: "us-ord", endpoint: `https://${host}/v1`, caCertificate: edge.nginx.certificate, servingDeployed: true, sshCommand: "ssh root@127.0.0.1" } };
  }
  const io = memoryIo();
  const code = await main(["--prometheus", join(dir, "gpu-sandbox")], { root, pulumi: new FakePulumi(stacks), io, env: {}, now: () => new Date() });
  return { code, stderr: io.stderr.join("\n") };
}

const waitFor = <T>(read: () => Promise<T>, done: (value: T) => boolean): Promise<T> => waitForAnswer(read, done, DEADLINE_MS);

describe("prometheus-fleet.yml scraping the targets list-tenants --prometheus wrote", () => {
  beforeAll(async () => {
    if (NO_PROMETHEUS) return;
    dir = tempDir("prometheus-fleet-");
    root = tempDir("prometheus-fleet-root-");
    mkdirSync(join(root, "stacks"));
    await startEdge("fleetone", "localhost");
    const generated = await generate();
    expect(generated.code, generated.stderr).toBe(0);
    copyFileSync(join(KIT, "alerts.yml"), join(dir, "alerts.yml"));
    const kit = parse(readFileSync(join(KIT, "prometheus-fleet.yml"), "utf8")) as Record<string, unknown>;
    // A scrape and an evaluation every second (the kit's are 30s), so each state shows within seconds.
    writeFileSync(join(dir, "prometheus.yml"), stringify({ ...kit, global: { scrape_interval: "1s", evaluation_interval: "1s" } }));
    const port = await freePort();
    api = prometheusApi(port);
    prometheus = await startPrometheus(dir, port, DEADLINE_MS);
  }, TEST_TIMEOUT_MS);

  afterAll(async () => {
    try {
      await prometheus?.stop();
    } finally {
      for (const { edge } of edges.values()) await edge.close();
    }
  });

  it("the shim's and vLLM's jobs scrape the generated self-signed target over TLS with the tenant's CA from the bundle, with the tenant label", async (ctx) => {
    if (NO_PROMETHEUS) return ctx.skip(NO_PROMETHEUS);
    const up = await waitFor(() => api.query('up{job="gpu-sandbox-self-signed"}'), (r) => r[0]?.value[1] === "1");
    expect(up.map((s) => ({ tenant: s.metric.tenant, instance: s.metric.instance, up: s.value[1] })), JSON.stringify(await api.target("gpu-sandbox-self-signed")))
      .toEqual([{ tenant: "fleetone", instance: edges.get("fleetone")!.host, up: "1" }]);
    const shimSeries = await waitFor(() => api.query('count by (tenant) ({__name__=~"shim_.+", job="gpu-sandbox-self-signed"})'), (r) => r.length > 0);
    expect(shimSeries.map((s) => s.metric)).toEqual([{ tenant: "fleetone" }]);
    const vllm = await waitFor(() => api.query('up{job="vllm-gpu-sandbox-self-signed"}'), (r) => r[0]?.value[1] === "1");
    expect(vllm.map((s) => ({ tenant: s.metric.tenant, up: s.value[1] }))).toEqual([{ tenant: "fleetone", up: "1" }]);
  }, TEST_TIMEOUT_MS);

  it("a tenant added is scraped once the command runs again, with its own CA from the rewritten bundle, and no reload of Prometheus", async (ctx) => {
    if (NO_PROMETHEUS) return ctx.skip(NO_PROMETHEUS);
    await startEdge("fleettwo", "127.0.0.1"); // the certificate names the instance's IP too
    const generated = await generate();
    expect(generated.code, generated.stderr).toBe(0);
    const up = await waitFor(() => api.query('up{job="gpu-sandbox-self-signed"} == 1'), (r) => r.length === 2);
    expect(up.map((s) => s.metric.tenant).sort(), JSON.stringify(await api.targets())).toEqual(["fleetone", "fleettwo"]);
    const shimSeries = await waitFor(() => api.query('count by (tenant) ({__name__=~"shim_.+", job="gpu-sandbox-self-signed"})'), (r) => r.length === 2);
    expect(shimSeries.map((s) => s.metric.tenant).sort()).toEqual(["fleetone", "fleettwo"]);
  }, TEST_TIMEOUT_MS);
});
