import { createServer, type IncomingMessage, request, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from "vitest";
import { AnswerLease, AnswerMemory, FREE_BYTES, MAX_WAIT_MS } from "../../api-shim/src/limits/answer-memory.ts";
import { UsageScanner } from "../../api-shim/src/metering/answer-body.ts";
import { readBody } from "../../api-shim/src/upstream/upstream.ts";
import { EventTooLargeError, sseEvents } from "../../api-shim/src/metering/sse.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";
import { pollUntil } from "../support/tools.ts";

/**
 * SHIM_ANSWER_MEMORY_BYTES: non-streamed answers are read whole, each up to SHIM_MAX_ANSWER_BYTES,
 * so what they hold at once across requests is bounded too, without refusing any of them.
 */

/** A body that yields `answer` in `size`-byte pieces, one per turn of the event loop, noting after each what `memory` holds. */
function slowBody(answer: Buffer, size: number, memory: AnswerMemory, peaks: number[]) {
  let stopped = false;
  return {
    async *[Symbol.asyncIterator]() {
      for (let at = 0; at < answer.length && !stopped; at += size) {
        await new Promise((r) => setImmediate(r));
        yield answer.subarray(at, at + size);
        peaks.push(memory.inUse);
      }
    },
    destroy() {
      stopped = true;
    },
  };
}

const MiB = 1024 * 1024;

/**
 * Turns of the event loop until `check` holds, `turns` at most; whether it holds. A wait for a
 * state, counted in turns, not a time: it works under the fake timers (setImmediate is left real;
 * pollUntil's setTimeout is not), and a loaded machine takes no more turns, only longer ones.
 */
async function until(check: () => boolean, turns = Infinity): Promise<boolean> {
  for (let i = 0; !check() && i < turns; i++) await new Promise((r) => setImmediate(r));
  return check();
}

/** Reads an answer of `bytes` for `lease`, in pieces of `piece`, relaying at most `limit`. */
const readAnswer = (memory: AnswerMemory, lease: AnswerLease, bytes: number, piece = 256 * 1024, limit = 8 * MiB) =>
  readBody(slowBody(Buffer.alloc(bytes, 3), piece, memory, []), limit, new UsageScanner(), lease);

/**
 * Runs `work` against a shim in this process, and says, for each answer lease the shim made
 * meanwhile (its requests'), how long its reads waited for room in all (AnswerLease.take), or
 * null if they never waited. A wait timed by itself, not from before the request: a loaded
 * machine's upstream round trip and reading of megabytes around it are not the wait.
 *
 * `late`: how long after its MAX_WAIT_MS ran out the lease's last wait ended (null if it never
 * waited; 0 or less if it ended sooner). Its MAX_WAIT_MS running out is seen by a timer of the
 * test's, armed when the shim arms its own deadline (a take() finding none set: an answer's first
 * wait, a stream event's first, since sent() clears it for the next event): a stall that holds up the shim's timer at the deadline
 * holds that one up alike, so a wait that ends at its MAX_WAIT_MS is a few ms late however loaded
 * the machine, and one that lasts twice as long is MAX_WAIT_MS late. (Only its total, `waited`,
 * needed seconds of margin for a stall.)
 */
async function leasesDuring<T>(work: () => Promise<T>): Promise<{ result: T; waited: (number | null)[]; late: (number | null)[] }> {
  const made: AnswerLease[] = [];
  const waited = new Map<AnswerLease, number>();
  const ranOut = new Map<AnswerLease, number>();
  const ended = new Map<AnswerLease, number>();
  const timers: NodeJS.Timeout[] = [];
  const lease = AnswerMemory.prototype.lease;
  const take = AnswerLease.prototype.take;
  const leases = vi.spyOn(AnswerMemory.prototype, "lease").mockImplementation(function (this: AnswerMemory) {
    const l = lease.call(this);
    made.push(l);
    return l;
  });
  const deadlines = new Map<AnswerLease, NodeJS.Timeout>();
  const takes = vi.spyOn(AnswerLease.prototype, "take").mockImplementation(async function (this: AnswerLease, n: number, streamed?: boolean) {
    const t = performance.now();
    // The shim's own deadline, a private field read by name: were it renamed, this would always
    // see none and re-arm at every take, so its absence fails here.
    if (!("waitUntil" in this)) throw new Error("AnswerLease has no waitUntil: leasesDuring reads the shim's deadline by that name");
    if ((this as unknown as { waitUntil: number | undefined }).waitUntil === undefined) {
      // The shim's deadline starts now (take() sets it, MAX_WAIT_MS on): so does the test's.
      clearTimeout(deadlines.get(this));
      ranOut.delete(this);
      const timer = setTimeout(() => ranOut.set(this, performance.now()), MAX_WAIT_MS);
      deadlines.set(this, timer);
      timers.push(timer);
    }
    waited.set(this, waited.get(this) ?? 0);
    try {
      return await take.call(this, n, streamed);
    } finally {
      waited.set(this, waited.get(this)! + performance.now() - t);
      ended.set(this, performance.now());
    }
  });
  try {
    const result = await work();
    return {
      result,
      waited: made.map((l) => waited.get(l) ?? null),
      late: made.map((l) => (ended.has(l) ? ended.get(l)! - (ranOut.get(l) ?? Infinity) : null)),
    };
  } finally {
    for (const timer of timers) clearTimeout(timer);
    leases.mockRestore();
    takes.mockRestore();
  }
}

/** A slow client's answer of `bytes`, read and not yet sent (its lease not released). */
async function unsentAnswer(memory: AnswerMemory, bytes: number) {
  const lease = memory.lease();
  expect(await readAnswer(memory, lease, bytes)).toHaveLength(bytes);
  return lease;
}

describe("the memory answers hold at once", () => {
  it("readers that together need more than the budget all get their answers whole (none waits on another for ever), holding at most the budget plus one answer", async () => {
    const memory = new AnswerMemory(4 * MiB);
    const peaks: number[] = [];
    const answers = Array.from({ length: 6 }, (_, i) => Buffer.alloc(1.5 * MiB, i));
    const leases = answers.map(() => memory.lease());
    // Past their free first MiB each reader holds part of the budget when it runs out: without a
    // reader allowed past it, they would wait on each other. Each is sent (released) once read.
    const read = await Promise.all(answers.map(async (a, i) => {
      const answer = await readBody(slowBody(a, 64 * 1024, memory, peaks), 8 * MiB, new UsageScanner(), leases[i]!);
      leases[i]!.release();
      return answer;
    }));
    expect(read.every((b, i) => b!.equals(answers[i]!))).toBe(true);
    expect(memory.waits).toBeGreaterThan(0);
    expect(Math.max(...peaks)).toBeLessThanOrEqual(6 * FREE_BYTES + 1.5 * MiB);
    expect(memory.inUse).toBe(0);
  });

  it("an ordinary answer (its first MiB) never waits, and no read waits more than MAX_WAIT_MS, even while slow clients hold the whole budget", async () => {
    const memory = new AnswerMemory(2 * MiB);
    const stuck = await unsentAnswer(memory, 3 * MiB);
    const small = memory.lease();
    expect(await readAnswer(memory, small, 1000)).toHaveLength(1000);
    expect(memory.waits).toBe(0); // it never waited (not "it took under 200 ms": a loaded machine can take longer)
    // The wait's deadline on a clock the test moves: timed by the wall clock from before the read,
    // a loaded machine's reading of the 2 MiB around the wait took it past MAX_WAIT_MS + 1 s.
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "performance"] });
    onTestFinished(() => void vi.useRealTimers());
    const large = memory.lease();
    let read = false;
    const reading = readAnswer(memory, large, 2 * MiB).finally(() => (read = true));
    await until(() => memory.waits === 1 || read);
    expect(memory.waits).toBe(1); // it is waiting: no room, no overdraft while the slow client's answer is unsent
    await vi.advanceTimersByTimeAsync(MAX_WAIT_MS - 1);
    expect(await until(() => read, 1000)).toBe(false); // still waiting just before MAX_WAIT_MS
    await vi.advanceTimersByTimeAsync(1);
    expect(await until(() => read, 1000)).toBe(true); // and not after: it goes on past the budget (its last pieces: a few turns)
    expect(await reading).toHaveLength(2 * MiB);
    expect(memory.waits).toBe(1); // one read that waited, however often it was woken
    for (const l of [stuck, small, large]) l.release();
    expect(memory.inUse).toBe(0);
  });

  it("a read waiting for room goes on as soon as a slow client's answer is sent", async () => {
    // On a clock the test moves and does not: the wait's MAX_WAIT_MS cannot end it, so a read that
    // goes on was woken by the release (timed by the wall clock, a loaded machine's reading of the
    // rest of its 2 MiB after the release could take it past the bound).
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "performance"] });
    onTestFinished(() => void vi.useRealTimers());
    const memory = new AnswerMemory(2 * MiB);
    const stuck = await unsentAnswer(memory, 3 * MiB);
    const lease = memory.lease();
    const reading = readAnswer(memory, lease, 2 * MiB);
    let read = false;
    void reading.finally(() => (read = true));
    // Unrelated answers come and go meanwhile: the wait is counted once.
    for (let i = 0; i < 5; i++) {
      const other = memory.lease();
      other.takeNow(1000);
      other.release();
    }
    // The slow client's answer is sent once the read is waiting, or has ended without waiting (the
    // failure below says so). Not after a fixed delay, nor a second at most: a loaded machine that
    // ran the test for neither before the read reached the budget sent it too soon (waits 0).
    await until(() => memory.waits === 1 || read);
    expect(memory.waits).toBe(1);
    stuck.release();
    // Woken by the release, not by the end of its MAX_WAIT_MS: no time passes on the clock it waits by.
    expect(await until(() => read, 1000)).toBe(true);
    expect(await reading).toHaveLength(2 * MiB);
    expect(memory.waits).toBe(1);
    lease.release();
    expect(memory.inUse).toBe(0);
  });

  it("an answer past the largest relayed gives its bytes back as soon as it is dropped", async () => {
    const memory = new AnswerMemory(10_000);
    const lease = memory.lease();
    expect(await readBody(slowBody(Buffer.alloc(3000, 7), 100, memory, []), 1000, new UsageScanner(), lease)).toBeNull();
    expect(memory.inUse).toBe(0);
    lease.release();
    expect(memory.inUse).toBe(0);
  });

  it("a read released while it waited (its request was cut) and then dropped past the largest relayed gives nothing back twice", async () => {
    const memory = new AnswerMemory(2 * MiB);
    const stuck = await unsentAnswer(memory, 3 * MiB);
    const cut = memory.lease();
    const reading = readAnswer(memory, cut, 2 * MiB, 512 * 1024, 1.5 * MiB);
    await new Promise((r) => setTimeout(r, 100));
    cut.release();
    expect(await reading).toBeNull();
    stuck.release();
    expect(memory.inUse).toBe(0);
  });
});

// Pinned by a mutation review: each wait has its own deadline, and a request that is cut stops
// waiting at once (a drain is not held up by it).
describe("waits for room in the answer memory", () => {
  /** A non-streamed answer read whole and not yet sent: it holds `n` unsent bytes. */
  function slowClientHolds(m: AnswerMemory, n: number): AnswerLease {
    const x = m.lease();
    expect(x.takeNow(n)).toBe(true);
    x.readDone();
    return x;
  }

  it("each event of a stream has its own MAX_WAIT_MS: a later large event still waits for room, not cut at once", { timeout: 10_000 }, async () => {
    const m = new AnswerMemory(2 * MiB);
    const s = m.lease();
    const x1 = slowClientHolds(m, 3 * MiB);
    setTimeout(() => x1.release(), 100);
    expect(await s.take(2 * MiB, true)).toBe(true);
    s.readDone();
    s.sent();
    await new Promise((r) => setTimeout(r, MAX_WAIT_MS + 200)); // the first event's deadline has passed
    const x2 = slowClientHolds(m, 3 * MiB);
    setTimeout(() => x2.release(), 100);
    expect(await s.take(2 * MiB, true)).toBe(true);
    s.release();
    expect(m.inUse).toBe(0);
  });

  it("a read released while it waits for room (its request cut) ends its wait at once", async () => {
    // On a clock the test moves and does not: the wait's MAX_WAIT_MS cannot end it (timed by the
    // wall clock from before the wait, a loaded machine could take longer than the bound).
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "performance"] });
    onTestFinished(() => void vi.useRealTimers());
    const m = new AnswerMemory(2 * MiB);
    const x = slowClientHolds(m, 3 * MiB);
    const s = m.lease();
    let ended = false;
    const waited = s.take(2 * MiB).finally(() => (ended = true));
    expect(await until(() => ended, 10)).toBe(false); // waiting: no room
    expect(m.waits).toBe(1);
    s.release();
    expect(await until(() => ended, 10)).toBe(true); // ended by the release, no time having passed
    await waited;
    x.release();
    expect(m.inUse).toBe(0);
  });
});

describe("a stream's events and the memory answers hold", () => {
  async function* pieces(...parts: string[]) {
    for (const p of parts) {
      await new Promise((r) => setImmediate(r));
      yield p;
    }
  }

  it("events that end in the chunk they began in (token chunks) take nothing, and never wait even with the budget held", async () => {
    const memory = new AnswerMemory(2 * MiB);
    const stuck = await unsentAnswer(memory, 3 * MiB);
    const lease = memory.lease();
    const events: string[] = [];
    const tokens = Array.from({ length: 200 }, (_, i) => `data: {"t":${i}}\n\n`);
    for await (const e of sseEvents(pieces(...tokens), Infinity, lease)) events.push(e);
    expect(events).toHaveLength(200);
    expect(memory.waits).toBe(0); // none waited (not "all in under 500 ms": a loaded machine can take longer)
    stuck.release();
    expect(memory.inUse).toBe(0);
  });

  it("a large event holds its bytes until the next is asked for, and one that finds no room within MAX_WAIT_MS is cut", async () => {
    const memory = new AnswerMemory(2 * MiB);
    const lease = memory.lease();
    const big = `data: ${"a".repeat(1.5 * MiB)}`;
    const events = sseEvents(pieces(big.slice(0, MiB), big.slice(MiB), "\n\ndata: next\n\n"), Infinity, lease);
    expect((await events.next()).value).toHaveLength(big.length);
    expect(memory.inUse).toBe(big.length); // being sent
    expect((await events.next()).value).toBe("data: next");
    expect(memory.inUse).toBe(0);
    await events.return(undefined);
    // The budget held by a slow client's answer: a second large event waits, then is cut.
    const stuck = await unsentAnswer(memory, 3 * MiB);
    const started = Date.now();
    const cut = (async () => {
      for await (const _ of sseEvents(pieces(big.slice(0, MiB), big.slice(MiB)), Infinity, memory.lease()));
    })();
    await expect(cut).rejects.toThrow(EventTooLargeError);
    expect(Date.now() - started).toBeGreaterThanOrEqual(MAX_WAIT_MS - 50);
    stuck.release();
    expect(memory.inUse).toBe(0);
  });

  /** `text` in pieces of `size`, as an upstream's reads bring it. */
  const split = (text: string, size = 256 * 1024) => Array.from({ length: Math.ceil(text.length / size) }, (_, i) => text.slice(i * size, (i + 1) * size));
  /** A body yielding `parts` one per turn, then stalled (an upstream stalled mid-event) until `end()`. */
  function stalling(...parts: string[]) {
    let end!: () => void;
    const ended = new Promise<void>((r) => (end = r));
    const body = (async function* () {
      yield* pieces(...parts);
      await ended;
    })();
    return { body, end };
  }

  it("a stream stalled mid-event past the budget keeps the overdraft only MAX_WAIT_MS: another stream's large event then goes through, and a large answer does not wait", { timeout: 15_000 }, async () => {
    // MAX_WAIT_MS on a clock the test moves: timed by the wall clock from before the other stream's
    // 3 MiB were read, a loaded machine could take longer than MAX_WAIT_MS + 1 s.
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "performance"] });
    onTestFinished(() => void vi.useRealTimers());
    const memory = new AnswerMemory(4 * MiB);
    // A 5 MiB event (echo and logprobs of a long prompt) whose upstream stalls before its end.
    const stalled = stalling(...split(`data: ${"a".repeat(5 * MiB)}`));
    const first = sseEvents(stalled.body, Infinity, memory.lease()).next();
    await until(() => memory.inUse >= 5 * MiB + 6); // all of it so far: it took its last bytes at this instant
    // Another stream's whole 3 MiB event, nothing else going on: it waits for room until the
    // stalled stream has taken nothing for MAX_WAIT_MS, and not longer.
    const events: string[] = [];
    let read = false;
    const reading = (async () => {
      for await (const e of sseEvents(pieces(...split(`data: ${"b".repeat(3 * MiB)}`), "\n\n"), Infinity, memory.lease())) events.push(e);
    })().finally(() => (read = true));
    await until(() => memory.waits === 1 || read);
    expect(memory.waits).toBe(1);
    await vi.advanceTimersByTimeAsync(MAX_WAIT_MS - 1);
    expect(await until(() => read, 1000)).toBe(false); // the stalled stream still keeps the overdraft
    await vi.advanceTimersByTimeAsync(1);
    expect(await until(() => read, 1000)).toBe(true); // and not after
    await reading;
    expect(events.map((e) => e.length)).toEqual([3 * MiB + 6]);
    // A large non-streamed answer: the stalled stream no longer holds the overdraft, so it does not
    // wait (counted, not timed: under load its read alone once took 1.4 s of the 1 s it was given).
    const waits = memory.waits;
    const lease = memory.lease();
    expect(await readAnswer(memory, lease, 2 * MiB)).toHaveLength(2 * MiB);
    expect(memory.waits).toBe(waits);
    lease.release();
    stalled.end();
    expect((await first).done).toBe(true);
    expect(memory.inUse).toBe(0);
  });

  it("streams stalling mid-event in turn hold at most the budget and two large events: the overdraft is taken from one stalled holder at a time, later large events are cut", { timeout: 30_000 }, async () => {
    const memory = new AnswerMemory(4 * MiB);
    const streams = Array.from({ length: 5 }, () => stalling(...split(`data: ${"a".repeat(6 * MiB)}`)));
    const outcomes: Promise<unknown>[] = [];
    for (const s of streams) {
      outcomes.push(sseEvents(s.body, Infinity, memory.lease()).next().catch((e: unknown) => e));
      await new Promise((r) => setTimeout(r, MAX_WAIT_MS + 100)); // this one stalls; the next one starts
    }
    const held = memory.inUse;
    for (const s of streams) s.end();
    const results = await Promise.all(outcomes);
    // The first two (the overdraft's holder, then the one it was taken for) keep their events.
    expect(held).toBeLessThanOrEqual(4 * MiB + 2 * (6 * MiB + 16) + FREE_BYTES);
    expect(results.filter((r) => r instanceof EventTooLargeError)).toHaveLength(3);
    expect(memory.inUse).toBe(0);
  });

  it("token chunks split across two reads wake none of the readers waiting for room", { timeout: 15_000 }, async () => {
    // The readers' deadlines on a clock the test holds still: they wait for as long as the stream
    // runs. On the wall clock a loaded machine's stream outlasted their MAX_WAIT_MS, they went on
    // past the budget, and a wake by the stream was no longer there to be counted.
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "performance"] });
    onTestFinished(() => void vi.useRealTimers());
    const memory = new AnswerMemory(2 * MiB);
    // A slow client's answer holds the whole budget: no overdraft is given, large reads wait.
    const stuck = await unsentAnswer(memory, 3 * MiB);
    let waits = 0;
    const changed = memory.changed.bind(memory);
    memory.changed = (ms: number) => {
      waits++;
      return changed(ms);
    };
    // Each reads its free first MiB, then waits for room for its next 256 KiB (one wake of them all
    // is as plain with 8 as with more, and 8 read a fifth of what 20 readers of 2 MiB did).
    const READERS = 8;
    let done = 0;
    const readers = Array.from({ length: READERS }, async () => {
      const lease = memory.lease();
      try {
        return await readAnswer(memory, lease, FREE_BYTES + 256 * 1024);
      } finally {
        lease.release();
        done++;
      }
    });
    await until(() => waits === READERS || done > 0);
    expect(waits).toBe(READERS); // all waiting
    // An ordinary stream: 1000 token chunks, each split in two reads (TCP under load).
    const parts = Array.from({ length: 1000 }, (_, i) => `data: {"choices":[{"delta":{"content":"tok${i}"}}]}\n\n`).flatMap((e) => [e.slice(0, 20), e.slice(20)]);
    let n = 0;
    for await (const _ of sseEvents(pieces(...parts), Infinity, memory.lease())) n++;
    expect(n).toBe(1000);
    expect(done).toBe(0); // every reader waited the whole stream through
    // What the stream gave back could never make room for a reader's 256 KiB: none was woken to wait again.
    expect(waits).toBe(READERS);
    stuck.release(); // their room: woken now, each in turn takes the overdraft
    for (const answer of await Promise.all(readers)) expect(answer).toHaveLength(FREE_BYTES + 256 * 1024);
    expect(memory.inUse).toBe(0);
  });
});

describe("the memory answers hold at once, through the shim", () => {
  const metric = async (h: Harness, name: string) => Number(new RegExp(`^${name} (\\d+)`, "m").exec(await (await fetch(`${h.url}/metrics`)).text())?.[1]);
  /** An upstream that sends the first 600 KB of each 3 MB answer, and the rest once `expected` requests have arrived. */
  const upstreamHolding = async (expected: number) => {
    const waiting: (() => void)[] = [];
    const server = createServer((req, res) => {
      req.resume();
      req.on("end", () => {
        const answer = Buffer.from(`{"object":"list","model":"bge-m3","data":[{"object":"embedding","index":0,"embedding":[${"0.5,".repeat(750_000)}0.25]}],"usage":{"prompt_tokens":3,"total_tokens":3,"completion_tokens":0}}`);
        res.writeHead(200, { "content-type": "application/json" });
        res.write(answer.subarray(0, 600_000));
        waiting.push(() => res.end(answer.subarray(600_000)));
        if (waiting.length === expected) for (const send of waiting.splice(0)) send();
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    return server;
  };

  it("parallel large answers that together pass the budget are all delivered whole and charged; the wait is counted and the budget given back", async () => {
    const upstream = await upstreamHolding(6);
    const h = await startShim({ env: { SHIM_UPSTREAM_URL: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1`, SHIM_ANSWER_MEMORY_BYTES: String(2 * 1024 * 1024) } });
    try {
      const { key, id } = await h.createKey({ credits: 100 });
      const answers = await Promise.all(Array.from({ length: 6 }, () => h.client(key).embeddings.create({ model: "bge-m3", input: "x", encoding_format: "float" })));
      for (const e of answers) {
        expect(e.data[0]!.embedding).toHaveLength(750_001);
        expect(e.data[0]!.embedding.at(-1)).toBe(0.25);
        expect((e as unknown as { credits_charged: number }).credits_charged).toBe(1);
      }
      expect((await h.store.getKey(id))!).toMatchObject({ balance: 94_000_000, held: 0 });
      expect(await metric(h, "shim_answer_memory_waits_total")).toBeGreaterThan(0);
      await expect.poll(() => metric(h, "shim_answer_memory_bytes")).toBe(0);
    } finally {
      await h.close();
      upstream.closeAllConnections();
      await new Promise((r) => upstream.close(r));
    }
  });

  it("an answer whose client left while it was read, or that was past the largest relayed, is given back too", async () => {
    const slow = createServer((req, res) => {
      req.resume();
      req.on("end", () => {
        // Part of the answer at once, the rest 400 ms later.
        const answer = Buffer.from(`{"object":"list","data":[{"embedding":[${"0.5,".repeat(200_000)}0.5]}],"usage":{"prompt_tokens":3,"total_tokens":3}}`);
        res.writeHead(200, { "content-type": "application/json" });
        res.write(answer.subarray(0, 600_000));
        setTimeout(() => res.end(answer.subarray(600_000)), 400);
      });
    });
    await new Promise<void>((r) => slow.listen(0, "127.0.0.1", r));
    const env = { SHIM_UPSTREAM_URL: `http://127.0.0.1:${(slow.address() as AddressInfo).port}/v1`, SHIM_ANSWER_MEMORY_BYTES: String(4 * 1024 * 1024) };
    const shims = [await startShim({ env }), await startShim({ env: { ...env, SHIM_MAX_ANSWER_BYTES: "65536" } })];
    try {
      for (const s of shims) {
        const { key, id } = await s.createKey({ credits: 100 });
        const ac = new AbortController();
        setTimeout(() => ac.abort(), 200);
        await expect(s.client(key).embeddings.create({ model: "bge-m3", input: "x" }, { signal: ac.signal, maxRetries: 0 })).rejects.toThrow();
        expect(await s.waitForRequestLog((l) => l.keyId === id)).toMatchObject({ status: 499, tokens: 3 });
        const held = await (await fetch(`${s.url}/metrics`)).text();
        expect(held).toMatch(/^shim_answer_memory_bytes 0$/m);
      }
    } finally {
      for (const s of shims) await s.close();
      slow.closeAllConnections();
      await new Promise((r) => slow.close(r));
    }
});

  it("a client that stops reading its large answer holds nobody up: small answers pass at once, large ones wait at most MAX_WAIT_MS, and it is cut after the idle timeout", { timeout: 30_000 }, async () => {
    let asked = 0;
    const server = createServer((req, res) => {
      req.resume();
      req.on("end", () => {
        const size = [8_000_000, 750_000][asked++] ?? 10; // 32 MB, then 3 MB, then small answers

        res.writeHead(200, { "content-type": "application/json" });
        res.end(`{"object":"list","data":[{"embedding":[${"0.5,".repeat(size)}0.5]}],"usage":{"prompt_tokens":3,"total_tokens":3}}`);
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const h = await startShim({ env: { SHIM_UPSTREAM_URL: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, SHIM_ANSWER_MEMORY_BYTES: String(1024 * 1024), SHIM_STREAM_IDLE_TIMEOUT_MS: "4000" } });
    try {
      const { key, id } = await h.createKey({ credits: 100 });
      // A 32 MB answer to a client that reads none of it: more than the sockets hold, so it holds
      // the whole budget.
      const slow = request(`${h.url}/v1/embeddings`, { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json" } });
      let slowResponse: IncomingMessage | undefined;
      slow.on("error", () => {});
      await new Promise<void>((resolve) => {
        slow.on("response", (res) => {
          res.pause();
          slowResponse = res;
          resolve();
        });
        slow.end(JSON.stringify({ model: "bge-m3", input: "x" }));
      });
      await expect.poll(() => metric(h, "shim_answer_memory_bytes")).toBeGreaterThan(1024 * 1024);
      // The large answer waits (the budget is held), MAX_WAIT_MS at most: its wait timed alone.
      const waitsBefore = await metric(h, "shim_answer_memory_waits_total");
      const large = await leasesDuring(() => h.client(key).embeddings.create({ model: "bge-m3", input: "y", encoding_format: "float" }));
      expect(large.result.data[0]!.embedding).toHaveLength(750_001);
      expect(await metric(h, "shim_answer_memory_waits_total")).toBe(waitsBefore + 1);
      expect(large.waited).toEqual([expect.any(Number)]);
      expect(large.late[0]).toBeLessThan(MAX_WAIT_MS / 2); // ended no later than its MAX_WAIT_MS (leasesDuring)
      // A small one does not wait at all (not "it took under 1 s": a loaded machine can take longer).
      const small = await leasesDuring(() => h.post(key, "/v1/embeddings", { model: "bge-m3", input: "z" }));
      expect(small.result.status).toBe(200);
      expect(small.waited).toEqual([null]);
      expect(await metric(h, "shim_answer_memory_waits_total")).toBe(waitsBefore + 1);
      // The stalled client is cut after SHIM_STREAM_IDLE_TIMEOUT_MS without progress: its memory is given back.
      await expect.poll(() => metric(h, "shim_answer_memory_bytes"), { timeout: 10_000 }).toBe(0);
      // It was cut: reading now, the client gets less than the answer's length.
      const { length, received } = await new Promise<{ length: number; received: number }>((resolve) => {
        let n = 0;
        const done = () => resolve({ length: Number(slowResponse!.headers["content-length"]), received: n });
        slowResponse!.on("data", (c: Buffer) => (n += c.length)).on("end", done).on("error", done).on("close", done);
        slowResponse!.resume();
      });
      expect(received).toBeLessThan(length);
      // Charged (it was read and settled), and logged as a client that left.
      expect(await h.waitForRequestLog((l) => l.keyId === id && l.status === 499)).toMatchObject({ error: "client_closed_request", cost: 1 });
      expect((await h.store.getKey(id))!.held).toBe(0);
      slow.destroy();
    } finally {
      await h.close().catch(() => {});
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});

describe("streamed events count against the same budget", () => {
  const BUDGET = 4 * MiB;
  const metric = async (h: Harness) => Number(/^shim_answer_memory_bytes (\d+)/m.exec(await (await fetch(`${h.url}/metrics`)).text())?.[1]);
  const chunk = (content: string) => `data: {"id":"c","object":"chat.completion.chunk","model":"qwen2.5-7b","choices":[{"index":0,"delta":{"content":"${content}"}}]}\n\n`;
  const stalled: ServerResponse[] = [];
  /**
   * An upstream whose answer is a stream of one event of `big:<bytes>` characters (as vLLM's first
   * chunk with echo and logprobs of a long prompt) that then stalls mid-event (`:stall`) or ends
   * (`:end`); any other prompt gets an ordinary short stream.
   */
  const upstream = createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c));
    req.on("end", async () => {
      const prompt = String((JSON.parse(body) as { messages: { content: string }[] }).messages[0]!.content);
      res.writeHead(200, { "content-type": "text/event-stream" });
      const [, size, how] = /^big:(\d+):(\w+)$/.exec(prompt) ?? [];
      if (size === undefined) {
        res.end(`${chunk("hello")}${chunk(" world")}data: {"id":"c","object":"chat.completion.chunk","model":"qwen2.5-7b","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}\n\ndata: [DONE]\n\n`);
        return;
      }
      const event = chunk("a".repeat(Number(size)));
      const cut = event.length - 2; // all but its blank line
      for (let at = 0; at < cut; at += 256 * 1024) {
        if (!res.write(event.slice(at, Math.min(at + 256 * 1024, cut)))) await new Promise((r) => res.once("drain", r));
      }
      if (how === "stall") return void stalled.push(res);
      res.end(`\n\ndata: {"id":"c","object":"chat.completion.chunk","model":"qwen2.5-7b","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}\n\ndata: [DONE]\n\n`);
    });
  });
  let h: Harness;
  beforeAll(async () => {
    await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
    // The upstream's and the client's idle timeouts far past the wait for room: what ends a stream here is the budget.
    h = await startShim({ env: { SHIM_UPSTREAM_URL: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1`, SHIM_ANSWER_MEMORY_BYTES: String(BUDGET), SHIM_UPSTREAM_TIMEOUT_MS: "30000", SHIM_STREAM_IDLE_TIMEOUT_MS: "30000" } });
  });
  afterAll(async () => {
    for (const r of stalled) r.destroy();
    await h.close();
    upstream.closeAllConnections();
    await new Promise((r) => upstream.close(r));
  });
  const stream = (key: string, prompt: string, signal?: AbortSignal) =>
    fetch(`${h.url}/v1/chat/completions`, { method: "POST", signal, headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body: JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: prompt }], max_tokens: 10, stream: true }) });

  it("one large event alone, even past the budget, goes through whole and is charged", async () => {
    const { key } = await h.createKey({ credits: 100 });
    for (const size of [3 * MiB, 6 * MiB]) {
      const text = await (await stream(key, `big:${size}:end`)).text();
      const first = JSON.parse(text.slice(6, text.indexOf("\n\n"))) as { choices: { delta: { content: string } }[] };
      expect(first.choices[0]!.delta.content).toHaveLength(size);
      expect(text).toMatch(/: credits_charged=\S+ credits_remaining=\S+\n\ndata: \[DONE\]\n\n$/);
    }
    await expect.poll(() => metric(h)).toBe(0);
  });

  it("streams whose large events stall past the budget hold it at most briefly: those that find no room end with an error, the rest of the shim goes on, and everything is given back", { timeout: 30_000 }, async () => {
    const STREAMS = 10;
    const EVENT = 3 * MiB;
    const { key, id } = await h.createKey({ credits: 100 });
    let peak = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        peak = Math.max(peak, await metric(h).catch(() => 0));
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    const ac = new AbortController();
    onTestFinished(() => {
      sampling = false;
      ac.abort();
    });
    let ends: Promise<{ text: string } | null>[] = [];
    // Those that found no room within the wait (2 s) are cut as an event past SHIM_MAX_ANSWER_BYTES is.
    const cut = () => h.logs.filter((l) => l.includes(id) && l.includes('"cause":"EventTooLargeError"')).length;
    const { waited: waits, late } = await leasesDuring(async () => {
      ends = Array.from({ length: STREAMS }, () => stream(key, `big:${EVENT}:stall`, ac.signal).then((r) => r.text()).then((text) => ({ text })).catch(() => null));
      // Not a bound: a loaded machine takes what it takes to send 30 MiB; each wait is timed below.
      await expect.poll(cut, { timeout: 20_000 }).toBeGreaterThanOrEqual(STREAMS - 3);
    });
    // Their waits for room ended at MAX_WAIT_MS, each timed alone, and not later: each ended as
    // its MAX_WAIT_MS ran out, seen by a timer that a stall holds up as it holds up the shim's
    // (`late`; a wait of 1.5 MAX_WAIT_MS or more fails, as one held until the 30 s idle timeouts does).
    const ended = waits.flatMap((w, i) => (w !== null && w >= MAX_WAIT_MS - 50 ? [i] : []));
    expect(ended.length).toBeGreaterThanOrEqual(STREAMS - 3);
    for (const i of ended) expect(late[i]).toBeLessThan(MAX_WAIT_MS / 2);
    // Each holds at most its free first MiB, and past it the budget and one event beyond it.
    expect(peak).toBeGreaterThanOrEqual(EVENT);
    expect(peak).toBeLessThanOrEqual(STREAMS * FREE_BYTES + BUDGET + EVENT);
    // An ordinary stream meanwhile is not held up: it never waits for room (not "it took under
    // 1 s": a loaded machine can take longer; nor the waits count, which streams still reaching
    // their large event's wait could move meanwhile).
    const { result: ordinary, waited } = await leasesDuring(async () => (await stream(key, "hi")).text());
    expect(ordinary).toContain('"content":"hello"');
    expect(ordinary).toMatch(/data: \[DONE\]\n\n$/);
    expect(waited).toEqual([null]);
    ac.abort();
    const answered = (await Promise.all(ends)).filter((e) => e !== null);
    expect(answered.length).toBeGreaterThanOrEqual(STREAMS - 3);
    for (const e of answered) {
      expect(e.text).toMatch(/data: \{"error":\{[^\n]*"code":"upstream_error"/);
      expect(e.text).not.toContain("[DONE]");
    }
    await expect.poll(() => metric(h)).toBe(0);
    sampling = false;
    await sampler;
    expect((await h.store.getKey(id))!.held).toBe(0);
  });

  it("a stream whose client leaves while its event waits for room gives its bytes back at once", { timeout: 30_000 }, async () => {
    // The shim's waits for room on a clock that stands (timers stay real): no wait can end by its
    // MAX_WAIT_MS, so bytes given back came from the client's leaving, however long a loaded
    // machine takes to show them (timed from the abort, a stall of a second failed it). Polled by
    // pollUntil: expect.poll moves fake clocks on.
    vi.useFakeTimers({ toFake: ["performance"] });
    onTestFinished(() => void vi.useRealTimers());
    const standing = performance.now();
    const waits = async () => Number(/^shim_answer_memory_waits_total (\d+)/m.exec(await (await fetch(`${h.url}/metrics`)).text())?.[1]);
    const { key } = await h.createKey({ credits: 100 });
    // A stream stalled mid-event past the budget (it holds the overdraft), then another whose large event must wait.
    const first = new AbortController();
    const second = new AbortController();
    onTestFinished(() => {
      first.abort();
      second.abort();
    });
    void stream(key, `big:${5 * MiB}:stall`, first.signal).then((r) => r.text()).catch(() => {});
    const heldByFirst = chunk("a".repeat(5 * MiB)).length - 2;
    expect(await pollUntil(async () => (await metric(h)) === heldByFirst)).toBe(true);
    const waitsBefore = await waits();
    void stream(key, `big:${3 * MiB}:stall`, second.signal).then((r) => r.text()).catch(() => {});
    expect(await pollUntil(async () => (await waits()) === waitsBefore + 1)).toBe(true); // its event waits for room
    expect(await metric(h)).toBeGreaterThan(heldByFirst + FREE_BYTES / 2);
    second.abort();
    expect(await pollUntil(async () => (await metric(h)) === heldByFirst, 10_000)).toBe(true);
    expect(performance.now()).toBe(standing); // no wait's MAX_WAIT_MS has passed
    first.abort();
    expect(await pollUntil(async () => (await metric(h)) === 0, 10_000)).toBe(true);
  });

  it("a large event a client does not take holds its bytes until it is sent or the client is cut", { timeout: 30_000 }, async () => {
    const slow = await startShim({ env: { SHIM_UPSTREAM_URL: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1`, SHIM_ANSWER_MEMORY_BYTES: String(BUDGET), SHIM_STREAM_IDLE_TIMEOUT_MS: "1500" } });
    try {
      const { key } = await slow.createKey({ credits: 100 });
      const client = request(`${slow.url}/v1/chat/completions`, { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json" } });
      client.on("error", () => {});
      client.on("response", (res) => res.pause());
      client.end(JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: `big:${6 * MiB}:end` }], max_tokens: 10, stream: true }));
      const held = async () => Number(/^shim_answer_memory_bytes (\d+)/m.exec(await (await fetch(`${slow.url}/metrics`)).text())?.[1]);
      await expect.poll(held).toBeGreaterThan(4 * MiB);
      await expect.poll(held, { timeout: 10_000 }).toBe(0);
      client.destroy();
    } finally {
      await slow.close();
    }
  });
});
