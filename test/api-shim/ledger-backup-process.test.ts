import { copyFileSync, readdirSync, statfsSync, statSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { MIN_FREE_BYTES } from "../../api-shim/src/store/sqlite-space.ts";
import { main } from "../../scripts/backup-ledger.ts";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { FakePulumi } from "../scripts/fake-pulumi.ts";
import { type ShimProcess, shimClient, shimProcessFixture } from "../support/shim-process.ts";
import { smallVolume, unmountVolume } from "../support/small-volume.ts";
import { tempDir } from "../support/tools.ts";

/**
 * `npm run backup-ledger` against a real shim process on SQLite: the file it saves is the ledger
 * (the same keys, balances and charges), a shim started on it serves the same balances, a backup
 * taken while requests are charged is consistent, and no copy is left beside the ledger.
 */
describe("backing up the SQLite ledger of a running shim", () => {
  const f = shimProcessFixture("ledger-backup-");

  const admin = (p: ShimProcess, path: string, init: RequestInit = {}) =>
    fetch(`${p.url}${path}`, { ...init, headers: { authorization: `Bearer ${f.adminToken}`, "content-type": "application/json", ...(init.headers as Record<string, string>) } });
  const ask = (p: ShimProcess, key: string) => shimClient(p, key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "one two three" }], max_tokens: 4 });
  /** Runs the script against `p`, in a directory of its own (or `root`). */
  async function backup(p: ShimProcess, argv: string[] = [], root = tempDir("ledger-backup-out-")) {
    const io = memoryIo();
    const code = await main(["--url", p.url, ...argv], { io, env: { GPU_SANDBOX_ADMIN_TOKEN: f.adminToken }, pulumi: new FakePulumi(), root, now: () => new Date(Date.UTC(2026, 2, 15, 12, 30, 5)) });
    return { code, io, root };
  }
  /** Each key's balance and ledger sum, and the ledger's row count, as a SQLite file has them. */
  function ledgerOf(file: string) {
    const db = new Database(file, { readonly: true, fileMustExist: true });
    try {
      return {
        integrity: db.pragma("integrity_check", { simple: true }),
        keys: db.prepare("SELECT k.id, k.hash, k.balance, coalesce((SELECT sum(amount) FROM ledger l WHERE l.key_id = k.id), 0) AS ledgerSum FROM keys k ORDER BY k.id").all() as { id: string; hash: string; balance: number; ledgerSum: number }[],
        rows: (db.prepare("SELECT count(*) AS n FROM ledger").get() as { n: number }).n,
      };
    } finally {
      db.close();
    }
  }
  const leftovers = (dir: string) => readdirSync(dir).filter((n) => n.includes(".backup-"));

  it("saves a file that is the ledger: the same keys, balances and charges; a shim started on it answers the same balances; nothing is left beside the ledger", async () => {
    const p = await f.start();
    const created = await (await admin(p, "/admin/keys", { method: "POST", body: JSON.stringify({ name: "team-a", credits: 50, tier: "enterprise" }) })).json() as { id: string; key: string };
    expect((await admin(p, `/admin/keys/${created.id}/credits`, { method: "POST", body: JSON.stringify({ amount: 7, note: "top-up" }) })).status).toBe(200);
    for (let i = 0; i < 3; i++) await ask(p, created.key);
    for (let i = 0; i < 2; i++) await ask(p, f.key.key);

    const { code, io, root } = await backup(p);
    expect(code, io.text()).toBe(0);
    const saved = join(root, "127.0.0.1-ledger-20260315T123005Z.db");
    expect(io.stdout.join("\n")).toContain(`saved the ledger to ${saved} (${statSync(saved).size} bytes`);
    expect(statSync(saved).mode & 0o777).toBe(0o600);
    expect(readdirSync(root)).toEqual([basename(saved)]);

    const live = await (await admin(p, "/admin/keys")).json() as { data: { id: string; balance: number }[] };
    const copy = ledgerOf(saved);
    expect(copy.integrity).toBe("ok");
    expect(copy.keys.map((k) => k.id)).toEqual(live.data.map((k) => k.id).sort());
    for (const k of copy.keys) {
      expect(k.balance).toBe(k.ledgerSum);
      expect(k.balance / 1e6).toBe(live.data.find((l) => l.id === k.id)!.balance);
    }
    expect(copy).toEqual({ ...ledgerOf(f.db()), integrity: "ok" }); // the live file, read beside the running shim
    expect(copy.rows).toBeGreaterThanOrEqual(2 + 1 + 5); // two grants, a top-up, five charges
    expect(leftovers(join(f.dir, "data"))).toEqual([]);

    // Restore: a second shim on (a copy of) the backup answers the same keys and balances.
    const restoredDir = tempDir("ledger-restored-");
    copyFileSync(saved, join(restoredDir, "shim.db"));
    const r = await f.start({ SHIM_DATABASE_URL: `sqlite:${join(restoredDir, "shim.db")}` });
    const restored = await (await admin(r, "/admin/keys")).json() as typeof live;
    expect(restored.data.map((k) => [k.id, k.balance])).toEqual(live.data.map((k) => [k.id, k.balance]));
    expect((await ask(r, created.key)).choices[0]).toBeDefined(); // its keys work
    await f.output.stopCleanly(r);
    await f.output.stopCleanly(p);
  }, 60_000);

  it("a backup taken while requests are charged is consistent: each key's balance is its ledger's sum", async () => {
    const p = await f.start();
    let charging = true;
    const load = Promise.all(Array.from({ length: 4 }, async () => {
      let n = 0;
      while (charging) await ask(p, f.key.key).then(() => n++);
      return n;
    }));
    try {
      await new Promise((r) => setTimeout(r, 200));
      const { code, io, root } = await backup(p, ["--out", "during-load.db"]);
      expect(code, io.text()).toBe(0);
      const copy = ledgerOf(join(root, "during-load.db"));
      expect(copy.integrity).toBe("ok");
      for (const k of copy.keys) expect(k.balance).toBe(k.ledgerSum);
    } finally {
      charging = false;
    }
    expect((await load).reduce((a, b) => a + b)).toBeGreaterThan(0);
    expect(leftovers(join(f.dir, "data"))).toEqual([]);
    await f.output.stopCleanly(p);
  }, 60_000);

  it("a volume that would keep less than the shim needs with the copy on it: 507 saying what is needed and free, nothing written, and the shim serves on", async (ctx) => {
    const mnt = smallVolume(f.dir, "backup-volume-", "40m");
    if (mnt === null) return ctx.skip("cannot mount a tmpfs (needs root or CAP_SYS_ADMIN)");
    try {
      const file = join(mnt, "shim.db");
      const p = await f.start({ SHIM_DATABASE_URL: `sqlite:${file}` });
      await ask(p, f.key.key);
      // Room for the shim (16 MiB and a little) but not for the shim and a copy of its ledger.
      const free = () => { const s = statfsSync(mnt); return s.bavail * s.bsize; };
      const ledger = statSync(file).size + statSync(`${file}-wal`).size;
      writeFileSync(join(mnt, "weights"), Buffer.alloc(free() - MIN_FREE_BYTES - Math.floor(ledger / 2), 1));
      const res = await admin(p, "/admin/backup");
      expect(res.status).toBe(507);
      expect(res.headers.get("x-should-retry")).toBe("false");
      const body = await res.json() as { error: { code: string; message: string; bytes_needed: number; bytes_free: number } };
      expect(body.error.code).toBe("backup_no_room");
      expect(body.error.bytes_needed).toBeGreaterThanOrEqual(ledger + MIN_FREE_BYTES);
      expect(body.error.bytes_free).toBeLessThan(body.error.bytes_needed);
      expect(body.error.message).toContain(`it needs ${body.error.bytes_needed} bytes`);
      expect(body.error.message).toContain(`and ${body.error.bytes_free} bytes`);
      // The script says so and leaves no file.
      const { code, io, root } = await backup(p);
      expect(code).toBe(4);
      expect(io.text()).toMatch(/507 backup_no_room: Not enough free space on the ledger's volume for a backup/);
      expect(readdirSync(root)).toEqual([]);
      expect(leftovers(mnt)).toEqual([]);
      expect((await fetch(`${p.url}/ready`)).status).toBe(200);
      await ask(p, f.key.key);
      await f.output.stopCleanly(p);
    } finally {
      unmountVolume(mnt);
    }
  }, 60_000);

  it("a copy a killed process left beside the ledger is removed at the next start", async () => {
    const p = await f.start();
    p.child.kill("SIGKILL");
    await p.exited;
    const left = join(f.dir, "data", "shim.db.backup-0123456789ab.tmp");
    writeFileSync(left, "half a copy");
    const q = await f.start();
    expect(leftovers(join(f.dir, "data"))).toEqual([]);
    await f.output.stopCleanly(q);
  }, 30_000);
});


