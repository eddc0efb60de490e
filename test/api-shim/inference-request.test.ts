import { describe, expect, it } from "vitest";
import { parseInferenceRequest, promptTokens } from "../../api-shim/src/inference-request.ts";

describe("the parts of a prompt its bytes do not bound", () => {
  const image = { type: "image_url", image_url: { url: "https://x.test/a.png" } };
  const text = { type: "text", text: "what is this" };
  const parts = (kind: "chat" | "embeddings", messages: unknown[], extra: Record<string, unknown> = {}) =>
    parseInferenceRequest(kind, { model: "m", messages, ...extra }).unboundedParts;

  it("counts every non-text part of every message: each may be a context's worth of tokens", () => {
    expect(parts("chat", [{ role: "user", content: "hi" }])).toBe(0);
    expect(parts("chat", [{ role: "user", content: [text] }])).toBe(0);
    expect(parts("chat", [{ role: "user", content: [text, image] }])).toBe(1);
    expect(parts("chat", [{ role: "system", content: [image, image] }, { role: "user", content: [text, image, { type: "input_audio", input_audio: { data: "AAAA", format: "wav" } }] }])).toBe(4);
    expect(parts("chat", [{ role: "user", content: Array(3000).fill(image) }])).toBe(3000);
    // Unknown types and malformed parts count: a hold too large is only a hold.
    expect(parts("chat", [{ role: "user", content: [{ type: "video_url" }, null, "x", { text: "no type" }] }])).toBe(4);
    // vLLM's chat embeddings too.
    expect(parts("embeddings", [{ role: "user", content: [image, text, image] }])).toBe(2);
  });

  it("counts a chat template of the request's own as one more", () => {
    expect(parts("chat", [{ role: "user", content: "hi" }], { chat_template: "{% for i in range(99999) %}x{% endfor %}" })).toBe(1);
    expect(parts("chat", [{ role: "user", content: [image] }], { chat_template_kwargs: { chat_template: "{{ messages }}" } })).toBe(2);
    expect(parts("chat", [{ role: "user", content: "hi" }], { chat_template_kwargs: { enable_thinking: false } })).toBe(0);
  });

  it("counts none for a prompt of text (completions, embeddings of input)", () => {
    expect(parseInferenceRequest("completions", { model: "m", prompt: ["a", "b"] }).unboundedParts).toBe(0);
    expect(parseInferenceRequest("embeddings", { model: "m", input: ["a", "b"] }).unboundedParts).toBe(0);
  });
});

describe("the prompt's token estimate, for an answer whose usage never came", () => {
  it("counts the prompt fields' JSON (chat messages and tools, completions prompt, embeddings input) with the token estimate", () => {
    const messages = [{ role: "user", content: "Call 555 0100 ×2" }];
    const tools = [{ type: "function", function: { name: "dial" } }];
    const chat = promptTokens("chat", { model: "m", messages, tools, logit_bias: { "1234": 100 } });
    const json = JSON.stringify(messages) + JSON.stringify(tools);
    // 8 digits and "×" one token each; the rest of the bytes four to a token. logit_bias is not prompt.
    expect(chat).toBe(8 + 1 + Math.ceil((json.length - 9) / 4));
    expect(promptTokens("completions", { model: "m", prompt: ["12", "34"] })).toBe(4 + Math.ceil('["",""]'.length / 4));
    expect(promptTokens("embeddings", { model: "m", input: "abcd" })).toBe(Math.ceil('"abcd"'.length / 4));
  });
});

describe("echo", () => {
  it("is read as vLLM's pydantic reads a bool: the answer then starts with the prompt, which a stream's text estimate must not count", () => {
    const echo = (v: unknown) => parseInferenceRequest("completions", { model: "m", prompt: "x", echo: v }).echo;
    for (const v of [true, 1, "true", "True", "1", "yes", "on", "t", "y"]) expect(echo(v), JSON.stringify(v)).toBe(true);
    for (const v of [false, 0, "false", "0", "no", undefined, null]) expect(echo(v), JSON.stringify(v)).toBe(false);
  });
});
