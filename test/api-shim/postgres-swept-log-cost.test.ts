import { afterAll, afterEach, beforeAll, beforeEach, expect, it } from "vitest";
import { PostgresStore, type PostgresStoreOptions } from "../../api-shim/src/store/postgres-store.ts";
import { type Harness, startShim } from "../support/shim-harness.ts";
import { type RunningPostgres, sqlOn, startPostgres } from "../support/postgres.ts";
import { pollUntil } from "../support/tools.ts";

// Pinned by a mutation review (the code was right; no test held it): a request whose hold
// was swept and that the balance no longer covers is charged 0; its request log line must say 0,
// as the ledger, the client and the metric do, not the cost it could not charge.
let server: RunningPostgres;
let url: string;
const open: PostgresStore[] = [];
const replica = async (o: PostgresStoreOptions = {}) => { const s = await PostgresStore.open(url, o); open.push(s); return s; };
let s: PostgresStore;
let shim: Harness;
beforeAll(async () => { server = await startPostgres(); }, 60_000);
afterAll(() => server?.stop());
beforeEach(async () => {
  url = await server.newDatabase();
  s = await replica({ retryMs: 1500 });
  await replica({ sweepIntervalMs: 50, sweepGraceMs: 100 });
  shim = await startShim({ wrapStore: () => s });
  shim.fake.set({ headerDelayMs: 3000 });
});
afterEach(async () => { await shim.close(); await Promise.all(open.splice(0).map((x) => x.close())); });

it("the request line of a swept request charged 0 says cost 0", async () => {
  const key = await shim.createKey({ name: "k", credits: 1 });
  const chat = () => shim.post(key.key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 4 });
  const held = async () => (await s.getKey(key.id))!.held;
  const first = chat();
  expect(await pollUntil(async () => (await held()) > 0)).toBe(true);
  const before = s.owner;
  await sqlOn(url, "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND objid = $1::bigint::oid", [before]);
  expect(await pollUntil(async () => s.owner !== before && (await held()) === 0)).toBe(true);
  const second = chat();
  expect(await pollUntil(async () => (await held()) > 0)).toBe(true);
  const charged = await Promise.all([first, second].map(async (r) => ((await (await r).json()) as { id: string; credits_charged: number }).credits_charged));
  expect(charged).toEqual([0, 1]);
  const lines = shim.logs.map((l) => { try { return JSON.parse(l); } catch { return null; } }).filter((l) => l && l.msg === "request" && l.path === "/v1/chat/completions" && typeof l.cost === "number");
  expect(lines.map((l) => l.cost).sort()).toEqual([0, 1]);
});
