import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it, vi } from "vitest";
import { stringify } from "yaml";
import { openStream, releasedAtStart, shimProcessFixture } from "../support/shim-process.ts";
import { tempDir } from "../support/tools.ts";

const ROOT = join(import.meta.dirname, "..", "..");

/**
 * /metrics as a Prometheus operator checks it: a real shim process's scrape (Node's default
 * metrics included, as server.ts registers them), after traffic that touches every family
 * docs/api-shim/operations.md lists, piped into Prometheus' own linter, `promtool check metrics`
 * (Debian's `prometheus` package; .ci/run installs it). Its findings (a gauge named `_total`, a
 * counter without it, a unit not in base units, a missing HELP) are what a scrape config's
 * reviewer or a dashboard's author trips on.
 */
const promtool = spawnSync("promtool", ["--version"], { encoding: "utf8" });
const hasPromtool = promtool.error === undefined && promtool.status === 0;

describe("/metrics under `promtool check metrics`", () => {
  const f = shimProcessFixture("shim-promtool-");

  it("a scrape after chat, streams, embeddings, refusals, upstream failures and a stale hold released at start: promtool finds no problem", async (ctx) => {
    if (!hasPromtool) return ctx.skip("promtool is not installed (apt-get install prometheus; .ci/run installs it)");
    const { key } = f;
    // A hold left by a process killed mid-stream, released by the next start.
    f.fake.set({ tokenDelayMs: 50, defaultTokens: 2000 });
    const first = await f.start();
    const stream = await openStream(first, key.key, 2000);
    await vi.waitFor(async () => expect((await f.audit()).reservations).toBe(1), { timeout: 10_000, interval: 25 });
    first.child.kill("SIGKILL");
    await first.exited;
    f.output.keep(first);
    await stream.next().catch(() => undefined);
    f.fake.reset();
    const p = await f.start();
    expect(releasedAtStart(p)).toBe(1);

    const headers = { authorization: `Bearer ${key.key}`, "content-type": "application/json" };
    const post = async (path: string, body: unknown, h: Record<string, string> = headers) => {
      const res = await fetch(p.url + path, { method: "POST", headers: h, body: JSON.stringify(body) });
      await res.text();
      return res.status;
    };
    const chat = { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 3 };
    expect(await post("/v1/chat/completions", chat)).toBe(200);
    expect(await post("/v1/chat/completions", { ...chat, stream: true })).toBe(200);
    expect(await post("/v1/completions", { model: "qwen2.5-7b", prompt: "hi", max_tokens: 3, stream: true })).toBe(200);
    expect(await post("/v1/embeddings", { model: "qwen2.5-7b", input: "hi" })).toBe(200);
    expect(await post("/v1/responses", { model: "qwen2.5-7b", input: "hi", max_output_tokens: 3 })).toBe(200);
    expect((await fetch(`${p.url}/v1/models/qwen2.5-7b`, { headers })).status).toBe(200);
    expect(await post("/v1/chat/completions", chat, { ...headers, authorization: "Bearer sk-gs-nope" })).toBe(401);
    expect(await post("/v1/chat/completions", { ...chat, model: "not-served" })).toBe(404);
    expect(await post("/v1/chat/completions", { ...chat, max_tokens: 0 })).toBe(400); // the upstream's refusal
    expect((await fetch(`${p.url}/no/such/path`, { headers })).status).toBe(404);
    f.fake.set({ failStatus: 500 });
    expect(await post("/v1/chat/completions", chat)).toBe(502);
    f.fake.set({ failStatus: null, stopAfterTokens: 1, stopMode: "error" });
    expect(await post("/v1/chat/completions", { ...chat, stream: true })).toBe(200);
    f.fake.reset();

    const scrape = await (await fetch(`${p.url}/metrics`)).text();
    // The traffic reached the families an operator alerts on, and Node's defaults are there.
    for (const series of ["shim_stale_reservations_released_total 1", 'shim_upstream_failures_total{reason="status_500"} 1', 'shim_upstream_failures_total{reason="stream_error"} 1', 'shim_upstream_refusals_total{reason="status_400"} 1', 'shim_tokens_total{model="qwen2.5-7b",kind="completion"}', 'shim_requests_total{route="unmatched",status="404"} 1', "process_start_time_seconds", "nodejs_active_handles"]) {
      expect(scrape).toContain(series);
    }
    const lint = spawnSync("promtool", ["check", "metrics"], { input: scrape, encoding: "utf8" });
    expect({ status: lint.status, problems: `${lint.stdout}${lint.stderr}` }).toEqual({ status: 0, problems: "" });
    await f.output.stopCleanly(p);
  });
});

describe("the PromQL the docs suggest for alerts", () => {
  // Each as the docs write it (docs/api-shim/operations.md, Metrics; docs/operations.md, Troubleshooting).
  const expressions = [
    "rate(shim_upstream_failures_total[5m]) > 0",
    "shim_sqlite_volume_free_bytes < 2e9",
    "predict_linear(shim_sqlite_volume_free_bytes[30m], 3600) < 16777216",
    "increase(shim_sqlite_checkpoint_failures_total[5m]) > 0",
    "up == 0",
    "changes(process_start_time_seconds[15m]) > 2",
  ];

  it("each is in the docs, and `promtool check rules` takes each as an alert's expression", (ctx) => {
    const docs = ["docs/operations.md", "docs/api-shim/operations.md"].map((p) => readFileSync(join(ROOT, p), "utf8").replace(/\s+/g, " ")).join("\n");
    for (const e of expressions) expect(docs).toContain(`\`${e}\``);
    if (!hasPromtool) return ctx.skip("promtool is not installed (apt-get install prometheus; .ci/run installs it)");
    const file = join(tempDir("docs-promql-"), "rules.yml");
    writeFileSync(file, stringify({ groups: [{ name: "docs", rules: expressions.map((expr, i) => ({ alert: `Docs${i}`, expr, for: "1m" })) }] }));
    const check = spawnSync("promtool", ["check", "rules", file], { encoding: "utf8" });
    expect({ status: check.status, stderr: check.stderr }).toEqual({ status: 0, stderr: "" });
    expect(check.stdout).toContain(`SUCCESS: ${expressions.length} rules found`);
  });
});
