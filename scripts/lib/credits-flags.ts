// The flags of manage-keys' money commands (create's --credits, top-up and write-off), checked as
// the admin API checks them (the shim's own rules): a command refused here sends nothing, and a
// retry line printed for it could succeed.
import { creditsInput } from "../../api-shim/src/money/money.ts";
import { isNote, isPlainText, isWithin, MAX_IDEMPOTENCY_KEY_LENGTH, MAX_NOTE_CHARACTERS } from "../../api-shim/src/names.ts";
import { strayCharacter, UsageError } from "./cli.ts";

/** Credits as the API takes them: a decimal with at most 6 places (the shim counts micro-credits). */
export function creditsFlag(flag: string, value: string, positive: boolean): string {
  const v = value.trim();
  const given = creditsInput(v, positive ? "positive" : "non-negative"); // the shim's own rule
  if ("must" in given) throw new UsageError(`--${flag} "${value}" must be ${given.must}, e.g. 250 or 12.5`);
  return v;
}

/** A --note the admin API takes (names.ts: its own check), else why not. */
export function noteFlag(note: string): void {
  if (isNote(note)) return;
  if (!isWithin(note, MAX_NOTE_CHARACTERS)) throw new UsageError(`--note has ${[...note].length} characters: the admin API takes at most ${MAX_NOTE_CHARACTERS}`);
  const stray = strayCharacter(note, { test: (c) => isPlainText(c, { lineBreaks: true }) });
  throw new UsageError(`--note has ${stray}: the admin API takes a note of plain text, without control characters other than tabs and line breaks`);
}

/** An --idempotency-key the admin API takes and fetch sends as given, else why not. */
export function idempotencyKeyFlag(idem: string): void {
  // The admin API's own limits, checked here: the retry command printed could never succeed.
  if (idem === "") throw new UsageError("--idempotency-key is empty: give a key, e.g. invoice-1042, or leave the flag out to have one generated");
  if (idem.length > MAX_IDEMPOTENCY_KEY_LENGTH) throw new UsageError(`--idempotency-key must be at most ${MAX_IDEMPOTENCY_KEY_LENGTH} characters`);
  // Printable ASCII: it goes in a header (fetch cannot send "—" at all). Spaces inside are
  // fine (the shim takes any key, and the retry of a top-up made with "invoice 1042" must be
  // that same key), but not at its ends, which fetch would strip from the header.
  if (idem.trim() !== idem) throw new UsageError("--idempotency-key starts or ends with a space: give it without, e.g. invoice-1042");
  const stray = strayCharacter(idem, /^[\x20-\x7e]$/);
  if (stray) throw new UsageError(`--idempotency-key has ${stray}: use printable ASCII, e.g. invoice-1042`);
}
