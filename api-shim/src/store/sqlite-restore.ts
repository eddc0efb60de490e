import { lstatSync, mkdirSync, readdirSync, renameSync, rmdirSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileStamp } from "../requests/period.ts";
import { syncDirectory } from "../sync-directory.ts";
import { checkStagedLedger, removeLeftoverChecks, RestoreRefusedError } from "./sqlite-restore-check.ts";
export { RestoreRefusedError };

/**
 * The restore of a backup staged beside the SQLite ledger: `<ledger>.restore` (e.g.
 * /app/data/shim.db.restore), found at the start, while the start holds the ledger's owner lock
 * and before anything opens the ledger (openStore). Copying a backup over shim.db by hand, with an
 * old shim.db-wal left beside it, corrupts the ledger or silently brings the old state back; here
 * the staged file is checked first (sqlite-restore-check.ts: refused, nothing changed), then the
 * ledger's files move into a directory beside them, `<ledger>.replacing/`, which is then renamed
 * `<ledger>.replaced-<UTC time>/`, and the staged file is renamed to the ledger, last. Renames
 * within one directory: no room needed, and a process killed at any point leaves either the staged
 * file (the next start moves what is left into the same `.replacing`, so the old ledger and its
 * -wal stay together, and goes on) or the restored ledger. The lock file (`-lock`) stays where it is.
 */

/** What a restore did, for the shim's log line (restoredMessage). */
export interface LedgerRestored {
  /** The staged file, now the ledger. */
  from: string;
  ledger: string;
  /** The directory the replaced files went to; null when none was beside the ledger. */
  previous: string | null;
  /** The old ledger's files in it (those an interrupted start moved there too). */
  moved: string[];
  /** With nothing to move: the newest directory of replaced files, if any (an earlier restore's, or this one's, begun by a start that was stopped half way). */
  earlier: string | null;
  /** The restored ledger's keys, and their balances together in credits (`3456.5`). */
  keys: number;
  credits: string;
}

/** A restore that failed after it began to move files (an I/O error): what was moved, and that the next start completes it. */
export class RestoreInterruptedError extends Error {
  constructor(staged: string, ledger: string, previous: string | null, moved: readonly string[], cause: unknown) {
    const where = moved.length === 0 ? "nothing was moved yet" : `${moved.join(", ")} moved into ${previous}`;
    super(`restoring the ledger ${ledger} from ${staged} failed half way (${where}): ${(cause as Error).message}; the next start completes it (${basename(staged)} is still there), or move the files back to undo it`, { cause });
    this.name = "RestoreInterruptedError";
  }
}

/** The staged file beside `ledger`. */
export const stagedFileOf = (ledger: string) => `${ledger}.restore`;

/**
 * The ledger's files a restore replaces, in the order they move: shim.db first, so that a ledger
 * file never stays beside the staged file without its -wal once that moved. A -journal is not the
 * WAL-mode ledger's, but one left beside it would be rolled back into the restored file.
 */
const ledgerFiles = (ledger: string) => ["", "-wal", "-shm", "-journal"].map((suffix) => `${basename(ledger)}${suffix}`);

/**
 * Restores `<ledger>.restore` over `ledger` if it is there (null if not), once it passes its
 * check (RestoreRefusedError, nothing changed). The caller holds the ledger's owner lock
 * (claimSqliteFile) and has not opened it. `ledger` is the file SQLite opens (a symlink's target):
 * its -wal and -shm are named after it. `onChecking`: before the check reads the whole file.
 */
export function restoreStagedLedger(ledger: string, options: { now?: () => number; onChecking?: (file: string, bytes: number) => void } = {}): LedgerRestored | null {
  removeLeftoverChecks(ledger);
  const staged = stagedFileOf(ledger);
  const st = lstatSync(staged, { throwIfNoEntry: false });
  if (st === undefined) return null;
  const found = checkStagedLedger(staged, ledger, st, options.onChecking);
  const dir = dirname(ledger);
  const present = ledgerFiles(ledger).filter((name) => exists(join(dir, name)));
  const replacing = replacingOf(ledger);
  // Not the shim's (it only ever makes a directory there): a restore would fail on it at every start.
  const other = lstatSync(replacing, { throwIfNoEntry: false });
  if (other !== undefined && !other.isDirectory()) throw new RestoreRefusedError(staged, ledger, `${replacing} is not a directory (a restore gathers the replaced files there): move it away`);
  const replacedName = () => freeName(join(dir, `${basename(ledger)}.replaced-${fileStamp((options.now ?? Date.now)())}`));
  let previous: string | null = null;
  const moved: string[] = [];
  try {
    if (present.length > 0 || exists(replacing)) {
      // One a killed start left holding one of these names (only by hand): finished as it is, nothing overwritten.
      if (present.some((name) => exists(join(replacing, name)))) renameSync(replacing, replacedName());
      if (!exists(replacing)) mkdirSync(replacing);
      previous = replacing;
      for (const name of present) {
        renameSync(join(dir, name), join(replacing, name));
        moved.push(name);
      }
      syncDirectory(replacing);
      if (readdirSync(replacing).length === 0) {
        // An empty one (its files removed by hand): nothing was replaced, no empty directory kept.
        rmdirSync(replacing);
        previous = null;
      } else {
        const replaced = replacedName();
        renameSync(replacing, replaced);
        previous = replaced;
      }
      // The moves are on disk before the rename: after a power cut, the restored file must not
      // come back with the old -wal still beside it.
      syncDirectory(dir);
    }
    renameSync(staged, ledger);
    syncDirectory(dir);
  } catch (e) {
    throw new RestoreInterruptedError(staged, ledger, previous, moved, e);
  }
  const inPrevious = previous === null ? [] : ledgerFiles(ledger).filter((name) => exists(join(previous!, name)));
  return { from: staged, ledger, previous, moved: inPrevious, earlier: previous === null ? newestReplaced(ledger) : null, ...found };
}

/** Where the old ledger's files gather before the directory gets its `.replaced-<time>` name. */
const replacingOf = (ledger: string) => `${ledger}.replacing`;

const exists = (path: string) => lstatSync(path, { throwIfNoEntry: false }) !== undefined;

/**
 * `path`, or `path-2`, `-3`… if taken: nothing replaced before is overwritten (a rename onto an
 * empty directory replaces it). Free when looked at is free when renamed to: the caller holds the
 * ledger's owner lock, and nothing else makes these names.
 */
function freeName(path: string): string {
  for (let n = 1; ; n++) {
    const candidate = n === 1 ? path : `${path}-${n}`;
    if (!exists(candidate)) return candidate;
  }
}

/** The newest `<ledger>.replaced-<time>` directory beside the ledger (by its name: the times sort as text), or null. */
function newestReplaced(ledger: string): string | null {
  const prefix = `${basename(ledger)}.replaced-`;
  const names = readdirSync(dirname(ledger)).filter((n) => n.startsWith(prefix)).sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
  return names.length === 0 ? null : join(dirname(ledger), names.at(-1)!);
}

/** The log line of a restore: from which file, where the replaced files are, and what the restored ledger holds (never a key or a hash). */
export function restoredMessage(r: LedgerRestored): string {
  const holds = `${r.keys} ${r.keys === 1 ? "key" : "keys"}, ${r.credits} credits in all`;
  const replaced = r.previous !== null
    ? `the files it replaced (${r.moved.join(", ")}) are in ${r.previous}`
    : `no ledger files were beside it to replace${r.earlier === null ? " (a new volume)" : ` (the newest directory of replaced files is ${r.earlier}: an earlier restore's, or this one's if a start was stopped half way through it)`}`;
  return `restored the ledger ${r.ledger} from ${r.from}: ${holds}; ${replaced}`;
}
