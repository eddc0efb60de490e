import { mkdtempSync, readdirSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHash } from "node:crypto";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { failureHint } from "../../api-shim/src/store/sqlite-failures.ts";
import { SqliteStore } from "../../api-shim/src/store/sqlite-store.ts";
import { WalClosedError, WalSync } from "../../api-shim/src/store/sqlite-wal-sync.ts";
import { startShim } from "../support/shim-harness.ts";

/** This process's open descriptors of `path`. */
const openOn = (path: string) => readdirSync("/proc/self/fd").filter((fd) => {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`) === path;
  } catch {
    return false;
  }
}).length;

describe("WalSync (an admin write's fdatasync of the WAL)", () => {
  let dir: string;
  let db: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "wal-sync-"));
    db = join(dir, "shim.db");
    writeFileSync(`${db}-wal`, "x");
  });
  afterEach(() => {
    vi.restoreAllMocks();
    rmSync(dir, { recursive: true, force: true });
  });

  it("a sync asked for while close() waits is refused as closed, and leaves no descriptor of the WAL open", async () => {
    const w = new WalSync(db);
    const first = w.sync();
    const closing = w.close();
    const second = w.sync().then(() => "synced", (e: unknown) => e);
    await Promise.all([first, closing]);
    expect(await second).toBeInstanceOf(WalClosedError);
    expect(openOn(`${db}-wal`)).toBe(0);
  });

  it("once a datasync failed, every later sync fails too (a datasync after a write-back error may return 0 with the pages dropped)", async () => {
    const w = new WalSync(db);
    await w.sync(); // the handle is open
    const handle = await (w as unknown as { handle: Promise<import("node:fs/promises").FileHandle> }).handle;
    const eio = Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" });
    const datasync = vi.spyOn(handle, "datasync").mockRejectedValueOnce(eio);
    const first = w.sync().then(() => "ok", () => "failed");
    const second = w.sync().then(() => "ok", () => "failed"); // waits for the next one
    expect([await first, await second]).toEqual(["failed", "failed"]);
    expect(await w.sync().then(() => "ok", () => "failed")).toBe("failed");
    expect(datasync).toHaveBeenCalledTimes(1);
    await w.close();
  });

  it("a sync asked for while one is in flight waits for a datasync that starts after it, not the one already running (that may have started before its commit)", async () => {
    const w = new WalSync(db);
    await w.sync(); // the handle is open
    const handle = await (w as unknown as { handle: Promise<import("node:fs/promises").FileHandle> }).handle;
    const gates: (() => void)[] = [];
    const datasync = vi.spyOn(handle, "datasync").mockImplementation(() => new Promise<void>((r) => gates.push(r)));
    let secondDone = false;
    const first = w.sync();
    await expect.poll(() => gates.length).toBe(1);
    const second = w.sync().then(() => void (secondDone = true)); // committed while the first datasync runs
    const third = w.sync(); // shares the second's
    gates[0]!();
    await first;
    await expect.poll(() => gates.length).toBe(2); // a datasync of its own
    expect(secondDone).toBe(false);
    gates[1]!();
    await Promise.all([second, third]);
    expect(datasync).toHaveBeenCalledTimes(2);
    await w.close();
  });

  it("a WAL that could not be opened (not there yet) is opened again at the next sync, not refused for good", async () => {
    rmSync(`${db}-wal`);
    const w = new WalSync(db);
    await expect(w.sync()).rejects.toMatchObject({ code: "ENOENT" });
    writeFileSync(`${db}-wal`, "x"); // the next commit made it
    await expect(w.sync()).resolves.toBeUndefined();
    await w.close();
    expect(openOn(`${db}-wal`)).toBe(0);
  });
});

/**
 * An admin write whose WAL sync the disk refuses was committed before the sync, and a failed sync
 * undoes nothing: the next process reads it. A generic "retry later" 503 would have the client
 * grant the credits (or make the key) twice; the answer says the change was probably made.
 */
describe("an admin write whose WAL sync the disk refuses", () => {
  const failSyncs = (store: SqliteStore) => {
    vi.spyOn((store as unknown as { walSync: WalSync }).walSync, "sync").mockRejectedValue(Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" }));
  };
  /** What another connection (the next process) reads from the file. */
  const read = <T>(dbPath: string, sql: string, ...args: unknown[]): T[] => {
    const db = new Database(dbPath, { readonly: true });
    try {
      return db.prepare(sql).all(...args) as T[];
    } finally {
      db.close();
    }
  };
  const expectNotConfirmed = async (res: Response) => {
    expect(res.status).toBe(503);
    // OpenAI's SDKs (and manage-keys: a 5xx is "may have acted") do not send it again by themselves.
    expect(res.headers.get("x-should-retry")).toBe("false");
    const { error } = (await res.json()) as { error: { code: string; type: string; message: string } };
    expect(error).toMatchObject({ code: "change_not_confirmed", type: "api_error" });
    expect(error.message).toMatch(/probably made/);
    expect(error.message).toContain("GET /admin/keys");
    expect(error.message).toContain("same Idempotency-Key");
  };
  afterEach(() => vi.restoreAllMocks());

  it("a top-up: 503 change_not_confirmed, not 'retry later'; it stands, and its retry with the same Idempotency-Key replays it", async () => {
    const h = await startShim();
    try {
      const { id } = await h.createKey({ credits: 100 });
      failSyncs(h.store);
      const res = await h.admin(`/admin/keys/${id}/credits`, { method: "POST", headers: { "idempotency-key": "invoice-7" }, body: JSON.stringify({ amount: 50 }) });
      await expectNotConfirmed(res);
      expect(read<{ balance: number }>(h.dbPath, "SELECT balance FROM keys WHERE id = ?", id)).toEqual([{ balance: 150_000_000 }]);
      // The store still fails closed (the process exits, to be restarted).
      expect((await h.admin("/admin/keys")).status).toBe(503);
      // The next process: the retry the message asks for is answered from the first attempt.
      const next = new SqliteStore(h.dbPath);
      try {
        const fingerprint = createHash("sha256").update(JSON.stringify([50_000_000, null])).digest("hex");
        const retried = await next.topUp({ keyId: id, amount: 50_000_000, note: null, at: Date.now(), idempotency: { key: "invoice-7", fingerprint }, respond: () => "again", refuse: () => null });
        expect(retried.kind).toBe("replay");
        expect((await next.getKey(id))!.balance).toBe(150_000_000);
      } finally {
        await next.close();
      }
    } finally {
      await h.close().catch(() => {});
    }
  });

  it("a key creation: 503 change_not_confirmed; the key exists (its secret never shown), for the operator to find and revoke", async () => {
    const h = await startShim();
    try {
      failSyncs(h.store);
      const res = await h.admin("/admin/keys", { method: "POST", body: JSON.stringify({ name: "lost", credits: 100, tier: "enterprise" }) });
      await expectNotConfirmed(res);
      expect(read(h.dbPath, "SELECT name, balance FROM keys WHERE name = 'lost'")).toEqual([{ name: "lost", balance: 100_000_000 }]);
    } finally {
      await h.close().catch(() => {});
    }
  });
});

/**
 * The WAL's sync is Node's open and fdatasync, not SQLite's: its errno decides what the log line
 * of the store failing closed tells the operator. A -wal left owned by root (a sqlite3 run as
 * root on the host) fails the open with EACCES: a file to chown, which was reported as
 * SQLITE_IOERR_FSYNC and "the disk failed a read or write" (check dmesg), the wrong remedy.
 */
describe("an admin write whose WAL sync fails: the failure's code and hint follow the errno", () => {
  let dir: string;
  afterEach(() => {
    vi.restoreAllMocks();
    rmSync(dir, { recursive: true, force: true });
  });
  const failureFor = async (errno: string) => {
    dir = mkdtempSync(join(tmpdir(), "wal-sync-errno-"));
    const file = join(dir, "shim.db");
    const failures: unknown[] = [];
    const store = new SqliteStore(file, { onFailure: (e) => failures.push(e) });
    try {
      vi.spyOn((store as unknown as { walSync: WalSync }).walSync, "sync").mockRejectedValue(Object.assign(new Error(`${errno}: open '${file}-wal'`), { code: errno }));
      await expect(store.createKey({ id: "k", name: "k", hash: "h", tier: "free", models: null, credits: 1, expiresAt: null, at: 1 })).rejects.toThrow();
    } finally {
      await store.close().catch(() => {});
    }
    expect(failures).toHaveLength(1);
    return { failure: failures[0] as Error & { code: string }, hint: failureHint(failures[0], file, () => false) };
  };

  it("EACCES (a -wal of another owner): SQLITE_PERM, and the hint is the owner and mode to fix, not the disk", async () => {
    const { failure, hint } = await failureFor("EACCES");
    expect(failure.code).toBe("SQLITE_PERM");
    expect(failure.message).toContain("EACCES");
    expect(hint).toMatch(/check the owner and mode of .*shim\.db-wal.*uid 1000/);
  });

  it("ENOSPC: SQLITE_FULL (free space); EIO stays the disk's SQLITE_IOERR_FSYNC", async () => {
    const full = await failureFor("ENOSPC");
    expect(full.failure.code).toBe("SQLITE_FULL");
    expect(full.hint).toMatch(/is full: free space on it/);
    rmSync(dir, { recursive: true, force: true });
    const eio = await failureFor("EIO");
    expect(eio.failure.code).toBe("SQLITE_IOERR_FSYNC");
    expect(eio.hint).toMatch(/the disk failed a read or write/);
  });

  it("EPERM as EACCES, EDQUOT (a quota) as ENOSPC, EROFS (a read-only mount) SQLITE_READONLY: none of them the disk's I/O error", async () => {
    for (const [errno, code] of [["EPERM", "SQLITE_PERM"], ["EDQUOT", "SQLITE_FULL"], ["EROFS", "SQLITE_READONLY"]] as const) {
      const { failure, hint } = await failureFor(errno);
      expect(failure.code, errno).toBe(code);
      expect(hint, errno).not.toMatch(/the disk failed a read or write/);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
