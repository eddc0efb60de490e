// A dash value is the flag's value unless it is a flag the script knows: `-h` is, `-hold-for-refund`
// is not (it was taken for -h, refused as ambiguous with the whole usage printed).
import { expect, it } from "vitest";
import { parseFlags, required } from "../../scripts/lib/cli.ts";

const OPTIONS = { note: { type: "string" }, amount: { type: "string" } } as const;

it("takes --note -hold-for-refund as --note's value, as it takes --note -x", () => {
  expect(parseFlags(["--note", "-x"], OPTIONS, "USAGE").values.note).toBe("-x");
  expect(parseFlags(["--note", "-hold-for-refund"], OPTIONS, "USAGE").values.note).toBe("-hold-for-refund");
});

it("a required flag given empty is missing, not a value", () => {
  expect(() => required("name", "", "the key's name, e.g. team-07")).toThrow("--name is required: the key's name, e.g. team-07");
});
