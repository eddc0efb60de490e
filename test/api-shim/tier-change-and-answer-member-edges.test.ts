import { describe, expect, it } from "vitest";
import { TokenBucket } from "../../api-shim/src/limits/rate-limit.ts";
import { refuseUnlistedProviderParams } from "../../api-shim/src/providers/provider-params.ts";

/**
 * A tier change at its edges (no debt below what was spent; the refill counted at the old rate first)
 * and the members of a pushed-back answer message at theirs (found by a mutation review).
 */
const body = (assistant: Record<string, unknown>) => ({ model: "claude", messages: [{ role: "user", content: "hi" }, { role: "assistant", content: "ok", ...assistant }], max_tokens: 5 });
const check = (assistant: Record<string, unknown>) => () => refuseUnlistedProviderParams("chat", body(assistant), "claude");

describe("answer members (answer-members.ts)", () => {
  it("OpenRouter's reasoning_details as answered, with `index` (openrouter.ai docs: ReasoningDetailText has type, text, signature, id, format, index), pass", () => {
    expect(check({ provider_specific_fields: { reasoning_details: [{ type: "reasoning.text", text: "Step 1", format: "anthropic-claude-v1", index: 0 }] } })).not.toThrow();
  });
  it("reasoning_details of a type other than reasoning.* are refused", () => {
    expect(check({ provider_specific_fields: { reasoning_details: [{ type: "text", text: "x" }] } })).toThrow(/provider_specific_fields\.reasoning_details/);
  });
  it("citations other than a list are refused", () => {
    expect(check({ provider_specific_fields: { citations: { type: "document", source: { type: "url", url: "https://example.com/a.pdf" } } } })).toThrow(/provider_specific_fields\.citations/);
  });
  it("provider_specific_fields as a list (which LiteLLM's converters .get() from) is refused, even empty-membered", () => {
    expect(check({ provider_specific_fields: [null] })).toThrow(/provider_specific_fields/);
  });
  it("an empty object in images or reasoning_items is empty", () => {
    expect(check({ images: {}, provider_specific_fields: { compaction_blocks: {} } })).not.toThrow();
  });
});

describe("TokenBucket.resize (rate-limit.ts)", () => {
  it("a downgrade below what was spent leaves no debt: 3 of 3 spent, to 2/min, the next request in 30 s, not 60 s", () => {
    const b = new TokenBucket(3, 0);
    for (let i = 0; i < 3; i++) expect(b.take(1, 0).ok).toBe(true);
    b.resize(2, 0);
    expect(b.msUntil(1, 0)).toBe(30_000);
  });
  it("a resize first counts the refill at the old rate: 60 of 60 spent, 30 s later downgraded to 10/min: 30 spent ≥ 10, so nothing left now", () => {
    const b = new TokenBucket(60, 0);
    expect(b.take(60, 0).ok).toBe(true);
    b.resize(10, 30_000);
    expect(b.msUntil(1, 30_000)).toBe(6_000);
  });
});
