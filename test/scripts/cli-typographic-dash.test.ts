// A flag pasted from a chat or a word processor, whose "--" became a typographic dash (`–amount`,
// `–-all`, `—json`): refused in one line that names the character and the flag meant, by every
// script, before it reaches any other check. It was told "is not a command … flags typed before
// -- are kept by npm" (manage-keys) or "Unexpected argument" (report-usage): the wrong cause.
import { describe, expect, it } from "vitest";
import { memoryIo, parseFlags } from "../../scripts/lib/cli.ts";
import { main as manageKeys } from "../../scripts/manage-keys.ts";
import { main as reportUsage } from "../../scripts/report-usage.ts";

const OPTIONS = { note: { type: "string" }, amount: { type: "string" }, all: { type: "boolean" }, name: { type: "string", short: "n" } } as const;

function refusal(argv: string[], positionals = true): string {
  try {
    parseFlags(argv, OPTIONS, "Usage: npm run manage-keys -- <command> [options]", { positionals });
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error(`parseFlags accepted ${argv.join(" ")}`);
}

describe("a flag written with a typographic dash", () => {
  it.each([
    ["–amount", "\"–\" (U+2013)", "--amount"], // en dash: "--" autocorrected
    ["–-all", "\"–\" (U+2013)", "--all"],
    ["—note=x", "\"—\" (U+2014)", "--note=x"], // em dash, joined to its value
    ["‐amount", "\"‐\" (U+2010)", "--amount"], // hyphen
    ["−amount", "\"−\" (U+2212)", "--amount"], // minus sign
    ["――all", "\"―\" (U+2015)", "--all"],
    ["-–all", "\"–\" (U+2013)", "--all"], // a hyphen, then the dash the second one became
    ["－amount", "\"－\" (U+FF0D)", "--amount"], // full-width hyphen-minus (a CJK input method)
    ["﹣﹣all", "\"﹣\" (U+FE63)", "--all"], // small hyphen-minus
    ["﹘note=x", "\"﹘\" (U+FE58)", "--note=x"], // small em dash
  ])("%s is named, with the flag meant", (word, character, meant) => {
    const message = refusal(["top-up", "--amount", "5", word]);
    expect(message).toBe(`"${word}" starts with ${character}, a typographic dash, not "-" (pasted from a document or chat that turned "--" into a dash): type ${meant}`);
  });

  it("a dash character alone is not told to type a flag: it is named, and what it may have been", () => {
    for (const word of ["–", "-—", "－"]) {
      const message = refusal(["top-up", word, "--amount", "5"]);
      expect(message).toMatch(new RegExp(`^"${word}" is a typographic dash \\(U\\+[0-9A-F]{4}\\) alone`));
      expect(message).toContain("remove it");
      expect(message).not.toMatch(/type --[a-z]/);
    }
  });

  it("leaves a plain hyphen alone (\"-\" is a positional to parseArgs), and real flags", () => {
    expect(parseFlags(["-", "--all"], OPTIONS, "USAGE", { positionals: true }).positionals).toEqual(["-"]);
    expect(parseFlags(["--all"], OPTIONS, "USAGE").values.all).toBe(true);
  });

  it("is found whether or not the script takes positionals, and after other flags' values", () => {
    expect(refusal(["--note", "hi", "–all"], false)).toContain("type --all");
    expect(refusal(["-n", "x", "–all"], false)).toContain("type --all");
  });

  it("leaves a flag's value alone, dash or not: a note may start with one", () => {
    expect(parseFlags(["--note", "– paid in advance", "--amount", "5"], OPTIONS, "USAGE").values.note).toBe("– paid in advance");
    expect(parseFlags(["-n", "—x"], OPTIONS, "USAGE").values.name).toBe("—x");
    expect(parseFlags(["--note=—x"], OPTIONS, "USAGE").values.note).toBe("—x");
    // After `--`, words are positionals as given.
    expect(parseFlags(["--", "–x"], OPTIONS, "USAGE", { positionals: true }).positionals).toEqual(["–x"]);
  });

  it("manage-keys and report-usage say it, not npm's `--` or an unexpected argument", async () => {
    const io = memoryIo();
    expect(await manageKeys(["top-up", "--url", "http://127.0.0.1:9", "--key", "me", "–amount", "5"], { io, env: {} })).toBe(2);
    expect(io.stderr.join("\n")).toBe(`"–amount" starts with "–" (U+2013), a typographic dash, not "-" (pasted from a document or chat that turned "--" into a dash): type --amount`);
    const io2 = memoryIo();
    expect(await reportUsage(["--url", "http://127.0.0.1:9", "–-all"], { io: io2, env: {} })).toBe(2);
    expect(io2.stderr.join("\n")).toBe(`"–-all" starts with "–" (U+2013), a typographic dash, not "-" (pasted from a document or chat that turned "--" into a dash): type --all`);
  });
});
