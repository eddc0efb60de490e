import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { APIError } from "openai";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateKey } from "../../api-shim/src/auth/keys.ts";
import { SETTLE } from "../../api-shim/src/store/postgres-sql.ts";
import { PostgresStore } from "../../api-shim/src/store/postgres-store.ts";
import { FakeVllm } from "../support/fake-vllm.ts";
import { frozenProxy } from "../support/frozen-proxy.ts";
import { type RunningPostgres, sqlOn, startPostgres } from "../support/postgres.ts";
import { openStream, releasedAtStart, shimClient, ShimProcesses, type ShimStartError, writeProcessConfig } from "../support/shim-process.ts";
import { pollUntil } from "../support/tools.ts";

const CREDIT = 1_000_000;

/**
 * Several shim replicas (real `node api-shim/src/server.ts` processes) sharing one PostgreSQL
 * database, as `SHIM_DATABASE_URL=postgres://…` is for: the budget holds across replicas, and a
 * replica killed mid-stream leaves nothing held once a replacement starts, while the streams of
 * the replicas that live on are charged exactly.
 */
describe("shim replicas on one Postgres database", () => {
  let pgServer: RunningPostgres;
  let dir: string;
  let fake: FakeVllm;
  let env: Record<string, string>;
  const key = generateKey();
  const adminToken = `adm-${generateKey().key}`;
  const secrets = [key.key, adminToken];
  const output = new ShimProcesses(() => secrets);
  const start = () => output.start(env);
  const audit = async (keyId: string) => {
    const store = await PostgresStore.open(env.SHIM_DATABASE_URL!);
    try {
      return (await store.audit()).find((r) => r.keyId === keyId)!;
    } finally {
      await store.close();
    }
  };

  const pgSql = async (text: string, url = env.SHIM_DATABASE_URL!) => void (await sqlOn(url, text));

  beforeAll(async () => {
    pgServer = await startPostgres();
    dir = mkdtempSync(join(tmpdir(), "shim-replicas-"));
    fake = await new FakeVllm({ models: [{ name: "qwen2.5-7b" }, { name: "bge-m3" }] }).start();
    const config = writeProcessConfig(dir, key, [{ name: "qwen2.5-7b", maxModelLen: 4096 }, { name: "bge-m3", maxModelLen: 8192 }]);
    env = { SHIM_UPSTREAM_URL: fake.url, SHIM_DATABASE_URL: await pgServer.newDatabase(), SHIM_CONFIG: config, SHIM_ADMIN_TOKEN: adminToken };
  }, 60_000);
  afterAll(async () => {
    try {
      await output.killAll();
    } finally {
      await fake?.close();
      await pgServer?.stop();
      if (dir) rmSync(dir, { recursive: true, force: true });
    }
  });

  it("two replicas started together: one bootstrap grant; 200 concurrent requests over both against credits for 50 admit exactly 50 (×5)", async () => {
    const [a, b] = await Promise.all([start(), start()]);
    const grants = [a, b].flatMap((p) => p.lines.map((l) => JSON.parse(l) as { msg: string; granted?: boolean })).filter((e) => e.msg === "bootstrap key");
    expect(grants.map((e) => e.granted).sort()).toEqual([false, true]);
    fake.set({ headerDelayMs: 20 }); // admitted requests hold their credits while the rest arrive
    for (let round = 0; round < 5; round++) {
      const res = await fetch(`${a.url}/admin/keys`, {
        method: "POST",
        headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" },
        body: JSON.stringify({ name: `round-${round}`, credits: 50, tier: "enterprise" }),
      });
      expect(res.status).toBe(201);
      const created = (await res.json()) as { id: string; key: string };
      secrets.push(created.key);
      const clients = [a, b].map((p) => shimClient(p, created.key));
      const received = fake.counters.received;
      const results = await Promise.allSettled(
        Array.from({ length: 200 }, (_, i) => clients[i % 2]!.embeddings.create({ model: "bge-m3", input: "one two three" })),
      );
      const rejected = results.flatMap((r) => (r.status === "rejected" ? [r.reason as unknown] : []));
      expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(50);
      for (const e of rejected) {
        expect(e).toBeInstanceOf(APIError);
        expect((e as APIError).status).toBe(402);
        expect((e as APIError).code).toBe("insufficient_credits");
      }
      expect(fake.counters.received - received).toBe(50);
      expect(await audit(created.id)).toEqual({ keyId: created.id, balance: 0, held: 0, ledgerSum: 0, reservations: 0, reservedSum: 0 });
    }
    fake.reset();
    await Promise.all([output.stopCleanly(a), output.stopCleanly(b)]);
  });

  // A replica's holds are released once it has been without its liveness lock for the sweeps'
  // grace (30 s; it may be taking its lock back): the replacement releases them 30 s after its start.
  it("SIGKILL of one replica during its 25 live streams: its replacement releases exactly those, 30 s after its start; the other replica's 25 are charged exactly", { timeout: 90_000 }, async () => {
    fake.set({ tokenDelayMs: 50, defaultTokens: 2000 });
    const [doomed, survivor] = await Promise.all([start(), start()]);
    const before = await audit(key.id);
    const doomedStreams = await Promise.all(Array.from({ length: 25 }, () => openStream(doomed, key.key, 2000)));
    const survivorStreams = await Promise.all(Array.from({ length: 25 }, () => openStream(survivor, key.key, 40)));
    expect((await audit(key.id)).reservations).toBe(50);

    doomed.child.kill("SIGKILL");
    expect((await doomed.exited).signal).toBe("SIGKILL");
    output.keep(doomed);
    await Promise.allSettled(doomedStreams.map(async (it) => { for (let r = await it.next(); !r.done; r = await it.next()); }));
    const replacement = await start();
    const started = Date.now();
    // Its start released none of them (its line comes before it listens, and only when it releases some): they are a replica's within its grace.
    expect(releasedAtStart(replacement)).toBe(0);
    const released = await replacement.waitForLine((e) => String(e.msg).startsWith("released credit holds whose replica lost its liveness lock"), 45_000);
    expect(released.released).toBe(25); // the dead replica's holds, not the survivor's live ones
    expect(Date.now() - started).toBeGreaterThan(25_000);

    // The survivor's streams run to the end and are charged what they generated: 1 credit + 40 tokens.
    let tokens = 0;
    for (const it of survivorStreams) for (let r = await it.next(); !r.done; r = await it.next()) if (r.value.choices[0]?.delta.content) tokens++;
    expect(tokens).toBe(25 * 39); // the first token was read when the stream was opened
    const after = await audit(key.id);
    expect(after).toEqual({ keyId: key.id, balance: before.balance - 25 * 41 * CREDIT, held: 0, ledgerSum: after.balance, reservations: 0, reservedSum: 0 });
    fake.reset();
    await Promise.all([output.stopCleanly(survivor), output.stopCleanly(replacement)]);
  });
  it("token counts past what Postgres's columns hold (an upstream's nonsense, or a sum over outputs) are stored clamped, and the request charged", async () => {
    const p = await start();
    const client = shimClient(p, key.key);
    fake.set({ templateTokens: 3_000_000_000 });
    try {
      const before = await audit(key.id);
      const answer = await client.chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 2 });
      expect(answer.usage!.prompt_tokens).toBeGreaterThan(2 ** 31);
      const stream = await client.chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 2, n: 2, stream: true });
      for await (const _ of stream);
      const after = await audit(key.id);
      expect(after).toMatchObject({ held: 0, reservations: 0, ledgerSum: after.balance });
      expect(after.balance).toBeLessThan(before.balance); // both charged
      const store = await PostgresStore.open(env.SHIM_DATABASE_URL!);
      try {
        const rows = await store.usage({ keyId: key.id, asker: key.id, from: 0, to: Date.now() + 86_400_000, group: "model" });
        expect(rows.find((r) => r.group === "qwen2.5-7b")!.promptTokens).toBeGreaterThanOrEqual(2 * (2 ** 31 - 1));
      } finally {
        await store.close();
      }
    } finally {
      fake.reset();
    }
    await output.stopCleanly(p);
  });

  it("a stream whose settlement's server session is terminated (pg_terminate_backend) while it waits for the key's row is charged and recorded all the same: no error event after its content", async () => {
    const p = await start();
    fake.set({ tokenDelayMs: 50, defaultTokens: 40 });
    const blocker = new pg.Client({ connectionString: env.SHIM_DATABASE_URL });
    // Its own session: pg_stat_activity is read once per transaction, and the blocker's stays open.
    const watcher = new pg.Client({ connectionString: env.SHIM_DATABASE_URL });
    await Promise.all([blocker.connect(), watcher.connect()]);
    try {
      const before = await audit(key.id);
      const res = await fetch(`${p.url}/v1/chat/completions`, {
        method: "POST", headers: { authorization: `Bearer ${key.key}`, "content-type": "application/json" },
        body: JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "go" }], max_tokens: 40, stream: true }),
      });
      expect(res.status).toBe(200);
      const text = res.text();
      // Its hold made, the key's row is taken (about 2 s before the stream ends): the
      // settlement at its end waits for it, and its session is terminated there.
      expect(await pollUntil(async () => (await watcher.query("SELECT 1 FROM reservations WHERE key_id = $1", [key.id])).rowCount === 1, 5000)).toBe(true);
      await blocker.query("BEGIN");
      await blocker.query("SELECT 1 FROM keys WHERE id = $1 FOR UPDATE", [key.id]);
      // The settlement's statement (the replica's background index build waits for the blocker's transaction too).
      const waiting = async () => (await watcher.query<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE application_name = 'api-shim' AND wait_event_type = 'Lock' AND query = $1", [SETTLE])).rows;
      let first: { pid: number }[] = [];
      expect(await pollUntil(async () => (first = await waiting()).length === 1, 10_000)).toBe(true);
      await watcher.query("SELECT pg_terminate_backend($1)", [first[0]!.pid]);
      expect(await pollUntil(async () => { const w = await waiting(); return w.length === 1 && w[0]!.pid !== first[0]!.pid; }, 5000)).toBe(true);
      await blocker.query("ROLLBACK");
      const body = await text;
      const charged = /^: credits_charged=(\d+) credits_remaining=\d+\n\ndata: \[DONE\]\n\n$/m.exec(body);
      expect(charged).not.toBeNull();
      expect(body).not.toContain("service_unavailable");
      const after = await audit(key.id);
      expect(after).toEqual({ keyId: key.id, balance: before.balance - Number(charged![1]) * CREDIT, held: 0, ledgerSum: after.balance, reservations: 0, reservedSum: 0 });
      expect(Number(charged![1])).toBeGreaterThan(0);
    } finally {
      fake.reset();
      await Promise.all([blocker.end(), watcher.end()]);
    }
    await output.stopCleanly(p);
  });

  it("the database goes down and comes back: 503 and /ready 503 meanwhile, the same processes serve again after, nothing left held", async () => {
    const p = await start();
    const client = shimClient(p, key.key);
    const chat = () => client.chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 2 });
    await chat();
    // The kill is a crash, and the shim's request writes commit asynchronously: without this the
    // crash could lose the chat's settlement while its hold survived, and that hold is released
    // only by the sweep, 30 s later (docs/api-shim/replicas.md, Durability). That trade is documented; this
    // test is about recovery.
    await pgSql("CHECKPOINT");
    pgServer.kill();
    try {
      const e = await chat().then(() => null, (err: unknown) => err);
      expect(e).toBeInstanceOf(APIError);
      expect(e).toMatchObject({ status: 503, error: { type: "api_error", code: "service_unavailable" } });
      const ready = await fetch(`${p.url}/ready`);
      expect(ready.status).toBe(503);
      expect(await ready.json()).toMatchObject({ status: "not_ready", store: "unavailable" });
    } finally {
      pgServer.start();
    }
    await pollUntil(async () => (await fetch(`${p.url}/ready`)).status === 200, 15_000, 100);
    expect((await chat()).choices[0]!.message.content).toBe("t1 t2");
    expect(p.child.exitCode).toBeNull(); // recovered in place: no restart needed
    const after = await audit(key.id);
    expect(after).toMatchObject({ held: 0, reservations: 0, ledgerSum: after.balance });
    await output.stopCleanly(p);
  });

  it("holds a running replica's sweep releases (a replica gone for good) are logged and counted in shim_stale_reservations_released_total", { timeout: 90_000 }, async () => {
    const p = await start();
    const dead = await PostgresStore.open(env.SHIM_DATABASE_URL!);
    await dead.reserve({ reservationId: "dead-1", keyId: key.id, amount: CREDIT, at: Date.now() });
    await dead.reserve({ reservationId: "dead-2", keyId: key.id, amount: CREDIT, at: Date.now() });
    await dead.close(); // its liveness lock goes, as when its process dies
    // The next sweep is up to a minute away; cutting p's liveness session makes it take its lock
    // back and sweep at once, which sees the dead replica without its lock and releases its holds
    // when the grace (30 s) is over.
    await pgSql("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2");
    const line = await p.waitForLine((e) => String(e.msg).startsWith("released credit holds whose replica lost its liveness lock"), 45_000);
    expect(line.released).toBe(2);
    expect(line.level).toBe(40); // a warning, as at a start: an operator filtering at warn sees that a replica died holding credits
    const metrics = await (await fetch(`${p.url}/metrics`)).text();
    expect(metrics).toMatch(/^shim_stale_reservations_released_total 2$/m);
    expect(await audit(key.id)).toMatchObject({ held: 0, reservations: 0 });
    await output.stopCleanly(p);
  });

  it("a database that takes no writes: a replica serving on it says so and is not ready until it takes writes again; one starting on it exits saying so", async () => {
    const p = await start();
    const client = shimClient(p, key.key);
    const chat = () => client.chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 2 });
    await chat();
    const writable = `${env.SHIM_DATABASE_URL}?options=-c%20default_transaction_read_only%3Doff`;
    await pgSql("ALTER SYSTEM SET default_transaction_read_only = on");
    await pgSql("SELECT pg_reload_conf()");
    try {
      expect(await pollUntil(async () => (await fetch(`${p.url}/ready`)).status === 503)).toBe(true);
      expect(await chat().then(() => null, (e: unknown) => e)).toMatchObject({ status: 503 });
      expect(await p.waitForLine((e) => String(e.msg).startsWith("the database is read-only"))).toMatchObject({ level: 50 });
      const refused = await output.start({ ...env, SHIM_DATABASE_URL: `${env.SHIM_DATABASE_URL}?options=-c%20default_transaction_read_only%3Don` }).then(() => null, (e: unknown) => e as ShimStartError);
      expect(refused!.exit).toEqual({ code: 1, signal: null });
      expect(refused!.lines.map((l) => JSON.parse(l) as { err?: { message?: string } }).some((e) => /^the database is read-only/.test(e.err?.message ?? ""))).toBe(true);
      output.keep(refused!);
    } finally {
      await pgSql(`ALTER SYSTEM RESET default_transaction_read_only`, writable);
      await pgSql("SELECT pg_reload_conf()", writable);
    }
    expect(await pollUntil(async () => (await fetch(`${p.url}/ready`)).status === 200)).toBe(true);
    expect(await p.waitForLine((e) => e.msg === "the database takes writes again")).toBeDefined();
    expect((await chat()).choices[0]!.message.content).toBe("t1 t2");
    await output.stopCleanly(p);
  });

  it("SIGTERM while the database hangs (a hung server, a silent network cut): the process still exits 0, its store's connections cut", async () => {
    const proxy = await frozenProxy(env.SHIM_DATABASE_URL!);
    try {
      const p = await output.start({ ...env, SHIM_DATABASE_URL: proxy.url, SHIM_DRAIN_TIMEOUT_MS: "1000" });
      expect((await fetch(`${p.url}/v1/models`, { headers: { authorization: `Bearer ${key.key}` } })).status).toBe(200);
      proxy.freeze();
      const signalled = Date.now();
      p.child.kill("SIGTERM");
      // It stopped at "draining", waiting on pg's goodbye, until Compose's SIGKILL 30 s later.
      expect(await p.exited).toEqual({ code: 0, signal: null });
      expect(Date.now() - signalled).toBeLessThan(10_000);
      expect(await p.waitForLine((e) => e.msg === "the database did not answer the store's goodbye in time: its connections were cut")).toMatchObject({ level: 40 });
      output.keep(p);
    } finally {
      await proxy.close();
    }
  });
});
