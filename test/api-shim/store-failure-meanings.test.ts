import pg from "pg";
import { describe, expect, it } from "vitest";
import { failsTheStore, isFull } from "../../api-shim/src/store/sqlite-failures.ts";
import { neverSent, worthAnotherTry } from "../../api-shim/src/store/postgres-failures.ts";

describe("what a store failure means", () => {
  it("SQLite: a full volume, a read-only or moved file, a write I/O error and a file that cannot be opened are failures that close the store; busy, a locking protocol error and a constraint are not", () => {
    for (const code of ["SQLITE_FULL", "SQLITE_READONLY", "SQLITE_READONLY_DBMOVED", "SQLITE_IOERR_WRITE", "SQLITE_CANTOPEN"]) expect(failsTheStore({ code }), code).toBe(true);
    expect(isFull({ code: "SQLITE_FULL" })).toBe(true);
    for (const code of ["SQLITE_BUSY", "SQLITE_PROTOCOL", "SQLITE_CONSTRAINT_UNIQUE"]) expect(failsTheStore({ code }), code).toBe(false);
  });

  it("Postgres: a write a read-only server refused (25006), and a connection refused at authentication (28000 as 28P01), were never sent: not doubtful, not tried again", () => {
    const serverError = (severity: string, code: string, message = "an error") => Object.assign(new pg.DatabaseError(message, 0, "error"), { severity, code });
    for (const e of [serverError("ERROR", "25006", "cannot execute INSERT in a read-only transaction"), serverError("FATAL", "28000", 'no pg_hba.conf entry for host "10.0.0.5"'), serverError("FATAL", "28P01")]) {
      expect({ code: e.code, neverSent: neverSent(e), tried: worthAnotherTry(e) }).toEqual({ code: e.code, neverSent: true, tried: false });
    }
  });
});
