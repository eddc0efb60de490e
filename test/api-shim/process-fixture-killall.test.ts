// test/support/shim-process.ts: killAll stops what start() ran,
// and scan only once a stopped process's output is read to its end.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, expect, it } from "vitest";
import { generateKey } from "../../api-shim/src/auth/keys.ts";
import { FakeVllm } from "../support/fake-vllm.ts";
import { type ShimProcess, ShimProcesses, writeProcessConfig } from "../support/shim-process.ts";

const dir = mkdtempSync(join(tmpdir(), "shim-killall-"));
let fake: FakeVllm | undefined;
afterAll(async () => {
  await fake?.close();
  rmSync(dir, { recursive: true, force: true });
});

it("killAll stops a process start() ran", async () => {
  fake = await new FakeVllm().start();
  const key = generateKey();
  const o = new ShimProcesses();
  const p = await o.start({ SHIM_UPSTREAM_URL: fake.url, SHIM_DATABASE_URL: `sqlite:${join(dir, "shim.db")}`, SHIM_CONFIG: writeProcessConfig(dir, key, [{ name: "qwen2.5-7b", maxModelLen: 4096 }]), SHIM_ADMIN_TOKEN: `adm-${generateKey().key}` });
  try {
    await o.killAll();
    expect(p.child.exitCode !== null || p.child.signalCode !== null).toBe(true);
  } finally {
    if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
  }
});

it("killAll scans what a process wrote after it was killed, up to its close", async () => {
  const leaked = "sk-gs-AAAAAAAAAAAA_" + "c".repeat(32);
  const lines: string[] = [];
  let close!: () => void;
  const closed = new Promise<void>((r) => (close = r));
  const p = { child: { kill: () => { setTimeout(() => { lines.push(`{"msg":"last words ${leaked}"}`); close(); }, 50); return true; }, exitCode: null, signalCode: null }, lines, stderr: () => "", exited: closed.then(() => ({ code: null, signal: "SIGKILL" })), closed } as unknown as ShimProcess;
  const o = new ShimProcesses(() => [leaked]);
  (o as unknown as { spawned: ShimProcess[] }).spawned.push(p);
  o.keep(p);
  await expect(o.killAll()).rejects.toThrow(/a secret appeared/);
});
