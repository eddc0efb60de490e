import { hash, randomBytes, timingSafeEqual } from "node:crypto";
import { urlPath } from "./text.ts";

/**
 * API keys: `sk-gs-` + 12-character base62 id + `_` + 32-character base62 secret. The id is
 * public (it names the key in admin listings and usage rows); the store keeps only
 * `sha256:<hex>` of the whole key. The plaintext exists only in the 201 response that creates it.
 */
export const KEY_PREFIX = "sk-gs-";
/** Base62 characters of a key's public id and of its secret (the Pulumi program makes keys too). */
export const KEY_ID_LENGTH = 12;
export const KEY_SECRET_LENGTH = 32;
const KEY_LEN = KEY_PREFIX.length + KEY_ID_LENGTH + 1 + KEY_SECRET_LENGTH;
const ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const KEY_SHAPE = /^sk-gs-([0-9A-Za-z]{12})_[0-9A-Za-z]{32}$/;

/** Uniform base62 from crypto random bytes (rejection sampling: 248 = 4 × 62, no modulo bias). */
export function randomBase62(length: number): string {
  let out = "";
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      if (byte < 248) out += ALPHABET[byte % 62];
      if (out.length === length) break;
    }
  }
  return out;
}

export function generateKey(): { id: string; key: string; hash: string } {
  const id = randomBase62(KEY_ID_LENGTH);
  const key = `${KEY_PREFIX}${id}_${randomBase62(KEY_SECRET_LENGTH)}`;
  return { id, key, hash: hashKey(key) };
}

const KEY_ID_SHAPE = /^[0-9A-Za-z]{12}$/;

/** Whether a string has the shape of a key's public id (12 base62 characters). */
export function isKeyId(id: string): boolean {
  return KEY_ID_SHAPE.test(id);
}

/** The key's id, or undefined when the string does not have the shape of one of our keys. */
export function parseKeyId(key: string): string | undefined {
  if (key.length !== KEY_LEN) return undefined;
  return KEY_SHAPE.exec(key)?.[1];
}

export function hashKey(key: string): string {
  return `sha256:${hash("sha256", key, "hex")}`;
}

/** Constant-time comparison of the presented key's hash with the stored one. */
export function verifyKey(key: string, storedHash: string): boolean {
  const a = Buffer.from(hashKey(key), "latin1");
  const b = Buffer.from(storedHash, "latin1");
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * Constant-time comparison of two secrets of any length: both are hashed first, so the time
 * taken says nothing about the length or a common prefix.
 */
export function secretsEqual(presented: string, expected: string): boolean {
  const a = hash("sha256", presented, "buffer");
  const b = hash("sha256", expected, "buffer");
  return timingSafeEqual(a, b);
}

/** The token of an `Authorization: Bearer <token>` header, or undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  if (!header || header.length < 8 || header.length > 4096) return undefined;
  if (!/^bearer /i.test(header)) return undefined;
  const token = header.slice(7).trim();
  return token === "" ? undefined : token;
}

/** Replaces anything shaped like one of our keys, for text that may end up in logs. Redacting twice changes nothing. */
export function redactKeys(text: string): string {
  return text.includes("sk-gs-") ? text.replace(/sk-gs-(?!\[redacted\])[A-Za-z0-9_]*/g, "sk-gs-[redacted]") : text;
}

/** A URL: its scheme and `//`, credentials before an `@`, host and path, and query and fragment. */
const URL_PARTS = /\b([a-z][a-z0-9+.-]{0,15}:\/\/)(?:[^\s/?#@'"<>`]*@)?([^\s?#'"<>`]*)([?#][^\s'"<>`]*)?/gi;
/**
 * Providers' key shapes (their prefix kept, to say whose): OpenAI's, Anthropic's (`sk-ant-`),
 * DeepSeek's and LiteLLM's master key (`sk-`), Google's (`AIza`), Groq's (`gsk_`), xAI's (`xai-`);
 * and a bearer token: at least 8 characters after the prefix (real keys have 30 to 160; the
 * LiteLLM master key the kit makes, 48), so `sk-learn` is left alone, and so are words such as
 * `risk-free` (no word boundary before their `sk-`).
 */
const PROVIDER_KEY = /\b(sk-|AIza|gsk_|xai-)[A-Za-z0-9_-]{8,}|\b(Bearer )[A-Za-z0-9._~+/=-]{8,}/g;

/**
 * An upstream's message made fit for a client (and a log): every URL without its query and
 * fragment (`?…` instead; LiteLLM's gemini/ provider sends its key as `?key=…`, and httpx quotes
 * the URL in its errors, LiteLLM issue #24902) or credentials before an `@`, scheme, host and path
 * kept; providers' keys and ours redacted wherever they are. The rest is left as it was said.
 */
export function redactUpstreamSecrets(text: string): string {
  // Punctuation ending the query (`?key=…,` in a sentence) is the sentence's.
  const urls = text.includes("://") ? text.replace(URL_PARTS, (_, scheme: string, path: string, query?: string) => `${scheme}${path}${query ? `?…${/[.,;:!)\]}]*$/.exec(query)![0]}` : ""}`) : text;
  return redactKeys(urls).replace(PROVIDER_KEY, (_, prefix?: string, bearer?: string) => `${prefix ?? bearer}[redacted]`);
}

/**
 * A client-chosen model name as every log line shows it: keys and the deployment's secrets
 * (`hideSecrets`, secretRedactor) redacted before the cut, so no secret is left half shown, and
 * at most 200 characters. Without a model list, the upstream may accept any name. As sent,
 * unless a key or a secret shows in it once decoded (or it is encoded too deeply to tell): then
 * decoded, with them hidden.
 */
export function loggedModel(model: string, hideSecrets: (text: string) => string): string {
  const text = model.slice(0, 400);
  // Nothing encoded (every name a client sends in practice): one pass, the same result.
  const hidden = redactKeys(text.includes("%") ? decoded(text, hideSecrets) : hideSecrets(text));
  return (hidden === layers(text).at(-1) ? text : hidden).slice(0, 200);
}

/**
 * Redacts the deployment's own secrets (the admin token, the upstream's key) from text a client
 * chose (a path, a model name) before it is logged: unlike API keys they have no prefix to find.
 * Each is hidden as configured and in each of its decoded forms, however short (percent-encoded
 * ASCII, as logged paths are decoded: a token may hold any printable ASCII, `%41` included).
 * Secrets too short to mean anything in a log (none are, as configured) are left alone.
 */
export function secretRedactor(secrets: readonly (string | null)[]): (text: string) => string {
  const forms = new Set(secrets.filter((s): s is string => s !== null && s.length >= 8).flatMap((s) => layers(s)));
  const hidden = [...forms].sort((a, b) => b.length - a.length); // a longer form before one inside it
  if (hidden.length === 0) return (text) => text;
  return (text) => hidden.reduce((t, secret) => (t.includes(secret) ? t.replaceAll(secret, "[redacted]") : t), text);
}

const ENCODED_ASCII = /%([0-7][0-9A-Fa-f])/g;
const decodeAscii = (text: string) => text.replace(ENCODED_ASCII, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
const same = (text: string) => text;

/**
 * `text`, then up to three layers of its percent-encoded ASCII decoded, each a form of its own;
 * `each` is given every layer as it is decoded (and may hide what it shows before the next).
 * Non-ASCII stays encoded: it is never part of a key or a secret.
 */
function layers(text: string, each: (layer: string) => string = same): string[] {
  const forms = [each(text)];
  for (let i = 0; i < 3 && forms.at(-1)!.includes("%"); i++) {
    const next = decodeAscii(forms.at(-1)!);
    if (next === forms.at(-1)) break;
    forms.push(each(next));
  }
  return forms;
}

/**
 * The last of `text`'s layers, with `each` given every one. What is still encoded after three
 * layers (no client encodes deeper, but anyone may) is cut: decoded once more by whoever reads
 * the log, it could be a key or a secret.
 */
function decoded(text: string, each: (layer: string) => string = same): string {
  const last = layers(text, each).at(-1)!;
  const deeper = last.search(/%[0-7][0-9A-Fa-f]/);
  return deeper === -1 ? last : `${last.slice(0, deeper)}[encoded too deeply]`;
}

/** nginx passes request lines of at most 8 KiB; a longer URL came straight to the shim. */
const LONGEST_LOGGED_URL = 16_384;

/**
 * A request path as logs (and a 404's message) show it: without the query, its percent-encoded
 * ASCII decoded (up to three layers) and keys redacted. A key spelt `%73k-gs-…` or
 * `sk-gs-<id>%5F<secret>` would otherwise pass the pattern whole, or leave its secret beside the
 * redaction. The deployment's secrets (`hideSecrets`, secretRedactor) are looked for in the whole
 * URL, as sent and in each layer as it is decoded, before the query is cut: one may hold a `%`
 * or a `?`, and a client may have encoded some of it and left a `?` as it was. Where one
 * showed, the path is cut from the URL with it hidden (a `%3F` before the query then cuts it
 * too: the line shows less, never part of a secret). A URL longer than nginx passes is not
 * decoded (each layer costs milliseconds at 64 KiB) and only its length is shown.
 */
export function redactedPath(url: string, hideSecrets: (text: string) => string): string {
  if (url.length > LONGEST_LOGGED_URL) return `[a URL of ${url.length} characters, not logged]`;
  // Nothing encoded (the request path of nearly every line): one pass, the same result.
  if (!url.includes("%")) return redactKeys(urlPath(hideSecrets(url)));
  const hidden = decoded(url, hideSecrets);
  const path = hidden === decoded(url) ? decoded(urlPath(url)) : urlPath(hidden);
  return redactKeys(path);
}
