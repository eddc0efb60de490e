import { describe, expect, it } from "vitest";
import { AnswerMemory, MAX_WAIT_MS } from "../../api-shim/src/answer-memory.ts";

const MiB = 1024 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The overdraft (one reader past SHIM_ANSWER_MEMORY_BYTES) is taken from a holder that stalled,
 * which keeps its bytes as the "demoted" one; for streams' events only one is, so streams stalling
 * in turn stay within the budget plus two large events. These cases are streams' events
 * (`takeNow(n, false, true)`, as sse.ts takes) unless they say otherwise.
 */
describe("the stalled (demoted) holder of the answer memory's overdraft", () => {
  it("a demoted holder that gets the overdraft again and stalls again loses it at once to a new large event (no second holder past the budget)", { timeout: 20_000 }, async () => {
    const memory = new AnswerMemory(4 * MiB);
    const a = memory.lease();
    expect(a.takeNow(1 * MiB, false, true)).toBe(true);
    expect(a.takeNow(4 * MiB, false, true)).toBe(true); // A: overdraft (5 MiB)
    await sleep(MAX_WAIT_MS + 100); // A stalls
    const b = memory.lease();
    expect(b.takeNow(1 * MiB, false, true)).toBe(true);
    expect(b.takeNow(4 * MiB, false, true)).toBe(true); // B takes the overdraft: A demoted
    b.readDone(); b.sent(); // B's event is read and sent: overdraft free, A still demoted
    expect(a.takeNow(1 * MiB, false, true)).toBe(true); // A resumes: gets the overdraft again (A is overdraft AND demoted)
    await sleep(MAX_WAIT_MS + 100); // A stalls again
    // Only one reader (A) is past the budget; taking the overdraft from A adds no second stalled holder.
    const c = memory.lease();
    expect(c.takeNow(1 * MiB, false, true)).toBe(true);
    const started = performance.now();
    const ok = c.takeNow(4 * MiB, false, true) || (await c.take(4 * MiB, true));
    const waited = performance.now() - started;
    a.release(); c.release();
    expect({ ok, waitedLessThan100ms: waited < 100 }).toEqual({ ok: true, waitedLessThan100ms: true });
  });

  it("a demoted holder whose upstream resumes takes the overdraft back from a holder that stalled since", { timeout: 20_000 }, async () => {
    const memory = new AnswerMemory(4 * MiB);
    const a = memory.lease();
    a.takeNow(1 * MiB, false, true); expect(a.takeNow(4 * MiB, false, true)).toBe(true);
    await sleep(MAX_WAIT_MS + 100);
    const b = memory.lease();
    b.takeNow(1 * MiB, false, true); expect(b.takeNow(4 * MiB, false, true)).toBe(true); // A demoted, B overdraft
    await sleep(MAX_WAIT_MS + 100); // B stalls now
    const started = performance.now();
    const ok = a.takeNow(256 * 1024, false, true) || (await a.take(256 * 1024, true)); // A's upstream resumes
    const waited = performance.now() - started;
    a.release(); b.release();
    expect({ ok, waitedLessThan100ms: waited < 100 }).toEqual({ ok: true, waitedLessThan100ms: true });
  });

  it("non-streamed answers are not held to the one-demoted rule: while one stalled holder is demoted and another has stalled, a large answer takes the overdraft at once", { timeout: 30_000 }, async () => {
    const memory = new AnswerMemory(4 * MiB);
    const a = memory.lease();
    a.takeNow(1 * MiB, false, true); a.takeNow(5 * MiB, false, true);
    await sleep(MAX_WAIT_MS + 100);
    const b = memory.lease();
    b.takeNow(1 * MiB, false, true); b.takeNow(5 * MiB, false, true); // A demoted, B overdraft, both stalled
    await sleep(MAX_WAIT_MS + 100);
    // A non-streamed answer goes past the budget after its wait anyway: a wait would only delay it.
    const answer = memory.lease();
    const started = performance.now();
    answer.takeNow(1 * MiB);
    if (!answer.takeNow(5 * MiB)) await answer.take(5 * MiB);
    const waited = performance.now() - started;
    for (const l of [a, b, answer]) l.release();
    expect(waited).toBeLessThan(100);
    expect(memory.inUse).toBe(0);
  });

  it("a stream's event waiting while another stalled holder is demoted is not woken every 1 ms", { timeout: 20_000 }, async () => {
    const memory = new AnswerMemory(4 * MiB);
    const a = memory.lease();
    a.takeNow(1 * MiB, false, true); a.takeNow(4 * MiB, false, true);
    await sleep(MAX_WAIT_MS + 100);
    const b = memory.lease();
    b.takeNow(1 * MiB, false, true); b.takeNow(4 * MiB, false, true);
    await sleep(MAX_WAIT_MS + 100);
    const c = memory.lease();
    c.takeNow(1 * MiB, false, true);
    let tries = 0;
    const orig = memory.tryTake.bind(memory);
    memory.tryTake = (...args) => { tries++; return orig(...args); };
    await c.take(4 * MiB, true);
    for (const l of [a, b, c]) l.release();
    expect(tries).toBeLessThan(10);
  });

  it("a demoted holder that gives back part of what it holds is still the demoted one: a third large event is refused", { timeout: 20_000 }, async () => {
    const memory = new AnswerMemory(4 * MiB);
    const a = memory.lease();
    a.takeNow(1 * MiB, false, true); a.takeNow(5 * MiB, false, true);
    await sleep(MAX_WAIT_MS + 100);
    const b = memory.lease();
    b.takeNow(1 * MiB, false, true); b.takeNow(5 * MiB, false, true); // A demoted
    a.drop(1000); // A gives back 1000 bytes (readBody's drop): still holds ~6 MiB
    await sleep(MAX_WAIT_MS + 100); // B stalls
    const c = memory.lease();
    c.takeNow(1 * MiB, false, true);
    const ok = c.takeNow(5 * MiB, false, true); // if demoted was cleared, C steals from B: three large holders
    const held = memory.inUse;
    for (const l of [a, b, c]) l.release();
    expect({ ok, heldWithinBound: held <= 4 * MiB + 2 * 6 * MiB + 1 * MiB }).toEqual({ ok: false, heldWithinBound: true });
  });

  it("non-streamed answers taking the overdraft from stalled streams in turn leave the streams within the budget plus two large events", { timeout: 40_000 }, async () => {
    const memory = new AnswerMemory(4 * MiB);
    const stalled = [];
    const a = memory.lease();
    a.takeNow(1 * MiB, false, true); a.takeNow(5 * MiB, false, true); stalled.push(a);
    await sleep(MAX_WAIT_MS + 100);
    let s = memory.lease();
    s.takeNow(1 * MiB, false, true); expect(s.takeNow(5 * MiB, false, true)).toBe(true); stalled.push(s); // A demoted
    for (let i = 0; i < 3; i++) {
      await sleep(MAX_WAIT_MS + 100); // the stream holding the overdraft stalls
      const n = memory.lease(); // a non-streamed answer: at once, past the budget
      n.takeNow(1 * MiB); expect(n.takeNow(5 * MiB)).toBe(true);
      n.readDone(); n.release();
      s = memory.lease(); // the next stream's large event
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
