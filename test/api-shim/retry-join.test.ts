import OpenAI from "openai";
import { describe, expect, it } from "vitest";
import { closeApp } from "../../api-shim/src/app.ts";
import { refillessClock } from "../support/clocks.ts";
import { aWhile, balance, BODY, CREDIT, CREDITS, FAKE, FILE, leaveAndWaitForCharge, requestLines } from "../support/kept-answers.ts";
import { postAndLeave, shimPerTest } from "../support/upstream-per-test.ts";
import { pollUntil } from "../support/tools.ts";

/**
 * An SDK's retry (x-stainless-retry-count ≥ 1) of a non-streamed request whose client left gets
 * that generation's answer, charged once: Node's fetch gives up after 300 s without headers, and
 * each retry was generated and charged again (openai-node 3 times, LangChain 7, LlamaIndex 11),
 * the client never getting its answer. Here the SDK's own `timeout` stands in for fetch's limit.
 */
describe("an SDK's retry of a non-streamed request whose client left", () => {
  const start = shimPerTest();

  it("openai-node with a short timeout and maxRetries 2 gets the answer on a retry, one generation charged once", async () => {
    const h = await start({ file: FILE, fake: FAKE });
    h.fake.set({ tokenDelayMs: 75, defaultTokens: 20 }); // 1.5 s: past the client's 1 s timeout
    const { key, id } = await h.createKey({ credits: CREDITS });
    const client = new OpenAI({ apiKey: key, baseURL: `${h.url}/v1`, timeout: 1000, maxRetries: 2 });
    const { data, response } = await client.chat.completions.create(BODY as OpenAI.ChatCompletionCreateParamsNonStreaming).withResponse();
    expect(data.choices[0]!.message.content).toBeTruthy();
    await aWhile();
    expect(h.fake.counters.received).toBe(1); // generated once
    const charged = Number(response.headers.get("x-credits-charged"));
    expect(charged).toBeGreaterThan(1);
    expect(await balance(h, id)).toBe((CREDITS - charged) * CREDIT); // charged once, what the answer says
    expect((data as unknown as { credits_charged: number }).credits_charged).toBe(charged);
    const lines = requestLines(h, id);
    // The generation's own line (a retry that timed out while waiting is logged 499 too, joined, and
    // under load before the generation's line): the one not joined to another.
    const first = lines.find((l) => l.status === 499 && !("joined" in l))!;
    expect(response.headers.get("x-joined-request-id")).toBe(first.reqId);
    expect(lines.find((l) => l.status === 200)).toMatchObject({ cost: 0, joined: first.reqId });
  });

  it("a body the shim rewrites before forwarding (here salted: cacheIsolation key) joins the same, by the client's bytes", async () => {
    const h = await start({ file: { ...FILE, cacheIsolation: "key" }, fake: FAKE });
    h.fake.set({ tokenDelayMs: 75, defaultTokens: 20 });
    const { key, id } = await h.createKey({ credits: CREDITS });
    const client = new OpenAI({ apiKey: key, baseURL: `${h.url}/v1`, timeout: 1000, maxRetries: 2 });
    const { response } = await client.chat.completions.create(BODY as OpenAI.ChatCompletionCreateParamsNonStreaming).withResponse();
    expect(typeof (JSON.parse(h.fake.requests.at(-1)!.body) as { cache_salt?: unknown }).cache_salt).toBe("string"); // what went upstream was rewritten
    expect(response.headers.get("x-joined-request-id")).not.toBeNull();
    await aWhile();
    expect(h.fake.counters.received).toBe(1);
    expect(await balance(h, id)).toBe((CREDITS - Number(response.headers.get("x-credits-charged"))) * CREDIT);
  });

  it("the same body sent again without the retry header, or with retry count 0, is generated and charged again; a retry joins", async () => {
    const h = await start({ file: FILE, fake: FAKE });
    const { key, id } = await h.createKey({ credits: CREDITS });
    h.fake.set({ tokenDelayMs: 20, defaultTokens: 20 });
    const once = await leaveAndWaitForCharge(h, key, id);
    expect(once).toBeGreaterThan(CREDIT);
    h.fake.set({ tokenDelayMs: 0 });
    for (const headers of [{}, { "x-stainless-retry-count": "0" }] as Record<string, string>[]) {
      const res = await h.post(key, "/v1/chat/completions", BODY, headers);
      expect(res.status).toBe(200);
      expect(res.headers.get("x-joined-request-id")).toBeNull();
    }
    expect(h.fake.counters.received).toBe(3);
    const afterTwo = CREDITS * CREDIT - (await balance(h, id));
    expect(afterTwo).toBe(3 * once);
    // The left generation is still remembered: a retry of it joins, generated and charged nothing more.
    const retry = await h.post(key, "/v1/chat/completions", BODY, { "x-stainless-retry-count": "1" });
    expect(retry.status).toBe(200);
    expect(retry.headers.get("x-joined-request-id")).not.toBeNull();
    expect(retry.headers.get("x-credits-charged")).toBe(String(once / CREDIT));
    await aWhile();
    expect(h.fake.counters.received).toBe(3);
    expect(CREDITS * CREDIT - (await balance(h, id))).toBe(afterTwo);
    // Given to one retry, then forgotten: a later retry with the same body (likelier another call's) is generated.
    const later = await h.post(key, "/v1/chat/completions", BODY, { "x-stainless-retry-count": "2" });
    expect(later.headers.get("x-joined-request-id")).toBeNull();
    expect(h.fake.counters.received).toBe(4);
  });

  it("a joined answer says what the key has left now, not what it had when the generation was charged; its charge is the generation's", async () => {
    // Buckets that never refill: what the key has left is exactly its requests so far, however slow the run.
    const h = await start({ file: { ...FILE, tiers: { t: { rpm: 100, tpm: 1_000_000, concurrency: null } } }, fake: FAKE, clock: refillessClock() });
    const { key, id } = await h.createKey({ credits: CREDITS, tier: "t" });
    h.fake.set({ tokenDelayMs: 20, defaultTokens: 20 });
    const once = await leaveAndWaitForCharge(h, key, id);
    h.fake.set({ tokenDelayMs: 0 });
    for (let i = 0; i < 3; i++) await (await h.post(key, "/v1/chat/completions", { ...BODY, max_tokens: 5 })).text();
    const now = (await balance(h, id)) / CREDIT;
    const retry = await h.post(key, "/v1/chat/completions", BODY, { "x-stainless-retry-count": "1" });
    expect(retry.headers.get("x-joined-request-id")).not.toBeNull();
    expect(retry.headers.get("x-credits-charged")).toBe(String(once / CREDIT));
    expect(Number(retry.headers.get("x-credits-remaining"))).toBe(now);
    const body = (await retry.json()) as { credits_charged: number; credits_remaining: number };
    expect(body).toMatchObject({ credits_charged: once / CREDIT, credits_remaining: now });
    // This request's own place in the key's requests/min: the fifth of 100.
    expect(retry.headers.get("x-ratelimit-remaining-requests")).toBe("95");
  });

  it("a joined answer's credits remaining leave out what the key's requests in flight hold, as any answer's do", async () => {
    const h = await start({ file: FILE, fake: FAKE });
    const { key, id } = await h.createKey({ credits: CREDITS });
    h.fake.set({ tokenDelayMs: 20, defaultTokens: 20 });
    await leaveAndWaitForCharge(h, key, id);
    // Another request of the key's, still generating, holds its estimate.
    h.fake.set({ hang: true });
    const received = h.fake.counters.received;
    const ac = new AbortController();
    const inFlight = fetch(`${h.url}/v1/chat/completions`, { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body: JSON.stringify({ ...BODY, max_tokens: 100 }), signal: ac.signal }).catch(() => undefined);
    try {
      await h.fake.until((c) => c.received > received);
      const k = (await h.store.getKey(id))!;
      expect(k.held).toBeGreaterThan(0);
      const retry = await h.post(key, "/v1/chat/completions", BODY, { "x-stainless-retry-count": "1" });
      expect(retry.headers.get("x-joined-request-id")).not.toBeNull();
      const available = (k.balance - k.held) / CREDIT;
      expect(Number(retry.headers.get("x-credits-remaining"))).toBe(available);
      expect(((await retry.json()) as { credits_remaining: number }).credits_remaining).toBe(available);
    } finally {
      ac.abort();
      await inFlight;
    }
  });

  it("a batch call's retry (?batch=1) joins its own generation: the answer says batch_request true, charged once", async () => {
    const h = await start({ file: FILE, fake: FAKE });
    h.fake.set({ tokenDelayMs: 75, defaultTokens: 20 }); // 1.5 s: past the client's 1 s timeout
    const { key, id } = await h.createKey({ credits: CREDITS });
    const client = new OpenAI({ apiKey: key, baseURL: `${h.url}/v1`, timeout: 1000, maxRetries: 2 });
    const { data, response } = await client.chat.completions.create(BODY as OpenAI.ChatCompletionCreateParamsNonStreaming, { query: { batch: 1 } }).withResponse();
    expect(response.headers.get("x-joined-request-id")).not.toBeNull();
    expect((data as unknown as { batch_request: boolean }).batch_request).toBe(true);
    await aWhile();
    expect(h.fake.counters.received).toBe(1);
    const charged = Number(response.headers.get("x-credits-charged"));
    expect(await balance(h, id)).toBe((CREDITS - charged) * CREDIT);
    expect((data as unknown as { credits_charged: number }).credits_charged).toBe(charged);
  });

  it("another key's retry of the same body never joins: generated and charged to that key", async () => {
    const h = await start({ file: FILE, fake: FAKE });
    const a = await h.createKey({ credits: CREDITS });
    const b = await h.createKey({ credits: CREDITS });
    h.fake.set({ tokenDelayMs: 20, defaultTokens: 20 });
    await leaveAndWaitForCharge(h, a.key, a.id);
    const res = await h.post(b.key, "/v1/chat/completions", BODY, { "x-stainless-retry-count": "1" });
    expect(res.status).toBe(200);
    expect(res.headers.get("x-joined-request-id")).toBeNull();
    expect(h.fake.counters.received).toBe(2);
    expect(await balance(h, b.id)).toBeLessThan(CREDITS * CREDIT);
  });

  it("a retry of a different body, of another price (?batch=1), or of a streamed request, is generated", async () => {
    const h = await start({ file: FILE, fake: FAKE });
    const { key, id } = await h.createKey({ credits: CREDITS });
    h.fake.set({ tokenDelayMs: 20, defaultTokens: 20 });
    await leaveAndWaitForCharge(h, key, id);
    const other = await h.post(key, "/v1/chat/completions", { ...BODY, max_tokens: 19 }, { "x-stainless-retry-count": "1" });
    expect(other.headers.get("x-joined-request-id")).toBeNull();
    // ?batch=1 asks for another price: another call, whose answer says batch_request true.
    const batched = await h.post(key, "/v1/chat/completions?batch=1", BODY, { "x-stainless-retry-count": "1" });
    expect(batched.headers.get("x-joined-request-id")).toBeNull();
    expect(((await batched.json()) as { batch_request: boolean }).batch_request).toBe(true);
    const streamed = await h.post(key, "/v1/chat/completions", { ...BODY, stream: true }, { "x-stainless-retry-count": "1" });
    await streamed.text();
    expect(streamed.headers.get("x-joined-request-id")).toBeNull();
    expect(h.fake.counters.received).toBe(4);
  });

  it("a retry sent while the left generation is still running waits for it and gets its answer", async () => {
    const h = await start({ file: FILE, fake: FAKE });
    const { key, id } = await h.createKey({ credits: CREDITS });
    h.fake.set({ tokenDelayMs: 50, defaultTokens: 20 }); // 1 s
    await postAndLeave(h, key, BODY, () => h.fake.counters.received > 0);
    const retry = await h.post(key, "/v1/chat/completions", BODY, { "x-stainless-retry-count": "1" });
    expect(retry.status).toBe(200);
    const first = await h.waitForRequestLog((e) => e.keyId === id && e.status === 499);
    expect(retry.headers.get("x-joined-request-id")).toBe(first.reqId);
    expect(((await retry.json()) as { choices: unknown[] }).choices).toHaveLength(1);
    await aWhile();
    expect(h.fake.counters.received).toBe(1);
    expect(await balance(h, id)).toBe(CREDITS * CREDIT - first.cost! * CREDIT);
  });

  it("a key at its concurrency cap, or with its tokens/min spent by the generation, still joins: the retry takes neither", async () => {
    const tiers = { one: { rpm: 1000, tpm: 1_000_000, concurrency: 1 }, spent: { rpm: 1000, tpm: 20, concurrency: null } };
    const h = await start({ file: { ...FILE, tiers }, fake: FAKE });
    // Its one place is the left generation's while it runs (2 s): the retry used to get the 429 and, its retries spent the same way, never the answer.
    const capped = await h.createKey({ credits: CREDITS, tier: "one" });
    h.fake.set({ tokenDelayMs: 100, defaultTokens: 20 });
    await postAndLeave(h, capped.key, BODY, () => h.fake.counters.received > 0);
    const waited = await h.post(capped.key, "/v1/chat/completions", BODY, { "x-stainless-retry-count": "1" });
    expect(waited.status).toBe(200);
    expect(waited.headers.get("x-joined-request-id")).not.toBeNull();
    // The generation's own estimate spent the minute's tokens: the retry generates nothing, so it is not refused for them.
    const spent = await h.createKey({ credits: CREDITS, tier: "spent" });
    h.fake.set({ tokenDelayMs: 20 });
    await leaveAndWaitForCharge(h, spent.key, spent.id);
    const joined = await h.post(spent.key, "/v1/chat/completions", BODY, { "x-stainless-retry-count": "1" });
    expect(joined.status).toBe(200);
    expect(joined.headers.get("x-joined-request-id")).not.toBeNull();
    expect(h.fake.counters.received).toBe(2);
    // A retry with nothing to join is still held to both.
    const other = await h.post(spent.key, "/v1/chat/completions", { ...BODY, max_tokens: 19 }, { "x-stainless-retry-count": "1" });
    expect(other.status).toBe(429);
  });

  it("a marked retry with nothing to join, refused at the key's cap after its body was read, spends its request: requests/min still bounds the bodies such a key has parsed", async () => {
    const h = await start({ file: { ...FILE, tiers: { one: { rpm: 5, tpm: 1_000_000, concurrency: 1 } } }, fake: FAKE });
    const { key } = await h.createKey({ credits: CREDITS, tier: "one" });
    h.fake.set({ tokenDelayMs: 250, defaultTokens: 20 }); // 5 s: the key's one place is the left generation's throughout
    await postAndLeave(h, key, BODY, () => h.fake.counters.received > 0);
    const messages: string[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await h.post(key, "/v1/chat/completions", { ...BODY, max_tokens: 10 + i }, { "x-stainless-retry-count": "1" });
      expect(res.status).toBe(429);
      messages.push(((await res.json()) as { error: { message: string } }).error.message);
    }
    // The first four were read and refused at the cap; the fifth is refused by requests/min before its body is read.
    expect(messages.slice(0, 4).every((m) => m.includes("in flight"))).toBe(true);
    expect(messages[4]).not.toContain("in flight");
  });

  it("identical calls left together (n samples of one prompt) and retried together each get a generation of their own", async () => {
    const h = await start({ file: FILE, fake: FAKE });
    const { key, id } = await h.createKey({ credits: CREDITS });
    h.fake.set({ tokenDelayMs: 50, defaultTokens: 20 }); // 1 s
    await Promise.all([
      postAndLeave(h, key, BODY, () => h.fake.counters.received > 0),
      postAndLeave(h, key, BODY, () => h.fake.counters.received > 1),
    ]);
    const retries = await Promise.all([1, 2].map(() => h.post(key, "/v1/chat/completions", BODY, { "x-stainless-retry-count": "1" })));
    const joined = retries.map((r) => r.headers.get("x-joined-request-id"));
    expect(retries.map((r) => r.status)).toEqual([200, 200]);
    expect(joined[0]).not.toBeNull();
    expect(joined[1]).not.toBeNull();
    // Both generations were charged: each answer goes to one of them, not one answer to both and the other never.
    expect(joined[0]).not.toBe(joined[1]);
    await aWhile();
    expect(h.fake.counters.received).toBe(2);
    const charged = requestLines(h, id).filter((l) => l.status === 499).reduce((n, l) => n + (l.cost as number), 0);
    expect(await balance(h, id)).toBe(CREDITS * CREDIT - charged * CREDIT);
  });

  it("a retry of a left generation that then fails is generated itself, charged once", async () => {
    const h = await start({ file: FILE, fake: FAKE });
    const { key, id } = await h.createKey({ credits: CREDITS });
    h.fake.set({ failStatus: 503, headerDelayMs: 600 });
    await postAndLeave(h, key, BODY, () => h.fake.counters.received > 0);
    const retrying = h.post(key, "/v1/chat/completions", BODY, { "x-stainless-retry-count": "1" });
    await new Promise((r) => setTimeout(r, 100));
    h.fake.reset(); // the retry, once the failure is in, reaches an upstream that answers
    const retry = await retrying;
    expect(retry.status).toBe(200);
    expect(retry.headers.get("x-joined-request-id")).toBeNull();
    expect(h.fake.counters.received).toBe(2);
    expect(await balance(h, id)).toBe(CREDITS * CREDIT - Number(retry.headers.get("x-credits-charged")) * CREDIT);
    // Its own generation: its log line names no joined request, and its row is its own.
    const retryId = retry.headers.get("x-request-id")!;
    const line = await h.waitForRequestLog((e) => e.reqId === retryId);
    expect(line).not.toHaveProperty("joined");
    expect(line.cost).toBe(Number(retry.headers.get("x-credits-charged")));
  });

  it("a retry waiting on a generation that runs out of time gets its final 504 (x-should-retry: false), not a generation of its own", async () => {
    const h = await start({ file: FILE, fake: FAKE, env: { SHIM_UPSTREAM_TIMEOUT_MS: "1000" } });
    const { key, id } = await h.createKey({ credits: CREDITS });
    h.fake.set({ hang: true });
    await postAndLeave(h, key, BODY, () => h.fake.counters.received > 0);
    const retry = await h.post(key, "/v1/chat/completions", BODY, { "x-stainless-retry-count": "1" });
    expect(retry.status).toBe(504);
    expect(retry.headers.get("x-should-retry")).toBe("false");
    await aWhile();
    expect(h.fake.counters.received).toBe(1);
    expect(await balance(h, id)).toBe(CREDITS * CREDIT);
    // Its id finds its own row: the 504 it was answered, nothing charged, naming the generation it joined.
    const first = await h.waitForRequestLog((e) => e.keyId === id && !("joined" in e));
    const rows = ((await (await h.admin(`/admin/requests/${retry.headers.get("x-request-id")}`)).json()) as { data: unknown[] }).data;
    expect(rows).toMatchObject([{ status: 504, cost: 0, served: false, reported: false, joined_request_id: first.reqId }]);
  });

  it("a batch retry's 504 row says batch, as the request it joined and the call it sent (?batch=1) do", async () => {
    const h = await start({ file: FILE, fake: FAKE, env: { SHIM_UPSTREAM_TIMEOUT_MS: "1000" } });
    const { key, id } = await h.createKey({ credits: CREDITS });
    h.fake.set({ hang: true });
    const send = (headers: Record<string, string>, signal?: AbortSignal) => fetch(`${h.url}/v1/chat/completions?batch=1`, {
      method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json", ...headers }, body: JSON.stringify(BODY), ...(signal ? { signal } : {}) });
    const ac = new AbortController();
    const left = send({}, ac.signal).then((r) => r.text()).catch(() => undefined);
    await pollUntil(() => h.fake.counters.received > 0, 10_000, 5);
    setTimeout(() => ac.abort(), 50);
    await left;
    const retry = await send({ "x-stainless-retry-count": "1" });
    expect(retry.status).toBe(504);
    const retryId = retry.headers.get("x-request-id")!;
    expect(await pollUntil(async () => (await h.admin(`/admin/requests/${retryId}`)).status === 200, 10_000, 20)).toBe(true);
    const rows = ((await (await h.admin(`/admin/requests?key=${id}`)).json()) as { data: { request_id: string; batch: boolean; joined_request_id: string | null }[] }).data;
    expect(rows.map((r) => [r.request_id === retryId ? "retry" : "joined", r.batch])).toEqual([["joined", true], ["retry", true]]);
  });

  it("a retry whose client leaves while it waits costs nothing, and the next retry gets the answer", async () => {
    const h = await start({ file: FILE, fake: FAKE });
    const { key, id } = await h.createKey({ credits: CREDITS });
    h.fake.set({ tokenDelayMs: 50, defaultTokens: 20 }); // 1 s
    await postAndLeave(h, key, BODY, () => h.fake.counters.received > 0);
    const ac = new AbortController();
    const gone = fetch(`${h.url}/v1/chat/completions`, { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json", "x-stainless-retry-count": "1" }, body: JSON.stringify(BODY), signal: ac.signal }).catch(() => undefined);
    setTimeout(() => ac.abort(), 200);
    await gone;
    const first = await h.waitForRequestLog((e) => e.keyId === id && e.status === 499 && !("joined" in e));
    const left = await h.waitForRequestLog((e) => e.keyId === id && e.status === 499 && "joined" in e);
    expect(left).toMatchObject({ cost: 0, joined: first.reqId });
    const retry = await h.post(key, "/v1/chat/completions", BODY, { "x-stainless-retry-count": "2" });
    expect(retry.status).toBe(200);
    expect(retry.headers.get("x-joined-request-id")).toBe(first.reqId);
    expect(h.fake.counters.received).toBe(1);
    expect(await balance(h, id)).toBe(CREDITS * CREDIT - first.cost! * CREDIT);
    // The retry that left before any answer has no row (its client never had its id); the one answered has.
    await h.waitForRequestLog((e) => e.reqId === retry.headers.get("x-request-id"));
    expect(await pollUntil(async () => (await h.admin(`/admin/requests/${retry.headers.get("x-request-id")}`)).status === 200, 10_000, 10)).toBe(true);
    expect((await h.admin(`/admin/requests/${left.reqId}`)).status).toBe(404);
  });

  it("a retry waiting on a generation when a drain (SIGTERM) ends is answered the drain's 503, charged nothing", async () => {
    const h = await start({ file: FILE, fake: FAKE });
    const { key, id } = await h.createKey({ credits: CREDITS });
    h.fake.set({ hang: true });
    await postAndLeave(h, key, BODY, () => h.fake.counters.received > 0);
    const retrying = h.post(key, "/v1/chat/completions", BODY, { "x-stainless-retry-count": "1" });
    await new Promise((r) => setTimeout(r, 300)); // the retry waits on the generation
    await closeApp(h.app, 300);
    const retry = await retrying;
    expect(retry.status).toBe(503);
    expect(h.fake.counters.received).toBe(1);
    expect(await balance(h, id)).toBe(CREDITS * CREDIT);
  });
});
