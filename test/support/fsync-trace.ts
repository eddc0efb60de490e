import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { runTool, writeTemp } from "./tools.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** The program must be there (.ci/run installs it): a missing one fails with the install command. */
function requireStrace(): void {
  runTool("strace", ["-V"]);
}

/**
 * A command prefix: the program runs under strace, and every fsync and fdatasync of `file` (that
 * path only: SQLite's syncs of its -wal go through) fails with EIO, as on a failing disk; or
 * those strace's `when` picks (`1+8`: the first, then every 8th). A WAL checkpoint syncs the
 * database file after copying the whole WAL into it, so it fails; a commit does not.
 */
export function failingFsyncs(file: string, when?: string): string[] {
  requireStrace();
  const inject = `inject=fsync,fdatasync:error=EIO${when === undefined ? "" : `:when=${when}`}`;
  return ["strace", "-f", "-qq", "-o", "/dev/null", "-P", file, "-e", "trace=fsync,fdatasync", "-e", inject];
}

/**
 * A command prefix: the program runs under strace, and every write of `file` (that path only:
 * SQLite's commits to its -wal go through) fails with ENOSPC, as on a volume that has filled up
 * while the WAL still has room: a WAL checkpoint, which copies pages into the database file,
 * fails with SQLITE_FULL.
 */
export function fullVolumeWrites(file: string): string[] {
  requireStrace();
  return ["strace", "-f", "-qq", "-o", "/dev/null", "-P", file, "-e", "trace=pwrite64,write", "-e", "inject=pwrite64,write:error=ENOSPC"];
}

/** A command prefix: the program runs under strace, which writes each fsync and fdatasync of `files` to `out` (each line names its file). */
export function tracingFsyncs(out: string, files: readonly string[]): string[] {
  requireStrace();
  return ["strace", "-f", "-qq", "-y", "-o", out, ...files.flatMap((f) => ["-P", f]), "-e", "trace=fsync,fdatasync"];
}

/** A command prefix: the program runs under strace, which writes each of its renames, fsyncs and fdatasyncs to `out` (paths and files named: `-y`), in the order they happened. */
export function tracingRenamesAndSyncs(out: string): string[] {
  requireStrace();
  return ["strace", "-f", "-qq", "-y", "-o", out, "-e", "trace=fsync,fdatasync,rename,renameat,renameat2"];
}

/**
 * Runs `source` (an ES module; it may import the repository's TypeScript by absolute path) in a
 * new Node process under `prefix`, from the repository's root; returns the last line it printed,
 * parsed as JSON. From a file, not `--input-type=module -e`: worker threads inherit that flag,
 * and the store's checkpoint thread (CommonJS source) would fail to start.
 */
export function runNodeScript<T>(prefix: readonly string[], source: string, timeoutMs = 30_000): T {
  const [cmd, ...args] = [...prefix, process.execPath, writeTemp("script.mjs", source)];
  const r = spawnSync(cmd!, args, { cwd: ROOT, encoding: "utf8", timeout: timeoutMs });
  if (r.status !== 0) throw new Error(`the script failed (${r.status ?? r.signal}): ${r.stderr}`);
  const lines = r.stdout.trim().split("\n");
  return JSON.parse(lines[lines.length - 1]!) as T;
}

/** The absolute path of a repository file, for a script's import. */
export const repoFile = (...parts: string[]): string => join(ROOT, ...parts);
