import { codePointLabel } from "../../api-shim/src/names.ts";

// A flag whose "--" a document or chat turned into a typographic dash (`–amount`), found before
// parseArgs, which took it for a positional: manage-keys then said `"top-up –amount 5" is not a
// command … flags typed before -- are kept by npm`, report-usage `Unexpected argument '–-all'`.

/**
 * Hyphen, non-breaking hyphen, figure dash, en dash, em dash, horizontal bar (U+2010-U+2015),
 * minus sign (U+2212), small em dash (U+FE58), small and full-width hyphen-minus (U+FE63,
 * U+FF0D: what a CJK input method types for "-").
 */
const DASH = "\\u2010-\\u2015\\u2212\\uFE58\\uFE63\\uFF0D";
/** A word whose leading dashes hold a typographic one: `–all`, and `-–all` (only the second "-" became a dash). */
const PASTED = new RegExp(`^-*[${DASH}]`);
const LEADING = new RegExp(`^[-${DASH}]+`);
const FIRST_DASH = new RegExp(`[${DASH}]`);

/** What parseFlags needs of an option: whether the word after it is its value. */
type OptionShape = { type: "string" | "boolean"; short?: string };

/**
 * The refusal of the first word of `argv` that starts with a typographic dash where a flag or a
 * positional is read (never a flag's value: a note may start with one; nothing after `--`),
 * naming the character and the flag meant; undefined when there is none.
 */
export function typographicDashFlag(argv: readonly string[], options: Readonly<Record<string, OptionShape>>): string | undefined {
  const shortTakesValue = new Set(Object.values(options).flatMap((o) => (o.type === "string" && o.short !== undefined ? [o.short] : [])));
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i]!;
    if (word === "--") return undefined;
    if (PASTED.test(word)) {
      const c = FIRST_DASH.exec(word)![0];
      const code = codePointLabel(c);
      const meant = word.replace(LEADING, "");
      // Dashes alone name no flag: "type --" would end the options, which may not be what was meant.
      if (meant === "") return `"${word}" is a typographic dash (${code}) alone, not a flag or a word the script takes: remove it (if it was the "--" that ends the options, made into a dash by a document or chat, type --)`;
      return `"${word}" starts with "${c}" (${code}), a typographic dash, not "-" (pasted from a document or chat that turned "--" into a dash): type --${meant}`;
    }
    const long = word.startsWith("--") && !word.includes("=") && options[word.slice(2)]?.type === "string";
    const short = /^-[A-Za-z]$/.test(word) && shortTakesValue.has(word[1]!);
    if (long || short) i++; // its value, whatever it starts with
  }
  return undefined;
}
