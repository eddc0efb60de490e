import { isIPv4, isIPv6 } from "node:net";
import { parseCredits } from "../../api-shim/src/money/money.ts";
import { Secret } from "../secret.ts";
import { networkAddress } from "./addresses.ts";
import { firstItemPath, setSecretCommand } from "./settings.ts";
import { CONFIG_NAMESPACE, type ConfigProblem } from "./types.ts";

/**
 * Collects every problem in one pass, so a user fixes their stack file once rather than once per
 * run. Each check returns the converted value, or `undefined` after recording a problem.
 */
export class Problems {
  readonly list: ConfigProblem[] = [];
  private readonly secret: (key: string) => boolean;
  private readonly written: (key: string) => string | undefined;

  /**
   * `secret`: the settings whose values are never shown (Pulumi hands them over decrypted).
   * `written`: the stack file's text for the number at a config path, when it is not its digits
   * (numberAsWritten); the only way to see a leading 0, since the number no longer shows it.
   */
  constructor(secret: (key: string) => boolean = () => false, written: (key: string) => string | undefined = () => undefined) {
    this.secret = secret;
    this.written = written;
  }

  /** `shown`: the value is already a stand-in (such as "[plaintext]"), safe to print under any key. */
  add(key: string, value: unknown, message: string, shown = false): undefined {
    const hidden = !shown && value !== undefined && this.secret(key);
    this.list.push({ key, value: hidden ? VALUE_NOT_SHOWN : value, message });
    return undefined;
  }

  /**
   * Whether `value` is a setting encrypted in the stack file (`secure: v1:…`, which readStackConfig
   * reads as an unreadable Secret), after recording why it cannot be checked: the one problem for
   * it wherever a plain value belongs, rather than "must be a string" or "is not a CIDR", which
   * would call a good value the wrong kind. `npm run render` needs it to write the bundle, so it
   * stays a problem; `pulumi up` gets it decrypted and never meets this.
   */
  encrypted(key: string, value: unknown): boolean {
    if (!(value instanceof Secret) || value.readable) return false;
    const fix = this.secret(key)
      ? "To render the stack, keep only the secret itself encrypted (a provider's apiKey: `--secret --path 'gpu-sandbox:providers[0].apiKey'`) and the rest in clear"
      : `To render the stack, store it in clear: \`pulumi config set --path '${CONFIG_NAMESPACE}:${key}' <value>\``;
    this.add(key, "[encrypted]", "is encrypted in the stack file (`secure:`), which `npm run render` and the operator scripts read without Pulumi " +
      `(no Pulumi CLI, no passphrase), so they can neither decrypt nor check it; \`pulumi up\` decrypts and checks it. ${fix}`, true);
    return true;
  }

  /**
   * Whether `value` gives nothing to check: not set (the caller applies the default), or
   * encrypted in the stack file, which has been said (encrypted()).
   */
  private unset(key: string, value: unknown): value is undefined | null | Secret {
    return value === undefined || value === null || this.encrypted(key, value);
  }

  /** A string; `undefined` stays `undefined` (the caller applies the default). */
  string(key: string, value: unknown): string | undefined {
    if (this.unset(key, value)) return undefined;
    if (typeof value !== "string") return this.add(key, value, "must be a string");
    return value;
  }

  /**
   * A number within [min, max]. Accepts numeric strings too: `pulumi config set k 24` stores
   * "24", while a hand-written stack file may say 24. A string only in decimal (a sign, digits and
   * a point: "24", "-1", "+1", ".05", "0."): Number() also reads "0x10", "0b11", "0o20" and "1e3",
   * which the shim and the admin API refuse. A number the stack file wrote in another form is
   * refused alike, whoever read it (see notPlainDecimal).
   */
  number(key: string, value: unknown, range: { min: number; max: number; integer?: boolean }): number | undefined {
    if (this.unset(key, value)) return undefined;
    const form = this.written(key);
    if (form !== undefined && !(isTopLevel(key) ? DECIMAL_TEXT : PLAIN_DECIMAL).test(form)) return this.notPlainDecimal(key, value, form);
    const n = typeof value === "string" ? (decimalNumber(value) ?? value) : value;
    if (typeof n !== "number" || !Number.isFinite(n)) return this.add(key, value, `must be a number in decimal digits, e.g. ${range.integer ? "24" : "24 or 0.5"}`);
    if (range.integer && !Number.isInteger(n)) return this.add(key, value, "must be a whole number");
    if (n < range.min || n > range.max) {
      return this.add(key, value, `must be between ${range.min} and ${range.max}`);
    }
    return n;
  }

  /**
   * A number the stack file wrote as `form`, in a form Pulumi's reader and the yaml package read
   * differently, so render and `pulumi up` would use different values without a word. Inside a map
   * or list Pulumi's reader (Go yaml.v2, strconv.ParseInt base 0) reads 0100 as octal 64, the yaml
   * package 100; 0x, 0o and 0b are refused as they are in a string (an exponent reads alike, and
   * Pulumi writes some floats so). A top-level setting reaches `pulumi up` as its text, read as a
   * string is (decimal only: 0100 is 100 there, 0x10 and 1e3 are refused), while the yaml package
   * reads 0x10 and 1e3 as numbers. The form is judged, not the value, so both refuse it alike.
   */
  private notPlainDecimal(key: string, value: unknown, form: string): undefined {
    const why = isTopLevel(key)
      ? "a top-level setting reaches `pulumi up` as its text, which is read in decimal digits only (0x, 0o, 0b and exponents are refused, as in quotes)"
      : "inside a map a leading 0 is octal to Pulumi's reader: 0100 is 64 at `pulumi up`, 100 at `npm run render`; 0x, 0o and 0b are refused as they are in quotes";
    return this.add(key, value, `was written ${form}, which is not plain decimal (${why}); write it in plain decimal digits, e.g. 100 or 0.5`);
  }

  /**
   * A number where a string goes (a vLLM argument, a tag), as its digits: what `- 64` unquoted, or
   * `pulumi config set --path … 64`, stores. Only a safe integer written as its own digits: a YAML
   * reader turns 1.10 into 1.1, 1e3 into 1000, 0x1F into 31 and digits past 2^53 into others, and
   * a leading 0 is octal to Pulumi's (Go yaml.v2: 0123456 is 42798) but not to the yaml package's,
   * so String(n) would pass on something else; the stack file's text for it (`written`) shows what
   * was meant. Undefined, after recording a problem, when the value must be quoted instead.
   */
  digits(key: string, n: number): string | undefined {
    const written = this.written(key);
    if (written !== undefined && written !== String(n)) {
      return this.add(key, n, `was written ${written}, which YAML reads as a number, not as those characters (a leading 0 is octal to Pulumi: 0123456 is 42798); quote it: "${written}"`);
    }
    if (!Number.isSafeInteger(n)) {
      return this.add(key, n, `is a number, which is not kept as written (1.10 is read as 1.1, 1e3 as 1000, digits past 2^53 change); quote it: "${String(n)}"`);
    }
    return String(n);
  }

  /** An amount of credits: ≥ 0, at most 6 decimals (the shim counts micro-credits). */
  credits(key: string, value: unknown): number | undefined {
    if (typeof value === "number" && value < 0) return this.add(key, value, "must not be negative");
    const n = this.number(key, value, { min: 0, max: 1e9 });
    if (n === undefined) return undefined;
    if (parseCredits(n) === undefined) { // the shim's own rule
      return this.add(key, value, "must have at most 6 decimal places (credits are counted in micro-credits)");
    }
    return n;
  }

  boolean(key: string, value: unknown): boolean | undefined {
    if (this.unset(key, value)) return undefined;
    if (value === true || value === "true") return true;
    if (value === false || value === "false") return false;
    return this.add(key, value, "must be true or false");
  }

  oneOf<T extends string>(key: string, value: unknown, allowed: readonly T[]): T | undefined {
    if (this.unset(key, value)) return undefined;
    if (typeof value === "string" && (allowed as readonly string[]).includes(value)) return value as T;
    return this.add(key, value, `must be one of: ${allowed.join(", ")}`);
  }

  /**
   * A list; a single string is not silently treated as a one-item list. A string is what
   * `pulumi config set gpu-sandbox:adminCidrs 198.51.100.7/32` stores, and a map what
   * `--path 'gpu-sandbox:providers.apiKey'` (no `[0]`) stores, so the message shows the `--path`
   * form that sets an item: the path of its first one (firstItemPath: `[0]`, or `[0].name` for a
   * list of maps, where a map given names the field it meant).
   */
  array(key: string, value: unknown): unknown[] | undefined {
    if (this.unset(key, value)) return undefined;
    if (Array.isArray(value)) return value;
    const map = typeof value === "object" ? Object.keys(value) : [];
    if (typeof value !== "string" && map.length === 0) return this.add(key, value, "must be a list");
    const first = firstItemPath(key, map[0]);
    const path = `${key}${first}`;
    const set = this.secret(path) ? setSecretCommand(path) : `pulumi config set --path '${CONFIG_NAMESPACE}:${path}' <value>`;
    // Pulumi writes an item over a string, but refuses to index a map: that one goes first.
    const how = map.length > 0
      ? `--path without [0] stores a map. Remove it with \`pulumi config rm ${CONFIG_NAMESPACE}:${key}\`, then set`
      : "`pulumi config set` without --path stores one string. Set";
    return this.add(key, value, `must be a list; ${how} the first item with \`${set}\` (then [1], [2], …)`);
  }

  object(key: string, value: unknown): Record<string, unknown> | undefined {
    if (this.unset(key, value)) return undefined;
    if (typeof value !== "object" || Array.isArray(value)) return this.add(key, value, "must be a map of keys to values");
    return value as Record<string, unknown>;
  }

  /**
   * A map setting with these `members` (others reported as unknown), `{}` when not set. A string
   * is what `pulumi config set gpu-sandbox:tls self-signed` stores, so the message shows the
   * `--path` form that sets `main` (the member such a string meant), or else any member. Pulumi
   * writes a member over a string, so nothing needs removing first.
   */
  settingMap(key: string, value: unknown, members: readonly string[], main?: string): Record<string, unknown> {
    if (this.unset(key, value)) return {};
    if (typeof value === "object" && !Array.isArray(value)) {
      const map = value as Record<string, unknown>;
      this.unknownKeys(key, map, members);
      return map;
    }
    const why = typeof value === "string" ? " `pulumi config set` without --path stores one string." : "";
    const how = main
      ? `Set ${key}.${main} with \`pulumi config set --path '${CONFIG_NAMESPACE}:${key}.${main}' <value>\``
      : `Set each member with \`pulumi config set --path '${CONFIG_NAMESPACE}:${key}.<member>' <value>\`, <member> one of ${members.join(", ")}`;
    this.add(key, value, `must be a map of keys to values;${why} ${how}`);
    return {};
  }

  /** Keys of a map that this program does not know: most often a typo that would be ignored. */
  unknownKeys(key: string, value: Record<string, unknown>, known: readonly string[]): void {
    for (const k of Object.keys(value)) {
      if (!known.includes(k)) this.unknown(`${key}.${k}`, `is not a known setting; known: ${known.join(", ")}`);
    }
  }

  /**
   * A setting that does not exist, named without its value: Pulumi hands the program secrets
   * decrypted, so a misspelt secret (`hf_token` for `hfToken`) would be printed in plaintext to
   * the terminal and CI logs.
   */
  unknown(key: string, message: string): void {
    this.list.push({ key, value: VALUE_NOT_SHOWN, message });
  }

  cidrs(key: string, value: unknown): string[] | undefined {
    const list = this.array(key, value);
    if (list === undefined) return undefined;
    const out: string[] = [];
    let encrypted = false;
    list.forEach((item, i) => {
      if (this.encrypted(`${key}[${i}]`, item)) {
        encrypted = true;
        return;
      }
      const cidr = typeof item === "string" ? normaliseCidr(item) : undefined;
      if (cidr === undefined) {
        this.add(`${key}[${i}]`, item, "is not a CIDR; write an address with its prefix length, e.g. 203.0.113.7/32 or 2001:db8::/48");
      } else if (!out.includes(cidr)) { // one network written twice (81.2.69.7/24, 81.2.69.160/24): nginx warns of a duplicate
        out.push(cidr);
      }
    });
    // Not known whole: undefined (the default), so no check of the list as a whole (empty? holds
    // 0.0.0.0/0?) adds a false problem beside the encrypted entry's own.
    return encrypted ? undefined : out;
  }
}

/**
 * A number as its plain decimal digits (100, 0, -1, +4, 0.90, 1., .5), with an exponent or not
 * (5e-05, 1.0000005e+06: Pulumi itself writes a map's floats that way when it rewrites the stack
 * file at any `pulumi config set`, Go's FormatFloat 'g'), which every YAML reader reads alike: no
 * leading 0 before the point, no 0x/0o/0b.
 */
const PLAIN_DECIMAL = /^[+-]?((0|[1-9]\d*)(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

/** Decimal text as the shim, the admin API and a top-level setting's text are read: a sign, digits, a point ("24", "-1", ".05", "0."). */
const DECIMAL_TEXT = /^[+-]?(\d+\.?\d*|\.\d+)$/;

/**
 * Text in decimal digits as a number ("24", " -1", ".05"), else undefined: Number() also reads
 * "0x10", "1e3" and "" (as 0). The one reading of a number typed as text, in the stack config and
 * in the scripts' number flags alike.
 */
export function decimalNumber(text: string): number | undefined {
  return DECIMAL_TEXT.test(text.trim()) ? Number(text) : undefined;
}

/** A setting at the top level of the namespace (`ttlHours`), not inside a map or list (`keys[0].credits`). */
const isTopLevel = (key: string) => !/[.[]/.test(key);

/**
 * `a.b.c.d/n` or `v6::/n`, with the prefix in range; returns it as its network (host bits
 * cleared, IPv6 compressed: `81.2.69.160/24` is `81.2.69.0/24`), or undefined. nginx warns at
 * every start and reload about host bits ("low address bits … are meaningless"), and the
 * firewall and nginx then hold the same text.
 */
export function normaliseCidr(text: string): string | undefined {
  // No zone id (fe80::1%eth0): it names an interface of one machine, not a network.
  const m = /^([^/\s%]+)\/(\d{1,3})$/.exec(text.trim());
  if (!m) return undefined;
  const [, address, bits] = m as unknown as [string, string, string];
  const prefix = Number(bits);
  if (isIPv4(address)) return prefix <= 32 ? `${networkAddress(address, prefix, "ipv4")}/${prefix}` : undefined;
  if (!isIPv6(address) || prefix > 128) return undefined;
  const mapped = prefix >= 96 ? ipv4Mapped(address) : undefined;
  // An IPv4-mapped CIDR (a dual-stack socket's view of IPv4 clients, as logs and `ss` show it) is
  // the IPv4 CIDR it means: nginx's geo and the firewall match IPv4 clients against IPv4 entries
  // only, and as an IPv6 entry it would open the API to IPv6.
  if (mapped !== undefined) return normaliseCidr(`${mapped}/${prefix - 96}`);
  return `${networkAddress(address, prefix, "ipv6")}/${prefix}`;
}

/** The IPv4 address of an IPv4-mapped IPv6 address (::ffff:a.b.c.d), or undefined. */
function ipv4Mapped(address: string): string | undefined {
  // The WHATWG URL parser canonicalizes IPv6 (lower case, `::ffff:5102:45a0` for both spellings).
  const m = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(new URL(`http://[${address}]/`).hostname.slice(1, -1));
  if (!m) return undefined;
  const [high, low] = [parseInt(m[1]!, 16), parseInt(m[2]!, 16)];
  return [high >> 8, high & 255, low >> 8, low & 255].join(".");
}

/** How a value is shown in a message: strings quoted, objects as compact JSON. */
export function show(value: unknown): string {
  if (value === undefined) return "(not set)";
  if (typeof value === "string") return JSON.stringify(value);
  // JSON shows Infinity and NaN (YAML's .inf, .nan) as null, which the value was not.
  if (typeof value === "number") return String(value);
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

/** The value of a problem that must not be printed (a secret setting's, or an unknown one's). */
export const VALUE_NOT_SHOWN: unique symbol = Symbol("value not shown");

export function formatProblem(problem: ConfigProblem, namespace: string): string {
  return problem.value === VALUE_NOT_SHOWN
    ? `${namespace}:${problem.key}: ${problem.message} (its value is not shown: it may be a secret)`
    : `${namespace}:${problem.key} = ${show(problem.value)}: ${problem.message}`;
}
