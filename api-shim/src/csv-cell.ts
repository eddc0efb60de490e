/**
 * A CSV cell (RFC 4180): quoted when needed; a string with a leading =, +, -, @, tab or CR is
 * prefixed with ' so spreadsheets do not run it as a formula. The one writer of cells for the
 * shim's usage CSV and the columns report-usage adds to it.
 */
export function csvCell(v: string | number): string {
  const s = String(v);
  const safe = /^[=+\-@\t\r]/.test(s) && typeof v === "string" ? `'${s}` : s;
  return /[",\n\r]/.test(safe) ? `"${safe.replaceAll('"', '""')}"` : safe;
}

/** A CSV line of such cells, CRLF at its end, as the shim's usage CSV and the scripts' files are written. */
export function csvLine(cells: readonly (string | number)[]): string {
  return `${cells.map(csvCell).join(",")}\r\n`;
}
