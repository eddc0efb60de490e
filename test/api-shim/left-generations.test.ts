import { afterEach, describe, expect, it, vi } from "vitest";
import { callHash, KEEP_MS, KEPT_BYTES, KEPT_ENTRIES, LeftGenerations } from "../../api-shim/src/limits/left-generations.ts";

/** The memory of generations whose client left (for a retry to join) stays bounded: entries, bytes, time. */
const body = (s: string) => Buffer.from(s);
const answer = (bytes: number) => ({ status: 200, body: Buffer.alloc(bytes), cost: 1, batch: false });
const never = new AbortController().signal;

describe("left generations kept for a retry", () => {
  afterEach(() => vi.useRealTimers());

  it("are found by key, route and body bytes, and only so", () => {
    const m = new LeftGenerations();
    const g = m.remember("k1", callHash("/chat/completions", body('{"a":1}')), "r1");
    expect(m.find("k1", "/chat/completions", body('{"a":1}'))).toBe(g);
    expect(m.find("k1", "/chat/completions", body('{"a": 1}'))).toBeUndefined();
    expect(m.find("k1", "/completions", body('{"a":1}'))).toBeUndefined();
    expect(m.find("k2", "/chat/completions", body('{"a":1}'))).toBeUndefined();
    expect(m.has("k2")).toBe(false);
  });

  it("a finished answer is forgotten KEEP_MS after it was charged", async () => {
    vi.useFakeTimers();
    const m = new LeftGenerations();
    const g = m.remember("k", callHash("/r", body("x")), "r1");
    g.answered(answer(10));
    vi.advanceTimersByTime(KEEP_MS - 1);
    expect(await m.find("k", "/r", body("x"))!.outcome(never)).toMatchObject({ status: 200 });
    vi.advanceTimersByTime(1);
    expect(m.has("k")).toBe(false);
    expect(m.bytes).toBe(0);
  });

  it("a generation that ends without an answer is forgotten, and who waited on it is told", async () => {
    const m = new LeftGenerations();
    const g = m.remember("k", callHash("/r", body("x")), "r1");
    const waiting = g.outcome(never);
    g.end();
    expect(await waiting).toBeUndefined();
    expect(m.size).toBe(0);
  });

  it("holds at most KEPT_ENTRIES generations and KEPT_BYTES of answers, the oldest dropped first", () => {
    const m = new LeftGenerations();
    const first = m.remember("k", callHash("/r", body("0")), "r0");
    for (let i = 1; i <= KEPT_ENTRIES; i++) m.remember("k", callHash("/r", body(String(i))), `r${i}`);
    expect(m.size).toBe(KEPT_ENTRIES);
    expect(first.ended).toBe(true);
    expect(m.find("k", "/r", body("0"))).toBeUndefined();
    const big = KEPT_BYTES / 2;
    const [a, b, c] = ["a", "b", "c"].map((s) => m.remember("k", callHash("/r", body(s)), s));
    a!.answered(answer(big));
    b!.answered(answer(big));
    expect(m.bytes).toBe(KEPT_BYTES);
    c!.answered(answer(big));
    expect(m.bytes).toBe(KEPT_BYTES);
    expect(m.find("k", "/r", body("a"))).toBeUndefined();
    expect(m.find("k", "/r", body("c"))).toBe(c);
    const huge = m.remember("k", callHash("/r", body("huge")), "h");
    huge.answered(answer(KEPT_BYTES + 1)); // not kept at all: its retry generates its own
    expect(m.find("k", "/r", body("huge"))).toBeUndefined();
    expect(m.bytes).toBe(KEPT_BYTES);
  });
});
