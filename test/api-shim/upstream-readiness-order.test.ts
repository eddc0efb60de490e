import type { Logger } from "pino";
import { describe, expect, it } from "vitest";
import { Metrics } from "../../api-shim/src/observability/metrics.ts";
import { type Probe, UpstreamReadiness } from "../../api-shim/src/upstream/readiness.ts";

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
