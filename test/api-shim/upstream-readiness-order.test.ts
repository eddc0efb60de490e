import type { Logger } from "pino";
import { afterEach, describe, expect, it, vi } from "vitest";
import { Metrics } from "../../api-shim/src/observability/metrics.ts";
import { errors as undiciErrors } from "undici";
import type { ShimContext } from "../../api-shim/src/context.ts";
import { type Probe, probeUpstream, UpstreamReadiness } from "../../api-shim/src/upstream/readiness.ts";

/**
 * Two probes overlap when one hangs past the 2 s cache (its timeout is 4 s) and /ready or the
 * watch asks again: the older one's result, coming last, must not undo the newer one's in
 * shim_upstream_ready and the log.
 */
describe("the readiness watch with probes that overlap", () => {
  it("keeps the newest probe's answer: a hung probe that times out after a newer one found the upstream ready leaves the gauge at 1, with no 'not ready' line", async () => {
    let now = 0;
    const pending: ((p: Probe) => void)[] = [];
    const lines: string[] = [];
    const logger = { info: (msg: string) => lines.push(msg), warn: (_o: unknown, msg: string) => lines.push(msg) } as unknown as Logger;
    const metrics = new Metrics();
    const readiness = new UpstreamReadiness({
      probe: () => new Promise<Probe>((resolve) => pending.push(resolve)),
      clock: { now: () => now, monotonic: () => now },
      metrics, logger, draining: () => false,
    });
    const gauge = async () => /^shim_upstream_ready (\d+)$/m.exec(await metrics.registry.metrics())?.[1] ?? null;

    const hung = readiness.probe(); // the upstream stalls on this one
    now = 2500; // past the cache, within the hung probe's 4 s
    const fresh = readiness.probe();
    expect(pending).toHaveLength(2);
    pending[1]!({ ok: true, detail: "ok" });
    await fresh;
    expect(await gauge()).toBe("1");
    pending[0]!({ ok: false, detail: "timed out", hint: "readiness probe: <SHIM_UPSTREAM_URL>/models timed out after 4000 ms" });
    await hung;
    await new Promise((resolve) => setImmediate(resolve));
    expect(await gauge()).toBe("1");
    expect(lines.filter((l) => l.includes("not ready"))).toEqual([]);
    // /ready (the caller's own promise) still gets what its probe found.
    expect((await hung).ok).toBe(false);
  });
});

/** A readiness watch over a counted probe that answers at once, with a clock the test moves. */
function counted(draining: () => boolean = () => false) {
  const clock = { at: 0 };
  let probes = 0;
  const logger = { info: () => {}, warn: () => {} } as unknown as Logger;
  const readiness = new UpstreamReadiness({
    probe: async () => (probes++, { ok: true, detail: "ok" }),
    clock: { now: () => clock.at, monotonic: () => clock.at },
    metrics: new Metrics(), logger, draining,
  });
  return { readiness, clock, probes: () => probes };
}

describe("the readiness probe's cache", () => {
  it("reuses one probe of the upstream for 2 s, however often /ready and the watch ask, then probes again", async () => {
    const { readiness, clock, probes } = counted();
    const first = readiness.probe();
    clock.at = 1000;
    expect(readiness.probe()).toBe(first);
    clock.at = 2000;
    expect(readiness.probe()).toBe(first);
    expect(probes()).toBe(1);
    clock.at = 2001;
    expect(readiness.probe()).not.toBe(first);
    expect(probes()).toBe(2);
  });
});

describe("the readiness watch's timer", () => {
  afterEach(() => vi.useRealTimers());

  it("probes no more once the drain has begun, not even the tick already scheduled", async () => {
    vi.useFakeTimers();
    let draining = false;
    const { readiness, clock, probes } = counted(() => draining);
    readiness.start(100);
    await vi.advanceTimersByTimeAsync(100);
    expect(probes()).toBe(1);
    draining = true; // the next tick is already set
    clock.at = 10_000; // past the cache: a tick that went on would probe the upstream
    await vi.advanceTimersByTimeAsync(1000);
    expect(probes()).toBe(1);
    readiness.stop();
  });

  it("with an interval of 0 never probes; stop() ends a running watch", async () => {
    vi.useFakeTimers();
    const { readiness, clock, probes } = counted();
    readiness.start(0);
    clock.at = 10_000;
    await vi.advanceTimersByTimeAsync(1000);
    expect(probes()).toBe(0);
    readiness.start(100);
    await vi.advanceTimersByTimeAsync(100);
    expect(probes()).toBe(1);
    readiness.stop();
    clock.at = 20_000;
    await vi.advanceTimersByTimeAsync(1000);
    expect(probes()).toBe(1);
  });
});

describe("the readiness watch's log", () => {
  it("says a change once: not every failed probe while vLLM loads, not the first probe's ready, once that it is ready again", async () => {
    let now = 0;
    let ok = true;
    const lines: string[] = [];
    const logger = { info: (msg: string) => lines.push(msg), warn: (_o: unknown, msg: string) => lines.push(msg) } as unknown as Logger;
    const readiness = new UpstreamReadiness({
      probe: async () => (ok ? { ok: true, detail: "ok" } : { ok: false, detail: "status 503" }),
      clock: { now: () => now, monotonic: () => now },
      metrics: new Metrics(), logger, draining: () => false,
    });
    const probeAt = async (at: number) => {
      now = at; // each past the cache: a probe of its own
      await readiness.probe();
      await new Promise((resolve) => setImmediate(resolve));
    };
    await probeAt(0);
    expect(lines).toEqual([]);
    ok = false;
    await probeAt(3000);
    await probeAt(6000);
    await probeAt(9000);
    ok = true;
    await probeAt(12_000);
    await probeAt(15_000);
    expect(lines.map((l) => l.split(":")[0])).toEqual(["the upstream is not ready (status 503)", "the upstream is ready"]);
  });
});

/** probeUpstream over an upstream whose model list answers `answer` (a status, or a transport error). */
function probeOf(answer: number | Error): Promise<Probe> {
  const ctx = {
    config: { upstreamTimeoutMs: 60_000, readyUrl: null, models: null },
    upstream: {
      request: async () => {
        if (answer instanceof Error) throw answer;
        return { status: answer, body: (async function* () { yield new TextEncoder().encode("{}"); })() };
      },
    },
  } as unknown as ShimContext;
  return probeUpstream(ctx);
}

describe("probeUpstream's reasons, for /ready and the log", () => {
  it("an upstream that timed out on its own deadline timed out: not 'unreachable', no transport cause sending the operator to the network", async () => {
    const probe = await probeOf(new undiciErrors.HeadersTimeoutError());
    expect(probe).toMatchObject({ ok: false, detail: "timed out" });
    expect(probe.hint).toMatch(/^readiness probe: <SHIM_UPSTREAM_URL>\/models timed out \(/);
    expect(probe.cause).toBeUndefined();
  });

  it("a 403 as a 401: the shim's upstream key is the one to set", async () => {
    for (const status of [401, 403]) {
      expect(await probeOf(status)).toMatchObject({ ok: false, detail: `status ${status}`, hint: expect.stringContaining("set SHIM_UPSTREAM_API_KEY") });
    }
  });
});
