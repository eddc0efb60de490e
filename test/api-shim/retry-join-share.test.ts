import { request } from "node:http";
import { describe, expect, it } from "vitest";
import { KEPT_BYTES, KEY_BYTES } from "../../api-shim/src/limits/left-generations.ts";
import type { Harness } from "../support/shim-harness.ts";
import { balance, BODY, CREDIT, CREDITS, FAKE, FILE } from "../support/kept-answers.ts";
import { pollUntil } from "../support/tools.ts";
import { countingUpstream, type CountingUpstream, postAndLeave, shimPerTest } from "../support/upstream-per-test.ts";

/**
 * The answers kept for SDK retries (retry-join.test.ts) are bounded per key as well as in all: one
 * key whose clients leave many large generations used to push every other key's kept answers out,
 * and those keys' retries were generated and charged again. And /metrics shows the joins and what
 * is kept.
 */
const RETRY = { "x-stainless-retry-count": "1" };

/** An answer of 5 MiB: three fit in a key's share, thirteen of them and one more are past the total. */
const ANSWER = Buffer.from(
  JSON.stringify({
    id: "chatcmpl-1",
    object: "chat.completion",
    created: 0,
    model: "qwen2.5-7b",
    choices: [{ index: 0, message: { role: "assistant", content: "x".repeat(5 * 1024 * 1024) }, finish_reason: "stop" }],
    usage: { prompt_tokens: 5, completion_tokens: 20, total_tokens: 25 },
  }),
);

/** An upstream answering each request with `answer` (ANSWER) after `delayMs`: time for its client to leave (and a retry to come). */
const largeAnswers = (delayMs = 300, answer = ANSWER) =>
  countingUpstream((req, res) => {
    req.resume();
    setTimeout(() => res.writeHead(200, { "content-type": "application/json", "content-length": answer.length }).end(answer), delayMs);
  });


/** The request lines of `id`'s generations whose client left (499, not joined). */
const leftLines = (h: Harness, id: string) => h.logs.filter((l) => l.includes(`"keyId":"${id}"`) && l.includes('"status":499') && !l.includes('"joined"'));

/** Sends BODY with `key` and leaves once the upstream has it; resolves once that generation was charged (its 499 line). */
async function leaveCharged(h: Harness, u: CountingUpstream, key: string, id: string): Promise<void> {
  const before = u.received();
  const charged = leftLines(h, id).length;
  await postAndLeave(h, key, BODY, () => u.received() > before);
  expect(await pollUntil(() => leftLines(h, id).length > charged, 10_000, 10)).toBe(true);
}

/** The value of one series on /metrics (`name{labels}`), 0 when absent. */
async function series(h: Harness, name: string): Promise<number> {
  const text = await (await fetch(`${h.url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line ? Number(line.slice(name.length + 1)) : NaN;
}

describe("the answers kept for retries, shared between keys", () => {
  const start = shimPerTest();

  it("one key leaving many large answers drops its own oldest, not another key's: that key's retry joins its answer, charged once", { timeout: 60_000 }, async () => {
    expect(ANSWER.length * 3).toBeLessThanOrEqual(KEY_BYTES);
    expect(ANSWER.length * 14).toBeGreaterThan(KEPT_BYTES);
    const u = await largeAnswers();
    const h = await start({ file: FILE, fake: FAKE }, u);
    const quiet = await h.createKey({ credits: CREDITS });
    const busy = await h.createKey({ credits: CREDITS });
    await leaveCharged(h, u, quiet.key, quiet.id);
    const first = JSON.parse(leftLines(h, quiet.id)[0]!) as { reqId: string };
    const charged = CREDITS * CREDIT - (await balance(h, quiet.id));
    expect(charged).toBeGreaterThan(0);
    // Thirteen more answers of the busy key's: all of them together were past the total, and the quiet key's answer, the oldest, was dropped.
    for (let i = 0; i < 13; i++) await leaveCharged(h, u, busy.key, busy.id);
    expect(await series(h, 'shim_retry_memory_evictions_total{reason="over_key_share",kind="left"}')).toBe(10);
    expect(await series(h, 'shim_retry_memory_evictions_total{reason="over_total",kind="left"}')).toBe(0);
    expect(await series(h, "shim_retry_answers_kept_total")).toBe(14);
    expect(await series(h, "shim_retry_memory_entries")).toBe(4);
    expect(await series(h, "shim_retry_memory_bytes")).toBe(4 * ANSWER.length);
    const received = u.received();
    const retry = await h.post(quiet.key, "/v1/chat/completions", BODY, RETRY);
    expect(retry.status).toBe(200);
    expect(retry.headers.get("x-joined-request-id")).toBe(first.reqId);
    expect((await retry.arrayBuffer()).byteLength).toBeGreaterThan(ANSWER.length);
    expect(u.received()).toBe(received); // not generated again
    expect(await balance(h, quiet.id)).toBe(CREDITS * CREDIT - charged); // charged once
    expect(await series(h, 'shim_retry_joins_total{outcome="finished"}')).toBe(1);
    expect(await series(h, 'shim_retry_joins_total{outcome="running"}')).toBe(0);
    // Delivered whole: forgotten, the busy key's three answers still kept.
    expect(await series(h, "shim_retry_memory_entries")).toBe(3);
    expect(await series(h, "shim_retry_memory_bytes")).toBe(3 * ANSWER.length);
  });

  it("a retry whose client hangs up while the joined answer is being sent leaves it to the next retry, not generated again", async () => {
    // 15 MiB: more than the sockets' buffers take at once, so the answer is still being sent when the client hangs up.
    const large = Buffer.from(ANSWER.toString().replace("x".repeat(5 * 1024 * 1024), "x".repeat(15 * 1024 * 1024)));
    expect(large.length).toBeLessThanOrEqual(KEY_BYTES);
    const u = await largeAnswers(300, large);
    const h = await start({ file: FILE, fake: FAKE }, u);
    const { key, id } = await h.createKey({ credits: CREDITS });
    await leaveCharged(h, u, key, id);
    const first = JSON.parse(leftLines(h, id)[0]!) as { reqId: string };
    const charged = CREDITS * CREDIT - (await balance(h, id));
    // A retry that reads the answer's head and hangs up.
    const cut = await new Promise<string | undefined>((resolve, reject) => {
      const req = request(`${h.url}/v1/chat/completions`, { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json", ...RETRY } }, (res) => {
        resolve(res.headers["x-joined-request-id"] as string | undefined);
        res.socket.destroy();
      });
      req.on("error", reject);
      req.end(JSON.stringify(BODY));
    });
    expect(cut).toBe(first.reqId);
    await new Promise((r) => setTimeout(r, 300)); // the shim sees the hang-up
    const retry = await h.post(key, "/v1/chat/completions", BODY, { "x-stainless-retry-count": "2" });
    expect(retry.status).toBe(200);
    expect(retry.headers.get("x-joined-request-id")).toBe(first.reqId);
    expect((await retry.arrayBuffer()).byteLength).toBeGreaterThan(large.length);
    expect(u.received()).toBe(1); // not generated again
    expect(await balance(h, id)).toBe(CREDITS * CREDIT - charged); // charged once
  });

  it("a retry that waits for the generation it joins is counted as joining it running", async () => {
    const u = await largeAnswers(1500);
    const h = await start({ file: FILE, fake: FAKE }, u);
    const { key } = await h.createKey({ credits: CREDITS });
    for (const outcome of ["running", "finished"]) expect(await series(h, `shim_retry_joins_total{outcome="${outcome}"}`)).toBe(0);
    for (const reason of ["expired", "over_key_share", "over_total"]) expect(await series(h, `shim_retry_memory_evictions_total{reason="${reason}",kind="left"}`)).toBe(0);
    await postAndLeave(h, key, BODY, () => u.received() > 0);
    const retry = await h.post(key, "/v1/chat/completions", BODY, RETRY);
    expect(retry.headers.get("x-joined-request-id")).not.toBeNull();
    await retry.arrayBuffer();
    expect(u.received()).toBe(1);
    expect(await series(h, 'shim_retry_joins_total{outcome="running"}')).toBe(1);
    expect(await series(h, 'shim_retry_joins_total{outcome="finished"}')).toBe(0);
  });

  it("a retry whose delivery is cut (its client gone while the answer is written) is not counted; the next retry, which gets it whole, is: one join for one answer", async () => {
    // 15 MiB: more than the sockets between the shim and a client that stops reading hold.
    const big = Buffer.from(JSON.stringify({ ...JSON.parse(ANSWER.toString()), choices: [{ index: 0, message: { role: "assistant", content: "x".repeat(15 * 1024 * 1024) }, finish_reason: "stop" }] }));
    const u = await countingUpstream((req, res) => {
      req.resume();
      setTimeout(() => res.writeHead(200, { "content-type": "application/json", "content-length": big.length }).end(big), 300);
    });
    const h = await start({ file: FILE, fake: FAKE }, u);
    const { key, id } = await h.createKey({ credits: CREDITS });
    await leaveCharged(h, u, key, id);
    // The first retry reads the joined answer's headers, then its client goes away.
    const cut = request(`${h.url}/v1/chat/completions`, { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json", ...RETRY } });
    cut.on("error", () => {});
    const joinedBy = await new Promise<string | undefined>((resolve) => {
      cut.on("response", (res) => (res.pause(), resolve(res.headers["x-joined-request-id"] as string | undefined)));
      cut.end(JSON.stringify(BODY));
    });
    expect(joinedBy).toBeDefined();
    cut.destroy();
    await new Promise((r) => setTimeout(r, 300)); // the shim sees the close: the answer is the next retry's again
    const retry = await h.post(key, "/v1/chat/completions", BODY, RETRY);
    expect(retry.headers.get("x-joined-request-id")).toBe(joinedBy);
    expect((await retry.arrayBuffer()).byteLength).toBeGreaterThan(big.length);
    expect(u.received()).toBe(1);
    expect(await series(h, 'shim_retry_joins_total{outcome="finished"}')).toBe(1);
    expect(await series(h, 'shim_retry_joins_total{outcome="running"}')).toBe(0);
  });
});
