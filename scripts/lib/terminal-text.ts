// Text the scripts print that came from elsewhere (a key's name or note from the admin API, an
// error an endpoint answered) is a customer's: it may hold what a terminal acts on. Escaped where
// the scripts write to the operator (consoleIo), one place for every script.
import { ACTING_CHARACTERS } from "../../api-shim/src/names.ts";

/**
 * The characters names.ts refuses in names (C0, DEL, C1, the bidi overrides and isolates), but the
 * tab and line feed of plain text and the CR of a CSV's CRLF line end. A lone CR is escaped: it
 * moves the cursor back and lets the rest of the line write over what came before it.
 */
const ACTING = new RegExp(`(?!\\t|\\n|\\r\\n)[${ACTING_CHARACTERS}]`, "g");

/**
 * `text` with each such character as its JSON escape (`\u009b`): shown, not acted on. Inside a
 * JSON string, where --json output holds them, the escape reads back as the same character, so
 * the JSON stays valid and means the same.
 */
export function terminalText(text: string): string {
  return text.replace(ACTING, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}
