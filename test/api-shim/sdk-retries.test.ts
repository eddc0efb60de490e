import { once } from "node:events";
import { createServer } from "node:http";
import OpenAI from "openai";
import { Agent } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { closeApp } from "../../api-shim/src/app.ts";
import { Inflight } from "../../api-shim/src/inflight.ts";
import { keptConnection } from "../support/kept-connection.ts";
import { type Harness, startShim } from "../support/shim-harness.ts";

/**
 * What OpenAI's SDK (openai-node 7.57, client.js) does with the shim's errors, with its defaults:
 * it obeys `x-should-retry` first, else retries a 408, 409, 429 or 5xx twice, after Retry-After
 * when that is over 0 and at most 60 s, else after ~0.5 s and then ~1 s (retryRequest).
 */
const chat = { model: "qwen2.5-7b", messages: [{ role: "user" as const, content: "hi" }] };
const headersOf = (e: unknown) => (e as InstanceType<typeof OpenAI.APIError>).headers!;

/** The fake answers 503 with `retry-after: <seconds>`, an upstream asking for that wait; returns what undoes it. */
function upstreamBusyFor(fake: Harness["fake"], seconds: string): () => void {
  fake.set({ failStatus: 503 });
  const f = fake as unknown as { handle: (req: import("node:http").IncomingMessage, res: import("node:http").ServerResponse) => Promise<void> };
  const original = f.handle.bind(fake);
  f.handle = async (req, res) => {
    res.setHeader("retry-after", seconds);
    return original(req, res);
  };
  return () => {
    f.handle = original;
    fake.reset();
  };
}

describe("a request sent on nginx's kept-alive connection while the shim drains for a restart (`pulumi up`)", () => {
  it("is answered by the restarted shim: the drain's 503 tells the SDK to wait out the drain and the restart", async () => {
    const h = await startShim();
    const port = Number(new URL(h.url).port);
    // The restarted shim, listening again 2 s after the drain ends (longer than the SDK's own
    // backoff, ~1.5 s in all): it answers what the SDK sends then.
    const restarted = createServer((req, res) => {
      req.resume();
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ id: "chatcmpl-1", object: "chat.completion", created: 1, model: "qwen2.5-7b", choices: [{ index: 0, message: { role: "assistant", content: "served after the restart" }, finish_reason: "stop" }], usage: { prompt_tokens: 1, completion_tokens: 4, total_tokens: 5 } }));
    });
    const agent = new Agent({ connections: 1 }); // one kept-alive connection, as nginx keeps to the shim
    try {
      const { key } = await h.createKey({ credits: 100 });
      const statuses: number[] = [];
      const client = new OpenAI({
        apiKey: key, baseURL: `${h.url}/v1`, fetchOptions: { dispatcher: agent } as never,
        fetch: async (url, init) => {
          const res = await fetch(url, init as RequestInit);
          statuses.push(res.status);
          return res;
        },
      }); // maxRetries: the default, 2
      await client.models.list(); // the connection, open before the drain
      h.fake.set({ tokenDelayMs: 200, defaultTokens: 20 }); // a stream that outlasts the drain's 1 s
      const stream = await h.client(key).chat.completions.create({ ...chat, stream: true });
      const reading = (async () => { for await (const _ of stream); })().catch(() => undefined);
      const drained = closeApp(h.app, 1_000).then(async () => {
        await new Promise((r) => setTimeout(r, 2_000));
        restarted.listen(port, "127.0.0.1");
        await once(restarted, "listening");
      });
      const answer = await client.chat.completions.create(chat);
      await drained;
      await reading;
      expect(answer.choices[0]!.message.content).toBe("served after the restart");
      expect(statuses).toEqual([200, 503, 200]);
    } finally {
      await agent.close();
      restarted.closeAllConnections();
      restarted.close();
      await h.close().catch(() => undefined);
    }
  }, 20_000);

  it("says to wait at most 59 s, the longest every SDK version honours (openai-node 4 and 5: below 60 s), however long the drain may take", async () => {
    const h = await startShim();
    try {
      const { key } = await h.createKey({ credits: 100 });
      const c = await keptConnection(h.url);
      h.fake.set({ tokenDelayMs: 200, defaultTokens: 20 });
      const stream = await h.client(key).chat.completions.create({ ...chat, stream: true });
      const drained = closeApp(h.app, 120_000);
      const body = JSON.stringify(chat);
      c.s.write(`POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${key}\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
      await expect.poll(() => c.got().includes("\r\n\r\n")).toBe(true);
      stream.controller.abort();
      h.app.shim.inflight.abortAll("drain"); // a second SIGTERM ends the drain
      await drained;
      const head = c.got().split("\r\n\r\n")[0]!.toLowerCase();
      expect(c.statuses()).toEqual(["HTTP/1.1 503"]);
      expect(head).toContain("\r\nretry-after: 59\r\n");
      expect(head).not.toContain("x-should-retry"); // a retry after a minute may well be served
    } finally {
      await h.close().catch(() => undefined);
    }
  });
});

describe("a drain's 503 with several replicas (the Postgres store)", () => {
  it("says to come back in a second, when another replica serves it, not after this one's drain and restart", () => {
    const alone = new Inflight(false);
    const replicas = new Inflight(true);
    for (const i of [alone, replicas]) void i.drain(20_000);
    expect(alone.refusal().headers?.["retry-after"]).toBe("25");
    expect(replicas.refusal().headers?.["retry-after"]).toBe("1");
    for (const i of [alone, replicas]) i.abortAll("drain");
  });
});

describe("a non-streamed generation that runs out of time, with the SDK's defaults", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startShim({ env: { SHIM_UPSTREAM_TIMEOUT_MS: "1000" } });
  });
  afterAll(() => h.close());

  /** The error the SDK raises for one call (its defaults), and how many times the upstream was asked. */
  async function sdkCall(key: string) {
    const client = new OpenAI({ apiKey: key, baseURL: `${h.url}/v1`, timeout: 10_000 });
    const before = h.fake.counters.received;
    const err = await client.chat.completions.create(chat).then(() => undefined, (e: unknown) => e);
    return { err, asked: h.fake.counters.received - before };
  }

  it("cut by the shim's SHIM_UPSTREAM_TIMEOUT_MS, is a 504 the SDK does not send twice more (each a new generation on the GPU)", async () => {
    const { key } = await h.createKey({ credits: 100 });
    h.fake.set({ headerDelayMs: 3_000 });
    try {
      const { err, asked } = await sdkCall(key);
      expect(err).toBeInstanceOf(OpenAI.InternalServerError);
      expect({ status: (err as InstanceType<typeof OpenAI.APIError>).status, retry: headersOf(err).get("x-should-retry"), asked }).toEqual({ status: 504, retry: "false", asked: 1 });
    } finally {
      h.fake.reset();
    }
  }, 20_000);

  it("cut by LiteLLM's request_timeout (its 408, the deployed stack's first timeout), is the same final 504", async () => {
    const { key } = await h.createKey({ credits: 100 });
    // LiteLLM answers its 408 once the generation has run its request_timeout: here, past half the shim's.
    h.fake.set({ failStatus: 408, headerDelayMs: 700 });
    try {
      const { err, asked } = await sdkCall(key);
      expect({ status: (err as InstanceType<typeof OpenAI.APIError>).status, retry: headersOf(err).get("x-should-retry"), asked }).toEqual({ status: 504, retry: "false", asked: 1 });
    } finally {
      h.fake.reset();
    }
  });

  it("keeps the SDK's retries for a 504 or 408 answered at once (a provider's or a gateway's: no generation ran out of time)", async () => {
    const { key } = await h.createKey({ credits: 100 });
    for (const failStatus of [504, 408]) {
      h.fake.set({ failStatus });
      try {
        const { err, asked } = await sdkCall(key);
        expect({ status: (err as InstanceType<typeof OpenAI.APIError>).status, retry: headersOf(err).get("x-should-retry"), asked }).toEqual({ status: 504, retry: null, asked: 3 });
      } finally {
        h.fake.reset();
      }
    }
  }, 20_000);

  it("keeps the SDK's retries for a stream that did not start in time (nothing was generated for it)", async () => {
    const { key } = await h.createKey({ credits: 100 });
    h.fake.set({ headerDelayMs: 3_000 });
    try {
      const res = await h.post(key, "/v1/chat/completions", { ...chat, stream: true });
      expect([res.status, res.headers.get("x-should-retry")]).toEqual([504, null]);
      await res.body?.cancel();
    } finally {
      h.fake.reset();
    }
  }, 20_000);
});

describe("a refusal whose Retry-After is longer than the 60 s the SDK waits", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startShim({ file: { models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }], tiers: { small: { rpm: 1000, tpm: 1000 } } } });
  });
  afterAll(() => h.close());

  it("a key's tokens/min debt: one 429 the SDK raises at once with its Retry-After, not three refusals in 1.5 s", async () => {
    const { id, key } = await h.createKey({ credits: 100, tier: "small" });
    // An answer whose prompt really took 5,000 tokens: five minutes of the key's 1,000 a minute.
    h.fake.set({ templateTokens: 5_000 });
    try {
      const client = new OpenAI({ apiKey: key, baseURL: `${h.url}/v1` });
      await client.chat.completions.create({ ...chat, max_tokens: 10 });
      const linesBefore = h.logs.length;
      const err = await client.chat.completions.create({ ...chat, max_tokens: 10 }).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(OpenAI.RateLimitError);
      expect(Number(headersOf(err).get("retry-after"))).toBeGreaterThan(60);
      expect(headersOf(err).get("x-should-retry")).toBe("false");
      const refusals = h.logs.slice(linesBefore).map((l) => JSON.parse(l) as { msg: string; keyId?: string; status: number }).filter((l) => l.msg === "request" && l.keyId === id);
      expect(refusals.map((l) => l.status)).toEqual([429]);
    } finally {
      h.fake.reset();
    }
  });

  it("an upstream's 503 asking for two minutes (relayed): raised at once, the upstream asked once", async () => {
    const { key } = await h.createKey({ credits: 100 });
    const undo = upstreamBusyFor(h.fake, "120");
    try {
      const before = h.fake.counters.received;
      const err = await new OpenAI({ apiKey: key, baseURL: `${h.url}/v1` }).chat.completions.create(chat).then(() => undefined, (e: unknown) => e);
      expect({ status: (err as InstanceType<typeof OpenAI.APIError>).status, wait: headersOf(err).get("retry-after"), retry: headersOf(err).get("x-should-retry"), asked: h.fake.counters.received - before })
        .toEqual({ status: 503, wait: "120", retry: "false", asked: 1 });
    } finally {
      undo();
    }
  });

  it("a relayed wait of exactly 60 s is told final too: openai-node 4 and 5 honour only waits below 60 s and would retry at once, twice", async () => {
    const { key } = await h.createKey({ credits: 100 });
    const undo = upstreamBusyFor(h.fake, "60");
    try {
      const res = await h.post(key, "/v1/chat/completions", chat);
      await res.text();
      expect([res.status, res.headers.get("retry-after"), res.headers.get("x-should-retry")]).toEqual([503, "60", "false"]);
    } finally {
      undo();
    }
  });

  it("a wait below a minute keeps the SDK's retry after it", async () => {
    const { key } = await h.createKey({ credits: 100 });
    h.fake.set({ failStatus: 503 });
    try {
      const res = await h.post(key, "/v1/chat/completions", chat);
      expect([res.status, res.headers.get("retry-after"), res.headers.get("x-should-retry")]).toEqual([503, "1", null]);
      await res.body?.cancel();
    } finally {
      h.fake.reset();
    }
  });
});

describe("a burst of a key's requests refused together by its requests/min", () => {
  let h: Harness;
  beforeAll(async () => {
    // 300 requests a minute: the bucket gives one back every 200 ms.
    h = await startShim({ file: { models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }], tiers: { brisk: { rpm: 300, tpm: 10_000_000 } } } });
  });
  afterAll(() => h.close());

  it("is served whole by the SDK's first retry: Retry-After in whole seconds, and no retry-after-ms, which the SDK would read first and send them all back together into one request's room", async () => {
    const { key } = await h.createKey({ credits: 1_000, tier: "brisk" });
    let refused: Response | undefined;
    for (let i = 0; i < 1_000 && refused === undefined; i++) {
      const res = await h.post(key, "/v1/chat/completions", { ...chat, max_tokens: 1 });
      await res.text();
      if (res.status === 429) refused = res;
    }
    expect(refused?.status).toBe(429);
    expect([refused!.headers.get("retry-after"), refused!.headers.get("retry-after-ms")]).toEqual(["1", null]);
    // Four callers at once on the empty bucket: each refused, each retried by the SDK after 1 s,
    // when five requests' room has come back. Told the ~200 ms to the next one, they would retry
    // together, one served each time, and two would spend both retries and fail.
    const client = new OpenAI({ apiKey: key, baseURL: `${h.url}/v1` });
    const results = await Promise.allSettled(Array.from({ length: 4 }, () => client.chat.completions.create({ ...chat, max_tokens: 1 })));
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "fulfilled", "fulfilled", "fulfilled"]);
  });
});

describe("more parallel callers than a second's refill, refused together by a key's requests/min (a batch job's workers)", () => {
  let h: Harness;
  beforeAll(async () => {
    // 120 requests a minute: the bucket gives one back every 500 ms.
    h = await startShim({ file: { models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }], tiers: { steady: { rpm: 120, tpm: 10_000_000 } } } });
  });
  afterAll(() => h.close());

  it("are told to come back in turn, so the SDK's two retries serve them all; told the same second, most were refused again and failed", async () => {
    const { key } = await h.createKey({ credits: 1_000, tier: "steady" });
    const empty = async () => {
      for (let i = 0; i < 1_000; i++) {
        const res = await h.post(key, "/v1/chat/completions", { ...chat, max_tokens: 1 });
        await res.text();
        if (res.status === 429) return;
      }
    };
    await empty();
    // Raw refusals show the turns: each caller refused after another is told a later second.
    const told = await Promise.all(Array.from({ length: 6 }, async () => {
      const res = await h.post(key, "/v1/chat/completions", { ...chat, max_tokens: 1 });
      await res.text();
      return Number(res.headers.get("retry-after"));
    }));
    expect(Math.max(...told)).toBeGreaterThanOrEqual(3);
    await new Promise((r) => setTimeout(r, Math.max(...told) * 1000)); // their turns pass unused
    await empty();
    // Twelve SDK callers at once on the empty bucket (2 a second come back): all served.
    const client = new OpenAI({ apiKey: key, baseURL: `${h.url}/v1` });
    const results = await Promise.allSettled(Array.from({ length: 12 }, () => client.chat.completions.create({ ...chat, max_tokens: 1 })));
    expect(results.filter((r) => r.status === "rejected").map((r) => (r as PromiseRejectedResult).reason.message)).toEqual([]);
  }, 60_000);
});

describe("a drain's 503 once the drain has cut what was in flight", () => {
  it("a second SIGTERM's cut: come back after the restart (5 s), not after the drain's whole timeout", () => {
    const i = new Inflight(false);
    void i.drain(120_000);
    i.abortAll("drain");
    expect(i.refusal().headers?.["retry-after"]).toBe("5");
  });
});

describe("x-should-retry on errors that are not a long generation's timeout", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startShim({ env: { SHIM_UPSTREAM_TIMEOUT_MS: "1000" } });
  });
  afterAll(() => h.close());

  async function post(set: Parameters<Harness["fake"]["set"]>[0]) {
    const { key } = await h.createKey({ credits: 100 });
    h.fake.set(set);
    try {
      const res = await h.post(key, "/v1/chat/completions", chat);
      await res.text();
      return [res.status, res.headers.get("retry-after"), res.headers.get("x-should-retry")];
    } finally {
      h.fake.reset();
    }
  }

  it("a 502 that comes late (past half the timeout) keeps the SDK's retries: only a timeout is made final", async () => {
    const [status, , retry] = await post({ failStatus: 500, headerDelayMs: 700 });
    expect([status, retry]).toEqual([502, null]);
  });

  it("a 408 before half the timeout keeps the SDK's retries (a generation cut that early is not the long one)", async () => {
    const [status, , retry] = await post({ failStatus: 408, headerDelayMs: 300 });
    expect([status, retry]).toEqual([504, null]);
  });
});

