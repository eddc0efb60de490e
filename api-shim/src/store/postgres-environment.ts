/**
 * The environment variables the Postgres driver (pg 8) reads for what a connection's settings
 * leave out, each with where it belongs instead. The Postgres store is configured by
 * SHIM_DATABASE_URL alone: one of these set beside it would reach the driver past the checks made
 * on the URL (database-url.ts): PGOPTIONS="-c statement_timeout=0" or PGREPLICATION, which the
 * URL may not hold, PGSSLMODE=no-verify, which turns certificate checks off without a word, or
 * PGCLIENT_ENCODING, which decodes the server's text otherwise than as UTF-8. So the
 * configuration refuses them at start (config.ts, which passes the environment in: this module
 * reads none).
 *
 * From the driver's sources, pg 8.x:
 * - lib/connection-parameters.js, `val(key)`: `PG<KEY>` for user, database, port, host, password,
 *   binary, options, client_encoding (PGCLIENT_ENCODING, not libpq's PGCLIENTENCODING) and
 *   replication; PGSSLNEGOTIATION and PGAPPNAME by name; PGSSLMODE (readSSLConfigFromEnvironment,
 *   when the URL has no sslmode); PGCONNECT_TIMEOUT (when connectionTimeoutMillis is not given).
 *   A value is read only when not empty (`process.env[…] || defaults[key]`).
 * - lib/client.js: with no password, the pgpass module (pgpass/lib/helper.js), which reads
 *   PGPASSFILE (the password file) and PGPASS_NO_DEESCAPE (how the file is parsed).
 * lib/defaults.js reads USER (the default user name) only: not a PG* variable.
 * Some have no effect on the store's connections today (PGAPPNAME and PGCONNECT_TIMEOUT: the store
 * passes application_name and connectionTimeoutMillis; PGBINARY: the JavaScript client takes
 * `binary` from its config alone); they are refused all the same, so that the list follows what
 * the driver reads, not which settings each of the store's connections happens to pass.
 */
/**
 * Where a variable's setting belongs instead: in the URL (`url`, the form; `what`, what goes there
 * when not the variable's own value), or nowhere, and why (`why`).
 */
type Instead = { readonly url: string; readonly what?: string } | { readonly why: string };

export const PG_DRIVER_ENVIRONMENT: Readonly<Record<string, Instead>> = {
  PGAPPNAME: { url: "?application_name=…" },
  PGBINARY: { why: "the store reads every value as text" },
  PGCLIENT_ENCODING: { why: "the driver would decode the server's text with it instead of UTF-8" },
  PGCONNECT_TIMEOUT: { why: "the store bounds its connecting itself (5 s)" },
  PGDATABASE: { url: "postgres://user:password@host:port/database" },
  PGHOST: { url: "postgres://user:password@host:port/database, or ?host=/run/postgresql for a socket" },
  PGOPTIONS: { url: "?options=…, percent-encoded; the store's own settings still win" },
  PGPASSFILE: { url: "postgres://user:password@host:port/database, percent-encoded", what: "the password" },
  PGPASS_NO_DEESCAPE: { url: "postgres://user:password@host:port/database, percent-encoded", what: "the password" },
  PGPASSWORD: { url: "postgres://user:password@host:port/database, percent-encoded" },
  PGPORT: { url: "postgres://user:password@host:port/database" },
  PGREPLICATION: { why: "a replication connection runs none of the store's statements" },
  PGSSLMODE: { url: "?sslmode=…, read as libpq reads it, which PGSSLMODE is not" },
  PGSSLNEGOTIATION: { url: "?sslnegotiation=…" },
  PGUSER: { url: "postgres://user:password@host:port/database" },
};

/**
 * One problem for each variable of PG_DRIVER_ENVIRONMENT set (and not empty) in `env`, in its
 * order, naming the variable, never its value (PGPASSWORD is a secret, PGOPTIONS may hold one).
 */
export function driverEnvironmentProblems(env: Readonly<Record<string, string | undefined>>): string[] {
  return Object.entries(PG_DRIVER_ENVIRONMENT)
    .filter(([name]) => (env[name] ?? "") !== "")
    .map(([name, instead]) => `${name}: is set, and the Postgres driver would read it past the checks made on SHIM_DATABASE_URL, which alone configures the store: ${
      "url" in instead ? `put ${instead.what ?? "it"} in the URL (${instead.url}), or unset ${name}` : `unset ${name} (${instead.why})`}`);
}
