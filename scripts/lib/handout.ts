// The hand-out of `manage-keys create --from`: a CSV file with a line per key made, `name,base_url,
// key_id,key`, to give each user theirs. The secrets are shown once, in the create's answer: each
// key is written and flushed to disk as soon as it is made, so a run cut short (the shim gone, a
// lost answer, Ctrl-C, the machine's power) leaves every key it made in the file.
import { closeSync, existsSync, fstatSync, fsyncSync, ftruncateSync, openSync, rmSync, writeSync } from "node:fs";
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

/** Keys as hand-out lines, the header first: what the file holds, for keys it could not take. */
export function handoutText(keys: readonly CreatedKey[], baseUrl: string): string {
  return [HANDOUT_COLUMNS, ...keys.map((k) => [k.name, baseUrl, k.id, k.key])].map((cells) => csvLine(cells)).join("");
}

export interface Handout {
  readonly path: string;
  /** The base URL its lines give (with /v1). */
  readonly baseUrl: string;
  /** How many keys it holds. */
  readonly keys: number;
  /**
   * Appends a key's line and flushes it to disk before returning. A write that fails (a full disk)
   * throws, the file cut back to the lines before it: a half line is not left for a user to get.
   */
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
    // A nearly full disk takes part of a write without an error: the rest is written again, which fails if it cannot.
    const bytes = Buffer.from(text);
    for (let done = 0; done < bytes.length; ) done += writeSync(fd, bytes, done);
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
    baseUrl,
    get keys() {
      return keys;
    },
    add(key) {
      const size = fstatSync(fd).size;
      try {
        write(csvLine([key.name, baseUrl, key.id, key.key]));
      } catch (err) {
        try {
          ftruncateSync(fd, size);
        } catch {
          // The disk refuses that too: the error below says the key is not in the file.
        }
        throw err;
      }
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
