import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { UPSTREAM_FAILURE_REASONS } from "../../api-shim/src/upstream/failure-reasons.ts";
import { alertRule } from "../support/alert-rules.ts";
import { sectionAt } from "../support/doc-anchors.ts";
import { answeringUpstream, shimClient, shimProcessFixture } from "../support/shim-process.ts";

const ROOT = join(import.meta.dirname, "..", "..");
const f = shimProcessFixture("upstream-failure-reasons-");

/** The runbook an operator opens when `rate(shim_upstream_failures_total[5m]) > 0` fires: the section of
 * docs/troubleshooting.md that the alert's `runbook` names (the Troubleshooting row links there too). */
function runbook(): string {
  const alert = alertRule("GpuSandboxUpstreamFailures");
  const [page, anchor] = alert.annotations.runbook.split("#");
  expect(page).toBe("docs/troubleshooting.md");
  const ops = readFileSync(join(ROOT, "docs", "troubleshooting.md"), "utf8");
  expect(ops).toContain(`[More](#${anchor})`);
  return sectionAt(ops, anchor!);
}

/** docs/api-shim/operations.md's list of the counter's reasons (its Metrics paragraph). */
function apiShimList(): string {
  const doc = readFileSync(join(ROOT, "docs", "api-shim", "operations.md"), "utf8");
  const start = doc.indexOf("`shim_upstream_failures_total{reason}`");
  return doc.slice(start, doc.indexOf("`shim_upstream_refusals_total{reason}`", start));
}

describe("every reason shim_upstream_failures_total can carry is explained where its alert sends the operator", () => {
  it("the runbook and docs/api-shim/operations.md name every reason the code counts under (UPSTREAM_FAILURE_REASONS, the type countUpstreamFailure takes), and `status_<code>` for the rest", () => {
    for (const text of [runbook(), apiShimList()]) {
      expect(UPSTREAM_FAILURE_REASONS.filter((r) => !text.includes(`\`${r}\``))).toEqual([]);
      expect(text).toContain("`status_<code>`");
      expect(text).not.toContain("status_5xx"); // no such label: `status_500`, `status_502`…
    }
  });

  it("the runbook says a request too slow for the deployed stack is `status_408`, LiteLLM's own 590 s request_timeout, which fires before the shim's", () => {
    const row = runbook();
    expect(row).toMatch(/`status_408`[^;]*LiteLLM's `request_timeout`, 590 s, runs out\s+before the shim's 595 s/);
    const litellm = readFileSync(join(ROOT, "templates", "litellm.yaml"), "utf8");
    const compose = readFileSync(join(ROOT, "templates", "compose.yaml"), "utf8");
    expect(litellm).toMatch(/request_timeout: 590\b/);
    expect(compose).toMatch(/SHIM_UPSTREAM_TIMEOUT_MS: "595000"/);
  });

  it("through the real shim: the reasons a real upstream produces (LiteLLM's 408 on its own timeout, a gateway's 504, an error body with 200, a JSON answer to a stream request, a model list that is not one) are each named by the runbook", async () => {
    const up = await answeringUpstream();
    const p = await f.start({ SHIM_UPSTREAM_URL: up.url });
    const c = shimClient(p, f.key.key);
    const chat = (stream: boolean) => c.chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 3, stream } as never).then(async (r: unknown) => {
      if (stream) for await (const _ of r as AsyncIterable<unknown>);
    }, () => {});
    for (const status of [408, 504]) {
      up.answer = { status, body: JSON.stringify({ error: { message: "Request timed out", type: "timeout", code: String(status) } }) };
      await chat(false);
    }
    // An error body with status 200 (vLLM 0.15.1/0.16.0), code 500.
    up.answer = { status: 200, body: JSON.stringify({ error: { message: "engine dead", type: "InternalServerError", code: 500 } }) };
    await chat(false);
    // A JSON answer where a stream was asked for.
    up.answer = { status: 200, body: JSON.stringify({ id: "x", object: "chat.completion", choices: [], usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 } }) };
    await chat(true);
    up.answer = { status: 200, body: "{}" };
    await c.models.list().catch(() => {});
    const text = await (await fetch(`${p.url}/metrics`)).text();
    const reasons = [...text.matchAll(/^shim_upstream_failures_total\{reason="([^"]+)"\} [1-9]/gm)].map((m) => m[1]!); // counted (each fixed reason is exported at 0 from the start)
    await f.output.stopCleanly(p);
    await up.close();
    expect(reasons.sort()).toEqual(["error_body", "not_a_model_list", "not_a_stream", "status_408", "status_504"]);
    const row = runbook();
    expect(reasons.filter((r) => !row.includes(`\`${r}\``))).toEqual([]);
  }, 30_000);
});
