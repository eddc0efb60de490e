import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startShim, type Harness } from "../support/shim-harness.ts";

// "SSE passed through as each event arrives (no buffering)": the fake
// stamps each token with process.hrtime at send; the client (same process) reads the stamp on arrival.
// Events are 100 ms apart, so a relay that holds them back for a timer (corking, coalescing writes
// for even 20 ms) shows in the median; a busy machine's odd late event does not.
describe("each streamed event is relayed as it arrives", () => {
  let h: Harness;
  beforeAll(async () => { h = await startShim(); });
  afterAll(() => h.close());

  it("median delay from the upstream's write to the client's read stays under 10 ms", async () => {
    const { key } = await h.createKey({ credits: 1000 });
    h.fake.set({ tokenDelayMs: 100, defaultTokens: 12, stampTokens: true });
    const stream = await h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "x" }], max_tokens: 12, stream: true });
    const delays: number[] = [];
    for await (const c of stream) {
      const m = /@(\d+)/.exec(c.choices[0]?.delta.content ?? "");
      if (m) delays.push(Number(process.hrtime.bigint() - BigInt(m[1]!)) / 1e6);
    }
    h.fake.reset();
    delays.sort((a, b) => a - b);
    expect(delays).toHaveLength(12);
    expect(delays[6]!, JSON.stringify(delays)).toBeLessThan(10);
  });
});
