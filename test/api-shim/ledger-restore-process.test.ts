import { chmodSync, chownSync, copyFileSync, symlinkSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import Database from "better-sqlite3";
import OpenAI from "openai";
import { describe, expect, it } from "vitest";
import { formatCredits } from "../../api-shim/src/money/money.ts";
import { showMiB } from "../../api-shim/src/store/sqlite-backup.ts";
import { MIGRATIONS } from "../../api-shim/src/store/sqlite-migrations.ts";
import { breakKeyIndex, copyWithSchemaVersion } from "../support/corrupt-ledger.ts";
import { assertNoSecrets } from "../support/shim-harness.ts";
import { type ShimProcess, shimClient, shimProcessFixture, ShimStartError, spawnShim } from "../support/shim-process.ts";
import { tempDir } from "../support/tools.ts";

/**
 * The restore of a staged backup at a real shim's start (docs/operations.md, "Backup and restore of
 * the ledger"): a backup taken through GET /admin/backup, copied beside the ledger as
 * `shim.db.restore`, is the ledger after the restart; a staged file that fails its check stops the
 * start and changes nothing; a swap a killed process left half done is completed.
 */
/** Run as root, the shim without the capabilities that let root read and write any file: the owner and mode of a file then count for it as for uid 1000. */
const WITHOUT_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps", "-dac_override,-dac_read_search"];

describe("a backup staged as shim.db.restore is restored when the shim starts", () => {
  const f = shimProcessFixture("ledger-restore-");

  const admin = (p: ShimProcess, path: string, init: RequestInit = {}) =>
    fetch(`${p.url}${path}`, { ...init, headers: { authorization: `Bearer ${f.adminToken}`, "content-type": "application/json" } });
  const ask = (p: ShimProcess, key: string) => shimClient(p, key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "one two three" }], max_tokens: 4 });
  const createKey = async (p: ShimProcess, name: string, credits: number) => {
    const res = await admin(p, "/admin/keys", { method: "POST", body: JSON.stringify({ name, credits, tier: "enterprise" }) });
    expect(res.status).toBe(201);
    return (await res.json()) as { id: string; key: string };
  };
  /** Each key's id and balance as GET /admin/keys lists them. */
  const balances = async (p: ShimProcess) => ((await (await admin(p, "/admin/keys")).json()) as { data: { id: string; balance: number }[] }).data.map((k) => [k.id, k.balance] as const).sort();
  /** The ledger as GET /admin/backup answers it, saved in a directory of its own. */
  async function backUp(p: ShimProcess): Promise<string> {
    const res = await admin(p, "/admin/backup");
    expect(res.status).toBe(200);
    const file = join(tempDir("ledger-restore-backup-"), "backup.db");
    writeFileSync(file, Buffer.from(await res.arrayBuffer()), { mode: 0o600 });
    return file;
  }
  /** A ledger directory of the test's own: the shim's SHIM_DATABASE_URL for it, its shim.db and staged file. */
  function ledgerDir() {
    const dir = tempDir("ledger-restore-data-");
    const db = join(dir, "shim.db");
    return { dir, db, staged: `${db}.restore`, env: { SHIM_DATABASE_URL: `sqlite:${db}` } };
  }
  /** Each key's id and hash in a ledger file and its -wal (read from a copy). */
  function keysIn(file: string): { id: string; hash: string }[] {
    const copy = join(tempDir("ledger-restore-read-"), "x.db");
    copyFileSync(file, copy);
    if (existsSync(`${file}-wal`)) copyFileSync(`${file}-wal`, `${copy}-wal`);
    const db = new Database(copy, { readonly: true });
    try {
      return db.prepare<[], { id: string; hash: string }>("SELECT id, hash FROM keys ORDER BY id").all();
    } finally {
      db.close();
    }
  }
  /** Every entry under `dir`, with each file's mode and bytes. */
  function snapshot(dir: string): Record<string, string> {
    const out: Record<string, string> = {};
    for (const name of readdirSync(dir).sort()) {
      const st = lstatSync(join(dir, name));
      if (st.isDirectory()) for (const [k, v] of Object.entries(snapshot(join(dir, name)))) out[`${name}/${k}`] = v;
      else out[name] = `${st.uid}:${st.gid} ${st.mode.toString(8)} ${readFileSync(join(dir, name)).toString("base64")}`;
    }
    return out;
  }
  /** The lines at info that say the ledger was restored. */
  const restoredLines = (p: ShimProcess) => p.lines.map((l) => JSON.parse(l) as { level: number; msg: string } & Record<string, unknown>).filter((l) => l.msg.startsWith("restored the ledger"));
  const total = (listed: (readonly [string, number])[]) => formatCredits(listed.reduce((sum, [, balance]) => sum + Math.round(balance * 1e6), 0));

  it("the backup is the ledger after the restart: its keys work with its balances, a key made since is gone, the replaced files are kept, and one line says so", async () => {
    const l = ledgerDir();
    const p = await f.start(l.env);
    const teamA = await createKey(p, "team-a", 50);
    for (let i = 0; i < 3; i++) await ask(p, teamA.key);
    await ask(p, f.key.key);
    const backup = await backUp(p);
    const atBackup = await balances(p);
    // After the backup: spending, a top-up and a new key, which the restore takes back.
    await ask(p, teamA.key);
    expect((await admin(p, `/admin/keys/${teamA.id}/credits`, { method: "POST", body: JSON.stringify({ amount: 100 }) })).status).toBe(200);
    const teamB = await createKey(p, "team-b", 5);
    await ask(p, teamB.key);
    expect(await balances(p)).not.toEqual(atBackup);
    copyFileSync(backup, l.staged);
    // Killed, as a crash leaves it: shim.db with a -wal and a -shm beside it, the trap of a copy over shim.db alone.
    p.child.kill("SIGKILL");
    await p.exited;
    expect(readdirSync(l.dir).sort()).toEqual(["shim.db", "shim.db-lock", "shim.db-shm", "shim.db-wal", "shim.db.restore"]);

    const q = await f.start(l.env);
    expect(await balances(q)).toEqual(atBackup);
    expect((await ask(q, teamA.key)).choices[0]!.message.content).toBeDefined();
    await expect(ask(q, teamB.key)).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
    const replaced = readdirSync(l.dir).filter((n) => /^shim\.db\.replaced-\d{8}T\d{6}Z$/.test(n));
    expect(replaced).toHaveLength(1);
    const previous = join(l.dir, replaced[0]!);
    expect(readdirSync(l.dir).sort()).toEqual(["shim.db", "shim.db-lock", "shim.db-shm", "shim.db-wal", replaced[0]]);
    expect(readdirSync(previous).sort()).toEqual(["shim.db", "shim.db-shm", "shim.db-wal"]);
    expect(keysIn(join(previous, "shim.db")).map((k) => k.id)).toContain(teamB.id); // the replaced ledger is whole, nothing lost
    const lines = restoredLines(q);
    expect(lines).toHaveLength(1);
    // Before the check, which reads all of the file (a large one takes a while), a line says so.
    const size = statSync(backup).size;
    const messages = q.lines.map((line) => (JSON.parse(line) as { msg: string }).msg);
    const checking = messages.indexOf(`checking ${l.staged} (${size} bytes, ${showMiB(size)}: PRAGMA integrity_check reads all of it) before restoring the ledger from it`);
    expect(checking).toBeGreaterThanOrEqual(0);
    expect(checking).toBeLessThan(messages.indexOf(lines[0]!.msg));
    expect(lines[0]!.level).toBe(30);
    expect(lines[0]!.msg).toBe(`restored the ledger ${l.db} from ${l.staged}: ${atBackup.length} keys, ${total(atBackup)} credits in all; the files it replaced (shim.db, shim.db-wal, shim.db-shm) are in ${previous}`);
    expect(lines[0]).toMatchObject({ restoredFrom: l.staged, previous, keys: atBackup.length, credits: total(atBackup) });
    // Never a key or its hash.
    const hashes = keysIn(join(previous, "shim.db")).map((k) => k.hash);
    assertNoSecrets(q.lines, [teamA.key, teamB.key, f.key.key, ...hashes]);
    await f.output.stopCleanly(q);
  }, 60_000);

  /** A shim whose start was refused: its exit and its error lines. */
  async function refusedStart(env: Record<string, string>, prefix: readonly string[] = []): Promise<string[]> {
    const failed = await spawnShim({ ...f.env, ...env }, prefix).catch((e: unknown) => e);
    if (!(failed instanceof ShimStartError)) throw new Error(`expected a refused start, got ${String(failed)}`);
    f.output.keep(failed);
    expect(failed.exit).toEqual({ code: 1, signal: null });
    return failed.lines.map((l) => JSON.parse(l) as { level: number; msg: string }).filter((l) => l.level >= 50).map((l) => l.msg);
  }

  /**
   * A ledger with a key and charges, stopped; `stage` writes the staged file (given a backup of
   * that ledger); the start is refused with one error line, which is returned once it is checked
   * that nothing changed; then, the staged file removed, the ledger serves as before.
   */
  async function refusal(stage: (staged: string, backup: string) => void, prefix: readonly string[] = []): Promise<{ message: string; staged: string }> {
    const l = ledgerDir();
    const p = await f.start(l.env);
    await ask(p, f.key.key);
    const backup = await backUp(p);
    await ask(p, f.key.key);
    const before = await balances(p);
    await f.output.stopCleanly(p);
    stage(l.staged, backup);
    const files = snapshot(l.dir);
    const errors = await refusedStart(l.env, prefix);
    expect(errors).toHaveLength(1);
    expect(snapshot(l.dir)).toEqual(files);
    expect(errors[0]).toMatch(new RegExp(`^cannot restore the ledger from ${l.staged}: `));
    expect(errors[0]).toMatch(/\. Nothing was changed: shim\.db and shim\.db\.restore are as they were; the shim does not start while shim\.db\.restore is there \(remove it to start on the current ledger\)$/);
    rmSync(l.staged);
    const r = await f.start(l.env);
    expect(await balances(r)).toEqual(before);
    await ask(r, f.key.key);
    expect(restoredLines(r)).toEqual([]);
    await f.output.stopCleanly(r);
    return { message: errors[0]!, staged: l.staged };
  }

  it("refused, nothing changed: not a SQLite database", async () => {
    const { message } = await refusal((staged) => writeFileSync(staged, "<html>404 Not Found</html>\n".repeat(20)));
    expect(message).toContain(": it is not a SQLite database (it does not begin with SQLite's header): stage a backup made by npm run backup-ledger. Nothing was changed");
  }, 60_000);

  it("refused, nothing changed: a backup cut short", async () => {
    const { message } = await refusal((staged, backup) => {
      copyFileSync(backup, staged);
      const db = new Database(staged);
      db.exec("CREATE TABLE padding (b BLOB); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 64) INSERT INTO padding SELECT randomblob(4000) FROM n");
      db.close();
      truncateSync(staged, 100_000);
    });
    expect(message).toMatch(/: it is damaged \(.+\): was the copy cut short\? Copy the backup again, or stage an earlier one\. Nothing was changed/);
  }, 60_000);

  it("refused, nothing changed: a damaged file (PRAGMA integrity_check finds a key's row missing from its index)", async () => {
    const { message } = await refusal((staged, backup) => {
      copyFileSync(backup, staged);
      breakKeyIndex(staged, f.key.id);
    });
    expect(message).toMatch(/: it is damaged \(PRAGMA integrity_check: row \d+ missing from index sqlite_autoindex_keys_1\): was the copy cut short\?/);
  }, 60_000);

  it("refused, nothing changed: a backup a newer shim made, in the usual words", async () => {
    const { message, staged } = await refusal((staged, backup) => copyWithSchemaVersion(backup, staged, 99));
    expect(message).toContain(`: ${staged} was made by a newer version of the shim (schema 99, this one knows ${MIGRATIONS.length}); run the newer image or restore a backup. Nothing was changed`);
  }, 60_000);

  it("refused, nothing changed: a file the shim may not read (root's, as scp by root leaves it), naming the chown", async () => {
    // As root, the shim runs without the capabilities that let root read any file, so a file of
    // another user's, mode 0600, is as unreadable to it as root's scp'd file is to uid 1000.
    const root = process.getuid?.() === 0;
    const prefix = root ? WITHOUT_DAC : [];
    const { message, staged } = await refusal((staged, backup) => {
      copyFileSync(backup, staged);
      if (root) chownSync(staged, 65534, 65534);
      chmodSync(staged, root ? 0o600 : 0o000);
    }, prefix);
    expect(message).toContain(`: this process (uid ${process.getuid?.()}) cannot read and write it: chown 1000:1000 ${staged} (the shim's image runs as uid 1000; a file copied as root, with scp or cp, is root's). Nothing was changed`);
  }, 60_000);

  it("refused, nothing changed: a ledger directory the shim may not write (so it could not swap the files)", async (ctx) => {
    if (process.getuid?.() !== 0) return ctx.skip("only root can give the ledger's directory to another user");
    const { message, staged } = await refusal((staged, backup) => {
      copyFileSync(backup, staged);
      chownSync(dirname(staged), 65534, 65534); // another user's, which the shim may read and enter but not write
      chmodSync(dirname(staged), 0o755);
    }, WITHOUT_DAC);
    expect(message).toContain(`: this process (uid 0) cannot write the directory ${dirname(staged)} (EACCES): chown 1000:1000 ${dirname(staged)}. Nothing was changed`);
  }, 60_000);

  it("a swap a killed process left half done (the old files moved, the staged file not renamed yet) is completed", async () => {
    const l = ledgerDir();
    const p = await f.start(l.env);
    const kept = await createKey(p, "kept", 20);
    const backup = await backUp(p);
    const atBackup = await balances(p);
    const since = await createKey(p, "since", 20);
    p.child.kill("SIGKILL");
    await p.exited;
    // On disk, as a start killed between its moves and its rename leaves it.
    const replaced = join(l.dir, "shim.db.replaced-20260101T000000Z");
    mkdirSync(replaced);
    for (const name of ["shim.db", "shim.db-wal", "shim.db-shm"]) renameSync(join(l.dir, name), join(replaced, name));
    copyFileSync(backup, l.staged);
    const moved = snapshot(replaced);

    const q = await f.start(l.env);
    expect(await balances(q)).toEqual(atBackup);
    await ask(q, kept.key);
    await expect(ask(q, since.key)).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
    expect(readdirSync(l.dir).sort()).toEqual(["shim.db", "shim.db-lock", "shim.db-shm", "shim.db-wal", "shim.db.replaced-20260101T000000Z"]);
    expect(snapshot(replaced)).toEqual(moved);
    expect(restoredLines(q).map((line) => line.msg)).toEqual([
      `restored the ledger ${l.db} from ${l.staged}: ${atBackup.length} keys, ${total(atBackup)} credits in all; no ledger files were beside it to replace (the newest directory of replaced files is ${replaced}: an earlier restore's, or this one's if a start was stopped half way through it)`,
    ]);
    await f.output.stopCleanly(q);
  }, 60_000);

  it("a second shim on the same files is refused before it looks at the staged file: the running one serves on, its files and the staged file untouched", async () => {
    const l = ledgerDir();
    const p = await f.start(l.env);
    const backup = await backUp(p);
    const since = await createKey(p, "since", 20);
    copyFileSync(backup, l.staged);
    const errors = await refusedStart(l.env);
    expect(errors).toEqual([expect.stringMatching(/^another shim process is using /)]);
    expect(readFileSync(l.staged)).toEqual(readFileSync(backup));
    expect(readdirSync(l.dir).filter((n) => n.includes("replaced"))).toEqual([]);
    await ask(p, since.key);
    await f.output.stopCleanly(p);
  }, 60_000);

  it("a ledger reached through a symbolic link (SHIM_DATABASE_URL naming the link) serves, and a backup staged beside its target is restored", async () => {
    // SQLite opens the link's target and names its -wal after it; the shim synced "<link>-wal",
    // which is not there, and failed closed at its first write (found by review).
    const l = ledgerDir();
    const elsewhere = tempDir("ledger-restore-link-");
    const link = join(elsewhere, "ledger.db");
    symlinkSync(l.db, link);
    const p = await f.start({ SHIM_DATABASE_URL: `sqlite:${link}` });
    const team = await createKey(p, "team-link", 10);
    await ask(p, team.key);
    const backup = await backUp(p);
    const later = await createKey(p, "made-later", 5);
    await f.output.stopCleanly(p);
    expect(keysIn(l.db).map((k) => k.id)).toEqual(expect.arrayContaining([team.id, later.id])); // the writes reached the link's target
    copyFileSync(backup, l.staged);
    const again = await f.start({ SHIM_DATABASE_URL: `sqlite:${link}` });
    expect(restoredLines(again)).toHaveLength(1);
    expect((await ask(again, team.key)).choices[0]!.message.content).toBeTruthy();
    await expect(ask(again, later.key)).rejects.toMatchObject({ status: 401 });
  }, 60_000);
});
