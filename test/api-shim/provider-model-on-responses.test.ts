import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startShim, type Harness } from "../support/shim-harness.ts";

/**
 * Found by a mutation review of admission.ts: a provider's model is served on the chat
 * route, not on /v1/responses, where the provider bills what this endpoint does not meter (its
 * built-in web and file search, code interpreter): docs/decisions.md.
 */
describe("a provider's model on /v1/responses", () => {
  let h: Harness;
  let key: string;
  beforeAll(async () => {
    h = await startShim({ file: { models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }, { name: "claude", provider: true, maxModelLen: 200_000, maxOutputTokens: 8192 }] } });
    key = (await h.createKey({ credits: 100 })).key;
  });
  afterAll(async () => h.close());

  it("is refused 400 naming model, before anything is forwarded", async () => {
    const before = h.fake.requests.length;
    const res = await h.post(key, "/v1/responses", { model: "claude", input: "hi", max_output_tokens: 16 });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error: { param: string; message: string } };
    expect(body.error.param).toBe("model");
    expect(body.error.message).toMatch(/\/v1\/chat\/completions/);
    // The AI SDK's openai(model) and LangChain's reasoning summaries land here by default: the
    // message names the chat form their users switch to.
    expect(body.error.message).toContain("openai.chat('claude')");
    expect(body.error.message).toContain("useResponsesApi");
    expect(h.fake.requests.length).toBe(before);
  });
});
