import { describe, expect, it } from "vitest";
import { Inflight } from "../../api-shim/src/inflight.ts";

/** From a mutation review of inflight.ts. */
describe("a drain with nothing in flight", () => {
  it("ends at once, not at SHIM_DRAIN_TIMEOUT_MS (an idle shim's `docker stop` took the whole 23 s)", async () => {
    const started = performance.now();
    expect(await new Inflight().drain(10_000)).toEqual({ aborted: 0 });
    expect(performance.now() - started).toBeLessThan(1000);
  });

  it("ends at once when what was in flight finished before it began", async () => {
    const f = new Inflight();
    f.add(() => {})();
    const started = performance.now();
    expect(await f.drain(10_000)).toEqual({ aborted: 0 });
    expect(performance.now() - started).toBeLessThan(1000);
  });
});
