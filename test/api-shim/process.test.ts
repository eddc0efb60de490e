import { execFileSync } from "node:child_process";
import { once } from "node:events";
import { mkdirSync, readFileSync, rmSync, statfsSync, writeFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { dirname, join } from "node:path";
import Database from "better-sqlite3";
import { describe, expect, it, vi } from "vitest";
import { parse, stringify } from "yaml";
import { generateKey } from "../../api-shim/src/auth/keys.ts";
import { MAX_BALANCE_MICRO } from "../../api-shim/src/money/money.ts";
import { MIGRATIONS } from "../../api-shim/src/store/sqlite-migrations.ts";
import { MIN_FREE_BYTES } from "../../api-shim/src/store/sqlite-space.ts";
import { SqliteStore } from "../../api-shim/src/store/sqlite-store.ts";
import { corruptLedger } from "../support/corrupt-ledger.ts";
import { failingFsyncs, fullVolumeWrites } from "../support/fsync-trace.ts";
import { fillUp, smallVolume, unmountVolume } from "../support/small-volume.ts";
import { schema3Ledger } from "../support/schema3-ledger.ts";
import { assertNoSecrets } from "../support/shim-harness.ts";
import { isDraining, loopbackServer, openStream as openKeyStream, releasedAtStart, shimClient, shimProcessFixture, ShimStartError, spawnShim, type ShimProcess } from "../support/shim-process.ts";

const CREDIT = 1_000_000;

/** The shim as a real process: killed with SIGKILL mid-stream, and drained with SIGTERM. */
describe("the shim process", () => {
  const f = shimProcessFixture("shim-proc-");
  const { key, adminToken, output, start } = f;
  /** The ledger audit of every key, read by a store opened on the file for it. */
  const audit = () => {
    const store = new SqliteStore(f.db());
    return store.audit().finally(() => store.close());
  };
  /**
   * The key's audit once it shows `expected` (releasedAudit: once a live process has released its
   * holds). Holds and settlements are written by the SQLite store's group commit in the event-loop
   * turn after them (sqlite-store.ts, batched), so the client can have the whole answer a moment
   * before the row says so; a hold never released fails here. Each look opens a store (up to a
   * second on a loaded machine), hence the long timeout.
   */
  const auditOnce = (expected: { held?: number; reservations: number }) => vi.waitFor(async () => {
    const row = (await audit()).find((r) => r.keyId === key.id)!;
    expect(row).toMatchObject(expected);
    return row;
  }, { timeout: 10_000, interval: 25 });
  const releasedAudit = () => auditOnce({ held: 0, reservations: 0 });
  /** The key's audit row in the SQLite file `file`. */
  const audit2 = async (file: string) => {
    const store = new SqliteStore(file);
    const rows = await store.audit().finally(() => store.close());
    return rows.find((r) => r.keyId === key.id)!;
  };
  const client = (p: ShimProcess) => shimClient(p, key.key);
  const openStream = (p: ShimProcess, maxTokens: number) => openKeyStream(p, key.key, maxTokens);

  it("SIGKILL during 50 live streams: after a restart no reservation is left and balances equal the ledger", async () => {
    f.fake.set({ tokenDelayMs: 50, defaultTokens: 2000 });
    const first = await start();
    const streams = await Promise.all(Array.from({ length: 50 }, () => openStream(first, 2000)));
    // The kill really lands on 50 open holds (each written by the group commit after its request: waited for).
    const during = await auditOnce({ reservations: 50 });
    expect(during.held).toBe(50 * (1 + 2000) * CREDIT); // each: the request credit + 2,000 completion tokens at 1 credit
    first.child.kill("SIGKILL");
    expect((await first.exited).signal).toBe("SIGKILL");
    output.keep(first);
    await Promise.allSettled(streams.map(async (s) => { for (let r = await s.next(); !r.done; r = await s.next()); }));

    const second = await start();
    expect(releasedAtStart(second)).toBe(50);
    // A warning: the previous process died holding its clients' credits.
    expect(await second.waitForLine((e) => typeof e.released === "number")).toMatchObject({ level: 40, released: 50 });
    // Counted in /metrics too: its help says the holds released at start are.
    expect(await (await fetch(`${second.url}/metrics`)).text()).toMatch(/^shim_stale_reservations_released_total 50$/m);
    const after = (await audit()).find((r) => r.keyId === key.id)!;
    // The dead process charged nothing for its in-flight requests: our failure, not the client's.
    // (Not reservedSum: SQLite's is the sum of the auditing process's own holds, 0 for a store just opened here.)
    expect(after).toMatchObject({ keyId: key.id, balance: 1_000_000 * CREDIT, held: 0, ledgerSum: 1_000_000 * CREDIT, reservations: 0 });
    // The bootstrap grant is not repeated on restart.
    expect(second.lines.some((l) => l.includes('"granted":true'))).toBe(false);
    f.fake.reset();
    const ok = await client(second).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 2 });
    expect(ok.choices[0]!.message.content).toBe("t1 t2");
    await output.stopCleanly(second);
  });

  it("SIGTERM drains: short streams finish, long ones are cut at the drain timeout and settled; exit 0", async () => {
    f.fake.set({ tokenDelayMs: 40, defaultTokens: 5000 });
    const p = await start({ SHIM_DRAIN_TIMEOUT_MS: "1500" });
    const before = (await audit()).find((r) => r.keyId === key.id)!.balance;
    const short = await Promise.all(Array.from({ length: 5 }, () => openStream(p, 8)));
    const long = await Promise.all(Array.from({ length: 5 }, () => openStream(p, 5000)));
    p.child.kill("SIGTERM");
    await p.waitForLine(isDraining);
    const drain = async (s: AsyncIterator<unknown>) => {
      let n = 1;
      try {
        for (let r = await s.next(); !r.done; r = await s.next()) n++;
        return { ok: true, n };
      } catch (e) {
        return { ok: false, n, error: (e as { error?: { code?: string } }).error?.code };
      }
    };
    const shortResults = await Promise.all(short.map(drain));
    const longResults = await Promise.all(long.map(drain));
    expect(shortResults.every((r) => r.ok)).toBe(true);
    for (const r of longResults) expect(r).toMatchObject({ ok: false, error: "service_unavailable" });
    expect(await p.exited).toEqual({ code: 0, signal: null });
    output.keep(p);
    const stopped = p.lines.map((l) => JSON.parse(l)).find((e) => e.msg === "stopped");
    expect(stopped.aborted).toBe(5);
    const after = (await audit()).find((r) => r.keyId === key.id)!;
    expect(after).toMatchObject({ held: 0, reservations: 0, ledgerSum: after.balance });
    // Short streams: 1 credit + 8 tokens each. Long ones: 1 credit + what was generated before the cut.
    const charged = (before - after.balance) / CREDIT;
    expect(charged).toBeGreaterThan(5 * 9 + 5 * 2);
    expect(charged).toBeLessThan(5 * 9 + 5 * (1 + 200));
    f.fake.reset();
  });

  it("a request on a kept-alive connection during the drain gets the shim's own 503s, with a request id", async () => {
    f.fake.set({ tokenDelayMs: 40, defaultTokens: 5000 });
    const p = await start({ SHIM_DRAIN_TIMEOUT_MS: "2000" });
    const long = await openStream(p, 5000); // keeps the drain going
    // Two connections, each busy with a short stream when SIGTERM comes; each sends one more
    // request once its stream is over, as nginx does on its upstream keepalive connections.
    const conns = [await KeptAlive.open(p.url), await KeptAlive.open(p.url)];
    const chat = (stream: boolean) => JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "x" }], max_tokens: 6, stream });
    for (const c of conns) c.send("POST", "/v1/chat/completions", chat(true));
    for (const c of conns) await c.started(); // admitted before the drain begins
    p.child.kill("SIGTERM");
    await p.waitForLine(isDraining);
    for (const c of conns) expect((await c.response()).head).toMatch(/^HTTP\/1\.1 200/);

    conns[0]!.send("POST", "/v1/chat/completions", chat(false));
    conns[1]!.send("GET", "/ready");
    const [refused, ready] = await Promise.all([conns[0]!.response(), conns[1]!.response()]);
    expect(refused.head).toMatch(/^HTTP\/1\.1 503/);
    expect(refused.head).toMatch(/\r\nx-request-id: \S+/i);
    // Closed after it: nginx stops sending to the draining process on that connection.
    expect(refused.head).toMatch(/\r\nconnection: close\r\n/i);
    expect(ready.head).toMatch(/\r\nconnection: close\r\n/i);
    expect(JSON.parse(refused.body)).toMatchObject({ error: { code: "service_unavailable", type: "api_error" } });
    expect(ready.head).toMatch(/^HTTP\/1\.1 503/);
    expect(JSON.parse(ready.body)).toMatchObject({ status: "not_ready", draining: true });

    for (let r = await long.next().catch(() => ({ done: true })); !r.done; r = await long.next().catch(() => ({ done: true })));
    expect(await p.exited).toEqual({ code: 0, signal: null });
    output.keep(p);
    f.fake.reset();
  });

  /** A raw HTTP/1.1 connection that stays open between requests (the SDK's fetch would open new ones). */
  class KeptAlive {
    private text = "";
    private readonly socket: Socket;
    private constructor(socket: Socket) {
      this.socket = socket;
      socket.setEncoding("utf8").on("data", (d: string) => (this.text += d));
      socket.on("error", () => {}); // a reset shows as a closed socket in response()
    }
    static async open(url: string): Promise<KeptAlive> {
      const u = new URL(url);
      const socket = connect(Number(u.port), u.hostname);
      await once(socket, "connect");
      return new KeptAlive(socket);
    }
    send(method: string, path: string, body?: string): void {
      const head = [`${method} ${path} HTTP/1.1`, "host: shim", `authorization: Bearer ${key.key}`];
      if (body !== undefined) head.push("content-type: application/json", `content-length: ${Buffer.byteLength(body)}`);
      this.socket.write(`${head.join("\r\n")}\r\n\r\n${body ?? ""}`);
    }
    /** Resolves once the next response's headers have arrived. */
    async started(): Promise<void> {
      while (!this.text.includes("\r\n\r\n")) {
        if (this.socket.destroyed) throw new Error(`connection closed; got: ${this.text.slice(0, 300)}`);
        await Promise.race([once(this.socket, "data"), once(this.socket, "close")]);
      }
    }

    /** The next whole response (chunked or with a length), taken off the connection's input. */
    async response(): Promise<{ head: string; body: string }> {
      for (;;) {
        const end = this.text.indexOf("\r\n\r\n");
        if (end >= 0) {
          const head = this.text.slice(0, end);
          const rest = this.text.slice(end + 4);
          const length = /\r\ncontent-length: (\d+)/i.exec(head);
          // With a length, that many bytes; chunked, up to the last chunk (`0`, then a blank line).
          const lastChunk = rest.indexOf("\r\n0\r\n\r\n");
          const chunkedEnd = rest.startsWith("0\r\n\r\n") ? 5 : lastChunk < 0 ? -1 : lastChunk + 7;
          const whole = length ? (rest.length >= Number(length[1]) ? Number(length[1]) : -1) : chunkedEnd;
          if (whole >= 0) {
            this.text = rest.slice(whole);
            return { head, body: rest.slice(0, whole) };
          }
        }
        if (this.socket.destroyed) throw new Error(`connection closed; got: ${this.text.slice(0, 300)}`);
        await Promise.race([once(this.socket, "data"), once(this.socket, "close")]);
      }
    }
  }

  it("a second SIGTERM cuts what is in flight at once instead of waiting for the drain (settled, exit 0)", async () => {
    f.fake.set({ tokenDelayMs: 40, defaultTokens: 5000 });
    const p = await start({ SHIM_DRAIN_TIMEOUT_MS: "20000" });
    const long = await openStream(p, 5000);
    p.child.kill("SIGTERM");
    // It says how long it may wait and how not to: the wait used to be silent (23 s by default).
    expect(await p.waitForLine(isDraining)).toMatchObject({
      reason: "SIGTERM", inflight: 1, msg: "draining: waiting up to 20 s for 1 request in flight; send the signal again (Ctrl-C) to cut it now",
    });
    const second = performance.now();
    p.child.kill("SIGTERM");
    await expect(long.next().then(async () => { for (let r = await long.next(); !r.done; r = await long.next()); })).rejects.toMatchObject({ error: { code: "service_unavailable" } });
    expect(await p.exited).toEqual({ code: 0, signal: null });
    // Timed from the second signal: the drain's 20 s would end it only past this bound (the margin is for a stalled machine).
    expect(performance.now() - second).toBeLessThan(10_000);
    output.keep(p);
    // The stream the second signal cut is counted as the drain's timeout would count it.
    expect(p.lines.map((l) => JSON.parse(l)).find((e) => e.msg === "stopped")).toMatchObject({ aborted: 1, exitCode: 0 });
    expect((await audit()).find((r) => r.keyId === key.id)!).toMatchObject({ held: 0, reservations: 0 });
    f.fake.reset();
  });

  it("SIGTERM while a model list waits on a silent upstream: the process still exits soon after the drain, not at the upstream timeout", async () => {
    let received = 0;
    const silent = await loopbackServer(() => void received++); // accepts, never answers
    try {
      const p = await start({ SHIM_UPSTREAM_URL: silent.url, SHIM_DRAIN_TIMEOUT_MS: "500", SHIM_UPSTREAM_TIMEOUT_MS: "60000" });
      const before = received;
      const asked = client(p).models.list().catch((e: unknown) => e);
      await vi.waitFor(() => expect(received).toBe(before + 1)); // the list waits on the upstream
      const started = performance.now();
      p.child.kill("SIGTERM");
      expect(await p.exited).toEqual({ code: 0, signal: null });
      // Its 500 ms drain, not the upstream's 60 s: the margin is for a stalled machine.
      expect(performance.now() - started).toBeLessThan(10_000);
      output.keep(p);
      await asked;
    } finally {
      await silent.close();
    }
  });

  // The process's own timeouts: server.ts passes SHIM_UPSTREAM_TIMEOUT_MS and
  // SHIM_STREAM_IDLE_TIMEOUT_MS to the upstream it makes (the in-process harness makes its own).
  const chatWithin5s = (p: ShimProcess, extra: object) => fetch(`${p.url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${key.key}`, "content-type": "application/json" },
    body: JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "x" }], ...extra }),
    signal: AbortSignal.timeout(5000),
  });
  it("SHIM_UPSTREAM_TIMEOUT_MS: a silent upstream → 504 upstream_timeout at the configured time, nothing held", async () => {
    const silent = await loopbackServer(() => {});
    try {
      const p = await start({ SHIM_UPSTREAM_URL: silent.url, SHIM_UPSTREAM_TIMEOUT_MS: "500" });
      const t0 = performance.now();
      const res = await chatWithin5s(p, { max_tokens: 2 }); // the default timeout (120 s) would end the test here
      const ms = performance.now() - t0;
      expect(res.status).toBe(504);
      expect(await res.json()).toMatchObject({ error: { type: "api_error", code: "upstream_timeout", message: "The model server did not respond in time." } });
      expect(ms).toBeGreaterThanOrEqual(500);
      expect(ms).toBeLessThan(1500);
      await releasedAudit();
      await output.stopCleanly(p);
    } finally {
      try {
        await output.killAll(); // a failure here leaves no process holding the database for the next test
      } finally {
        await silent.close();
      }
    }
  });

  it("SHIM_STREAM_IDLE_TIMEOUT_MS: a stream whose upstream stalls after its first token ends with an upstream_timeout event, and the upstream request is aborted", async () => {
    let upstreamClosed!: () => void;
    const closed = new Promise<void>((r) => (upstreamClosed = r));
    const stalling = await loopbackServer((req, res) => {
      res.on("close", upstreamClosed);
      req.resume();
      res.writeHead(200, { "content-type": "text/event-stream" });
      const chunk = (delta: object) => `data: ${JSON.stringify({ id: "chatcmpl-1", object: "chat.completion.chunk", created: 1, model: "qwen2.5-7b", choices: [{ index: 0, delta, logprobs: null, finish_reason: null }] })}\n\n`;
      res.write(chunk({ role: "assistant", content: "" }) + chunk({ content: "t1" })); // then nothing
    });
    try {
      const p = await start({ SHIM_UPSTREAM_URL: stalling.url, SHIM_STREAM_IDLE_TIMEOUT_MS: "300" });
      const t0 = performance.now();
      const res = await chatWithin5s(p, { max_tokens: 5, stream: true }); // the default idle timeout (60 s) would end the test here
      expect(res.status).toBe(200);
      const text = await res.text();
      const ms = performance.now() - t0;
      // The token, then the error event and the credits comment; no [DONE] (docs/api-shim/streaming.md).
      const events = text.trim().split("\n\n");
      expect(JSON.parse(events[1]!.slice(6)).choices[0].delta.content).toBe("t1");
      expect(JSON.parse(events.at(-2)!.slice(6))).toMatchObject({ error: { type: "api_error", code: "upstream_timeout" } });
      expect(events.at(-1)).toMatch(/^: credits_charged=/);
      expect(ms).toBeGreaterThanOrEqual(300);
      expect(ms).toBeLessThan(2000); // 300 ms configured, on undici's coarse timers (up to a second late)
      await closed;
      await releasedAudit();
      await output.stopCleanly(p);
    } finally {
      try {
        await output.killAll();
      } finally {
        await stalling.close();
      }
    }
  });

  it("a store that fails closed makes the process exit 1 (so Docker restarts it), and the restart serves again", async () => {
    const p = await start();
    const before = (await audit()).find((r) => r.keyId === key.id)!;
    // Stands for a disk error at COMMIT (e.g. a full volume): the batch's UPDATE of the key fails.
    const other = new Database(f.db());
    other.exec("CREATE TRIGGER fail_money BEFORE UPDATE OF held ON keys BEGIN SELECT RAISE(ABORT, 'disk on fire'); END");
    await client(p).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "x" }], max_tokens: 1 }).catch(() => {});
    expect(await p.exited).toEqual({ code: 1, signal: null });
    output.keep(p);
    expect(p.lines.map((l) => JSON.parse(l).msg)).toContain("the store failed closed; exiting so the shim is restarted");
    // The failed batch was rolled back whole: nothing was charged or left held.
    expect((await audit()).find((r) => r.keyId === key.id)).toEqual(before);

    // Still failing at the next start (every UPDATE of a key fails, as on a full disk): the same
    // log line, exit 1 again, so the restart policy keeps trying and the log says why.
    other.exec("CREATE TRIGGER fail_keys BEFORE UPDATE ON keys BEGIN SELECT RAISE(ABORT, 'disk still on fire'); END");
    const failed = await spawnShim({ ...f.env }).catch((e: unknown) => e);
    if (!(failed instanceof ShimStartError)) throw new Error(`expected a failed start, got ${String(failed)}`);
    expect(failed.exit).toEqual({ code: 1, signal: null });
    expect(failed.lines.map((l) => JSON.parse(l).msg)).toContain("the store failed closed; exiting so the shim is restarted");
    output.keep(failed);
    other.exec("DROP TRIGGER fail_keys");
    other.exec("DROP TRIGGER fail_money");
    other.close();
    const again = await start();
    const answer = await client(again).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "x" }], max_tokens: 1 });
    expect(answer.choices[0]!.message.content).toBe("t1");
    await output.stopCleanly(again);
  });

  it("a store that fails closed at start (the disk refuses the sync of its first write) says so in one line, and exits 1", async () => {
    const file = join(f.dir, "failing-start", "shim.db");
    mkdirSync(dirname(file));
    await new SqliteStore(file).close(); // the file exists before its disk starts failing
    const failed = await spawnShim({ ...f.env, SHIM_DATABASE_URL: `sqlite:${file}` }, failingFsyncs(`${file}-wal`)).catch((e: unknown) => e);
    if (!(failed instanceof ShimStartError)) throw new Error(`expected a failed start, got ${String(failed)}`);
    output.keep(failed);
    expect(failed.exit).toEqual({ code: 1, signal: null });
    const lines = failed.lines.map((l) => JSON.parse(l)).filter((l) => l.msg === "the store failed closed; exiting so the shim is restarted");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ err: { code: "SQLITE_IOERR_FSYNC" }, hint: expect.stringContaining("the disk failed") });
  });

  it("a restart on a volume that is still full refuses to start (exit 1, one line naming the file and its free bytes) rather than listen, take traffic and forward it to the model", async (ctx) => {
    const mnt = smallVolume(f.dir, "full-volume-");
    if (mnt === null) return ctx.skip("cannot mount a tmpfs to fill (needs root or CAP_SYS_ADMIN)");
    const mine: ShimProcess[] = [];
    try {
      const file = join(mnt, "shim.db");
      const env = { ...f.env, SHIM_DATABASE_URL: `sqlite:${file}` };
      const ask = (p: ShimProcess) => fetch(`${p.url}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${key.key}`, "content-type": "application/json" },
        body: JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "x".repeat(2000) }], max_tokens: 3 }),
      }).then((r) => r.status, () => -1);
      const p = await start(env);
      mine.push(p);
      expect(await ask(p)).toBe(200);
      // The volume fills up (model weights accumulate there): the shim fails closed and exits 1.
      const filler = join(mnt, "filler");
      fillUp(mnt);
      while (p.child.exitCode === null) await Promise.all(Array.from({ length: 20 }, () => ask(p)));
      expect(await p.exited).toEqual({ code: 1, signal: null });
      output.keep(p);

      // Still full: the restart fails at start, before listening (its few start-up writes would fit
      // in the WAL its predecessor grew, and /ready would say 200). A request the dead process
      // forwarded may still be reaching the fake (seen once under load): counted once it stops moving.
      let received = f.fake.counters.received;
      for (let still = 0; still < 5;) {
        await new Promise((r) => setTimeout(r, 100));
        still = f.fake.counters.received === received ? still + 1 : 0;
        received = f.fake.counters.received;
      }
      const restarted = await spawnShim(env).catch((e: unknown) => e);
      if (!(restarted instanceof ShimStartError)) {
        mine.push(restarted as ShimProcess);
        throw new Error("the restart on a full volume listened");
      }
      output.keep(restarted);
      expect(restarted.exit).toEqual({ code: 1, signal: null });
      expect(f.fake.counters.received).toBe(received);
      const errors = restarted.lines.map((l) => JSON.parse(l)).filter((l) => l.level >= 50);
      expect(errors).toHaveLength(1);
      expect(errors[0].msg).toMatch(new RegExp(`^the volume holding ${file.replace(/[.]/g, "\\.")} has \\d+ bytes free, less than the 16777216 \\(16 MiB\\) the shim needs to start`));
      // With err.code and hint, as GpuSandboxShimDown's description promises of the line.
      expect(errors[0]).toMatchObject({ err: { code: "SQLITE_FULL" }, hint: expect.stringContaining("is full: free space on it (df -h)") });

      // Space is back: it serves, and the ledger balances.
      rmSync(filler);
      const q = await start(env);
      mine.push(q);
      expect(await ask(q)).toBe(200);
      await output.stopCleanly(q);
      const store = new SqliteStore(file);
      const rows = await store.audit().finally(() => store.close());
      for (const row of rows) expect(row).toMatchObject({ held: 0, reservations: 0, ledgerSum: row.balance });
    } finally {
      for (const x of mine) if (x.child.exitCode === null && x.child.signalCode === null) x.child.kill("SIGKILL");
      unmountVolume(mnt);
    }
  }, 60_000);

  it("a volume that fills up while the shim serves: the next check of its free space (every second), or a checkpoint that finds no room, fails the store closed and it exits 1, the ledger whole, though no request has met the full disk yet", async (ctx) => {
    const mnt = smallVolume(f.dir, "filling-volume-");
    if (mnt === null) return ctx.skip("cannot mount a tmpfs to fill (needs root or CAP_SYS_ADMIN)");
    let p: ShimProcess | undefined;
    const file = join(mnt, "shim.db");
    try {
      p = await start({ SHIM_DATABASE_URL: `sqlite:${file}` });
      let charged200 = 0; // micro-credits the shim told clients it charged, on 200 answers
      const ask = (url: string) => fetch(`${url}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${key.key}`, "content-type": "application/json" },
        body: JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 3 }),
      }).then(async (r) => {
        await r.text();
        if (r.status === 200) charged200 += Math.round(Number(r.headers.get("x-credits-charged")) * CREDIT);
      });
      const before = (await audit2(file)).balance;
      for (let i = 0; i < 5; i++) await Promise.all(Array.from({ length: 20 }, () => ask(p!.url)));
      expect(charged200).toBeGreaterThan(0);
      // The volume fills up (model weights accumulate on it) between two requests. Before, a shim
      // that wrote nothing went on answering /ready 200 (its probe only reads) and forwarded the
      // next requests to the model, until a COMMIT failed with their answered charges in it.
      fillUp(mnt);
      const filled = performance.now();
      while (p.child.exitCode === null && await fetch(`${p.url}/ready`).then((r) => r.status, () => -1) === 200) {
        if (performance.now() - filled > 5000) throw new Error("/ready said 200 for 5 s on a full volume");
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(await p.exited).toEqual({ code: 1, signal: null });
      expect(performance.now() - filled).toBeLessThan(3000); // a tick is a second (a loaded machine's timers run late)
      output.keep(p);
      const errors = p.lines.map((l) => JSON.parse(l)).filter((l) => l.level >= 50);
      expect(errors).toHaveLength(1);
      expect(errors[0].msg).toBe("the store failed closed; exiting so the shim is restarted");
      // Whichever comes first: the check of the volume, or a checkpoint that finds no room to copy
      // the last requests' pages into the database (at once, not after a minute as a failing disk).
      const checkpoint = p.lines.map((l) => JSON.parse(l)).find((l) => l.msg?.startsWith("a WAL checkpoint failed"));
      if (checkpoint === undefined) expect(errors[0].err.message).toMatch(new RegExp(`^the volume holding ${file.replace(/[.]/g, "\\.")} has \\d+ bytes free( \\(and \\d+ in the store's own WAL, which it reuses\\))?, less than the 16777216 \\(16 MiB\\) the shim needs to go on serving, so it fails closed`));
      else expect([checkpoint.err.code, errors[0].err.code, errors[0].hint]).toEqual(["SQLITE_FULL", "SQLITE_FULL", `the volume holding ${file} is full: free space on it (df -h)`]);
      // Space comes back: every charge answered 200 is in the ledger, nothing is left held.
      rmSync(join(mnt, "filler"));
      const row = await audit2(file);
      expect(before - row.ledgerSum).toBe(charged200);
      expect(row).toMatchObject({ balance: row.ledgerSum, held: 0, reservations: 0 });
    } finally {
      if (p && p.child.exitCode === null) p.child.kill("SIGKILL");
      unmountVolume(mnt);
    }
  }, 60_000);

  it("a volume left with a little more than 16 MiB free and nothing else writing to it: the shim serves on, start after start, though its own WAL grows into that space (the WAL counts as room while it serves)", async (ctx) => {
    const mnt = smallVolume(f.dir, "stable-volume-", "40m");
    if (mnt === null) return ctx.skip("cannot mount a tmpfs to fill (needs root or CAP_SYS_ADMIN)");
    const file = join(mnt, "shim.db");
    const free = () => { const s = statfsSync(mnt); return s.bavail * s.bsize; };
    const ask = (url: string) => fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key.key}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 3 }),
    }).then(async (r) => (await r.text(), r.status), () => -1);
    let p: ShimProcess | undefined;
    try {
      // A first run makes the ledger; then the volume is filled to 16 MiB + 1 MiB free (weights):
      // room for the 3,000 rows the runs add to the database itself (a row naming its price, since
      // 2026-12-07, is ~20 bytes longer: at 512 KiB the third run ran out of it, rightly).
      // Each run's WAL, ~3.5 MB, still grows well past that 1 MiB.
      await output.stopCleanly(await start({ SHIM_DATABASE_URL: `sqlite:${file}` }));
      writeFileSync(join(mnt, "weights"), Buffer.alloc(free() - MIN_FREE_BYTES - 1024 * 1024, 1));
      const runs: { served: number; exit: string }[] = [];
      for (let run = 0; run < 3; run++) {
        p = await start({ SHIM_DATABASE_URL: `sqlite:${file}` });
        // Each request writes a ledger row: a few hundred of them grow the WAL past the 1 MiB left
        // over 16 MiB. Before, the volume check failed the store closed there (exit 1), close() removed
        // the WAL, and the next start was let through again: a restart every few hundred requests.
        // Counted in requests, not bounded in time: the WAL's growth is what this is about, and
        // 1,000 requests took over 8 s at a load of 9 (the test's own timeout bounds the loop).
        let served = 0;
        while (p.child.exitCode === null && served < 1000) {
          served += (await Promise.all(Array.from({ length: 10 }, () => ask(p!.url)))).filter((s) => s === 200).length;
        }
        await new Promise((r) => setTimeout(r, 1500)); // a volume check or two after the WAL's growth
        // An exit says why in the assertion's diff (its last log line: the free and WAL bytes).
        runs.push({ served, exit: p.child.exitCode === null ? "serving" : `exited ${p.child.exitCode}: ${p.lines.at(-1)?.slice(0, 400)}` });
        if (p.child.exitCode === null) await output.stopCleanly(p);
      }
      expect(runs).toEqual(Array.from({ length: 3 }, () => ({ served: 1000, exit: "serving" })));
      const row = await audit2(file);
      expect(row).toMatchObject({ balance: row.ledgerSum, held: 0, reservations: 0 });
    } finally {
      if (p && p.child.exitCode === null) p.child.kill("SIGKILL");
      unmountVolume(mnt);
    }
  }, 180_000);

  it("a volume mounted read-only: the failed start's hint says the file system is read-only (dmesg, fsck, remount), not to chown or chmod the files", async (ctx) => {
    const mnt = smallVolume(f.dir, "ro-volume-");
    if (mnt === null) return ctx.skip("cannot mount a tmpfs to remount read-only (needs root or CAP_SYS_ADMIN)");
    const file = join(mnt, "shim.db");
    try {
      const p = await start({ SHIM_DATABASE_URL: `sqlite:${file}` });
      await output.stopCleanly(p); // shim.db and shim.db-lock are left, no -wal or -shm
      execFileSync("mount", ["-o", "remount,ro", mnt]);
      const failed = await spawnShim({ ...f.env, SHIM_DATABASE_URL: `sqlite:${file}` }).catch((e: unknown) => e);
      if (!(failed instanceof ShimStartError)) throw new Error("started on a read-only volume");
      output.keep(failed);
      expect(failed.exit).toEqual({ code: 1, signal: null });
      const errors = failed.lines.map((l) => JSON.parse(l)).filter((l) => l.level >= 50);
      expect(errors).toHaveLength(1);
      expect(errors[0].hint).toMatch(new RegExp(`^the file system holding ${file.replace(/[.]/g, "\\.")} is mounted read-only`));
      expect(errors[0].hint).not.toMatch(/owner|uid 1000/);
    } finally {
      unmountVolume(mnt);
    }
  }, 30_000);

  it("WAL checkpoints that fail (the disk refuses their fsync) are logged, at most once a minute, and counted in /metrics, while requests are still served", async () => {
    const file = join(f.dir, "checkpoints", "shim.db");
    mkdirSync(dirname(file));
    await new SqliteStore(file).close(); // the file exists before its disk starts failing
    const p = await spawnShim({ ...f.env, SHIM_DATABASE_URL: `sqlite:${file}` }, failingFsyncs(file));
    const children = readFileSync(`/proc/${p.child.pid}/task/${p.child.pid}/children`, "utf8").trim(); // strace's child
    // One pid, checked before anything is signalled: Number("") is 0, and process.kill(0) would signal this whole process group.
    expect(children).toMatch(/^[1-9]\d*$/);
    const shim = Number(children);
    const warning = "a WAL checkpoint failed: the WAL grows until checkpoints succeed again; the store fails closed if they keep failing for 60 s (5 failures or more, none completing)";
    try {
      const ask = () => client(p).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "x" }], max_tokens: 1 });
      await ask(); // the request's ledger row is in the WAL: the next checkpoint copies it, and fails
      const warned = await p.waitForLine((e) => e.msg === warning, 5000);
      expect(warned).toMatchObject({ level: 40, failures: 1, err: { code: "SQLITE_IOERR_FSYNC", message: "disk I/O error" } });
      // Two checkpoints more, at least (polled: a loaded machine runs the 1 s checkpoints late).
      const counted = async () => Number(/^shim_sqlite_checkpoint_failures_total (\d+)$/m.exec(await (await fetch(`${p.url}/metrics`)).text())?.[1]);
      await expect.poll(counted, { timeout: 15_000, interval: 250 }).toBeGreaterThanOrEqual(3);
      expect(p.lines.filter((l) => l.includes(warning))).toHaveLength(1);
      await ask(); // still serving: the WAL takes the writes meanwhile
    } finally {
      process.kill(shim, "SIGTERM");
      await p.exited;
      output.keep(p);
    }
  });

  it("a WAL checkpoint that finds the volume full (SQLITE_FULL): its warning says the store fails closed at once, not after a minute as for a failing disk, and the process exits 1", async () => {
    const file = join(f.dir, "full-checkpoints", "shim.db");
    mkdirSync(dirname(file));
    await new SqliteStore(file).close(); // the file exists before its volume fills up
    // Every write of shim.db fails with ENOSPC, its WAL's go through: the first checkpoint fails,
    // at start (the bootstrap key's writes) or after the request.
    const started = await spawnShim({ ...f.env, SHIM_DATABASE_URL: `sqlite:${file}` }, fullVolumeWrites(file)).catch((e: unknown) => {
      if (e instanceof ShimStartError) return e;
      throw e;
    });
    if (started instanceof ShimStartError) {
      expect(started.exit).toEqual({ code: 1, signal: null });
      output.keep(started);
    } else {
      await client(started).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "x" }], max_tokens: 1 }).catch(() => {});
      expect(await started.exited).toEqual({ code: 1, signal: null });
      output.keep(started);
    }
    const lines = started.lines.map((l) => JSON.parse(l));
    const warned = lines.filter((l) => l.msg?.startsWith("a WAL checkpoint failed"));
    expect(warned).toEqual([expect.objectContaining({ level: 40, msg: "a WAL checkpoint failed: the volume is full; the store fails closed at once", err: expect.objectContaining({ code: "SQLITE_FULL" }) })]);
    expect(lines.filter((l) => l.level >= 50)).toEqual([expect.objectContaining({ hint: `the volume holding ${file} is full: free space on it (df -h)` })]);
  }, 30_000);

  it("a corrupt ledger: the first statement that meets it (a usage report) makes the process exit 1, its line pointing at the backup to restore", async () => {
    const file = join(f.dir, "corrupt", "shim.db");
    mkdirSync(dirname(file));
    const store = new SqliteStore(file);
    await store.ensureBootstrapKey({ id: key.id, name: "app", hash: key.hash, tier: "enterprise", models: null, expiresAt: null, credits: 1_000_000 * CREDIT, at: Date.now() });
    await store.close();
    corruptLedger(file, key.id);
    const p = await start({ SHIM_DATABASE_URL: `sqlite:${file}` });
    // From 2000, not the default current month: rows written before a month turned (or in the
    // last minutes of the one before) are not in the report's period, so it would not read them.
    const usage = await fetch(`${p.url}/v1/usage?from=2000-01-01`, { headers: { authorization: `Bearer ${key.key}` } });
    expect(usage.status).toBe(503);
    expect(await p.exited).toEqual({ code: 1, signal: null });
    output.keep(p);
    const failed = p.lines.map((l) => JSON.parse(l)).find((l) => l.msg === "the store failed closed; exiting so the shim is restarted");
    expect(failed).toMatchObject({ err: { code: "SQLITE_CORRUPT" }, hint: `${file} is corrupt: restore the last backup: copy it beside it as shim.db.restore, owned by uid 1000, and restart the shim, which checks it and swaps it in (docs/operations.md, Backup and restore of the ledger)` });
  });

  it("a port already in use: exit 1 with one line that names SHIM_PORT, not a stack trace", async () => {
    const first = await start();
    const port = new URL(first.url).port;
    const failed = await spawnShim({ ...f.env, SHIM_PORT: port, SHIM_DATABASE_URL: `sqlite:${join(f.dir, "other", "shim.db")}` }).catch((e: unknown) => e);
    if (!(failed instanceof ShimStartError)) throw new Error(`expected a failed start, got ${String(failed)}`);
    expect(failed.exit).toEqual({ code: 1, signal: null });
    const errors = failed.lines.map((l) => JSON.parse(l)).filter((l) => l.level >= 50);
    expect(errors.map((l) => l.msg)).toEqual([`cannot listen on 127.0.0.1:${port}: the address is in use by another process; set SHIM_PORT (and SHIM_HOST) to a free address`]);
    expect(errors[0]).not.toHaveProperty("err");
    output.keep(failed);
    await output.stopCleanly(first);
  });

  it("a SHIM_DATABASE_URL the driver cannot read: exit 1 saying so, not a store failure that a restart would fix", async () => {
    const failed = await spawnShim({ ...f.env, SHIM_DATABASE_URL: "postgres://shim:hunter2@db:99999/shim" }).catch((e: unknown) => e);
    if (!(failed instanceof ShimStartError)) throw new Error(`expected a failed start, got ${String(failed)}`);
    output.keep(failed);
    expect(failed.exit).toEqual({ code: 1, signal: null });
    expect(failed.stderr()).toMatch(/^invalid api-shim configuration:\n {2}- SHIM_DATABASE_URL: "postgres:\/\/shim:\*\*\*@db:99999\/shim" is not valid/);
    expect(failed.lines.join("\n")).not.toContain("the store failed closed");
    expect(`${failed.stderr()}${failed.lines.join("\n")}`).not.toContain("hunter2");
    // Found by review: a password's `@` and `/` unencoded passed, and the driver logged ENOTFOUND
    // for the part of the password it took for the host.
    const atInPassword = await spawnShim({ ...f.env, SHIM_DATABASE_URL: "postgres://shim:K9x@Lmq7Zr2/Wt5@db.internal:5432/shim" }).catch((e: unknown) => e);
    if (!(atInPassword instanceof ShimStartError)) throw new Error(`expected a failed start, got ${String(atInPassword)}`);
    output.keep(atInPassword);
    expect(atInPassword.exit).toEqual({ code: 1, signal: null });
    expect(atInPassword.stderr()).toMatch(/^invalid api-shim configuration:\n {2}- SHIM_DATABASE_URL: "postgres:\/\/shim:\*\*\*@db.internal:5432\/shim" is not valid: .*percent-encode/);
    expect(`${atInPassword.stderr()}${atInPassword.lines.join("\n")}`).not.toMatch(/K9x|Lmq7Zr2|Wt5/);
  });

  it("PG* variables the Postgres driver would read, with a postgres:// SHIM_DATABASE_URL: exit 1 naming them, no value shown; with SQLite they are ignored", async () => {
    const pgEnv = { PGPASSWORD: "hunter2-pg", PGSSLMODE: "no-verify", PGOPTIONS: "-c statement_timeout=0" };
    const failed = await spawnShim({ ...f.env, SHIM_DATABASE_URL: "postgres://shim@127.0.0.1:1/shim", ...pgEnv }).catch((e: unknown) => e);
    if (!(failed instanceof ShimStartError)) throw new Error(`expected a failed start, got ${String(failed)}`);
    output.keep(failed);
    expect(failed.exit).toEqual({ code: 1, signal: null });
    expect(failed.stderr()).toMatch(/^invalid api-shim configuration:\n {2}- PGOPTIONS: is set, .*\n {2}- PGPASSWORD: is set, .*\n {2}- PGSSLMODE: is set, /);
    expect(`${failed.stderr()}${failed.lines.join("\n")}`).not.toMatch(/hunter2|no-verify|statement_timeout=0/);
    const p = await start(pgEnv);
    await output.stopCleanly(p);
  });

  it("a database a newer shim made (an image rolled back): exit 1 saying so, not a store failure", async () => {
    mkdirSync(join(f.dir, "newer"));
    const file = join(f.dir, "newer", "shim.db");
    const db = new Database(file);
    db.pragma("user_version = 99");
    db.close();
    const failed = await spawnShim({ ...f.env, SHIM_DATABASE_URL: `sqlite:${file}` }).catch((e: unknown) => e);
    if (!(failed instanceof ShimStartError)) throw new Error(`expected a failed start, got ${String(failed)}`);
    output.keep(failed);
    expect(failed.exit).toEqual({ code: 1, signal: null });
    const errors = failed.lines.map((l) => JSON.parse(l)).filter((l) => l.level >= 50).map((l) => l.msg);
    expect(errors).toEqual([`${file} was made by a newer version of the shim (schema 99, this one knows ${MIGRATIONS.length}); run the newer image or restore a backup`]);
  });

  it("the first start on a ledger an older shim made says, in one line, that it migrated it and from which schema; a new ledger, or the next start, says nothing", async () => {
    mkdirSync(join(f.dir, "schema3"));
    const file = join(f.dir, "schema3", "shim.db");
    schema3Ledger(file);
    const migrated = (p: ShimProcess) => p.lines.map((l) => JSON.parse(l)).filter((e) => typeof e.msg === "string" && e.msg.startsWith("migrated the ledger"));
    for (const [ledger, expected] of [[file, 1], [file, 0], [join(f.dir, "schema3", "new.db"), 0]] as const) {
      const p = await start({ SHIM_DATABASE_URL: `sqlite:${ledger}` });
      await output.stopCleanly(p);
      expect(migrated(p)).toEqual(expected === 0 ? [] : [expect.objectContaining({
        level: 30, schemaFrom: 3, schemaTo: MIGRATIONS.length, ms: expect.any(Number),
        msg: expect.stringMatching(/^migrated the ledger from schema 3 to 4 \(the schema of shims from 2026-12-03 on\) in \d+ ms: an older shim may not open it/),
      })]);
    }
  });

  it("a bootstrap key with the id of a key made with the admin API: exit 1 naming the id, that key left as it was", async () => {
    mkdirSync(join(f.dir, "taken"));
    const file = join(f.dir, "taken", "shim.db");
    const theirs = { id: key.id, name: "theirs", hash: generateKey().hash, tier: "pro", models: null, expiresAt: null, credits: 5 * CREDIT, at: Date.now() };
    let store = new SqliteStore(file);
    await store.createKey(theirs);
    await store.close();
    const failed = await spawnShim({ ...f.env, SHIM_DATABASE_URL: `sqlite:${file}` }).catch((e: unknown) => e);
    if (!(failed instanceof ShimStartError)) throw new Error(`expected a refused start, got ${String(failed)}`);
    output.keep(failed);
    expect(failed.exit).toEqual({ code: 1, signal: null });
    const errors = failed.lines.map((l) => JSON.parse(l)).filter((l) => l.level >= 50).map((l) => l.msg);
    expect(errors).toEqual([`bootstrap key ${key.id} has the id of a key made with the admin API; give it another id`]);
    store = new SqliteStore(file);
    expect(await store.getKey(key.id)).toMatchObject({ name: "theirs", hash: theirs.hash, tier: "pro", balance: 5 * CREDIT, revokedAt: null });
    await store.close();
  });

  it("a bootstrap key's grant that would take its balance past a billion credits is not made, and the start says so", async () => {
    mkdirSync(join(f.dir, "full"));
    const file = join(f.dir, "full", "shim.db");
    let store = new SqliteStore(file);
    await store.ensureBootstrapKey({ id: key.id, name: "app", hash: key.hash, tier: "enterprise", models: null, expiresAt: null, credits: 0, at: Date.now() });
    await store.topUp({ keyId: key.id, amount: MAX_BALANCE_MICRO - CREDIT, note: null, at: Date.now(), idempotency: null, respond: () => "", refuse: () => null });
    await store.close();
    const p = await start({ SHIM_DATABASE_URL: `sqlite:${file}` });
    expect(await p.waitForLine((e) => e.level === 40 && e.keyId === key.id)).toMatchObject({
      credits: "1000000",
      msg: "bootstrap key's credits not granted: they would take its balance past 1000000000 credits, as a top-up would; a later start grants them once they fit",
    });
    await output.stopCleanly(p);
    store = new SqliteStore(file);
    expect(await store.getKey(key.id)).toMatchObject({ balance: MAX_BALANCE_MICRO - CREDIT });
    await store.close();
  });

  it("a second process on the same SQLite file is refused, and the first one's holds are kept", async () => {
    f.fake.set({ tokenDelayMs: 50, defaultTokens: 2000 });
    const first = await start();
    const streams = await Promise.all(Array.from({ length: 3 }, () => openStream(first, 2000)));
    const held = (await audit()).find((r) => r.keyId === key.id)!.held;
    expect(held).toBeGreaterThan(0);
    const second = await spawnShim({ ...f.env }).catch((e: unknown) => e);
    if (!(second instanceof ShimStartError)) throw new Error(`expected a refused start, got ${String(second)}`);
    expect(second.exit).toEqual({ code: 1, signal: null });
    const errors = second.lines.map((l) => JSON.parse(l)).filter((l) => l.level >= 50).map((l) => l.msg);
    expect(errors).toEqual([expect.stringMatching(/^another shim process is using .*shim\.db \(one process per SQLite file/)]);
    output.keep(second);
    // Nothing was released under the running process.
    expect((await audit()).find((r) => r.keyId === key.id)!.held).toBe(held);
    await Promise.all(streams.map((s) => s.return?.()));
    await output.stopCleanly(first);
    // Its lock went with it: the next start is not refused.
    await output.stopCleanly(await start());
  });

  it("a tier taken out of the configuration: its keys are served under defaultTier's limits, and the start says so", async () => {
    // The test's configuration (its bootstrap key kept), with one more tier.
    const withTier = join(f.dir, "with-tier.yaml");
    writeFileSync(withTier, stringify({ ...(parse(readFileSync(f.env.SHIM_CONFIG!, "utf8")) as object), tiers: { workshop: { rpm: 1000, tpm: 1000000 } } }));
    const first = await start({ SHIM_CONFIG: withTier });
    const made = await fetch(`${first.url}/admin/keys`, { method: "POST", headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" }, body: JSON.stringify({ name: "w", tier: "workshop", credits: 5 }) });
    expect(made.status).toBe(201);
    const workshopKey = ((await made.json()) as { key: string }).key;
    await output.stopCleanly(first);

    const p = await start(); // the test's configuration: no workshop tier
    expect(await p.waitForLine((e) => e.tier === "workshop")).toMatchObject({
      level: 40, keys: 1, defaultTier: "free",
      msg: "live keys have a tier the configuration does not define: they are served under defaultTier's limits until it is defined again",
    });
    const served = await fetch(`${p.url}/v1/models`, { headers: { authorization: `Bearer ${workshopKey}` } });
    expect(served.headers.get("x-ratelimit-limit")).toBe("10"); // free's, not workshop's 1000
    await output.stopCleanly(p);
    assertNoSecrets([...first.lines, ...p.lines], [workshopKey]);
  });

  it("a served model renamed: live keys whose allow-list names none of the configuration's models are named at start (never their secrets)", async () => {
    // The test's configuration with the model about to be renamed served beside it.
    const withOld = join(f.dir, "with-old-name.yaml");
    const config = parse(readFileSync(f.env.SHIM_CONFIG!, "utf8")) as { models: object[] };
    writeFileSync(withOld, stringify({ ...config, models: [...config.models, { name: "old-name", maxModelLen: 4096 }] }));
    const first = await start({ SHIM_CONFIG: withOld });
    const make = async (body: object) => {
      const made = await fetch(`${first.url}/admin/keys`, { method: "POST", headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" }, body: JSON.stringify({ tier: "free", credits: 5, ...body }) });
      expect(made.status).toBe(201);
      return (await made.json()) as { id: string; key: string };
    };
    const stranded = await make({ name: "stranded", models: ["old-name"] });
    const both = await make({ name: "both", models: ["old-name", "qwen2.5-7b"] });
    const revoked = await make({ name: "revoked", models: ["old-name"] });
    expect((await fetch(`${first.url}/admin/keys/${revoked.id}`, { method: "DELETE", headers: { authorization: `Bearer ${adminToken}` } })).status).toBe(200);
    await output.stopCleanly(first);

    const p = await start(); // the test's configuration: "old-name" is served no more
    const line = await p.waitForLine((e) => Array.isArray(e.keys) && e.level === 40);
    expect(line).toMatchObject({
      count: 1,
      keys: [{ id: stranded.id, name: "stranded", models: ["old-name"] }],
      served: ["qwen2.5-7b"],
      msg: "live keys may use no model the configuration serves (their allow-list names none): every request they make is refused until it names one; change their allow-list (manage-keys update --key <name> --models <served>) (docs/configuration.md, model.servedName)",
    });
    // What the line says: the stranded key sees no model; the one that also names the served model is not named.
    const seen = await fetch(`${p.url}/v1/models`, { headers: { authorization: `Bearer ${stranded.key}` } });
    expect(((await seen.json()) as { data: unknown[] }).data).toEqual([]);
    await output.stopCleanly(p);
    assertNoSecrets([...first.lines, ...p.lines], [stranded.key, both.key, revoked.key]);
  });

  it("without a model list (pass-through) no key is said to use no served model", async () => {
    const passThrough = join(f.dir, "pass-through.yaml");
    const { models: _, ...config } = parse(readFileSync(f.env.SHIM_CONFIG!, "utf8")) as { models: object[] };
    writeFileSync(passThrough, stringify(config));
    const first = await start({ SHIM_CONFIG: passThrough });
    const made = await fetch(`${first.url}/admin/keys`, { method: "POST", headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" }, body: JSON.stringify({ name: "any", tier: "free", credits: 5, models: ["some-model"] }) });
    expect(made.status).toBe(201);
    await output.stopCleanly(first);
    const p = await start({ SHIM_CONFIG: passThrough });
    await output.stopCleanly(p);
    expect(p.lines.filter((l) => l.includes("no model the configuration serves"))).toEqual([]);
  });

  it("a first start (a new database, no SHIM_CONFIG) says nothing of released holds nor of configuration's keys; without SHIM_CONFIG over configuration's live keys, it warns how many are left as they are", async () => {
    const url = `sqlite:${join(f.dir, "first-start", "shim.db")}`;
    const fresh = await start({ SHIM_CONFIG: "", SHIM_DATABASE_URL: url });
    await output.stopCleanly(fresh);
    expect(fresh.lines.filter((l) => /released|SHIM_CONFIG/.test(l))).toEqual([]);
    expect(releasedAtStart(fresh)).toBe(0);

    await output.stopCleanly(await start({ SHIM_DATABASE_URL: url })); // the test's configuration: one bootstrap key
    const bare = await start({ SHIM_CONFIG: "", SHIM_DATABASE_URL: url });
    expect(await bare.waitForLine((e) => String(e.msg).startsWith("SHIM_CONFIG is not set"))).toMatchObject({
      level: 40, keys: 1,
      msg: "SHIM_CONFIG is not set: the database's live keys from a configuration are neither revoked nor updated (a key taken out of it keeps working; a changed tier, allow-list or secret is not applied) until a start with SHIM_CONFIG",
    });
    await output.stopCleanly(bare);

    // Revoked by a start whose configuration has none: nothing left to warn of.
    const none = join(f.dir, "no-keys.yaml");
    writeFileSync(none, stringify({ models: [{ name: "qwen2.5-7b", maxModelLen: 4096 }] }));
    await output.stopCleanly(await start({ SHIM_CONFIG: none, SHIM_DATABASE_URL: url }));
    const after = await start({ SHIM_CONFIG: "", SHIM_DATABASE_URL: url });
    await output.stopCleanly(after);
    expect(after.lines.filter((l) => l.includes("SHIM_CONFIG"))).toEqual([]);
  });

  it("a bootstrap key still in the configuration but revoked (reap-expired revokes a tenant's keys, stack keys too) is warned of at each start, once, with how to get a working one: its 401s otherwise went unsaid", async () => {
    const url = `sqlite:${join(f.dir, "revoked-configured", "shim.db")}`;
    const first = await start({ SHIM_DATABASE_URL: url });
    const revoked = await fetch(`${first.url}/admin/keys/${key.id}`, { method: "DELETE", headers: { authorization: `Bearer ${adminToken}` } });
    expect(revoked.status).toBe(200);
    await output.stopCleanly(first);
    expect(first.lines.filter((l) => l.includes("revoked in the database"))).toEqual([]); // live at that start
    const p = await start({ SHIM_DATABASE_URL: url });
    await output.stopCleanly(p);
    const warnings = p.lines.map((l) => JSON.parse(l)).filter((l) => String(l.msg).includes("revoked in the database"));
    expect(warnings).toEqual([expect.objectContaining({
      level: 40, keyIds: [key.id],
      msg: "configured bootstrap keys are revoked in the database (a revoke by hand, or reap-expired's): their requests get 401, and the stack's apiKeys output still shows them; a revoked key cannot be brought back: give each a new id (pulumi up --replace of its <tenant>-key-<name>-id resource, docs/operations.md) or, for a shim you run yourself, a new id and hash in SHIM_CONFIG's bootstrapKeys",
    })]);
    assertNoSecrets(p.lines, [key.key]);
  });

  it("a bootstrap key removed from the configuration stops working at the next start", async () => {
    await output.stopCleanly(await start()); // the configured key is made (run alone, this is the file's first start)
    // Without SHIM_CONFIG (say, a manual run against the same database) nothing is revoked.
    const bare = await start({ SHIM_CONFIG: "" });
    expect((await client(bare).models.list()).data.length).toBeGreaterThan(0);
    await output.stopCleanly(bare);

    const replacement = generateKey();
    writeFileSync(
      join(f.dir, "replaced.yaml"),
      stringify({ models: [{ name: "qwen2.5-7b", maxModelLen: 4096 }], bootstrapKeys: [{ id: replacement.id, name: "app2", hash: replacement.hash, credits: 5, tier: "free" }] }),
    );
    const p = await start({ SHIM_CONFIG: join(f.dir, "replaced.yaml") });
    expect(await p.waitForLine((e) => e.msg === "bootstrap key no longer in the configuration: revoked")).toMatchObject({ keyId: key.id });
    const old = await client(p).models.list().then(() => 200, (e: { status?: number }) => e.status);
    expect(old).toBe(401);
    const fresh = shimClient(p, replacement.key);
    expect((await fresh.models.list()).data.map((m) => m.id)).toEqual(["qwen2.5-7b"]);
    await output.stopCleanly(p);
    assertNoSecrets([...p.lines, p.stderr()], [replacement.key]);
  });
});
