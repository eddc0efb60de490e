import { afterEach, describe, expect, it, vi } from "vitest";
import { callHash, KEEP_MS, KEPT_BYTES, KEPT_ENTRIES, KEY_BYTES, KEY_ENTRIES, LeftGenerations } from "../../api-shim/src/limits/left-generations.ts";

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

  it("an idempotent request's is found by its key's id and Idempotency-Key, never by its bytes; forgotten KEEP_MS after its answer, or past its key's share as any entry", async () => {
    vi.useFakeTimers();
    const m = new LeftGenerations();
    const g = m.remember("k1", callHash("/r", body("x")), "r1", "job:1");
    expect(m.idempotent("k1", "job:1")).toBe(g);
    expect(m.idempotent("k2", "job:1")).toBeUndefined();
    expect(m.idempotent("k1", "job:2")).toBeUndefined();
    // An SDK's retry without the header does not take it: its re-sends with the key would lose it.
    expect(m.find("k1", "/r", body("x"))).toBeUndefined();
    g.answered(answer(10));
    expect(m.keptAnswers).toBe(0); // shim_retry_answers_kept_total counts left generations' alone
    vi.advanceTimersByTime(KEEP_MS - 1);
    expect(m.idempotent("k1", "job:1")).toBe(g);
    vi.advanceTimersByTime(1);
    expect(m.idempotent("k1", "job:1")).toBeUndefined();
    expect(m.bytes).toBe(0);
    // Past the key's share, its oldest goes, found no more by its value.
    const first = m.remember("k1", callHash("/r", body("0")), "r0", "v0");
    for (let i = 1; i < KEY_ENTRIES; i++) m.remember("k1", callHash("/r", body(String(i))), `r${i}`, `v${i}`);
    expect(m.idempotent("k1", "v0")).toBe(first);
    m.remember("k1", callHash("/r", body("last")), "rl", "last");
    expect(m.idempotent("k1", "v0")).toBeUndefined();
    expect(m.idempotent("k1", "last")).toBeDefined();
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

  it("holds at most KEPT_ENTRIES generations and KEPT_BYTES of answers, across keys, the oldest dropped first among equals", () => {
    const m = new LeftGenerations();
    const keys = Array.from({ length: 8 }, (_, i) => `k${i}`);
    const first = m.remember("k0", callHash("/r", body("0")), "r0");
    for (let i = 1; i <= KEPT_ENTRIES; i++) m.remember(keys[i % 8]!, callHash("/r", body(String(i))), `r${i}`);
    expect(m.size).toBe(KEPT_ENTRIES);
    expect(first.ended).toBe(true);
    expect(m.find("k0", "/r", body("0"))).toBeUndefined();
    const n = new LeftGenerations();
    const big = KEY_BYTES / 2;
    const answers = keys.map((k) => n.remember(k, callHash("/r", body("a")), k));
    for (const g of answers) g.answered(answer(big));
    expect(n.bytes).toBe(KEPT_BYTES);
    n.remember("k8", callHash("/r", body("a")), "k8").answered(answer(big));
    expect(n.bytes).toBe(KEPT_BYTES);
    expect(n.find("k0", "/r", body("a"))).toBeUndefined();
    expect(n.find("k1", "/r", body("a"))).toBe(answers[1]);
    expect(n.find("k8", "/r", body("a"))).toBeDefined();
  });

  it("a key over its share (KEY_ENTRIES generations, KEY_BYTES of answers) drops its own oldest, never another key's", async () => {
    const m = new LeftGenerations();
    const other = m.remember("other", callHash("/r", body("o")), "o");
    other.answered(answer(10));
    const first = m.remember("k", callHash("/r", body("0")), "r0");
    for (let i = 1; i <= KEY_ENTRIES; i++) m.remember("k", callHash("/r", body(String(i))), `r${i}`);
    expect(m.size).toBe(KEY_ENTRIES + 1);
    expect(first.ended).toBe(true); // its own oldest, still generating, gave way
    expect(m.evicted.left).toEqual({ expired: 0, over_key_share: 1, over_total: 0 }); // what /metrics says of it
    // Its answer, when it comes, is not kept: not found, and not counted in the bytes /metrics shows.
    first.answered(answer(20));
    expect(m.find("k", "/r", body("0"))).toBeUndefined();
    expect(m.bytes).toBe(10);
    expect(m.keptAnswers).toBe(1);
    expect(m.find("other", "/r", body("o"))).toBe(other);
    const n = new LeftGenerations();
    const kept = n.remember("other", callHash("/r", body("o")), "o");
    kept.answered(answer(10));
    const big = KEY_BYTES / 2;
    const [a, b, c] = ["a", "b", "c"].map((s) => n.remember("k", callHash("/r", body(s)), s));
    a!.answered(answer(big));
    b!.answered(answer(big));
    c!.answered(answer(big));
    expect(n.find("k", "/r", body("a"))).toBeUndefined();
    expect(n.find("k", "/r", body("c"))).toBe(c);
    expect(n.bytes).toBe(KEY_BYTES + 10);
    expect(n.find("other", "/r", body("o"))).toBe(kept);
    // An answer larger than a key's share is not kept: its retry generates its own.
    const huge = n.remember("k", callHash("/r", body("huge")), "h");
    const waiting = huge.outcome(never); // a retry already waiting on it gets it all the same
    huge.answered(answer(KEY_BYTES + 1));
    expect(await waiting).toMatchObject({ status: 200 });
    expect(n.find("k", "/r", body("huge"))).toBeUndefined();
    expect(n.evicted.left).toEqual({ expired: 0, over_key_share: 1, over_total: 0 });
  });

  it("making room, a key's oldest answered entry goes before its older one still running, at its share and at the total", () => {
    const m = new LeftGenerations();
    const running = m.remember("k", callHash("/r", body("long")), "long", "job:long");
    const answered = m.remember("k", callHash("/r", body("0")), "r0", "job:0");
    answered.answered(answer(10));
    for (let i = 1; i < KEY_ENTRIES - 1; i++) m.remember("k", callHash("/r", body(String(i))), `r${i}`, `job:${i}`);
    m.remember("k", callHash("/r", body("last")), "last", "job:last");
    expect(m.idempotent("k", "job:long")).toBe(running);
    expect(m.idempotent("k", "job:0")).toBeUndefined();
    // Only running ones left to give: the oldest of those.
    m.remember("k", callHash("/r", body("next")), "next", "job:next");
    expect(m.idempotent("k", "job:long")).toBeUndefined();
    // At the total: the largest holder's oldest answered entry, not its older running one.
    const n = new LeftGenerations();
    const keys = ["k1", "k2", "k3", "k4"];
    const first = n.remember("k1", callHash("/r", body("first")), "first");
    const done = n.remember("k1", callHash("/r", body("done")), "done");
    done.answered(answer(10));
    for (const k of keys) for (let i = k === "k1" ? 2 : 0; i < KEY_ENTRIES; i++) n.remember(k, callHash("/r", body(String(i))), `${k}${i}`);
    expect(n.size).toBe(KEPT_ENTRIES);
    n.remember("k5", callHash("/r", body("x")), "x");
    expect(n.find("k1", "/r", body("done"))).toBeUndefined();
    expect(n.find("k1", "/r", body("first"))).toBe(first);
    expect(n.evicted.left.over_total).toBe(1);
  });

  it("over the total, the key holding the most gives up its oldest: a key holding less keeps its answer", () => {
    const m = new LeftGenerations();
    const light = m.remember("light", callHash("/r", body("l")), "l");
    light.answered(answer(1));
    // Five keys at their share: past the total; each answer past it pushes out the oldest of the keys holding the most.
    const keys = ["k1", "k2", "k3", "k4", "k5"];
    for (const k of keys) for (const s of ["a", "b"]) m.remember(k, callHash("/r", body(s)), s).answered(answer(KEY_BYTES / 2));
    expect(m.bytes).toBeLessThanOrEqual(KEPT_BYTES);
    expect(m.find("light", "/r", body("l"))).toBe(light);
    expect(m.evicted.left.over_total).toBeGreaterThan(0);
    expect(m.evicted.left.over_key_share).toBe(0);
    // No key gave up its last answer while others held two.
    for (const k of keys) expect(m.find(k, "/r", body("b"))).toBeDefined();
    // The same for entries: keys at their share of generations, and one more key.
    const n = new LeftGenerations();
    const lone = n.remember("lone", callHash("/r", body("x")), "x");
    for (const k of ["k1", "k2", "k3", "k4"]) for (let i = 0; i < KEY_ENTRIES; i++) n.remember(k, callHash("/r", body(String(i))), `${k}${i}`);
    expect(n.size).toBe(KEPT_ENTRIES);
    expect(n.find("k1", "/r", body("0"))).toBeUndefined(); // k4's last pushed out the oldest of the keys holding 250
    n.remember("k5", callHash("/r", body("y")), "y");
    expect(n.size).toBe(KEPT_ENTRIES);
    expect(n.find("k2", "/r", body("0"))).toBeUndefined();
    expect(lone.ended).toBe(false);
    expect(n.find("lone", "/r", body("x"))).toBe(lone);
    expect(n.evicted.left.over_total).toBe(2);
  });

  it("over the total, a key whose new answer makes it the largest holder gives up that answer, not a smaller key's", async () => {
    const m = new LeftGenerations();
    // Four keys at 12.5 MiB (50 MiB); a key leaving 16 MiB answers would hold the most.
    const small = ["v1", "v2", "v3", "v4"].map((k) => {
      const g = m.remember(k, callHash("/r", body(k)), k);
      g.answered(answer((KEY_BYTES * 25) / 32));
      return g;
    });
    const big = m.remember("big", callHash("/r", body("b")), "b");
    // A retry already waiting (joined-retry.ts claims it) gets the answer all the same.
    big.claimed = true;
    const waiting = big.outcome(never);
    big.answered(answer(KEY_BYTES));
    expect(await waiting).toMatchObject({ status: 200 });
    for (const g of small) expect(m.find(g.keyId, "/r", body(g.keyId))).toBe(g);
    expect(m.find("big", "/r", body("b"))).toBeUndefined();
    expect(m.bytes).toBeLessThanOrEqual(KEPT_BYTES);
    expect(m.keptAnswers).toBe(4);
    // Without a retry waiting, the answer given up is counted as dropped over the total.
    m.remember("big", callHash("/r", body("c")), "c").answered(answer(KEY_BYTES));
    expect(m.evicted.left).toEqual({ expired: 0, over_key_share: 0, over_total: 1 });
    expect(m.bytes).toBe(4 * ((KEY_BYTES * 25) / 32));
  });

  it("keeps what the docs promise: an answer for 10 minutes, a key's 250 generations and 16 MiB, 1,000 and 64 MiB in all", () => {
    vi.useFakeTimers();
    const MiB = 1024 * 1024;
    const m = new LeftGenerations();
    const g = m.remember("k", callHash("/r", body("x")), "r1");
    g.answered(answer(16 * MiB)); // a key's whole share: kept
    vi.advanceTimersByTime(10 * 60_000 - 1);
    expect(m.find("k", "/r", body("x"))).toBe(g);
    vi.advanceTimersByTime(1);
    expect(m.find("k", "/r", body("x"))).toBeUndefined();
    m.remember("k", callHash("/r", body("y")), "r2").answered(answer(16 * MiB + 1)); // over 16 MiB: not kept
    expect(m.find("k", "/r", body("y"))).toBeUndefined();
    // 250 generations a key: the 251st pushes out its first.
    const n = new LeftGenerations();
    const keys = ["k1", "k2", "k3", "k4"];
    for (const k of keys) for (let i = 0; i < 250; i++) n.remember(k, callHash("/r", body(String(i))), `${k}-${i}`);
    expect(n.size).toBe(1000);
    expect(n.evicted.left).toEqual({ expired: 0, over_key_share: 0, over_total: 0 });
    n.remember("k1", callHash("/r", body("250")), "k1-250");
    expect(n.find("k1", "/r", body("0"))).toBeUndefined();
    expect(n.evicted.left.over_key_share).toBe(1);
    // 1,000 in all: a fifth key's first pushes out one of the others'.
    n.remember("k5", callHash("/r", body("0")), "k5-0");
    expect(n.size).toBe(1000);
    expect(n.evicted.left.over_total).toBe(1);
    // 64 MiB of answers in all: four keys' 16 MiB fit, a fifth key's answer pushes one out.
    const b = new LeftGenerations();
    for (const k of keys) b.remember(k, callHash("/r", body("a")), k).answered(answer(16 * MiB));
    expect(b.bytes).toBe(64 * MiB);
    expect(b.evicted.left.over_total).toBe(0);
    b.remember("k5", callHash("/r", body("a")), "k5").answered(answer(1));
    expect(b.evicted.left.over_total).toBe(1);
    expect(b.find("k5", "/r", body("a"))).toBeDefined();
  });

  it("counts an idempotent request's entry dropped apart from a left generation's (shim_retry_memory_evictions_total's kind), so the left ones still say what a retry lost", () => {
    vi.useFakeTimers();
    const m = new LeftGenerations();
    // A batch job's answered request (its client received the answer): its 10 minutes end.
    m.remember("k", callHash("/r", body("x")), "r1", "job:1").answered(answer(10));
    vi.advanceTimersByTime(KEEP_MS);
    expect(m.evicted.idempotent).toEqual({ expired: 1, over_key_share: 0, over_total: 0 });
    expect(m.evicted.left).toEqual({ expired: 0, over_key_share: 0, over_total: 0 });
    // Past the key's share: its oldest idempotent entry goes, counted as such.
    for (let i = 0; i <= KEY_ENTRIES; i++) m.remember("k", callHash("/r", body(String(i))), `r${i}`, `job:v${i}`).answered(answer(1));
    expect(m.evicted.idempotent.over_key_share).toBe(1);
    // A left generation of the same key, pushed out by the next: counted as left.
    const left = new LeftGenerations();
    for (let i = 0; i <= KEY_ENTRIES; i++) left.remember("k", callHash("/r", body(String(i))), `r${i}`);
    expect(left.evicted.left.over_key_share).toBe(1);
    expect(left.evicted.idempotent.over_key_share).toBe(0);
  });

  it("counts what /metrics shows: answers kept, and evictions by reason", () => {
    vi.useFakeTimers();
    const m = new LeftGenerations();
    m.remember("k", callHash("/r", body("x")), "r1").answered(answer(10));
    m.remember("k", callHash("/r", body("y")), "r2").end(); // failed: forgotten, not evicted
    expect(m.keptAnswers).toBe(1);
    vi.advanceTimersByTime(KEEP_MS);
    expect(m.evicted.left).toEqual({ expired: 1, over_key_share: 0, over_total: 0 });
    expect(m.size).toBe(0);
  });

  it("a waiter whose client leaves is let go at once, not kept until the generation ends; those still there get the answer", async () => {
    const m = new LeftGenerations();
    const g = m.remember("k", callHash("/r", body("x")), "r1", "job:1");
    const stays = g.outcome(never);
    // A re-send leaving again and again during a long generation: each one's resolver goes with it.
    for (let i = 0; i < 100; i++) {
      const leaving = new AbortController();
      const waiting = g.outcome(leaving.signal);
      leaving.abort();
      expect(await waiting).toBeUndefined();
    }
    expect(g.waiting).toBe(1);
    g.answered(answer(10));
    expect(await stays).toMatchObject({ status: 200 });
    expect(g.waiting).toBe(0);
  });
  it("making room in bytes drops answers only: an older generation still running stays, at its key's share and at the total (its re-send would generate it again)", () => {
    const MiB = 1024 * 1024;
    // At the key's share: the third half-share answer pushes out the key's oldest answer, not the running one before it.
    const m = new LeftGenerations();
    const running = m.remember("k", callHash("/r", body("long")), "long", "job:long");
    for (let i = 0; i < 3; i++) m.remember("k", callHash("/r", body(String(i))), `r${i}`, `job:${i}`).answered(answer(KEY_BYTES / 2));
    expect(m.idempotent("k", "job:long")?.requestId).toBe(running.requestId); // ids compared: a failure prints no 8 MiB buffers
    expect(m.idempotent("k", "job:0")?.requestId).toBeUndefined();
    expect(m.idempotent("k", "job:2")?.requestId).toBe("r2");
    expect(m.bytes).toBe(KEY_BYTES);
    // At the total: the key holding the most loses its oldest answer, not its running one, older still.
    const n = new LeftGenerations();
    const long = n.remember("a", callHash("/r", body("long")), "long", "a:long");
    n.remember("a", callHash("/r", body("a0")), "a0", "a:0").answered(answer(14 * MiB));
    for (const k of ["b", "c", "d", "e"]) n.remember(k, callHash("/r", body(k)), k, `${k}:0`).answered(answer(13 * MiB));
    expect(KEPT_BYTES).toBeLessThan(66 * MiB); // the last answer went past the total
    expect(n.idempotent("a", "a:long")?.requestId).toBe(long.requestId);
    expect(n.idempotent("a", "a:0")?.requestId).toBeUndefined();
    expect(n.idempotent("e", "e:0")?.requestId).toBe("e");
    expect(n.bytes).toBe(52 * MiB);
  });
  it("an entry dropped while it ran (pushed out for room) keeps nothing when its answer comes: no bytes counted, not found again", () => {
    const m = new LeftGenerations();
    const g = m.remember("k", callHash("/r", body("x")), "r1", "job:1");
    m.drop(g, "over_key_share");
    g.answered(answer(10));
    expect(m.bytes).toBe(0);
    expect(m.size).toBe(0);
    expect(m.idempotent("k", "job:1")?.requestId).toBeUndefined();
  });
});
