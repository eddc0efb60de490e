// Argument parsing, output and error handling shared by the operator scripts, so every script
// reports a bad flag, prints --help and exits the same way.
import { parseArgs, type ParseArgsConfig } from "node:util";
import { decimalNumber } from "../../infra/config/checks.ts";
import { codePointLabel } from "../../api-shim/src/names.ts";
import { readInstant } from "../../api-shim/src/requests/period.ts";
import { closestName } from "./closest-name.ts";
import { EXIT_CODES_USAGE, exitCodeOf, UsageError } from "./exit-codes.ts";
import { typographicDashFlag } from "./typographic-dash.ts";
import { terminalText } from "./terminal-text.ts";

// Re-exported: every script imports what it prints and throws from here.
export { EXIT_CODES_USAGE, UsageError };

/** Where a script prints. Tests pass their own to read what a user would see. */
export interface Io {
  /** A line (a newline is added). */
  out(text: string): void;
  err(text: string): void;
  /** Bytes as they are, no newline added: a CSV with its own CRLF line ends. */
  write(text: string): void;
}

// Lines (for the operator, or JSON) escape what a terminal acts on (terminal-text.ts); bytes (a
// CSV) only on a terminal: piped to a file, they stay as the API sent them.
export const consoleIo: Io = {
  out: (text) => console.log(terminalText(text)),
  err: (text) => console.error(terminalText(text)),
  write: (text) => { process.stdout.write(process.stdout.isTTY ? terminalText(text) : text); },
};

/** An Io that keeps every line, for tests and for scripts that print a report at the end. */
export function memoryIo(): Io & { stdout: string[]; stderr: string[]; text(): string } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return {
    stdout, stderr,
    out: (t) => { stdout.push(t); },
    err: (t) => { stderr.push(t); },
    write: (t) => { stdout.push(t); },
    text: () => [...stdout, ...stderr].join("\n"),
  };
}

type Options = NonNullable<ParseArgsConfig["options"]>;

/**
 * node:util parseArgs with `--help` added and its errors turned into UsageErrors that end with
 * the usage text, except an unknown flag: one line with the flag it is close to and a pointer to
 * --help (unknownOption). `rejected` maps flags that must never be accepted to the reason (e.g. an
 * admin token given on the command line would land in shell history). A flag that is not
 * `multiple` given twice is refused: parseArgs keeps the last one, so `top-up --key A --amount 5
 * --key B --amount 50` would credit B 50 and say nothing of A. `known`: flags the script took out
 * of argv itself (reap-expired's `--force`), so a typo of one is still suggested. `suggest`: the
 * flags a typo may be taken for, when fewer than all do (manage-keys: those its command takes).
 */
export function parseFlags<O extends Options>(
  argv: readonly string[],
  options: O,
  usage: string,
  config: { positionals?: boolean; rejected?: Record<string, string>; known?: readonly string[]; suggest?: readonly string[] } = {},
) {
  for (const arg of argv) {
    const name = arg.startsWith("--") ? arg.slice(2).split("=")[0]! : undefined;
    const reason = name === undefined ? undefined : config.rejected?.[name];
    if (reason) throw new UsageError(`--${name} is not accepted: ${reason}`);
  }
  const all = { ...options, help: { type: "boolean", short: "h" } } as const;
  const pasted = typographicDashFlag(argv, all);
  if (pasted !== undefined) throw new UsageError(pasted);
  const args = dashValuesJoined(argv, all); // its own one-line UsageError, not wrapped in the usage
  let parsed;
  try {
    parsed = parseArgs({ args, options: all, allowPositionals: config.positionals ?? false, strict: true, tokens: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const unknown = code === "ERR_PARSE_ARGS_UNKNOWN_OPTION" ? /^Unknown option '(.*?)'(?:\. |$)/.exec((err as Error).message)?.[1] : undefined;
    if (unknown !== undefined) throw new UsageError(unknownOption(unknown, config.suggest ?? [...Object.keys(all), ...(config.known ?? [])], usage));
    // `--amount` without its value (or `--json=1`): one line, as an unknown flag; in the whole usage the flag is lost.
    if (code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") throw new UsageError(`${invalidValue((err as Error).message)}. (${helpPointer(usage)})`);
    const extra = code === "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL" ? `\n${npmDashHint(usage)}` : "";
    throw new UsageError(`${(err as Error).message}${extra}\n\n${usage}`);
  }
  const { values, positionals, tokens } = parsed;
  const times = new Map<string, number>();
  for (const t of tokens) if (t.kind === "option" && !all[t.name]?.multiple) times.set(t.name, (times.get(t.name) ?? 0) + 1);
  const repeated = [...times].filter(([, n]) => n > 1);
  if (repeated.length > 0) {
    const list = repeated.map(([name, n], i) => `--${name} ${i === 0 ? "is given " : ""}${n} times`).join(", ");
    throw new UsageError(`${list}: give ${repeated.length === 1 ? "it" : "each"} once`);
  }
  return { values, positionals };
}

/**
 * A flag the script does not take, in one line: the known flag it is close to (a typo), and
 * where the options are listed. Not parseArgs' own message, whose advice to write a positional
 * after `--` misleads an npm user, nor the whole usage, in which the typo is lost.
 */
function unknownOption(flag: string, known: readonly string[], usage: string): string {
  const meant = flag.startsWith("--") ? closestName(flag.slice(2), known) : undefined;
  return `Unknown option '${flag}'.${meant === undefined ? "" : ` Did you mean --${meant}?`} (${helpPointer(usage)})`;
}

/** Where the options are listed: `npm run <script> -- --help`, the script named by `usage`'s first line. */
function helpPointer(usage: string): string {
  const script = /npm run (\S+)/.exec(usage.split("\n")[0] ?? "")?.[1];
  return script === undefined ? "--help lists the options" : `npm run ${script} -- --help lists the options`;
}

/** parseArgs' "Option '-a, --amount <value>' argument missing" as "--amount needs a value"; its other such messages as they are. */
function invalidValue(message: string): string {
  const missing = /^Option '(?:-\w, )?(--\S+) <value>' argument missing/.exec(message);
  return missing ? `${missing[1]} needs a value` : message.replace(/\.$/, "");
}

/**
 * `--credits -5` as `--credits=-5`: parseArgs refuses a separate value starting with "-" as
 * ambiguous and the user got its advice and the whole usage, not the flag's own check (the range
 * of credits). Joined only after a flag that takes a value, and only a word with one dash that is
 * no short flag the script knows: a word starting with "--" (or `-h`) after such a flag is most
 * likely a forgotten value before a flag, known or mistyped (`--note --amout 5` would make the
 * note "--amout"), and is refused in one line that names both and the form for such a value.
 */
function dashValuesJoined(argv: readonly string[], options: Options): string[] {
  // `-h`, or a group of known short letters (`-hv`): `-hold-for-refund` is a value.
  const shorts = new Set(Object.values(options).flatMap((o) => (o.short === undefined ? [] : [o.short])));
  const shortFlag = (word: string): boolean => /^-[A-Za-z]+$/.test(word) && [...word.slice(1)].every((c) => shorts.has(c));
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i]!;
    if (word === "--") return [...out, ...argv.slice(i)];
    const next = argv[i + 1];
    const takesValue = word.startsWith("--") && !word.includes("=") && options[word.slice(2)]?.type === "string";
    // "-" alone is a value parseArgs takes as it is.
    if (!takesValue || next === undefined || !next.startsWith("-") || next === "-") {
      out.push(word);
    } else if (next.startsWith("--") || shortFlag(next)) {
      throw new UsageError(`${word} is followed by "${next}", not a value; for a value starting with "-", write ${word}=${next}`);
    } else {
      out.push(`${word}=${next}`);
      i++;
    }
  }
  return out;
}

/**
 * What to tell a user whose command line has arguments the script does not take: most often
 * `npm run manage-keys list --url X`, where npm keeps the flags before `--` for itself (and
 * passes their values on as words). `usage`'s first line is the command as it should be typed.
 */
export function npmDashHint(usage: string): string {
  const synopsis = /npm run .*/.exec(usage.split("\n")[0] ?? "")?.[0] ?? "npm run <script> -- <arguments>";
  // Worded for both cases: npm took the flags (typed before `--`), or a word is simply extra.
  return `flags typed before \`--\` are kept by npm, not passed on: ${synopsis}`;
}

/** `value` when it is one of `allowed`, else a UsageError naming the flag and the allowed values. */
export function oneOf<T extends string>(flag: string, value: string | undefined, allowed: readonly T[], fallback: T): T {
  if (value === undefined) return fallback;
  if ((allowed as readonly string[]).includes(value)) return value as T;
  throw new UsageError(`--${flag} "${value}" is not allowed; use one of: ${allowed.join(", ")}`);
}

/** A required flag's value, or a UsageError saying what it is for. */
export function required(flag: string, value: string | undefined, what: string): string {
  if (value === undefined || value === "") throw new UsageError(`--${flag} is required: ${what}`);
  return value;
}

/** What a number flag takes: a range (both ends included), whole or not, what it is called in a refusal ("a whole number"), and its value when not given. */
export interface NumberFlagSpec {
  readonly min: number;
  readonly max: number;
  readonly integer?: boolean;
  readonly what: string;
  readonly fallback: number;
}

/**
 * A number flag's value, read as the stack config and the credits flags read numbers: decimal
 * digits only, so `1e1` and `0x10`, which Number() reads, are refused alike everywhere.
 */
export function numberFlag(flag: string, value: string | undefined, spec: NumberFlagSpec): number {
  if (value === undefined) return spec.fallback;
  const n = decimalNumber(value);
  if (n !== undefined && n >= spec.min && n <= spec.max && (!spec.integer || Number.isInteger(n))) return n;
  throw new UsageError(`--${flag} "${value}" must be ${spec.what} from ${spec.min} to ${spec.max}${n === undefined ? ", in decimal digits" : ""}`);
}

/**
 * A date or timestamp flag as the shim's API takes it (period.ts readInstant), checked here so the
 * message names the flag: a day that does not exist says so, any other shape says what `shapes` are.
 */
export function instantFlag(flag: string, value: string | undefined, shapes: string): string | undefined {
  if (value === undefined) return undefined;
  const read = readInstant(value);
  if ("ms" in read) return value;
  throw new UsageError(read.why !== null ? `--${flag}: ${read.why}` : `--${flag} "${value}" must be ${shapes}`);
}

/** "a, b ,c" → ["a", "b", "c"]; empty items dropped. */
export function commaList(value: string | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  return value.split(",").map((s) => s.trim()).filter((s) => s !== "");
}

/**
 * Runs a script body: returns its exit code; a UsageError prints its message (no stack trace)
 * and gives the code of what it is (exit-codes.ts). Anything else is a bug and keeps its stack.
 */
export async function runScript(io: Io, body: () => Promise<number>): Promise<number> {
  try {
    return await body();
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(err.message);
      return exitCodeOf(err);
    }
    throw err;
  }
}

/**
 * The `main` of a script that takes no flags, only settings from its environment (the local
 * servers, the benchmarks): `--help` prints `usage` and starts nothing, an unknown flag is a
 * UsageError, then `start` runs and may return an exit code (a server returns nothing and runs on).
 */
export function mainWithUsage(usage: string, start: (io: Io) => Promise<number | void>) {
  return (argv: readonly string[], io: Io = consoleIo): Promise<number> =>
    runScript(io, async () => {
      if (parseFlags(argv, {}, usage).values.help) {
        io.out(usage);
        return 0;
      }
      return (await start(io)) ?? 0;
    });
}

/**
 * A server script's exit code: only a failure sets it. A server that started (or failed to and
 * said so by setting process.exitCode itself, as the shim's server.ts does for a bad
 * configuration) keeps its own.
 */
export function exitOnFailure(code: number): void {
  if (code !== 0) process.exitCode = code;
}

/** A word a user can paste: quoted when the shell would split or expand it. */
export function shellWord(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`;
}

/** Words as a shell command a user can paste. */
export function shellCommand(words: readonly string[]): string {
  return words.map(shellWord).join(" ");
}

/**
 * A flag and its value as one shell word, `--note='-10% promo'`: parseArgs refuses a separate
 * value that starts with "-" (`--note '-10% promo'` is "ambiguous"), so a printed command must
 * join them for any value to parse back as it was given.
 */
export function shellFlag(name: string, value: string): string {
  return `--${name}=${shellWord(value)}`;
}

/** "1h 5m", "3m 2s", "450 ms": durations as an operator reads them. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = Math.round(ms / 1000);
  if (s < 60) return `${(ms / 1000).toFixed(1)} s`;
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}h ${m}m` : `${m}m ${s % 60}s`;
}

/** The error codes down a fetch failure's chain of causes. */
function errorCodes(err: unknown): string[] {
  const codes: string[] = [];
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    const code = (e as NodeJS.ErrnoException).code;
    if (typeof code === "string") codes.push(code);
  }
  return codes;
}

/**
 * Codes that mean no connection was made, or the TLS handshake failed, so no byte of the request
 * was sent: a name that does not resolve, a refused or unroutable connection, a certificate not
 * trusted. Anything else (a reset, a closed socket, a timeout) may come after the server read
 * the request and acted on it.
 */
const NOT_SENT = /^(ECONNREFUSED|ENOTFOUND|EAI_AGAIN|EAI_NONAME|EHOSTUNREACH|ENETUNREACH|EADDRNOTAVAIL|UND_ERR_CONNECT_TIMEOUT|EPROTO|ERR_TLS_|ERR_SSL_|CERT_|UNABLE_TO_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN)/;

/**
 * Whether fetch refused the request itself, before any connection: a header value it cannot send
 * (a character beyond Latin-1, a CR or LF), a URL it cannot parse. undici reports every network
 * failure as TypeError("fetch failed") with the cause; any other TypeError is such a refusal.
 */
export function refusedByFetch(err: unknown): err is TypeError {
  return err instanceof TypeError && err.message !== "fetch failed";
}

/**
 * Codes (and the timeout's name) of a host that did not answer at all: a connection refused (the
 * serving stack is down), none made in time, a name that does not resolve. Not a TLS failure:
 * something answered then, and "is the host up?" would send the operator the wrong way.
 */
const UNREACHABLE = /^(ECONNREFUSED|ENOTFOUND|EAI_AGAIN|EAI_NONAME|EHOSTUNREACH|ENETUNREACH|ETIMEDOUT|UND_ERR_CONNECT_TIMEOUT)$/;

/** Whether a fetch failed because nothing answered (see UNREACHABLE), or the request timed out. */
export function hostUnreachable(err: unknown): boolean {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    if (e.name === "TimeoutError") return true; // AbortSignal.timeout
  }
  return errorCodes(err).some((code) => UNREACHABLE.test(code));
}

/** Whether a fetch failed before its request was sent (see NOT_SENT); false when it cannot tell. */
export function failedBeforeSending(err: unknown): boolean {
  // "bad port": fetch refuses ports on the Fetch standard's blocklist (9, 25, …) before connecting.
  return refusedByFetch(err) || errorCodes(err).some((code) => NOT_SENT.test(code)) || networkReason(err) === "bad port";
}

/**
 * The first character of `value` that `allowed` (a one-character class, or a test of one
 * character) does not match, as an error message names it: `"—" (U+2014) at character 4`.
 * Undefined when there is none.
 */
export function strayCharacter(value: string, allowed: { test(c: string): boolean }): string | undefined {
  let position = 0;
  for (const c of value) {
    position++;
    if (!allowed.test(c)) return `${JSON.stringify(c)} (${codePointLabel(c)}) at character ${position}`;
  }
  return undefined;
}

/**
 * An answer that is not the API's (a 200 web page at a wrong --url), as an error says it: the
 * request, the status, what was expected and the answer's first characters, e.g. `GET /models
 * answered 200 but not with JSON (<!doctype html>…); is --url the tenant's endpoint?`.
 */
export function notTheApi(request: string, status: number, expected: string, body: string): string {
  return `${request} answered ${status} but not with ${expected} (${startOf(body)}); is --url the tenant's endpoint?`;
}

/** The first 100 characters of an answer, on one line, for an error message. */
export function startOf(text: string): string {
  const t = text.replace(/\s+/g, " ").trim();
  return t === "" ? "an empty body" : t.length > 100 ? `${t.slice(0, 100)}…` : t;
}

/**
 * Codes of a certificate whose issuer this process does not trust: the tenant's own CA (tls.mode
 * self-signed) until the script is given it. An expired certificate or one for another name is
 * not among them: trusting a CA would not help.
 */
const UNTRUSTED_ISSUER = /^(DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT(_LOCALLY)?)$/;

/**
 * What the operator of a --url does about an untrusted issuer (every script with --url takes
 * --ca). A script that knows the stack says what its outputs tell instead (tenant-target.ts).
 */
const URL_UNTRUSTED_ADVICE = "the endpoint's certificate is signed by a CA this machine does not trust: with tls.mode self-signed, pass --ca ca.pem (from `pulumi stack output caCertificate --stack <name> > ca.pem`); with tls.mode letsencrypt, Let's Encrypt has probably not issued its certificate yet (nginx serves a self-signed placeholder until it does)";

/** Node's own advice for an untrusted issuer (Node 24), which is not the operator's remedy here. */
const NODE_SYSTEM_CA_ADVICE = /;[^;]*--use-system-ca\b[^;]*$/;

/**
 * The root cause of a fetch failure (ECONNREFUSED, a TLS error, a timeout), not "fetch failed".
 * A certificate whose issuer is not trusted ends with `untrustedAdvice` (by default, to pass --ca).
 */
export function networkReason(err: unknown, untrustedAdvice = URL_UNTRUSTED_ADVICE): string {
  let e: unknown = err;
  const parts: string[] = [];
  let untrusted = false;
  while (e instanceof Error) {
    // A string code (ECONNREFUSED); a DOMException's is a legacy number (23 for a timeout) that says nothing.
    const code: unknown = (e as NodeJS.ErrnoException).code;
    // OpenSSL's "…:wrong version number:../deps/openssl/…": an https:// URL at a plain http server.
    const message = code === "ERR_SSL_WRONG_VERSION_NUMBER" ? "the server speaks plain http, not https: use http:// in the URL" : e.message.replace(NODE_SYSTEM_CA_ADVICE, "");
    if (typeof code === "string" && UNTRUSTED_ISSUER.test(code)) untrusted = true;
    parts.push(typeof code === "string" && code !== "" && !message.includes(code) ? `${message} (${code})` : message);
    e = e.cause;
  }
  const useful = parts.filter((p) => p !== "fetch failed");
  const reason = (useful.length ? useful : parts).join(": ") || String(err);
  return untrusted ? `${reason}; ${untrustedAdvice}` : reason;
}

/**
 * The variables of `env` that are set: a blank one (an env file's `NAME=`) is as unset, so it
 * keeps its default, and a value's spaces at its ends are not part of it.
 */
export function setVariables(env: NodeJS.ProcessEnv): Record<string, string> {
  return Object.fromEntries(Object.entries(env).flatMap(([k, v]) => (v === undefined || v.trim() === "" ? [] : [[k, v.trim()]])));
}
