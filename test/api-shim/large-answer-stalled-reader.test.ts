import { describe, expect, it } from "vitest";
import { startShim } from "../support/shim-harness.ts";
import { stalledEmbeddingsReader } from "../support/stalled-reader.ts";

/**
 * Found by a mutation review of the inference route: a non-streamed answer of 64 KiB
 * or more goes out with backpressure and SHIM_STREAM_IDLE_TIMEOUT_MS (routes/inference.ts,
 * writeWithBackpressure). A client that stops reading it must not keep its answer memory, hold and
 * place until nginx gives up: it is cut after the idle timeout, charged, and logged as 499.
 */
describe("a client that stops reading a large non-streamed answer", () => {
  it("is cut after SHIM_STREAM_IDLE_TIMEOUT_MS: logged as 499, its hold settled", { timeout: 30_000 }, async () => {
    const h = await startShim({ env: { SHIM_STREAM_IDLE_TIMEOUT_MS: "1000" } });
    try {
      const { key, id } = await h.createKey({ credits: 100 });
      const req = await stalledEmbeddingsReader(h, key);
      const line = await h.waitForRequestLog((l) => l.keyId === id, 8_000);
      expect(line.status).toBe(499);
      expect((await h.store.getKey(id))!).toMatchObject({ held: 0 });
      req.destroy();
    } finally {
      await h.close().catch(() => {});
    }
  });
});
