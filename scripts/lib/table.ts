// Plain-text tables for terminals and cron mail: no colours, no box drawing, so the output can
// be grepped and pasted anywhere.
import { terminalText } from "./terminal-text.ts";

export interface Column<Row> {
  readonly header: string;
  readonly value: (row: Row) => string | number;
  /** Right-align (numbers). Defaults to right for number values. */
  readonly align?: "left" | "right";
}

/** A header line and one line per row, columns two spaces apart; trailing spaces trimmed. */
export function formatTable<Row>(columns: readonly Column<Row>[], rows: readonly Row[]): string {
  // Text as the terminal shows it (terminal-text.ts): a cell escaped later, by consoleIo, would be
  // wider than its column was made.
  const cells = rows.map((row) => columns.map((c) => {
    const v = c.value(row);
    return typeof v === "string" ? terminalText(v) : v;
  }));
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((r) => String(r[i]).length)));
  const right = columns.map((c, i) => c.align === "right" || (c.align === undefined && cells.length > 0 && cells.every((r) => typeof r[i] === "number")));
  const line = (values: readonly (string | number)[]) =>
    values.map((v, i) => (right[i] ? String(v).padStart(widths[i]!) : String(v).padEnd(widths[i]!))).join("  ").trimEnd();
  return [line(columns.map((c) => c.header)), ...cells.map(line)].join("\n");
}

