import { parse as driverParse } from "pg-connection-string";
import { type NamedSecrets, shownUrlOrValue, shownValue, URL_SCHEME } from "../shown-value.ts";

/**
 * SHIM_DATABASE_URL, read once: `sqlite:<path>` (relative to the working directory),
 * `sqlite::memory:`, or `postgres://…` / `postgresql://…` (a libpq connection URL, with what
 * the driver reads as libpq does: notLikeLibpq). Kept apart
 * from the stores so the configuration can check it with every other setting at start, without
 * loading a database driver (only the driver's URL parser).
 */
export type DatabaseTarget = { kind: "postgres"; url: string } | { kind: "sqlite"; path: string };

/**
 * The store a URL names; throws an Error whose message names SHIM_DATABASE_URL and what is allowed,
 * and shows the URL as `shown` does (`secrets`: the deployment's, never shown wherever they are).
 */
export function parseDatabaseUrl(url: string, secrets: NamedSecrets = {}): DatabaseTarget {
  if (namesPostgres(url)) {
    checkDriverReads(url, secrets);
    return { kind: "postgres", url };
  }
  if (!url.startsWith("sqlite:")) {
    throw new Error(`SHIM_DATABASE_URL: ${shown(url, secrets)} is not valid; expected sqlite:<path>, sqlite::memory: or postgres://…`);
  }
  const path = url.slice("sqlite:".length).replace(/^\/\/(?=\/)/, "");
  if (path === "") throw new Error("SHIM_DATABASE_URL: sqlite: needs a path, e.g. sqlite:./data/shim.db");
  return { kind: "sqlite", path };
}

/** Whether SHIM_DATABASE_URL names the Postgres store (valid or not). */
export const namesPostgres = (url: string): boolean => url.startsWith("postgres://") || url.startsWith("postgresql://");

/**
 * Throws unless the driver reads the URL as the store hands it over (driverUrl). What it refuses
 * (a port over 65535, a password with `?` or `/` unencoded, `sslmode=verify-ca` without
 * `sslrootcert`, a TLS file it cannot read: the driver reads those files as it parses) would
 * otherwise fail the store's first connection, which looks like a store failure at start: the
 * process exits for a restart, and is restarted forever, with no word of the setting. So is
 * what it reads otherwise than libpq, or not at all (notLikeLibpq).
 */
function checkDriverReads(url: string, secrets: NamedSecrets): void {
  const refused = userInfoCutShort(url) ?? notLikeLibpq(url);
  if (refused !== null) throw new Error(`SHIM_DATABASE_URL: ${shown(url, secrets)} is not valid: ${refused}`);
  try {
    driverParse(driverUrl(url).connectionString);
  } catch (e) {
    // The URL parser's message is "Invalid URL", its input (the URL, password included) elsewhere.
    const why = e instanceof TypeError && /invalid url/i.test(e.message)
      ? "the driver cannot parse it as a URL; check the port (at most 65535) and percent-encode any ?, /, #, @ or : in the user name or password"
      : e instanceof Error ? e.message : String(e);
    throw new Error(`SHIM_DATABASE_URL: ${shown(url, secrets)} is not valid: ${why}`);
  }
}

/** A SHIM_DATABASE_URL that is not valid, in its problem: a URL as redactUrl shows it, anything else as shownValue does. */
const shown = (url: string, secrets: NamedSecrets): string => shownUrlOrValue(url, secrets, redactUrl);

/**
 * A `?`, `/`, `#` or `@` unencoded in the password, where the driver does not refuse the URL
 * itself. At the password's start (`shim:/s3cret@db`; a base64 password starts with `/` one time
 * in 64) or after digits (`shim:2024#Winter@db`), the authority ends before the user info's `@`,
 * and the driver takes the user name for the host and the digits for its port; after an `@` in it
 * (`shim:K9x@Lmq7Zr2/Wt5@db`), it takes what follows that `@` for the host. The first connection
 * then fails as the store would, naming that host in the log (getaddrinfo ENOTFOUND Lmq7Zr2: a
 * part of the password). Told by an `@` after the authority that no query parameter holds: any in
 * the path (before any `?` or `#`: a database name holding one is written `%40` too), or, after a
 * cut at digits, right after the query's first name (base64's `=` padding may come before it),
 * not in a value (`db/x?user=me@corp`).
 */
function userInfoCutShort(url: string): string | null {
  const { authority, after } = splitAuthority(url);
  const inPath = /^\/[^?#]*@/.test(after);
  const afterPort = /^[^@]*:\d{0,5}$/.test(authority) && /^[?#][^=&]*=*@/.test(after);
  if (!inPath && !afterPort) return null;
  return "an @ comes after the host (the user info ends early, or the database name holds it); percent-encode any ?, /, #, @ or : in the user name or password, and an @ in the database name as %40";
}

/** A URL's authority, by the text (up to the first `/`, `?` or `#` after `://`), and what follows it. */
function splitAuthority(url: string): { authority: string; after: string } {
  const rest = url.slice(url.indexOf("://") + 3);
  const end = rest.search(/[/?#]/);
  return end === -1 ? { authority: rest, after: "" } : { authority: rest.slice(0, end), after: rest.slice(end) };
}

/**
 * Parameters the store sets itself, which the URL's would contradict: pg sends them at connection,
 * where the store's SETs replace them (postgres-sessions.ts; before those, `?statement_timeout=0`
 * gave the request sessions no bound at all), or, query_timeout, takes it as its own client bound.
 * Refused rather than ignored in silence.
 */
const STORE_SETTINGS: Record<string, string> = {
  statement_timeout: "its bound on each statement (5 s on the request path)",
  idle_in_transaction_session_timeout: "its bound on a transaction left idle (5 s), which frees a key's row a dead replica held",
  lock_timeout: "the request path's waits are bounded by its statement bound, and its index build sets none",
  query_timeout: "its client-side bound on each statement (6 s)",
  synchronous_commit: "off on the request path, on for admin writes; the driver does not even send it",
};

/**
 * Why the driver (pg 8) would not do what libpq does with this URL, or null: what it ignores or
 * reads otherwise (libpq's host list, target_session_attrs, sslmode=allow, sslpassword,
 * sslrootcert=system), a replication connection (replication), and what would replace the store's
 * own settings (STORE_SETTINGS). A URL
 * the WHATWG parser cannot read at all is left to the driver's own check.
 */
function notLikeLibpq(url: string): string | null {
  // The host list, by the text: `h1:5432,h2:5432` is no WHATWG URL. After the user info's last `@`.
  const { authority, after } = splitAuthority(url);
  const hosts = authority.slice(authority.lastIndexOf("@") + 1);
  // An `@` after an authority without one: the authority (and the query) may be the user info,
  // cut short by a `?` or `#` in the password (`shim:Tr0ub4dor,3?x@db`), so neither is quoted.
  const mayBeUserInfo = !authority.includes("@") && after.includes("@");
  const parsed = parseLikeDriver(url)?.parsed;
  const params = parsed?.searchParams ?? new URLSearchParams();
  for (const [list, kind] of [[hosts, "hosts"], [params.get("host") ?? "", "hosts"], [params.get("port") ?? "", "ports"]] as const) {
    if (!list.includes(",")) continue;
    const why = "libpq's form for trying one after another, which the driver does not read; name one host: the primary, or a name that follows it (a DNS name a failover moves, or a pooler in session mode)";
    if (!mayBeUserInfo) return `it names a list of ${kind} (${list}), ${why}`;
    return `it names a list of ${kind} (not repeated: with the @ after it, it may be a password cut short), ${why}; or, if the @ after it ends the user info, percent-encode any ?, /, #, @ or : in the user name or password`;
  }
  for (const name of ["target_session_attrs", "load_balance_hosts"]) {
    if (params.has(name)) return `${name} is libpq's: the driver ignores it and connects to the one host named, whatever its role; leave it out and name the primary (a replica refuses to start on a read-only database)`;
  }
  if (params.get("sslmode") === "allow") return "sslmode=allow (libpq: without TLS, else with it) is taken by the driver as verify-full (TLS with a verified certificate); use sslmode=disable for a server without TLS, require to encrypt without verifying, or verify-full";
  if (params.has("sslpassword")) return "sslpassword is libpq's: the driver cannot decrypt an encrypted sslkey with it (every connection fails); give it a key without a passphrase (openssl pkey -in key.pem -out key-plain.pem) and leave sslpassword out";
  if (params.get("sslrootcert") === "system") return "sslrootcert=system (libpq: the system's CA store) is read by the driver as a file named 'system'; give the CA bundle's path instead (e.g. /etc/ssl/certs/ca-certificates.crt)";
  if (params.has("replication")) return "replication asks for a replication connection (the driver sends it at the start), which takes none of the store's statements: every start failed with \"extended query protocol not supported in a replication connection\"; leave it out";
  for (const [name, why] of Object.entries(STORE_SETTINGS)) {
    if (params.has(name)) return `${name} is the store's own setting (${why}), which the URL's would replace; leave it out`;
  }
  return null;
}

/**
 * SHIM_DATABASE_URL as it may be shown in logs and error messages: a URL with its password
 * replaced by `***`, a `sqlite:` path as it is, and anything else (a libpq `key=value` string, a
 * scheme with one slash, a password alone) as shownValue shows a value that is not valid: by its
 * first few characters and its length, since where a password starts in it cannot be told.
 */
export function redactUrl(url: string): string {
  if (url.startsWith("sqlite:")) return url;
  const scheme = URL_SCHEME.exec(url);
  if (!scheme) return shownValue(url);
  let out = url;
  const start = scheme[0].length;
  // The later of two readings of the user info's end: the driver's, and libpq's (psql's), which
  // ends it at the first `@` before a `/` (`admin:?s3cret@db`: to the driver a host `admin` and
  // a query, to psql the password `?s3cret`).
  const slash = url.indexOf("/", start);
  const libpqAt = url.slice(start, slash === -1 ? url.length : slash).indexOf("@");
  const at = Math.max(userInfoEnd(url, start), libpqAt === -1 ? -1 : start + libpqAt);
  const colon = url.indexOf(":", start);
  if (at !== -1 && colon !== -1 && colon < at) out = `${url.slice(0, colon)}:***${url.slice(at)}`;
  // Secrets in the query, by their decoded names (the driver decodes `pass%77ord`): the password
  // and libpq's passphrase of the client key.
  // A value runs to the next `&`: libpq has no URL fragment, so `password=s3c#ret` is "s3c#ret" to psql.
  return out.replace(/([?&])([^=&#]*)=([^&]*)/g, (whole, sep: string, key: string) => {
    let name = key;
    try {
      name = decodeURIComponent(key.replaceAll("+", " "));
    } catch {
      // a bad escape: the name as written
    }
    return /^(ssl)?password$/i.test(name) ? `${sep}${key}=***` : whole;
  });
}

/**
 * The `@` that ends the user info, -1 if none. When the URL parses as the driver parses it, its
 * query starts at the first `?` after the authority (which ends at the first `/`, `?` or `#`), and
 * an `@` in the query (`?application_name=a?b@c`) is not the user info's end; the last `@` before
 * the query is, even past the authority (`p@ss/w@rd9@db`: better a host hidden too than a
 * password's tail shown). A URL that does not parse (a password holding `?`, `/` or `#`
 * unencoded) is hidden through its last `@`.
 */
function userInfoEnd(url: string, start: number): number {
  if (parseLikeDriver(url) === undefined) return url.lastIndexOf("@");
  const authorityEnd = url.slice(start).search(/[/?#]/);
  const query = authorityEnd === -1 ? -1 : url.indexOf("?", start + authorityEnd);
  const at = url.lastIndexOf("@", query === -1 ? url.length : query - 1);
  return at >= start ? at : -1;
}

const STAND_IN_HOST = "gs-no-host.invalid";
const STAND_IN_AUTHORITY = new RegExp(`^(postgres(?:ql)?://[^/?#]*?)${STAND_IN_HOST.replaceAll(".", "\\.")}/`);

/**
 * SHIM_DATABASE_URL for the driver. `sslmode` is read as libpq reads it (pg on its own takes
 * `require` as `verify-full`, refusing a server `psql` reaches with the same URL), and a libpq
 * `options` parameter is taken out, for the store to send at connection (postgres-sessions.ts; its
 * own settings are SET after it, so they win). The settings pg sends apart from `options` are
 * refused at start instead (notLikeLibpq).
 */
export function driverUrl(url: string): { connectionString: string; urlOptions: string } {
  // As pg does: libpq's host-less form is parsed with a stand-in host, taken out of the authority after.
  const read = parseLikeDriver(url);
  if (read === undefined) return { connectionString: url, urlOptions: "" }; // the driver reports it, without the URL
  const { parsed, standIn } = read;
  const urlOptions = parsed.searchParams.get("options") ?? "";
  parsed.searchParams.delete("options");
  if (!parsed.searchParams.has("uselibpqcompat")) parsed.searchParams.set("uselibpqcompat", "true");
  const connectionString = parsed.toString();
  return { connectionString: standIn ? connectionString.replace(STAND_IN_AUTHORITY, "$1/") : connectionString, urlOptions };
}

/**
 * The URL as pg parses it: a WHATWG URL or, only when that fails, libpq's form with credentials
 * and no host (`postgres://user:pw@/db?host=/run/postgresql`), which is no WHATWG URL, with a
 * stand-in host in its authority (`standIn`: to be taken out after). Undefined if neither parses.
 */
function parseLikeDriver(url: string): { parsed: URL; standIn: boolean } | undefined {
  try {
    return { parsed: new URL(url), standIn: false };
  } catch {
    const withHost = url.replace(/^(postgres(?:ql)?:\/\/[^/?#]*@)\//, `$1${STAND_IN_HOST}/`);
    try {
      return { parsed: new URL(withHost), standIn: withHost !== url };
    } catch {
      return undefined;
    }
  }
}
