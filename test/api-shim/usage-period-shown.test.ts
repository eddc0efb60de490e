import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { manualClock } from "../support/clocks.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";

// A usage report's shown `period` is the period it counted. A `from` with milliseconds (any JS
// client's `new Date().toISOString()`) was shown floored to its second (found by a review against
// the seeds), so the report named a start before its own: asking again for the period it showed
// counted requests it had left out.
describe("a usage period with milliseconds is shown as counted", () => {
  let h: Harness;
  const clock = manualClock(Date.UTC(2026, 0, 15, 12, 0, 0, 200)); // the request at 12:00:00.200
  beforeAll(async () => {
    h = await startShim({ clock });
  });
  afterAll(() => h.close());

  it("shows a start no earlier than `from`, so the shown period given back reports the same usage", async () => {
    const { key } = await h.createKey({ credits: 100 });
    await h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 2 });
    clock.advance(60_000);
    const usage = async (q: string) => (await (await fetch(`${h.url}/v1/usage?${q}`, { headers: { authorization: `Bearer ${key}` } })).json()) as { period: { start: string; end: string }; usage: { total_requests: number } };

    const asked = await usage("from=2026-01-15T12:00:00.500Z&to=2026-01-15T13:00:00Z");
    expect(asked.usage.total_requests).toBe(0); // the request (12:00:00.200) is before `from`
    // Before: "2026-01-15T12:00:00Z", a start 500 ms before the period's, which holds the request.
    expect(asked.period).toEqual({ start: "2026-01-15T12:00:00.500Z", end: "2026-01-15T12:59:59.999Z" });
    const again = await usage(`from=${asked.period.start}&to=2026-01-15T13:00:00Z`);
    expect(again.usage.total_requests).toBe(asked.usage.total_requests);
  });

  it("a sub-second `to` is shown to its last millisecond, and the end given back plus 1 ms reports the same usage", async () => {
    const { key } = await h.createKey({ credits: 100 });
    const usage = async (q: string) => (await (await fetch(`${h.url}/v1/usage?${q}`, { headers: { authorization: `Bearer ${key}` } })).json()) as { period: { start: string; end: string }; usage: { total_requests: number } };
    const at = clock.now();
    await h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 2 });
    const to = new Date(at + 1).toISOString(); // a millisecond after the request
    const asked = await usage(`from=2026-01-15T12:00:00Z&to=${to}`);
    expect(asked.usage.total_requests).toBe(1);
    expect(asked.period).toEqual({ start: "2026-01-15T12:00:00.000Z", end: new Date(at).toISOString() });
    const again = await usage(`from=${asked.period.start}&to=${new Date(Date.parse(asked.period.end) + 1).toISOString()}`);
    expect(again.usage.total_requests).toBe(1);
  });

  it("whole-second bounds keep seed 004's form: the end is the last second inside", async () => {
    const { key } = await h.createKey({ credits: 100 });
    const r = (await (await fetch(`${h.url}/v1/usage?from=2026-01-01&to=2026-01-31`, { headers: { authorization: `Bearer ${key}` } })).json()) as { period: unknown };
    expect(r.period).toEqual({ start: "2026-01-01T00:00:00Z", end: "2026-01-31T23:59:59Z" });
  });
});
