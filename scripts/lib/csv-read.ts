// Reads a CSV file as spreadsheets write it (RFC 4180): cells quoted when they hold a comma, a
// quote ("" inside) or a line break; lines ended by CRLF, LF or CR (older Excel for Mac), the last
// one with or without its end; a UTF-8 byte order mark (Excel's "CSV UTF-8") dropped. What the
// scripts read from an operator's spreadsheet (manage-keys create --from); the shim only writes CSV.

/** One record: its cells, and the line of the file it starts on (1 for the first), for messages. */
export interface CsvRecord {
  readonly line: number;
  readonly cells: readonly string[];
}

/** A shape no spreadsheet writes (a quote left open, text after a closing quote), at its line. */
export interface CsvProblem {
  readonly line: number;
  readonly message: string;
}

/**
 * Every record of `text`, blank lines (no cell, or only empty cells: a spreadsheet's empty rows
 * save as `,,`) left out, and the problems found. A record with a problem is left out too, so the
 * caller lists the problems and judges the rest.
 */
export function readCsv(text: string): { records: CsvRecord[]; problems: CsvProblem[] } {
  const records: CsvRecord[] = [];
  const problems: CsvProblem[] = [];
  const s = text.startsWith("\uFEFF") ? text.slice(1) : text;
  let line = 1;
  let i = 0;
  while (i < s.length) {
    const start = line;
    const cells: string[] = [];
    let problem: string | undefined;
    // One record: cells until a line end outside quotes, or the end of the text.
    for (;;) {
      let cell = "";
      if (s[i] === '"') {
        i++;
        let closed = false;
        while (i < s.length) {
          const c = s[i]!;
          if (c === '"' && s[i + 1] === '"') { cell += '"'; i += 2; continue; }
          if (c === '"') { closed = true; i++; break; }
          if (c === "\n" || (c === "\r" && s[i + 1] !== "\n")) line++;
          cell += c;
          i++;
        }
        if (!closed) problem ??= "a quoted cell is not closed (a \" is missing)";
        // After the closing quote: the cell's end, or text a spreadsheet would have quoted with it.
        let after = "";
        while (i < s.length && !/[,\r\n]/.test(s[i]!)) after += s[i++];
        if (after !== "") problem ??= `text after a quoted cell's closing quote: ${JSON.stringify(after.length > 20 ? `${after.slice(0, 20)}…` : after)}`;
      } else {
        while (i < s.length && !/[,\r\n]/.test(s[i]!)) cell += s[i++];
      }
      cells.push(cell);
      if (s[i] === ",") { i++; continue; }
      break;
    }
    // The record's line end: CRLF, LF or CR; none at the end of the text.
    if (s[i] === "\r" && s[i + 1] === "\n") i += 2;
    else if (i < s.length) i++;
    if (problem !== undefined) problems.push({ line: start, message: problem });
    else if (cells.some((c) => c.trim() !== "")) records.push({ line: start, cells });
    line++;
  }
  return { records, problems };
}
