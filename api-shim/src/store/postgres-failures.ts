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
 * Whether a settlement that failed is worth its one more try on a connection of its own
 * (settleAfresh, which settles the doubt: it finds the first try's ledger row under the key's row
 * lock if that try committed, so it never charges twice). Not when nothing was sent (neverSent:
 * the database is not taking connections; the hold is released later). Yes when the server did
 * not answer (a connection that broke, a client-side timeout): it may have committed. When it
 * answered with an error, the statement, all or nothing outside a transaction, did not commit
 * (one whose session ended may have, just before the end: settleAfresh tells); a second try is
 * made only where another session may well succeed:
 * - the server ended the session (endedSession): an operator's or an HA agent's
 *   pg_terminate_backend, a fast shutdown, a crash of another server process. The database may
 *   still be up (or a failover's new primary reachable), and a served request was otherwise
 *   released uncharged: never charged, missing from /v1/usage.
 * - a deadlock or a serialization failure (RETRY_ONCE): the server's own word for "try again".
 * - a statement cancelled by another session (pg_cancel_backend): cancelledByAnother.
 * Not a constraint, a permission, a read-only database, nor the store's own statement timeout:
 * those fail the same way again (a second statement bound would double the client's wait).
 */
export function worthAnotherTry(e: unknown): boolean {
  if (neverSent(e)) return false;
  if (!(e instanceof pg.DatabaseError)) return true;
  return endedSession(e) || RETRY_ONCE.has(e.code ?? "") || cancelledByAnother(e);
}

/**
 * SQLSTATEs that end the session: admin_shutdown (pg_terminate_backend, a fast shutdown),
 * crash_shutdown, cannot_connect_now (sent only at connection, so neverSent has taken it first).
 * And class 08, connection exceptions.
 */
const SESSION_ENDED_CODES = new Set(["57P01", "57P02", "57P03"]);

function endedSession(e: pg.DatabaseError): boolean {
  // FATAL and PANIC end the session whatever the code (severity is in the server's language:
  // the codes are what count on a server that does not speak English).
  return e.severity === "FATAL" || e.severity === "PANIC" || SESSION_ENDED_CODES.has(e.code ?? "") || (e.code ?? "").startsWith("08");
}

/** deadlock_detected, serialization_failure: the transaction was chosen to roll back; it may succeed alone. */
const RETRY_ONCE = new Set(["40P01", "40001"]);

/** SQLSTATE query_canceled: by the store's own statement_timeout, or by a cancel request. */
const QUERY_CANCELED = "57014";

/**
 * A statement cancelled by another session's pg_cancel_backend, not by the store's own
 * statement_timeout: both are query_canceled, told apart only by the message ("canceling
 * statement due to user request" against "… due to statement timeout"). The store sends no
 * cancel requests of its own for a settlement. On a server whose messages are in another
 * language the words do not match: no second try, as for a statement timeout (the statement did
 * not commit; its hold is released, uncharged).
 */
function cancelledByAnother(e: pg.DatabaseError): boolean {
  return e.code === QUERY_CANCELED && e.message === "canceling statement due to user request";
}

/** Doubtful holds remembered at most (the oldest is forgotten; a start's sweep releases it). */
export const MAX_DOUBTFUL = 100_000;
/** Holds released per round trip when the database answers again. */
export const RELEASE_BATCH = 1000;
