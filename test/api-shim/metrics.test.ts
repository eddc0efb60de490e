import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { Metrics } from "../../api-shim/src/observability/metrics.ts";
import { MIN_FREE_BYTES } from "../../api-shim/src/store/sqlite-space.ts";
import { startShim } from "../support/shim-harness.ts";

const ROOT = join(import.meta.dirname, "..", "..");

/** The `le` of the bucket an observation of `seconds` counts in first (Infinity: only +Inf). */
async function bucketOf(seconds: number): Promise<number> {
  const m = new Metrics();
  m.duration.observe({ route: "/v1/chat/completions" }, seconds);
  const text = await m.registry.metrics();
  const counted = [...text.matchAll(/^shim_request_duration_seconds_bucket\{le="([^"]+)",route="[^"]+"\} (\d+)$/gm)]
    .filter(([, , n]) => n === "1")
    .map(([, le]) => (le === "+Inf" ? Infinity : Number(le)));
  return Math.min(...counted);
}

describe("shim_request_duration_seconds", () => {
  it("tells the long requests the rendered stack allows apart: p95/p99 do not stick at a bucket below the upstream timeout", async () => {
    const compose = parseYaml(readFileSync(join(ROOT, "templates", "compose.yaml"), "utf8")) as { services: { shim: { environment: Record<string, string> } } };
    const env = compose.services.shim.environment;
    // A non-streamed generation may take until the upstream timeout (595 s rendered); a stream as long, and longer.
    const longest = Math.max(Number(env.SHIM_UPSTREAM_TIMEOUT_MS), Number(env.SHIM_STREAM_IDLE_TIMEOUT_MS)) / 1000;
    expect(longest).toBeGreaterThan(120);
    expect(await bucketOf(longest)).toBeLessThan(Infinity);
    // A 3-minute request and a 10-minute one are told apart (histogram_quantile interpolates within a bucket).
    expect(await bucketOf(180)).toBeLessThan(await bucketOf(longest));
  });
});

describe("shim_sqlite_volume_free_bytes", () => {
  it("says in its help the free space under which the shim fails closed, from the constant it uses", async () => {
    const metrics = new Metrics();
    metrics.sqliteVolumeFree(1);
    const text = await metrics.registry.metrics();
    expect(text).toContain(`# HELP shim_sqlite_volume_free_bytes`);
    expect(text).toMatch(new RegExp(`fall under ${MIN_FREE_BYTES / 2 ** 20} MiB \\(${MIN_FREE_BYTES} bytes\\)`));
  });
});

describe("the counters read at each scrape", () => {
  it("shim_answer_memory_waits_total and shim_body_memory_refusals_total say the count so far, however often they are scraped", async () => {
    const metrics = new Metrics();
    metrics.answerMemory = { inUse: 0, waits: 3 };
    metrics.bodyMemory = { inUse: 0, refusals: 2 };
    for (let scrape = 0; scrape < 3; scrape++) {
      const text = await metrics.registry.metrics();
      expect(text).toMatch(/^shim_answer_memory_waits_total 3$/m);
      expect(text).toMatch(/^shim_body_memory_refusals_total 2$/m);
    }
    metrics.answerMemory = { inUse: 0, waits: 4 };
    expect(await metrics.registry.metrics()).toMatch(/^shim_answer_memory_waits_total 4$/m);
  });

  it("the retry join's counters and gauges say what the left generations hold and have counted, however often they are scraped", async () => {
    const metrics = new Metrics();
    metrics.retryMemory = { size: 3, bytes: 4096, keptAnswers: 7, joins: { running: 1, finished: 2 }, replays: { running: 5, finished: 6 }, evicted: { left: { expired: 3, over_key_share: 4, over_total: 0 }, idempotent: { expired: 8, over_key_share: 9, over_total: 1 } } };
    for (let scrape = 0; scrape < 3; scrape++) {
      const text = await metrics.registry.metrics();
      expect(text).toMatch(/^shim_retry_joins_total\{outcome="running"\} 1$/m);
      expect(text).toMatch(/^shim_retry_joins_total\{outcome="finished"\} 2$/m);
      expect(text).toMatch(/^shim_retry_answers_kept_total 7$/m);
      expect(text).toMatch(/^shim_idempotent_replays_total\{outcome="running"\} 5$/m);
      expect(text).toMatch(/^shim_idempotent_replays_total\{outcome="finished"\} 6$/m);
      expect(text).toMatch(/^shim_retry_memory_evictions_total\{reason="expired",kind="left"\} 3$/m);
      expect(text).toMatch(/^shim_retry_memory_evictions_total\{reason="over_key_share",kind="left"\} 4$/m);
      expect(text).toMatch(/^shim_retry_memory_evictions_total\{reason="over_total",kind="left"\} 0$/m);
      // Idempotency-Key entries apart: a batch job's answered requests do not read as retries' losses.
      expect(text).toMatch(/^shim_retry_memory_evictions_total\{reason="expired",kind="idempotent"\} 8$/m);
      expect(text).toMatch(/^shim_retry_memory_evictions_total\{reason="over_key_share",kind="idempotent"\} 9$/m);
      expect(text).toMatch(/^shim_retry_memory_evictions_total\{reason="over_total",kind="idempotent"\} 1$/m);
      expect(text.match(/^shim_retry_memory_evictions_total\{/gm)).toHaveLength(6); // bounded: 3 reasons x 2 kinds
      expect(text).toMatch(/^shim_retry_memory_entries 3$/m);
      expect(text).toMatch(/^shim_retry_memory_bytes 4096$/m);
    }
  });
});

describe("shim_requests_in_flight", () => {
  it("counts a request waiting on an upstream that does not answer (seen nowhere else on /metrics) until its timeout answers it, not the scrape itself", async () => {
    const h = await startShim({ env: { SHIM_UPSTREAM_TIMEOUT_MS: "1500" } });
    try {
      const { key } = await h.createKey({ credits: 100 });
      const inFlight = async () => Number(/^shim_requests_in_flight (\d+)$/m.exec(await (await fetch(`${h.url}/metrics`)).text())?.[1]);
      expect(await inFlight()).toBe(0);
      h.fake.set({ hang: true });
      const waiting = h.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 1 });
      await expect.poll(inFlight).toBe(1);
      expect((await waiting).status).toBe(504);
      await expect.poll(inFlight).toBe(0);
    } finally {
      await h.close();
    }
  });
});

describe("shim_active_streams", () => {
  it("counts a stream while it runs, and not once it ended, whether whole or left by its client", { timeout: 30_000 }, async () => {
    const h = await startShim();
    try {
      const { key } = await h.createKey({ credits: 100 });
      const active = async () => Number(/^shim_active_streams (\d+)$/m.exec(await (await fetch(`${h.url}/metrics`)).text())?.[1]);
      expect(await active()).toBe(0);
      h.fake.set({ tokenDelayMs: 100, defaultTokens: 20 });
      const stream = (signal?: AbortSignal) =>
        fetch(`${h.url}/v1/chat/completions`, {
          method: "POST",
          signal,
          headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
          body: JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 20, stream: true }),
        });
      // One read whole: counted while it runs, not after.
      const whole = await stream();
      await expect.poll(active).toBe(1);
      expect(await whole.text()).toContain("[DONE]");
      await expect.poll(active).toBe(0);
      // One whose client leaves mid-stream: not counted once the shim has seen it go.
      const ac = new AbortController();
      const left = await stream(ac.signal);
      const reader = left.body!.getReader();
      await reader.read();
      await expect.poll(active).toBe(1);
      ac.abort();
      await expect.poll(active).toBe(0);
    } finally {
      h.fake.reset();
      await h.close();
    }
  });
});
