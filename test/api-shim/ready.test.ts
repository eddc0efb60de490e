import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { manualClock } from "../support/clocks.ts";
import { fillUpstreamPool, overrideStore, startShim, type Harness } from "../support/shim-harness.ts";

/**
 * /ready behind a proxy upstream: LiteLLM lists its configured models whether or not vLLM is up,
 * so SHIM_READY_URL (vLLM's /health in the Compose file) must answer too.
 */
describe("/ready with SHIM_READY_URL", () => {
  let modelServer: Server;
  let status = 503;
  let h: Harness;
  const clock = manualClock();

  beforeAll(async () => {
    modelServer = createServer((_req, res) => res.writeHead(status).end());
    await new Promise<void>((resolve) => modelServer.listen(0, "127.0.0.1", resolve));
    const { port } = modelServer.address() as AddressInfo;
    h = await startShim({ clock, env: { SHIM_READY_URL: `http://127.0.0.1:${port}/health` } });
  });
  afterAll(async () => {
    await h.close();
    await new Promise((resolve) => modelServer.close(resolve));
  });

  const ready = async () => {
    clock.advance(3000); // past the 2 s probe cache
    const res = await fetch(`${h.url}/ready`);
    return { status: res.status, body: await res.json() };
  };

  it("is not ready while the model server is loading, even though the upstream lists the models", async () => {
    expect(await ready()).toEqual({ status: 503, body: { status: "not_ready", store: "ok", upstream: "model server: status 503" } });
  });

  it("is ready once the model server answers 2xx", async () => {
    status = 200;
    expect(await ready()).toEqual({ status: 200, body: { status: "ready", store: "ok", upstream: "ok" } });
  });

  it("is not ready when the model server answers but the upstream in front of it does not (a LiteLLM down)", async () => {
    status = 200;
    const port = Number(new URL(h.fake.url).port);
    await h.fake.close();
    try {
      expect(await ready()).toEqual({ status: 503, body: { status: "not_ready", store: "ok", upstream: "unreachable" } });
    } finally {
      await h.fake.start(port, "127.0.0.1");
    }
    expect(await ready()).toEqual({ status: 200, body: { status: "ready", store: "ok", upstream: "ok" } });
  });

  it("says so when the model server cannot be reached", async () => {
    await new Promise((resolve) => modelServer.close(resolve));
    modelServer.closeAllConnections();
    expect(await ready()).toEqual({ status: 503, body: { status: "not_ready", store: "ok", upstream: "model server: unreachable" } });
    modelServer.listen(0, "127.0.0.1"); // so afterAll's close has a server to close
  });
});

describe("/ready answers within the 5 s its callers wait", () => {
  it("with a slow store and a model server that never answers: the store and both probes run at once, each within 4 s", async () => {
    const hung = createServer(() => {}); // accepts, never answers
    await new Promise<void>((resolve) => hung.listen(0, "127.0.0.1", resolve));
    const { port } = hung.address() as AddressInfo;
    // A slow store too: pinged alongside the probes, not before them.
    const h = await startShim({ env: { SHIM_READY_URL: `http://127.0.0.1:${port}/health` }, wrapStore: (s) => overrideStore(s, { ping: async () => (await new Promise((r) => setTimeout(r, 3000)), s.ping()) }) });
    try {
      h.fake.set({ headerDelayMs: 4500 }); // the model list is slow too
      const started = performance.now();
      const res = await fetch(`${h.url}/ready`);
      expect(res.status).toBe(503);
      expect(performance.now() - started).toBeLessThan(5000);
      // Our own deadline ran out: said as such, not as a model server that cannot be reached.
      expect(await res.json()).toEqual({ status: "not_ready", store: "ok", upstream: "model server: timed out" });
      await expect.poll(() => h.logs.some((l) => l.includes("readiness probe: SHIM_READY_URL timed out after 4000 ms"))).toBe(true);
      expect(h.logs.some((l) => l.includes("unreachable"))).toBe(false);
      // Shutting down: said at once, without waiting on the upstream.
      await h.app.shim.inflight.drain(0);
      const draining = await fetch(`${h.url}/ready`, { signal: AbortSignal.timeout(1000) });
      expect(draining.status).toBe(503);
      expect(await draining.json()).toEqual({ status: "not_ready", draining: true });
    } finally {
      h.fake.reset();
      hung.closeAllConnections();
      await new Promise((resolve) => hung.close(resolve));
      await h.close();
    }
  });
});

describe("/ready when the upstream's model list does not answer within 4 s", () => {
  it("says it timed out, not that the upstream is unreachable", async () => {
    const hung = createServer(() => {}); // accepts, never answers
    await new Promise<void>((resolve) => hung.listen(0, "127.0.0.1", resolve));
    const { port } = hung.address() as AddressInfo;
    const h = await startShim({ env: { SHIM_UPSTREAM_URL: `http://127.0.0.1:${port}/v1`, SHIM_UPSTREAM_TIMEOUT_MS: "60000" } });
    try {
      const res = await fetch(`${h.url}/ready`);
      expect({ status: res.status, body: await res.json() }).toEqual({ status: 503, body: { status: "not_ready", store: "ok", upstream: "timed out" } });
      await expect.poll(() => h.logs.some((l) => l.includes("readiness probe: <SHIM_UPSTREAM_URL>/models timed out after 4000 ms"))).toBe(true);
      expect(h.logs.some((l) => l.includes("unreachable"))).toBe(false);
    } finally {
      hung.closeAllConnections();
      await new Promise((resolve) => hung.close(resolve));
      await h.close();
    }
  });
});

// Every line written while serving a request carries its request id (logger.ts); the operator's
// hint /ready logs is one of them.
describe("/ready's hint in the log", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startShim({ env: { SHIM_READY_URL: "http://127.0.0.1:1/health" } });
  });
  afterAll(() => h.close());

  it("names the request it came from", async () => {
    const res = await fetch(`${h.url}/ready`);
    expect(res.status).toBe(503);
    const reqId = res.headers.get("x-request-id");
    await expect.poll(() => h.logs.some((l) => l.includes("SHIM_READY_URL unreachable"))).toBe(true);
    const hint = h.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((e) => String(e.msg).includes("SHIM_READY_URL unreachable"));
    expect(hint).toHaveProperty("reqId", reqId);
  });
});

/**
 * /ready's probe of the upstream's model list once went through the 256-connection pool the
 * inference requests use. With 256 generations in flight (long streams, or non-streamed answers
 * vLLM has not finished) it queued behind them until its 4 s ran out, and /ready answered 503
 * `upstream: "unreachable"` (logging UND_ERR_ABORTED) while the upstream answered /models at once.
 * It has its own few connections now (upstream.ts, CONTROL_CONNECTIONS).
 */
describe("/ready while the upstream pool is busy with long generations", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startShim({ env: { SHIM_UPSTREAM_TIMEOUT_MS: "60000" } });
  });
  afterAll(() => h.close(), 60_000);

  it("stays ready: the upstream itself answers /models at once", async () => {
    const { key } = await h.createKey({ credits: 100000 });
    const release = await fillUpstreamPool(h, key);
    try {
      // The upstream answers its model list directly, at once:
      const direct = await fetch(`${h.fake.url}/models`, { headers: { authorization: "Bearer upstream-secret" } });
      expect(direct.status).toBe(200);
      const res = await fetch(`${h.url}/ready`);
      const body = await res.json();
      expect({ status: res.status, body }).toEqual({ status: 200, body: { status: "ready", store: "ok", upstream: "ok" } });
    } finally {
      await release();
    }
  }, 60_000);
});
