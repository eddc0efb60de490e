import type pg from "pg";
import { driverUrl } from "./database-url.ts";
import { types } from "./postgres-client.ts";

/**
 * The settings of the Postgres store's connections (postgres-store.ts), from SHIM_DATABASE_URL and
 * the store's bound on connecting and on each statement. `session`: the pool's request sessions
 * (and a settlement's second try); `connection`: the liveness connection and the index build's.
 */
export function sessionSettings(url: string, timeoutMs: number): { session: pg.ClientConfig; connection: pg.ClientConfig } {
  // keepAlive and a client-side query timeout: a silent network cut must end in a 503 within
  // the bound, not in a query that waits for TCP to give up.
  const { connectionString, urlOptions } = driverUrl(url);
  const common = { connectionString, connectionTimeoutMillis: timeoutMs, query_timeout: timeoutMs + 1000, keepAlive: true, application_name: "api-shim", types };
  // The liveness connection is what other replicas judge this one by (its advisory lock). If
  // this host dies without a word, only the server's TCP keepalive ends the session, after two
  // hours by Linux's defaults: its holds would stay on its keys that long. ~25 s instead.
  const keepalives = "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3";
  // The pool's sessions too, and a transaction left idle (its process died or was cut off
  // between two statements of a top-up, which holds the key's row) ends after the statement
  // bound: otherwise the row stayed locked for those two hours, and every other replica's
  // request for that key, then for any key as they filled the pool waiting, got a 503.
  const session = {
    ...common,
    options: `${urlOptions} -c synchronous_commit=off -c statement_timeout=${timeoutMs} -c idle_in_transaction_session_timeout=${timeoutMs} ${keepalives}`.trim(),
  };
  return { session, connection: { ...common, options: `${urlOptions} ${keepalives}`.trim() } };
}
