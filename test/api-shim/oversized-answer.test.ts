import { createServer, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AnswerUsage, UsageScanner, usageOfBody } from "../../api-shim/src/metering/answer-body.ts";
import { StoreUnavailableError } from "../../api-shim/src/store/store.ts";
import { readBody } from "../../api-shim/src/upstream/upstream.ts";
import { AnswerMemory } from "../../api-shim/src/limits/answer-memory.ts";
import { overrideStore, startShim, type Harness } from "../support/shim-harness.ts";

/**
 * A non-streamed answer past SHIM_MAX_ANSWER_BYTES: the upstream did the work, so it is charged
 * from the usage in the answer, wherever in the answer it is and however the answer ends.
 */
const LIMIT = 65_536;
const USAGE = '"usage":{"prompt_tokens":5,"total_tokens":50005,"completion_tokens":50000}';
const answerOf = (contentBytes: number, after = "") =>
  Buffer.from(`{"id":"x","object":"chat.completion","model":"qwen2.5-7b","choices":[{"index":0,"message":{"role":"assistant","content":"${"a".repeat(contentBytes)}"}}],${USAGE}${after}}`);
/** vLLM's field order: prompt_logprobs (megabytes with many prompt tokens) after usage. */
const PROMPT_LOGPROBS = `,"prompt_logprobs":[null,${Array.from({ length: 30_000 }, (_, i) => `{"${i}":{"logprob":-1.5,"rank":1,"decoded_token":"tok"}}`).join(",")}],"kv_transfer_params":null`;

/** A body as UpstreamBody is: a second for-await goes on where the first stopped. */
function bodyOf(chunks: Buffer[]) {
  let i = 0;
  return { async *[Symbol.asyncIterator]() { while (i < chunks.length) yield chunks[i++]!; }, destroy() { i = chunks.length; } };
}
const pieces = (b: Buffer, size: number) => Array.from({ length: Math.ceil(b.length / size) }, (_, i) => b.subarray(i * size, (i + 1) * size));

/**
 * A non-streamed chat whose client hangs up 200 ms after sending it or, given `answerComing`, 100 ms
 * after the upstream wrote the start of its answer: on a loaded machine 200 ms could pass before the
 * answer started, and the test then saw a client that left before it (charged the estimate).
 */
async function leaveAfter200ms(h: Harness, key: string, answerComing?: Promise<void>): Promise<void> {
  const ac = new AbortController();
  if (answerComing) void answerComing.then(() => setTimeout(() => ac.abort(), 100));
  else setTimeout(() => ac.abort(), 200);
  await expect(fetch(`${h.url}/v1/chat/completions`, {
    method: "POST", signal: ac.signal, headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "go" }], max_tokens: 60_000 }),
  })).rejects.toThrow();
}

describe("the usage of an answer too large to keep", () => {
  it.each([
    ["split at every offset around the member", answerOf(LIMIT), [1, 3, 7, 8, 9, 60, 4093]],
    ["after megabytes of prompt_logprobs", answerOf(70_000, PROMPT_LOGPROBS), [65_536, 16_384]],
  ])("is found %s", async (_, answer, sizes) => {
    for (const size of sizes) {
      const scanner = new UsageScanner();
      expect(await readBody(bodyOf(pieces(answer, size)), LIMIT, scanner, new AnswerMemory(Infinity).lease()), `pieces of ${size}`).toBeNull();
      expect(scanner.usage(), `pieces of ${size}`).toEqual({ promptTokens: 5, completionTokens: 50_000 });
    }
  });
  it("is found when the answer ends a few bytes past the limit, the member split across the piece that crosses it", async () => {
    const answer = answerOf(LIMIT - 159);
    for (let cut = answer.length - 80; cut < answer.length; cut += 7) {
      const scanner = new UsageScanner();
      expect(await readBody(bodyOf([answer.subarray(0, cut), answer.subarray(cut)]), LIMIT, scanner, new AnswerMemory(Infinity).lease())).toBeNull();
      expect(scanner.usage(), `cut at ${cut}`).toEqual({ promptTokens: 5, completionTokens: 50_000 });
    }
  });
  it.each([["null", "null"], ["a string", '"n/a"'], ["an object that is not usage", '{"kind":"remote"}']])(
    "is the answer's own when a later nested `usage` key holds %s", async (_, nested) => {
      const answer = answerOf(LIMIT, `,"prompt_logprobs":null,"kv_transfer_params":{"usage":${nested}}`);
      for (const size of [65_536, 1000, 13]) {
        const scanner = new UsageScanner();
        expect(await readBody(bodyOf(pieces(answer, size)), LIMIT, scanner, new AnswerMemory(Infinity).lease())).toBeNull();
        expect(scanner.usage(), `pieces of ${size}`).toEqual({ promptTokens: 5, completionTokens: 50_000 });
      }
    });
  it("is the answer's own, not a nested object that reads as usage, before or after it (a client's JSON echoed back: a tool's schema, kv_transfer_params)", async () => {
    const forged = '{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}';
    const after = answerOf(LIMIT, `,"input_messages":[{"content":[{"tools":[{"parameters":{"type":"object","usage":${forged}}}]}]}]`);
    const before = Buffer.from(`{"tools":[{"parameters":{"usage":${forged},"note":"a \\\"quoted\\\" }] brace"}}],${answerOf(LIMIT).subarray(1).toString()}`);
    for (const [name, answer] of [["after", after], ["before", before]] as const) {
      for (const size of [65_536, 1000, 13]) {
        const scanner = new UsageScanner();
        expect(await readBody(bodyOf(pieces(answer, size)), LIMIT, scanner, new AnswerMemory(Infinity).lease())).toBeNull();
        expect(scanner.usage(), `${name}, pieces of ${size}`).toEqual({ promptTokens: 5, completionTokens: 50_000 });
      }
    }
  });
  it("reads the answer's own usage, as JSON.parse does, from random answers cut at random places (strings with quotes and backslashes, nested objects that read as usage)", () => {
    let seed = 42;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const pick = <T>(xs: T[]): T => xs[Math.floor(random() * xs.length)]!;
    const usageOf = (p: number) => ({ prompt_tokens: p, completion_tokens: p + 1, total_tokens: 2 * p + 1 });
    const text = () => Array.from({ length: Math.floor(random() * 12) }, () => pick(["a", '"', "\\", "\\\\", "{", "}", "[", "]", "usage", ":", " ", "é"])).join("");
    const value = (depth: number): unknown => {
      const r = random();
      if (depth > 3 || r < 0.3) return pick([text(), 1.5, null, true, text()]);
      if (r < 0.5) return Array.from({ length: Math.floor(random() * 4) }, () => value(depth + 1));
      if (r < 0.7) return { usage: usageOf(900 + depth), [text()]: value(depth + 1) };
      return Object.fromEntries(Array.from({ length: Math.floor(random() * 4) }, () => [text(), value(depth + 1)]));
    };
    for (let round = 0; round < 300; round++) {
      const answer: Record<string, unknown> = {};
      const members = 1 + Math.floor(random() * 5);
      for (let m = 0; m < members; m++) answer[random() < 0.3 ? "usage" : `${text()}${m}`] = random() < 0.3 ? usageOf(round) : value(1);
      const json = random() < 0.5 ? JSON.stringify(answer) : JSON.stringify(answer, null, 1);
      const bytes = Buffer.from(json);
      const own = (JSON.parse(json) as { usage?: { prompt_tokens?: number } }).usage;
      const expected = own && typeof own === "object" && !Array.isArray(own) && typeof own.prompt_tokens === "number" ? { promptTokens: own.prompt_tokens, completionTokens: own.prompt_tokens + 1 } : null;
      const scanner = new UsageScanner();
      for (let at = 0; at < bytes.length; ) {
        const size = 1 + Math.floor(random() * 40);
        scanner.push(bytes.subarray(at, at + size));
        at += size;
      }
      expect(scanner.usage(), json).toEqual(expected);
    }
  });
  it("reads a usage object of up to 4 KiB, details and whitespace included, whatever the pieces", async () => {
    const details = `"prompt_tokens_details":{"cached_tokens":0,"note":"${"x".repeat(3990)}"}`;
    const answer = Buffer.from(`{"choices":[{"text":"${"a".repeat(LIMIT)}"}],"usage": {"prompt_tokens":5,"completion_tokens":50000,${details}}}`);
    for (const size of [65_536, 4096, 777]) {
      const scanner = new UsageScanner();
      expect(await readBody(bodyOf(pieces(answer, size)), LIMIT, scanner, new AnswerMemory(Infinity).lease())).toBeNull();
      expect(scanner.usage(), `pieces of ${size}`).toEqual({ promptTokens: 5, completionTokens: 50_000 });
    }
  });
  it("an answer within the limit is returned whole, its usage read as its pieces came (from 64 KiB on) or, smaller, parsed whole", async () => {
    for (const [content, size] of [[1000, 100], [LIMIT - 500, 4096], [3 * LIMIT, 16_384]] as const) {
      const answer = answerOf(content);
      const read = new AnswerUsage();
      expect(await readBody(bodyOf(pieces(answer, size)), 4 * LIMIT, read, new AnswerMemory(Infinity).lease())).toEqual(answer);
      expect(usageOfBody(answer, read), `${answer.length} bytes`).toEqual({ usage: { promptTokens: 5, completionTokens: 50_000 }, isObject: true });
    }
    // Past the limit too, however small the limit: what came is scanned when asked.
    const small = new AnswerUsage();
    expect(await readBody(bodyOf(pieces(answerOf(2000), 300)), 1024, small, new AnswerMemory(Infinity).lease())).toBeNull();
    expect(small.usage()).toEqual({ promptTokens: 5, completionTokens: 50_000 });
  });
});

describe("an answer too large to relay, through the shim", () => {
  let mode: "logprobs" | "break" | "stall" | "late" | "early" | "small" = "logprobs";
  /** Resolved when the upstream has written the start of a late, early or small answer. */
  let answerComing = Promise.withResolvers<void>();
  let upstream: Server;
  let h: Harness;
  beforeAll(async () => {
    upstream = createServer((req, res: ServerResponse) => {
      req.resume();
      req.on("end", () => {
        res.writeHead(200, { "content-type": "application/json" });
        if (mode === "logprobs") return void res.end(answerOf(70_000, PROMPT_LOGPROBS));
        if (mode === "early" || mode === "small") {
          // Headers and part of the answer at once (the generation is done); the rest, usage
          // included, 400 ms later: past the limit ("early") or within it ("small").
          const answer = answerOf(mode === "early" ? LIMIT : 1000);
          res.write(answer.subarray(0, 500), () => answerComing.resolve());
          return void setTimeout(() => res.end(answer.subarray(500)), 400);
        }
        if (mode === "late") {
          // Past the limit at once; the rest, usage included, 600 ms later.
          const answer = answerOf(LIMIT + 10);
          res.write(answer.subarray(0, LIMIT + 10), () => answerComing.resolve());
          return void setTimeout(() => res.end(answer.subarray(LIMIT + 10)), 600);
        }
        res.write(answerOf(2 * LIMIT).subarray(0, 2 * LIMIT)); // past the limit, and no usage yet
        if (mode === "break") setTimeout(() => res.socket!.destroy(), 100);
      });
    });
    await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
    h = await startShim({
      env: { SHIM_MAX_ANSWER_BYTES: String(LIMIT), SHIM_UPSTREAM_URL: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1`, SHIM_STREAM_IDLE_TIMEOUT_MS: "500" },
      file: { pricing: { request: 1, models: { "qwen2.5-7b": { promptPer1k: 1, completionPer1k: 1 } } }, models: [{ name: "qwen2.5-7b", maxModelLen: 100_000 }] },
    });
  });
  afterAll(async () => {
    await h.close();
    upstream.closeAllConnections();
    await new Promise((r) => upstream.close(r));
  });

  const ask = async (m: typeof mode) => {
    mode = m;
    const { key, id } = await h.createKey({ credits: 1000 });
    const res = await h.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "go" }], max_tokens: 60_000 });
    const body = (await res.json()) as { error: { code: string }; credits_charged?: number; credits_remaining?: number };
    return { res, body, log: await h.waitForRequestLog((l) => l.keyId === id) };
  };

  it("is charged from its usage, which vLLM puts before megabytes of prompt_logprobs", async () => {
    const { res, body, log } = await ask("logprobs");
    expect(res.status).toBe(413);
    expect(body.error.code).toBe("request_too_large");
    expect(log).toMatchObject({ status: 413, error: "answer_too_large", tokens: 50_005, cost: 51.005 });
    expect(res.headers.get("x-credits-charged")).toBe("51.005");
    expect(res.headers.get("x-should-retry")).toBe("false");
    // The ledger row says what the client got (a review's mutant wrote 502 there unnoticed).
    const { default: Database } = await import("better-sqlite3");
    const db = new Database(h.dbPath, { readonly: true });
    try {
      expect(db.prepare("SELECT status, served FROM ledger WHERE kind = 'usage' AND ref = ?").get(res.headers.get("x-request-id"))).toEqual({ status: 413, served: 1 });
    } finally {
      db.close();
    }
    // The body says the charge too, as every JSON answer does: a client reading it must not
    // take a charged failure for a free one.
    expect(body).toMatchObject({ credits_charged: 51.005, credits_remaining: 948.995 });
  });

  it("whose client leaves while the rest is read is charged the same, from the usage that comes after it left, and logged as 499", async () => {
    mode = "late";
    answerComing = Promise.withResolvers<void>();
    const { key, id } = await h.createKey({ credits: 1000 });
    await leaveAfter200ms(h, key, answerComing.promise);
    expect(await h.waitForRequestLog((l) => l.keyId === id)).toMatchObject({ status: 499, error: "client_closed_request", tokens: 50_005, cost: 51.005 });
  });

  it.each(["early", "small"] as const)("whose client leaves once the answer is coming (%s) is charged from its usage: leaving does not stop the read", async (m) => {
    mode = m;
    answerComing = Promise.withResolvers<void>();
    const { key, id } = await h.createKey({ credits: 1000 });
    await leaveAfter200ms(h, key, answerComing.promise);
    expect(await h.waitForRequestLog((l) => l.keyId === id)).toMatchObject({ status: 499, error: "client_closed_request", tokens: 50_005, cost: 51.005 });
  });

  it("whose client leaves while the rest stalls is charged the estimate, and logged and counted as 499", async () => {
    mode = "stall";
    const left499 = async () => Number(/shim_requests_total\{route="\/v1\/chat\/completions",status="499"\} (\d+)/.exec(await (await fetch(`${h.url}/metrics`)).text())?.[1] ?? 0);
    const before = await left499();
    const { key, id } = await h.createKey({ credits: 1000 });
    await leaveAfter200ms(h, key);
    const log = await h.waitForRequestLog((l) => l.keyId === id);
    expect(log).toMatchObject({ status: 499, error: "client_closed_request" });
    expect(log.cost).toBeGreaterThan(1);
    expect((await h.store.getKey(id))!).toMatchObject({ balance: 1000_000_000 - Math.round(log.cost! * 1e6), held: 0 });
    expect(await left499()).toBe(before + 1);
  });

  it.each(["break", "stall"] as const)("whose rest %ss is still charged (the estimated prompt), and not to be retried", async (m) => {
    const { res, log } = await ask(m);
    expect(res.status).toBe(413);
    expect(res.headers.get("x-should-retry")).toBe("false");
    expect(log.cost).toBeGreaterThan(1); // the request price and the prompt's estimate
    expect(Number(res.headers.get("x-credits-charged"))).toBe(log.cost);
  });
});

describe("a client that leaves while an oversized answer is read, with the store failing to settle", () => {
  it("is still logged as 499, and not counted as an upstream failure", async () => {
    const upstream = createServer((req, res) => {
      req.resume();
      req.on("end", () => {
        res.writeHead(200, { "content-type": "application/json" });
        res.write(answerOf(2 * LIMIT).subarray(0, 2 * LIMIT)); // past the limit, then nothing
      });
    });
    await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
    const h = await startShim({
      env: { SHIM_MAX_ANSWER_BYTES: String(LIMIT), SHIM_UPSTREAM_URL: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1`, SHIM_STREAM_IDLE_TIMEOUT_MS: "500" },
      wrapStore: (s) => overrideStore(s, { settle: async () => { throw new StoreUnavailableError(new Error("disk on fire")); } }),
    });
    try {
      const { key, id } = await h.createKey({ credits: 10 });
      await leaveAfter200ms(h, key);
      expect(await h.waitForRequestLog((l) => l.keyId === id)).toMatchObject({ status: 499, error: "client_closed_request" });
      expect(h.logs.some((l) => l.includes('"msg":"settlement failed"'))).toBe(true);
      expect(await (await fetch(`${h.url}/metrics`)).text()).toMatch(/^shim_upstream_failures_total\{reason="upstream_error"\} 0$/m); // exported at 0 from the start: not counted
    } finally {
      await h.close().catch(() => {});
      upstream.closeAllConnections();
      await new Promise((r) => upstream.close(r));
    }
  });
});
