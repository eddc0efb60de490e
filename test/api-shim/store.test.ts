import { spawn } from "node:child_process";
import { once } from "node:events";
import { createRequire } from "node:module";
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MIGRATIONS } from "../../api-shim/src/store/sqlite-migrations.ts";
import { VolumeFullError } from "../../api-shim/src/store/sqlite-space.ts";
import { failureToFailWith, startCheckpointer, stopCheckpointer } from "../../api-shim/src/store/sqlite-checkpointer.ts";
import { SqliteStore } from "../../api-shim/src/store/sqlite-store.ts";
import { reportSql } from "../../api-shim/src/store/sqlite-usage-report.ts";
import { requestsSqliteSql } from "../../api-shim/src/store/request-rows.ts";
import { StoreUnavailableError } from "../../api-shim/src/store/store.ts";
import { corruptLedger } from "../support/corrupt-ledger.ts";
import { failingIo } from "../support/failing-io.ts";
import { failingFsyncs, fullVolumeWrites, repoFile, runNodeScript, tracingFsyncs } from "../support/fsync-trace.ts";
import { previousStores } from "../support/previous-version.ts";
import { smallVolume, unmountVolume } from "../support/small-volume.ts";
import { newKey, storeContract, usage } from "./store-contract.ts";

describe("SqliteStore", () => {
  let dir: string;
  let file: string;
  let store: SqliteStore;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "shim-store-"));
    file = join(dir, "shim.db");
    store = new SqliteStore(file);
  });
  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  storeContract(() => store);

  it("uses WAL, synchronous=NORMAL, and migrates once (user_version)", async () => {
    const db = new Database(file, { readonly: true });
    expect(db.pragma("journal_mode", { simple: true })).toBe("wal");
    expect(db.pragma("user_version", { simple: true })).toBe(MIGRATIONS.length);
    db.close();
    await store.createKey(newKey("k1", 5));
    await store.close();
    store = new SqliteStore(file); // re-opening does not re-run migrations or lose data
    expect((await store.getKey("k1"))!.balance).toBe(5);
  });

  it("a WAL that a long read (a usage report's snapshot) let grow is cut back once it is reset, not kept at its largest", async () => {
    await store.close();
    store = new SqliteStore(file, { checkpointIntervalMs: 50 });
    await store.createKey(newKey("w", 1e12));
    const walSize = () => statSync(`${file}-wal`).size;
    let n = 0;
    const settleMany = async (count: number) => {
      for (let i = 0; i < count; i++) {
        const id = `r${n++}`;
        await store.reserve({ reservationId: id, keyId: "w", amount: 10, at: Date.now() });
        await store.settle({ reservationId: id, keyId: "w", hold: 10, cost: 5, usage: usage("w", id, 5) });
        await new Promise((r) => setImmediate(r)); // the group commit's turn: one COMMIT per request, as under load
      }
    };
    await settleMany(20);
    // A reader in the middle of a statement (as the report worker's scan) keeps checkpoints from
    // reaching the WAL's end, so the WAL grows.
    const reader = new Database(file, { readonly: true });
    const scan = reader.prepare("SELECT * FROM ledger").iterate();
    scan.next();
    while (walSize() < 20 * 1024 * 1024) await settleMany(200);
    scan.return?.();
    reader.close();
    // Checkpoints now complete; the next writes reset the WAL, and the limit truncates it.
    await expect.poll(async () => (await settleMany(20), walSize()), { timeout: 10_000, interval: 100 }).toBeLessThanOrEqual(16 * 1024 * 1024);
  }, 60_000);

  /**
   * Under `prefix`, with checkpoints every 50 ms and a limit of 1 s: requests keep coming (they
   * write the WAL) until the store fails closed, or `ms` have passed and `reports` checkpoint
   * failures were reported (20 s at most: a loaded machine checkpoints less often). With
   * `snapshotMs`, a reader holds a read snapshot (as a usage report or a backup does) for that
   * long from the first failure on: checkpoints cannot reach the WAL's end meanwhile.
   */
  const checkpointsUnder = (prefix: string[], ms: number, reports = 0, snapshotMs = 0, pauseMs = 20) => runNodeScript<{ reported: { code: string; failures: number }[]; failures: { code: string; message: string; afterReports: number }[]; after: string; ms: number; firstReportedMs: number | null }>(prefix, `
    import { createRequire } from "node:module";
    import { SqliteStore } from ${JSON.stringify(repoFile("api-shim", "src", "store", "sqlite-store.ts"))};
    const reported = [];
    const failures = [];
    let snapshot = null;
    let firstReportedMs = null;
    const Database = createRequire(${JSON.stringify(repoFile("api-shim", "src", "store", "sqlite-store.ts"))})("better-sqlite3");
    const store = new SqliteStore(${JSON.stringify(file)}, {
      checkpointIntervalMs: 50, checkpointFailureLimitMs: 1000,
      onCheckpointFailure: (f) => (firstReportedMs ??= performance.now() - started, reported.push({ code: f.error.code, failures: f.failures })),
      onFailure: (e) => failures.push({ code: e.code, message: e.message, afterReports: reported.length }),
    });
    const started = performance.now();
    const usage = (id) => ({ at: 2, requestId: id, keyId: "k", route: "chat", model: "m", status: 200, promptTokens: 1, completionTokens: 1, cost: 1, stream: false, ms: 1, served: true });
    const more = () => performance.now() - started < ${ms} || (reported.length < ${reports} && performance.now() - started < 20000);
    for (let n = 0; failures.length === 0 && more(); n++) {
      if (${snapshotMs} > 0 && reported.length > 0 && snapshot === null) {
        const reader = new Database(${JSON.stringify(file)}, { readonly: true });
        const scan = reader.prepare("SELECT * FROM ledger").iterate();
        scan.next();
        snapshot = setTimeout(() => (scan.return(), reader.close()), ${snapshotMs});
      }
      await store.reserve({ reservationId: "r" + n, keyId: "k", amount: 1, at: 2 }).catch(() => {});
      await store.settle({ reservationId: "r" + n, keyId: "k", hold: 1, cost: 1, usage: usage("q" + n) }).catch(() => {});
      await new Promise((r) => (${pauseMs} > 0 ? setTimeout(r, ${pauseMs}) : setImmediate(r)));
    }
    const ms = performance.now() - started;
    const after = await store.reserve({ reservationId: "x", keyId: "k", amount: 1, at: 2 }).then(() => "served", (e) => e.name);
    await store.close().catch(() => {});
    console.log(JSON.stringify({ reported, failures, after, ms, firstReportedMs }));
  `);

  it("WAL checkpoints that fail (a disk whose fsync fails) are reported one by one, and fail the store closed, naming the cause, once they have failed for the limit", async () => {
    await store.createKey(newKey("k", 1e12));
    await store.close();
    const out = checkpointsUnder(failingFsyncs(file), 10_000);
    expect(out.reported.length).toBeGreaterThanOrEqual(2);
    // Counted from the first failure on, whatever succeeds in between: a checkpoint that stops
    // short of the WAL's end (the writer appended meanwhile) syncs nothing and succeeds, but none
    // copies the WAL whole.
    expect(out.reported).toEqual(out.reported.map((_, i) => ({ code: "SQLITE_IOERR_FSYNC", failures: i + 1 })));
    expect(out.failures).toHaveLength(1);
    expect(out.failures[0]!.code).toBe("SQLITE_IOERR_FSYNC");
    expect(out.failures[0]!.message).toMatch(/^WAL checkpoints have failed for 1 s \(\d+ failures, none completed since; last: SQLITE_IOERR_FSYNC disk I\/O error\): the WAL grows until the volume is full/);
    expect(out.ms).toBeGreaterThanOrEqual(1000);
    expect(out.after).toBe("StoreUnavailableError");
    store = new SqliteStore(file); // for afterEach; the ledger is whole
    expect((await store.audit()).find((r) => r.keyId === "k")).toMatchObject({ held: 0 });
  }, 40_000);

  it("a WAL checkpoint that fails with SQLITE_FULL (the volume filled up) fails the store closed at once, not after the limit meant for a failing disk", async () => {
    await store.createKey(newKey("k", 1e12));
    await store.close();
    const out = checkpointsUnder(fullVolumeWrites(file), 10_000);
    // Its first failure fails it closed. (The thread's next checkpoint may fail too before the
    // requests' loop sees the store closed, on a loaded machine: reported, harmlessly.)
    expect(out.reported[0]).toEqual({ code: "SQLITE_FULL", failures: 1 });
    expect(out.reported.every((r) => r.code === "SQLITE_FULL")).toBe(true);
    // At once: in the same turn as the first failure's report, not after the 1 s limit (counted in
    // reports, not in wall-clock time, which a loaded machine stretches while strace stops each
    // syscall).
    expect(out.failures).toEqual([{ code: "SQLITE_FULL", message: "database or disk is full", afterReports: 1 }]);
    expect(out.after).toBe("StoreUnavailableError");
    store = new SqliteStore(file); // for afterEach; the ledger is whole
    const row = (await store.audit()).find((r) => r.keyId === "k")!;
    expect(row).toMatchObject({ held: 0, ledgerSum: row.balance });
  }, 40_000);

  /**
   * A store with key `id` of 10 credits, one hold of 1 committed, and its settlement (0.25
   * charged) in the open batch, not committed yet: `settled` is its answer, which comes once the
   * batch is written (the store's `s`, for its internals).
   */
  const settledInOpenBatch = async (id: string, onFailure: (e: unknown) => void) => {
    await store.close();
    store = new SqliteStore(file, { onFailure });
    await store.createKey(newKey(id, 10_000_000));
    expect((await store.reserve({ reservationId: `r-${id}`, keyId: id, amount: 1_000_000, at: 2 })).ok).toBe(true);
    await store.flush();
    const settled = store.settle({ reservationId: `r-${id}`, keyId: id, hold: 1_000_000, cost: 250_000, usage: usage(id, `q-${id}`, 250_000) });
    settled.catch(() => {}); // awaited by the test, after what it does to the batch
    return { s: store as unknown as { checkpointFailed(f: { error: Error; failures: number; failingMs: number }): void }, settled };
  };
  const reopenedRow = async (id: string) => {
    await store.close().catch(() => {});
    store = new SqliteStore(file);
    return (await store.audit()).find((r) => r.keyId === id)!;
  };

  it("a store failing closed for a cause outside the open batch (a checkpoint, the volume check) commits that batch first: its settlements are charged, and answered", async () => {
    const failures: unknown[] = [];
    const { s, settled } = await settledInOpenBatch("k", (e) => failures.push(e));
    s.checkpointFailed({ error: Object.assign(new Error("database or disk is full"), { code: "SQLITE_FULL" }), failures: 1, failingMs: 0 });
    expect(failures).toHaveLength(1); // at once: a full volume is no failing disk that may recover
    expect(await settled).toEqual({ available: 9_750_000, charged: 250_000 });
    await expect(store.reserve({ reservationId: "x", keyId: "k", amount: 1, at: 3 })).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(await reopenedRow("k")).toEqual({ keyId: "k", balance: 9_750_000, held: 0, ledgerSum: 9_750_000, reservations: 0, reservedSum: 0 });
  });

  it("a corrupt page met outside the open batch rolls the batch back (nothing more is written to a corrupt file); so does the batch's own failed statement: their settlements are answered 503, no charge told", async () => {
    const { s, settled } = await settledInOpenBatch("c", () => {});
    s.checkpointFailed({ error: Object.assign(new Error("database disk image is malformed"), { code: "SQLITE_CORRUPT" }), failures: 1, failingMs: 0 });
    await expect(settled).rejects.toBeInstanceOf(StoreUnavailableError);
    // Not charged: the hold is left for the next start to release, as after a crash.
    expect(await reopenedRow("c")).toMatchObject({ balance: 10_000_000, held: 1_000_000, reservations: 1 });
    await store.releaseStaleReservations();
    const t = await settledInOpenBatch("b", () => {});
    (t.s as unknown as { stmt: { applyMoney: { run(): unknown } } }).stmt.applyMoney = { run: () => { throw Object.assign(new Error("database or disk is full"), { code: "SQLITE_FULL" }); } };
    await store.flush(); // the batch's own write fails: it is rolled back whole
    await expect(t.settled).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(await reopenedRow("b")).toMatchObject({ balance: 10_000_000, held: 1_000_000, reservations: 1 });
  });

  it("a read in the open batch's transaction that fails with an I/O error (getKey: SQLite rolls the transaction back itself) fails the store closed without writing the batch outside a transaction: the ledger stays balanced", async () => {
    await store.close();
    const flag = join(dir, "disk-failing");
    // Keys with long names over many pages, so that getKey("k299") reads a page of shim.db no
    // statement before it read; the store's last close copied them all out of the WAL.
    const setUp = new SqliteStore(file, { checkpointIntervalMs: 1e9 });
    const padded = (id: string, credits: number) => ({ ...newKey(id, credits), name: id.padEnd(200, "n") });
    await setUp.createKey(padded("x", 10_000_000));
    for (let i = 0; i < 150; i++) await setUp.createKey(padded(`j${i}`, 1));
    await setUp.createKey(padded("y", 10_000_000));
    for (let i = 0; i < 300; i++) await setUp.createKey(padded(`k${i}`, 1));
    await setUp.close();
    // The read fails with ESTALE (an NFS volume; SQLITE_IOERR_READ); then the WAL takes 8 writes
    // and no more (ENOSPC). Before, fail() committed the batch all the same: its writes ran in
    // autocommit mode one by one, x's ledger row committed, its balance change not.
    const prefix = failingIo({ flag, readSuffix: "/shim.db", failReads: 1, errno: 116, writeSuffix: "-wal", writesPass: 8 });
    const out = runNodeScript<{ wrote: boolean[]; got: string; failures: string[]; after: string }>(prefix, `
      import { rmSync, writeFileSync } from "node:fs";
      import { SqliteStore } from ${JSON.stringify(repoFile("api-shim", "src", "store", "sqlite-store.ts"))};
      const failures = [];
      const s = new SqliteStore(${JSON.stringify(file)}, { checkpointIntervalMs: 1e9, onFailure: (e) => failures.push(e.code ?? e.message) });
      const usage = (keyId, requestId) => ({ requestId, keyId, at: 2000, route: "chat", model: "m", status: 200, promptTokens: 3, completionTokens: 4, cost: 250000, stream: false, ms: 1, served: true });
      for (const k of ["x", "y"]) await s.reserve({ reservationId: "r" + k, keyId: k, amount: 1000000, at: 2 });
      await s.flush();
      const settled = ["x", "y"].map((k) => s.settle({ reservationId: "r" + k, keyId: k, hold: 1000000, cost: 250000, usage: usage(k, "q" + k) }).then(() => "answered", (e) => e.name));
      const wrote = [], write = s.batch.write.bind(s.batch);
      s.batch.write = () => (wrote.push(s.db.inTransaction), write());
      writeFileSync(${JSON.stringify(flag)}, "");
      const got = await s.getKey("k299").then(() => "answered", (e) => e.cause?.code ?? String(e));
      rmSync(${JSON.stringify(flag)});
      const after = await s.reserve({ reservationId: "z", keyId: "x", amount: 1, at: 3 }).then(() => "served", (e) => e.name);
      await s.close().catch(() => {});
      console.log(JSON.stringify({ wrote, got, failures, after, settled: await Promise.all(settled) }));
    `);
    // The settlements never written are not answered as charged.
    expect(out).toEqual({ wrote: [], got: "SQLITE_IOERR_READ", failures: ["SQLITE_IOERR_READ"], after: "StoreUnavailableError", settled: ["StoreUnavailableError", "StoreUnavailableError"] });
    store = new SqliteStore(file);
    // The open batch is lost whole, as after a crash: its settlements uncharged, its holds for the next start to release.
    for (const id of ["x", "y"]) expect((await store.audit()).find((r) => r.keyId === id)).toMatchObject({ balance: 10_000_000, ledgerSum: 10_000_000, held: 1_000_000, reservations: 1 });
  }, 60_000);

  it("a batch whose transaction is gone when it commits is dropped, not written statement by statement, and the store fails closed", async () => {
    const failures: unknown[] = [];
    const { settled } = await settledInOpenBatch("g", (e) => failures.push(e));
    const db = (store as unknown as { db: Database.Database }).db;
    db.exec("ROLLBACK"); // as SQLite does itself on an I/O error, a full disk or no memory in one of its statements
    await store.flush();
    await expect(settled).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(failures).toEqual([expect.objectContaining({ message: expect.stringMatching(/^SQLite rolled back the open batch's transaction itself/) })]);
    await expect(store.reserve({ reservationId: "x", keyId: "g", amount: 1, at: 3 })).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(await reopenedRow("g")).toMatchObject({ balance: 10_000_000, ledgerSum: 10_000_000, held: 1_000_000, reservations: 1 });
  });

  it("a batch whose COMMIT itself fails is rolled back: its settlements are answered 503, no charge told", async () => {
    const { s, settled } = await settledInOpenBatch("f", () => {});
    (s as unknown as { stmt: { commit: { run(): unknown } } }).stmt.commit = { run: () => { throw Object.assign(new Error("disk I/O error"), { code: "SQLITE_IOERR_WRITE" }); } };
    await store.flush();
    await expect(settled).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(await reopenedRow("f")).toMatchObject({ balance: 10_000_000, held: 1_000_000, reservations: 1 });
  });

  it("a settlement that opens a batch after close() has committed the last one, its connection closed before that batch's turn, is answered 503, not left waiting", async () => {
    await store.createKey(newKey("w", 10_000_000));
    expect((await store.reserve({ reservationId: "r-w", keyId: "w", amount: 1_000_000, at: 2 })).ok).toBe(true);
    await store.flush();
    const walSync = (store as unknown as { walSync: { close(): Promise<void> } }).walSync;
    const closeSync = walSync.close.bind(walSync);
    let settled: Promise<unknown> | undefined;
    walSync.close = () => {
      // After close()'s own commit: this opens a new batch, on a connection closed at once after
      // (the last sync not waited for), before the batch's turn to commit comes: a WAL sync that
      // takes a while would let the batch commit first, and its settlement be answered charged.
      settled = store.settle({ reservationId: "r-w", keyId: "w", hold: 1_000_000, cost: 250_000, usage: usage("w", "q-w", 250_000) });
      settled.catch(() => {});
      void closeSync();
      return Promise.resolve();
    };
    await store.close();
    const late = new Promise((resolve) => setTimeout(() => resolve("still waiting"), 2_000));
    await expect(Promise.race([settled, late])).rejects.toBeInstanceOf(StoreUnavailableError);
  });

  it("a settlement whose batch commits before settle() reads its outcome (the same turn: an admin operation's commit, a failure from elsewhere that commits first) is answered charged, not 503", async () => {
    const failures: unknown[] = [];
    await store.close();
    store = new SqliteStore(file, { onFailure: (e) => failures.push(e) });
    await store.createKey(newKey("n", 10_000_000));
    for (const r of ["a", "b"]) expect((await store.reserve({ reservationId: r, keyId: "n", amount: 1_000_000, at: 2 })).ok).toBe(true);
    await store.flush();
    const first = store.settle({ reservationId: "a", keyId: "n", hold: 1_000_000, cost: 250_000, usage: usage("n", "qa", 250_000) });
    const flushed = store.flush(); // commits the batch now, before the settlement asks for its outcome
    expect(await first).toMatchObject({ charged: 250_000 });
    await flushed;
    const second = store.settle({ reservationId: "b", keyId: "n", hold: 1_000_000, cost: 250_000, usage: usage("n", "qb", 250_000) });
    // A failure from elsewhere commits the open batch first, then fails the store closed.
    (store as unknown as { checkpointFailed(f: { error: Error; failures: number; failingMs: number }): void })
      .checkpointFailed({ error: Object.assign(new Error("database or disk is full"), { code: "SQLITE_FULL" }), failures: 1, failingMs: 0 });
    expect(await second).toMatchObject({ charged: 250_000 });
    expect(failures).toHaveLength(1);
    expect(await reopenedRow("n")).toMatchObject({ balance: 9_500_000, ledgerSum: 9_500_000, held: 0, reservations: 0 });
  });

  it("a disk that fails a checkpoint now and then does not fail the store closed: each failure is over once a checkpoint copies the WAL whole", async () => {
    await store.createKey(newKey("k", 1e12));
    await store.close();
    const out = checkpointsUnder(failingFsyncs(file, "1+8"), 3000, 4); // one sync of the file in 8 fails
    // Failures spanning more than the limit (1 s), each over (its count back at 1) once a
    // checkpoint copied the WAL whole. (On a loaded machine one such copy may go unseen between
    // two failures, which then count as one run: rarely, and never up to the limit here.)
    expect(out.reported.length).toBeGreaterThanOrEqual(4);
    expect(out.reported.filter((r) => r.failures === 1).length).toBeGreaterThanOrEqual(3);
    expect(out.failures).toEqual([]);
    expect(out.after).toBe("served");
    store = new SqliteStore(file); // for afterEach
  }, 40_000);

  it("under steady load (a request every few ms, so no two checkpoints in a row find the WAL idle) a checkpoint failure now and then is still over once one copies the WAL whole: the store does not fail closed", async () => {
    await store.createKey(newKey("k", 1e12));
    await store.close();
    // One sync of the file in 8 fails; a request every 5 ms (checkpoints every 50 ms), as under
    // load: no two checkpoints in a row find the WAL without new frames, so a failure is over only
    // by the WAL being started over (fewer frames than at the failure).
    const out = checkpointsUnder(failingFsyncs(file, "1+8"), 3000, 6, 0, 5);
    expect(out.reported.length).toBeGreaterThanOrEqual(6);
    expect(out.reported.filter((r) => r.failures === 1).length).toBeGreaterThanOrEqual(4);
    expect(out.failures).toEqual([]);
    expect(out.after).toBe("served");
    store = new SqliteStore(file); // for afterEach
  }, 40_000);

  it("a checkpoint failure, a read snapshot held past the limit, and one more failure do not fail the store closed: it takes repeated failures", async () => {
    await store.createKey(newKey("k", 1e12));
    await store.close();
    // The first two syncs of the file fail; a reader holds its snapshot 3 s (the limit is 1 s) from the first on.
    const out = checkpointsUnder(failingFsyncs(file, "1..2"), 5000, 2, 3000);
    expect(out.reported).toEqual([{ code: "SQLITE_IOERR_FSYNC", failures: 1 }, { code: "SQLITE_IOERR_FSYNC", failures: 2 }]);
    expect(out.failures).toEqual([]);
    expect(out.after).toBe("served");
    store = new SqliteStore(file); // for afterEach
  }, 40_000);

  it("admin writes (keys, top-ups, revocations) are on disk before they are answered (the WAL is synced after their commit); request-path commits are not", async () => {
    await store.close();
    const trace = join(dir, "fsyncs.txt");
    const marker = join(dir, "marker");
    writeFileSync(marker, "");
    runNodeScript(tracingFsyncs(trace, [`${file}-wal`, marker]), `
      import { closeSync, fsyncSync, openSync } from "node:fs";
      import { SqliteStore } from ${JSON.stringify(repoFile("api-shim", "src", "store", "sqlite-store.ts"))};
      const marker = openSync(${JSON.stringify(marker)}, "r+");
      const mark = () => fsyncSync(marker); // a line in the trace between one part and the next
      const store = new SqliteStore(${JSON.stringify(file)}, { checkpointIntervalMs: 3_600_000 }); // no checkpoint meanwhile
      mark();
      await store.createKey({ id: "k", name: "k", hash: "h", tier: "free", models: null, credits: 1000, expiresAt: null, at: 1 });
      mark();
      for (let n = 0; n < 20; n++) {
        await store.reserve({ reservationId: "r" + n, keyId: "k", amount: 1, at: 2 });
        await store.settle({ reservationId: "r" + n, keyId: "k", hold: 1, cost: 1, usage: { at: 2, requestId: "q" + n, keyId: "k", route: "chat", model: "m", status: 200, promptTokens: 1, completionTokens: 1, cost: 1, stream: false, ms: 1, served: true } });
        await store.flush();
      }
      mark();
      await store.topUp({ keyId: "k", amount: 5, note: null, at: 3, idempotency: null, respond: (k) => JSON.stringify(k), refuse: () => null });
      mark();
      await store.revokeKey("k", 4);
      mark();
      closeSync(marker);
      await store.close();
      console.log("{}");
    `);
    const parts = readFileSync(trace, "utf8").split(/^.*marker>\).*$/m).slice(1, 5);
    const walSyncs = parts.map((p) => p.split("\n").filter((l) => /^\d+ +f(data)?sync\(\d+<.*shim\.db-wal>\) += 0/.test(l)).length);
    const [keyCreated, charges, toppedUp, revoked] = walSyncs;
    expect({ keyCreated: keyCreated! > 0, charges, toppedUp: toppedUp! > 0, revoked: revoked! > 0 }).toEqual({ keyCreated: true, charges: 0, toppedUp: true, revoked: true });
    store = new SqliteStore(file); // for afterEach
    expect((await store.getKey("k"))!).toMatchObject({ balance: 985, revokedAt: 4 });
  }, 40_000);

  it("an admin write's sync of the WAL does not stop the event loop: a slow disk (each sync 400 ms) delays the top-up, not other requests", async () => {
    await store.close();
    const wal = `${file}-wal`;
    const slowSyncs = ["strace", "-f", "-qq", "-o", "/dev/null", "-P", wal, "-e", "trace=fsync,fdatasync", "-e", "inject=fsync,fdatasync:delay_exit=400000"];
    const out = runNodeScript<{ toppedUpMs: number; longestTickGapMs: number; balance: number }>(slowSyncs, `
      import { SqliteStore } from ${JSON.stringify(repoFile("api-shim", "src", "store", "sqlite-store.ts"))};
      const store = new SqliteStore(${JSON.stringify(file)}, { checkpointIntervalMs: 3_600_000 }); // no checkpoint meanwhile
      await store.createKey({ id: "k", name: "k", hash: "h", tier: "free", models: null, credits: 1000, expiresAt: null, at: 1 });
      let last = performance.now();
      let longestTickGapMs = 0;
      const ticks = setInterval(() => {
        const now = performance.now();
        longestTickGapMs = Math.max(longestTickGapMs, now - last);
        last = now;
      }, 5);
      await new Promise((r) => setTimeout(r, 50));
      const started = performance.now();
      await Promise.all([1, 2, 3].map((n) => store.topUp({ keyId: "k", amount: n, note: null, at: 3, idempotency: null, respond: (k) => JSON.stringify(k), refuse: () => null })));
      const toppedUpMs = performance.now() - started;
      await new Promise((r) => setTimeout(r, 50));
      clearInterval(ticks);
      const balance = (await store.getKey("k")).balance;
      await store.close();
      console.log(JSON.stringify({ toppedUpMs, longestTickGapMs, balance }));
    `);
    expect(out.balance).toBe(1006);
    expect(out.toppedUpMs).toBeGreaterThanOrEqual(400); // the top-ups waited for their sync
    expect(out.longestTickGapMs).toBeLessThan(350); // while timers (and requests) went on: no 400 ms sync on this thread
  }, 40_000);

  it("a corrupt ledger page fails the store closed as soon as a statement meets it, on the report thread as on the main one; a start does not scan for it", async () => {
    await store.createKey(newKey("k", 1e12));
    await store.close();
    corruptLedger(file, "k");
    const failures: unknown[] = [];
    store = new SqliteStore(file, { onFailure: (e) => failures.push(e) });
    // Nothing reads that page at start, nor to hold and charge: served until something does.
    expect((await store.reserve({ reservationId: "r", keyId: "k", amount: 1, at: Date.now() })).ok).toBe(true);
    await store.settle({ reservationId: "r", keyId: "k", hold: 1, cost: 1, usage: usage("k", "q", 1, Date.now()) });
    await store.flush();
    expect(failures).toEqual([]);
    // The key's report reads its month of rows on the report thread.
    await expect(store.usage({ keyId: "k", asker: "k", from: 0, to: Date.now() + 1000, group: "model" })).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(failures).toHaveLength(1);
    expect((failures[0] as { code?: string }).code).toBe("SQLITE_CORRUPT");
    await expect(store.ping()).rejects.toBeInstanceOf(StoreUnavailableError);
    await expect(store.reserve({ reservationId: "r2", keyId: "k", amount: 1, at: Date.now() })).rejects.toBeInstanceOf(StoreUnavailableError);
    // On the main thread (the audit sums the ledger there): the same.
    await store.close().catch(() => {});
    const again: unknown[] = [];
    store = new SqliteStore(file, { onFailure: (e) => again.push(e) });
    await expect(store.audit()).rejects.toBeInstanceOf(StoreUnavailableError);
    expect((again[0] as { code?: string }).code).toBe("SQLITE_CORRUPT");
  });

  it("a checkpoint thread that dies leaves checkpoints to the main connection: the WAL does not grow without bound", async () => {
    await store.createKey(newKey("w", 1e12));
    const worker = (store as unknown as { checkpointer: import("node:worker_threads").Worker }).checkpointer;
    await worker.terminate(); // as if it died
    const walSize = () => statSync(`${file}-wal`).size;
    for (let i = 0; i < 3000; i++) {
      await store.reserve({ reservationId: `d${i}`, keyId: "w", amount: 10, at: Date.now() });
      await store.settle({ reservationId: `d${i}`, keyId: "w", hold: 10, cost: 5, usage: usage("w", `d${i}`, 5) });
      await new Promise((r) => setImmediate(r)); // one COMMIT per request
    }
    // wal_autocheckpoint = 1000 pages (4 MiB): the WAL is copied and started over past that.
    expect(walSize()).toBeLessThan(6 * 1024 * 1024);
  }, 60_000);

  it("a checkpoint that finds another connection checkpointing (busy: an operator's RESTART waiting on a reader) copied nothing: it does not post the WAL as reused room", async () => {
    const ck = join(dir, "ck.db");
    const db = new Database(ck);
    db.pragma("journal_mode = WAL");
    db.exec("CREATE TABLE t (x)");
    const insert = db.prepare("INSERT INTO t VALUES (randomblob(1000))");
    for (let i = 0; i < 100; i++) insert.run();
    const reusable: number[] = [];
    const failures: unknown[] = [];
    const worker = startCheckpointer(db, ck, 50, (f) => failures.push(f), (bytes) => reusable.push(bytes));
    // A reader's snapshot (a usage report's scan): no checkpoint gets past it, none copies the WAL whole.
    const reader = new Database(ck, { readonly: true });
    const scan = reader.prepare("SELECT * FROM t").iterate();
    scan.next();
    for (let i = 0; i < 100; i++) insert.run();
    // An operator's `PRAGMA wal_checkpoint(RESTART)` (sqlite3 with .timeout): it holds the
    // checkpoint lock while it waits for the reader; the thread's PASSIVE checkpoints are busy.
    const operator = spawn(process.execPath, ["-e", `
      const db = new (require(${JSON.stringify(createRequire(repoFile("api-shim", "src", "store", "sqlite-store.ts")).resolve("better-sqlite3"))}))(${JSON.stringify(ck)});
      db.pragma("busy_timeout = 2500");
      console.log("waiting");
      console.log(JSON.stringify(db.pragma("wal_checkpoint(RESTART)")[0]));
      db.close();
    `], { stdio: ["ignore", "pipe", "inherit"] });
    // Listened for from the start: on a loaded machine it may exit before the waits below end.
    const exited = once(operator, "exit");
    let printed = "";
    operator.stdout!.on("data", (d: Buffer) => void (printed += d.toString()));
    try {
      await expect.poll(() => printed, { timeout: 10_000 }).toContain("waiting"); // a node start, slow under load
      await new Promise((r) => setTimeout(r, 300)); // the checkpoint lock taken, checkpoints already found busy
      const before = reusable.length;
      await new Promise((r) => setTimeout(r, 1000)); // some 20 busy checkpoints
      expect(reusable.slice(before)).toEqual([]);
      expect(failures).toEqual([]);
      await exited;
      // It held the checkpoint lock to its busy timeout, past that second: the case this test is about.
      expect(JSON.parse(printed.trim().split("\n").at(-1)!)).toMatchObject({ busy: 1 });
    } finally {
      await exited;
      scan.return?.();
      reader.close();
      await stopCheckpointer(worker);
      db.close();
    }
  });

  it("a database file moved away as the store starts is not created anew, empty, by the checkpoint thread", async () => {
    await store.close();
    store = new SqliteStore(file);
    // Before the checkpoint thread has opened its connection (it starts on a thread of its own).
    renameSync(file, `${file}.away`);
    await new Promise((r) => setTimeout(r, 800));
    const created = existsSync(file);
    renameSync(`${file}.away`, file);
    expect(created).toBe(false); // an empty database there would take the real one's WAL into it
    // Its thread ended (the file was not there): the store's close does not wait for its answer.
    const t = performance.now();
    await store.close();
    expect(performance.now() - t).toBeLessThan(1000);
    store = new SqliteStore(file); // for afterEach
  });

  it("the database itself refuses a negative available balance and edits to the ledger", async () => {
    await store.createKey(newKey("k", 1));
    const db = new Database(file);
    expect(() => db.prepare("UPDATE keys SET held = 2 WHERE id = 'k'").run()).toThrow(/CHECK constraint/);
    expect(() => db.prepare("UPDATE ledger SET amount = 100").run()).toThrow(/append-only/);
    expect(() => db.prepare("DELETE FROM ledger").run()).toThrow(/append-only/);
    db.close();
  });

  it("releases the reservations of other instances (a dead process) and keeps its own", async () => {
    await store.createKey(newKey("k", 10));
    await store.reserve({ reservationId: "mine", keyId: "k", amount: 2, at: 1 });
    await store.flush(); // group commit: let the other connection write
    const dead = new SqliteStore(file);
    await dead.reserve({ reservationId: "theirs", keyId: "k", amount: 5, at: 1 });
    await dead.close();
    expect(await store.releaseStaleReservations()).toBe(1);
    expect(await store.audit()).toEqual([{ keyId: "k", balance: 10, held: 2, ledgerSum: 10, reservations: 1, reservedSum: 2 }]);
  });

  it("releases a dead process's holds and keeps every one of its own, several on one key", async () => {
    await store.createKey(newKey("k", 10));
    await store.reserve({ reservationId: "m1", keyId: "k", amount: 2, at: 1 });
    await store.reserve({ reservationId: "m2", keyId: "k", amount: 3, at: 1 });
    await store.flush();
    const dead = new SqliteStore(file);
    await dead.reserve({ reservationId: "theirs", keyId: "k", amount: 4, at: 1 });
    await dead.close();
    expect(await store.releaseStaleReservations()).toBe(1);
    expect(await store.audit()).toEqual([{ keyId: "k", balance: 10, held: 5, ledgerSum: 10, reservations: 2, reservedSum: 5 }]);
  });

  it("busy checkpoints in the middle of a failing disk's run (an operator's RESTART waiting on a reader) neither end the run nor count in it: its failures go on from where they were, and its time from its first failure", async () => {
    const ck = join(dir, "ck.db");
    const made = new Database(ck); // made here: the switch to WAL syncs the file, which fails in the script
    made.pragma("journal_mode = WAL");
    made.exec("CREATE TABLE t (x)");
    made.close();
    const sqlite = JSON.stringify(createRequire(repoFile("api-shim", "src", "store", "sqlite-store.ts")).resolve("better-sqlite3"));
    const out = runNodeScript<{ before: number[]; after: { failures: number; failingMs: number }[]; busyMs: number; operator: { busy: number } }>(failingFsyncs(ck), `
      import { createRequire } from "node:module";
      import { Worker } from "node:worker_threads";
      import { startCheckpointer, stopCheckpointer } from ${JSON.stringify(repoFile("api-shim", "src", "store", "sqlite-checkpointer.ts"))};
      const Database = createRequire(import.meta.url)(${sqlite});
      const db = new Database(${JSON.stringify(ck)});
      const insert = db.prepare("INSERT INTO t VALUES (randomblob(1000))");
      for (let i = 0; i < 100; i++) insert.run();
      const failures = [];
      const worker = startCheckpointer(db, ${JSON.stringify(ck)}, 50, (f) => failures.push({ failures: f.failures, failingMs: f.failingMs }));
      const wait = (ms) => new Promise((r) => setTimeout(r, ms));
      // A failing disk: each checkpoint copies the whole WAL and fails its fsync of the file.
      while (failures.length < 2) await wait(20);
      // A reader's snapshot, frames past it, and an operator's RESTART holding the checkpoint lock
      // while it waits for the reader (1.5 s): the thread's checkpoints meanwhile are busy.
      const reader = new Database(${JSON.stringify(ck)}, { readonly: true });
      const scan = reader.prepare("SELECT * FROM t").iterate();
      scan.next();
      for (let i = 0; i < 100; i++) insert.run();
      // A RESTART can answer busy at once, without waiting (a fresh-clone CI run saw 20 ms: most
      // likely it met the thread's own checkpoint holding the checkpoint lock): the case is one that
      // waited, so the operator tries again (five times at most) until one does.
      let answers = [];
      let before = [];
      let busyMs = 0;
      for (let attempt = 0; attempt < 5 && busyMs <= 1000; attempt++) {
        const operator = new Worker(\`
          const { parentPort } = require("node:worker_threads");
          const db = new (require(${sqlite.replaceAll("\\", "\\\\")}))(${JSON.stringify(ck)});
          db.pragma("busy_timeout = 1500");
          parentPort.postMessage("waiting");
          parentPort.postMessage(db.pragma("wal_checkpoint(RESTART)")[0]);
          db.close();
        \`, { eval: true });
        answers = [];
        operator.on("message", (m) => answers.push(m));
        while (answers.length === 0) await wait(5);
        before = failures.map((f) => f.failures);
        const busyFrom = performance.now();
        while (answers.length < 2) await wait(20);
        busyMs = performance.now() - busyFrom;
      }
      scan.return();
      reader.close();
      // The reader gone, checkpoints copy the whole WAL again, and fail again.
      while (failures.length < before.length + 2) await wait(20);
      await stopCheckpointer(worker);
      db.close();
      console.log(JSON.stringify({ before, after: failures.slice(before.length), busyMs, operator: answers[1] }));
    `);
    expect(out.operator).toMatchObject({ busy: 1 }); // it held the lock to its timeout: the case this test is about
    expect(out.busyMs).toBeGreaterThan(1000);
    // One run throughout: the counts go on (a busy answer read as "all copied" started them over at 1).
    expect([...out.before, ...out.after.map((f) => f.failures)]).toEqual(out.before.concat(out.after.map((_, i) => out.before.length + i + 1)));
    expect(out.after[0]!.failingMs).toBeGreaterThan(out.busyMs);
  }, 40_000);

  it("an admin write the database refuses for its own reason (a duplicate key) is answered at once, not retried as if the lock were busy", async () => {
    await store.createKey(newKey("dup", 1));
    const started = performance.now();
    await expect(store.createKey(newKey("dup", 1))).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(performance.now() - started).toBeLessThan(1000); // busyTimeoutMs is 5 s
  });

  it("holds are visible to other connections as the key's held sum and count, and settled exactly once", async () => {
    await store.createKey(newKey("k", 10));
    await store.reserve({ reservationId: "a", keyId: "k", amount: 3, at: 1 });
    await store.reserve({ reservationId: "b", keyId: "k", amount: 4, at: 1 });
    await store.flush();
    const reader = new Database(file, { readonly: true });
    const row = () => reader.prepare("SELECT balance, held, holds FROM keys WHERE id = 'k'").get();
    expect(row()).toEqual({ balance: 10, held: 7, holds: 2 });
    expect(await store.audit()).toEqual([{ keyId: "k", balance: 10, held: 7, ledgerSum: 10, reservations: 2, reservedSum: 7 }]);
    await store.settle({ reservationId: "a", keyId: "k", hold: 3, cost: 2, usage: usage("k", "qa", 2) });
    await store.settle({ reservationId: "a", keyId: "k", hold: 3, cost: 2, usage: usage("k", "qa", 2) }); // no-op
    await store.settle({ reservationId: "b", keyId: "k", hold: 4, cost: 0, usage: { ...usage("k", "qb"), status: 502, promptTokens: 0, completionTokens: 0, served: false } });
    await store.flush();
    expect(row()).toEqual({ balance: 8, held: 0, holds: 0 });
    // One ledger row per request: its charge and its usage record (a failed request: amount 0).
    expect(reader.prepare("SELECT amount, kind, ref, status, prompt_tokens AS p, completion_tokens AS c FROM ledger WHERE kind = 'usage' ORDER BY id").all()).toEqual([
      { amount: -2, kind: "usage", ref: "qa", status: 200, p: 3, c: 4 },
      { amount: 0, kind: "usage", ref: "qb", status: 502, p: 0, c: 0 },
    ]);
    reader.close();
    expect(await store.audit()).toEqual([{ keyId: "k", balance: 8, held: 0, ledgerSum: 8, reservations: 0, reservedSum: 0 }]);
    // The report counts what was served or charged: the failed request's row is not a request there.
    expect(await store.usage({ keyId: "k", asker: "k", from: 0, to: 10_000, group: "model" })).toEqual([{ keyId: "k", group: "m", requests: 1, promptTokens: 3, completionTokens: 4, cost: 2 }]);
  });

  /** A database as the first schema left it: a grant, a charged request, a failed one, one open reservation. */
  const version1 = (path: string, usageCost = 3) => {
    const db = new Database(path);
    db.exec(MIGRATIONS[0] as string);
    db.pragma("user_version = 1");
    db.exec(`INSERT INTO keys (id, name, hash, tier, balance, held, created_at) VALUES ('k', 'k', 'h', 'free', 7, 2, 1);
      INSERT INTO ledger (key_id, at, amount, kind, ref, idem) VALUES ('k', 1, 10, 'bootstrap', NULL, 'bootstrap:k'), ('k', 5, -3, 'usage', 'q1', NULL);
      INSERT INTO usage (request_id, key_id, at, route, model, status, prompt_tokens, completion_tokens, cost, stream, ms)
        VALUES ('q1', 'k', 5, 'chat', 'm', 200, 3, 4, ${usageCost}, 0, 9), ('q2', 'k', 6, 'chat', 'm', 502, 0, 0, 0, 1, 2);
      INSERT INTO reservations (id, key_id, amount, instance, at) VALUES ('r', 'k', 2, 'dead', 7);`);
    db.close();
  };

  it("migrates a first-schema database: ledger sums kept, usage rows become request rows, reservations become hold counts", async () => {
    const old = join(dir, "v1.db");
    version1(old);
    const migrated = new SqliteStore(old);
    try {
      expect(await migrated.audit()).toEqual([{ keyId: "k", balance: 7, held: 2, ledgerSum: 7, reservations: 1, reservedSum: 0 }]);
      expect(await migrated.usage({ keyId: "k", asker: "k", from: 0, to: 100, group: "model" })).toEqual([{ keyId: "k", group: "m", requests: 1, promptTokens: 3, completionTokens: 4, cost: 3 }]);
      expect(await migrated.releaseStaleReservations()).toBe(1);
      expect(await migrated.audit()).toEqual([{ keyId: "k", balance: 7, held: 0, ledgerSum: 7, reservations: 0, reservedSum: 0 }]);
      // Migration 3 knew it for a bootstrap key by its grant: absent from the config, it is revoked.
      expect(await migrated.revokeRemovedBootstrapKeys([], 9)).toEqual(["k"]);
      // The bootstrap grant's idempotency key survived: it is not granted again.
      expect(await migrated.ensureBootstrapKey(newKey("k", 10))).toEqual({ created: false, granted: false });
    } finally {
      await migrated.close();
    }
    const db = new Database(old, { readonly: true });
    expect(db.pragma("user_version", { simple: true })).toBe(MIGRATIONS.length);
    expect(() => db.prepare("SELECT 1 FROM usage").get()).toThrow(/no such table/);
    db.close();
  });

  it("upgrades a ledger the previous version made (no served flag) in place, keeping its schema version: its rows keep the rule they were reported by, new rows count when served; the previous version opens it again and settles", async () => {
    const old = join(dir, "v4.db");
    const previous = await previousStores();
    await new previous.SqliteStore(old).close();
    const db = new Database(old);
    db.exec(`INSERT INTO keys (id, name, hash, tier, balance, created_at) VALUES ('k', 'k', 'h', 'free', 9, 1);
      INSERT INTO ledger (key_id, at, amount, kind, ref, idem) VALUES ('k', 1, 10, 'grant', NULL, NULL);
      INSERT INTO ledger (key_id, at, amount, kind, ref, route, model, status, prompt_tokens, completion_tokens, stream, ms) VALUES
        ('k', 5, 0, 'usage', 'answered', 'chat', 'm', 200, 3, 4, 0, 9), ('k', 6, -1, 'usage', 'left', 'chat', 'm', 499, 0, 0, 0, 9),
        ('k', 7, 0, 'usage', 'cut', 'chat', 'm', 502, 0, 5, 1, 9);`);
    db.close();
    const upgraded = new SqliteStore(old);
    try {
      // As before the upgrade: answered or charged (the free cut stream was not counted then).
      expect(await upgraded.usage({ keyId: "k", asker: "k", from: 0, to: 100, group: "model" })).toEqual([{ keyId: "k", group: "m", requests: 2, promptTokens: 3, completionTokens: 4, cost: 1 }]);
      await upgraded.reserve({ reservationId: "r", keyId: "k", amount: 1, at: 8 });
      await upgraded.settle({ reservationId: "r", keyId: "k", hold: 1, cost: 0, usage: { ...usage("k", "cut2", 0, 8), status: 502, promptTokens: 0, completionTokens: 5 } });
      // A retry that joined the answered request: its row (the `joined` column, added at open), not counted as a request.
      await upgraded.recordJoined({ requestId: "retry", keyId: "k", at: 8, route: "chat", model: "m", status: 200, ms: 3, batch: false, joined: "answered" });
      expect(await upgraded.usage({ keyId: null, asker: null, from: 0, to: 100, group: "model" })).toEqual([{ keyId: "k", group: "m", requests: 3, promptTokens: 3, completionTokens: 9, cost: 1 }]);
    } finally {
      await upgraded.close();
    }
    // A rollback (or an old process restarting): the previous version opens the upgraded file and settles.
    const back = new previous.SqliteStore(old);
    try {
      await back.reserve({ reservationId: "r2", keyId: "k", amount: 1, at: 9 });
      await back.settle({ reservationId: "r2", keyId: "k", hold: 1, cost: 1, usage: { ...usage("k", "old", 1, 9) } });
    } finally {
      await back.close();
    }
    const again = new SqliteStore(old);
    try {
      expect(await again.usage({ keyId: "k", asker: "k", from: 0, to: 100, group: "model" })).toEqual([{ keyId: "k", group: "m", requests: 4, promptTokens: 6, completionTokens: 13, cost: 2 }]);
    } finally {
      await again.close();
    }
    const after = new Database(old, { readonly: true });
    try {
      expect(after.pragma("user_version", { simple: true })).toBe(4); // the previous version's
      expect(after.prepare("SELECT ref, amount, served, joined FROM ledger WHERE kind = 'usage' AND ref IN ('retry', 'old') ORDER BY id").all()).toEqual([
        { ref: "retry", amount: 0, served: 0, joined: "answered" }, { ref: "old", amount: -1, served: null, joined: null }]);
      after.function("shim_report_check", () => 1);
      const plan = (keyId: string | null) => {
        const sql = reportSql({ keyId, group: "model" });
        return [sql.sliceEnd, sql.slice].map((text) => after.prepare<Record<string, unknown>, { detail: string }>(`EXPLAIN QUERY PLAN ${text}`).all({ keyId, from: 0, to: 100 }).map((r) => r.detail).join("; "));
      };
      for (const p of plan(null)) expect(p).toMatch(/USING (COVERING )?INDEX ledger_usage_at /);
      for (const p of plan("k")) expect(p).toMatch(/USING (COVERING )?INDEX ledger_key_at /);
      // GET /admin/requests/{id}: the request id through its index (added at open), not a scan of the ledger.
      for (const keyId of [null, "k"]) {
        const lookup = after.prepare(`EXPLAIN QUERY PLAN ${requestsSqliteSql({ requestId: "answered", keyId }, 1)}`).all({ requestId: "answered", keyId }) as { detail: string }[];
        expect(lookup.map((r) => r.detail).join("; ")).toMatch(/SEARCH ledger USING INDEX ledger_usage_ref \(ref=\?\)/);
      }
      // Its rows kept: each request id's row found through the index.
      const found = (id: string) => after.prepare<[string], { amount: number }>("SELECT amount FROM ledger WHERE kind = 'usage' AND ref = ?").all(id);
      expect([found("answered"), found("left"), found("old")]).toEqual([[{ amount: 0 }], [{ amount: -1 }], [{ amount: -1 }]]);
    } finally {
      after.close();
    }
  });

  it("refuses to migrate a ledger whose usage rows disagree with its charges, and leaves it untouched", () => {
    const old = join(dir, "v1-bad.db");
    version1(old, 4);
    expect(() => new SqliteStore(old)).toThrow(/migration 2 refused: the ledger sum of key k/);
    const db = new Database(old, { readonly: true });
    expect(db.pragma("user_version", { simple: true })).toBe(1);
    expect(db.prepare("SELECT count(*) AS n FROM usage").get()).toEqual({ n: 2 });
    db.close();
  });

  it("refuses a database a newer shim made (a schema it does not know), and leaves it untouched", async () => {
    await store.createKey(newKey("k", 5));
    await store.close();
    const db = new Database(file);
    db.pragma(`user_version = ${MIGRATIONS.length + 1}`);
    db.close();
    expect(() => new SqliteStore(file)).toThrow(`${file} was made by a newer version of the shim (schema ${MIGRATIONS.length + 1}, this one knows ${MIGRATIONS.length}); run the newer image or restore a backup`);
    const after = new Database(file, { readonly: true });
    expect(after.pragma("user_version", { simple: true })).toBe(MIGRATIONS.length + 1);
    after.close();
    const readable = new Database(file);
    readable.pragma(`user_version = ${MIGRATIONS.length}`);
    readable.close();
    store = new SqliteStore(file); // for afterEach
    expect((await store.getKey("k"))!.balance).toBe(5);
  });

  it("a key read while a batch is open (before its COMMIT) has the batch's holds and charges: requests_in_flight, held and balance as answered", async () => {
    await store.createKey(newKey("k", 10));
    await store.reserve({ reservationId: "a", keyId: "k", amount: 4, at: 1 });
    await store.reserve({ reservationId: "b", keyId: "k", amount: 2, at: 1 });
    const settled = store.settle({ reservationId: "a", keyId: "k", hold: 4, cost: 3, usage: usage("k", "qa", 3) }); // answered once committed
    // Not committed yet (another connection still sees the row without them)...
    const other = new Database(file, { readonly: true });
    expect(other.prepare("SELECT balance, held, holds FROM keys WHERE id = 'k'").get()).toEqual({ balance: 10, held: 0, holds: 0 });
    other.close();
    // ...but this process's reads have them.
    expect(await store.getKeyDetails("k")).toMatchObject({ balance: 7, held: 2, holds: 1 });
    await store.flush();
    expect(await settled).toEqual({ available: 5, charged: 3 });
    expect(await store.getKeyDetails("k")).toMatchObject({ balance: 7, held: 2, holds: 1 });
  });

  it("a settlement's ledger row keeps its request's facts: streamed or not, its duration, served or not", async () => {
    await store.createKey(newKey("k", 10));
    await store.reserve({ reservationId: "a", keyId: "k", amount: 1, at: 1 });
    await store.settle({ reservationId: "a", keyId: "k", hold: 1, cost: 1, usage: { ...usage("k", "qa", 1), stream: true, ms: 1234 } });
    await store.reserve({ reservationId: "b", keyId: "k", amount: 1, at: 1 });
    await store.settle({ reservationId: "b", keyId: "k", hold: 1, cost: 0, usage: { ...usage("k", "qb"), served: false } });
    await store.flush();
    const db = new Database(file, { readonly: true });
    const rows = db.prepare("SELECT ref, amount, stream, ms, served FROM ledger WHERE kind = 'usage' ORDER BY ref").all();
    db.close();
    expect(rows).toEqual([{ ref: "qa", amount: -1, stream: 1, ms: 1234, served: 1 }, { ref: "qb", amount: 0, stream: 0, ms: 1, served: 0 }]);
  });

  it("a hold that names no model is not checked against the key's allow-list; one that names another model is refused", async () => {
    await store.createKey({ ...newKey("m", 10), models: ["a"] });
    expect(await store.reserve({ reservationId: "x", keyId: "m", amount: 1, at: 1 })).toEqual({ ok: true, available: 9 });
    expect(await store.reserve({ reservationId: "y", keyId: "m", amount: 1, at: 1, model: "a" })).toEqual({ ok: true, available: 8 });
    expect(await store.reserve({ reservationId: "z", keyId: "m", amount: 1, at: 1, model: "b" })).toEqual({ ok: false, available: 8, notAllowed: true });
  });

  it("group-commits request-path writes in batches: one COMMIT in the event-loop turn after the batch opened, atomically", async () => {
    await store.createKey(newKey("k", 10));
    const reader = new Database(file, { readonly: true });
    const held = () => (reader.prepare("SELECT held FROM keys WHERE id = 'k'").get() as { held: number }).held;
    await store.reserve({ reservationId: "a", keyId: "k", amount: 1, at: 1 });
    await store.reserve({ reservationId: "b", keyId: "k", amount: 2, at: 1 });
    expect(held()).toBe(0); // not committed yet: another connection sees the last committed state
    await new Promise((resolve) => setImmediate(resolve));
    expect(held()).toBe(0); // this turn's check phase is for what Node and undici write: not yet
    await new Promise((resolve) => setImmediate(resolve));
    expect(held()).toBe(3); // one commit in the next turn covered both
    reader.close();
  });

  it("a batch whose write at COMMIT fails is rolled back whole and the store stays failed closed", async () => {
    await store.createKey(newKey("k", 10));
    const other = new Database(file);
    // Stands for a disk error at the end of the turn: the batch's UPDATE of the key row fails.
    other.exec("CREATE TRIGGER fail_money BEFORE UPDATE OF held ON keys BEGIN SELECT RAISE(ABORT, 'disk on fire'); END");
    expect(await store.reserve({ reservationId: "a", keyId: "k", amount: 4, at: 1 })).toEqual({ ok: true, available: 6 });
    await new Promise((resolve) => setImmediate(() => setImmediate(resolve)));
    await expect(store.getKey("k")).rejects.toBeInstanceOf(StoreUnavailableError);
    await expect(store.reserve({ reservationId: "b", keyId: "k", amount: 1, at: 1 })).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(other.prepare("SELECT balance, held, holds FROM keys WHERE id = 'k'").get()).toEqual({ balance: 10, held: 0, holds: 0 });
    other.close();
  });

  it("a lost race for a WAL lock (SQLITE_PROTOCOL, transient) is a 503 for that call only; a disk error fails the store closed", async () => {
    await store.createKey(newKey("k", 10));
    const stmt = (store as unknown as { stmt: { getKey: { get: (id: string) => unknown } } }).stmt;
    const get = stmt.getKey.get.bind(stmt.getKey);
    const failOnce = (code: string) => {
      stmt.getKey.get = () => {
        stmt.getKey.get = get;
        throw Object.assign(new Error("locking protocol"), { code });
      };
    };
    failOnce("SQLITE_PROTOCOL");
    await expect(store.getKey("k")).rejects.toBeInstanceOf(StoreUnavailableError);
    expect((await store.getKey("k"))!.balance).toBe(10);
    await expect(store.reserve({ reservationId: "r", keyId: "k", amount: 1, at: 1 })).resolves.toMatchObject({ ok: true });
    failOnce("SQLITE_IOERR_READ");
    await expect(store.getKey("k")).rejects.toBeInstanceOf(StoreUnavailableError);
    await expect(store.getKey("k")).rejects.toBeInstanceOf(StoreUnavailableError);
  });

  it("every failure is StoreUnavailableError (fail closed)", async () => {
    await store.close();
    await expect(store.getKey("k")).rejects.toBeInstanceOf(StoreUnavailableError);
    await expect(store.reserve({ reservationId: "r", keyId: "k", amount: 1, at: 1 })).rejects.toBeInstanceOf(StoreUnavailableError);
  });
});

describe("SqliteStore on a small volume (root: a tmpfs)", () => {
  // The volume check counts only the WAL's reusable part as room: the size it had at the last
  // checkpoint that copied it whole. A WAL that grows because checkpoints cannot reset it (a read
  // snapshot: a usage report, VACUUM INTO; or failing checkpoints) takes free space the check must
  // see; counted whole, free + WAL never changed and a COMMIT met the full disk (review self6:
  // answered 74400, charged 74200).
  it("a WAL that grows while a reader holds a snapshot: the volume check fails the store closed before a COMMIT meets the full disk, and no answered charge is lost", async (ctx) => {
    const mnt = smallVolume(tmpdir(), "shim-wal-room-", "40m");
    if (mnt === null) return ctx.skip("needs root to mount a tmpfs");
    const file = join(mnt, "shim.db");
    const failures: unknown[] = [];
    let store: SqliteStore | undefined;
    let reader: Database.Database | undefined;
    try {
      store = new SqliteStore(file, { checkpointIntervalMs: 20, onFailure: (e) => failures.push(e) });
      await store.createKey(newKey("k", 1_000_000_000_000));
      // A read snapshot (a 60 s usage report, the documented VACUUM INTO backup): checkpoints
      // cannot copy past it, so the WAL cannot be started over and grows with every batch.
      reader = new Database(file, { readonly: true });
      reader.exec("BEGIN");
      reader.prepare("SELECT count(*) FROM keys").get();
      let answered = 0; // micro-credits settle() said it charged
      const big = "m".repeat(3000); // a long model name: about a page of WAL per settlement
      const t0 = performance.now();
      for (let n = 0; failures.length === 0 && performance.now() - t0 < 30_000; n++) {
        for (let i = 0; i < 20; i++) {
          const id = `r${n}-${i}`;
          void store.reserve({ reservationId: id, keyId: "k", amount: 10, at: 2000 }).catch(() => {});
          void store.settle({ reservationId: id, keyId: "k", hold: 10, cost: 10, usage: { ...usage("k", id, 10), model: big } })
            .then((r) => (answered += r.charged), () => {});
        }
        await new Promise((r) => setTimeout(r, 5)); // the batch commits; a volume check may run
      }
      reader.exec("COMMIT");
      reader.close();
      reader = undefined;
      await store.close().catch(() => {});
      store = undefined;
      expect(failures).toHaveLength(1);
      expect(failures[0]).toBeInstanceOf(VolumeFullError); // caught by the check, not by a failed COMMIT
      expect(String(failures[0])).toMatch(/has \d+ bytes free( \(and \d+ in the store's own WAL, which it reuses\))?, less than/);
      const db = new Database(file);
      const { ledger } = db.prepare("SELECT sum(amount) AS ledger FROM ledger WHERE key_id = 'k'").get() as { ledger: number };
      db.close();
      expect(1_000_000_000_000 - ledger).toBe(answered);
    } finally {
      reader?.close();
      await store?.close().catch(() => {});
      unmountVolume(mnt);
    }
  }, 60_000);
});

describe("failureToFailWith (which checkpoint failures fail the store closed)", () => {
  const err = (code: string) => Object.assign(new Error(`${code} error`), { code });
  it("a failing disk's: only once they have failed for the limit and at least 5 times; a corrupt or full file's at once", () => {
    const eio = err("SQLITE_IOERR_FSYNC");
    expect(failureToFailWith({ error: eio, failures: 4, failingMs: 120_000 }, 60_000)).toBeNull();
    expect(failureToFailWith({ error: eio, failures: 50, failingMs: 59_999 }, 60_000)).toBeNull();
    expect(failureToFailWith({ error: eio, failures: 5, failingMs: 60_000 }, 60_000)).toMatchObject({ code: "SQLITE_IOERR_FSYNC", message: expect.stringMatching(/^WAL checkpoints have failed for 60 s \(5 failures/) });
    for (const code of ["SQLITE_CORRUPT", "SQLITE_CORRUPT_INDEX", "SQLITE_NOTADB", "SQLITE_FULL"]) {
      const e = err(code);
      expect(failureToFailWith({ error: e, failures: 1, failingMs: 0 }, 60_000)).toBe(e);
    }
  });
});
