// The hand-out of `manage-keys create --from`: a CSV file with a line per key made, `name,base_url,
// key_id,key`, to give each user theirs. The secrets are shown once, in the create's answer: each
// key is written and flushed to disk as soon as it is made, so a run cut short (the shim gone, a
// lost answer, Ctrl-C, the machine's power) leaves every key it made in the file.
import { closeSync, existsSync, fsyncSync, openSync, rmSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import { csvLine } from "../../api-shim/src/csv-cell.ts";
import { syncDirectory } from "../../api-shim/src/sync-directory.ts";
import type { CreatedKey } from "./admin-client.ts";
import { UsageError } from "./cli.ts";
import { writeFailureClass } from "./exit-codes.ts";

export const HANDOUT_COLUMNS = ["name", "base_url", "key_id", "key"] as const;


/** Why a hand-out cannot be written at `path`, checked before anything is sent; undefined when it can. */
export function handoutRefusal(path: string): string | undefined {
  if (existsSync(path)) return `${path} exists already: a hand-out is never overwritten (the keys in it are shown nowhere else); give another --handout, or leave it out for a new file`;
  if (!existsSync(dirname(path))) return `${dirname(path)} does not exist: make it first, or give another --handout`;
  return undefined;
}

export interface Handout {
  readonly path: string;
  /** How many keys it holds. */
  readonly keys: number;
  /** Appends a key's line and flushes it to disk before returning. */
  add(key: CreatedKey): void;
  /** Closes it; a hand-out that holds no key is removed (it was made by this run, empty). */
  close(): void;
}

/**
 * Makes the hand-out at `path` (mode 0600: it holds secrets), with its header line. Made with
 * O_EXCL: a file made there since the check is not overwritten either. `baseUrl`: what an OpenAI
 * client takes as its base URL, /v1 included.
 */
export function openHandout(path: string, baseUrl: string): Handout {
  let fd: number;
  try {
    fd = openSync(path, "wx", 0o600);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EEXIST") throw new UsageError(handoutRefusal(path) ?? `${path} exists already`);
    throw new UsageError(`cannot write the hand-out ${path}: ${(err as Error).message}`, { exit: writeFailureClass(err) });
  }
  const write = (text: string) => {
    writeSync(fd, text);
    fsyncSync(fd);
  };
  write(csvLine(HANDOUT_COLUMNS));
  // The new file's name on disk too: after a power cut, a file whose lines were flushed but whose
  // directory entry was not may be gone, while its keys exist on the shim (and a run again skips them).
  syncDirectory(dirname(path));
  let keys = 0;
  let open = true;
  return {
    path,
    get keys() {
      return keys;
    },
    add(key) {
      write(csvLine([key.name, baseUrl, key.id, key.key]));
      keys++;
    },
    close() {
      if (!open) return;
      open = false;
      closeSync(fd);
      if (keys === 0) rmSync(path, { force: true });
    },
  };
}
