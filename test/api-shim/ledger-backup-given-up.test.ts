import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import { BackupRunningError, SqliteBackups } from "../../api-shim/src/store/sqlite-backup.ts";
import { SqliteReports } from "../../api-shim/src/store/sqlite-reports.ts";
import { tempDir } from "../support/tools.ts";

/**
 * A backup whose client leaves while SQLite still writes the copy (VACUUM INTO cannot be stopped):
 * the copy goes on taking room on the volume until the statement ends. Until then the next backup
 * is refused, and then the copy is removed, also when usage reports ran meanwhile on the worker
 * that replaced the given-up one. The report thread is a stand-in whose copy ends when the test
 * says (test/support/gated-backup-report-worker.ts).
 */
describe("a backup given up while its copy is written", () => {
  let close: (() => void)[] = [];
  afterEach(() => {
    for (const c of close) c();
    close = [];
  });

  async function givenUpBackup() {
    const file = join(tempDir("backup-given-up-"), "shim.db");
    const reports = new SqliteReports(file, { busyTimeoutMs: 1000, workerUrl: new URL("../support/gated-backup-report-worker.ts", import.meta.url) });
    const backups = new SqliteBackups(file, async () => ({ bavail: 2 ** 30, bsize: 4096 }));
    close.push(() => reports.close(), () => backups.close());
    const left = new AbortController();
    let copy = "";
    const first = backups.take((into, givenUp) => ((copy = into), reports.backup(into, async () => {}, left.signal, givenUp)));
    await vi.waitFor(() => expect(copy !== "" && existsSync(copy)).toBe(true), { timeout: 10_000, interval: 20 }); // the copy is being written
    left.abort(new Error("the client left"));
    await expect(first).rejects.toThrow(); // as the store answers an asker gone (StoreUnavailableError)
    return { reports, backups, copy, statementEnds: () => writeFileSync(`${copy}.go`, "") };
  }

  it("holds off the next backup until its statement ends, then is removed", async () => {
    const { backups, copy, statementEnds } = await givenUpBackup();
    await expect(backups.take(async () => {})).rejects.toBeInstanceOf(BackupRunningError);
    expect(existsSync(copy)).toBe(true);
    statementEnds();
    await vi.waitFor(() => expect(existsSync(copy)).toBe(false), { timeout: 10_000, interval: 20 });
    await expect(backups.take(async (into) => writeFileSync(into, "the next copy"))).resolves.toMatchObject({ size: 13 });
  });

  it("is removed, and the next backup made, even when a usage report ran meanwhile on a new worker", async () => {
    const { reports, backups, copy, statementEnds } = await givenUpBackup();
    // A tenant's /v1/usage that waited behind the backup runs now, on a new report thread.
    expect(await reports.run({ keyId: "k", asker: "k", from: 0, to: 10, group: "model" }, async () => {})).toEqual([]);
    await expect(backups.take(async () => {})).rejects.toBeInstanceOf(BackupRunningError);
    statementEnds();
    await vi.waitFor(() => expect(existsSync(copy)).toBe(false), { timeout: 10_000, interval: 20 });
    await expect(backups.take(async (into) => writeFileSync(into, "the next copy"))).resolves.toMatchObject({ size: 13 });
  });
});
