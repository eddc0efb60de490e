import { appendFileSync, copyFileSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, truncateSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { MAX_BALANCE_MICRO, MICRO_PER_CREDIT } from "../../api-shim/src/money/money.ts";
import { openStore } from "../../api-shim/src/store/open-store.ts";
import { MIGRATIONS } from "../../api-shim/src/store/sqlite-migrations.ts";
import { claimSqliteFile, SqliteInUseError } from "../../api-shim/src/store/sqlite-owner.ts";
import { RestoreInterruptedError, RestoreRefusedError, restoredMessage, restoreStagedLedger } from "../../api-shim/src/store/sqlite-restore.ts";
import { SqliteStore } from "../../api-shim/src/store/sqlite-store.ts";
import { breakKeyIndex, copyWithSchemaVersion, corruptLedger } from "../support/corrupt-ledger.ts";
import { repoFile, runNodeScript, tracingRenamesAndSyncs } from "../support/fsync-trace.ts";
import { tempDir } from "../support/tools.ts";
import { newKey } from "./store-contract.ts";

/**
 * The restore of a staged backup (`<ledger>.restore`, sqlite-restore.ts), in this process: what it
 * checks, the swap of the files and its completion after a process killed half way. What a real
 * shim does with it at start is ledger-restore-process.test.ts.
 */

const CREDIT = MICRO_PER_CREDIT;
const T0 = Date.UTC(2026, 11, 7, 10, 15, 0);

/** A closed ledger at `<dir>/shim.db` with the keys given (id, credits). */
async function ledgerIn(dir: string, keys: [string, number][]): Promise<string> {
  const file = join(dir, "shim.db");
  const store = new SqliteStore(file);
  for (const [id, credits] of keys) await store.createKey(newKey(id, credits * CREDIT));
  await store.close();
  return file;
}

/** A backup of `file` made by the store's own backup (GET /admin/backup's), copied to `to`. */
async function backUp(file: string, to: string): Promise<string> {
  const store = new SqliteStore(file);
  try {
    const backup = await store.backup(new AbortController().signal);
    copyFileSync(backup.path, to);
    await backup.remove();
  } finally {
    await store.close();
  }
  return to;
}

/** Each key's id and balance in credits, read from a copy of `file` (and its -wal), so the file itself is never opened. */
function keysOf(file: string): Record<string, number> {
  const dir = tempDir("ledger-restore-read-");
  copyFileSync(file, join(dir, "x.db"));
  if (existsSync(`${file}-wal`)) copyFileSync(`${file}-wal`, join(dir, "x.db-wal"));
  const db = new Database(join(dir, "x.db"), { readonly: true });
  try {
    return Object.fromEntries(db.prepare<[], { id: string; balance: number }>("SELECT id, balance FROM keys ORDER BY id").all().map((k) => [k.id, k.balance / CREDIT]));
  } finally {
    db.close();
  }
}

/** Every entry under `dir` with its bytes (files) and mode: what "nothing was changed" compares. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    const st = lstatSync(path);
    if (st.isDirectory()) for (const [k, v] of Object.entries(snapshot(path))) out[`${name}/${k}`] = v;
    else out[name] = `${st.mode.toString(8)} ${st.isSymbolicLink() ? "link" : readFileSync(path).toString("base64")}`;
  }
  return out;
}

/**
 * A ledger with `before` keys, backed up (the backup staged as `<ledger>.restore`), then changed
 * as a shim killed with SIGKILL leaves it: key `after` created since, in the `-wal` beside
 * `shim.db` (no checkpoint copied it), and a `-shm`.
 */
async function killedAfterBackup(): Promise<{ dir: string; file: string; staged: string }> {
  const work = tempDir("ledger-restore-work-");
  const source = await ledgerIn(work, [["kept", 10], ["spent", 5]]);
  const dir = tempDir("ledger-restore-data-");
  const file = join(dir, "shim.db");
  const staged = await backUp(source, `${file}.restore`);
  const db = new Database(source);
  db.pragma("wal_autocheckpoint = 0");
  db.prepare("INSERT INTO keys (id, name, hash, tier, balance, created_at) VALUES ('after', 'after', 'h', 'free', 7000000, 0)").run();
  db.prepare("UPDATE keys SET balance = 1000000 WHERE id = 'spent'").run();
  // The files as they are while the connection is open: what a killed process leaves.
  for (const suffix of ["", "-wal", "-shm"]) copyFileSync(`${source}${suffix}`, `${file}${suffix}`);
  db.close();
  expect(keysOf(file)).toEqual({ after: 7, kept: 10, spent: 1 });
  return { dir, file, staged };
}

describe("restoreStagedLedger: a backup staged beside the ledger replaces it", () => {
  it("without a staged file: nothing to do, nothing touched", async () => {
    const dir = tempDir("ledger-restore-none-");
    const file = await ledgerIn(dir, [["k", 1]]);
    const before = snapshot(dir);
    expect(restoreStagedLedger(file, { now: () => T0 })).toBeNull();
    expect(snapshot(dir)).toEqual(before);
  });

  it("over a killed process's files: the backup becomes the ledger; shim.db, its -wal and -shm go to shim.db.replaced-<time>/, unchanged; the lock file stays", async () => {
    const { dir, file, staged } = await killedAfterBackup();
    writeFileSync(`${file}-lock`, "");
    const old = snapshot(dir);
    const backup = readFileSync(staged);
    const r = restoreStagedLedger(file, { now: () => T0 });
    const replaced = join(dir, "shim.db.replaced-20261207T101500Z");
    expect(r).toEqual({ from: staged, ledger: file, previous: replaced, moved: ["shim.db", "shim.db-wal", "shim.db-shm"], earlier: null, keys: 2, credits: "15" });
    expect(readdirSync(dir).sort()).toEqual(["shim.db", "shim.db-lock", "shim.db.replaced-20261207T101500Z"]);
    expect(readFileSync(file)).toEqual(backup); // renamed, not rewritten
    expect(keysOf(file)).toEqual({ kept: 10, spent: 5 }); // the old -wal was not applied to it
    // The replaced files, as they were: together they are still the ledger they were.
    for (const name of ["shim.db", "shim.db-wal", "shim.db-shm"]) expect(snapshot(replaced)[name]).toBe(old[name]);
    expect(keysOf(join(replaced, "shim.db"))).toEqual({ after: 7, kept: 10, spent: 1 });
  });

  it("on disk in order: the old files moved and their directories synced before the staged file is renamed, and that rename synced (a power cut never leaves the backup beside the old -wal)", async () => {
    const { dir, file } = await killedAfterBackup();
    const out = join(tempDir("ledger-restore-trace-"), "strace.txt");
    runNodeScript(tracingRenamesAndSyncs(out), `import { restoreStagedLedger } from ${JSON.stringify(repoFile("api-shim/src/store/sqlite-restore.ts"))};
      console.log(JSON.stringify(restoreStagedLedger(${JSON.stringify(file)}, { now: () => ${T0} })));`);
    const replaced = join(dir, "shim.db.replaced-20261207T101500Z");
    const steps = readFileSync(out, "utf8").split("\n").filter((l) => l.includes(dir) && !l.includes("<unfinished")).map((l) => {
      const renamed = /rename\w*\((?:AT_FDCWD, )?"([^"]+)", (?:AT_FDCWD, )?"([^"]+)"/.exec(l);
      if (renamed) return `rename ${renamed[1]!.replace(`${dir}/`, "")} -> ${renamed[2]!.replace(`${dir}/`, "")}`;
      const synced = /f(?:data)?sync\(\d+<([^>]+)>/.exec(l);
      return synced ? `fsync ${synced[1] === dir ? "." : synced[1]!.replace(`${dir}/`, "")}` : l;
    });
    expect(steps).toEqual([
      "rename shim.db -> shim.db.replacing/shim.db",
      "rename shim.db-wal -> shim.db.replacing/shim.db-wal",
      "rename shim.db-shm -> shim.db.replacing/shim.db-shm",
      "fsync shim.db.replacing",
      "rename shim.db.replacing -> shim.db.replaced-20261207T101500Z",
      "fsync .",
      "rename shim.db.restore -> shim.db",
      "fsync .",
    ]);
    expect(readdirSync(replaced).sort()).toEqual(["shim.db", "shim.db-shm", "shim.db-wal"]);
  });

  it("on a new volume (no ledger yet): the backup becomes the ledger, nothing is moved, no directory made", async () => {
    const dir = tempDir("ledger-restore-new-");
    const source = await ledgerIn(tempDir("ledger-restore-work-"), [["k", 3]]);
    const file = join(dir, "shim.db");
    const staged = await backUp(source, `${file}.restore`);
    const r = restoreStagedLedger(file, { now: () => T0 });
    expect(r).toEqual({ from: staged, ledger: file, previous: null, moved: [], earlier: null, keys: 1, credits: "3" });
    expect(readdirSync(dir)).toEqual(["shim.db"]);
    expect(keysOf(file)).toEqual({ k: 3 });
    expect(restoredMessage(r!)).toBe(`restored the ledger ${file} from ${staged}: 1 key, 3 credits in all; no ledger files were beside it to replace (a new volume)`);
  });

  it("a -journal left beside the ledger moves with it: it would be rolled back into the restored file", async () => {
    const { dir, file } = await killedAfterBackup();
    writeFileSync(`${file}-journal`, "left by a rollback-journal writer");
    const r = restoreStagedLedger(file, { now: () => T0 });
    expect(r).toMatchObject({ moved: ["shim.db", "shim.db-wal", "shim.db-shm", "shim.db-journal"] });
    expect(readdirSync(dir).sort()).toEqual(["shim.db", "shim.db.replaced-20261207T101500Z"]);
    expect(keysOf(file)).toEqual({ kept: 10, spent: 5 });
  });

  it("with nothing to replace, the log names the newest directory of replaced files (-10 after -2)", async () => {
    const dir = tempDir("ledger-restore-earlier-");
    const source = await ledgerIn(tempDir("ledger-restore-work-"), [["k", 3], ["j", 2]]);
    const file = join(dir, "shim.db");
    const staged = await backUp(source, `${file}.restore`);
    for (const name of ["shim.db.replaced-20261207T090000Z", "shim.db.replaced-20261207T101500Z-10", "shim.db.replaced-20261207T101500Z-2"]) mkdirSync(join(dir, name));
    const r = restoreStagedLedger(file, { now: () => T0 + 60_000 });
    const newest = join(dir, "shim.db.replaced-20261207T101500Z-10");
    expect(r).toMatchObject({ previous: null, moved: [], earlier: newest });
    expect(restoredMessage(r!)).toBe(`restored the ledger ${file} from ${staged}: 2 keys, 5 credits in all; no ledger files were beside it to replace ` +
      `(the newest directory of replaced files is ${newest}: an earlier restore's, or this one's if a start was stopped half way through it)`);
  });

  it("a restore that fails half way says what was moved where, or that nothing was yet", () => {
    const cause = Object.assign(new Error("EIO: i/o error, rename"), { code: "EIO" });
    expect(new RestoreInterruptedError("/d/shim.db.restore", "/d/shim.db", null, [], cause).message).toBe(
      "restoring the ledger /d/shim.db from /d/shim.db.restore failed half way (nothing was moved yet): EIO: i/o error, rename; the next start completes it (shim.db.restore is still there), or move the files back to undo it");
    expect(new RestoreInterruptedError("/d/shim.db.restore", "/d/shim.db", "/d/r", ["shim.db"], cause).message).toContain("failed half way (shim.db moved into /d/r): EIO");
  });

  it("killed after the old files moved, before the rename: the next run renames the staged file and names the directory they are in", async () => {
    const { dir, file, staged } = await killedAfterBackup();
    // What a process killed between the moves and the rename leaves on disk.
    const replaced = join(dir, "shim.db.replaced-20261207T101500Z");
    mkdirSync(replaced);
    for (const name of ["shim.db", "shim.db-wal", "shim.db-shm"]) renameSync(join(dir, name), join(replaced, name));
    const moved = snapshot(replaced);
    const r = restoreStagedLedger(file, { now: () => T0 + 60_000 });
    expect(r).toEqual({ from: staged, ledger: file, previous: null, moved: [], earlier: replaced, keys: 2, credits: "15" });
    expect(readdirSync(dir).sort()).toEqual(["shim.db", "shim.db.replaced-20261207T101500Z"]);
    expect(keysOf(file)).toEqual({ kept: 10, spent: 5 });
    expect(snapshot(replaced)).toEqual(moved);
  });

  it("killed after shim.db moved but before its -wal and -shm: the next run moves them into the same directory (the old ledger stays whole in one place, never onto the backup) and renames the staged file", async () => {
    const { dir, file } = await killedAfterBackup();
    const old = snapshot(dir);
    // What a process killed after its first move leaves on disk.
    mkdirSync(join(dir, "shim.db.replacing"));
    renameSync(file, join(dir, "shim.db.replacing", "shim.db"));
    const r = restoreStagedLedger(file, { now: () => T0 + 1000 });
    const replaced = join(dir, "shim.db.replaced-20261207T101501Z");
    expect(r).toMatchObject({ previous: replaced, moved: ["shim.db", "shim.db-wal", "shim.db-shm"] });
    expect(readdirSync(dir).sort()).toEqual(["shim.db", "shim.db.replaced-20261207T101501Z"]);
    expect(keysOf(file)).toEqual({ kept: 10, spent: 5 });
    for (const name of ["shim.db", "shim.db-wal", "shim.db-shm"]) expect(snapshot(replaced)[name]).toBe(old[name]);
    // Together they are still the ledger they were: its -wal holds the key made since the backup.
    expect(keysOf(join(replaced, "shim.db"))).toEqual({ after: 7, kept: 10, spent: 1 });
  });

  it("killed after every file moved, before their directory was named: the next run names it and renames the staged file", async () => {
    const { dir, file, staged } = await killedAfterBackup();
    const replacing = join(dir, "shim.db.replacing");
    mkdirSync(replacing);
    for (const name of ["shim.db", "shim.db-wal", "shim.db-shm"]) renameSync(join(dir, name), join(replacing, name));
    const moved = snapshot(replacing);
    const r = restoreStagedLedger(file, { now: () => T0 });
    const replaced = join(dir, "shim.db.replaced-20261207T101500Z");
    expect(r).toEqual({ from: staged, ledger: file, previous: replaced, moved: ["shim.db", "shim.db-wal", "shim.db-shm"], earlier: null, keys: 2, credits: "15" });
    expect(readdirSync(dir).sort()).toEqual(["shim.db", "shim.db.replaced-20261207T101500Z"]);
    expect(snapshot(replaced)).toEqual(moved);
  });

  it("a deleted shim.db with its -wal left beside the staged file goes to a directory of its own, not beside an earlier restore's ledger", async () => {
    const { dir, file, staged } = await killedAfterBackup();
    const spare = join(tempDir("ledger-restore-spare-"), "backup.db");
    copyFileSync(staged, spare);
    restoreStagedLedger(file, { now: () => T0 });
    const earlier = join(dir, "shim.db.replaced-20261207T101500Z");
    // By hand: shim.db deleted, its -wal left, a backup staged again.
    const first = snapshot(earlier);
    rmSync(file);
    writeFileSync(`${file}-wal`, "a -wal without its database");
    copyFileSync(spare, staged);
    const r = restoreStagedLedger(file, { now: () => T0 + 1000 });
    expect(r).toMatchObject({ previous: join(dir, "shim.db.replaced-20261207T101501Z"), moved: ["shim.db-wal"] });
    expect(snapshot(earlier)).toEqual(first);
  });

  it("a .replacing a killed start left that already holds a name beside the ledger (by hand): kept whole under its own name, nothing overwritten", async () => {
    const { dir, file } = await killedAfterBackup();
    const replacing = join(dir, "shim.db.replacing");
    mkdirSync(replacing);
    renameSync(file, join(replacing, "shim.db"));
    writeFileSync(join(replacing, "shim.db-wal"), "an earlier -wal");
    const r = restoreStagedLedger(file, { now: () => T0 });
    expect(readFileSync(join(dir, "shim.db.replaced-20261207T101500Z", "shim.db-wal"), "utf8")).toBe("an earlier -wal");
    expect(r).toMatchObject({ previous: join(dir, "shim.db.replaced-20261207T101500Z-2"), moved: ["shim.db-wal", "shim.db-shm"] });
    expect(readdirSync(dir).sort()).toEqual(["shim.db", "shim.db.replaced-20261207T101500Z", "shim.db.replaced-20261207T101500Z-2"]);
  });

  it("a shim.db.replacing that is not a directory (not the shim's) refuses the restore and changes nothing", async () => {
    const { dir, file } = await killedAfterBackup();
    writeFileSync(join(dir, "shim.db.replacing"), "someone's file");
    const before = snapshot(dir);
    expect(() => restoreStagedLedger(file, { now: () => T0 })).toThrow(RestoreRefusedError);
    expect(() => restoreStagedLedger(file, { now: () => T0 })).toThrow(`${join(dir, "shim.db.replacing")} is not a directory (a restore gathers the replaced files there): move it away. Nothing was changed`);
    expect(snapshot(dir)).toEqual(before);
  });

  it("an empty shim.db.replacing with nothing beside the staged file to replace: removed, and the log says nothing was replaced", async () => {
    const dir = tempDir("ledger-restore-empty-replacing-");
    const source = await ledgerIn(tempDir("ledger-restore-work-"), [["k", 3]]);
    const file = join(dir, "shim.db");
    const staged = await backUp(source, `${file}.restore`);
    mkdirSync(join(dir, "shim.db.replacing"));
    const r = restoreStagedLedger(file, { now: () => T0 });
    expect(r).toEqual({ from: staged, ledger: file, previous: null, moved: [], earlier: null, keys: 1, credits: "3" });
    expect(readdirSync(dir)).toEqual(["shim.db"]);
    expect(restoredMessage(r!)).toContain("no ledger files were beside it to replace (a new volume)");
  });

  it("a second restore in the same second gets a directory of its own: nothing already replaced is overwritten", async () => {
    const { dir, file, staged } = await killedAfterBackup();
    const backup = readFileSync(staged);
    restoreStagedLedger(file, { now: () => T0 });
    const first = snapshot(join(dir, "shim.db.replaced-20261207T101500Z"));
    writeFileSync(staged, backup);
    const r = restoreStagedLedger(file, { now: () => T0 + 400 });
    expect(r).toMatchObject({ previous: join(dir, "shim.db.replaced-20261207T101500Z-2"), moved: ["shim.db"] });
    expect(snapshot(join(dir, "shim.db.replaced-20261207T101500Z"))).toEqual(first);
    expect(readFileSync(join(dir, "shim.db.replaced-20261207T101500Z-2", "shim.db"))).toEqual(backup);
  });

  it("checks a WAL-mode file (a stopped shim's shim.db, copied as it is) without leaving a -wal or -shm beside it or changing it", async () => {
    const source = await ledgerIn(tempDir("ledger-restore-work-"), [["k", 4]]);
    expect(readFileSync(source)[18]).toBe(2); // the header says WAL: a reader would make a -wal and a -shm beside it
    const dir = tempDir("ledger-restore-wal-mode-");
    const file = join(dir, "shim.db");
    copyFileSync(source, `${file}.restore`);
    const bytes = readFileSync(source);
    expect(restoreStagedLedger(file)).toMatchObject({ keys: 1, credits: "4" });
    expect(readdirSync(dir)).toEqual(["shim.db"]);
    expect(readFileSync(file)).toEqual(bytes);
    // Refused after it was opened and read (a newer schema): nothing is left beside it either.
    const db = new Database(source);
    db.pragma(`user_version = ${MIGRATIONS.length + 1}`);
    db.close();
    copyFileSync(source, `${file}.restore`);
    const before = snapshot(dir);
    expect(() => restoreStagedLedger(file)).toThrow(RestoreRefusedError);
    expect(snapshot(dir)).toEqual(before);
  });

  it("says the total of the balances exactly, also past 2^53 µc (many large balances together)", async () => {
    const dir = tempDir("ledger-restore-large-");
    const staged = await backUp(await ledgerIn(tempDir("ledger-restore-work-"), [["a", 1], ["b", 1], ["c", 1]]), join(dir, "shim.db.restore"));
    const db = new Database(staged);
    // More than a key may have (the sum of ten at most), and odd: no double is exactly that.
    db.prepare("UPDATE keys SET balance = ? WHERE id = 'a'").run(BigInt(MAX_BALANCE_MICRO) * 10n + 1n);
    db.close();
    expect(restoreStagedLedger(join(dir, "shim.db"))).toMatchObject({ keys: 3, credits: "10000000002.000001" });
  });

  it("a check a killed process left (its directory beside the ledger) is removed at the next run", async () => {
    const dir = tempDir("ledger-restore-left-");
    const file = await ledgerIn(dir, [["k", 1]]);
    mkdirSync(join(dir, "shim.db.restore-check-AbC123"));
    writeFileSync(join(dir, "shim.db.restore-check-AbC123", "check.db-shm"), "x");
    expect(restoreStagedLedger(file)).toBeNull();
    expect(readdirSync(dir)).toEqual(["shim.db"]);
  });

  it("an older schema is fine: restored, then migrated as at any start", async () => {
    const dir = tempDir("ledger-restore-older-");
    const source = await ledgerIn(tempDir("ledger-restore-work-"), [["k", 2]]);
    const staged = await backUp(source, join(dir, "shim.db.restore"));
    const db = new Database(staged);
    db.exec("DROP INDEX ledger_usage_at");
    db.pragma(`user_version = ${MIGRATIONS.length - 1}`);
    db.close();
    const restored: unknown[] = [];
    const store = await openStore(`sqlite:${join(dir, "shim.db")}`, { onRestored: (r) => restored.push(r) });
    try {
      expect(restored).toMatchObject([{ from: staged, keys: 1, credits: "2" }]);
      expect((await store.getKey("k"))!.balance).toBe(2 * CREDIT);
    } finally {
      await store.close();
    }
    const after = new Database(join(dir, "shim.db"), { readonly: true });
    expect(after.pragma("user_version", { simple: true })).toBe(MIGRATIONS.length);
    expect(after.prepare("SELECT name FROM sqlite_master WHERE name = 'ledger_usage_at'").pluck().get()).toBe("ledger_usage_at");
    after.close();
  });

  it("openStore restores only while it holds the ledger's owner lock: another holder refuses it, and the staged file and the ledger stay", async () => {
    const { dir, file } = await killedAfterBackup();
    const before = snapshot(dir);
    const other = claimSqliteFile(file);
    try {
      await expect(openStore(`sqlite:${file}`)).rejects.toBeInstanceOf(SqliteInUseError);
    } finally {
      other.release();
    }
    const after = snapshot(dir);
    delete after["shim.db-lock"];
    expect(after).toEqual(before);
  });
});

describe("restoreStagedLedger refuses a staged file that fails its check, and changes nothing", () => {
  /** A ledger with a key, and beside it a staged file `make` writes; the refusal's message once nothing changed. */
  async function refusal(make: (staged: string, backup: string) => void | Promise<void>): Promise<{ message: string; file: string; staged: string }> {
    const dir = tempDir("ledger-restore-refused-");
    const file = await ledgerIn(dir, [["current", 9]]);
    const backup = await backUp(await ledgerIn(tempDir("ledger-restore-work-"), [["backed-up", 1]]), join(tempDir("ledger-restore-backup-"), "b.db"));
    const staged = `${file}.restore`;
    await make(staged, backup);
    const before = snapshot(dir);
    let thrown: unknown;
    try {
      restoreStagedLedger(file, { now: () => T0 });
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(RestoreRefusedError);
    expect(snapshot(dir)).toEqual(before);
    const message = (thrown as Error).message;
    expect(message).toMatch(new RegExp(`^cannot restore the ledger from ${staged}: `));
    expect(message).toMatch(/\. Nothing was changed: shim\.db and shim\.db\.restore are as they were; the shim does not start while shim\.db\.restore is there \(remove it to start on the current ledger\)$/);
    expect(keysOf(file)).toEqual({ current: 9 });
    return { message, file, staged };
  }

  it("not a SQLite database", async () => {
    const { message } = await refusal((staged) => writeFileSync(staged, "these are not the pages you are looking for\n".repeat(40)));
    expect(message).toContain("it is not a SQLite database (it does not begin with SQLite's header): stage a backup made by npm run backup-ledger");
  });

  it("empty", async () => {
    const { message } = await refusal((staged) => writeFileSync(staged, ""));
    expect(message).toContain("it is empty (0 bytes): was the copy cut short? Copy the backup again");
  });

  it("truncated (a copy cut short)", async () => {
    const { message } = await refusal((staged, backup) => {
      copyFileSync(backup, staged);
      const db = new Database(staged);
      db.exec("CREATE TABLE padding (b BLOB); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 64) INSERT INTO padding SELECT randomblob(4000) FROM n");
      db.close();
      truncateSync(staged, Math.floor(statSync(staged).size / 2));
    });
    expect(message).toMatch(/: it is damaged \(.+\): was the copy cut short\? Copy the backup again, or stage an earlier one/);
  });

  it("cut short inside its last page (SQLite would read the missing bytes as zeros, and integrity_check passes)", async () => {
    let size = 0;
    const { message } = await refusal((staged, backup) => {
      copyFileSync(backup, staged);
      const db = new Database(staged);
      db.exec("CREATE TABLE padding (b BLOB); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 64) INSERT INTO padding SELECT randomblob(4000) FROM n");
      db.close();
      size = statSync(staged).size - 100;
      truncateSync(staged, size);
    });
    expect(message).toContain(`: it is damaged (${size} bytes, not a whole number of its 4096-byte pages): was the copy cut short? Copy the backup again, or stage an earlier one`);
  });

  it("a page of garbage (SQLite refuses to read it)", async () => {
    const { message } = await refusal((staged, backup) => {
      copyFileSync(backup, staged);
      corruptLedger(staged, "backed-up", 5000);
    });
    expect(message).toContain(": it is damaged (SQLITE_CORRUPT: database disk image is malformed): was the copy cut short? Copy the backup again, or stage an earlier one. Nothing was changed");
  });

  it("an index that disagrees with its table (only PRAGMA integrity_check finds it)", async () => {
    const { message } = await refusal((staged, backup) => {
      copyFileSync(backup, staged);
      breakKeyIndex(staged, "backed-up");
    });
    expect(message).toContain(": it is damaged (PRAGMA integrity_check: row 1 missing from index sqlite_autoindex_keys_1): was the copy cut short?");
  });

  it("a SQLite database that is not the shim's ledger", async () => {
    const { message } = await refusal((staged) => {
      const db = new Database(staged);
      db.exec("CREATE TABLE photos (id INTEGER PRIMARY KEY, jpeg BLOB)");
      db.close();
    });
    expect(message).toContain("it is a SQLite database but not the shim's ledger (no table keys, ledger, idempotency): stage a backup made by npm run backup-ledger");
  });

  it("tables named as the shim's without its schema version (a file the shim did not make: its migrations would fail on it)", async () => {
    const { message } = await refusal((staged) => {
      const db = new Database(staged);
      db.exec("CREATE TABLE keys (id TEXT, balance INTEGER); CREATE TABLE ledger (id INTEGER); CREATE TABLE idempotency (key TEXT)");
      db.close();
    });
    expect(message).toContain("it is a SQLite database but not the shim's ledger (schema version 0): stage a backup made by npm run backup-ledger");
  });

  it("made by a newer shim: the refusal's usual wording", async () => {
    const { message, staged } = await refusal((staged, backup) => copyWithSchemaVersion(backup, staged, 99));
    expect(message).toContain(`: ${staged} was made by a newer version of the shim (schema 99, this one knows ${MIGRATIONS.length}); run the newer image or restore a backup. Nothing was changed`);
  });

  it("a symbolic link, not the file", async () => {
    const { message } = await refusal((staged, backup) => symlinkSync(backup, staged));
    expect(message).toContain("it is a symbolic link, not a regular file: copy the backup file itself there");
  });

  it("a -wal beside it (part of it is not in the file)", async () => {
    const { message, staged } = await refusal((staged, backup) => {
      copyFileSync(backup, staged);
      writeFileSync(`${staged}-wal`, "frames");
    });
    expect(message).toContain(`${staged}-wal is beside it, holding changes that are not in the file itself: stage one self-contained file, a backup made by npm run backup-ledger`);
  });

  it("an empty -wal beside it (no changes in it) is no reason to refuse: restored", async () => {
    const dir = tempDir("ledger-restore-empty-wal-");
    const file = await ledgerIn(dir, [["current", 9]]);
    const staged = await backUp(await ledgerIn(tempDir("ledger-restore-work-"), [["backed-up", 1]]), `${file}.restore`);
    writeFileSync(`${staged}-wal`, "");
    expect(restoreStagedLedger(file, { now: () => T0 })).toMatchObject({ keys: 1, credits: "1" });
    expect(keysOf(file)).toEqual({ "backed-up": 1 });
  });

  it("a file that changes while it is checked (still being copied)", async () => {
    const dir = tempDir("ledger-restore-growing-");
    const file = await ledgerIn(dir, [["current", 9]]);
    const staged = await backUp(await ledgerIn(tempDir("ledger-restore-work-"), [["k", 1]]), `${file}.restore`);
    let thrown: unknown;
    try {
      restoreStagedLedger(file, { onChecking: () => appendFileSync(staged, Buffer.alloc(4096)) });
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(RestoreRefusedError);
    expect((thrown as Error).message).toContain("it changed while it was checked (is it still being copied?): start the shim again once the copy is complete");
    expect(readdirSync(dir).sort()).toEqual(["shim.db", "shim.db.restore"]);
    expect(keysOf(file)).toEqual({ current: 9 });
  });

  it("a change of its size alone, its time alone, or the file alone (replaced by one of the same size and time) is seen too", async () => {
    const T = 1_900_000_000; // whole seconds: set back exactly
    const changes: Record<string, (staged: string) => void> = {
      size: (staged) => { appendFileSync(staged, Buffer.alloc(4096)); utimesSync(staged, T, T); },
      time: (staged) => utimesSync(staged, T + 5, T + 5),
      file: (staged) => { copyFileSync(staged, `${staged}.copy`); renameSync(`${staged}.copy`, staged); utimesSync(staged, T, T); },
    };
    for (const [what, change] of Object.entries(changes)) {
      const dir = tempDir("ledger-restore-changed-");
      const file = await ledgerIn(dir, [["current", 9]]);
      const staged = await backUp(await ledgerIn(tempDir("ledger-restore-work-"), [["k", 1]]), `${file}.restore`);
      utimesSync(staged, T, T);
      expect(() => restoreStagedLedger(file, { onChecking: () => change(staged) }), what).toThrow("it changed while it was checked");
      expect(keysOf(file), what).toEqual({ current: 9 });
    }
  });
});
