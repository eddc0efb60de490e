import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { buildApp, closeApp } from "../../api-shim/src/app.ts";
import { parseShimConfig } from "../../api-shim/src/config.ts";
import { distinctPrices } from "../../api-shim/src/money/price-record.ts";
import { createLogger } from "../../api-shim/src/observability/logger.ts";
import { openStore } from "../../api-shim/src/store/open-store.ts";
import { SqliteStore } from "../../api-shim/src/store/sqlite-store.ts";
import { createUpstream } from "../../api-shim/src/upstream/upstream.ts";
import { clockFrom } from "../support/clocks.ts";
import { DEFAULT_FAKE } from "../support/shim-harness.ts";
import { FakeVllm } from "../support/fake-vllm.ts";
import { type RunningPostgres, startPostgres } from "../support/postgres.ts";

/**
 * A mid-month price change (a restart with new prices, as a `pulumi up` does): the report by model
 * and price has a line per price, each with the price's fields, whose tokens × prices recompute the
 * line's cost up to the documented per-request rounding (ceil to the µc: < 2 µc per request, one
 * for the prompt, one for the completion). Both stores; through the shim as server.ts builds it.
 */
const MODEL = "qwen2.5-7b";
const before = { request: 0.001, batchRequest: 0.0005, models: { [MODEL]: { promptPer1k: 0.0123, completionPer1k: 0.0337, cachedPromptPer1k: 0.00311 } } };
const after = { request: 0.001, batchRequest: 0.0005, models: { [MODEL]: { promptPer1k: 0.0157, completionPer1k: 0.0411 } } };
const ADMIN = "admin-price-lines-token-0123456789";

interface Shim { url: string; close(): Promise<void> }

async function startShimOn(databaseUrl: string, pricing: object, at: number, upstream: string, models = [MODEL]): Promise<Shim> {
  const dir = mkdtempSync(join(tmpdir(), "price-lines-"));
  writeFileSync(join(dir, "shim.yaml"), stringify({ models: models.map((name) => ({ name, maxModelLen: 8192 })), pricing }));
  const config = parseShimConfig({ SHIM_UPSTREAM_URL: upstream, SHIM_UPSTREAM_API_KEY: DEFAULT_FAKE.apiKey!, SHIM_ADMIN_TOKEN: ADMIN, SHIM_CONFIG: join(dir, "shim.yaml"), SHIM_DATABASE_URL: databaseUrl }, (p) => readFileSync(p, "utf8"));
  // As server.ts opens it: the configuration's prices recorded at the open.
  const store = await openStore(config.databaseUrl, { prices: { records: distinctPrices(config.pricing), at } }, dir);
  const app = buildApp({ config, store, upstream: createUpstream({ url: config.upstreamUrl, apiKey: config.upstreamApiKey, headersTimeoutMs: 5000, idleTimeoutMs: 5000 }), clock: clockFrom(at), logger: createLogger({ level: "warn", pretty: false, destination: { write: () => {} } }) });
  await app.listen({ port: 0, host: "127.0.0.1" });
  const address = app.server.address();
  return { url: `http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}`, close: () => closeApp(app, 5000).then(() => store.close()) };
}

const admin = (shim: Shim, path: string, init: RequestInit = {}) => fetch(shim.url + path, { ...init, headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" } });

/** November's report by model and price, as CSV text and as JSON; the shim is closed after it. */
async function novemberByPrice(shim: Shim): Promise<{ csv: string; json: { data: Record<string, unknown>[] } }> {
  const period = "from=2026-11-01&to=2026-11-30";
  const csv = await (await admin(shim, `/admin/usage?group=model,price&format=csv&${period}`)).text();
  const json = (await (await admin(shim, `/admin/usage?group=model,price&${period}`)).json()) as { data: Record<string, unknown>[] };
  await shim.close();
  return { csv, json };
}

/** A fake vLLM and a fresh database for a describe block, started before its tests and stopped after. */
function fakeAndDatabase(database: () => Promise<{ url: string; stop(): Promise<void> }>): { fake: FakeVllm; db: { url: string; stop(): Promise<void> } } {
  const state = {} as { fake: FakeVllm; db: { url: string; stop(): Promise<void> } };
  beforeAll(async () => {
    state.fake = await new FakeVllm(DEFAULT_FAKE).start();
    state.db = await database();
  });
  afterAll(async () => {
    await state.fake?.close();
    await state.db?.stop();
  });
  return state;
}

/** µc of a decimal credits string, exactly. */
const micro = (credits: string): bigint => {
  const [whole, frac = ""] = credits.split(".");
  return BigInt(whole!) * 1_000_000n + BigInt(frac.padEnd(6, "0"));
};

const stores: [string, () => Promise<{ url: string; stop(): Promise<void> }>][] = [
  ["SQLite", async () => ({ url: `sqlite:${join(mkdtempSync(join(tmpdir(), "price-db-")), "shim.db")}`, stop: async () => {} })],
  ["Postgres", async () => {
    const server: RunningPostgres = await startPostgres();
    return { url: await server.newDatabase(), stop: () => server.stop() };
  }],
];

describe.each(stores)("lines per price (%s store)", (_name, database) => {
  const env = fakeAndDatabase(database);
  let csv: string;
  let json: { data: Record<string, unknown>[] };
  let keyId: string;
  beforeAll(async () => {
    const { fake, db } = env;
    // November 2026: the first half at the old price, then a restart with the new one on the 15th.
    let shim = await startShimOn(db.url, before, Date.UTC(2026, 10, 3), fake.url);
    const created = (await (await admin(shim, "/admin/keys", { method: "POST", body: JSON.stringify({ name: "audited", credits: 50 }) })).json()) as { id: string; key: string };
    keyId = created.id;
    const chat = async (s: Shim, content: string) => {
      const client = new OpenAI({ apiKey: created.key, baseURL: `${s.url}/v1`, maxRetries: 0 });
      await client.chat.completions.create({ model: MODEL, messages: [{ role: "user", content }], max_tokens: 7 });
    };
    for (const text of ["hello there", "a longer question about prices"]) await chat(shim, text);
    fake.behaviour.cachedTokens = 4; // a prompt partly read from the cache: charged the cached price
    await chat(shim, "x and some more words");
    fake.behaviour.cachedTokens = null;
    await shim.close();
    shim = await startShimOn(db.url, after, Date.UTC(2026, 10, 15), fake.url);
    for (const text of ["after the change", "and another one, somewhat longer than that"]) await chat(shim, text);
    ({ csv, json } = await novemberByPrice(shim));
  }, 120_000);

  it("splits the model's line per price, the old one first, each with its price's fields", () => {
    const lines = csv.trimEnd().split("\r\n");
    expect(lines[0]).toBe("key_id,model,price_id,price_request,price_batch_request,price_prompt_per_1k,price_cached_prompt_per_1k,price_completion_per_1k,requests,batch_requests,prompt_tokens,cached_tokens,completion_tokens,total_tokens,cost");
    expect(lines).toHaveLength(3);
    const [first, second] = lines.slice(1).map((l) => l.split(","));
    expect(first!.slice(0, 2)).toEqual([keyId, MODEL]);
    expect(first!.slice(3, 8)).toEqual(["0.001", "0.0005", "0.0123", "0.00311", "0.0337"]);
    expect(second!.slice(3, 8)).toEqual(["0.001", "0.0005", "0.0157", "0.0157", "0.0411"]);
    expect(first![2]).not.toBe(second![2]);
    expect([first![8], second![8]]).toEqual(["3", "2"]);
    expect([first![9], first![11], second![9], second![11]]).toEqual(["0", "4", "0", "0"]);
    expect(json.data.map((d) => (d.price as { id: string }).id)).toEqual([first![2], second![2]]);
    expect((json.data[1]!.price as Record<string, unknown>)).toMatchObject({ request: 0.001, prompt_per_1k: 0.0157, completion_per_1k: 0.0411, first_seen: "2026-11-15T00:00:00.000Z" });
  });

  it("recomputes each line's cost from its tokens and price, up to the per-request ceil", () => {
    for (const line of csv.trimEnd().split("\r\n").slice(1)) expectRecomputed(line);
  });
}, 180_000);

/** A CSV line per price's cost is its counts at its price's fields, as usage-reports.md says an auditor recomputes it, up to the per-request ceil. */
function expectRecomputed(line: string): void {
  const c = line.split(",");
  const [request, batchRequest, prompt, cached, completion] = c.slice(3, 8).map(micro);
  const [requests, batches, promptTokens, cachedTokens, completionTokens] = [c[8], c[9], c[10], c[11], c[12]].map((v) => BigInt(v!));
  // µc × 1000: the requests' prices, then each token at its price per 1,000.
  const exact = ((requests! - batches!) * request! + batches! * batchRequest!) * 1000n + (promptTokens! - cachedTokens!) * prompt! + cachedTokens! * cached! + completionTokens! * completion!;
  const charged = micro(c[14]!) * 1000n;
  expect(charged >= exact, line).toBe(true);
  expect(charged - exact < 2n * requests! * 1000n, line).toBe(true);
}

/** A usage row as an older shim (before prices were recorded) writes it, with the columns it names, into a database the new one opened (as after a rollback): it names no price. */
async function asAnOlderShimWritesIt(databaseUrl: string, keyId: string, at: number): Promise<void> {
  const sql = "INSERT INTO ledger (key_id, at, amount, kind, ref, route, model, status, prompt_tokens, completion_tokens, stream, ms, served) VALUES ($1, $2, -1234, 'usage', 'older-shim', 'chat', $3, 200, 10, 5, false, 1, true)";
  if (databaseUrl.startsWith("sqlite:")) {
    const Database = (await import("better-sqlite3")).default;
    const raw = new Database(databaseUrl.slice("sqlite:".length));
    raw.prepare(sql.replace(/\$\d/g, "?").replace("false, 1, true", "0, 1, 1")).run(keyId, at, MODEL);
    raw.close();
    return;
  }
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  await client.query(sql, [keyId, at, MODEL]);
  await client.end();
}

/**
 * What each field of a price does to the lines: batch requests (`?batch=1`) are counted and
 * recompute at the batch price; a change of any one price (batch, request, cached prompt) is a
 * line of its own; going back to an earlier price is that price's line again, which keeps when
 * it was first seen; an unpriced model's line has no token prices; rows without a price (an
 * older shim's) come first.
 */
describe.each(stores)("lines per price, price by price (%s store)", (_name, database) => {
  const EMBED = "bge-m3"; // listed, not priced: charged the request price alone
  const p1 = { request: 0.001, batchRequest: 0.0004, models: { [MODEL]: { promptPer1k: 0.0123, completionPer1k: 0.0337, cachedPromptPer1k: 0.00311 } } };
  const p2 = { ...p1, batchRequest: 0.0006 };
  const p3 = { ...p1, request: 0.002 };
  const p4 = { ...p1, models: { [MODEL]: { ...p1.models[MODEL], cachedPromptPer1k: 0.005 } } };
  const env = fakeAndDatabase(database);
  let lines: string[][];
  let json: { data: Record<string, unknown>[] };
  let csvLines: string[];
  beforeAll(async () => {
    const { fake, db } = env;
    let shim = await startShimOn(db.url, p1, Date.UTC(2026, 10, 3), fake.url, [MODEL, EMBED]);
    const created = (await (await admin(shim, "/admin/keys", { method: "POST", body: JSON.stringify({ name: "audited", credits: 50 }) })).json()) as { id: string; key: string };
    const client = (s: Shim) => new OpenAI({ apiKey: created.key, baseURL: `${s.url}/v1`, maxRetries: 0 });
    const chat = (s: Shim, content: string, batch = false) =>
      client(s).chat.completions.create({ model: MODEL, messages: [{ role: "user", content }], max_tokens: 7 }, batch ? { query: { batch: 1 } } : {});
    const restart = async (pricing: object, day: number) => {
      await shim.close();
      shim = await startShimOn(db.url, pricing, Date.UTC(2026, 10, day), fake.url, [MODEL, EMBED]);
    };
    await shim.close();
    await asAnOlderShimWritesIt(db.url, created.id, Date.UTC(2026, 10, 3));
    shim = await startShimOn(db.url, p1, Date.UTC(2026, 10, 3), fake.url, [MODEL, EMBED]);
    await chat(shim, "a standard request");
    await chat(shim, "a batch request", true);
    await chat(shim, "another batch request, longer", true);
    fake.behaviour.cachedTokens = 10_000; // the whole prompt read from the cache (the fake reports no more than the prompt)
    await chat(shim, "read from the cache");
    fake.behaviour.cachedTokens = null;
    await client(shim).embeddings.create({ model: EMBED, input: "an unpriced model's request" });
    await restart(p2, 10);
    await chat(shim, "at a new batch price", true);
    await restart(p3, 12);
    await chat(shim, "at a new request price");
    await restart(p4, 14);
    fake.behaviour.cachedTokens = 4;
    await chat(shim, "at a new cached price, partly cached");
    fake.behaviour.cachedTokens = null;
    await restart(p1, 20); // back to the first prices
    await chat(shim, "a batch request at the first prices again", true);
    let csv: string;
    ({ csv, json } = await novemberByPrice(shim));
    csvLines = csv.trimEnd().split("\r\n").slice(1);
    lines = csvLines.map((l) => l.split(","));
  }, 120_000);

  it("has a line per price, rows without one first, then by when each price was first seen (a price seen again keeps its place)", () => {
    expect(lines.map((c) => [c[1], c.slice(3, 8).join(" "), c[8], c[9]])).toEqual([
      [EMBED, "0.001 0.0004 0 0 0", "1", "0"],
      [MODEL, "    ", "1", ""],
      [MODEL, "0.001 0.0004 0.0123 0.00311 0.0337", "5", "3"],
      [MODEL, "0.001 0.0006 0.0123 0.00311 0.0337", "1", "1"],
      [MODEL, "0.002 0.0004 0.0123 0.00311 0.0337", "1", "0"],
      [MODEL, "0.001 0.0004 0.0123 0.005 0.0337", "1", "0"],
    ]);
    expect(new Set(lines.slice(1).map((c) => c[2])).size).toBe(5);
    expect(json.data.map((d) => [d.batch_requests, (d.price as { first_seen: string } | null)?.first_seen ?? null])).toEqual([
      [0, "2026-11-03T00:00:00.000Z"], [null, null], [3, "2026-11-03T00:00:00.000Z"], [1, "2026-11-10T00:00:00.000Z"], [0, "2026-11-12T00:00:00.000Z"], [0, "2026-11-14T00:00:00.000Z"],
    ]);
  });

  it("recomputes every priced line, batch requests at the batch price, a wholly cached prompt at the cached price", () => {
    for (const line of csvLines.filter((l) => l.split(",")[2] !== "")) expectRecomputed(line);
    const first = lines[2]!;
    expect(Number(first[11])).toBeGreaterThan(0);
  });
}, 180_000);

describe("rows written before prices were recorded", () => {
  it("are a line of their own, their price unknown (empty), never guessed", async () => {
    const dir = mkdtempSync(join(tmpdir(), "price-old-"));
    const file = join(dir, "shim.db");
    // A ledger row as a shim before this change wrote it: no price_id, batch, cached_tokens.
    const old = new SqliteStore(file);
    await old.createKey({ id: "oldkey000001", name: "old", hash: "h", tier: "default", models: null, expiresAt: null, credits: 1_000_000, at: Date.UTC(2026, 10, 2) });
    await old.close();
    const Database = (await import("better-sqlite3")).default;
    const raw = new Database(file);
    raw.prepare("INSERT INTO ledger (key_id, at, amount, kind, ref, route, model, status, prompt_tokens, completion_tokens, stream, ms, served) VALUES ('oldkey000001', ?, -1234, 'usage', 'r1', 'chat', ?, 200, 10, 5, 0, 1, 1)").run(Date.UTC(2026, 10, 2), MODEL);
    raw.close();
    const fake = await new FakeVllm(DEFAULT_FAKE).start();
    const shim = await startShimOn(`sqlite:${file}`, before, Date.UTC(2026, 10, 3), fake.url);
    try {
      const csv = await (await admin(shim, "/admin/usage?group=model,price&format=csv&from=2026-11-01&to=2026-11-30")).text();
      expect(csv.split("\r\n")[1]).toBe(`oldkey000001,${MODEL},,,,,,,1,,10,,5,15,0.001234`);
      const json = (await (await admin(shim, "/admin/usage?group=model,price&from=2026-11-01&to=2026-11-30")).json()) as { data: object[] };
      expect(json.data[0]).toMatchObject({ price: null, batch_requests: null, cached_tokens: null, cost: 0.001234 });
    } finally {
      await shim.close();
      await fake.close();
    }
  });
});
