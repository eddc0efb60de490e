/**
 * Text that names or describes things (key names, model names, notes), and the other limits the
 * admin API puts on text (an Idempotency-Key), checked alike wherever it is typed: the admin
 * API's and the inference routes' bodies, SHIM_CONFIG's file, and the operator scripts before
 * they send it.
 */

/**
 * The characters that act on what follows them rather than show: Unicode's controls, C0, DEL and
 * C1 (U+0080-U+009F: U+009B is CSI, an escape sequence's start to a terminal that reads 8-bit
 * controls, U+0085 a line break), and the bidi embeddings, overrides and isolates (U+202A-U+202E,
 * U+2066-U+2069), which reverse the rest of a line as shown: a key's name that reordered a table
 * row of manage-keys list. The right-to-left marks (U+200E, U+200F, U+061C) act on their neighbours
 * alone and stay. One list for what the admin API refuses and what the scripts escape on a terminal
 * (scripts/lib/terminal-text.ts).
 */
const BEYOND_C0 = "\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069";
/** As a regular expression's character class holds them. */
export const ACTING_CHARACTERS = `\\u0000-\\u001f${BEYOND_C0}`;

const ACTING = new RegExp(`[${ACTING_CHARACTERS}]`);
/** The same without tab, line feed and carriage return, which a note may have. */
const ACTING_BUT_LINE_BREAKS = new RegExp(`[\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f${BEYOND_C0}]`);

/**
 * Control characters (above) in text that names things (key names, model names): none has a use
 * there, a NUL cannot be stored in a Postgres text column, so it would fail a write deep in the
 * store instead of being a 400, and the others rewrite an operator's terminal or reorder what a
 * table shows. Notes may hold tabs and line breaks.
 */
export function hasControlCharacters(text: string, options: { lineBreaks?: boolean } = {}): boolean {
  return (options.lineBreaks ? ACTING_BUT_LINE_BREAKS : ACTING).test(text);
}

/**
 * Text that names or describes things as typed: no control characters (see above) and no lone
 * surrogate, which no store keeps as sent (written as U+FFFD, or refused by Postgres's jsonb:
 * a 503 where SQLite answered 201).
 */
export function isPlainText(text: string, options: { lineBreaks?: boolean } = {}): boolean {
  return text.isWellFormed() && !hasControlCharacters(text, options);
}

/** A character as Unicode names it, for a message: "U+2013", "U+0007", "U+1F642". */
export const codePointLabel = (c: string): string => `U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")}`;

/**
 * The first character that makes `text` not plain text (isPlainText), for a refusal to name:
 * a control character, or a lone surrogate (half of a UTF-16 pair); undefined when there is none.
 */
export function notPlainCharacter(text: string, options: { lineBreaks?: boolean } = {}): { kind: "control" | "lone surrogate"; code: string } | undefined {
  for (const c of text) {
    const code = codePointLabel(c);
    if (hasControlCharacters(c, options)) return { kind: "control", code };
    if (!c.isWellFormed()) return { kind: "lone surrogate", code };
  }
  return undefined;
}

/**
 * Whether `text` has at most `max` characters: code points, as a person counts them (and as
 * Postgres's length() does), not the UTF-16 units of `.length`, which count an emoji twice.
 * Stops counting past `max`, without making an array of a long string's characters.
 */
export function isWithin(text: string, max: number): boolean {
  if (text.length <= max) return true; // never more code points than units
  let count = 0;
  for (const _ of text) if (++count > max) return false;
  return true;
}

/** The most characters (code points, see isWithin) a top-up's note may have. */
export const MAX_NOTE_CHARACTERS = 500;

/** The longest Idempotency-Key a top-up takes (a header: its characters are ASCII). */
export const MAX_IDEMPOTENCY_KEY_LENGTH = 200;

/** A top-up's note: plain text, tabs and line breaks allowed, at most MAX_NOTE_CHARACTERS. */
export function isNote(note: string): boolean {
  return isWithin(note, MAX_NOTE_CHARACTERS) && isPlainText(note, { lineBreaks: true });
}

/** The most characters (code points) a key's name may have. */
export const MAX_KEY_NAME_CHARACTERS = 200;

/** A key's name as the admin API and SHIM_CONFIG's bootstrap keys take it: 1 to MAX_KEY_NAME_CHARACTERS of plain text, not only spaces. */
export function isKeyName(name: unknown): name is string {
  return typeof name === "string" && name.trim() !== "" && isWithin(name, MAX_KEY_NAME_CHARACTERS) && isPlainText(name);
}

/** A model name as an allow-list or SHIM_CONFIG's models take it: 1 to 256 characters of plain text. */
export function isModelName(name: unknown): name is string {
  return typeof name === "string" && name !== "" && name.length <= 256 && isPlainText(name);
}
