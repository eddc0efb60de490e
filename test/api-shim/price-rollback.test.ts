import { execFileSync } from "node:child_process";
import { realpathSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { FakeVllm } from "../support/fake-vllm.ts";
import { type RunningPostgres, startPostgres } from "../support/postgres.ts";
import { type ShimProcess, spawnShim } from "../support/shim-process.ts";
import { tempDir } from "../support/tools.ts";

/**
 * A rollback across the price record, run for real: the shim of before it (BEFORE_PRICES, whole,
 * as a process) on a database this shim opened, then this shim again. The old one starts, serves,
 * charges and reports; its rows are this shim's "price unknown" line; the lines per price add up
 * to the model's line and to what the ledger says the key spent. Both stores.
 */
const BEFORE_PRICES = "516a98a";
const MODEL = "qwen2.5-7b";
const ADMIN = "admin-price-rollback-token-0123456789";
const repo = fileURLToPath(new URL("../..", import.meta.url));

/** BEFORE_PRICES's api-shim, from the repository's history, with this checkout's dependencies. */
function olderShimDir(): string {
  const dir = tempDir("gpu-sandbox-before-prices-");
  let archive: Buffer;
  try {
    archive = execFileSync("git", ["archive", BEFORE_PRICES, "api-shim"], { cwd: repo, maxBuffer: 64 * 1024 * 1024, stdio: ["ignore", "pipe", "pipe"] });
  } catch (e) {
    throw new Error(`this test needs commit ${BEFORE_PRICES} in this clone's history (git fetch --unshallow): ${(e as Error).message}`);
  }
  execFileSync("tar", ["-x", "-C", dir], { input: archive });
  symlinkSync(realpathSync(join(repo, "node_modules")), join(dir, "node_modules"));
  symlinkSync(realpathSync(join(repo, "api-shim", "node_modules")), join(dir, "api-shim", "node_modules"));
  return join(dir, "api-shim");
}

const stores: [string, () => Promise<{ url: string; stop(): Promise<void> }>][] = [
  ["SQLite", async () => ({ url: `sqlite:${join(tempDir("price-rollback-"), "shim.db")}`, stop: async () => {} })],
  ["Postgres", async () => {
    const server: RunningPostgres = await startPostgres();
    return { url: await server.newDatabase(), stop: () => server.stop() };
  }],
];

describe.each(stores)("a rollback to the shim before prices were recorded (%s store)", (_name, database) => {
  let fake: FakeVllm;
  let db: { url: string; stop(): Promise<void> };
  let env: Record<string, string>;
  let old: string;
  const running: ShimProcess[] = [];
  const start = async (appDir?: string) => {
    const p = await spawnShim(env, [], undefined, appDir);
    running.push(p);
    return p;
  };
  const stop = async (p: ShimProcess) => {
    p.child.kill("SIGTERM");
    await p.closed;
  };
  const admin = (p: ShimProcess, path: string, init: RequestInit = {}) => fetch(p.url + path, { ...init, headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" } });
  const chat = (p: ShimProcess, key: string, batch: boolean) =>
    new OpenAI({ apiKey: key, baseURL: `${p.url}/v1`, maxRetries: 0 }).chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "what does this cost?" }], max_tokens: 7 }, batch ? { query: { batch: 1 } } : {});

  beforeAll(async () => {
    old = olderShimDir();
    fake = await new FakeVllm({ models: [{ name: MODEL, root: "Qwen/Qwen2.5-7B-Instruct", maxModelLen: 8192 }] }).start();
    db = await database();
    const dir = tempDir("price-rollback-config-");
    writeFileSync(join(dir, "shim.yaml"), stringify({ models: [{ name: MODEL, maxModelLen: 8192 }], pricing: { request: 0.001, batchRequest: 0.0004, models: { [MODEL]: { promptPer1k: 0.0123, completionPer1k: 0.0337 } } } }));
    env = { SHIM_UPSTREAM_URL: fake.url, SHIM_CONFIG: join(dir, "shim.yaml"), SHIM_DATABASE_URL: db.url, SHIM_ADMIN_TOKEN: ADMIN };
  }, 120_000);
  afterAll(async () => {
    for (const p of running) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
    await fake?.close();
    await db?.stop();
  });

  it("the older shim serves, charges and reports on it; its rows are the unknown price; the lines add up to the model's and the ledger's", async () => {
    let shim = await start();
    const created = (await (await admin(shim, "/admin/keys", { method: "POST", body: JSON.stringify({ name: "rolled back", credits: 50 }) })).json()) as { id: string; key: string };
    await chat(shim, created.key, false);
    await chat(shim, created.key, true);
    await stop(shim);

    shim = await start(old);
    const charged = await chat(shim, created.key, true);
    expect((charged as unknown as { credits_charged?: string }).credits_charged ?? "").not.toBe("");
    await chat(shim, created.key, false);
    const oldReport = (await (await admin(shim, "/admin/usage?group=model")).json()) as { data: { requests: number; cost: number }[] };
    expect(oldReport.data.map((d) => d.requests)).toEqual([4]);
    await stop(shim);

    shim = await start();
    const byPrice = (await (await admin(shim, "/admin/usage?group=model,price")).json()) as { data: { price: { id: string } | null; requests: number; batch_requests: number | null; cost: number }[] };
    const byModel = (await (await admin(shim, "/admin/usage?group=model")).json()) as { data: { requests: number; cost: number }[] };
    const key = (await (await admin(shim, "/admin/keys")).json()) as { data: { id: string; balance: number }[] };
    await stop(shim);
    expect(byPrice.data.map((d) => [d.price === null, d.requests, d.batch_requests])).toEqual([[true, 2, null], [false, 2, 1]]);
    const micro = (credits: number) => Math.round(credits * 1_000_000);
    const sum = byPrice.data.reduce((s, d) => s + micro(d.cost), 0);
    expect(sum).toBe(micro(byModel.data[0]!.cost));
    expect(byModel.data[0]!.cost).toBe(oldReport.data[0]!.cost); // nothing was charged since the older shim's report
    expect(sum).toBe(50_000_000 - micro(key.data.find((k) => k.id === created.id)!.balance));
  });
}, 240_000);
