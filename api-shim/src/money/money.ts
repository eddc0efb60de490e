/**
 * Micro-credit arithmetic. Inside the shim and its database every amount is an integer number
 * of micro-credits (µc, 1 credit = 1,000,000 µc). Conversions go through decimal strings, never
 * through floating-point multiplication, so `0.1` credits is exactly 100,000 µc.
 */
export const MICRO_PER_CREDIT = 1_000_000;

const DECIMAL = /^(-?)(\d{1,15})(?:\.(\d{1,6}))?$/;

/**
 * The largest balance a key may have, and so the largest grant: a billion credits (10^15 µc, the
 * Pulumi config's bound for a key's credits too). Up to it every amount has at most 15
 * significant digits, so the JSON numbers the shim answers with (`balance`, `credits_remaining`)
 * are exactly the ledger's, also once a client's JSON.parse made them doubles; near 2^53 µc
 * (~9×10⁹ credits), the bound before, they were 1 µc off.
 */
export const MAX_BALANCE_MICRO = 1_000_000_000_000_000;

/**
 * Parses a credits value (a JSON number or a decimal string, at most 6 decimals) into µc.
 * Returns undefined when the value is not such a number or does not fit in a safe integer.
 */
export function parseCredits(value: unknown): number | undefined {
  let text: string;
  if (typeof value === "number") {
    if (!Number.isFinite(value)) return undefined;
    // String(n) gives the shortest decimal that round-trips, e.g. 0.1 -> "0.1"; exponent forms
    // (1e-7, 1e21) fail the pattern below, which is right: they are out of range.
    text = String(value);
  } else if (typeof value === "string") {
    text = value.trim();
  } else {
    return undefined;
  }
  const m = DECIMAL.exec(text);
  if (!m) return undefined;
  const whole = Number(m[2]);
  const frac = Number((m[3] ?? "").padEnd(6, "0"));
  const micro = whole * MICRO_PER_CREDIT + frac;
  if (!Number.isSafeInteger(micro)) return undefined;
  return m[1] === "-" && micro !== 0 ? -micro : micro;
}

/**
 * A credits amount a person typed (an admin API body, a manage-keys flag): µc, or what the value
 * must be, for the message. A value too large for the ledger is told apart from one that is not a
 * number: "10000000000" has no decimals, and being told it needs at most 6 would send one looking
 * for the wrong mistake.
 */
export function creditsInput(value: unknown, min: "positive" | "non-negative"): { micro: number } | { must: string } {
  const micro = parseCredits(value);
  const positive = min === "positive";
  const inRange = micro !== undefined && micro <= MAX_BALANCE_MICRO;
  if (inRange && (positive ? micro > 0 : micro >= 0 && !String(value).trim().startsWith("-"))) return { micro };
  const text = typeof value === "number" ? value : typeof value === "string" ? value.trim() : null;
  const tooLarge = typeof text === "number" ? Number.isFinite(text) && text * MICRO_PER_CREDIT > MAX_BALANCE_MICRO : text !== null && /^\d+(?:\.\d{1,6})?$/.test(text) && !inRange;
  if (tooLarge) return { must: `at most ${formatCredits(MAX_BALANCE_MICRO)} credits` };
  return { must: `a ${min} number of credits with at most 6 decimals` };
}

/** Formats µc as a decimal string of credits without trailing zeros: 1500000 -> "1.5". */
export function formatCredits(micro: number): string {
  if (!Number.isSafeInteger(micro)) throw new RangeError(`not an integer amount of µc: ${micro}`);
  const sign = micro < 0 ? "-" : "";
  const abs = Math.abs(micro);
  const whole = Math.floor(abs / MICRO_PER_CREDIT);
  const frac = abs % MICRO_PER_CREDIT;
  if (frac === 0) return `${sign}${whole}`;
  return `${sign}${whole}.${String(frac).padStart(6, "0").replace(/0+$/, "")}`;
}

/**
 * µc as a JSON number of credits. The decimal string has at most 6 decimals and, for amounts up
 * to MAX_BALANCE_MICRO, at most 15 significant digits, so Number() of it is the nearest double and
 * JSON.stringify prints the same digits back.
 */
export function creditsNumber(micro: number): number {
  return Number(formatCredits(micro));
}

/** ceil(a / b) for integers a ≥ 0 and b > 0 whose sum stays below 2^53 (all our amounts do). */
export function ceilDiv(a: number, b: number): number {
  if (a <= 0) return 0;
  return Math.floor((a + b - 1) / b);
}

/** ceil(tokens × pricePer1k / 1000) in exact integer arithmetic. */
export function tokenCost(tokens: number, microPer1k: number): number {
  if (tokens <= 0 || microPer1k <= 0) return 0;
  const product = BigInt(tokens) * BigInt(microPer1k);
  return Number((product + 999n) / 1000n);
}
