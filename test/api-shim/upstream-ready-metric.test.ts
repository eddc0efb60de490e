import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, expect, it } from "vitest";
import { closeApp } from "../../api-shim/src/app.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";
import { pollUntil } from "../support/tools.ts";

/**
 * shim_upstream_ready: a model server that dies while no client calls fails no request, so no
 * counter of the shim's moves; the readiness watch probes the upstream as /ready does, on a
 * timer, and the gauge is what GpuSandboxUpstreamNotReady (alerts.yml) fires on.
 */
const gauge = async (h: Harness): Promise<string | null> =>
  /^shim_upstream_ready (\d+)$/m.exec(await (await fetch(`${h.url}/metrics`)).text())?.[1] ?? null;

/** Polls the gauge until it reads `value` (up to 5 s); returns what it read last. */
async function gaugeBecomes(h: Harness, value: string): Promise<string | null> {
  let last: string | null = null;
  await pollUntil(async () => (last = await gauge(h)) === value, 5000, 50);
  return last;
}

describe("shim_upstream_ready, kept by the readiness watch", () => {
  it("goes 1 → 0 when the upstream dies and back to 1 when it returns, with no request but the scrapes; the log says each change once", async () => {
    const h = await startShim({ env: { SHIM_READY_PROBE_INTERVAL_MS: "100" } });
    try {
      const port = Number(new URL(h.fake.url).port);
      expect(await gaugeBecomes(h, "1")).toBe("1");
      await h.fake.close(); // vLLM dead: nothing answers on its port
      expect(await gaugeBecomes(h, "0")).toBe("0");
      await h.fake.start(port, "127.0.0.1"); // back on the same port
      expect(await gaugeBecomes(h, "1")).toBe("1");

      // Only the scrapes reached the shim: no client request, no /ready.
      const paths = h.logs.map((l) => JSON.parse(l) as { msg: string; path?: string }).filter((l) => l.msg === "request").map((l) => l.path);
      expect(new Set(paths)).toEqual(new Set(["/metrics"]));
      expect(h.fake.counters.received).toBe(0);
      const said = h.logs.map((l) => JSON.parse(l) as { msg: string; cause?: string }).filter((l) => /^the upstream is/.test(l.msg));
      expect(said.map((l) => l.msg.split(":")[0])).toEqual(["the upstream is not ready (unreachable)", "the upstream is ready"]); // not the first probe's ready: nothing changed
      expect(said[0]!.cause).toBe("ECONNREFUSED");
    } finally {
      await h.close();
    }
  }, 30_000);

  it("is 0 while the model server behind a proxy (SHIM_READY_URL) is not up, though the upstream lists the models", async () => {
    let status = 503; // vLLM still loading
    const modelServer = createServer((_req, res) => res.writeHead(status).end());
    await new Promise<void>((resolve) => modelServer.listen(0, "127.0.0.1", resolve));
    const h = await startShim({ env: { SHIM_READY_PROBE_INTERVAL_MS: "100", SHIM_READY_URL: `http://127.0.0.1:${(modelServer.address() as AddressInfo).port}/health` } });
    try {
      expect(await gaugeBecomes(h, "0")).toBe("0");
      status = 200;
      expect(await gaugeBecomes(h, "1")).toBe("1");
    } finally {
      await h.close();
      await new Promise((resolve) => modelServer.close(resolve));
    }
  }, 30_000);

  it("is not exported before the first probe (no 0 an alert would take for a dead upstream); each fixed failure reason is, at 0", async () => {
    const h = await startShim({ env: { SHIM_READY_PROBE_INTERVAL_MS: "600000" } });
    try {
      const text = await (await fetch(`${h.url}/metrics`)).text();
      expect(text).not.toMatch(/^shim_upstream_ready /m);
      // At 0 from the start: the first failure of each is an increase that rate()/increase() see.
      expect(text).toMatch(/^shim_upstream_failures_total\{reason="upstream_error"\} 0$/m);
      expect(text).toMatch(/^shim_upstream_failures_total\{reason="upstream_timeout"\} 0$/m);
    } finally {
      await h.close();
    }
  });

  it("stops probing when the drain begins and after the shim closed", async () => {
    let hits = 0;
    const modelServer = createServer((_req, res) => (hits++, res.writeHead(200).end()));
    await new Promise<void>((resolve) => modelServer.listen(0, "127.0.0.1", resolve));
    const h = await startShim({ env: { SHIM_READY_PROBE_INTERVAL_MS: "50", SHIM_READY_URL: `http://127.0.0.1:${(modelServer.address() as AddressInfo).port}/health` } });
    try {
      expect(await pollUntil(() => hits >= 2, 5000)).toBe(true); // a probe at most every 2 s (its cache), whatever the interval
      // A slow stream keeps the drain going for a while (its tokens slow, not the model list the probe reads).
      const { key } = await h.createKey({ credits: 100 });
      h.fake.set({ tokenDelayMs: 400 });
      const chat = h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 10, stream: true })
        .then(async (stream) => { for await (const _ of stream); });
      await h.fake.until((c) => c.received === 1);
      const closed = closeApp(h.app, 10_000);
      await new Promise((r) => setTimeout(r, 150)); // a probe already on its way when the drain began may land
      const atDrain = hits;
      await new Promise((r) => setTimeout(r, 2600)); // past the 2 s the probe is cached for
      expect(h.app.shim.inflight.draining).toBe(true);
      expect(hits).toBe(atDrain);
      await chat;
      await closed;
      await new Promise((r) => setTimeout(r, 300));
      expect(hits).toBe(atDrain);
    } finally {
      await h.close();
      await new Promise((resolve) => modelServer.close(resolve));
    }
  }, 30_000);
});
