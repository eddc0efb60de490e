// What a key name refused for its characters is told (names.ts notPlainCharacter, admin.ts keyNameRefusal).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { notPlainCharacter } from "../../api-shim/src/names.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";

describe("notPlainCharacter", () => {
  it("reads code points: a control character after an emoji is the control character, not half of the emoji", () => {
    expect(notPlainCharacter("🙂\u0007")).toEqual({ kind: "control", code: "U+0007" });
  });
  it("takes line breaks when told to", () => {
    expect(notPlainCharacter("a\nb\tc", { lineBreaks: true })).toBeUndefined();
    expect(notPlainCharacter("a\u0007", { lineBreaks: true })).toEqual({ kind: "control", code: "U+0007" });
  });
});

describe("POST /admin/keys refusals of a name", () => {
  let h: Harness;
  beforeAll(async () => { h = await startShim({ file: { models: [{ name: "qwen2.5-7b" }] } }); });
  afterAll(() => h.close());
  const refusal = async (name: string) => {
    const res = await h.admin("/admin/keys", { method: "POST", body: JSON.stringify({ name }) });
    expect(res.status).toBe(400);
    return ((await res.json()) as { error: { message: string } }).error.message;
  };
  it("a name of spaces only is required, not 'a control character (undefined)'", async () => {
    expect(await refusal("   ")).toBe("'name' is required: a string of 1 to 200 characters, without control characters.");
  });
  it("150 emoji (300 UTF-16 units) and a BEL: the BEL, not 'more than 200 characters'", async () => {
    expect(await refusal("🙂".repeat(150) + "\u0007")).toBe("'name' has a control character (U+0007): a key's name is 1 to 200 characters, without control characters.");
  });
});
