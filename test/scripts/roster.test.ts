// How manage-keys create --from reads a roster (scripts/lib/roster.ts, csv-read.ts): as
// spreadsheets save CSV, and every problem at once, with its line, before any key is made.
import { describe, expect, it } from "vitest";
import { readCsv } from "../../scripts/lib/csv-read.ts";
import { againstKeys, problemText, readRoster } from "../../scripts/lib/roster.ts";
import type { ApiKey } from "../../scripts/lib/admin-client.ts";

const NOW = Date.parse("2026-03-15T12:00:00Z");
const read = (text: string, defaults = {}) => {
  const r = readRoster(text, defaults, NOW);
  return { entries: r.entries, problems: r.problems.map(problemText) };
};

describe("readCsv: as spreadsheets write it", () => {
  it("CRLF, LF and CR line ends, the last line without one, a byte order mark, quoted cells with commas, quotes and line breaks", () => {
    const text = '\uFEFFname,note\r\nann,"a, b"\nbob,"say ""hi"""\rcid,"two\r\nlines"\r\ndan,last';
    expect(readCsv(text)).toEqual({
      records: [
        { line: 1, cells: ["name", "note"] }, { line: 2, cells: ["ann", "a, b"] }, { line: 3, cells: ["bob", 'say "hi"'] },
        { line: 4, cells: ["cid", "two\r\nlines"] }, { line: 6, cells: ["dan", "last"] }, // a line break inside quotes is a line of the file
      ],
      problems: [],
    });
  });

  it("blank lines, and lines of empty cells (a spreadsheet's empty rows), are skipped; their lines still count", () => {
    expect(readCsv("name\r\n\r\n,,\r\n  \r\nann\r\n").records).toEqual([{ line: 1, cells: ["name"] }, { line: 5, cells: ["ann"] }]);
  });

  it("a quote left open, or text after a closing quote, is a problem at its line; the other lines are read", () => {
    expect(readCsv('name\nann\n"bo"b\ncid')).toEqual({
      records: [{ line: 1, cells: ["name"] }, { line: 2, cells: ["ann"] }, { line: 4, cells: ["cid"] }],
      problems: [{ line: 3, message: 'text after a quoted cell\'s closing quote: "b"' }],
    });
    expect(readCsv('name\nann\n"bob\ncid').problems).toEqual([{ line: 3, message: 'a quoted cell is not closed (a " is missing)' }]);
  });
});

describe("readRoster", () => {
  it("a line's own credits, tier and expiry, else the flags'; names trimmed as the shim stores them; columns in any order and case", () => {
    const r = read("Tier, NAME ,credits,expires_at\r\npro, ann ,12.5,2027-01-31\r\n,bob,,\r\n,cid", { credits: "5", tier: "workshop", expiresAt: "2027-03-15T18:00:00Z" });
    expect(r.problems).toEqual([]);
    expect(r.entries).toEqual([
      { line: 2, name: "ann", credits: "12.5", tier: "pro", expiresAt: "2027-01-31" },
      { line: 3, name: "bob", credits: "5", tier: "workshop", expiresAt: "2027-03-15T18:00:00Z" },
      { line: 4, name: "cid", credits: "5", tier: "workshop", expiresAt: "2027-03-15T18:00:00Z" }, // fewer cells: the rest empty
    ]);
  });

  it("every problem, each with its line, sorted: names, credits, times, cells", () => {
    const text = [
      "name,credits,expires_at,",
      `ann,-1,`,
      `${"x".repeat(201)},,`,
      `bob\u0007,,`,
      `,5,`,
      `cid,1e3,2026-03-15T11:59:59Z`,
      `dan,,2027-01-31T10:00`,
      `eve,,,extra`,
      `fay,1,,,too many`,
      `ann,,`,
      `"gil, jr",1.1234567,2026-02-29`,
    ].join("\n");
    expect(read(text).problems).toEqual([
      'line 2: credits "-1" must be a non-negative number of credits with at most 6 decimals, e.g. 250 or 12.5',
      `line 3: name "${"x".repeat(60)}…" has 201 characters: a key's name is at most 200`,
      'line 4: name "bob\\u0007" has a control character (U+0007): a key\'s name is plain text',
      "line 5: name is empty: a key needs a name",
      'line 6: credits "1e3" must be a non-negative number of credits with at most 6 decimals, e.g. 250 or 12.5',
      'line 6: expires_at "2026-03-15T11:59:59Z" is not in the future (it is 2026-03-15T12:00:00Z now): a key cannot be made expired',
      'line 7: expires_at "2027-01-31T10:00" must be an ISO timestamp with its zone, e.g. 2026-12-31T23:59:59Z, or a date (00:00 UTC that day)',
      'line 8: cell 4 ("extra") is under no column: line 1 leaves its name empty',
      "line 9: 5 cells, but line 1 names 4 columns (a comma in a name needs the name in quotes)",
      'line 10: name "ann" is on line 2 too: a name names one key',
      'line 11: credits "1.1234567" must be a non-negative number of credits with at most 6 decimals, e.g. 250 or 12.5',
      'line 11: expires_at "2026-02-29": 2026-02-29 is not a day: February 2026 has 28 days',
    ]);
  });

  it("an expiry at this very instant is not in the future: the key would be made expired", () => {
    expect(read("name,expires_at\nann,2026-03-15T12:00:00Z").problems).toEqual([
      'line 2: expires_at "2026-03-15T12:00:00Z" is not in the future (it is 2026-03-15T12:00:00Z now): a key cannot be made expired',
    ]);
  });

  it("a line with more cells than columns is said once, not judged further (its name would be a part of the name)", () => {
    expect(read("name\nLee, Ann\nLee, Bob").problems).toEqual([
      "line 2: 2 cells, but line 1 names 1 column (a comma in a name needs the name in quotes)",
      "line 3: 2 cells, but line 1 names 1 column (a comma in a name needs the name in quotes)",
    ]);
  });

  it("a cell under the first column, when the header leaves that column's name empty, is a problem too", () => {
    expect(read(",name\nx,ann").problems).toEqual(['line 2: cell 1 ("x") is under no column: line 1 leaves its name empty']);
  });

  it("a file's shape problems are listed in line order among the lines' problems", () => {
    expect(read('name,credits\nann,x\n"bob').problems).toEqual([
      'line 2: credits "x" must be a non-negative number of credits with at most 6 decimals, e.g. 250 or 12.5',
      'line 3: a quoted cell is not closed (a " is missing)',
    ]);
  });

  it("the header's problems: a column not known (with the one meant), twice the same, no name column", () => {
    expect(read("name,credit,expires-at\nann,1,").problems).toEqual([
      'line 1: unknown column "credit" (did you mean credits?): the columns are name, credits, tier, expires_at',
      'line 1: unknown column "expires-at" (did you mean expires_at?): the columns are name, credits, tier, expires_at',
    ]);
    expect(read("name,tier,Tier\nann,a,b").problems).toEqual(["line 1: the column tier is given twice"]);
    expect(read("attendee\nann").problems).toEqual([
      'line 1: unknown column "attendee": the columns are name, credits, tier, expires_at',
      "line 1: no name column: the first line names the columns, e.g. name,credits (name, credits, tier, expires_at)",
    ]);
  });

  it("an empty roster, or one with a header alone, has nothing to create", () => {
    expect(read("").problems).toEqual(["line 1: no header line: the first line names the columns, e.g. name,credits (name, credits, tier, expires_at)"]);
    expect(read("name\r\n\r\n").problems).toEqual(["line 1: no names after the header line: nothing to create"]);
  });
});

describe("againstKeys: the roster and the tenant's keys", () => {
  const key = (id: string, name: string, more: Partial<ApiKey> = {}) => ({ id, name, revoked_at: null, expires_at: null, ...more }) as ApiKey;
  it("a name with a key in use is skipped; one whose key is revoked or expired is made again; one that is another key's id is a problem", () => {
    const { entries } = readRoster("name\nann\nbob\ncid\nAbCdEfGhIjKl\ndan", {}, NOW);
    const keys = [key("K1", "ann"), key("K2", "bob", { revoked_at: "2026-01-01T00:00:00.000Z" }), key("K3", "cid", { expires_at: "2026-01-01T00:00:00.000Z" }), key("AbCdEfGhIjKl", "eve")];
    const plan = againstKeys(entries, keys);
    expect(plan.skipped.map((s) => [s.entry.name, s.key.id])).toEqual([["ann", "K1"]]);
    expect(plan.create.map((e) => e.name)).toEqual(["bob", "cid", "dan"]);
    expect(plan.problems.map(problemText)).toEqual(['line 5: name "AbCdEfGhIjKl" is the id of another key (eve), and --key "AbCdEfGhIjKl" would always mean that key: choose another name']);
  });
});
