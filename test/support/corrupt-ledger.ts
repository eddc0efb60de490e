import { closeSync, copyFileSync, openSync, readSync, writeSync } from "node:fs";
import Database from "better-sqlite3";

/**
 * Gives `keyId` `rows` requests in the ledger (10 ms apart, up to now: at a month's start, some in
 * the month before; a report reads them all from an early `from`), then overwrites one of
 * the ledger's leaf pages in the middle with garbage, as a bad sector would: the key rows and the
 * ledger's last page (where new rows go) are untouched, so a start, holds and charges never read
 * it; a usage report over those rows does. The store must be closed (its WAL checkpointed).
 */
export function corruptLedger(file: string, keyId: string, rows = 20_000): void {
  const db = new Database(file);
  const insert = db.prepare("INSERT INTO ledger (key_id, at, amount, kind, ref, route, model, status, prompt_tokens, completion_tokens, stream, ms) VALUES (?, ?, -1, 'usage', ?, 'chat', 'm', 200, 1, 1, 0, 1)");
  const now = Date.now();
  db.transaction(() => {
    for (let i = 0; i < rows; i++) insert.run(keyId, now - (rows - i) * 10, `req-${i}`);
  })();
  const leaves = db.prepare<[], { pageno: number }>("SELECT pageno FROM dbstat WHERE name = 'ledger' AND pagetype = 'leaf' ORDER BY pageno").all();
  const pageSize = db.pragma("page_size", { simple: true }) as number;
  db.close(); // the last connection: the WAL is checkpointed into the file, and removed
  const page = leaves[Math.floor(leaves.length / 2)]!.pageno;
  const fd = openSync(file, "r+");
  try {
    writeSync(fd, Buffer.alloc(pageSize, 0xa5), 0, pageSize, (page - 1) * pageSize);
  } finally {
    closeSync(fd);
  }
}

/**
 * Changes the first letter of `keyId` in the keys table's primary-key index, in place, as a flipped
 * bit would: every page still reads, but the index no longer has the key's row, which only PRAGMA
 * integrity_check notices ("row 1 missing from index sqlite_autoindex_keys_1"). The file must be
 * one self-contained file (a backup, or a ledger whose store is closed).
 */
export function breakKeyIndex(file: string, keyId: string): void {
  const db = new Database(file, { readonly: true });
  const page = db.prepare<[], number>("SELECT pageno FROM dbstat WHERE name = 'sqlite_autoindex_keys_1'").pluck().get()!;
  const pageSize = db.pragma("page_size", { simple: true }) as number;
  db.close();
  const fd = openSync(file, "r+");
  try {
    const bytes = Buffer.alloc(pageSize);
    readSync(fd, bytes, 0, pageSize, (page - 1) * pageSize);
    const at = bytes.indexOf(keyId, 0, "latin1");
    if (at === -1) throw new Error(`${keyId} is not in the keys index's page ${page}`);
    bytes.write(keyId[0] === "A" ? "B" : "A", at, "latin1");
    writeSync(fd, bytes, 0, pageSize, (page - 1) * pageSize);
  } finally {
    closeSync(fd);
  }
}

/** `backup` copied to `staged` with its schema version set to `version`: a ledger a newer (or older) shim made. */
export function copyWithSchemaVersion(backup: string, staged: string, version: number): void {
  copyFileSync(backup, staged);
  const db = new Database(staged);
  db.pragma(`user_version = ${version}`);
  db.close();
}
