import { describe, expect, it } from "vitest";
import { eachMessagePart, mediaParts } from "../../api-shim/src/requests/content-parts.ts";
import { parseInferenceRequest } from "../../api-shim/src/requests/inference-request.ts";
import { StreamMeter } from "../../api-shim/src/metering/metering.ts";

const delta = (d: unknown) => `data: ${JSON.stringify({ id: "c1", object: "chat.completion.chunk", choices: [{ index: 0, delta: d, finish_reason: null }] })}`;

// vLLM chat_utils._parse_chat_message_content_parts keeps a part's result only `if parse_res:`,
// so "" parts are dropped before the "\n".join: two empty text parts make content "" and
// serving_chat's `if last_msg_content:` sends no echo chunk.
describe("chat echo of a last message of empty text parts", () => {
  const body = { model: "m", messages: [{ role: "user", content: "q" }, { role: "assistant", content: [{ type: "text", text: "" }, ""] }], echo: true, stream: true, max_tokens: 4096 };

  it("is not an echo (vLLM drops empty parts before joining them)", () => {
    expect(parseInferenceRequest("chat", body).echo).toBe(false);
  });

  it("charges the first generated chunk of a cut stream", () => {
    const req = parseInferenceRequest("chat", body);
    const m = new StreamMeter({ clientWantsUsage: false, hideContinuous: false, outputsPerPrompt: 1, outputs: 1, echo: req.echo, maxCompletion: 4096 });
    m.process(delta({ role: "assistant", content: "" }));
    // vLLM sends no echo: this is generated text (a lagging consumer's merged tokens), then the client leaves.
    m.process(delta({ content: " word".repeat(400) }));
    expect(m.usage(true, () => 10).completionTokens).toBeGreaterThanOrEqual(400);
  });

  it("counts the first generated chunk as content: an upstream failure after it is not free (stream.ts: nothing = !contentSeen)", () => {
    const req = parseInferenceRequest("chat", body);
    const m = new StreamMeter({ clientWantsUsage: false, hideContinuous: false, outputsPerPrompt: 1, outputs: 1, echo: req.echo, maxCompletion: 4096 });
    m.process(delta({ role: "assistant", content: "" }));
    m.process(delta({ content: " word".repeat(400) }));
    expect(m.contentSeen).toBe(true);
  });
});

// vLLM _parse_chat_message_content_mm_part: a part with a `uuid` skips MM_PARSER_MAP (the `type`
// is not read) and is taken by its media member: {type:"text", uuid, image_url} is an IMAGE. Such
// a part is refused (the uuid keys vLLM's multimodal cache, shared by every key:
// vllm-extensions.test.ts); should one get past that, it still counts as media, not text.
describe("a text-typed part with a uuid and a media member", () => {
  const part = { type: "text", text: "x", uuid: "u1", image_url: { url: "https://x.test/a.png" } };

  it("is refused", () => {
    expect(() => parseInferenceRequest("chat", { model: "served", messages: [{ role: "user", content: [part] }], max_tokens: 1 })).toThrow(/'uuid' \(in messages\[0\]\) is not accepted/);
  });

  it("counts as media, as vLLM reads it", () => {
    expect(mediaParts([{ role: "user", content: [part] }])).toBe(1);
  });
});

describe("eachMessagePart, the one walk of chat messages", () => {
  it("visits each message, then its content parts and tool calls; skips what is not a message or a list", () => {
    const image = { type: "image_url", image_url: { url: "u" } };
    const call = { id: "t", type: "function", function: { name: "f", arguments: "{}" } };
    const messages = [null, "x", { role: "user", content: ["a", image] }, { role: "assistant", content: "s", tool_calls: [call] }, { role: "user", content: { type: "text" } }];
    const seen: [unknown, string | null][] = [];
    eachMessagePart(messages, (item, from) => seen.push([item, from]));
    expect(seen).toEqual([[messages[2], null], ["a", "content"], [image, "content"], [messages[3], null], [call, "tool_calls"], [messages[4], null]]);
    eachMessagePart("not a list", () => expect.unreachable());
    expect(mediaParts(messages)).toBe(1);
  });
});
