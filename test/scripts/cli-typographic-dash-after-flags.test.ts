// A pasted dash is found after any flag: only a string flag written alone takes the next word as its value.
import { expect, it } from "vitest";
import { typographicDashFlag } from "../../scripts/lib/typographic-dash.ts";

const OPTIONS = { note: { type: "string" }, all: { type: "boolean" }, json: { type: "boolean", short: "j" }, name: { type: "string", short: "n" } } as const;

it("a string flag with its value after = does not take the next word", () => {
  expect(typographicDashFlag(["--note=x", "–all"], OPTIONS)).toContain("type --all");
});
it("a boolean long flag does not take the next word", () => {
  expect(typographicDashFlag(["--all", "–note", "x"], OPTIONS)).toContain("type --note");
});
it("a boolean short flag does not take the next word", () => {
  expect(typographicDashFlag(["-j", "–all"], OPTIONS)).toContain("type --all");
});
