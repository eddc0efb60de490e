// The credentials the scripts send as `Authorization: Bearer …` (the admin token, an API key) are
// checked before any request, in this one place: fetch refuses a header value holding a control
// character, and its error (`Headers.append: "Bearer sk-gs-…" is an invalid header value`) repeats
// the value, credential included, where a script would print it.
import { strayCharacter } from "./cli.ts";

/**
 * What a credential is made of: printable ASCII (the shim's keys and the Pulumi program's admin
 * tokens are letters, digits, `-` and `_`; SHIM_ADMIN_TOKEN is set by hand on an own host). A
 * typographic dash or quote pasted into one could not even be put in a header; fetch would
 * refuse it with a TypeError about ByteStrings.
 */
const CREDENTIAL_CHARACTER = /^[\x20-\x7e]$/;

/**
 * A credential without whitespace at its ends (a CRLF env file, a line read from a file), which
 * is not part of it: fetch strips it from a header anyway, so such credentials always worked.
 */
export function trimCredential(value: string): string {
  return value.replace(/^[\t\n\r ]+|[\t\n\r ]+$/g, "");
}

/**
 * The first character of a (trimmed) credential that no credential holds, as strayCharacter names
 * it: `"\n" (U+000A) at character 52`, never the credential itself. Undefined when there is none.
 */
export function credentialStray(value: string): string | undefined {
  return strayCharacter(value, CREDENTIAL_CHARACTER);
}
