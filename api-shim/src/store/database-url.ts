/**
 * SHIM_DATABASE_URL, read once: `sqlite:<path>` (relative to the working directory),
 * `sqlite::memory:`, or `postgres://…` / `postgresql://…` (a libpq connection URL). Kept apart
 * from the stores so the configuration can check it with every other setting at start, without
 * loading a database driver.
 */
export type DatabaseTarget = { kind: "postgres"; url: string } | { kind: "sqlite"; path: string };

/** The store a URL names; throws an Error whose message names SHIM_DATABASE_URL and what is allowed. */
export function parseDatabaseUrl(url: string): DatabaseTarget {
  if (url.startsWith("postgres://") || url.startsWith("postgresql://")) return { kind: "postgres", url };
  if (!url.startsWith("sqlite:")) {
    throw new Error(`SHIM_DATABASE_URL: ${JSON.stringify(redactUrl(url))} is not valid; expected sqlite:<path>, sqlite::memory: or postgres://…`);
  }
  const path = url.slice("sqlite:".length).replace(/^\/\/(?=\/)/, "");
  if (path === "") throw new Error("SHIM_DATABASE_URL: sqlite: needs a path, e.g. sqlite:./data/shim.db");
  return { kind: "sqlite", path };
}

/**
 * The URL with any password replaced, for logs and error messages. A password may hold `@`, `/`
 * or `?` unencoded, so everything up to the user info's last possible end is hidden: better a
 * host hidden too than a password's tail shown.
 */
export function redactUrl(url: string): string {
  let out = url;
  const scheme = url.indexOf("://");
  if (scheme !== -1) {
    const start = scheme + 3;
    const at = userInfoEnd(url, start);
    const colon = url.indexOf(":", start);
    if (at !== -1 && colon !== -1 && colon < at) out = `${url.slice(0, colon)}:***${url.slice(at)}`;
  }
  return out.replace(/([?&]password=)[^&]*/gi, "$1***");
}

/**
 * The `@` that may end the user info, -1 if none: the later of libpq's reading (the first `@`
 * before any `/`, so `app:s3cr?t@host` has user info `app:s3cr?t`) and the last `@` that is not in
 * a query parameter's value (`?application_name=a@b` has no user info; `p@ss/w@rd9@db` does).
 */
function userInfoEnd(url: string, start: number): number {
  const slash = url.indexOf("/", start);
  const first = url.indexOf("@", start);
  let end = first !== -1 && (slash === -1 || first < slash) ? first : -1;
  for (let at = url.indexOf("@", start); at !== -1; at = url.indexOf("@", at + 1)) {
    const before = url.slice(start, at);
    const param = before.slice(Math.max(before.lastIndexOf("?"), before.lastIndexOf("&")));
    if (!(before.includes("?") && param.includes("="))) end = Math.max(end, at);
  }
  return end;
}

const STAND_IN_HOST = "gs-no-host.invalid";
const STAND_IN_AUTHORITY = new RegExp(`^(postgres(?:ql)?://[^/?#]*?)${STAND_IN_HOST.replaceAll(".", "\\.")}/`);

/**
 * SHIM_DATABASE_URL for the driver. `sslmode` is read as libpq reads it (pg on its own takes
 * `require` as `verify-full`, refusing a server `psql` reaches with the same URL), and a libpq
 * `options` parameter is taken out to be joined with the store's own (pg would let the URL's
 * replace them: no statement timeout, synchronous commits).
 */
export function driverUrl(url: string): { connectionString: string; urlOptions: string } {
  // libpq's form with credentials and no host (`postgres://user:pw@/db?host=/run/postgresql`)
  // is no WHATWG URL: as pg does, only when the URL does not parse, a stand-in host goes into its
  // authority for the parse and is taken out of the authority after.
  let parsed: URL;
  let standIn = false;
  try {
    parsed = new URL(url);
  } catch {
    const withHost = url.replace(/^(postgres(?:ql)?:\/\/[^/?#]*@)\//, `$1${STAND_IN_HOST}/`);
    try {
      parsed = new URL(withHost);
      standIn = withHost !== url;
    } catch {
      return { connectionString: url, urlOptions: "" }; // the driver reports it, without the URL
    }
  }
  const urlOptions = parsed.searchParams.get("options") ?? "";
  parsed.searchParams.delete("options");
  if (!parsed.searchParams.has("uselibpqcompat")) parsed.searchParams.set("uselibpqcompat", "true");
  const connectionString = parsed.toString();
  return { connectionString: standIn ? connectionString.replace(STAND_IN_AUTHORITY, "$1/") : connectionString, urlOptions };
}
