import { describe, expect, it } from "vitest";
import type { Store } from "../../api-shim/src/store/store.ts";
import { Inflight } from "../../api-shim/src/inflight.ts";
import { onBothStores } from "../support/both-stores.ts";
import { expectLedgerMatches, startShim } from "../support/shim-harness.ts";
import { stalledEmbeddingsReader } from "../support/stalled-reader.ts";
import { pollUntil } from "../support/tools.ts";

/**
 * GET /admin/requests/{id} of a request the shim is still serving (a long stream) has no ledger
 * row yet: it says so (404 `request_running`, with since when, which key and what it holds), which
 * a script tells apart from "no such request" (404 `not_found`), and answers the row once the
 * request has ended. Streams sent with the openai SDK, on both stores.
 */
const ask = { model: "qwen2.5-7b", messages: [{ role: "user" as const, content: "hello there" }], max_tokens: 40, stream: true as const };

interface Running { request_id: string; key_id: string; since: string; running_ms: number; route: string; model: string; held: number | null; joined_request_id: string | null }
interface Answer { data?: { request_id: string; status: number }[]; error?: { code: string; param: string | null; message: string; running?: Running } }

async function scenario(wrapStore?: () => Store): Promise<void> {
  const h = await startShim(wrapStore ? { wrapStore: () => wrapStore() } : {});
  try {
    const { key, id } = await h.createKey({ name: "tenant", credits: 100 });
    const other = await h.createKey({ name: "other", credits: 100 });
    h.fake.set({ tokenDelayMs: 40, defaultTokens: 40 });
    const before = Date.now();
    const stream = await h.client(key).chat.completions.create(ask).withResponse();
    const reqId = stream.response.headers.get("x-request-id")!;
    const chunks = stream.data[Symbol.asyncIterator]();
    await chunks.next(); // it is being generated

    const lookup = async (query = "") => {
      const res = await h.admin(`/admin/requests/${reqId}${query}`);
      return { status: res.status, body: (await res.json()) as Answer };
    };
    const running = await lookup();
    expect(running.status).toBe(404);
    expect(running.body.error).toMatchObject({ code: "request_running", param: "request_id" });
    expect(running.body.error!.message).toMatch(/still running on this shim/);
    expect(running.body.error!.message).toContain(id);
    const r = running.body.error!.running!;
    expect(r).toMatchObject({ request_id: reqId, key_id: id, route: "chat", model: "qwen2.5-7b" });
    // Its hold: what the key's balance does not show as available while it runs.
    const keys = (await (await h.admin("/admin/keys")).json()) as { data: { id: string; held: number }[] };
    expect(r.held).toBeGreaterThan(0);
    expect(r.held).toBe(keys.data.find((k) => k.id === id)!.held);
    expect(Date.parse(r.since)).toBeGreaterThanOrEqual(before - 1000);
    expect(Date.parse(r.since)).toBeLessThanOrEqual(Date.now());
    // With `key`: only that key's request is told; another key's is "no such request" as before.
    expect((await lookup(`?key=${id}`)).body.error?.code).toBe("request_running");
    const narrowed = await lookup(`?key=${other.id}`);
    expect(narrowed.status).toBe(404);
    expect(narrowed.body.error?.code).toBe("not_found");
    // An id nothing has: still the plain not_found.
    expect((await (await h.admin("/admin/requests/0123456789abcdef0123456789abcdef")).json()) as Answer).toMatchObject({ error: { code: "not_found" } });

    // Ended: its ledger row.
    h.fake.set({ tokenDelayMs: 0 });
    for (let c = await chunks.next(); !c.done; c = await chunks.next());
    await h.waitForRequestLog((l) => l.reqId === reqId);
    const ended = await lookup();
    expect(ended.status).toBe(200);
    expect(ended.body.data).toMatchObject([{ request_id: reqId, status: 200 }]);
  } finally {
    await h.close();
  }
}

/**
 * A request answered with another's generation (a joined retry, a replayed re-send), once answered:
 * its own ledger row, charging nothing and naming the request whose row has the charge, by its id
 * and in its key's itemised list (JSON and CSV, the column last); not counted in the usage report
 * (the request it joined is, once), and every balance still its ledger's sum.
 */
async function expectJoinedRow(h: Awaited<ReturnType<typeof startShim>>, store: Store, keyId: string, reqId: string, joinedId: string, status: number): Promise<void> {
  const res = await h.admin(`/admin/requests/${reqId}`);
  expect(res.status).toBe(200);
  const { data } = (await res.json()) as { data: Record<string, unknown>[] };
  expect(data).toHaveLength(1);
  expect(data[0]).toMatchObject({ request_id: reqId, key_id: keyId, route: "chat", model: "qwen2.5-7b", status, stream: false, served: false, reported: false,
    prompt_tokens: 0, completion_tokens: 0, total_tokens: 0, cost: 0, price_id: null, joined_request_id: joinedId });
  // The request it joined: its own row, charged, joined to nothing.
  const joined = ((await (await h.admin(`/admin/requests/${joinedId}`)).json()) as { data: Record<string, unknown>[] }).data;
  expect(joined).toMatchObject([{ request_id: joinedId, reported: true, joined_request_id: null }]);
  expect(joined[0]!.cost).toBeGreaterThan(0);
  // The key's itemised list: both, the joined one naming the other; the CSV's column last.
  const listed = ((await (await h.admin(`/admin/requests?key=${keyId}`)).json()) as { data: Record<string, unknown>[] }).data;
  expect(listed.map((r) => [r.request_id, r.joined_request_id])).toEqual([[joinedId, null], [reqId, joinedId]]);
  const csv = (await (await h.admin(`/admin/requests?key=${keyId}&format=csv`)).text()).split("\r\n");
  expect(csv[0]).toBe("request_id,key_id,at,route,model,status,stream,batch,served,reported,prompt_tokens,cached_tokens,completion_tokens,total_tokens,cost,price_id,ms,joined_request_id");
  expect(csv.slice(1, 3).map((l) => [l.split(",")[0], l.split(",").at(-1)])).toEqual([[joinedId, ""], [reqId, joinedId]]);
  // The usage report counts the charged request once, not the one that joined it.
  const usage = (await (await h.admin(`/admin/usage?key=${keyId}`)).json()) as { data: { requests: number; cost: number }[] };
  expect(usage.data.map((g) => g.requests)).toEqual([1]);
  expect(usage.data[0]!.cost).toBe(joined[0]!.cost);
  await expectLedgerMatches(store, keyId);
}

/**
 * An SDK's retry that joined the generation of a request whose client left (joined-retry.ts):
 * while it waits, its id is told running and names the request it joined (whose row will have the
 * charge); once answered, its id has a row of its own, charging nothing and naming that request
 * (expectJoinedRow). Ids set by a trusted proxy (as nginx's $request_id).
 */
async function joinedScenario(wrapStore?: () => Store): Promise<void> {
  const h = await startShim({ env: { SHIM_TRUST_PROXY: "127.0.0.1/32" }, ...(wrapStore ? { wrapStore: () => wrapStore() } : {}) });
  try {
    const { key, id } = await h.createKey({ credits: 100 });
    const body = { model: "qwen2.5-7b", messages: [{ role: "user", content: "a long answer" }], max_tokens: 20 };
    const post = (reqId: string, signal?: AbortSignal, retry?: string) => fetch(`${h.url}/v1/chat/completions`, {
      method: "POST", body: JSON.stringify(body), signal,
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json", "x-request-id": reqId, ...(retry ? { "x-stainless-retry-count": retry } : {}) },
    });
    const lookup = async (reqId: string) => {
      const res = await h.admin(`/admin/requests/${reqId}`);
      return { status: res.status, body: (await res.json()) as Answer };
    };
    h.fake.set({ tokenDelayMs: 75, defaultTokens: 20 }); // 1.5 s
    // The first attempt: its client leaves once the model has it; the generation goes on.
    const ac = new AbortController();
    const first = post("first-attempt", ac.signal).catch(() => undefined);
    await pollUntil(() => h.fake.counters.received > 0, 10_000, 5);
    ac.abort();
    await first;
    // Its SDK's retry joins it and waits.
    const retry = post("the-retry", undefined, "1");
    await pollUntil(async () => (await lookup("the-retry")).body.error?.code === "request_running", 10_000, 10);
    const waiting = (await lookup("the-retry")).body.error!;
    expect(waiting.running).toMatchObject({ request_id: "the-retry", key_id: id, joined_request_id: "first-attempt", held: null });
    expect(waiting.message).toContain("waiting for the answer of request first-attempt");
    // The generation it joined: running too, holding credits, joined to nothing.
    const generating = (await lookup("first-attempt")).body.error!;
    expect(generating.running).toMatchObject({ request_id: "first-attempt", joined_request_id: null });
    expect(generating.running!.held).toBeGreaterThan(0);

    const answered = await retry;
    expect(answered.status).toBe(200);
    expect(answered.headers.get("x-joined-request-id")).toBe("first-attempt");
    await answered.text();
    await h.waitForRequestLog((l) => l.reqId === "the-retry");
    // Answered: the retry's own row, charging nothing and naming the first attempt, whose row has the charge.
    expect((await lookup("first-attempt")).body.data).toMatchObject([{ request_id: "first-attempt", status: 499 }]);
    await pollUntil(async () => (await lookup("the-retry")).status === 200, 10_000, 10); // written once its answer is out
    await expectJoinedRow(h, wrapStore ? wrapStore() : h.store, id, "the-retry", "first-attempt", 200);
  } finally {
    await h.close();
  }
}

/**
 * A re-send with an earlier request's Idempotency-Key, waiting for that request's answer, is told
 * running and names it, as a re-send (not a retry that joined); its line says `replayed`, not `joined`.
 */
async function replayScenario(wrapStore?: () => Store): Promise<void> {
  const h = await startShim({ env: { SHIM_TRUST_PROXY: "127.0.0.1/32" }, ...(wrapStore ? { wrapStore: () => wrapStore() } : {}) });
  try {
    const { key, id } = await h.createKey({ credits: 100 });
    const body = { model: "qwen2.5-7b", messages: [{ role: "user", content: "a long answer" }], max_tokens: 20 };
    const post = (reqId: string) => fetch(`${h.url}/v1/chat/completions`, {
      method: "POST", body: JSON.stringify(body),
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json", "x-request-id": reqId, "idempotency-key": "job-7-prompt-1" },
    });
    const lookup = async (reqId: string) => (await (await h.admin(`/admin/requests/${reqId}`)).json()) as Answer;
    h.fake.set({ tokenDelayMs: 75, defaultTokens: 20 }); // 1.5 s
    const first = post("first-send");
    await pollUntil(() => h.fake.counters.received > 0, 10_000, 5);
    const resend = post("the-resend");
    await pollUntil(async () => (await lookup("the-resend")).error?.code === "request_running", 10_000, 10);
    const waiting = (await lookup("the-resend")).error!;
    expect(waiting.running).toMatchObject({ request_id: "the-resend", key_id: id, joined_request_id: "first-send", held: null });
    expect(waiting.message).toContain("a re-send with the Idempotency-Key of request first-send");
    const [a, b] = await Promise.all([first, resend]);
    const [ja, jb] = (await Promise.all([a.json(), b.json()])) as [{ choices: unknown }, { choices: unknown }];
    expect(jb.choices).toEqual(ja.choices);
    expect(b.headers.get("idempotent-replayed")).toBe("true");
    const line = await h.waitForRequestLog((l) => l.reqId === "the-resend");
    expect(line).toMatchObject({ replayed: "first-send", cost: 0 });
    expect(line).not.toHaveProperty("joined");
    expect(h.fake.counters.received).toBe(1);
    // Answered: a row of its own, charging nothing and naming the first send, whose row has the charge.
    await pollUntil(async () => (await h.admin("/admin/requests/the-resend")).status === 200, 10_000, 10);
    await expectJoinedRow(h, wrapStore ? wrapStore() : h.store, id, "the-resend", "first-send", 200);
  } finally {
    await h.close();
  }
}

describe("a request still running, by its id", () => {
  describe("a re-send with an earlier request's Idempotency-Key", () => {
    onBothStores("told waiting on that request, as a re-send; its line says replayed; after, a zero-cost row of its own naming that request", replayScenario, 60_000);
  });
  onBothStores("a stream still being generated is told running (not 'no such request'), then has its row", scenario, 60_000);
  describe("a retry that joined a generation", () => {
    onBothStores("told waiting on the request it joined while it waits; after, a zero-cost row of its own naming that request", joinedScenario, 60_000);
  });

  it("a large answer settled and still being sent to a client that stopped reading is looked up as its row, not as running", async () => {
    // Its charge is in the ledger once its head is written: support asking about it is answered
    // with that row, though the shim is still writing the answer (it is in flight until then).
    const h = await startShim({ env: { SHIM_TRUST_PROXY: "127.0.0.1/32" } });
    try {
      const { key } = await h.createKey({ credits: 100 });
      const req = await stalledEmbeddingsReader(h, key, { "x-request-id": "being-sent" });
      try {
        expect(h.app.shim.inflight.running("being-sent")).toBeDefined();
        const res = await h.admin("/admin/requests/being-sent");
        const body = (await res.json()) as Answer;
        expect(body.error?.code).toBeUndefined();
        expect(body.data).toMatchObject([{ request_id: "being-sent", status: 200 }]);
      } finally {
        req.destroy();
      }
    } finally {
      await h.close();
    }
  }, 60_000);

  it("Inflight finds a request by its id only while it is in flight, and not a request added without one", () => {
    const inflight = new Inflight();
    const request = { id: "req-1" } as Parameters<Inflight["add"]>[1];
    const done = inflight.add(() => {}, request);
    const other = inflight.add(() => {});
    expect(inflight.running("req-1")).toBe(request);
    expect(inflight.running("req-2")).toBeUndefined();
    done();
    expect(inflight.running("req-1")).toBeUndefined();
    // Its slot reused by a request without one: still not found.
    inflight.add(() => {});
    expect(inflight.running("req-1")).toBeUndefined();
    other();
  });
});
