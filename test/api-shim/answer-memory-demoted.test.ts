import { describe, expect, it } from "vitest";
import { type AnswerLease, AnswerMemory, MAX_WAIT_MS } from "../../api-shim/src/limits/answer-memory.ts";

const MiB = 1024 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The overdraft (one reader past SHIM_ANSWER_MEMORY_BYTES) is taken from a holder that stalled,
 * which keeps its bytes as the "demoted" one; for streams' events only one is, so streams stalling
 * in turn stay within the budget plus two large events. These cases are streams' events
 * (`takeNow(n, false, true)`, as sse.ts takes) unless they say otherwise.
 */
/** A stream's large event of `mib` MiB, taken as sse.ts takes (its first MiB, then the rest). */
function largeEvent(memory: AnswerMemory, mib: number): AnswerLease {
  const lease = memory.lease();
  expect(lease.takeNow(1 * MiB, false, true)).toBe(true);
  expect(lease.takeNow((mib - 1) * MiB, false, true)).toBe(true);
  return lease;
}
/** Long enough for the overdraft's holder, taking nothing, to count as stalled. */
const stall = () => sleep(MAX_WAIT_MS + 100);
/** A stalled and demoted, then B holding the overdraft (stalled too once the caller stalls). */
async function twoStalled(memory: AnswerMemory, mib: number) {
  const a = largeEvent(memory, mib);
  await stall();
  return { a, b: largeEvent(memory, mib) };
}
/** How long `take` took, in ms, and what it answered. */
async function timed(take: () => boolean | Promise<boolean>) {
  const started = performance.now();
  const ok = await take();
  return { ok, waitedLessThan100ms: performance.now() - started < 100 };
}

describe("the stalled (demoted) holder of the answer memory's overdraft", () => {
  it("a demoted holder that gets the overdraft again and stalls again loses it at once to a new large event (no second holder past the budget)", { timeout: 20_000 }, async () => {
    const memory = new AnswerMemory(4 * MiB);
    const { a, b } = await twoStalled(memory, 5);
    b.readDone(); b.sent(); // B's event is read and sent: overdraft free, A still demoted
    expect(a.takeNow(1 * MiB, false, true)).toBe(true); // A resumes: the overdraft is its again
    await stall(); // A stalls again
    const c = memory.lease();
    expect(c.takeNow(1 * MiB, false, true)).toBe(true);
    const result = await timed(() => c.takeNow(4 * MiB, false, true) || c.take(4 * MiB, true));
    a.release(); c.release();
    expect(result).toEqual({ ok: true, waitedLessThan100ms: true });
  });

  it("a demoted holder whose upstream resumes takes the overdraft back from a holder that stalled since", { timeout: 20_000 }, async () => {
    const memory = new AnswerMemory(4 * MiB);
    const { a, b } = await twoStalled(memory, 5);
    await stall(); // B stalls now
    const result = await timed(() => a.takeNow(256 * 1024, false, true) || a.take(256 * 1024, true)); // A's upstream resumes
    a.release(); b.release();
    expect(result).toEqual({ ok: true, waitedLessThan100ms: true });
  });

  it("non-streamed answers are not held to the one-demoted rule: while one stalled holder is demoted and another has stalled, a large answer goes on at once", { timeout: 30_000 }, async () => {
    const memory = new AnswerMemory(4 * MiB);
    const { a, b } = await twoStalled(memory, 6);
    await stall();
    // A non-streamed answer goes past the budget after its wait anyway: a wait would only delay it.
    const answer = memory.lease();
    answer.takeNow(1 * MiB);
    const result = await timed(async () => answer.takeNow(5 * MiB) || (await answer.take(5 * MiB), true));
    for (const l of [a, b, answer]) l.release();
    expect(result.waitedLessThan100ms).toBe(true);
    expect(memory.inUse).toBe(0);
  });

  it("a stream's event waiting while another stalled holder is demoted is not woken every 1 ms", { timeout: 20_000 }, async () => {
    const memory = new AnswerMemory(4 * MiB);
    const { a, b } = await twoStalled(memory, 5);
    await stall();
    const c = memory.lease();
    c.takeNow(1 * MiB, false, true);
    let tries = 0;
    const orig = memory.tryTake.bind(memory);
    memory.tryTake = (...args) => { tries++; return orig(...args); };
    expect(await c.take(4 * MiB, true)).toBe(false);
    for (const l of [a, b, c]) l.release();
    expect(tries).toBeLessThan(10);
  });

  it("a demoted holder that gives back part of what it holds is still the demoted one: a third large event is refused", { timeout: 20_000 }, async () => {
    const memory = new AnswerMemory(4 * MiB);
    const { a, b } = await twoStalled(memory, 6);
    a.drop(1000); // A gives back 1000 bytes (readBody's drop): still holds ~6 MiB
    await stall(); // B stalls
    const c = memory.lease();
    c.takeNow(1 * MiB, false, true);
    const ok = c.takeNow(5 * MiB, false, true); // had A's demotion been cleared, C would take B's place: three large holders
    const held = memory.inUse;
    for (const l of [a, b, c]) l.release();
    expect({ ok, heldWithinBound: held <= 4 * MiB + 2 * 6 * MiB + 1 * MiB }).toEqual({ ok: false, heldWithinBound: true });
  });

  it("non-streamed answers taking the overdraft from stalled streams in turn leave the streams within the budget plus two large events", { timeout: 40_000 }, async () => {
    const memory = new AnswerMemory(4 * MiB);
    const { a, b } = await twoStalled(memory, 6);
    const stalled = [a, b];
    for (let i = 0; i < 3; i++) {
      await stall(); // the stream holding the overdraft stalls
      const n = memory.lease(); // a non-streamed answer: at once, past the budget
      n.takeNow(1 * MiB);
      expect(n.takeNow(5 * MiB)).toBe(true);
      n.readDone(); n.release();
      const s = memory.lease(); // the next stream's large event
      s.takeNow(1 * MiB, false, true);
      if (s.takeNow(5 * MiB, false, true)) stalled.push(s);
      else s.release();
    }
    const held = memory.inUse;
    for (const l of stalled) l.release();
    expect(held).toBeLessThanOrEqual(4 * MiB + 2 * 6 * MiB);
    expect(memory.inUse).toBe(0);
  });
});

// Pinned by a mutation review (each fails under its mutant): who holds the overdraft, and when it is handed on.
describe("the overdraft's holder, at its edges", () => {
  // AM1 (answer-memory.ts:79): the overdraft's holder that keeps taking is not "stalled".
  it("keeps the overdraft with a holder still taking bytes past MAX_WAIT_MS", { timeout: 10_000 }, async () => {
    const memory = new AnswerMemory(4 * MiB);
    const a = memory.lease();
    expect(a.takeNow(1 * MiB, false, true)).toBe(true);
    expect(a.takeNow(4 * MiB, false, true)).toBe(true); // past the budget: the overdraft
    // 2.5 s in all, past MAX_WAIT_MS, each take well within it (a loaded machine's late timer too).
    for (let i = 0; i < 10; i++) {
      await sleep(250);
      expect(a.takeNow(64 * 1024, false, true)).toBe(true); // still reading its event
    }
    const b = memory.lease();
    expect(b.takeNow(1 * MiB, false, true)).toBe(true);
    const took = b.takeNow(1 * MiB, false, true); // A took 250 ms ago: B must wait
    a.release(); b.release();
    expect(took).toBe(false);
  });

  // AM11 (answer-memory.ts:128-130): the overdraft is handed on when its holder's event is read, not when it is sent.
  it("hands the overdraft on once its holder's event is read, though not yet sent", () => {
    const memory = new AnswerMemory(4 * MiB);
    const c = memory.lease();
    expect(c.takeNow(1 * MiB, false, true)).toBe(true);
    const a = memory.lease();
    expect(a.takeNow(1 * MiB, false, true)).toBe(true);
    expect(a.takeNow(3 * MiB, false, true)).toBe(true); // past the budget: A holds the overdraft
    a.readDone(); // read whole, waiting for a slow client (4 MiB unsent: not over the budget)
    const b = memory.lease();
    expect(b.takeNow(1 * MiB, false, true)).toBe(true);
    const took = b.takeNow(1 * MiB, false, true);
    a.release(); b.release(); c.release();
    expect(took).toBe(true);
  });

  // AM13 (answer-memory.ts:144): the demoted holder giving all back wakes a stream's event that waits on it.
  it("wakes a stream's event waiting on a demoted holder when that holder gives its bytes back", { timeout: 15_000 }, async () => {
    const memory = new AnswerMemory(4 * MiB);
    const big = () => { const l = memory.lease(); expect(l.takeNow(1 * MiB, false, true)).toBe(true); expect(l.takeNow(4 * MiB, false, true)).toBe(true); return l; };
    const a = big();
    await sleep(2100); // A stalls
    const b = big(); // B takes the overdraft, A is demoted
    await sleep(2100); // B stalls too
    const c = memory.lease();
    expect(c.takeNow(1 * MiB, false, true)).toBe(true);
    const started = performance.now();
    const taking = c.take(4 * MiB, true); // waits: A is demoted
    await sleep(200);
    a.release(); // A gone: C may now take the overdraft from stalled B
    const ok = await taking;
    const waited = performance.now() - started;
    b.release(); c.release();
    expect(ok).toBe(true);
    expect(waited).toBeLessThan(1000);
  });
});
