import { mkdtempSync, readdirSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { WalClosedError, WalSync } from "../../api-shim/src/store/sqlite-wal-sync.ts";

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
});
