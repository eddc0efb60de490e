import { join } from "node:path";
import { repoFile } from "./fsync-trace.ts";
import { runTool, tempDir } from "./tools.ts";

/** What failing-io.c makes fail while `flag` exists (a file the test creates and removes). */
export interface FailingIo {
  flag: string;
  /** Reads of the file ending so: the first `failReads` fail with `errno` (EIO by default), later ones pass. */
  readSuffix?: string;
  failReads?: number;
  errno?: number;
  /** Writes of the file ending so: the first `writesPass` pass, later ones fail with ENOSPC. */
  writeSuffix?: string;
  writesPass?: number;
  /** Syncs (fsync, fdatasync) of the file ending so fail with EIO. */
  syncSuffix?: string;
  /**
   * While the file `hold` exists, each write and sync of the file ending with `holdSuffix` waits:
   * it creates `${hold}.write` (or `.sync`), and goes on once the test removes that file.
   */
  hold?: string;
  holdSuffix?: string;
}

/**
 * A command prefix: the program runs with test/support/failing-io.c preloaded, compiled here with
 * gcc (.ci/run installs it). For failures that start at a moment the test picks, which strace's
 * injection (fsync-trace.ts) counts from the process's start: a read that fails once inside an
 * open transaction, and the disk answering again after it.
 */
export function failingIo(o: FailingIo): string[] {
  const so = join(tempDir("failing-io-"), "failing-io.so");
  const built = runTool("gcc", ["-shared", "-fPIC", "-O2", "-o", so, repoFile("test/support/failing-io.c"), "-ldl"]);
  if (built.status !== 0) throw new Error(`gcc could not build failing-io.c: ${built.output}`);
  const vars: Record<string, string | number | undefined> = {
    FAIL_IO_FLAG: o.flag, FAIL_IO_READ_SUFFIX: o.readSuffix, FAIL_IO_READS: o.failReads, FAIL_IO_ERRNO: o.errno ?? 5,
    FAIL_IO_WRITE_SUFFIX: o.writeSuffix, FAIL_IO_WRITES_PASS: o.writesPass, FAIL_IO_SYNC_SUFFIX: o.syncSuffix,
    FAIL_IO_HOLD: o.hold, FAIL_IO_HOLD_SUFFIX: o.holdSuffix,
  };
  return ["env", `LD_PRELOAD=${so}`, ...Object.entries(vars).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${v}`)];
}
