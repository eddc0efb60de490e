import { writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { stringify } from "yaml";
import { generateKey } from "../../api-shim/src/auth/keys.ts";
import { FakeVllm } from "../support/fake-vllm.ts";
import { releasedAtStart, ShimProcesses, type ShimProcess } from "../support/shim-process.ts";
import { type RunningPostgres, sqlOn, startPostgres } from "../support/postgres.ts";
import { tempDir } from "../support/tools.ts";

// The throwaway Postgres listens on a port of ours when CHAOS_PG_PORT is set (else a free one).
vi.mock("../support/tools.ts", async (orig) => {
  const m = await orig<typeof import("../support/tools.ts")>();
  return { ...m, freePort: process.env.CHAOS_PG_PORT ? async () => Number(process.env.CHAOS_PG_PORT) : m.freePort };
});

/**
 * Randomized crash consistency: rounds of a random mix of client and admin traffic against the
 * shim as a process, SIGKILLed at a random moment, restarted on the same SQLite file, and checked
 * against what the clients were told before the kill. CHAOS_SEED=<n> replays each round's settings
 * (its length, the upstream's delays, how many clients); the clients draw their operations from one
 * generator in the order they get to it, so which ones run depends on timing too. CHAOS_ROUNDS
 * sets the number of rounds.
 */
const SEED = Number(process.env.CHAOS_SEED ?? Date.now() % 1_000_000);
const SQLITE_ROUNDS = Number(process.env.CHAOS_ROUNDS ?? 15);
/** Fewer for Postgres: its starts are slower, and the end waits for the 30 s sweep grace. */
const PG_ROUNDS = Number(process.env.CHAOS_PG_ROUNDS ?? 6);
const SHIM_PORT = Number(process.env.CHAOS_SHIM_PORT ?? 0);
const FAKE_PORT = Number(process.env.CHAOS_FAKE_PORT ?? 0);
const MICRO = 1_000_000;

function mulberry32(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** "1.0016" credits → µc, exactly (no float). */
function micro(credits: string): number {
  const [whole, frac = ""] = credits.trim().split(".");
  return Number(whole) * MICRO + Number((frac + "000000").slice(0, 6)) * (credits.trim().startsWith("-") ? -1 : 1);
}

interface Key { id: string; key: string; revokeTried: boolean; revokeAcked: boolean; lastPatch?: { body: Record<string, unknown>; acked: boolean }; bootstrap?: boolean }
interface TopUp { keyId: string; idem: string; amount: number; acked: boolean; body?: string; round: number }
interface Answer { keyId: string; requestId: string; charged: number; route: string; stream: boolean; round: number }

const STORES = (process.env.CHAOS_STORES ?? "sqlite,postgres").split(",") as ("sqlite" | "postgres")[];

describe.each(STORES)("crash chaos (%s)", (storeKind) => {
  const ROUNDS = storeKind === "sqlite" ? SQLITE_ROUNDS : PG_ROUNDS;
  const boot = generateKey();
  const adminToken = `adm-${generateKey().key}`;
  const keys: Key[] = [];
  const output = new ShimProcesses(() => [adminToken, ...keys.map((k) => k.key)]);
  let dir = "";
  let db = "";
  let pgServer: RunningPostgres | undefined;
  let pgUrl = "";
  let fake: FakeVllm;
  let env: Record<string, string> = {};
  const topUps: TopUp[] = [];
  const answers: Answer[] = [];
  const findings: string[] = [];
  const starts: number[] = [];
  const released: number[] = [];

  beforeAll(async () => {
    dir = tempDir("shim-chaos-");
    db = join(dir, "shim.db");
    fake = await new FakeVllm({ models: [{ name: "qwen2.5-7b" }, { name: "bge-m3" }] }).start(FAKE_PORT);
    const config = join(dir, "shim.yaml");
    writeFileSync(config, stringify({
      pricing: { models: { "qwen2.5-7b": { promptPer1k: 0, completionPer1k: 1000 }, "bge-m3": { promptPer1k: 1000, completionPer1k: 0 } } },
      models: [{ name: "qwen2.5-7b", maxModelLen: 4096 }, { name: "bge-m3", maxModelLen: 4096 }],
      bootstrapKeys: [{ id: boot.id, name: "app", hash: boot.hash, credits: 1_000_000, tier: "enterprise" }],
    }));
    if (storeKind === "postgres") {
      pgServer = await startPostgres();
      pgUrl = await pgServer.newDatabase();
    }
    env = { SHIM_UPSTREAM_URL: fake.url, SHIM_DATABASE_URL: storeKind === "sqlite" ? `sqlite:${db}` : pgUrl, SHIM_CONFIG: config, SHIM_ADMIN_TOKEN: adminToken, SHIM_PORT: String(SHIM_PORT) };
    keys.push({ id: boot.id, key: boot.key, revokeTried: false, revokeAcked: false, bootstrap: true });
  });
  afterAll(async () => {
    try {
      await output.killAll();
    } finally {
      await fake?.close();
      await pgServer?.stop();
    }
  });

  /** The store's database, read on a connection of its own (SQLite: read-only; WAL mode: a reader sees every committed write). `?` placeholders. Numbers as numbers. */
  const sql = async <T>(text: string, ...args: unknown[]): Promise<T[]> => {
    if (storeKind === "postgres") {
      let n = 0;
      const rows = await sqlOn(pgUrl, text.replace(/\?/g, () => `$${++n}`), args);
      return rows.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, typeof v === "string" && /^-?\d+$/.test(v) && k !== "id" && k !== "key_id" ? Number(v) : v]))) as T[];
    }
    const d = new Database(db, { readonly: true, fileMustExist: true });
    try {
      return d.prepare(text).all(...args) as T[];
    } finally {
      d.close();
    }
  };
  const AUDIT = {
    sqlite: "SELECT k.id, k.balance, k.held, k.holds, coalesce((SELECT sum(amount) FROM ledger l WHERE l.key_id = k.id), 0) AS total FROM keys k",
    postgres: "SELECT k.id, k.balance, k.held, (SELECT count(*) FROM reservations r WHERE r.key_id = k.id) AS holds, coalesce((SELECT sum(amount) FROM reservations r WHERE r.key_id = k.id), 0) AS reserved, coalesce((SELECT sum(amount) FROM ledger l WHERE l.key_id = k.id), 0) AS total FROM keys k",
  };

  const start = async () => {
    const t0 = performance.now();
    const p = await output.start(env);
    starts.push(Math.round(performance.now() - t0));
    return p;
  };

  it(`${ROUNDS} rounds of random traffic, each ended by SIGKILL (seed ${SEED})`, async () => {
    let p: ShimProcess = await start();
    const admin = (path: string, init: RequestInit = {}) => fetch(p.url + path, { ...init, headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json", ...(init.headers as Record<string, string>) } });

    for (let round = 0; round < ROUNDS; round++) {
      const rnd = mulberry32(SEED * 1000 + round);
      const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
      const seq: string[] = [];
      fake.set({ tokenDelayMs: 2 + Math.floor(rnd() * 20), headerDelayMs: Math.floor(rnd() * 30), defaultTokens: 4 + Math.floor(rnd() * 40) });
      const durationMs = 200 + Math.floor(rnd() * 2800);
      let killed = false;
      const roundTopUps: TopUp[] = [];
      /** A finding made before the kill (what the kill cut is none). */
      const note = (m: string) => void (killed || findings.push(m));

      const usable = () => keys.filter((k) => !k.revokeTried);
      const chat = async (k: Key, stream: boolean, leave: boolean) => {
        const maxTokens = 1 + Math.floor(rnd() * 40);
        const ac = new AbortController();
        const res = await fetch(`${p.url}/v1/chat/completions`, { method: "POST", signal: ac.signal, headers: { authorization: `Bearer ${k.key}`, "content-type": "application/json" }, body: JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: maxTokens, stream }) });
        const requestId = res.headers.get("x-request-id") ?? "";
        if (res.status >= 500) note(`round ${round}: chat ${res.status} before the kill: ${await res.text()}`);
        if (res.status !== 200) return void (await res.text());
        if (!stream) {
          const body = await res.text();
          const charged = res.headers.get("x-credits-charged");
          JSON.parse(body); // whole
          answers.push({ keyId: k.id, requestId, charged: micro(charged!), route: "chat", stream: false, round });
          return;
        }
        const reader = res.body!.getReader();
        let text = "";
        const dec = new TextDecoder();
        const leaveAfter = 1 + Math.floor(rnd() * 5);
        let chunks = 0;
        for (;;) {
          const r = await reader.read();
          if (r.done) break;
          text += dec.decode(r.value, { stream: true });
          if (leave && ++chunks >= leaveAfter) return void ac.abort();
        }
        const m = /^: credits_charged=([0-9.]+) /m.exec(text);
        if (text.includes("data: [DONE]") && m) answers.push({ keyId: k.id, requestId, charged: micro(m[1]!), route: "chat", stream: true, round });
        else if (!killed) note(`round ${round}: a stream ended without [DONE] before the kill: ${text.slice(-300)}`);
      };
      const embed = async (k: Key) => {
        const res = await fetch(`${p.url}/v1/embeddings`, { method: "POST", headers: { authorization: `Bearer ${k.key}`, "content-type": "application/json" }, body: JSON.stringify({ model: "bge-m3", input: ["a b c", "d e"] }) });
        const body = await res.text();
        if (res.status >= 500) note(`round ${round}: embeddings ${res.status} before the kill: ${body}`);
        if (res.status === 200) answers.push({ keyId: k.id, requestId: res.headers.get("x-request-id")!, charged: micro(res.headers.get("x-credits-charged")!), route: "embeddings", stream: false, round });
      };
      const topUp = async (t: TopUp, retry: boolean) => {
        const res = await admin(`/admin/keys/${t.keyId}/credits`, { method: "POST", headers: { "idempotency-key": t.idem }, body: JSON.stringify({ amount: t.amount }) });
        const body = await res.text();
        const note2 = retry ? (m: string) => void findings.push(m) : note;
        if (res.status === 200) {
          if (retry && t.acked) {
            if (res.headers.get("idempotent-replayed") !== "true" || body !== t.body) note2(`round ${round}: retry of acknowledged top-up ${t.idem} was not replayed: ${res.status} ${res.headers.get("idempotent-replayed")} ${body}`);
          }
          t.acked = true;
          t.body ??= body;
        } else if (!(res.status === 409 && body.includes("key_inactive"))) {
          note2(`round ${round}: top-up ${t.idem} ${retry ? "(retry) " : ""}got ${res.status}: ${body}`);
        }
      };
      const ops: (() => Promise<void>)[] = [
        async () => { const k = pick(usable()); seq.push(`chat ${k.id}`); await chat(k, false, false); },
        async () => { const k = pick(usable()); seq.push(`stream ${k.id}`); await chat(k, true, false); },
        async () => { const k = pick(usable()); seq.push(`stream-leave ${k.id}`); await chat(k, true, true); },
        async () => { const k = pick(usable()); seq.push(`embed ${k.id}`); await embed(k); },
        async () => {
          const k = pick(usable());
          const t: TopUp = { keyId: k.id, idem: `r${round}-${Math.floor(rnd() * 1e9)}`, amount: 1 + Math.floor(rnd() * 100), acked: false, round };
          seq.push(`topup ${k.id} ${t.idem}`);
          topUps.push(t);
          roundTopUps.push(t);
          await topUp(t, false);
        },
        async () => {
          const name = `k${round}-${Math.floor(rnd() * 1e9)}`;
          seq.push(`create ${name}`);
          const res = await admin("/admin/keys", { method: "POST", body: JSON.stringify({ name, credits: 1000, tier: pick(["enterprise", "pro"]) }) });
          const body = await res.text();
          if (res.status === 201) {
            const b = JSON.parse(body) as { id: string; key: string };
            keys.push({ id: b.id, key: b.key, revokeTried: false, revokeAcked: false });
          } else note(`round ${round}: create got ${res.status}: ${body}`);
        },
        async () => {
          const k = pick(keys.filter((x) => !x.bootstrap && !x.revokeTried));
          if (!k) return;
          const body = pick<Record<string, unknown>>([{ tier: pick(["enterprise", "pro", "developer"]) }, { models: pick([null, ["qwen2.5-7b", "bge-m3"]]) }, { expires_at: pick([null, "2099-01-01"]) }]);
          seq.push(`patch ${k.id} ${JSON.stringify(body)}`);
          k.lastPatch = { body, acked: false };
          const mine = k.lastPatch;
          const res = await admin(`/admin/keys/${k.id}`, { method: "PATCH", body: JSON.stringify(body) });
          const text = await res.text();
          if (res.status === 200) mine.acked = true;
          // Another worker's revoke of the same key may land first: the shim's 409 is then right.
          else if (!(res.status === 409 && text.includes("key_inactive") && k.revokeTried)) note(`round ${round}: patch got ${res.status}: ${text}`);
        },
        async () => {
          const k = pick(keys.filter((x) => !x.bootstrap && !x.revokeTried));
          if (!k || rnd() < 0.5) return;
          seq.push(`revoke ${k.id}`);
          k.revokeTried = true;
          const res = await admin(`/admin/keys/${k.id}`, { method: "DELETE" });
          const text = await res.text();
          if (res.status === 200) k.revokeAcked = true;
          else note(`round ${round}: revoke got ${res.status}: ${text}`);
        },
        async () => { seq.push("v1/usage"); const res = await fetch(`${p.url}/v1/usage`, { headers: { authorization: `Bearer ${boot.key}` } }); const t = await res.text(); if (res.status !== 200) note(`round ${round}: /v1/usage ${res.status}: ${t}`); },
        async () => { seq.push("admin/usage"); const res = await admin(`/admin/usage?group=${pick(["model", "day"])}`); const t = await res.text(); if (res.status !== 200) note(`round ${round}: /admin/usage ${res.status}: ${t}`); },
      ];
      const weights = [5, 5, 2, 2, 3, 1, 1, 1, 1, 1];
      const total = weights.reduce((a, b) => a + b, 0);
      const nextOp = () => {
        let x = rnd() * total;
        for (let i = 0; i < ops.length; i++) if ((x -= weights[i]!) < 0) return ops[i]!;
        return ops[0]!;
      };
      const workers = Array.from({ length: 4 + Math.floor(rnd() * 8) }, async () => {
        while (!killed) {
          try {
            await nextOp()();
          } catch (e) {
            note(`round ${round}: ${String(e)} before the kill`);
          }
        }
      });
      await new Promise((r) => setTimeout(r, durationMs));
      killed = true;
      p.child.kill("SIGKILL");
      await p.exited;
      output.keep(p);
      await Promise.allSettled(workers);

      // Restart on the same file, within the normal start time.
      p = await start();
      released.push(releasedAtStart(p)); // logged before it listens, and only when it released some
      const seqText = `seed ${SEED} round ${round} (${durationMs} ms): ${seq.join("; ")}`;
      // Nothing held, no reservation, balance = sum of the ledger, for every key.
      // (Postgres: a dead replica's holds are swept 30 s after a live one first sees them, by design
      // (docs/api-shim/replicas.md, Several replicas); until then they must match `held`, checked at the end.)
      for (const r of await sql<{ id: string; balance: number; held: number; holds: number; reserved?: number; total: number }>(AUDIT[storeKind])) {
        const holdsLeft = storeKind === "sqlite" ? r.held !== 0 || r.holds !== 0 : r.held !== r.reserved;
        if (holdsLeft || r.balance !== r.total) findings.push(`${seqText}\n  key ${r.id}: balance ${r.balance} ledger ${r.total} held ${r.held} holds ${r.holds}`);
      }
      // Every answer the client received whole has its ledger row with the charge it was told.
      for (const a of answers.filter((x) => x.round === round)) {
        const rows = await sql<{ amount: number; key_id: string }>("SELECT amount, key_id FROM ledger WHERE kind = 'usage' AND ref = ?", a.requestId);
        if (rows.length !== 1 || rows[0]!.amount !== -a.charged || rows[0]!.key_id !== a.keyId) findings.push(`${seqText}\n  answered ${a.route}${a.stream ? " (stream)" : ""} ${a.requestId} charged ${a.charged} µc: ledger ${JSON.stringify(rows)}`);
      }
      // Top-ups: an acknowledged one is there once; some are retried now with the same key.
      for (const t of roundTopUps) {
        if (rnd() < 0.5) await topUp(t, true);
        const n = (await sql<{ n: number }>("SELECT count(*) AS n FROM ledger WHERE idem = ?", `credits:${t.keyId}:${t.idem}`))[0]!.n;
        if (t.acked ? n !== 1 : n > 1) findings.push(`${seqText}\n  top-up ${t.idem} (acked ${t.acked}) has ${n} ledger rows`);
      }
      // Keys: acknowledged creations exist and work; acknowledged revocations hold; the last PATCH, acknowledged, stands.
      const listed = (await (await admin("/admin/keys")).json()) as { data: { id: string; tier: string; models: string[] | null; expires_at: string | null; revoked_at: string | null }[] };
      for (const k of keys) {
        const row = listed.data.find((x) => x.id === k.id);
        if (!row) { findings.push(`${seqText}\n  acknowledged key ${k.id} is gone`); continue; }
        if (k.revokeAcked && row.revoked_at === null) findings.push(`${seqText}\n  acknowledged revocation of ${k.id} undone`);
        if (k.lastPatch?.acked) {
          const b = k.lastPatch.body;
          if ("tier" in b && row.tier !== b.tier) findings.push(`${seqText}\n  PATCH ${JSON.stringify(b)} of ${k.id} lost: ${JSON.stringify(row)}`);
          if ("models" in b && JSON.stringify(row.models) !== JSON.stringify(b.models)) findings.push(`${seqText}\n  PATCH ${JSON.stringify(b)} of ${k.id} lost: ${JSON.stringify(row)}`);
          if ("expires_at" in b && (row.expires_at === null) !== (b.expires_at === null)) findings.push(`${seqText}\n  PATCH ${JSON.stringify(b)} of ${k.id} lost: ${JSON.stringify(row)}`);
        }
      }
      // A few keys' requests after the restart: revoked → 401, others work.
      for (const k of keys.slice(-4)) {
        const res = await fetch(`${p.url}/v1/chat/completions`, { method: "POST", headers: { authorization: `Bearer ${k.key}`, "content-type": "application/json" }, body: JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "x" }], max_tokens: 1 }) });
        const t = await res.text();
        if (k.revokeAcked && res.status !== 401) findings.push(`${seqText}\n  revoked ${k.id} answered ${res.status}`);
        if (!k.revokeTried && res.status !== 200 && res.status !== 429) findings.push(`${seqText}\n  key ${k.id} after restart: ${res.status} ${t}`);
      }
      // /admin/usage counts at least every request answered whole, per key.
      const report = (await (await admin("/admin/usage?from=2020-01-01")).json()) as { data: { key_id: string; requests: number }[] };
      for (const k of keys) {
        const reported = report.data.filter((d) => d.key_id === k.id).reduce((a, d) => a + d.requests, 0);
        const whole = answers.filter((a) => a.keyId === k.id).length;
        if (reported < whole) findings.push(`${seqText}\n  /admin/usage reports ${reported} requests for ${k.id}, ${whole} answered whole`);
      }
    }
    if (storeKind === "postgres") {
      // The last process lives past the grace: every dead replica's hold is released, uncharged.
      const deadline = performance.now() + 45_000;
      let left: unknown[] = [];
      do {
        await new Promise((r) => setTimeout(r, 1000));
        left = (await sql<{ id: string; balance: number; held: number; holds: number; total: number }>(AUDIT.postgres)).filter((r) => r.held !== 0 || r.holds !== 0 || r.balance !== r.total);
      } while (left.length > 0 && performance.now() < deadline);
      if (left.length > 0) findings.push(`holds not swept 45 s after the last start: ${JSON.stringify(left)}`);
    }
    await output.stopCleanly(p);
    const normal = Math.min(...starts);
    console.log(JSON.stringify({ store: storeKind, seed: SEED, rounds: ROUNDS, answers: answers.length, topUps: topUps.length, keys: keys.length, startMs: starts, released }));
    for (const ms of starts) if (ms > Math.max(5_000, normal * 5)) findings.push(`a start took ${ms} ms (fastest ${normal} ms)`);
    expect(findings).toEqual([]);
    // Rounds take 2–4 s each, restarts included; Postgres waits up to 45 s for the sweep at the end.
  }, 120_000 + ROUNDS * 10_000);
});
