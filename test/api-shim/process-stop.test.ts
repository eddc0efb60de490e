import { mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { generateKey } from "../../api-shim/src/auth/keys.ts";
import { SqliteStore } from "../../api-shim/src/store/sqlite-store.ts";
import { keptConnection } from "../support/kept-connection.ts";
import { isDraining, openStream, shimClient, shimProcessFixture } from "../support/shim-process.ts";

/** How the shim process stops: a store failure during a drain, a signal during start-up, a SIGKILL after a top-up. */
describe("stopping the shim process", () => {
  const f = shimProcessFixture("shim-stop-");
  const { key, adminToken, output, start, db, audit } = f;
  const messages = (lines: string[]) => lines.map((l) => JSON.parse(l) as Record<string, unknown>);

  it("a non-streamed request still waiting at the drain's end: cut, its hold released, exit 0", async () => {
    f.fake.set({ tokenDelayMs: 5, defaultTokens: 2000 });
    const p = await start({ SHIM_DRAIN_TIMEOUT_MS: "800" });
    const answer = fetch(`${p.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key.key}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "x" }], max_tokens: 2000 }),
    }).then((res) => res.status);
    await f.fake.until((c) => c.received > 0);
    p.child.kill("SIGTERM");
    expect(await answer).toBe(503);
    expect(await p.exited).toEqual({ code: 0, signal: null });
    output.keep(p);
    expect(messages(p.lines).find((e) => e.msg === "stopped")).toMatchObject({ aborted: 1, exitCode: 0 });
    const after = await audit();
    expect(after).toMatchObject({ held: 0, reservations: 0, ledgerSum: after.balance });
    f.fake.reset();
  });

  it("a store that fails closed during a SIGTERM drain cuts what is in flight at once, not at the drain's end; exit 1", async () => {
    f.fake.set({ tokenDelayMs: 40, defaultTokens: 5000 });
    // A drain past the test's timeout: only the store's failure can end this one in time.
    const p = await start({ SHIM_DRAIN_TIMEOUT_MS: "60000" });
    const long = await openStream(p, key.key, 5000);
    const short = await openStream(p, key.key, 12);
    // Stands for a disk error at COMMIT, as in process.test.ts: the short stream's settlement fails the store.
    const other = new Database(db());
    other.exec("CREATE TRIGGER fail_money BEFORE UPDATE OF held ON keys BEGIN SELECT RAISE(ABORT, 'disk on fire'); END");
    try {
      p.child.kill("SIGTERM");
      await p.waitForLine(isDraining);
      // Its settlement's COMMIT fails: it ends with the store's 503, not the figures of a charge never written.
      await expect((async () => { for (let r = await short.next(); !r.done; r = await short.next()); })()).rejects.toThrow(/Service temporarily unavailable/);
      const shortEnded = performance.now();
      await p.waitForLine((e) => e.msg === "the store failed closed; exiting so the shim is restarted");
      // The long stream (5000 tokens, 200 s) is cut now; it used to stream, unbilled, until the drain timeout.
      await expect((async () => { for (let r = await long.next(); !r.done; r = await long.next()); })()).rejects.toBeDefined();
      expect(await p.exited).toEqual({ code: 1, signal: null });
      // From the failure to the exit: the margin is for a stalled machine, the drain's 60 s far past it.
      expect(performance.now() - shortEnded).toBeLessThan(10_000);
      output.keep(p);
      // Both cut: the short one was still waiting for its settlement to be written.
      expect(messages(p.lines).find((e) => e.msg === "stopped")).toMatchObject({ aborted: 2, exitCode: 1 });
    } finally {
      other.exec("DROP TRIGGER fail_money");
      other.close();
    }
    // Both holds are released at the next start, uncharged.
    await output.stopCleanly(await start());
    expect(await audit()).toMatchObject({ held: 0, reservations: 0 });
    f.fake.reset();
  }, 30_000);

  it("SIGTERM during start-up (as `docker stop` of a container whose node is PID 1) is acted on once the start is over: exit 0, never listening, the store closed", async () => {
    // A start made slow by writing many bootstrap keys; the signal comes after the first.
    const slowDir = mkdtempSync(join(f.dir, "slow-start-"));
    const keys = Array.from({ length: 400 }, (_, i) => ({ id: generateKey().id, name: `k${i}`, hash: generateKey().hash, credits: 1, tier: "enterprise" }));
    writeFileSync(join(slowDir, "shim.yaml"), stringify({ pricing: { models: { "qwen2.5-7b": { promptPer1k: 0, completionPer1k: 1000 } } }, bootstrapKeys: keys }));
    const file = join(slowDir, "shim.db");
    const child = await output.start({ ...f.env, SHIM_DATABASE_URL: `sqlite:${file}`, SHIM_CONFIG: join(slowDir, "shim.yaml") }, (e) => e.msg === "bootstrap key");
    child.child.kill("SIGTERM");
    expect(await child.exited).toEqual({ code: 0, signal: null });
    output.keep(child);
    // Timed by its log, from the start's end to the stop, not from the signal: the rest of the start
    // (400 keys) takes what the machine gives it. A stop that waited then (a drain, a timeout) would
    // outlast the margin left for a stalled machine.
    const at = (msg: string) => Number(messages(child.lines).find((e) => e.msg === msg)?.time);
    expect(at("stopped") - at("asked to stop while starting: stopping before listening")).toBeLessThan(10_000);
    const said = messages(child.lines).map((e) => e.msg);
    expect(said).not.toContain("api-shim listening");
    expect(said.slice(-2)).toEqual(["asked to stop while starting: stopping before listening", "stopped"]);
    // The start was finished, not cut half way: every bootstrap key is there, and the file is not held.
    const store = new SqliteStore(file);
    try {
      expect((await store.listKeys()).length).toBe(keys.length);
    } finally {
      await store.close();
    }
  }, 30_000);

  it("SIGTERM while the port is being opened: acted on once the shim listens (listening, draining, stopped), exit 0", async () => {
    // The shim's first listen sends itself SIGTERM and opens the port 300 ms later.
    const preload = join(f.dir, "slow-listen.mjs");
    writeFileSync(preload, `import net from "node:net";
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  net.Server.prototype.listen = listen;
  process.kill(process.pid, "SIGTERM");
  setTimeout(() => listen.apply(this, args), 300);
  return this;
};
`);
    const child = await start({ NODE_OPTIONS: `--import=${preload}` }, (e) => e.msg === "bootstrap key");
    expect(await child.exited).toEqual({ code: 0, signal: null });
    output.keep(child);
    const said = messages(child.lines).map((e) => (isDraining(e) ? "draining" : e.msg)).filter((m) => ["api-shim listening", "draining", "stopped"].includes(m as string));
    expect(said).toEqual(["api-shim listening", "draining", "stopped"]);
  }, 30_000);

  it("SIGTERM with nothing in flight but idle kept-alive connections (an SDK's, nginx's upstream keepalive): exits at once, not at their 65 s keep-alive or the drain's end", async () => {
    // A 60 s drain: a stop that waited for an idle connection (until its client or the 65 s
    // keepAliveTimeout closed it) or waited out the drain with nothing in flight would not exit
    // within the bound, and `docker stop` would SIGKILL it at its 30 s grace. (Node's server.close()
    // closes idle connections itself, so the idle one is not what closeApp's closeAllConnections is for.)
    const p = await start({ SHIM_DRAIN_TIMEOUT_MS: "60000" });
    await shimClient(p, key.key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 2 });
    // A raw connection that answered one request and stays open, idle: it never closes itself.
    const idle = await keptConnection(p.url);
    try {
      idle.s.write("GET /health HTTP/1.1\r\nHost: shim\r\n\r\n");
      await expect.poll(() => idle.statuses()).toEqual(["HTTP/1.1 200"]);
      const signalled = performance.now();
      p.child.kill("SIGTERM");
      expect(await p.exited).toEqual({ code: 0, signal: null });
      // Measured at ~30 ms; the margin is for a stalled machine.
      expect(performance.now() - signalled).toBeLessThan(10_000);
      output.keep(p);
      expect(messages(p.lines).find((e) => isDraining(e))).toMatchObject({ inflight: 0, msg: "draining: nothing in flight" });
    } finally {
      idle.s.destroy();
    }
  }, 30_000);

  it("a top-up answered just before a SIGKILL: after a restart, the same Idempotency-Key replays it, nothing granted twice", async () => {
    const p = await start();
    const topUp = (url: string) => fetch(`${url}/admin/keys/${key.id}/credits`, {
      method: "POST",
      headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json", "idempotency-key": "t-1" },
      body: JSON.stringify({ amount: 5 }),
    }).then(async (res) => ({ status: res.status, body: await res.json() }));
    const first = await topUp(p.url);
    expect(first.status).toBe(200);
    p.child.kill("SIGKILL");
    await p.exited;
    output.keep(p);
    const before = await audit();
    const q = await start();
    expect(await topUp(q.url)).toEqual(first);
    await output.stopCleanly(q);
    const after = await audit();
    expect(after).toEqual(before);
    expect(after.balance).toBe(after.ledgerSum);
  }, 30_000);
});
