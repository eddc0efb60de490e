// Usage reports at their edges, on both stores: a period's first millisecond, rows from before `served`, byte order of keys and models across slices; and a SQLite report's reader: its last batch, a report given up, a reader that stalls after a later batch.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { Worker } from "node:worker_threads";
import Database from "better-sqlite3";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { PostgresStore } from "../../api-shim/src/store/postgres-store.ts";
import { SqliteReports } from "../../api-shim/src/store/sqlite-reports.ts";
import { SqliteStore } from "../../api-shim/src/store/sqlite-store.ts";
import { SLICE_ROWS } from "../../api-shim/src/store/sqlite-usage-report.ts";
import type { Store } from "../../api-shim/src/store/store.ts";
import { type RunningPostgres, startPostgres } from "../support/postgres.ts";
import { sqliteLedgerOfGroups } from "../support/usage-ledger.ts";
import { newKey, usage } from "./store-contract.ts";

function reportContract(current: () => Store): void {
  it("a request settled at the period's first millisecond is in that period, one at its end (exclusive) in the next: counted once", async () => {
    const store = current();
    await store.createKey(newKey("k", 10));
    const feb = Date.UTC(2026, 1, 1);
    const charge = async (id: string, at: number) => {
      await store.reserve({ reservationId: id, keyId: "k", amount: 1, at });
      await store.settle({ reservationId: id, keyId: "k", hold: 1, cost: 1, usage: usage("k", `q-${id}`, 1, at) });
    };
    await charge("last-jan", feb - 1);
    await charge("first-feb", feb);
    const jan = { keyId: "k", asker: "k", from: Date.UTC(2026, 0, 1), to: feb, group: "model" } as const;
    const febQ = { ...jan, from: feb, to: Date.UTC(2026, 2, 1) };
    expect((await store.usage(jan)).map((g) => g.requests)).toEqual([1]);
    expect((await store.usage(febQ)).map((g) => g.requests)).toEqual([1]);
    // Over all keys (the operator's), too.
    expect((await store.usage({ ...febQ, keyId: null, asker: null })).map((g) => g.requests)).toEqual([1]);
    expect((await store.usage({ ...jan, keyId: null, asker: null, group: "day" })).map((g) => [g.group, g.requests])).toEqual([["2026-01-31", 1]]);
  });

  it("rows are in byte order of key id then model, as on the other store (an upper-case model before a lower-case one)", async () => {
    const store = current();
    for (const id of ["kb", "kA"]) await store.createKey(newKey(id, 10));
    let n = 0;
    for (const [keyId, model] of [["kb", "qwen"], ["kb", "Qwen"], ["kA", "bge"], ["kb", "_x"]] as const) {
      const id = `r${n++}`;
      await store.reserve({ reservationId: id, keyId, amount: 1, at: 5000 });
      await store.settle({ reservationId: id, keyId, hold: 1, cost: 1, usage: { ...usage(keyId, `q-${id}`, 1, 5000), model } });
    }
    const rows = await store.usage({ keyId: null, asker: null, from: 0, to: 1e12, group: "model" });
    expect(rows.map((g) => `${g.keyId}/${g.group}`)).toEqual(["kA/bge", "kb/Qwen", "kb/_x", "kb/qwen"]);
    // By day and model: the models of a day in the same byte order.
    const byDay = await store.usage({ keyId: null, asker: null, from: 0, to: 1e12, group: "day,model" });
    expect(byDay.map((g) => `${g.keyId}/${g.group}/${g.model}`)).toEqual(["kA/1970-01-01/bge", "kb/1970-01-01/Qwen", "kb/1970-01-01/_x", "kb/1970-01-01/qwen"]);
  });
}

describe("usage reports, SQLite store on a file (the report worker)", () => {
  let dir: string;
  let store: SqliteStore;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "shim-mutreports-"));
    store = new SqliteStore(join(dir, "shim.db"));
  });
  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  reportContract(() => store);

  it("a ledger row from before `served` (NULL) counts when charged or answered (status below 400): not a 400, 404 or 499 charged nothing", async () => {
    await store.createKey(newKey("k", 10));
    const db = new Database(join(dir, "shim.db"));
    const insert = db.prepare("INSERT INTO ledger (key_id, at, amount, kind, ref, route, model, status, prompt_tokens, completion_tokens, stream, ms, served) VALUES ('k', 5000, ?, 'usage', ?, 'chat', 'm', ?, 1, 1, 0, 1, NULL)");
    for (const [amount, status] of [[0, 200], [0, 400], [0, 404], [0, 499], [-2, 502], [0, 503]] as const) insert.run(amount, `legacy-${status}`, status);
    db.close();
    expect(await store.usage({ keyId: "k", asker: "k", from: 0, to: 1e12, group: "model" })).toEqual([{ keyId: "k", group: "m", requests: 2, promptTokens: 2, completionTokens: 2, cost: 2 }]);
  });

  it("rows are by key then model across slices too: a model first seen in a later slice is not listed after one seen earlier (admin-reports.md: rows by key id then model)", async () => {
    await store.createKey(newKey("k", 10));
    const db = new Database(join(dir, "shim.db"));
    const insert = db.prepare("INSERT INTO ledger (key_id, at, amount, kind, ref, route, model, status, prompt_tokens, completion_tokens, stream, ms, served) VALUES ('k', ?, -1, 'usage', ?, 'chat', ?, 200, 1, 1, 0, 1, 1)");
    db.transaction(() => {
      for (let i = 0; i < SLICE_ROWS + 10; i++) insert.run(10_000 + i, `z${i}`, "z-model");
      insert.run(10_000 + SLICE_ROWS + 100, "a0", "a-model");
    })();
    db.close();
    const rows = await store.usage({ keyId: "k", asker: "k", from: 0, to: 1e12, group: "model" });
    expect(rows.map((g) => [g.group, g.requests])).toEqual([["a-model", 1], ["z-model", SLICE_ROWS + 10]]);
    const all = await store.usage({ keyId: null, asker: null, from: 0, to: 1e12, group: "model" });
    expect(all.map((g) => g.group)).toEqual(["a-model", "z-model"]);
    // By day and model: within the day, the model seen only in the later slice comes first too.
    const byDay = await store.usage({ keyId: null, asker: null, from: 0, to: 1e12, group: "day,model" });
    expect(byDay.map((g) => [g.group, g.model, g.requests])).toEqual([["1970-01-01", "a-model", 1], ["1970-01-01", "z-model", SLICE_ROWS + 10]]);
  }, 60_000);
});

describe("usage reports, Postgres store", () => {
  let server: RunningPostgres;
  let store: PostgresStore;
  beforeAll(async () => { server = await startPostgres(); }, 60_000);
  afterAll(() => server?.stop());
  beforeEach(async () => {
    store = await PostgresStore.open(await server.newDatabase());
    await store.usageIndex!.outcome;
  }, 30_000);
  afterEach(() => store.close());
  reportContract(() => store);

  it("a ledger row from before `served` (NULL) counts when charged or answered (status below 400): not a 400, 404 or 499 charged nothing", async () => {
    await store.createKey(newKey("k", 10));
    const pool = (store as unknown as { pool: import("pg").Pool }).pool;
    for (const [amount, status] of [[0, 200], [0, 400], [0, 404], [0, 499], [-2, 502], [0, 503]] as const) {
      await pool.query("INSERT INTO ledger (key_id, at, amount, kind, ref, route, model, status, prompt_tokens, completion_tokens, stream, ms, served) VALUES ('k', 5000, $1, 'usage', $2, 'chat', 'm', $3, 1, 1, false, 1, NULL)", [amount, `legacy-${status}`, status]);
    }
    expect(await store.usage({ keyId: "k", asker: "k", from: 0, to: 1e12, group: "model" })).toEqual([{ keyId: "k", group: "m", requests: 2, promptTokens: 2, completionTokens: 2, cost: 2 }]);
  });
});

describe("a SQLite report whose last batch is read while its reader's bound passes", () => {
  it("is whole once its reader has every row: its end is not a failure (a cut answer) after the last batch came", async () => {
    // The worker answers the further (last) batch after 500 ms; the reader's bound is 300 ms.
    const reports = new SqliteReports("unused.db", { busyTimeoutMs: 1000, timeoutMs: 300, workerUrl: new URL("../support/batched-report-worker.ts", import.meta.url) });
    try {
      const rest = (await reports.batches({ keyId: "keyaaaaaaaaa", asker: "keyaaaaaaaaa", from: 0, to: 1, group: "model" }, async () => {}))[Symbol.asyncIterator]();
      expect((await rest.next()).value).toEqual([expect.objectContaining({ group: "first" })]);
      expect((await rest.next()).value).toEqual([expect.objectContaining({ group: "last" })]);
      expect(await rest.next()).toEqual({ done: true, value: undefined });
    } finally {
      reports.close();
    }
  }, 30_000);
});

describe("a SQLite report given up with rows still to come", () => {
  it("has its worker told to drop the rows it holds for it (a million rows kept for nobody until the next report)", async () => {
    const { dir, file } = await sqliteLedgerOfGroups(12_000, "shim-mutreports-drop-");
    const reports = new SqliteReports(file, { busyTimeoutMs: 1000 });
    try {
      const rest = (await reports.batches({ keyId: null, asker: null, from: 0, to: Date.now() + 86_400_000, group: "model" }, async () => {}))[Symbol.asyncIterator]();
      const worker = (reports as unknown as { worker: Worker }).worker;
      const sent: unknown[] = [];
      const post = worker.postMessage.bind(worker);
      worker.postMessage = (m: unknown) => { sent.push(m); post(m); };
      expect(((await rest.next()).value as unknown[]).length).toBe(10_000);
      await rest.return!();
      await sleep(200);
      expect(sent).toContainEqual({ drop: true });
    } finally {
      reports.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);
});

describe("a SQLite report whose reader stops after a further batch (not its first)", () => {
  it("gives its rows and turn up once its reader's bound has passed since that batch: the reports behind it are not held for ever", async () => {
    const { dir, file } = await sqliteLedgerOfGroups(25_000, "shim-mutreports-stall-");
    const reports = new SqliteReports(file, { busyTimeoutMs: 1000, timeoutMs: 300 });
    try {
      const stalled = (await reports.batches({ keyId: null, asker: null, from: 0, to: Date.now() + 86_400_000, group: "model" }, async () => {}))[Symbol.asyncIterator]();
      expect(((await stalled.next()).value as unknown[]).length).toBe(10_000);
      expect(((await stalled.next()).value as unknown[]).length).toBe(10_000);
      // Its reader takes nothing more (a client that keeps its connection open and reads nothing).
      const next = reports.run({ keyId: null, asker: null, from: 0, to: 1, group: "model" }, async () => {});
      expect(await Promise.race([next.then(() => "ran"), sleep(5000).then(() => "held")])).toBe("ran");
      const late = await stalled.next().catch((e: unknown) => e);
      expect(String((late as Error).cause)).toMatch(/the report's reader took nothing for 300 ms/);
    } finally {
      reports.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);
});
