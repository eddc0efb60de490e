import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { generateKey } from "../../api-shim/src/auth/keys.ts";
import { FakeVllm } from "../support/fake-vllm.ts";
import { type ShimProcess, ShimProcesses, shimProcessFixture, writeProcessConfig } from "../support/shim-process.ts";

/** The scan of ShimProcesses itself: each stop fails when what a process wrote holds a secret, and killAll stops what start() ran. */
describe("ShimProcesses' scan for secrets", () => {
  const leaked = "sk-gs-AAAAAAAAAAAA_" + "b".repeat(32);
  const fakeProcess = (lines: string[], stderr = "") =>
    ({ child: { kill: () => true, exitCode: 0, signalCode: null }, lines, stderr: () => stderr, exited: Promise.resolve({ code: 0, signal: null }), closed: Promise.resolve() }) as unknown as ShimProcess;

  it("killAll fails on a secret in a kept process's lines", async () => {
    const o = new ShimProcesses(() => [leaked]);
    o.keep(fakeProcess([`{"msg":"oops ${leaked}"}`]));
    await expect(o.killAll()).rejects.toThrow(/a secret appeared/);
  });

  it("killAll fails on a secret in a kept process's stderr", async () => {
    const o = new ShimProcesses(() => [leaked]);
    o.keep(fakeProcess([], `Error: ${leaked}\n`));
    await expect(o.killAll()).rejects.toThrow(/a secret appeared/);
  });

  it("stopCleanly fails on a secret in the stopped process's output", async () => {
    const o = new ShimProcesses(() => [leaked]);
    await expect(o.stopCleanly(fakeProcess([`{"msg":"${leaked}"}`]))).rejects.toThrow(/a secret appeared/);
  });

  it("a leak is reported once: the file's later stops do not fail for it again", async () => {
    const o = new ShimProcesses(() => [leaked]);
    o.keep(fakeProcess([`{"msg":"${leaked}"}`]));
    await expect(o.killAll()).rejects.toThrow(/a secret appeared/);
    await expect(o.killAll()).resolves.toBeUndefined(); // the next test's stop is not blamed for it
    await expect(o.stopCleanly(fakeProcess([`{"msg":"${leaked}"}`]))).rejects.toThrow(/a secret appeared/);
    await expect(o.stopCleanly(fakeProcess(['{"msg":"clean"}']))).resolves.toBeUndefined();
    await expect(o.killAll()).resolves.toBeUndefined();
  });

  it("one stop names every process that leaked, each once", async () => {
    const o = new ShimProcesses(() => [leaked]);
    o.keep(fakeProcess([`{"msg":"first ${leaked}"}`]));
    o.keep(fakeProcess([], `second ${leaked}\n`));
    const err = (await o.killAll().then(() => undefined, (e: unknown) => e)) as Error;
    expect(err.message.match(/a secret appeared/g)).toHaveLength(2);
    expect(err.message).toContain("first <SECRET>");
    expect(err.message).toContain("second <SECRET>");
  });

  it("a process whose stop did not exit 0 is still scanned, by the file's killAll", async () => {
    const o = new ShimProcesses(() => [leaked]);
    const crashed = { ...fakeProcess([`{"msg":"${leaked}"}`]), exited: Promise.resolve({ code: 1, signal: null }) } as ShimProcess;
    await expect(o.stopCleanly(crashed)).rejects.toThrow(/expected/);
    await expect(o.killAll()).rejects.toThrow(/a secret appeared/);
  });

  it("killAll scans what a process wrote after it was killed, up to its close", async () => {
    const lines: string[] = [];
    let close!: () => void;
    const closed = new Promise<void>((r) => (close = r));
    const kill = () => { setTimeout(() => { lines.push(`{"msg":"last words ${leaked}"}`); close(); }, 50); return true; };
    const p = { ...fakeProcess(lines), child: { kill, exitCode: null, signalCode: null }, exited: closed.then(() => ({ code: null, signal: "SIGKILL" })), closed } as unknown as ShimProcess;
    const o = new ShimProcesses(() => [leaked]);
    (o as unknown as { spawned: ShimProcess[] }).spawned.push(p);
    o.keep(p);
    await expect(o.killAll()).rejects.toThrow(/a secret appeared/);
  });

  it("without secrets, nothing fails", async () => {
    const o = new ShimProcesses();
    o.keep(fakeProcess([`{"msg":"${leaked}"}`]));
    await o.killAll();
  });

  describe("a real process no test kept", () => {
    const dir = mkdtempSync(join(tmpdir(), "shim-scan-"));
    let fake: FakeVllm | undefined;
    afterAll(async () => {
      await fake?.close();
      rmSync(dir, { recursive: true, force: true });
    });
    const env = async (db: string) => {
      fake ??= await new FakeVllm().start();
      const key = generateKey();
      return { SHIM_UPSTREAM_URL: fake.url, SHIM_DATABASE_URL: `sqlite:${join(dir, db)}`, SHIM_CONFIG: writeProcessConfig(dir, key, [{ name: "qwen2.5-7b", maxModelLen: 4096 }]), SHIM_ADMIN_TOKEN: `adm-${generateKey().key}` };
    };
    it("killAll scans a process started with start() even when no test called keep", async () => {
      // What the shim surely logs stands in for a leaked secret.
      const o = new ShimProcesses(() => ["api-shim listening"]);
      await o.start(await env("scanned.db"));
      await expect(o.killAll()).rejects.toThrow(/a secret appeared/);
    });
    it("killAll stops a process start() ran", async () => {
      const o = new ShimProcesses();
      const p = await o.start(await env("stopped.db"));
      try {
        await o.killAll();
        expect(p.child.exitCode !== null || p.child.signalCode !== null).toBe(true);
      } finally {
        if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
      }
    });
  });
});

describe("shimProcessFixture's scan", () => {
  const f = shimProcessFixture("shim-scan-fixture-");
  it("looks for the fixture's key and its admin token", () => {
    for (const secret of [f.key.key, f.adminToken]) {
      const leak = { lines: [`{"msg":"oops ${secret}"}`], stderr: () => "" };
      f.output.keep(leak);
      expect(() => f.output.scan()).toThrow(/a secret appeared/);
      leak.lines.length = 0; // the file's own scan at its end must pass
    }
  });
});
