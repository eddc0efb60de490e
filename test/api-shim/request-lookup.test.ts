import { APIError } from "openai";
import { describe, expect, it } from "vitest";
import type { Store } from "../../api-shim/src/store/store.ts";
import { onBothStores } from "../support/both-stores.ts";
import { startShim } from "../support/shim-harness.ts";

/**
 * GET /admin/requests/{request_id} and GET /admin/requests?key=: a request's ledger row by the id
 * its client saw (x-request-id), and a key's requests one row each, so a support desk answers
 * "charged for request X that failed" and "our count says Y for November" once the shim's log has
 * rotated. Through the shim, requests sent with the openai SDK, on both stores: each row says what
 * the request was charged, as the shim's log line for it said (a completed answer, an upstream
 * failure charged nothing, a stream its client stopped charged for what it generated).
 */
const ask = { model: "qwen2.5-7b", messages: [{ role: "user" as const, content: "hello there" }], max_tokens: 40 };

interface RowJson { request_id: string; key_id: string; at: string; route: string; model: string; status: number; stream: boolean; served: boolean | null; reported: boolean; prompt_tokens: number; completion_tokens: number; total_tokens: number; cost: number; price_id: string | null; batch: boolean | null; cached_tokens: number | null; ms: number | null; joined_request_id: string | null }

async function scenario(wrapStore?: () => Store): Promise<void> {
  const h = await startShim(wrapStore ? { wrapStore: () => wrapStore() } : {});
  try {
    const { key, id } = await h.createKey({ credits: 100 });
    const other = await h.createKey({ name: "other", credits: 100 });
    const client = h.client(key);

    // 1. Answered: charged what x-credits-charged said.
    const answered = await client.chat.completions.create(ask).withResponse();
    const okId = answered.response.headers.get("x-request-id")!;
    // 2. The model failed before any content: charged nothing, and not in the usage report.
    h.fake.set({ failStatus: 500 });
    const failure = await client.chat.completions.create(ask).then(() => undefined, (e: unknown) => e);
    expect(failure).toBeInstanceOf(APIError);
    const failedId = (failure as APIError).requestID!;
    h.fake.set({ failStatus: null, tokenDelayMs: 20, defaultTokens: 40 });
    // 3. A stream its client stopped after a few chunks: 499, charged for what was generated.
    const stream = await client.chat.completions.create({ ...ask, stream: true }).withResponse();
    const stoppedId = stream.response.headers.get("x-request-id")!;
    let chunks = 0;
    for await (const _chunk of stream.data) if (++chunks === 3) break;
    h.fake.set({ tokenDelayMs: 0 });
    const lines = await Promise.all([okId, failedId, stoppedId].map((reqId) => h.waitForRequestLog((l) => l.reqId === reqId)));
    expect(lines.map((l) => l.status)).toEqual([200, 502, 499]);

    const lookup = async (reqId: string, query = "") => {
      const res = await h.admin(`/admin/requests/${reqId}${query}`);
      return { status: res.status, body: (await res.json()) as { object: string; data: RowJson[]; error?: { code: string; param: string; message: string } } };
    };
    for (const [i, reqId] of [okId, failedId, stoppedId].entries()) {
      const { status, body } = await lookup(reqId);
      expect(status).toBe(200);
      expect(body.object).toBe("list");
      expect(body.data).toHaveLength(1);
      const row = body.data[0]!;
      // What the request's own log line said it was charged, its status and tokens.
      expect(row).toMatchObject({ request_id: reqId, key_id: id, model: "qwen2.5-7b", route: "chat", status: lines[i]!.status, cost: lines[i]!.cost, total_tokens: lines[i]!.tokens ?? 0 });
      expect(Date.parse(row.at)).toBeGreaterThan(Date.now() - 60_000);
    }
    const [ok, failed, stopped] = (await Promise.all([okId, failedId, stoppedId].map(async (r) => (await lookup(r)).body.data[0]!))) as [RowJson, RowJson, RowJson];
    expect(ok).toMatchObject({ stream: false, served: true, reported: true, batch: false, cost: Number(answered.response.headers.get("x-credits-charged")) });
    expect(ok.cost).toBeGreaterThan(0);
    expect(ok.price_id).toMatch(/./);
    expect(failed).toMatchObject({ status: 502, cost: 0, served: false, reported: false, completion_tokens: 0 });
    expect(stopped).toMatchObject({ status: 499, stream: true, served: true, reported: true });
    expect(stopped.cost).toBeGreaterThan(0);
    expect(stopped.completion_tokens).toBeGreaterThan(0);
    expect(stopped.completion_tokens).toBeLessThan(40);

    // None: a 404 in the shim's error shape, naming the request id; another key's id narrows to none.
    const none = await lookup("0123456789abcdef0123456789abcdef");
    expect(none.status).toBe(404);
    expect(none.body.error).toMatchObject({ code: "not_found", param: "request_id" });
    expect(none.body.error!.message).toMatch(/forwarded to the model/);
    expect((await lookup(okId, `?key=${other.id}`)).status).toBe(404);
    expect((await lookup(okId, `?key=${id}`)).body.data[0]!.request_id).toBe(okId);
    expect((await lookup(okId, "?key=nope")).status).toBe(400);
    expect((await lookup("a%20b")).status).toBe(404);

    // The key's requests: one row each, oldest first; the reported ones add up to /admin/usage.
    const list = await h.admin(`/admin/requests?key=${id}`);
    expect(list.status).toBe(200);
    const listed = (await list.json()) as { object: string; key_id: string; period: { start: string; end: string }; data: RowJson[] };
    expect(listed).toMatchObject({ object: "request_list", key_id: id });
    expect(listed.data.map((r) => r.request_id)).toEqual([okId, failedId, stoppedId]);
    expect(listed.data).toEqual([ok, failed, stopped]);
    const usage = (await (await h.admin(`/admin/usage?key=${id}`)).json()) as { data: { requests: number; cost: number; total_tokens: number }[] };
    const reported = listed.data.filter((r) => r.reported);
    expect(usage.data[0]!.requests).toBe(reported.length);
    expect(usage.data[0]!.total_tokens).toBe(reported.reduce((s, r) => s + r.total_tokens, 0));
    expect(Math.round(usage.data[0]!.cost * 1e6)).toBe(Math.round(reported.reduce((s, r) => s + r.cost, 0) * 1e6));

    const csv = await h.admin(`/admin/requests?key=${id}&format=csv`);
    expect(csv.headers.get("content-type")).toMatch(/^text\/csv/);
    expect(csv.headers.get("content-disposition")).toContain("requests.csv");
    const csvLines = (await csv.text()).split("\r\n");
    // The joined request's id last (after the columns scripts read by position before it was added): empty, none joined another.
    expect(csvLines[0]).toBe("request_id,key_id,at,route,model,status,stream,batch,served,reported,prompt_tokens,cached_tokens,completion_tokens,total_tokens,cost,price_id,ms,joined_request_id");
    expect(listed.data.map((r) => r.joined_request_id)).toEqual([null, null, null]);
    expect(csvLines.slice(1, 4).map((l) => l.split(",").slice(0, 1).concat(l.split(",").slice(5, 10)))).toEqual([
      [okId, "200", "false", "false", "true", "true"],
      [failedId, "502", "false", "false", "false", "false"],
      [stoppedId, "499", "true", "false", "true", "true"],
    ]);
    expect(csvLines.slice(1, 4).map((l) => Number(l.split(",")[14]))).toEqual([ok.cost, 0, stopped.cost]);
    // Every cell is the JSON row's (a null empty), so a reconciliation from the CSV adds up as from the JSON.
    expect(csvLines.slice(1, 4).map((l) => l.split(","))).toEqual(listed.data.map(csvCells));
    expect(csvLines.at(-1)).toBe("");

    // A period's bounds as routes.md gives them: `from` is in it, `to` is not (periods tile), to the millisecond.
    const between = async (query: string) => ((await (await h.admin(`/admin/requests?key=${id}&${query}`)).json()) as { data: RowJson[] }).data.map((r) => r.request_id);
    expect(await between(`from=${stopped.at}`)).toContain(stoppedId);
    expect(await between(`from=${ok.at}`)).toEqual([okId, failedId, stoppedId]);
    const before = new Date(Date.parse(ok.at) - 60_000).toISOString();
    expect(await between(`from=${before}&to=${ok.at}`)).toEqual([]);
    expect(await between(`from=${before}&to=${new Date(Date.parse(ok.at) + 1).toISOString()}`)).toContain(okId);

    // Another period has none of them; the other key none at all; a key is required, and must exist.
    const january = (await (await h.admin(`/admin/requests?key=${id}&from=2020-01-01&to=2020-01-31`)).json()) as { period: unknown; data: unknown[] };
    expect(january.data).toEqual([]);
    // The period it answers for, as /admin/usage says it (admin-reports.md): the end shown inclusive, to the second.
    expect(january.period).toEqual({ start: "2020-01-01T00:00:00Z", end: "2020-01-31T23:59:59Z" });
    expect(((await (await h.admin(`/admin/requests?key=${other.id}`)).json()) as { data: unknown[] }).data).toEqual([]);
    const noKey = await h.admin("/admin/requests");
    expect(noKey.status).toBe(400);
    expect(((await noKey.json()) as { error: { param: string } }).error.param).toBe("key");
    expect((await h.admin("/admin/requests?key=AAAAAAAAAAAA")).status).toBe(404);
    expect((await h.admin(`/admin/requests?key=${id}&format=xml`)).status).toBe(400);
    // An API key is not the admin token.
    expect((await fetch(`${h.url}/admin/requests/${okId}`, { headers: { authorization: `Bearer ${key}` } })).status).toBe(401);
  } finally {
    await h.close();
  }
}

/** A row's CSV cells as GET /admin/requests?format=csv writes them: the JSON's values, null as empty, its cost as written. */
const csvCells = (r: RowJson) => [r.request_id, r.key_id, r.at, r.route, r.model, String(r.status), String(r.stream),
  String(r.batch), String(r.served), String(r.reported), String(r.prompt_tokens), String(r.cached_tokens ?? ""), String(r.completion_tokens), String(r.total_tokens),
  expect.toSatisfy((c: string) => Number(c) === r.cost), r.price_id ?? "", String(r.ms ?? ""), r.joined_request_id ?? ""];

describe("a request's ledger row by its id, and a key's requests", () => {
  onBothStores("through the shim: answered, failed and stopped requests, each with what it was charged", scenario, 60_000);

  it("a batch request (?batch=1) whose prompt was partly read from the cache: its row says batch, its cached tokens and how long it took, in JSON and CSV", async () => {
    const h = await startShim({ file: { pricing: { request: 1, batchRequest: 3 }, models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }] } });
    try {
      const { key, id } = await h.createKey({ credits: 100 });
      h.fake.set({ cachedTokens: 4 });
      const answered = await h.client(key).chat.completions.create(ask, { query: { batch: "1" } }).withResponse();
      const reqId = answered.response.headers.get("x-request-id")!;
      await h.waitForRequestLog((l) => l.reqId === reqId);
      const row = ((await (await h.admin(`/admin/requests/${reqId}`)).json()) as { data: RowJson[] }).data[0]!;
      expect(row).toMatchObject({ request_id: reqId, batch: true, cached_tokens: 4, prompt_tokens: answered.data.usage!.prompt_tokens, cost: Number(answered.response.headers.get("x-credits-charged")) });
      expect(row.ms).toEqual(expect.any(Number));
      const csv = (await (await h.admin(`/admin/requests?key=${id}&format=csv`)).text()).split("\r\n");
      expect(csv.slice(1, -1).map((l) => l.split(","))).toEqual([csvCells(row)]);
    } finally {
      await h.close();
    }
  });
});

