import { BadRequestError } from "openai";
import { describe, expect, it } from "vitest";
import { ShimError } from "../../api-shim/src/errors.ts";
import { normalizationGrowth, parseInferenceRequest, promptTokens } from "../../api-shim/src/requests/inference-request.ts";
import { TokenEstimate } from "../../api-shim/src/money/pricing.ts";
import { failure } from "../support/api-failure.ts";
import { startShim } from "../support/shim-harness.ts";

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
    expect(parts("chat", [{ role: "user", content: [{ type: "video_url" }, null, { text: "no type" }] }])).toBe(3);
    // vLLM's chat embeddings too.
    expect(parts("embeddings", [{ role: "user", content: [image, text, image] }])).toBe(2);
  });

  // Found by review: only type "text" was text, the others vLLM reads as text counted as media.
  it("counts none for the parts vLLM reads as text: a plain string, input_text, output_text, refusal, thinking", () => {
    const texts = ["x", { type: "input_text", text: "a" }, { type: "output_text", text: "b" }, { type: "refusal", refusal: "no" }, { type: "thinking", thinking: "hm" }];
    expect(parts("chat", [{ role: "user", content: texts }])).toBe(0);
    expect(parts("chat", [{ role: "user", content: [...texts, image] }])).toBe(1);
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

  // Found by review: token IDs went through the text estimate as JSON, a token per digit.
  it("counts a prompt of token IDs as one token per ID, a batch of them as the sum of their lengths", () => {
    const ids = Array.from({ length: 1000 }, (_, i) => 10_000 + i * 97); // five-digit IDs: 5,323 tokens as text
    expect(promptTokens("completions", { model: "m", prompt: ids })).toBe(1000);
    expect(promptTokens("completions", { model: "m", prompt: [ids, ids.slice(0, 10), []] })).toBe(1010);
    expect(promptTokens("embeddings", { model: "m", input: ids })).toBe(1000);
    expect(promptTokens("embeddings", { model: "m", input: [ids.slice(0, 7), ids.slice(0, 3)] })).toBe(10);
    // Text is still text: a batch of strings of digits is a token per digit.
    expect(promptTokens("completions", { model: "m", prompt: ["12345"] })).toBe(5 + Math.ceil('[""]'.length / 4));
  });

  const estimate = (...values: unknown[]) => {
    const e = new TokenEstimate();
    for (const v of values) e.add(JSON.stringify(v));
    return e.tokens;
  };
  const messages = [{ role: "user", content: "hi" }];

  // Found by review: the hold (renderedJsonBytes) counted these as prompt, the estimate did not.
  it("counts what the chat template prints besides the messages, as the hold does: tools, legacy functions, documents, object template kwargs", () => {
    const functions = [{ name: "lookup", description: "d".repeat(4000), parameters: { type: "object", properties: {} } }];
    const documents = [{ title: "a", text: "b".repeat(400) }];
    const kwargs = { custom_tools: functions, enable_thinking: false };
    expect(promptTokens("chat", { model: "m", messages, functions })).toBe(estimate(messages, functions));
    expect(promptTokens("chat", { model: "m", messages, documents })).toBe(estimate(messages, documents));
    // A scalar kwarg is not printed as JSON (and not counted by the hold either).
    expect(promptTokens("chat", { model: "m", messages, chat_template_kwargs: kwargs })).toBe(estimate(messages, functions));
    // vLLM's chat-style embeddings render `messages` (and tools) by the template too.
    expect(promptTokens("embeddings", { model: "m", messages, tools: functions })).toBe(estimate(messages, functions));
    // Normalization's growth reads the same parts: a non-ASCII character in a legacy function's description.
    const body = { model: "m", messages, functions: [{ name: "f", description: "\uFDFA" }] };
    expect(normalizationGrowth("chat", body, Buffer.from(JSON.stringify(body)))).toBe(30);
  });

  // Found by review: the digit rule made a data URL's base64 a token per digit (a 100 KB JPEG 49,057 tokens, 33,368 at bytes / 4).
  it("counts a non-text part (an image, audio, video) at most four bytes to a token; text parts beside it by the text rule", () => {
    const base64 = Buffer.from(Array.from({ length: 75_000 }, (_, i) => (i * 7919) % 256)).toString("base64"); // 100 KB, digits included
    const media = [
      { type: "image_url", image_url: { url: `data:image/jpeg;base64,${base64}` } },
      { type: "input_audio", input_audio: { data: base64, format: "wav" } },
      { type: "video_url", video_url: { url: `data:video/mp4;base64,${base64}` } },
    ];
    const text = { type: "text", text: "1 ".repeat(1000) };
    for (const part of media) {
      const alone = promptTokens("chat", { model: "m", messages: [{ role: "user", content: [part] }] });
      expect(alone, part.type).toBeLessThanOrEqual(Math.ceil(Buffer.byteLength(JSON.stringify([{ role: "user", content: [part] }])) / 4));
      expect(alone, part.type).toBeGreaterThanOrEqual(Math.ceil(Buffer.byteLength(JSON.stringify(part)) / 4));
      const withText = promptTokens("chat", { model: "m", messages: [{ role: "user", content: [text, part] }] });
      expect(withText - alone, part.type).toBeGreaterThanOrEqual(1000); // the text's digits, a token each
      expect(promptTokens("embeddings", { model: "m", messages: [{ role: "user", content: [part] }] }), part.type).toBe(alone);
    }
    // Content lists of text only are counted as their JSON, as string contents are.
    const texts = [{ role: "user", content: [{ type: "text", text: "a 12" }, text] }, { content: [] }, { role: "assistant", content: "ok", tool_calls: [{ id: "1" }] }];
    expect(promptTokens("chat", { model: "m", messages: texts })).toBe(estimate(texts));
  });

  // Found by review: these were estimated as payload, four characters to a token (4,000 CJK characters 1,016 tokens, not ~4,000).
  it("counts the parts vLLM reads as text by the text rule, as a text part", () => {
    const text = "中".repeat(4000);
    const tokens = (part: unknown) => promptTokens("chat", { model: "m", messages: [{ role: "user", content: [part] }] });
    const want = tokens({ type: "text", text });
    for (const part of [text, { type: "input_text", text }, { type: "output_text", text }, { type: "refusal", refusal: text }, { type: "thinking", thinking: text }]) {
      expect(tokens(part), JSON.stringify(part).slice(0, 30)).toBeGreaterThanOrEqual(want - 10);
    }
  });
});

// Found by review: an image by URL was ~10 tokens (its JSON at four characters a token) where
// vLLM counts hundreds to thousands, so a client that left a streamed vision request after the
// role chunk paid 156 prompt tokens for 8 images (~9,600 in vLLM's count). A fixed floor of 256
// a part was then found to be no lower bound (Qwen2-VL counts 16 for a 112×112 image, audio 6 to
// 25 a second): the floor is the model's own setting (SHIM_CONFIG models[].mediaPartTokens).
describe("the prompt estimate of a media part", () => {
  const FLOOR = 256; // Gemma 3's count an image, as an operator would configure it
  const alone = (part: unknown, kind: "chat" | "embeddings" = "chat", floor?: number) => promptTokens(kind, { model: "m", messages: [{ role: "user", content: [part] }] }, floor);
  const textOnly = promptTokens("chat", { model: "m", messages: [{ role: "user", content: [] }] });
  const media = [
    { type: "image_url", image_url: { url: "https://img.example/0.png" } },
    { type: "image_url", image_url: { url: "data:image/png;base64,iVBORw0KGgo=" } },
    { type: "input_audio", input_audio: { data: "UklGRg==", format: "wav" } },
    { type: "audio_url", audio_url: { url: "https://x.test/a.wav" } },
    { type: "video_url", video_url: { url: "https://x.test/v.mp4" } },
    { type: "image_embeds", image_embeds: "AAAA" },
    { type: "image_pil", image_pil: null },
    { type: "text", text: "x", uuid: "u1", image_url: { url: "https://x.test/a.png" } },
  ];

  it("without the model's floor, is the part's payload estimate alone: a few tokens for a part by URL", () => {
    for (const part of media) {
      const payload = Math.ceil(Buffer.byteLength(JSON.stringify(part)) / 4);
      expect(alone(part) - textOnly, JSON.stringify(part)).toBeLessThanOrEqual(payload + 1);
      expect(alone(part, "chat", 0), JSON.stringify(part)).toBe(alone(part));
    }
    expect(alone(media[0]) - textOnly).toBeLessThan(20);
  });

  it("with the model's floor, is at least that for every part vLLM reads as media (by URL, a small payload, other types, a text type with a uuid)", () => {
    for (const part of media) {
      expect(alone(part, "chat", FLOOR) - textOnly, JSON.stringify(part)).toBeGreaterThanOrEqual(FLOOR);
      // Not far above it: the floor replaces the small payload's estimate, it is not added to it.
      expect(alone(part, "chat", FLOOR) - textOnly, JSON.stringify(part)).toBeLessThanOrEqual(FLOOR + 1);
    }
    expect(alone(media[0], "embeddings", FLOOR)).toBe(alone(media[0], "chat", FLOOR));
    // A text part gets none.
    expect(alone({ type: "text", text: "hi" }, "chat", FLOOR)).toBe(alone({ type: "text", text: "hi" }));
  });

  it("counts each part: 8 images by URL and a question are at least 8 × the floor", () => {
    const images = Array.from({ length: 8 }, (_, i) => ({ type: "image_url", image_url: { url: `https://img.example/${i}.png` } }));
    const body = { model: "m", messages: [{ role: "user", content: [{ type: "text", text: "Compare these." }, ...images] }] };
    expect(promptTokens("chat", body, FLOOR)).toBeGreaterThanOrEqual(8 * FLOOR);
    expect(promptTokens("chat", body, FLOOR)).toBeLessThan(8 * FLOOR + 40); // the text and the JSON around the parts
    expect(promptTokens("chat", body)).toBeLessThan(8 * 20);
  });

  it("is the payload's estimate when that is larger (a data URL's bytes / 4)", () => {
    const base64 = Buffer.alloc(30_000, 1).toString("base64"); // 40,000 characters: ~10,000 tokens
    const part = { type: "image_url", image_url: { url: `data:image/png;base64,${base64}` } };
    for (const floor of [0, FLOOR]) {
      expect(alone(part, "chat", floor) - textOnly).toBeGreaterThanOrEqual(10_000);
      expect(alone(part, "chat", floor) - textOnly).toBeLessThanOrEqual(Math.ceil(Buffer.byteLength(JSON.stringify(part)) / 4) + 1);
    }
  });

  it("adds no floor for a chat template of the request's own (it is one more unbounded part of the hold, not media)", () => {
    const messages = [{ role: "user", content: "hi" }];
    const plain = promptTokens("chat", { model: "m", messages }, FLOOR);
    expect(promptTokens("chat", { model: "m", messages, chat_template: "{{ messages }}" }, FLOOR)).toBe(plain);
    expect(promptTokens("chat", { model: "m", messages, chat_template_kwargs: { chat_template: "{{ messages }}" } }, FLOOR)).toBe(plain);
  });
});

// Found by review: promptFields read only `prompt`, so a prompt of embeddings was estimated at 0 tokens.
describe("the prompt estimate of a completions request with prompt_embeds (vLLM --enable-prompt-embeds)", () => {
  it("is not zero for a prompt given as embeddings", () => {
    // A torch.save'd (seq_len × hidden) tensor, base64: ~100 KB here, hundreds of tokens in vLLM's count.
    const embeds = Buffer.alloc(75_000, 7).toString("base64");
    expect(promptTokens("completions", { model: "m", prompt_embeds: embeds, stream: true })).toBeGreaterThan(0);
    expect(promptTokens("completions", { model: "m", prompt: "hi", prompt_embeds: [embeds, embeds] })).toBeGreaterThan(promptTokens("completions", { model: "m", prompt: "hi" }));
  });

  it("counts each entry ceil(decoded bytes / 65,536) tokens, at least one: a lower bound (a 16,384-wide float32 hidden state per token)", () => {
    const of = (bytes: number) => Buffer.alloc(bytes, 7).toString("base64");
    const tokens = (prompt_embeds: unknown) => promptTokens("completions", { model: "m", prompt_embeds });
    expect(tokens(of(300_000))).toBe(5);
    expect(tokens(of(65_536))).toBe(1);
    expect(tokens(of(65_537))).toBe(2);
    expect(tokens(of(10))).toBe(1);
    expect(tokens("")).toBe(1);
    expect(tokens([of(300_000), of(10), of(131_072)])).toBe(5 + 1 + 2);
    expect(promptTokens("completions", { model: "m", prompt: "hi", prompt_embeds: [of(300_000)] })).toBe(promptTokens("completions", { model: "m", prompt: "hi" }) + 5);
    // Ignored where vLLM reads no prompt_embeds.
    expect(promptTokens("chat", { model: "m", messages: [{ role: "user", content: "hi" }], prompt_embeds: of(75_000) })).toBe(promptTokens("chat", { model: "m", messages: [{ role: "user", content: "hi" }] }));
  });

  // Found by review: at 16,384 bytes a token (bf16 at 8,192 wide), a float32 tensor, which vLLM's
  // own client example sends (transformers' default dtype), counted two to four times its rows.
  it("is no more than the rows of a float32 tensor, up to 16,384 wide (Llama 3.1 405B); narrower or bf16 ones count fewer", () => {
    const rows = 100;
    const tensor = (width: number, bytesPerValue: number) => Buffer.alloc(rows * width * bytesPerValue).toString("base64");
    for (const width of [4096, 8192, 16_384]) {
      expect(promptTokens("completions", { model: "m", prompt_embeds: tensor(width, 4) }), `float32 × ${width}`).toBeLessThanOrEqual(rows);
      expect(promptTokens("completions", { model: "m", prompt_embeds: tensor(width, 2) }), `bf16 × ${width}`).toBeLessThanOrEqual(rows);
    }
    expect(promptTokens("completions", { model: "m", prompt_embeds: tensor(16_384, 4) })).toBe(rows);
  });
});

// vLLM builds the template's variables as {tools, documents, …} and then applies
// chat_template_kwargs over them (`_chat_template_kwargs.update(chat_template_kwargs)`): a member of
// the same name replaces the request's own, and the template receives one list.
describe("tools and documents given both at the top level and in chat_template_kwargs", () => {
  const tools = [{ type: "function", function: { name: "lookup", description: "Looks a thing up. ".repeat(200), parameters: { type: "object", properties: { q: { type: "string" } } } } }];
  const documents = [{ title: "a", text: "b".repeat(2000) }];
  const messages = [{ role: "user", content: "hi" }];

  it("are estimated once (found by review: they were counted twice)", () => {
    const once = promptTokens("chat", { model: "m", messages, tools });
    expect(promptTokens("chat", { model: "m", messages, tools, chat_template_kwargs: { tools } })).toBe(once);
    expect(promptTokens("chat", { model: "m", messages, documents, chat_template_kwargs: { documents } })).toBe(promptTokens("chat", { model: "m", messages, documents }));
    // The kwargs' list is the one counted; null there leaves the template none.
    expect(promptTokens("chat", { model: "m", messages, tools: [], chat_template_kwargs: { tools } })).toBe(once);
    expect(promptTokens("chat", { model: "m", messages, tools, chat_template_kwargs: { tools: null } })).toBe(promptTokens("chat", { model: "m", messages }));
  });

  it("grow the prompt by normalization once; the hold still counts both as printed JSON (holding more is harmless)", () => {
    const nfkc = [{ type: "function", function: { name: "f", description: "\uFDFA" } }];
    const body = { model: "m", messages, tools: nfkc, chat_template_kwargs: { tools: nfkc } };
    expect(normalizationGrowth("chat", body, Buffer.from(JSON.stringify(body)))).toBe(30);
    const bytes = Buffer.byteLength(JSON.stringify(tools));
    expect(parseInferenceRequest("chat", { model: "m", messages, tools, chat_template_kwargs: { tools } }).renderedJsonBytes).toBe(2 * bytes);
  });
});

describe("echo", () => {
  it("is read as vLLM's pydantic reads a bool: the answer then starts with the prompt, which a stream's text estimate must not count", () => {
    const echo = (v: unknown) => parseInferenceRequest("completions", { model: "m", prompt: "x", echo: v }).echo;
    for (const v of [true, 1, "true", "True", "1", "yes", "on", "t", "y"]) expect(echo(v), JSON.stringify(v)).toBe(true);
    for (const v of [false, 0, "false", "0", "no", undefined, null]) expect(echo(v), JSON.stringify(v)).toBe(false);
  });

  it("in chat, holds only when vLLM echoes the last message: its content is not empty and its role is the answer's", () => {
    const echo = (last: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
      parseInferenceRequest("chat", { model: "m", messages: [{ role: "user", content: "q" }, last], echo: true, ...extra }).echo;
    // The answer's role is the assistant's, or with add_generation_prompt false the last message's own.
    expect(echo({ role: "assistant", content: "The answer is" })).toBe(true);
    expect(echo({ role: "assistant", content: [{ type: "text", text: "The answer is" }] })).toBe(true);
    expect(echo({ role: "user", content: "go on" }, { add_generation_prompt: false })).toBe(true);
    // Nothing echoed: the first text is generated, and counts.
    expect(echo({ role: "user", content: "go on" })).toBe(false);
    expect(echo({ role: "assistant", content: "" })).toBe(false);
    expect(echo({ role: "assistant", content: null, tool_calls: [] })).toBe(false);
    // An echo of a message with media is refused: vLLM would fail after generating (vllm-extensions.test.ts).
    expect(() => echo({ role: "assistant", content: [{ type: "image_url", image_url: { url: "x" } }] })).toThrow(/'echo' is not accepted/);
    expect(echo({ role: "assistant", content: [{ type: "text", text: "" }] })).toBe(false);
  });

  // Found by review: only a part's `text` was read, so these echoes were charged as generated (2,002 tokens for 2).
  it("in chat, reads the last message as vLLM does: plain string, input_text, output_text, refusal and thinking parts, joined by a line break", () => {
    const echo = (content: unknown[]) => parseInferenceRequest("chat", { model: "m", messages: [{ role: "user", content: "q" }, { role: "assistant", content }], echo: true }).echo;
    expect(echo(["The answer is"])).toBe(true);
    expect(echo([{ type: "input_text", text: "a" }])).toBe(true);
    expect(echo([{ type: "output_text", text: "a" }])).toBe(true);
    expect(echo([{ type: "refusal", refusal: "I can't" }])).toBe(true);
    expect(echo([{ type: "thinking", thinking: "hm" }])).toBe(true);
    // vLLM drops empty texts before joining (`if parse_res:`): nothing is echoed; a part without its text is skipped.
    expect(echo([{ type: "text", text: "" }, ""])).toBe(false);
    // A part with a uuid is refused whatever its type (vllm-extensions.test.ts).
    expect(() => echo([{ type: "text", text: "a", uuid: "u1", image_url: { url: "https://x.test/a.png" } }])).toThrow(/'uuid'/);
    expect(echo([{ type: "text", text: "" }, { type: "text", text: null }])).toBe(false);
    expect(echo([{ type: "refusal", text: "wrong member" }])).toBe(false);
  });
});

// Found by review: vLLM >= 0.11.1 (its PR #30249) answers `encoding_format` "bytes" and
// "bytes_only" with raw vectors (application/octet-stream) and the usage only in a `metadata`
// header, or nowhere: the shim found no usage, charged the request price alone, and relayed the
// binary body labelled application/json without the header the client decodes it with.
describe("embeddings encoding_format", () => {
  const parse = (encoding_format: unknown) => parseInferenceRequest("embeddings", { model: "m", input: "x", encoding_format });
  const refusal = (encoding_format: unknown): unknown => {
    try {
      parse(encoding_format);
    } catch (e) {
      return e;
    }
    return undefined;
  };

  it("takes OpenAI's two, float and base64, or none (null too: left to the upstream, as an unset parameter sent as null)", () => {
    expect(parseInferenceRequest("embeddings", { model: "m", input: "x" }).model).toBe("m");
    expect(parse(null).model).toBe("m");
    for (const v of ["float", "base64"]) expect(parse(v).model).toBe("m");
    // Not an embeddings parameter elsewhere: passed through as any unknown member.
    expect(parseInferenceRequest("chat", { model: "m", messages: [{ role: "user", content: "x" }], encoding_format: "bytes" }).model).toBe("m");
  });

  it("refuses any other value, whatever its type, naming the two it takes", () => {
    for (const v of ["bytes", "bytes_only", "FLOAT", "", 5, true, ["float"], { v: "float" }]) {
      const e = refusal(v);
      expect(e, JSON.stringify(v)).toBeInstanceOf(ShimError);
      expect(e).toMatchObject({ status: 400, code: "invalid_request", param: "encoding_format" });
      expect((e as ShimError).message).toMatch(/'float'.*'base64'/);
    }
  });

  it("is a BadRequestError for the SDK, before anything is held or forwarded; the SDK's own default (base64) and float pass", async () => {
    const h = await startShim();
    try {
      const { key, id } = await h.createKey({ credits: 10 });
      const c = h.client(key);
      const received = h.fake.counters.received;
      for (const encoding_format of ["bytes", "bytes_only", 5]) {
        const e = await failure(() => c.embeddings.create({ model: "bge-m3", input: "hello", encoding_format } as never));
        expect(e, JSON.stringify(encoding_format)).toBeInstanceOf(BadRequestError);
        expect(e.status).toBe(400);
        expect(e.error).toMatchObject({ type: "invalid_request_error", code: "invalid_request", param: "encoding_format" });
        expect(e.message).toMatch(/'float'.*'base64'/);
      }
      expect(h.fake.counters.received).toBe(received);
      expect(await h.store.getKey(id)).toMatchObject({ balance: 10_000_000, held: 0 });
      expect((await c.embeddings.create({ model: "bge-m3", input: "hello" })).data).toHaveLength(1);
      expect((await c.embeddings.create({ model: "bge-m3", input: "hello", encoding_format: "float" })).data[0]!.embedding.length).toBeGreaterThan(0);
    } finally {
      await h.close();
    }
  });
});
