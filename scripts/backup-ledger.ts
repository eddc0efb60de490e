// npm run backup-ledger -- (--stack <name> | --url <base>) [--out <file>] [--json]
// A tenant's ledger (keys' hashes, balances, every charge and top-up) as one SQLite file, from its
// admin API (GET /admin/backup): Linode does not back volumes up, and the ledger is on one.
import { randomBytes } from "node:crypto";
import { existsSync, linkSync, rmSync } from "node:fs";
import { open } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { fileStamp } from "../api-shim/src/requests/period.ts";
import { showMiB, SQLITE_HEADER } from "../api-shim/src/store/sqlite-backup.ts";
import { AdminApiError, adminClient, isMissingRoute } from "./lib/admin-client.ts";
import { EXIT_CODES_USAGE, networkReason, notTheApi, parseFlags, runScript, UsageError } from "./lib/cli.ts";
import { type ScriptDeps, withDefaults } from "./lib/deps.ts";
import { INTERRUPTED_EXIT_CODE } from "./lib/interruption.ts";
import { REJECTED_TOKEN_FLAGS, resolveAdminTarget, TARGET_OPTIONS, TARGET_USAGE } from "./lib/tenant-target.ts";

const USAGE = `Usage: npm run backup-ledger -- (--stack <name> | --url <base URL>) [--out <file>] [--json]

Downloads a consistent copy of a tenant's ledger (keys' hashes, balances, every request's charge,
top-ups) as one SQLite file, made by the running shim without stopping it (GET /admin/backup).
Linode does not back volumes up: run it before anything that rebuilds the host or its volume, and
on a schedule. The file holds the keys' hashes: it is written mode 0600; keep it so. Restore:
copy it beside the ledger as shim.db.restore, owned by uid 1000, and restart the shim, which
checks it and swaps it in (docs/operations.md, "Backup and restore of the ledger"). A shim on
Postgres is refused: back that database up with pg_dump or the provider's backups.

  --out <file>               where to write it (default ./<stack>-ledger-<UTC time>.db; with
                             --url, the host's name instead of the stack's); never overwritten:
                             an existing file is refused. Written under a temporary name beside
                             it and renamed only once whole, so a failed or interrupted download
                             leaves nothing
  --json                     print {"path", "bytes"} of the file written (path absolute), and
                             nothing else, on stdout: a pipeline's next step reads where it is

${TARGET_USAGE}

Examples:
  npm run backup-ledger -- --stack acme
  npm run backup-ledger -- --stack acme --out backups/acme-before-upgrade.db
  npm run --silent backup-ledger -- --stack acme --json | jq -r .path

${EXIT_CODES_USAGE}`;

const OPTIONS = { ...TARGET_OPTIONS, out: { type: "string" }, json: { type: "boolean" } } as const;

/** Above this size the download says how far it is, every tenth. */
const PROGRESS_FROM_BYTES = 16 * 2 ** 20;

/** What a download wrote: its path and size. */
export interface SavedBackup {
  readonly path: string;
  readonly bytes: number;
}

/**
 * Writes the answer's body to `out` (which must not exist): into a new temporary file beside it
 * (mode 0600), then linked to `out` only once the bytes match its Content-Length and start as a
 * SQLite file does (a link fails on a file made meanwhile: never overwritten). The temporary file
 * is gone however it ends; `cleanUp` is the removal, for a signal handler.
 */
export async function saveBackup(res: Response, out: string, progress: (line: string) => void, cleanUp: (remove: (() => void) | undefined) => void = () => {}): Promise<SavedBackup> {
  const path = `${res.url} (GET /admin/backup)`;
  const type = res.headers.get("content-type") ?? "";
  const length = Number(res.headers.get("content-length") ?? NaN);
  if (!type.startsWith("application/vnd.sqlite3") || !Number.isSafeInteger(length)) {
    const body = await res.text().catch(() => "");
    throw new AdminApiError(notTheApi("admin API GET /admin/backup", res.status, "the ledger as a SQLite file with its Content-Length", body), { outcome: "refused", status: res.status });
  }
  const temp = join(dirname(out), `.${basename(out)}.${randomBytes(4).toString("hex")}.partial`);
  const remove = () => rmSync(temp, { force: true });
  // Handed to the signal handler before the file exists (removing none is harmless): a Ctrl-C
  // in the turn between the open and this left a hidden .partial behind.
  cleanUp(remove);
  const file = await open(temp, "wx", 0o600).catch((err: unknown) => {
    cleanUp(undefined);
    throw err;
  });
  try {
    let bytes = 0;
    let tenth = 0;
    const head: Buffer[] = [];
    // A write that fails (a full disk, a quota) is this machine's, not a download cut off: exit 1,
    // not 5, whose "run it again" meets the same full disk.
    let unwritten: unknown;
    const write = (chunk: Uint8Array) => file.write(chunk).catch((err: unknown) => {
      throw (unwritten = err);
    });
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        if (bytes < SQLITE_HEADER.length) head.push(Buffer.from(chunk));
        await write(chunk);
        bytes += chunk.length;
        if (length >= PROGRESS_FROM_BYTES && Math.floor((bytes / length) * 10) > tenth && bytes < length) {
          tenth = Math.floor((bytes / length) * 10);
          progress(`downloading the ledger: ${tenth * 10}% (${showMiB(bytes)} of ${showMiB(length)})`);
        }
      }
    } catch (err) {
      if (err === unwritten) throw new UsageError(`cannot write ${out}: ${(err as Error).message}; nothing was saved. Fix the cause (disk space, a quota) and run again.`, { exit: "failed" });
      throw new AdminApiError(`the ledger's download from ${path} was cut off after ${bytes} of ${length} bytes: ${networkReason(err)}; nothing was saved, run it again`, { outcome: "unknown", cause: err });
    }
    if (bytes !== length) throw new AdminApiError(`the ledger's download from ${path} ended after ${bytes} of the ${length} bytes it announced; nothing was saved, run it again`, { outcome: "unknown" });
    if (!Buffer.concat(head).subarray(0, SQLITE_HEADER.length).equals(SQLITE_HEADER)) throw new AdminApiError(`what ${path} sent is not a SQLite file; nothing was saved`, { outcome: "refused" });
    await file.sync();
    await file.close();
    try {
      linkSync(temp, out);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST") throw new UsageError(`${out} was made while the ledger downloaded; not overwritten: give another --out`);
      throw err;
    }
    return { path: out, bytes };
  } finally {
    await file.close().catch(() => {});
    remove();
    cleanUp(undefined);
  }
}

// Not "upgrade it first": the backup an operator takes before an upgrade is the one a rollback
// needs, and the upgrade may migrate the ledger, so the host's way comes first.
const OLDER_SHIM = "This tenant's shim is older than GET /admin/backup (2026-12-07): take this backup on the host as docs/operations.md (\"Backup and restore of the ledger\", without the admin API) shows. Before upgrading it, back up that way first: an upgrade may migrate the ledger at its first start, and going back to this version may then need a backup from before it.";

export async function main(argv: readonly string[], partial: Partial<ScriptDeps> = {}): Promise<number> {
  const deps = withDefaults(partial);
  return runScript(deps.io, async () => {
    const { values } = parseFlags(argv, OPTIONS, USAGE, { rejected: REJECTED_TOKEN_FLAGS });
    if (values.help) {
      deps.io.out(USAGE);
      return 0;
    }
    if (values.out === "") throw new UsageError("--out needs a file name");
    const target = await resolveAdminTarget(values, deps);
    const name = values.stack ?? new URL(target.baseUrl).hostname;
    const out = resolve(deps.root, values.out ?? `${name}-ledger-${fileStamp(deps.now().getTime())}.db`);
    if (existsSync(out)) throw new UsageError(`${out} exists already: not overwritten; give another --out`);
    if (!existsSync(dirname(out))) throw new UsageError(`${dirname(out)} does not exist: make it first, or give another --out`);
    const client = adminClient(target, fetch, { progress: (line) => deps.io.err(line) });
    deps.io.err(`asking ${target.baseUrl} for a copy of its ledger (the shim makes it first: seconds for a large one)…`);
    const res = await client.backup().catch((err: unknown) => {
      // The shim's own 404 (its error object): a shim from before GET /admin/backup (2026-12-07).
      if (isMissingRoute(err)) throw new AdminApiError(`${err.message}\n${OLDER_SHIM}`, { outcome: "refused", status: 404, code: "not_found" });
      throw err;
    });
    // Ctrl-C or SIGTERM mid-way: the temporary file goes with the script.
    let removal: (() => void) | undefined;
    const stop = () => {
      removal?.();
      deps.signals.exit(INTERRUPTED_EXIT_CODE);
    };
    deps.signals.on("SIGINT", stop);
    deps.signals.on("SIGTERM", stop);
    try {
      const saved = await saveBackup(res, out, (line) => deps.io.err(line), (r) => (removal = r));
      if (values.json) deps.io.out(JSON.stringify({ path: saved.path, bytes: saved.bytes }));
      else deps.io.out(`saved the ledger to ${saved.path} (${saved.bytes} bytes, ${showMiB(saved.bytes)}; mode 0600: it holds the keys' hashes)`);
      return 0;
    } finally {
      deps.signals.off("SIGINT", stop);
      deps.signals.off("SIGTERM", stop);
    }
  });
}

if (import.meta.main) process.exitCode = await main(process.argv.slice(2));
