import type { FastifyRequest } from "fastify";
import { describe, expect, it, vi } from "vitest";
import type { ShimContext } from "../../api-shim/src/context.ts";
import { FINISHING_GRACE_MS, graceEnds, KeyWaiters } from "../../api-shim/src/limits/key-waits.ts";
import { Settlement } from "../../api-shim/src/money/settlement.ts";
import { EventEmitter } from "node:events";
import type { FastifyReply } from "fastify";
import { clientLeftSignal } from "../../api-shim/src/client/client-left.ts";
import { ClientLeftError } from "../../api-shim/src/store/store.ts";

/** A grace starting now, as a request's first wait starts it. */
const grace = () => performance.now() + FINISHING_GRACE_MS;
/** The next macrotask: a waiter woken synchronously has made its next attempt by then (its poll is 100 ms off). */
const nextTurn = () => new Promise<"pending">((r) => setImmediate(() => r("pending")));

describe("KeyWaiters: a refused request waiting for its key's other requests to give something back", () => {
  it("tries again when its key is woken, not before its poll for another key's wake", async () => {
    const w = new KeyWaiters();
    let free = false;
    let tries = 0;
    const got = w.retry("k", 1, new AbortController().signal, grace(), () => (++tries, free || undefined));
    expect(tries).toBe(1); // the first attempt, at once
    w.wake("other", 1);
    await Promise.resolve();
    expect(tries).toBe(1);
    free = true;
    w.wake("k", 1);
    expect(await Promise.race([got, nextTurn()])).toBe(true); // woken, not polled (100 ms): no wall clock, so no load can fail it
    expect(tries).toBe(2);
  });

  it("a wake tries again only the waiters its room can admit, not every waiter of the key at every settlement", async () => {
    const w = new KeyWaiters();
    const tries = { a: 0, b: 0, c: 0 };
    const waits = (["a", "b", "c"] as const).map((n, i) => w.retry("k", [40, 70, 30][i]!, new AbortController().signal, grace(), () => void tries[n]++));
    expect(tries).toEqual({ a: 1, b: 1, c: 1 });
    await Promise.resolve(); // each attempt answered; each now waits
    w.wake("k", 75); // a (40) and c (30) fit together; b (70) does not after a
    await nextTurn(); // before b's poll (100 ms) could try it again
    expect(tries).toEqual({ a: 2, b: 1, c: 2 });
    await Promise.all(waits);
  });

  // Found by mutation review: a wait that ended (its attempt answered, or threw) stayed registered
  // until its poll, so a wake gave its room to it and the key's request still waiting was tried
  // only at its own poll, 100 ms on.
  it("a wait that has ended, answered or failed, takes no room from the key's next wake", async () => {
    const w = new KeyWaiters();
    const ac = new AbortController();
    try {
      expect(await w.retry("k", 1, ac.signal, grace(), () => "place")).toBe("place");
      await expect(w.retry("k", 1, ac.signal, grace(), () => { throw new Error("store down"); })).rejects.toThrow("store down");
      let tries = 0;
      const got = w.retry("k", 1, ac.signal, grace(), () => (++tries > 1 || undefined));
      await nextTurn(); // refused: it waits
      w.wake("k", 1); // room for one: the waiting request's
      expect(await Promise.race([got, nextTurn()])).toBe(true);
      expect(tries).toBe(2);
    } finally {
      ac.abort();
    }
  });

  // Found by mutation review: without the abort's wake, a request whose client left or whose drain
  // began waited on until its poll.
  it("a wait ends when its signal aborts (the client left, a drain began), not at its next poll", async () => {
    const w = new KeyWaiters();
    const ac = new AbortController();
    let tries = 0;
    const got = w.retry("k", 1, ac.signal, performance.now() + 60_000, () => void tries++);
    await nextTurn();
    ac.abort();
    expect(await Promise.race([got, nextTurn()])).toBeUndefined();
    expect(tries).toBe(1);
  });

  // Found by mutation testing: removing settlement.ts's wake left every test passing (the poll admitted the waiter 100 ms later).
  it("a settlement here wakes the key's request waiting for credits: it is admitted on the settlement, not at its poll", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] }); // the poll (100 ms) never fires: only a wake can try again
    const ac = new AbortController();
    try {
      const holdsSettled = new KeyWaiters();
      let available = 39_000_000;
      const ctx = {
        holdsSettled,
        clock: { now: () => 1, monotonic: () => 1 },
        config: { models: null },
        pricer: { price: () => ({ id: "p" }) }, // the price its usage row names
        // The hold of 61 credits given back uncharged (nothing generated): 100 available.
        store: { settle: async () => ((available = 100_000_000), { available, charged: 0 }) },
      } as unknown as ShimContext;
      const request = { id: "q", auth: { key: { id: "k" }, buckets: {} }, shim: { start: performance.now() }, log: { warn: () => {} } } as unknown as FastifyRequest;
      const settlement = new Settlement({ ctx, request, reservationId: "r", hold: 61_000_000, kind: "chat", model: "m", batch: false, stream: true, estimate: 0 });
      let tries = 0;
      const need = 61_000_000;
      const got = holdsSettled.retry("k", need, ac.signal, performance.now() + 60_000, () => (++tries, available >= need || undefined));
      expect(tries).toBe(1);
      await nextTurn(); // refused: it waits
      expect(tries).toBe(1);
      await settlement.settle(499, null);
      expect(await Promise.race([got, nextTurn()])).toBe(true);
      expect(tries).toBe(2);
    } finally {
      ac.abort(); // a waiter never woken does not outlive the test
      vi.useRealTimers();
    }
  });

  it("gives up after the grace, trying again on its poll meanwhile (a hold settled by another replica wakes nobody)", async () => {
    const w = new KeyWaiters();
    let tries = 0;
    const started = performance.now();
    expect(await w.retry("k", 1, new AbortController().signal, grace(), () => void tries++)).toBeUndefined();
    expect(performance.now() - started).toBeGreaterThanOrEqual(FINISHING_GRACE_MS - 20);
    expect(tries).toBeGreaterThanOrEqual(2); // its poll tried again (about 5 times, fewer on a loaded machine)
  });

  it("stops at once when its signal aborts (the client left), and an attempt's failure is thrown", async () => {
    const w = new KeyWaiters();
    const ac = new AbortController();
    const started = performance.now();
    const got = w.retry("k", 1, ac.signal, grace(), () => undefined);
    setTimeout(() => ac.abort(), 20);
    expect(await got).toBeUndefined();
    expect(performance.now() - started).toBeLessThan(FINISHING_GRACE_MS / 2);
    await expect(w.retry("k", 1, new AbortController().signal, grace(), () => Promise.reject(new Error("store down")))).rejects.toThrow("store down");
  });

  it("one grace per request: a second wait gets what the first left, and one past its deadline tries once", async () => {
    const w = new KeyWaiters();
    const state = { graceEnds: null as number | null };
    const first = graceEnds(state);
    expect(await w.retry("k", 1, new AbortController().signal, first, () => undefined)).toBeUndefined();
    expect(graceEnds(state)).toBe(first);
    let tries = 0;
    const started = performance.now();
    expect(await w.retry("k", 1, new AbortController().signal, graceEnds(state), () => void tries++)).toBeUndefined();
    expect(tries).toBe(1);
    expect(performance.now() - started).toBeLessThan(FINISHING_GRACE_MS / 2);
    expect(await w.retry("k", 1, new AbortController().signal, graceEnds(state), () => "admitted")).toBe("admitted");
  });
});

describe("clientLeftSignal: what stops a wait when its client leaves", () => {
  const replyOf = (raw: EventEmitter & { destroyed: boolean; writableFinished: boolean }) => ({ raw }) as unknown as FastifyReply;
  it("is aborted at once for a client already gone, when the connection closes before the answer, and not after a whole answer", () => {
    const gone = clientLeftSignal(replyOf(Object.assign(new EventEmitter(), { destroyed: true, writableFinished: false })));
    expect(gone.aborted).toBe(true);
    expect(gone.reason).toBeInstanceOf(ClientLeftError);
    const leaving = Object.assign(new EventEmitter(), { destroyed: false, writableFinished: false });
    const left = clientLeftSignal(replyOf(leaving));
    expect(left.aborted).toBe(false);
    leaving.emit("close");
    expect(left.aborted).toBe(true);
    const answered = Object.assign(new EventEmitter(), { destroyed: false, writableFinished: true });
    const whole = clientLeftSignal(replyOf(answered));
    answered.emit("close");
    expect(whole.aborted).toBe(false);
  });
});
