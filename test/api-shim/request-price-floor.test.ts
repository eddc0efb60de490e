import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, expect, it } from "vitest";
import { startShim, type Harness } from "../support/shim-harness.ts";

// 1 credit per request, tokens nearly free: a request-price charge reads as 1,000,000 µc.
const CREDIT = 1_000_000;
const FILE = { pricing: { request: 1, models: { "qwen2.5-7b": { promptPer1k: 1, completionPer1k: 1 } } }, models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }] };
let h: Harness;
beforeAll(async () => { h = await startShim({ file: FILE, fake: { models: [{ name: "qwen2.5-7b" }] } }); });
afterAll(() => h.close());

// Pinned by a mutation review (the code was right; no test held it): a streamed request whose
// client hangs up after the upstream has it, before its headers (prefill of a long prompt), pays
// the request price; else a client could have prompts processed for free by hanging up.
it("a stream whose client leaves after the upstream had it, before any header, is charged the request price", async () => {
  const { key, id } = await h.createKey({ credits: 10 });
  h.fake.set({ headerDelayMs: 1500 });
  const { received } = h.fake.counters;
  const ac = new AbortController();
  const res = h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 4, stream: true }, { signal: ac.signal, maxRetries: 0 });
  await h.fake.until((c) => c.received > received);
  setTimeout(() => ac.abort(), 200);
  await expect(res).rejects.toThrow();
  const log = await h.waitForRequestLog((e) => e.keyId === id);
  h.fake.reset();
  expect(log).toMatchObject({ status: 499, cost: 1 });
  expect((await h.store.getKey(id))!).toMatchObject({ balance: 9 * CREDIT, held: 0 });
});

// Pinned by a mutation review (the code was right; no test held it): a 200 whose JSON carries no usage is
// charged the request price (docs/api-shim/money.md), not nothing.
it("a non-streamed 200 without usage is charged the request price", async () => {
  const upstream = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ id: "c", object: "chat.completion", created: 1, model: "qwen2.5-7b", choices: [{ index: 0, message: { role: "assistant", content: "hi" }, finish_reason: "stop" }] }));
    });
  });
  await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
  const s = await startShim({ file: FILE, env: { SHIM_UPSTREAM_URL: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1` } });
  try {
    const { key, id } = await s.createKey({ credits: 10 });
    const r = await s.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 4 });
    expect(r.status).toBe(200);
    expect(((await r.json()) as { credits_charged: string | number }).credits_charged).toEqual(expect.anything());
    expect((await s.store.getKey(id))!).toMatchObject({ balance: 9 * CREDIT, held: 0 });
  } finally {
    await s.close();
    upstream.close();
  }
});
