import OpenAI, { AuthenticationError, BadRequestError, NotFoundError } from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_FAKE, fillUpstreamPool, startShim, type Harness } from "../support/shim-harness.ts";
import { failure } from "../support/api-failure.ts";
import { answeringUpstream } from "../support/shim-process.ts";
import { clockFrom } from "../support/clocks.ts";


// The kit's default served name is the Hugging Face id (servedName ?? id), which holds a `/`;
// isModelName takes up to 256 characters, and a non-ASCII id is longer once percent-encoded.
const HF = "Qwen/Qwen2.5-7B-Instruct";
const LONG = "L".repeat(256);
const ACCENTED = `${"é".repeat(250)}/tiny`;
const CONFIGURED = ["qwen2.5-7b", "bge-m3", "llama3:8b", "org/tiny", HF, LONG, ACCENTED];

/** GET /v1/models and GET /v1/models/{id} through the official SDK (`models.list`, `models.retrieve`). */
describe("GET /v1/models/{id}: one model, as the list shows it", () => {
  let h: Harness;

  beforeAll(async () => {
    h = await startShim({
      file: {
        pricing: { request: 1, batchRequest: 2 },
        models: CONFIGURED.map((name) => ({ name, maxModelLen: 8192 })),
      },
      // The upstream serves one model the configuration does not.
      fake: { ...DEFAULT_FAKE, models: [...CONFIGURED, "unconfigured"].map((name) => ({ name, maxModelLen: 8192 })) },
    });
  });
  afterAll(() => h.close());

  it("answers the list's entry for the model, plus the credit members, charged 0 and counted against requests/min", async () => {
    const { key, id } = await h.createKey({ credits: 100, tier: "developer" });
    const listed = await h.client(key).models.list().withResponse();
    const entry = listed.data.data.find((m) => m.id === "qwen2.5-7b")!;
    const { data, response } = await h.client(key).models.retrieve("qwen2.5-7b").withResponse();
    // The upstream's own members (vLLM's root, max_model_len, permission), not a summary of them;
    // `created` and the permission's id are the fake's of the moment.
    expect(data).toEqual({ ...entry, created: expect.any(Number), permission: expect.any(Array), credits_charged: 0, credits_remaining: 100 });
    expect(data).toMatchObject({ id: "qwen2.5-7b", object: "model", owned_by: "vllm", max_model_len: 8192 });
    expect(response.headers.get("x-credits-charged")).toBe("0");
    expect(response.headers.get("x-credits-remaining")).toBe("100");
    expect(response.headers.get("x-ratelimit-limit-requests")).toBe("100");
    expect(Number(response.headers.get("x-ratelimit-remaining-requests"))).toBeLessThan(Number(listed.response.headers.get("x-ratelimit-remaining-requests")));
    expect((await h.store.getKey(id))!.balance).toBe(100 * 1_000_000);
    const line = await h.waitForRequestLog((l) => l.path === "/v1/models/qwen2.5-7b");
    expect(line).toMatchObject({ method: "GET", status: 200, keyId: id });
    expect(await (await fetch(`${h.url}/metrics`)).text()).toMatch(/^shim_requests_total\{route="\/v1\/models\/\*",status="200"\} \d+$/m);
  });

  it("finds an id the SDK percent-encodes (a `:`)", async () => {
    const { key } = await h.createKey();
    expect((await h.client(key).models.retrieve("llama3:8b")).id).toBe("llama3:8b");
  });

  it("a model not in the key's list (unknown, not configured, or outside its allow-list) is the inference routes' 404 model_not_found, charged 0", async () => {
    const { key } = await h.createKey({ credits: 5 });
    const limited = await h.createKey({ credits: 5, models: ["bge-m3"] });
    for (const [k, model] of [[key, "nope"], [key, "unconfigured"], [limited.key, "qwen2.5-7b"]] as const) {
      const e = await failure(() => h.client(k).models.retrieve(model));
      expect(e, model).toBeInstanceOf(NotFoundError);
      expect(e.error, model).toEqual({
        type: "invalid_request_error", code: "model_not_found", param: "model",
        message: `The model '${model}' does not exist or you do not have access to it.`,
      });
      expect(e.headers?.get("x-credits-charged"), model).toBe("0");
    }
    // The very error an inference request for a model the shim does not serve gets.
    const inference = await failure(() => h.client(key).chat.completions.create({ model: "unconfigured", messages: [{ role: "user", content: "x" }] }));
    const retrieve = await failure(() => h.client(key).models.retrieve("unconfigured"));
    expect(retrieve.error).toEqual(inference.error);
    const raw = await fetch(`${h.url}/v1/models/nope`, { headers: { authorization: `Bearer ${key}` } });
    expect(await raw.json()).toMatchObject({ credits_charged: 0, credits_remaining: 5 });
  });

  it("retrieves an id holding a `/` as curl and OpenAI's Python SDK send it (a raw `/`); the Node SDK's %2F is refused 400, as every encoded slash is", async () => {
    const { key } = await h.createKey();
    const get = (path: string, init: RequestInit = {}) => fetch(`${h.url}${path}`, { ...init, headers: { authorization: `Bearer ${key}` } });
    const listed = (await h.client(key).models.list()).data;
    for (const id of [HF, "org/tiny"]) {
      expect(listed.map((m) => m.id)).toContain(id);
      const res = await get(`/v1/models/${id}`);
      const body = (await res.json()) as { id?: string; error?: unknown };
      expect([res.status, body.id ?? body.error], id).toEqual([200, id]);
      expect(body, id).toMatchObject({ object: "model", owned_by: "vllm", max_model_len: 8192, credits_charged: 0 });
    }
    // The Node SDK encodes the id's `/` (encodeURIComponent): %2F, which the shim and nginx refuse.
    const e = await failure(() => h.client(key).models.retrieve(HF));
    expect(e).toBeInstanceOf(BadRequestError);
    expect(e.error).toMatchObject({ code: "invalid_request", message: expect.stringContaining("%2F") });
    // What the docs tell Node users: the SDK's own get() sends the path as given.
    expect((await h.client(key).get<{ id: string }>(`/models/${HF}`)).id).toBe(HF);
    // A trailing slash is ignored, as on every route; `/v1/models/` alone is still the list.
    expect(((await (await get(`/v1/models/${HF}/`)).json()) as { id: string }).id).toBe(HF);
    expect(((await (await get("/v1/models/")).json()) as { object: string }).object).toBe("list");
    // HEAD, as for every GET route: the status and headers, no body.
    const head = await get(`/v1/models/${HF}`, { method: "HEAD" });
    expect([head.status, head.headers.get("x-credits-charged"), await head.text()]).toEqual([200, "0", ""]);
    // An id the list does not show, `/` or not (a part of one, one with more to it): 404 model_not_found, naming it.
    for (const id of ["org/nope", "Qwen", `${HF}/x`, "org/tiny/config.json"]) {
      const res = await get(`/v1/models/${id}`);
      expect([res.status, ((await res.json()) as { error: unknown }).error], id).toEqual([404, expect.objectContaining({ code: "model_not_found", message: `The model '${id}' does not exist or you do not have access to it.` })]);
    }
    // Counted under the route as the router declares it: ids make no labels.
    const metrics = await (await fetch(`${h.url}/metrics`)).text();
    expect(metrics).toMatch(/^shim_requests_total\{route="\/v1\/models\/\*",status="404"\} \d+$/m);
    expect(metrics).not.toContain("Qwen");
  });

  it("retrieves a listed id of up to 256 characters, ASCII or not (longer once encoded), through the SDK and with a raw `/`", async () => {
    const { key, id } = await h.createKey();
    expect((await h.client(key).models.list()).data.map((m) => m.id)).toEqual(expect.arrayContaining([LONG, ACCENTED]));
    expect((await h.client(key).models.retrieve(LONG)).id).toBe(LONG);
    // fetch percent-encodes the accents (each `é` is %C3%A9), not the `/`.
    const res = await fetch(`${h.url}/v1/models/${ACCENTED}`, { headers: { authorization: `Bearer ${key}` } });
    expect([res.status, ((await res.json()) as { id: string }).id]).toEqual([200, ACCENTED]);
    // One character more is not a model: model_not_found, after authentication, not "Unknown route".
    const longer = await failure(() => h.client(key).models.retrieve(`${LONG}L`));
    expect([longer.status, longer.error]).toEqual([404, expect.objectContaining({ code: "model_not_found" })]);
    expect(await h.waitForRequestLog((l) => l.status === 404 && l.keyId === id)).toMatchObject({ error: "model_not_found" });
  });

  it("a path longer than any id is still bounded: nginx passes request lines of 8 KiB, the shim's HTTP server takes 64 KiB", async () => {
    const { key } = await h.createKey();
    const within = await fetch(`${h.url}/v1/models/${"x/".repeat(4000)}`, { headers: { authorization: `Bearer ${key}` } });
    const body = (await within.json()) as { error: { code: string; message: string } };
    expect([within.status, body.error.code]).toEqual([404, "model_not_found"]);
    expect(body.error.message.length).toBeLessThan(300); // the id is quoted up to 200 characters
    const beyond = await fetch(`${h.url}/v1/models/${"x".repeat(70_000)}`, { headers: { authorization: `Bearer ${key}` } });
    expect(beyond.status).toBe(431);
  });

  it("an id holding a `/` wants a key too: 401 before anything else, not an unknown route", async () => {
    const res = await fetch(`${h.url}/v1/models/${HF}`);
    expect([res.status, ((await res.json()) as { error: { code: string } }).error.code]).toEqual([401, "invalid_api_key"]);
  });

  it("wants a key, as the list does", async () => {
    expect(await failure(() => h.client("sk-gs-nope").models.retrieve("qwen2.5-7b"))).toBeInstanceOf(AuthenticationError);
  });
});

describe("GET /v1/models/{id} when the upstream fails", () => {
  it("is answered as the list is", async () => {
    const upstream = await answeringUpstream();
    const h = await startShim({ env: { SHIM_UPSTREAM_URL: upstream.url } });
    try {
      const { key } = await h.createKey();
      upstream.answer = { status: 200, body: JSON.stringify({ object: "list", data: [null, { id: "qwen2.5-7b", owned_by: "x" }, { id: "qwen2.5-7b", owned_by: "y" }] }) };
      // An id listed twice: the entry the list shows.
      expect(await h.client(key).models.retrieve("qwen2.5-7b")).toMatchObject({ id: "qwen2.5-7b", owned_by: "x" });
      for (const a of [{ status: 404, body: '{"detail":"Not Found"}' }, { status: 400, body: '{"error":{"message":"detail at 10.0.0.5"}}' },
        { status: 500, body: "" }, { status: 503, body: "" }, { status: 504, body: "" }, { status: 200, body: "<html>" }]) {
        upstream.answer = a;
        const list = await failure(() => h.client(key).models.list());
        const one = await failure(() => h.client(key).models.retrieve("qwen2.5-7b"));
        expect([one.status, one.error], JSON.stringify(a)).toEqual([list.status, list.error]);
        expect(one.status, JSON.stringify(a)).toBeGreaterThanOrEqual(502);
      }
      expect(await h.waitForRequestLog((l) => l.path === "/v1/models/qwen2.5-7b" && l.cause === "not_a_model_list")).toMatchObject({ status: 502 });
    } finally {
      await h.close();
      await upstream.close();
    }
  });
});

describe("?batch= on the free read routes (a client that sends it with every request)", () => {
  let h: Harness;

  beforeAll(async () => {
    // Mid-month: the /v1/usage read below counts the current month, which must not turn mid-test.
    h = await startShim({ clock: clockFrom(Date.UTC(2026, 2, 15, 12)), file: { pricing: { request: 1, batchRequest: 2 }, models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }, { name: "bge-m3", maxModelLen: 8192 }] } });
  });
  afterAll(() => h.close());

  it("the SDK's defaultQuery {batch: '1'}: inference gets the batch price, /v1/models, /v1/models/{id} and /v1/usage answer as without it, charged 0", async () => {
    const { key } = await h.createKey({ credits: 100 });
    const batched = new OpenAI({ apiKey: key, baseURL: `${h.url}/v1`, maxRetries: 0, defaultQuery: { batch: "1" } });
    const embedded = await batched.embeddings.create({ model: "bge-m3", input: "x" }).withResponse();
    expect(embedded.response.headers.get("x-credits-charged")).toBe("2");
    expect((await batched.models.list()).data.map((m) => m.id).sort()).toEqual(["bge-m3", "qwen2.5-7b"]);
    const one = await batched.models.retrieve("bge-m3").withResponse();
    expect(one.data.id).toBe("bge-m3");
    expect(one.response.headers.get("x-credits-charged")).toBe("0");
    const usage = await batched.get<{ object: string; usage: { total_requests: number }; credits_charged: number }>("/usage").withResponse();
    expect(usage.data).toMatchObject({ object: "usage", usage: { total_requests: 1 }, credits_charged: 0, credits_remaining: 98 });
    expect(usage.response.headers.get("x-credits-charged")).toBe("0");
  });

  it("is checked as on the inference routes: any other value, or the parameter twice, is the same 400 naming it", async () => {
    const { key } = await h.createKey({ credits: 100 });
    const get = (path: string) => fetch(`${h.url}${path}`, { headers: { authorization: `Bearer ${key}` } });
    for (const query of ["batch=true", "batch=2", "batch=", "batch=1&batch=1"]) {
      const inference = await h.post(key, `/v1/embeddings?${query}`, { model: "bge-m3", input: "x" });
      expect(inference.status, query).toBe(400);
      const expected = ((await inference.json()) as { error: unknown }).error;
      expect(expected).toMatchObject({ param: "batch" });
      for (const path of ["/v1/models", "/v1/models/bge-m3", "/v1/usage"]) {
        const res = await get(`${path}?${query}`);
        expect(res.status, `${path}?${query}`).toBe(400);
        expect(((await res.json()) as { error: unknown }).error, `${path}?${query}`).toEqual(expected);
      }
    }
    for (const path of ["/v1/models", "/v1/models/bge-m3", "/v1/usage", "/v1/usage?from=2020-01-01&to=2020-01-31"]) {
      expect((await get(`${path}${path.includes("?") ? "&" : "?"}batch=0`)).status, path).toBe(200);
    }
  });
});

/**
 * A batch job estimates its cost before it runs: each listed model says what its requests are
 * charged (before, only a first request's x-credits-charged did), and the estimate made from it
 * is what the job is then charged.
 */
describe("GET /v1/models says each model's prices", () => {
  let h: Harness;

  beforeAll(async () => {
    h = await startShim({
      file: {
        pricing: { request: 1, batchRequest: 3, models: { "qwen2.5-7b": { promptPer1k: 0.5, completionPer1k: 2, cachedPromptPer1k: 0.25 } } },
        models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }, { name: "bge-m3", maxModelLen: 8192 }],
      },
    });
  });
  afterAll(() => h.close());

  type Priced = { id: string; pricing: { id: string; request: number; batch_request: number; prompt_per_1k: number; cached_prompt_per_1k: number; completion_per_1k: number } };

  it("in credits, on the list and on one model's entry; a model without token prices has them at 0", async () => {
    const { key } = await h.createKey({ credits: 100 });
    const listed = (await h.client(key).models.list()).data as unknown as Priced[];
    const qwen = listed.find((m) => m.id === "qwen2.5-7b")!.pricing;
    expect(qwen).toEqual({ id: expect.stringMatching(/^[0-9a-f]{16}$/), request: 1, batch_request: 3, prompt_per_1k: 0.5, cached_prompt_per_1k: 0.25, completion_per_1k: 2 });
    expect(listed.find((m) => m.id === "bge-m3")!.pricing).toMatchObject({ request: 1, batch_request: 3, prompt_per_1k: 0, cached_prompt_per_1k: 0, completion_per_1k: 0 });
    expect(((await h.client(key).models.retrieve("qwen2.5-7b")) as unknown as Priced).pricing).toEqual(qwen);
  });

  it("the price a job reads is the one it is charged: a batch chat's estimate from its usage equals its x-credits-charged", async () => {
    const { key } = await h.createKey({ credits: 100 });
    const p = ((await h.client(key).models.list()).data as unknown as Priced[]).find((m) => m.id === "qwen2.5-7b")!.pricing;
    const { data, response } = await h.client(key).chat.completions
      .create({ model: "qwen2.5-7b", max_tokens: 10, messages: [{ role: "user", content: "hi" }] }, { query: { batch: 1 } })
      .withResponse();
    const u = data.usage!;
    const estimate = p.batch_request + (u.prompt_tokens * p.prompt_per_1k + u.completion_tokens * p.completion_per_1k) / 1000;
    expect(Number(response.headers.get("x-credits-charged"))).toBeCloseTo(estimate, 4);
  });
});

/**
 * The model list is a short request: it must not queue behind the generations that fill the
 * upstream pool (256 connections), else a client listing models at peak load waits for a
 * generation to end (or for the upstream timeout) before its answer.
 */
describe("GET /v1/models while the upstream pool is busy with long generations", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startShim({ env: { SHIM_UPSTREAM_TIMEOUT_MS: "60000" } });
  });
  afterAll(() => h.close(), 60_000);

  it("answers at once", async () => {
    const { key } = await h.createKey({ credits: 100000 });
    const release = await fillUpstreamPool(h, key);
    try {
      const res = await fetch(`${h.url}/v1/models`, { headers: { authorization: `Bearer ${key}` }, signal: AbortSignal.timeout(5_000) });
      expect(res.status).toBe(200);
      expect(((await res.json()) as { data: { id: string }[] }).data.map((m) => m.id)).toContain("qwen2.5-7b");
    } finally {
      await release();
    }
  }, 60_000);
});
