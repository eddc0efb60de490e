import { KEY_ID_LENGTH, KEY_SECRET_LENGTH } from "../auth/keys.ts";
import { urlPath } from "../auth/url-path.ts";

/**
 * What of a text may be shown where it goes: logs (our keys, the deployment's own secrets, in
 * every decoded form of a client-chosen path or model name) and clients (an upstream's error
 * message, which may quote a provider's key or a URL's query).
 */

/** Replaces anything shaped like one of our keys, for text that may end up in logs. Redacting twice changes nothing. */
export function redactKeys(text: string): string {
  // `+`: the prefix alone (`sk-gs-<id>_<secret>` in a hint) holds nothing secret.
  return text.includes("sk-gs-") ? text.replace(/sk-gs-(?!\[redacted\])[A-Za-z0-9_]+/g, "sk-gs-[redacted]") : text;
}

/** A key without its prefix exactly as keys.ts makes it, `<id>_<secret>`, a run of its own: not where the secret is 32 lowercase hex (a base62 one is, with a chance of about 1e-19). */
const EXACT_BARE_KEY = `[0-9A-Za-z]{${KEY_ID_LENGTH}}_(?![0-9a-f]{${KEY_SECRET_LENGTH}})[0-9A-Za-z]{${KEY_SECRET_LENGTH}}(?![A-Za-z0-9])`;
const BARE_KEY_AS_MADE = new RegExp(`(?<![A-Za-z0-9])${EXACT_BARE_KEY}`, "g");
const HOLDS_BARE_KEY_AS_MADE = new RegExp(BARE_KEY_AS_MADE.source);

/**
 * A key without its prefix (`<id>_<secret>`), or its secret alone: the prefix is public and the
 * id is listed, so either is as good as the key. Each shape is a run of letters and digits (what
 * is glued to a key is hidden with it), in one pass over the text:
 * - `<id>_<secret>` as keys are made (EXACT_BARE_KEY).
 * - A run holding `<id>_<secret>` glued to letters or digits on either side
 *   (`/v1/models/<id>_<secret>x`, a model `<id>_<secret>0`): 12 or more letters or digits, a `_`
 *   and 32 or more, whose first 32 (the secret) hold both an uppercase and a lowercase letter, as
 *   a base62 secret does but with a chance of about 6e-8 (2 × (36/62)^32). One-case names joined
 *   by a `_` (`llama31instruct_customersupportfinetunemerged0102`) and hashes stay.
 * - A run of exactly 32, the secret alone: not 32 lowercase hex digits (an Azure fine-tune's id, a
 *   UUID without hyphens), which a base62 secret is with a chance of about 1e-19.
 * - A longer run, the secret glued to letters or digits (`/v1/models/x<secret>`; which 32 of it
 *   are the secret cannot be told): only when it holds both an uppercase and a lowercase letter,
 *   as a base62 secret does but with a chance of about 6e-8. Hashes (40 or 64 hex digits, in
 *   either case), a long word in one case and digits stay. A name the configuration serves may be
 *   such a run (a LoRA's `AcmeCustomerSupportAdapterV2Final`): it is shown (redactLoggedKeys'
 *   `served`), a client's name that is not served is some token.
 * Linear and cheap on every logged line: each shape starts only where a run does (the lookbehind,
 * checked first), a run shorter than 12 is passed over at once, and each looks at its run alone.
 */
const BARE_KEY = new RegExp(
  `(?<![A-Za-z0-9])(?=[0-9A-Za-z]{12})(?:${EXACT_BARE_KEY}|[0-9A-Za-z]{12,}_(?=[0-9a-z]{0,31}[A-Z])(?=[0-9A-Z]{0,31}[a-z])[0-9A-Za-z]{32,}` +
    "|(?![0-9a-f]{32}(?![A-Za-z0-9]))[0-9A-Za-z]{32}(?![A-Za-z0-9])|(?=[0-9a-z]*[A-Z])(?=[0-9A-Z]*[a-z])[0-9A-Za-z]{33,})",
  "g",
);

/**
 * Whether a text holds one of our keys as keys.ts makes them: with its prefix, or without it
 * (`<id>_<secret>`, a run of its own). Not the log's guesses at a key glued to other letters or
 * a secret alone (BARE_KEY), which a model's or a tier's name may look like: what SHIM_CONFIG's
 * problems call a key (config-file.ts), and shown-value.ts never shows.
 */
export function holdsKey(text: string): boolean {
  return text.includes("sk-gs-") || (text.length > KEY_ID_LENGTH + KEY_SECRET_LENGTH && HOLDS_BARE_KEY_AS_MADE.test(text));
}

/** redactKeys, and holdsKey's `<id>_<secret>`: our keys as made, hidden; the log's guesses (BARE_KEY) left. */
export function redactKeysAsMade(text: string): string {
  const prefixed = redactKeys(text);
  return prefixed.length <= KEY_ID_LENGTH + KEY_SECRET_LENGTH ? prefixed : prefixed.replace(BARE_KEY_AS_MADE, "[redacted]");
}

/** The names the configuration serves (config.models: the served model and providers), or null without a model list. */
export type ServedModels = ReadonlyMap<string, unknown> | null;

/**
 * redactKeys, and a key sent without its prefix, for what the shim logs of a client's path or
 * model name, and for SHIM_CONFIG's messages. Not in the messages a client sees, which quote its
 * own model as sent. A run that lies within a name the configuration serves (`served`) is that
 * name's, public in /v1/models: shown. It is looked for only where a run matched (rarely), so
 * every other line costs nothing more.
 */
export function redactLoggedKeys(text: string, served: ServedModels = null): string {
  const prefixed = redactKeys(text);
  // A secret is 32 characters: most paths and model names are shorter, and need no scan.
  if (prefixed.length < 32) return prefixed;
  return prefixed.replace(BARE_KEY, (run: string, at: number) => (served !== null && withinServed(prefixed, at, run.length, served) ? run : "[redacted]"));
}

/** Whether `text`'s characters from `at` (`length` of them) lie within one of the served names where it has one. */
function withinServed(text: string, at: number, length: number, served: NonNullable<ServedModels>): boolean {
  for (const name of served.keys()) {
    if (name.length < length) continue;
    // The first occurrence that could cover them: it does if it starts by `at`.
    const start = text.indexOf(name, Math.max(0, at + length - name.length));
    if (start !== -1 && start <= at) return true;
  }
  return false;
}

/**
 * A URL: its scheme and `//` (also right after a word: `token_https://…`), credentials up to the
 * last `@` before the host, host and path, and query and fragment. Linear: what the credentials'
 * part looks at, the path takes.
 */
const URL_PARTS = /([a-z][a-z0-9+.-]{0,15}:\/\/)(?:[^\s/?#'"<>`]*@)?([^\s?#'"<>`]*)([?#][^\s'"<>`]*)?/gi;
/** Not after a letter or digit: `risk-free`, `task-…` and `desk-…` hold no `sk-`. */
const START = "(?<![A-Za-z0-9])";
/**
 * Providers' key shapes, at their real lengths (their prefix kept, to say whose): OpenAI's,
 * Anthropic's (`sk-ant-`), DeepSeek's and a LiteLLM master key (`sk-`, 20 characters or more
 * holding a digit or both cases, so `sk-learn-classifier-weights` stays), Google's (`AIza` + 35),
 * Groq's (`gsk_` + 40 or more; theirs have 52), xAI's (`xai-` + 40 or more letters and digits;
 * theirs have 80, and a model alias such as `xai-grok-3-mini-fast` stays), Hugging Face's (`hf_`
 * + 30 or more; theirs have 34) and AWS access key ids (`AKIA`/`ASIA` + 16).
 */
const PROVIDER_KEY = new RegExp(`${START}(?:(sk-)([A-Za-z0-9_-]{20,})|(AIza)[A-Za-z0-9_-]{35,}|(gsk_)[A-Za-z0-9]{40,}|(xai-)[A-Za-z0-9]{40,}|(hf_)[A-Za-z0-9]{30,}|(AKIA|ASIA)[0-9A-Z]{16}(?![A-Za-z0-9]))`, "g");
/** An HTTP credential, any case, after a space or a tab: `Bearer <token>`, `Basic <base64>`. */
const AUTH_SCHEME = new RegExp(`${START}(bearer|basic)([ \t]{1,8})[A-Za-z0-9._~+/=-]{8,}`, "gi");
/** Between a name and its value: `=`, `: `, `": "`. */
const NAMED_SEP = String.raw`["']?[ \t]{0,4}[:=][ \t]{0,4}`;
/** What a named value starts with: `{…}` (a quoted JSON schema), `<|endoftext|>` or `[redacted]` is no secret. */
const VALUE_START = "[A-Za-z0-9+/_.~-]";
/**
 * A secret given by name, any case, also after a prefix (`AWS_SECRET_ACCESS_KEY=…`,
 * `OPENAI_API_KEY=…`, `x-api-key: …`): `api_key=…`, `api-key: …` (Azure's), `"api_key": "…"`,
 * `'password': '…'`, `token=…`, `secret_key: …`, `session_token=…`, `client_secret=…`, and
 * `Authorization: <any scheme> …` (not its scheme once its credential is hidden: a second pass
 * changes nothing). A quoted value runs to its closing quote (group 2 or 3), any
 * other to a space or a quote (group 4; punctuation ending it is the sentence's). Only a value
 * of 8 characters or more that starts with VALUE_START is a secret: `password: must be …`,
 * `{"secret": "uuid"}` stay. Linear: a name's prefix is looked at from its start only (not
 * after a letter or a digit), and a quoted value's scan ends at the next such quote, where no
 * other quoted value starts.
 */
const NAMED_SECRET = new RegExp(
  String.raw`(?<![A-Za-z0-9])((?:[A-Za-z0-9]*[_-])?(?:api[-_]?key|(?:access|auth|refresh|id|session)[-_]?token|client[-_]?secret|secret(?:[-_]?(?:access[-_]?)?key)?|token|password|passwd)${NAMED_SEP}|authorization${NAMED_SEP}(?![A-Za-z]{1,20}[ \t]{1,8}\[redacted\])(?:[A-Za-z]{1,20}[ \t]{1,8})?)` +
    String.raw`(?:"(${VALUE_START}[^"]{7,})"|'(${VALUE_START}[^']{7,})'|["']?(${VALUE_START}[^\s'"<>\`]{7,}))`,
  "gi",
);
/**
 * How much of an upstream's message is looked at: the client is shown at most 500 characters of
 * it. Redacting may shorten what comes first (a long query becomes `?…`), so the word the cut
 * falls in is dropped too: no secret is left half there to be shown.
 */
const UPSTREAM_TEXT_WINDOW = 4096;

/**
 * An upstream's message made fit for a client: the deployment's own secrets (`hideSecrets`,
 * secretRedactor: the upstream's key the shim sent it, which an upstream may quote when it
 * refuses it, and the admin token) hidden first, wherever they are, the request's model name
 * included: they have no shape to be found by. Then every URL without its query and fragment
 * (`?…` instead; LiteLLM's gemini/ provider sends its key as `?key=…`, and httpx quotes the URL
 * in its errors, LiteLLM issue #24902) or credentials before an `@`, scheme, host and path kept;
 * providers' keys, credentials and named secrets (above) and our keys redacted wherever they
 * are, percent-encoded or not (then shown decoded). `model`, the request's own model name, is
 * never hidden for its shape where it is quoted. Only the first UPSTREAM_TEXT_WINDOW characters
 * are looked at (and kept), in time linear in them; a secret that window ends in is hidden too.
 * The rest is left as it was said.
 */
export function redactUpstreamSecrets(text: string, model = "", hideSecrets: SecretHider = same): string {
  const cut = text.length > UPSTREAM_TEXT_WINDOW;
  const window = cut ? `${hideSecrets(wholeWords(text.slice(0, UPSTREAM_TEXT_WINDOW)), true)}…` : hideSecrets(text);
  const hidden = hideSecretShapes(window, model);
  if (!hidden.includes("%")) return hidden;
  // Encoded (a URL quoted in another's query, `Bearer%20…`, `key%3D…`): the as-sent form with its
  // secrets hidden is decoded, and what decoding shows hidden too. Decoding never brings back what
  // the first pass hid, and the second only hides more: nothing hidden in either form is shown.
  // (Decoding the message as sent would let `%20` end a value, `password=a%20b` showing ` b`.)
  // The deployment's secrets are looked for in every layer as it is decoded (and in what a layer
  // encoded too deeply is cut to): one found there means the decoded form is shown.
  let secretFound = false;
  const layer = decoded(hidden, (t, c) => {
    const h = hideSecrets(t, c);
    secretFound ||= h !== t;
    return h;
  });
  const decodedHidden = hideSecretShapes(layer, model);
  return decodedHidden === layer && !secretFound ? hidden : decodedHidden;
}

/** Text up to the last character no secret holds (a space or a quote): what follows may be part of one. */
function wholeWords(text: string): string {
  let end = text.length;
  while (end > 0 && !/[\s'"<>`]/.test(text[end - 1]!)) end--;
  return text.slice(0, end);
}

/** The punctuation ending `text`, which is the sentence's (`?key=…,`), found backwards: no regex may scan a run again from each of its characters. */
export function sentenceEnd(text: string): string {
  let start = text.length;
  while (start > 0 && ".,;:!)]}".includes(text[start - 1]!)) start--;
  return text.slice(start);
}

function hideSecretShapes(text: string, model: string): string {
  const urls = text.includes("://") ? text.replace(URL_PARTS, (_, scheme: string, path: string, query?: string) => `${scheme}${path}${query ? `?…${sentenceEnd(query)}` : ""}`) : text;
  return hideKeyShapes(urls, model);
}

/**
 * Whether a text holds a secret's shape other than a URL's parts: a provider's key, a credential or
 * a named secret (above), or one of our keys. For a value that a start-up problem would otherwise
 * show (shown-value.ts); a URL there is shown without its credentials and query already.
 */
export const holdsSecretShape = (text: string): boolean => holdsKey(text) || hideKeyShapes(text, "") !== text;

function hideKeyShapes(urls: string, model: string): string {
  // Named values first: `api_key=sk-…` is then hidden whole, not as `api_key=sk-[redacted]`.
  const named = replaceShapes(urls, NAMED_SECRET, model, (m) => {
    const [, , double, single, bare] = m;
    const quoted = double ?? single;
    if (quoted !== undefined) return `${m[0].slice(0, -quoted.length - 1)}[redacted]${m[0].at(-1)}`;
    const end = sentenceEnd(bare!);
    return bare!.length - end.length < 8 || bare!.includes("[redacted]") ? m[0] : `${m[0].slice(0, -bare!.length)}[redacted]${end}`;
  });
  const keys = replaceShapes(redactKeys(named), PROVIDER_KEY, model, (m) => {
    const [, sk, rest] = m;
    if (sk !== undefined && !/[0-9]/.test(rest!) && !(/[a-z]/.test(rest!) && /[A-Z]/.test(rest!))) return m[0];
    return `${m.slice(1).find((g, i) => g !== undefined && i !== 1)}[redacted]`;
  });
  // A Basic credential is base64 (`dXNlcjpw…`): `basic configuration` is a sentence.
  return replaceShapes(keys, AUTH_SCHEME, model, (m) => (/^basic$/i.test(m[1]!) && /^[a-z]+$/.test(m[0].slice(m[1]!.length + m[2]!.length)) ? m[0] : `${m[1]}${m[2]}[redacted]`));
}

/** `text` with each match of `pattern` replaced by `hide(match)`, except where it is within the request's model name. */
function replaceShapes(text: string, pattern: RegExp, model: string, hide: (m: RegExpExecArray) => string): string {
  const models: number[] = [];
  if (model !== "" && model.length <= 256) for (let at = text.indexOf(model); at !== -1; at = text.indexOf(model, at + 1)) models.push(at);
  let out = "";
  let done = 0;
  for (const m of text.matchAll(pattern)) {
    const end = m.index + m[0].length;
    if (models.some((at) => at <= m.index && end <= at + model.length)) continue;
    out += text.slice(done, m.index) + hide(m);
    done = end;
  }
  return done === 0 ? text : out + text.slice(done);
}

/** Longest model name looked at for the log: redacting and decoding cost grows with it, and 200 characters are shown. */
const MODEL_LOOKED_AT = 400;

/**
 * `text` without the run of key characters it ends in (letters, digits, `_`, and `%` for their
 * percent-encoded forms), for text cut before it is redacted: a key cut short (a bare key's
 * secret of 31 of its 32 characters, or ending in a `%4` that no longer decodes) matches no key
 * pattern, and shrinking what precedes it (`sk-gs-…` to `sk-gs-[redacted]`) brought it within
 * the characters logged. Backwards, as wholeWords: no regex scans a run again from each of its
 * characters.
 */
function withoutKeyTail(text: string): string {
  let end = text.length;
  while (end > 0 && /[A-Za-z0-9_%]/.test(text[end - 1]!)) end--;
  return text.slice(0, end);
}

/**
 * A client-chosen model name as every log line shows it: keys and the deployment's secrets
 * (`hideSecrets`, secretRedactor) redacted before the cut to at most 200 characters, so no
 * secret is left half shown. Only its first MODEL_LOOKED_AT characters are looked at. Without a
 * model list, the upstream may accept any name. As sent, unless a key or a secret shows in it
 * once decoded (or it is encoded too deeply to tell): then decoded, with them hidden. A name the
 * configuration serves (`served`, ctx.config.models) is never taken for a key, nor what of a
 * client's name lies within one.
 */
export function loggedModel(model: string, hideSecrets: SecretHider, served: ServedModels = null): string {
  // A name the configuration serves is the operator's (listed by /v1/models), however it looks:
  // one lookup, no scan for keys (at most 256 characters: nothing is cut before hideSecrets).
  if (served?.has(model)) return hideSecrets(model).slice(0, 200);
  const cut = model.length > MODEL_LOOKED_AT;
  const text = cut ? model.slice(0, MODEL_LOOKED_AT) : model;
  const hidden = hiddenModel(text, hideSecrets, cut, served);
  // Nothing hidden: its first 200 characters as sent, each looked at with 200 more after it, more
  // than a key's length (and a secret the cut falls in is hidden by secretRedactor's own check).
  if (hidden === layers(text).at(-1)) return model.slice(0, 200);
  // Something was, and what precedes the cut may have shrunk (`sk-gs-…` to `sk-gs-[redacted]`):
  // the key characters the cut falls in are dropped first (withoutKeyTail), else a key cut short,
  // which matches no key pattern, could come within the 200 shown.
  return (cut ? hiddenModel(withoutKeyTail(text), hideSecrets, cut, served) : hidden).slice(0, 200);
}

function hiddenModel(text: string, hideSecrets: SecretHider, cut: boolean, served: ServedModels): string {
  // Nothing encoded (every name a client sends in practice): one pass, the same result.
  return redactLoggedKeys(text.includes("%") ? decoded(text, hideSecrets, cut) : hideSecrets(text, cut), served);
}

/**
 * Hides the deployment's secrets in text bound for a log. `cut`: the text was cut short of what
 * the client sent, so it may end in the beginning of a secret, which matches no whole form.
 */
export type SecretHider = (text: string, cut?: boolean) => string;

/**
 * Redacts the deployment's own secrets (the admin token, the upstream's key) from text a client
 * chose (a path, a model name) before it is logged: unlike API keys they have no prefix to find.
 * Each is hidden as configured and in each of its decoded forms, however short (percent-encoded
 * ASCII, as logged paths are decoded: a token may hold any printable ASCII, `%41` included).
 * Secrets too short to mean anything in a log (none are, as configured) are left alone. Text
 * that was cut loses its end too where that end is the beginning of one of them (a form with a
 * `-` in it outlasts withoutKeyTail: `lm-QQQ…-` of `lm-QQQ…-ZZZ…`).
 */
export function secretRedactor(secrets: readonly (string | null)[]): SecretHider {
  const forms = new Set(secrets.filter((s): s is string => s !== null && s.length >= 8).flatMap((s) => layers(s)));
  const hidden = [...forms].sort((a, b) => b.length - a.length); // a longer form before one inside it
  if (hidden.length === 0) return (text) => text;
  return (text, cut = false) => {
    const whole = hidden.reduce((t, secret) => (t.includes(secret) ? t.replaceAll(secret, "[redacted]") : t), text);
    if (!cut) return whole;
    // A cut inside a percent-encoding (`%5`) leaves it undecoded in every layer: looked behind.
    const before = whole.replace(/%[0-9A-Fa-f]?$/, "");
    const begun = Math.max(0, ...hidden.map((secret) => beginningAtEnd(before, secret)));
    return begun === 0 ? whole : `${before.slice(0, -begun)}[redacted]`;
  };
}

/** The length of the longest beginning of `secret` (short of all of it) that `text` ends in, or 0. */
function beginningAtEnd(text: string, secret: string): number {
  const last = text.at(-1);
  for (let n = Math.min(secret.length - 1, text.length); n > 0; n--) if (secret[n - 1] === last && text.endsWith(secret.slice(0, n))) return n;
  return 0;
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
 * The last of `text`'s layers, with `hide` given every one (`cut`: `text` was cut, see
 * SecretHider). What is still encoded after three layers (no client encodes deeper, but anyone
 * may) is cut, with the key characters before it (withoutKeyTail) and the beginning of a secret
 * it ends in: decoded once more by whoever reads the log, it could be a key or a secret.
 */
function decoded(text: string, hide: SecretHider = same, cut = false): string {
  const last = layers(text, (layer) => hide(layer, cut)).at(-1)!;
  const deeper = last.search(/%[0-7][0-9A-Fa-f]/);
  // Cut, then redacted: a key whose end is still encoded is dropped whole, not shown but for its end.
  return deeper === -1 ? last : `${hide(withoutKeyTail(last.slice(0, deeper)), true)}[encoded too deeply]`;
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
 * decoded (each layer costs milliseconds at 64 KiB) and only its length is shown. What lies
 * within a name the configuration serves (`served`: `/v1/models/<name>`) is not taken for a key.
 */
export function redactedPath(url: string, hideSecrets: SecretHider, served: ServedModels = null): string {
  if (url.length > LONGEST_LOGGED_URL) return `[a URL of ${url.length} characters, not logged]`;
  // Nothing encoded (the request path of nearly every line): one pass, the same result.
  if (!url.includes("%")) return redactLoggedKeys(urlPath(hideSecrets(url)), served);
  const hidden = decoded(url, hideSecrets);
  const path = hidden === decoded(url) ? decoded(urlPath(url)) : urlPath(hidden);
  return redactLoggedKeys(path, served);
}
