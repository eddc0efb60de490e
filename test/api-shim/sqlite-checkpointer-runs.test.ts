import { createRequire } from "node:module";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { failingIo } from "../support/failing-io.ts";
import { repoFile, runNodeScript } from "../support/fsync-trace.ts";

/**
 * When a failing disk's run of checkpoint failures ends: only once a checkpoint is known to have
 * copied the whole WAL and synced the database file (sqlite-checkpointer.ts). A checkpoint that
 * syncs nothing succeeds on a failing disk; these tests make such checkpoints in the orders that
 * once ended a run too early, and show the run goes on: the next failure counts on from the last,
 * and "complete" comes only after a real sync.
 *
 * Each checkpoint is driven step by step: failing-io.c holds the checkpoint thread at each write
 * and sync of the database file until the test lets it go, so the test writes, opens a reader or
 * lets the disk recover at a known point of a known checkpoint. Each UPDATE of a table's one row
 * is one WAL frame of that table's one page; a checkpoint copies each page from its last frame
 * (none past a reader's snapshot), and syncs the file only if it copied up to the WAL's end as it
 * is then. The tests update a page once per checkpoint to come, so each copying checkpoint writes
 * the file once.
 */
describe("a failing disk's run of checkpoint failures", () => {
  let dir: string;
  let ck: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "shim-checkpointer-"));
    ck = join(dir, "ck.db");
    const made = new Database(ck);
    made.pragma("journal_mode = WAL");
    for (const t of ["t1", "t2", "t3"]) made.exec(`CREATE TABLE ${t} (x INTEGER); INSERT INTO ${t} VALUES (0)`);
    made.pragma("wal_checkpoint(TRUNCATE)"); // the WAL empty: each frame from here on is a test's own
    made.close();
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  /**
   * Runs `body` in a process where syncs of the database file fail while `disk.fail()` holds, and
   * the checkpoint thread (every 10 ms) stops at each write and sync of it: `await held(call)`
   * waits for it there ("write" or "sync"), `go(call)` lets it on. `before` runs before the thread
   * starts. Returns what the thread posted, in order: `failed:N` (its run's count), `complete`,
   * and the body's `mark`s.
   */
  const run = (body: string, before = "") => {
    const hold = join(dir, "hold");
    const failing = join(dir, "failing");
    const sqlite = JSON.stringify(createRequire(repoFile("api-shim", "src", "store", "sqlite-store.ts")).resolve("better-sqlite3"));
    return runNodeScript<{ events: string[] }>(failingIo({ flag: failing, syncSuffix: "/ck.db", hold, holdSuffix: "/ck.db" }), `
      import { spawn } from "node:child_process";
      import { once } from "node:events";
      import { createRequire } from "node:module";
      import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
      import { startCheckpointer, stopCheckpointer } from ${JSON.stringify(repoFile("api-shim", "src", "store", "sqlite-checkpointer.ts"))};
      const Database = createRequire(import.meta.url)(${sqlite});
      const ck = ${JSON.stringify(ck)};
      const hold = ${JSON.stringify(hold)};
      const db = new Database(ck);
      const update = (t) => db.prepare("UPDATE " + t + " SET x = x + 1").run(); // one frame, of t's page
      // A read snapshot, as a usage report's scan holds one: no checkpoint copies past it.
      const reader = () => {
        const c = new Database(ck, { readonly: true });
        const scan = c.prepare("SELECT * FROM t1").iterate();
        scan.next();
        return { close: () => (scan.return(), c.close()) };
      };
      const disk = { fail: () => writeFileSync(${JSON.stringify(failing)}, ""), recover: () => rmSync(${JSON.stringify(failing)}) };
      // The WAL header's checkpoint sequence number: one more each time the writer starts the WAL over.
      const walStarts = () => readFileSync(ck + "-wal").readUInt32BE(12);
      // Another process checkpointing, as an operator's sqlite3 would: it holds the checkpoint lock
      // (byte 121 of the -shm file, sqlite.org/walformat.html), so the thread's checkpoints answer
      // busy meanwhile, and change nothing.
      const checkpointLock = async () => {
        const locker = spawn("python3", ["-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); fcntl.lockf(fd, fcntl.LOCK_EX, 1, 121); print('locked', flush=True); sys.stdin.read()", ck + "-shm"], { stdio: ["pipe", "pipe", "inherit"], env: { PATH: process.env.PATH } });
        await once(locker.stdout, "data");
        const probe = new Database(ck, { timeout: 0 });
        const busy = probe.pragma("wal_checkpoint(PASSIVE)")[0].busy; // the WAL all copied: it would copy nothing
        probe.close();
        if (busy !== 1) throw new Error("the checkpoint lock is not held");
        return { release: async () => (locker.stdin.end(), await once(locker, "exit")) };
      };
      const events = [];
      const failures = [];
      let reusable = 0;
      const mark = (m) => events.push(m);
      const until = async (done, what) => {
        for (const end = performance.now() + 10_000; !done(); await new Promise((r) => setTimeout(r, 1))) {
          if (performance.now() > end) throw new Error("never " + what + ": " + events.join(", "));
        }
      };
      const held = async (call) => {
        const other = call === "write" ? "sync" : "write";
        await until(() => existsSync(hold + "." + call) || existsSync(hold + "." + other), "held at a " + call);
        if (!existsSync(hold + "." + call)) throw new Error("held at a " + other + ", not a " + call + ": " + events.join(", "));
      };
      const go = (call) => rmSync(hold + "." + call);
      // A checkpoint that copies the WAL's end and meets the failing sync: the run's nth failure.
      const syncFails = async (n) => {
        await held("write"); go("write");
        await held("sync"); go("sync");
        await until(() => failures.length === n, "failure " + n);
      };
      // A checkpoint that copies the end of the WAL it saw while the writer appends (append()): it
      // syncs nothing, yet reports every frame copied (checkpointed = log).
      const allCopiedWhile = async (append) => {
        await held("write");
        const seen = reusable;
        append();
        go("write");
        await until(() => reusable > seen, "the checkpoint reporting all copied");
      };
      ${before}
      writeFileSync(hold, "");
      const worker = startCheckpointer(db, ck, 10, (f) => (failures.push(f.failures), events.push("failed:" + f.failures)), () => reusable++);
      worker.on("message", (m) => m?.checkpoint === "complete" && events.push("complete"));
      ${body}
      rmSync(hold);
      for (const call of ["write", "sync"]) rmSync(hold + "." + call, { force: true });
      await stopCheckpointer(worker);
      db.close();
      console.log(JSON.stringify({ events }));
    `);
  };

  /** The end of each scenario: the disk answers again, and the run ends only after the checkpoint that syncs. */
  const recovery = `
      disk.recover();
      mark("recovered");
      await held("write"); go("write");
      await held("sync"); go("sync"); // copies the WAL's last frame, and syncs
      await until(() => events.includes("complete") && events.indexOf("complete", events.indexOf("recovered")) > 0, "complete after the recovery");
  `;

  it("on a disk failing throughout, checkpoints held back by read snapshots, the WAL idle at one size, do not end the run: only one that copies all and syncs does", () => {
    const { events } = run(`
      disk.fail();
      update("t1"); // frame 1
      await held("write"); go("write");
      await held("sync"); // it copied the whole WAL; its sync is about to fail
      const a = reader(); // a snapshot at frame 1
      update("t2");
      const b = reader(); // at frame 2
      update("t3"); // frame 3: the WAL stays at 3 frames from here on
      go("sync");
      await until(() => failures.length === 1, "a first failure");
      // Stopped short at a's snapshot: copies frame 1, syncs nothing, succeeds.
      await held("write"); go("write");
      a.close();
      // Stopped short at b's: copies frame 2, syncs nothing, succeeds; the WAL has as many frames as before.
      await held("write"); go("write");
      b.close();
      await syncFails(2); // copies frame 3, the WAL's end
      ${recovery}
    `);
    expect(events).toEqual(["failed:1", "failed:2", "recovered", "complete"]);
  }, 40_000);

  it("a checkpoint stopped short by a read snapshot, then one that copies all the frames it saw while the writer appends (so it syncs nothing), do not end the run", () => {
    const { events } = run(`
      disk.fail();
      update("t1"); // frame 1
      await held("write"); go("write");
      await held("sync"); // it copied the whole WAL; its sync is about to fail
      const r = reader(); // a snapshot at frame 1
      update("t2"); // frame 2
      go("sync");
      await until(() => failures.length === 1, "a first failure");
      // Stopped short at r's snapshot: copies frame 1 of 2, syncs nothing, succeeds.
      await held("write"); go("write");
      r.close();
      // Copies frame 2, the end of the WAL it saw, while the writer appends frame 3: the case this test is about.
      await allCopiedWhile(() => update("t3"));
      await syncFails(2); // copies frame 3, the WAL's end
      ${recovery}
    `);
    expect(events).toEqual(["failed:1", "failed:2", "recovered", "complete"]);
  }, 40_000);

  it("a failure between two checkpoints that each report the same frames all copied (the WAL started over between them) starts the pair over: the run goes on", () => {
    const { events } = run(`
      // The disk sound: the first checkpoint copies both frames and syncs (2 frames, all copied).
      await held("write"); go("write");
      await held("sync"); go("sync");
      await until(() => reusable > 0, "the first checkpoint");
      const starts = walStarts();
      disk.fail();
      // The writer starts the WAL over: frame 1 of the new one. Under another process's checkpoint
      // lock: a checkpoint of the thread's between the start over and the frame would find the WAL
      // empty, all copied, and stand between the first of the pair and the failure.
      const lock = await checkpointLock();
      update("t1");
      await lock.release();
      if (walStarts() !== starts + 1) throw new Error("the WAL was not started over");
      await held("write"); go("write");
      await held("sync"); // it copied the whole WAL; its sync is about to fail
      update("t1"); // frame 2
      go("sync");
      await until(() => failures.length === 1, "a first failure");
      // Copies frame 2, the end of the WAL it saw (2 frames, as the first checkpoint's), while the
      // writer appends frame 3.
      await allCopiedWhile(() => update("t1"));
      await syncFails(2); // copies frame 3, the WAL's end
      ${recovery}
    `, `update("t1"); update("t1"); // frames 1 and 2, of one page`);
    expect(events).toEqual(["failed:1", "failed:2", "recovered", "complete"]);
  }, 40_000);
});
