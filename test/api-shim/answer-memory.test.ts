import { createServer, request } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AnswerMemory } from "../../api-shim/src/answer-memory.ts";
import { UsageScanner } from "../../api-shim/src/answer-body.ts";
import { readBody } from "../../api-shim/src/upstream.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";

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

describe("the memory answers hold at once", () => {
  it("readers that together need more than the budget all get their answers whole (none waits on another for ever), holding at most the budget plus one answer", async () => {
    const memory = new AnswerMemory(500);
    const peaks: number[] = [];
    const answers = Array.from({ length: 8 }, (_, i) => Buffer.from(String(i).repeat(300)));
    const leases = answers.map(() => memory.lease());
    // Each reader holds part of the budget when it runs out: without a reader allowed past it,
    // all eight would wait on each other. Each answer is sent (released) as soon as it is read.
    const read = await Promise.all(answers.map(async (a, i) => {
      const answer = await readBody(slowBody(a, 10, memory, peaks), 1000, new UsageScanner(), 1000, leases[i]!);
      leases[i]!.release();
      return answer;
    }));
    expect(read).toEqual(answers);
    expect(memory.waits).toBeGreaterThan(0);
    expect(Math.max(...peaks)).toBeLessThanOrEqual(500 + 300);
    expect(Math.max(...peaks)).toBeGreaterThan(400);
    expect(memory.inUse).toBe(0);
  });

  it("answers read but not yet sent (slow clients) hold their bytes: past one more budget of them, readers wait until they are sent", async () => {
    const memory = new AnswerMemory(100);
    const reader = (fill: number, bytes: number) => {
      const lease = memory.lease();
      const state = { done: false, lease };
      const reading = readBody(slowBody(Buffer.alloc(bytes, fill), 30, memory, []), 1000, new UsageScanner(), 1000, lease).then((b) => {
        state.done = true;
        return b;
      });
      return Object.assign(state, { reading });
    };
    const first = reader(1, 90);
    expect(await first.reading).toHaveLength(90);
    // 90 held by an answer not yet sent: the next reader may still go past the budget, once.
    const second = reader(2, 60);
    expect(await second.reading).toHaveLength(60);
    expect(memory.inUse).toBe(150);
    // Now unsent answers hold more than the budget: the third waits for them to be sent.
    const third = reader(3, 60);
    await new Promise((r) => setTimeout(r, 50));
    expect(third.done).toBe(false);
    expect(memory.inUse).toBeLessThanOrEqual(150);
    first.lease.release();
    expect(await third.reading).toEqual(Buffer.alloc(60, 3));
    second.lease.release();
    third.lease.release();
    expect(memory.inUse).toBe(0);
  });

  it("an answer past the largest relayed gives its bytes back as soon as it is dropped", async () => {
    const memory = new AnswerMemory(10_000);
    const lease = memory.lease();
    expect(await readBody(slowBody(Buffer.alloc(3000, 7), 100, memory, []), 1000, new UsageScanner(), 1000, lease)).toBeNull();
    expect(memory.inUse).toBe(0);
    lease.release();
    expect(memory.inUse).toBe(0);
  });
});

describe("the memory answers hold at once, through the shim", () => {
  const metric = async (h: Harness, name: string) => Number(new RegExp(`^${name} (\\d+)`, "m").exec(await (await fetch(`${h.url}/metrics`)).text())?.[1]);
  /** An upstream that sends the first 600 KB of each answer, and the rest once `expected` requests have arrived. */
  const upstreamHolding = async (expected: number) => {
    const waiting: (() => void)[] = [];
    const server = createServer((req, res) => {
      req.resume();
      req.on("end", () => {
        const answer = Buffer.from(`{"object":"list","model":"bge-m3","data":[{"object":"embedding","index":0,"embedding":[${"0.5,".repeat(300_000)}0.25]}],"usage":{"prompt_tokens":3,"total_tokens":3,"completion_tokens":0}}`);
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
        expect(e.data[0]!.embedding).toHaveLength(300_001);
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

  it("a read waiting for room whose client leaves is cut and settled after the usual 10 s, however long the room takes to come", { timeout: 30_000 }, async () => {
    let first = true;
    const server = createServer((req, res) => {
      req.resume();
      req.on("end", () => {
        res.writeHead(200, { "content-type": "application/json" });
        const answer = Buffer.from(`{"object":"list","data":[{"embedding":[${"0.5,".repeat(first ? 2_000_000 : 500_000)}0.5]}],"usage":{"prompt_tokens":3,"total_tokens":3}}`);
        if (first) res.end(answer);
        else res.write(answer.subarray(0, 1_000_000)); // and the rest never
        first = false;
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const h = await startShim({ env: { SHIM_UPSTREAM_URL: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, SHIM_ANSWER_MEMORY_BYTES: String(1024 * 1024) } });
    try {
      const { key, id } = await h.createKey({ credits: 100 });
      // An 8 MB answer to a client that reads none of it: it stays held, past the budget.
      const slow = request(`${h.url}/v1/embeddings`, { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json" } });
      slow.on("error", () => {});
      await new Promise<void>((resolve) => {
        slow.on("response", (res) => (res.pause(), resolve()));
        slow.end(JSON.stringify({ model: "bge-m3", input: "x" }));
      });
      await expect.poll(() => metric(h, "shim_answer_memory_bytes")).toBeGreaterThan(1024 * 1024);
      const waits = await metric(h, "shim_answer_memory_waits_total");
      const ac = new AbortController();
      const waiting = h.client(key).embeddings.create({ model: "bge-m3", input: "y" }, { signal: ac.signal }).catch((e: unknown) => e);
      await expect.poll(() => metric(h, "shim_answer_memory_waits_total")).toBeGreaterThan(waits);
      ac.abort();
      expect(await waiting).toBeInstanceOf(Error);
      // The read after a client left has 10 s to end (ANSWER_DRAIN_MS); the 8 MB answer still holds the room.
      expect(await h.waitForRequestLog((l) => l.keyId === id && l.status === 499, 15_000)).toMatchObject({ error: "client_closed_request" });
      expect(await metric(h, "shim_answer_memory_bytes")).toBeGreaterThan(1024 * 1024);
      expect((await h.store.getKey(id))!.held).toBe(0);
      slow.destroy();
    } finally {
      await h.close().catch(() => {});
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});
