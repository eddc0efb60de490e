import { spawnSync } from "node:child_process";
import { describe, expect, it, vi } from "vitest";
import { openStream, releasedAtStart, shimProcessFixture } from "../support/shim-process.ts";

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

  it("a scrape after chat, streams, embeddings, refusals, upstream failures, the previous admin token and a stale hold released at start: promtool finds no problem", async (ctx) => {
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
    // A rotation's overlap: the previous admin token is let in and counted.
    const p = await f.start({ SHIM_ADMIN_TOKEN_PREVIOUS: f.previousAdminToken, SHIM_ADMIN_TOKEN_PREVIOUS_UNTIL: "2999-01-01T00:00:00Z" });
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
    expect((await fetch(`${p.url}/admin/keys`, { headers: { authorization: `Bearer ${f.previousAdminToken}` } })).status).toBe(200);
    f.fake.set({ failStatus: 500 });
    expect(await post("/v1/chat/completions", chat)).toBe(502);
    f.fake.set({ failStatus: null, stopAfterTokens: 1, stopMode: "error" });
    expect(await post("/v1/chat/completions", { ...chat, stream: true })).toBe(200);
    f.fake.reset();

    const scrape = await (await fetch(`${p.url}/metrics`)).text();
    // The traffic reached the families an operator alerts on, and Node's defaults are there.
    for (const series of ["shim_stale_reservations_released_total 1", "shim_admin_previous_token_requests_total 1", 'shim_upstream_failures_total{reason="status_500"} 1', 'shim_upstream_failures_total{reason="stream_error"} 1', 'shim_upstream_refusals_total{reason="status_400"} 1', 'shim_tokens_total{model="qwen2.5-7b",kind="completion"}', 'shim_requests_total{route="unmatched",status="404"} 1', "process_start_time_seconds", "nodejs_active_handles"]) {
      expect(scrape).toContain(series);
    }
    const lint = spawnSync("promtool", ["check", "metrics"], { input: scrape, encoding: "utf8" });
    expect({ status: lint.status, problems: `${lint.stdout}${lint.stderr}` }).toEqual({ status: 0, problems: "" });
    await f.output.stopCleanly(p);
  });
});
