import pg from "pg";
import { within } from "../promises.ts";
import { driverUrl } from "./database-url.ts";
import { inTransaction, onPooled, types } from "./postgres-client.ts";
import { SessionSettingsError } from "./store.ts";

/** Server settings by name, each value as pg_settings shows it (timeouts in ms, keepalives in s). */
export type Settings = Readonly<Record<string, string>>;

/** One kind of the store's connections: the driver's settings, and the server's it SETs once connected (connectSession). */
export interface StoreSession {
  config: pg.ClientConfig;
  settings: Settings;
}

/**
 * The store's connections (postgres-store.ts), from SHIM_DATABASE_URL and the store's bound on
 * connecting and on each statement. `session`: the pool's request sessions (and a settlement's
 * second try); `connection`: the liveness connection and the index build's.
 *
 * The server settings are SET once connected, not sent at connection in the `options` startup
 * parameter: a pooler refuses that parameter (PgBouncer: "unsupported startup parameter:
 * options", the shim never started) or, told to ignore it, drops every setting in it. The URL's
 * own `options` (libpq's) is still sent at connection; the store's SETs come after it, so they
 * win over it as over a role's or database's defaults.
 */
export function sessionSettings(url: string, timeoutMs: number): { session: StoreSession; connection: StoreSession } {
  // keepAlive and a client-side query timeout: a silent network cut must end in a 503 within
  // the bound, not in a query that waits for TCP to give up.
  const { connectionString, urlOptions } = driverUrl(url);
  const config: pg.ClientConfig = {
    connectionString, connectionTimeoutMillis: timeoutMs, query_timeout: timeoutMs + 1000, keepAlive: true, application_name: "api-shim", types,
    ...(urlOptions === "" ? {} : { options: urlOptions }),
  };
  // The liveness connection is what other replicas judge this one by (its advisory lock). If
  // this host dies without a word, only the server's TCP keepalive ends the session, after two
  // hours by Linux's defaults: its holds would stay on its keys that long. ~25 s instead.
  const keepalives = { tcp_keepalives_idle: "10", tcp_keepalives_interval: "5", tcp_keepalives_count: "3" };
  // The pool's sessions too, and a transaction left idle (its process died or was cut off
  // between two statements of a top-up, which holds the key's row) ends after the statement
  // bound: otherwise the row stayed locked for those two hours, and every other replica's
  // request for that key, then for any key as they filled the pool waiting, got a 503.
  const bound = String(timeoutMs);
  const session = { synchronous_commit: "off", statement_timeout: bound, idle_in_transaction_session_timeout: bound, ...keepalives };
  return { session: { config, settings: session }, connection: { config, settings: keepalives } };
}

/**
 * SETs `settings` on `c`'s session (one statement), within `queryTimeout` (ms; by default the
 * client's own). The pool runs it on each new connection before its first query (onConnect).
 */
export async function applySettings(c: pg.ClientBase, settings: Settings, queryTimeout?: number): Promise<void> {
  const text = "SELECT set_config(name, value, false) FROM unnest($1::text[], $2::text[]) AS s(name, value)";
  await c.query({ text, values: [Object.keys(settings), Object.values(settings)], ...(queryTimeout === undefined ? {} : { query_timeout: queryTimeout }) } as pg.QueryConfig);
}

/** Connects `c` and SETs `settings` on its session (applySettings). */
export async function connectSession(c: pg.Client, settings: Settings, queryTimeout?: number): Promise<void> {
  await c.connect();
  await applySettings(c, settings, queryTimeout);
}

/**
 * Refuses (SessionSettingsError) a pooler that gives the store's connections no server session of
 * their own, before the store SETs anything: a pooler in transaction mode does not reset a server
 * session between clients, so settings SET through it would stay with the server sessions it
 * hands to other applications afterwards (a 5 s statement bound, asynchronous commits), the
 * refused shim having changed what it does not own. `lock`: the liveness connection, connected
 * with nothing SET on it; `config`: a connection's, for a second one held in a transaction;
 * `waitMs`: how long the liveness connection's statement may take before it is suspected of
 * waiting for a server session (the store's statement bound: a direct server answers a
 * pg_backend_pid() well within it).
 *
 * While the second connection holds a server session in a transaction, the liveness connection's
 * next statement must run in the server session its first ran in. Through a pooler in transaction
 * mode it runs in another (or the held one was the liveness connection's: PgBouncer hands out the
 * session used last), or waits for the held one when the pool has no other; in statement mode the
 * pooler refuses the transaction. Nothing is left behind: no SET, and the held transaction only
 * read.
 */
export async function probeSessions(lock: pg.Client, config: pg.ClientConfig, waitMs: number): Promise<void> {
  const first = await backendPid(lock);
  const other = new pg.Client(config);
  other.on("error", () => {}); // a pooler that refuses the transaction closes the connection: BEGIN's rejection says so
  try {
    await other.connect();
    await other.query("BEGIN").catch((e: unknown) => {
      // PgBouncer's words in statement mode ("transaction blocks not allowed in statement pooling mode").
      if (e instanceof Error && /transaction blocks not allowed/i.test(e.message)) throw new SessionSettingsError([`the pooler refused a transaction ("${e.message}"): it hands out a server session per statement`]);
      throw e;
    });
    const held = await backendPid(other);
    if (held === first) throw new SessionSettingsError([`two connections ran in one server session (process ${first}), the liveness connection's first statement and another connection's transaction`]);
    const pending = backendPid(lock);
    pending.catch(() => {}); // awaited below, or the rejection of `within`
    let again = await within(pending, waitMs, null);
    if (again === null) {
      // Still no answer while the server answers the other connection: the liveness statement
      // waits for a server session. It is the pooler's only one, held by the other connection's
      // transaction, when the statement runs once that transaction ends, in another session than
      // its first. A server or network that is slow or cut (the other not answering, the statement
      // failing, or answering late in its own session: a direct server that stalled) is an outage
      // (StoreUnavailableError, retried), not a pooler, which would end the shim for good.
      await backendPid(other, waitMs);
      await other.end();
      again = await pending;
      if (again === first) throw new Error(`the liveness connection answered after ${waitMs} ms, in its own server session (process ${first}): the server is slow`);
      throw new SessionSettingsError([`the liveness connection's statement ran only once another connection's transaction had ended (it waited ${waitMs} ms for a server session, process ${again} when it ran)`]);
    }
    if (again !== first) throw new SessionSettingsError([`the liveness connection's statements ran in two server sessions (process ${first}, then ${again}) while another connection held one in a transaction`]);
  } finally {
    // Ends its transaction, which only read: through a pooler, its server session is then free.
    await other.end().catch(() => {});
  }
}

/** `c`'s server process, within `queryTimeout` (ms; by default the client's own bound). */
async function backendPid(c: pg.ClientBase, queryTimeout?: number): Promise<number> {
  const query = { text: "SELECT pg_backend_pid() AS pid", ...(queryTimeout === undefined ? {} : { query_timeout: queryTimeout }) } as pg.QueryConfig;
  return (await c.query<{ pid: number }>(query)).rows[0]!.pid;
}

/**
 * Refuses (SessionSettingsError), at open and before anything is written, connections that do not
 * keep their server sessions: a setting SET on them that is not in effect, or a liveness connection
 * whose statements reach another server session than before. A pooler in transaction mode hands a
 * server session to another client between transactions, with the settings and the liveness lock:
 * while a request session holds one in a transaction, the liveness connection's next statement
 * goes to another, and the request session may find another's settings. (A pooler that hands a
 * client the server session it just left, with its SETs, passes a plain check of the settings.)
 */
export async function checkSessions(pool: pg.Pool, session: Settings, lock: pg.Client, connection: Settings): Promise<void> {
  const first = await sessionState(lock, connection);
  const faults = await onPooled(pool, (c) => inTransaction(c, async () => {
    const pooled = await sessionState(c, session);
    const again = await sessionState(lock, connection);
    return [
      ...again.wrong.map((w) => `${w.name} is ${w.value} on the liveness connection, not ${connection[w.name]}`),
      ...(again.pid === first.pid ? [] : [`the liveness connection's statements ran in two server sessions (process ${first.pid}, then ${again.pid})`]),
      ...pooled.wrong.map((w) => `${w.name} is ${w.value} on a request connection, not ${session[w.name]}`),
    ];
  }));
  if (faults.length > 0) throw new SessionSettingsError(faults);
}

/**
 * `c`'s session: its server process, and the settings of `settings` not in effect there, with their
 * values. TCP keepalives read 0 on a Unix socket, where they do not apply: not counted there.
 */
async function sessionState(c: pg.ClientBase, settings: Settings): Promise<{ pid: number; wrong: { name: string; value: string }[] }> {
  const { rows } = await c.query<{ name: string; setting: string; pid: number; unix: boolean }>(
    "SELECT name, setting, pg_backend_pid() AS pid, inet_client_addr() IS NULL AS unix FROM pg_settings WHERE name = ANY($1::text[])", [Object.keys(settings)]);
  const wrong = rows.filter((r) => r.setting !== settings[r.name] && !(r.unix && r.name.startsWith("tcp_keepalives_")))
    .map((r) => ({ name: r.name, value: r.setting }));
  return { pid: rows[0]!.pid, wrong };
}
