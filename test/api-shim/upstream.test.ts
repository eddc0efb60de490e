import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLOSE_WAIT_MS, createUpstream, isAbort, transportCause, transportFailure, type Upstream } from "../../api-shim/src/upstream/upstream.ts";
import { UpstreamBody } from "../../api-shim/src/upstream/upstream-body.ts";
import { FakeVllm } from "../support/fake-vllm.ts";

/**
 * The upstream seam on its own, against the fake vLLM: what happens to a request that is still
 * waiting for a connection when its client leaves or its time runs out. One connection makes the
 * wait deterministic: a slow first request holds it.
 */
const CHAT = JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 2 });

describe("upstream seam", () => {
  let fake: FakeVllm;
  let upstream: Upstream;
  beforeAll(async () => {
    fake = await new FakeVllm().start();
    upstream = createUpstream({ url: fake.url, apiKey: null, headersTimeoutMs: 5_000, idleTimeoutMs: 5_000, connections: 1 });
  });
  afterAll(async () => {
    await upstream.close();
    await fake.close();
  });

  it("an abort while the request waits for a connection rejects at once, and the request is never sent", async () => {
    fake.set({ headerDelayMs: 600 });
    const received = fake.counters.received;
    const first = upstream.request({ method: "POST", path: "/chat/completions", body: CHAT });
    await fake.until((c) => c.received === received + 1); // the only connection is busy now
    const ac = new AbortController();
    const second = upstream.request({ method: "POST", path: "/chat/completions", body: CHAT, signal: ac.signal });
    setTimeout(() => ac.abort("client"), 50);
    const t0 = performance.now();
    const err = await second.then(() => null, (e: unknown) => e);
    expect(performance.now() - t0).toBeLessThan(400); // not after the first request's 600 ms
    expect(isAbort(err, ac.signal)).toBe(true);
    const res = await first;
    expect(res.status).toBe(200);
    await res.body.text();
    // The connection is free again: the aborted request must not go out on it.
    await new Promise((r) => setTimeout(r, 200));
    expect(fake.counters.received).toBe(received + 1);
    fake.reset();
  });

  it("a control request (the model list, /ready's probe) does not wait behind inference holding every connection", async () => {
    fake.set({ hang: true });
    const received = fake.counters.received;
    const ac = new AbortController();
    const first = upstream.request({ method: "POST", path: "/chat/completions", body: CHAT, signal: ac.signal });
    await fake.until((c) => c.received === received + 1); // the only inference connection is busy now
    try {
      const res = await upstream.request({ method: "GET", path: "/models", control: true, signal: AbortSignal.timeout(2_000) });
      expect(res.status).toBe(200);
      expect(await res.body.text()).toContain("qwen2.5-7b");
    } finally {
      ac.abort("done");
      await first.catch(() => undefined);
      fake.reset();
    }
  });

  it("a request whose signal aborted before it was dispatched (its client left while it was admitted) is rejected at once and never sent", async () => {
    const received = fake.counters.received;
    const ac = new AbortController();
    ac.abort("client");
    const err = await upstream.request({ method: "POST", path: "/chat/completions", body: CHAT, signal: ac.signal }).then(() => null, (e: unknown) => e);
    expect(isAbort(err, ac.signal)).toBe(true);
    await new Promise((r) => setTimeout(r, 200));
    expect(fake.counters.received).toBe(received); // no generation for a client that is gone
  });

  it("close() closes the control connections too", async () => {
    const own = createUpstream({ url: fake.url, apiKey: null, headersTimeoutMs: 5_000, idleTimeoutMs: 5_000 });
    const res = await own.request({ method: "GET", path: "/models", control: true });
    await res.body.text();
    const closed = fake.counters.closedByClient;
    await own.close();
    await fake.until((c) => c.closedByClient > closed, 1_000);
    await expect(own.request({ method: "GET", path: "/models", control: true })).rejects.toThrow();
  });

  it("close() cuts a request the upstream never answers after CLOSE_WAIT_MS, rather than waiting out its timeout", async () => {
    const own = createUpstream({ url: fake.url, apiKey: null, headersTimeoutMs: 60_000, idleTimeoutMs: 60_000 });
    fake.set({ hang: true });
    try {
      const received = fake.counters.received;
      const pending = own.request({ method: "POST", path: "/chat/completions", body: CHAT }).then(() => null, (e: unknown) => e);
      await fake.until((c) => c.received === received + 1);
      const t0 = performance.now();
      await own.close();
      const ms = performance.now() - t0;
      expect(ms).toBeGreaterThanOrEqual(CLOSE_WAIT_MS - 50);
      expect(ms).toBeLessThan(CLOSE_WAIT_MS + 1_000);
      expect(await pending).toBeInstanceOf(Error);
    } finally {
      fake.reset();
    }
  });

  it("an idle connection is closed by the shim before the upstream's 5 s keep-alive runs out", async () => {
    // Were it the other way round, a request sent on a connection the upstream is closing at that
    // moment fails (undici retries no POST): a 502 now and then after a quiet spell.
    const fresh = createUpstream({ url: fake.url, apiKey: null, headersTimeoutMs: 5_000, idleTimeoutMs: 5_000 });
    try {
      const closed = fake.counters.closedByClient;
      const res = await fresh.request({ method: "POST", path: "/chat/completions", body: CHAT });
      await res.body.text();
      const idleFrom = performance.now();
      await fake.until((c) => c.closedByClient > closed, 4_900);
      expect(performance.now() - idleFrom).toBeLessThan(5_000);
    } finally {
      await fresh.close();
    }
  });

  it("the headers timeout ends with the headers: a stream may run on far longer", async () => {
    const tight = createUpstream({ url: fake.url, apiKey: null, headersTimeoutMs: 300, idleTimeoutMs: 5_000 });
    try {
      fake.set({ tokenDelayMs: 100 });
      const res = await tight.request({ method: "POST", path: "/chat/completions", body: JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 8, stream: true }) });
      const text = await res.body.text(); // ~800 ms of tokens
      expect(text).toContain(" t8");
      expect(text.trimEnd().endsWith("data: [DONE]")).toBe(true);
    } finally {
      fake.reset();
      await tight.close();
    }
  });

  it("the headers timeout fires at the configured time, not at undici's next 500 ms tick", async () => {
    const tight = createUpstream({ url: fake.url, apiKey: null, headersTimeoutMs: 1_000, idleTimeoutMs: 5_000, connections: 1 });
    try {
      fake.set({ headerDelayMs: 3_000 });
      for (let i = 0; i < 2; i++) {
        const t0 = performance.now();
        const err = await tight.request({ method: "POST", path: "/chat/completions", body: CHAT }).then(() => null, (e: unknown) => e);
        const ms = performance.now() - t0;
        expect(transportFailure(err)).toBe("upstream_timeout");
        expect(ms).toBeGreaterThanOrEqual(1_000);
        expect(ms).toBeLessThan(1_450); // neither early nor late: undici's own 500 ms-tick timers fire up to ~1 s late (1,500 ms and more); the margin is for a loaded machine
      }
    } finally {
      fake.reset();
      await tight.close();
    }
  });
});

describe("what the seam says of a failure", () => {
  it("an abort error counts as the client's (or the drain's) only when the request's own signal fired: a body cut for another reason is a failure", () => {
    // undici's RequestAbortedError is named AbortError (the api-shim's undici, not the root's: another version).
    const aborted = () => Object.assign(new Error("Request aborted"), { name: "AbortError" });
    const quiet = new AbortController();
    expect(isAbort(aborted(), quiet.signal)).toBe(false);
    expect(isAbort(aborted(), undefined)).toBe(false);
    const fired = new AbortController();
    fired.abort("client");
    expect(isAbort(aborted(), fired.signal)).toBe(true);
    expect(isAbort("client", fired.signal)).toBe(true);
    expect(isAbort(new Error("socket hang up"), fired.signal)).toBe(false);
  });

  it("a body cut by a deadline (destroy with an error) makes its reader's next step throw it, even when every byte had arrived: what was read is not the whole answer", async () => {
    const body = new UpstreamBody();
    body.push(Buffer.from('{"id":"x","choices":['));
    body.end();
    const late = new Error("deadline");
    body.destroy(late);
    await expect(body.text()).rejects.toBe(late);
  });

  it("the cause put on the request's line is a code or an error's name, never its message (which may quote the upstream URL and its credentials)", () => {
    const secret = "http://shim:s3cr3t-upstream-key@litellm:4000/v1";
    expect(transportCause(new Error(`connect to ${secret} failed`))).toBe("Error");
    expect(transportCause(new TypeError(`fetch ${secret}`))).toBe("TypeError");
    expect(transportCause(Object.assign(new Error(`x ${secret}`), { name: `Bad ${secret}` }))).toBe("unknown");
    expect(transportCause(new Error("outer", { cause: Object.assign(new Error(secret), { code: "ECONNREFUSED" }) }))).toBe("ECONNREFUSED");
    expect(transportCause(Object.assign(new Error("x"), { code: secret }))).toBe("Error");
  });
});
