import { describe, expect, it } from "vitest";
import { CHAT_TEMPLATE_TOKENS, Pricer, RENDERED_JSON_TOKENS_PER_BYTE } from "../../api-shim/src/money/pricing.ts";

/**
 * Found by mutation review: a byte of JSON the chat template prints again (tools) is held at
 * RENDERED_JSON_TOKENS_PER_BYTE tokens in all, its own byte in the body included, not one more.
 * Holding one more per byte asks a key for credit it does not need: a tools-heavy request from a
 * key whose balance covers the real bound is refused with a 402 whose credits_required is too high.
 */
describe("the hold of a prompt whose tools the chat template prints again", () => {
  // No maxModelLen: the bytes alone bound the prompt.
  const pricer = new Pricer({ request: 0, batchRequest: 0, models: new Map([["m", { promptPer1k: 1_000_000, completionPer1k: 0 }]]) }, null);
  const input = { model: "m", batch: false, templated: true, unboundedParts: 0, maxTokens: 1, prompts: 1, outputs: 0 };
  it("is RENDERED_JSON_TOKENS_PER_BYTE tokens per printed byte, the body's own byte included", () => {
    // A body of 1,000 bytes, 600 of them tools the template prints.
    const bound = pricer.promptBound({ ...input, bodyBytes: 1000, renderedJsonBytes: 600 });
    expect(bound).toBe(400 + 600 * RENDERED_JSON_TOKENS_PER_BYTE + CHAT_TEMPLATE_TOKENS);
    // 1 credit per 1k tokens: the hold, in µc, is one per token.
    expect(pricer.hold({ ...input, bodyBytes: 1000, renderedJsonBytes: 600 })).toBe(bound * 1000);
  });
});
