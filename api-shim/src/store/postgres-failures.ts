import pg from "pg";

/**
 * Which failures of a hold leave its fate unknown (see PostgresStore's doubtful holds): only a
 * statement that may have reached the server. One refused before it was sent cannot have held
 * anything, and remembering those made an outage cost memory per refused request. (A
 * settlement's hold exists either way.)
 */

/** Refused by this replica before anything was sent (it has no liveness lock). */
export class NotSentError extends Error {}

/** The database takes no writes (READ_ONLY): what a ping, and a start, say about it. */
export class ReadOnlyError extends Error {
  constructor() {
    super("the database is read-only (a hot standby, or default_transaction_read_only is on): no credit can be held or charged; point SHIM_DATABASE_URL at the primary, or make it writable");
    this.name = "ReadOnlyError";
  }
}

/** A write the server refused as read-only (read_only_sql_transaction): it wrote nothing. */
export const READ_ONLY_CODE = "25006";
/** SQLSTATE insufficient_privilege: "must be owner of table ledger" (DDL by a role that does not own the tables). */
export const NOT_PERMITTED_CODE = "42501";

/** Connection-level failures: the pool could not give the statement a session. */
const NOT_CONNECTED_CODES = new Set([
  "57P03", // the database system is starting up / shutting down
  "53300", // too many connections
  "28P01", "28000", // authentication
  "3D000", // no such database
]);

export function neverSent(e: unknown): boolean {
  if (e instanceof NotSentError) return true;
  const err = e as { syscall?: string; code?: string; message?: string } | null;
  if (err === null || typeof err !== "object") return false;
  // ECONNREFUSED, EHOSTUNREACH, ENOTFOUND…: the socket never connected.
  if (err.syscall === "connect" || err.syscall === "getaddrinfo") return true;
  if (typeof err.code === "string" && NOT_CONNECTED_CODES.has(err.code)) return true;
  // A read-only database refused the statement: it cannot have committed.
  if (err.code === READ_ONLY_CODE) return true;
  // pg-pool's wait for a connection, or pg's connect to an address that never answers
  // (connectionTimeoutMillis), ran out.
  return typeof err.message === "string" &&
    (err.message.startsWith("timeout exceeded when trying to connect") || err.message.startsWith("Connection terminated due to connection timeout"));
}

/**
 * The server answered the statement with an error (a statement timeout, a deadlock, a constraint):
 * a statement outside a transaction is all or nothing, so it did not commit, and there is no doubt
 * to settle. Only a failure without the server's answer (a connection that broke, a client-side
 * timeout) leaves one.
 */
export function refusedByServer(e: unknown): boolean {
  return e instanceof pg.DatabaseError;
}

/** Doubtful holds remembered at most (the oldest is forgotten; a start's sweep releases it). */
export const MAX_DOUBTFUL = 100_000;
/** Holds released per round trip when the database answers again. */
export const RELEASE_BATCH = 1000;
