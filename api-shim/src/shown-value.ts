import { holdsSecretShape } from "./observability/redaction.ts";

/**
 * How a start-up problem shows a setting's value that is not valid: the one place that decides it,
 * for every variable (config.ts, database-url.ts) and SHIM_CONFIG's fields (config-file.ts,
 * problem). The problems go to stderr (docker compose logs), and a value in the wrong variable is
 * often a secret meant for another: the upstream's key and URL swapped, a password alone as
 * SHIM_DATABASE_URL. So a value that does not parse as what its variable wants is shown only by
 * its first few characters and its length (enough to tell which value it is, not enough to use
 * it), and one holding a secret, by shape or as configured, not at all.
 */

/** A URL's scheme and `//`, of at most 16 characters (as the log redaction reads one): a value with one is shown as a URL. */
export const URL_SCHEME = /^[a-z][a-z0-9+.-]{0,15}:\/\//i;

/** The deployment's own secrets by the variable that holds them (SHIM_ADMIN_TOKEN, SHIM_UPSTREAM_API_KEY): they have no shape to be found by. */
export type NamedSecrets = Readonly<Record<string, string | null>>;

/** A configured secret this long or longer is looked for inside a value; a shorter one only as the whole value. */
const SECRET_INSIDE = 8;

/**
 * What `text` is called where it is not repeated, or null when it holds no secret: one of the
 * deployment's (`secrets`), or a secret's shape (holdsSecretShape: one of our keys, a provider's, a
 * `Bearer`/`Basic` credential, a named `password=…`, as they are hidden from logs and clients).
 */
export function secretIn(text: string, secrets: NamedSecrets = {}): string | null {
  for (const [name, secret] of Object.entries(secrets)) {
    if (secret === null || secret === "") continue;
    if (text === secret) return `${name}'s value`;
    if (secret.length >= SECRET_INSIDE && text.includes(secret)) return `a value holding ${name}'s`;
  }
  if (holdsSecretShape(text)) return "a value shaped like an API key, a token or a password";
  return null;
}

/** The longest value shown whole: none is a secret (the log redaction takes none shorter than 8 for one either: secretRedactor, NAMED_SECRET). */
const SHOWN_WHOLE = 7;
/** The most characters shown of a longer value, and never more than a quarter of it. */
const PREFIX = 4;

/**
 * `value` as a problem shows it, in place of a quoted value: `"abc"` (short), `"Zq9X…" (16
 * characters)`, or for a secret `SHIM_ADMIN_TOKEN's value (not repeated)`. `parsed`: the value's
 * form to show when it did parse as what the variable wants and was refused for another reason
 * (a URL with a query, shown without it by shownUrl; a CIDR that covers every address), shown
 * whole unless it holds a secret.
 */
export function shownValue(value: string, secrets: NamedSecrets = {}, parsed?: string): string {
  const secret = secretIn(parsed ?? value, secrets);
  if (secret !== null) return `${secret} (not repeated)`;
  if (parsed !== undefined) return JSON.stringify(parsed);
  const characters = [...value];
  if (characters.length <= SHOWN_WHOLE) return JSON.stringify(value);
  // Never past a `:`, `=`, `@` or white space either: a password may start right after one (`app:s3cret@db`).
  const prefix = characters.slice(0, Math.min(PREFIX, Math.floor(characters.length / 4))).join("");
  const cut = prefix.search(/[:=@\s]/);
  return `${JSON.stringify(`${cut === -1 ? prefix : prefix.slice(0, cut + 1)}…`)} (${characters.length} characters)`;
}

/**
 * A setting that may be a URL as a problem shows it: one with a scheme as `showUrl` shows it
 * (config.ts shownUrl, database-url.ts redactUrl: credentials and query hidden), anything else as
 * shownValue shows a value that is not valid; a secret in either, not at all.
 */
export function shownUrlOrValue(value: string, secrets: NamedSecrets, showUrl: (url: string) => string): string {
  return shownValue(value, secrets, URL_SCHEME.test(value) ? showUrl(value) : undefined);
}
