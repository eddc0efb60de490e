import { describe, expect, it } from "vitest";
import { TokenEstimate } from "../../api-shim/src/money/pricing.ts";

/**
 * Characters above the surrogate range (U+E000-U+FFFF) are code points of their own: Chinese and
 * Japanese text writes its punctuation in fullwidth forms (，U+FF0C ！U+FF01 ？U+FF1F （）U+FF08/9),
 * and U+FFFD stands for every byte a decoder could not read. Each counts one token, as any other
 * non-ASCII code point does, in JSON text (a stream's deltas) and in a parsed prompt alike.
 */
describe("the token estimate of characters above the surrogate range (found by mutation review)", () => {
  const text = "你好，世界！（？）\uFFFD\uE000";
  it("counts each as one token in JSON text, raw or \\u-escaped", () => {
    const raw = new TokenEstimate();
    raw.add(JSON.stringify(text));
    expect(raw.tokens).toBe(11 + 1); // 11 code points, and the two quotes
    const escaped = new TokenEstimate();
    escaped.add('"\\uff0c\\uff01\\uff1f\\ufffd"');
    expect(escaped.tokens).toBe(4 + 1);
  });
  it("counts each as one token in a parsed prompt, as its JSON text is counted", () => {
    const parsed = new TokenEstimate();
    parsed.addValue({ content: text });
    const written = new TokenEstimate();
    written.add(JSON.stringify({ content: text }));
    expect(parsed.tokens).toBe(written.tokens);
    expect(parsed.tokens).toBe(11 + Math.ceil('{"content":""}'.length / 4));
  });
});
