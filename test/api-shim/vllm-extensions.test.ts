import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Harness } from "../support/shim-harness.ts";
import { CREDIT, type ScriptedUpstream, startScriptedShim } from "../support/responses-events.ts";

/**
 * vLLM's extension parameters a key could turn against the money or other keys (found by a
 * hostile-tenant review; vllm-project/vllm chat_completion/protocol.py, chat_completion/serving.py,
 * entrypoints/chat_utils.py): refused before anything is held or forwarded.
 */

const PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

/** vLLM's answer to a chat request whose full generator raised a KeyError (api_router: create_error_response(e), 500). */
const KEY_ERROR_500 = JSON.stringify({ error: { message: "'text'", type: "InternalServerError", param: null, code: 500 } });

const chatAnswer = (usage = { prompt_tokens: 20, completion_tokens: 2, total_tokens: 22 }) =>
  JSON.stringify({ id: "chatcmpl-1", object: "chat.completion", created: 1, model: "m", choices: [{ index: 0, message: { role: "assistant", content: "ok" }, finish_reason: "stop" }], usage });

describe("vLLM's extension parameters from a hostile key", () => {
  let h: Harness;
  let upstream: ScriptedUpstream;
  let close: () => Promise<void>;
  let forwarded: string[] = [];
  beforeAll(async () => ({ h, upstream, close } = await startScriptedShim()));
  afterAll(() => close());
  /** The upstream answers each request with chatAnswer(), keeping what it was sent in `forwarded` (emptied). */
  const answerEveryRequest = () => {
    forwarded = [];
    upstream.script = (_q, res, body) => {
      forwarded.push(body);
      res.writeHead(200, { "content-type": "application/json" }).end(chatAnswer());
    };
  };

  it("(c) chat `echo` of a last assistant message with a non-text part is refused before it is held or forwarded: vLLM generates the whole answer, then fails", async () => {
    // vLLM, chat_completion/serving.py chat_completion_full_generator, after `async for res in
    // result_generator` has run the generation to its end:
    //     if request.echo: ... last_msg_content = conversation[-1]["content"] or ""
    //         if isinstance(last_msg_content, list):
    //             last_msg_content = "\n".join(msg["text"] for msg in last_msg_content)
    // With a template whose content format is "openai" (Gemma 3, Qwen2.5-VL, Llama 3.2 Vision: any
    // template that loops over message['content']), chat_utils._parse_chat_message_content_part
    // wraps an image part as `{"type": "image"}` (no "text"), so the join raises KeyError after
    // max_tokens were generated: a 500, which the shim charges nothing (docs/api-shim/money.md:
    // "An upstream failure before a response ... charges nothing"). Streamed, the echo chunk's
    // DeltaMessage(content=<list>) fails after the prompt's prefill the same way.
    forwarded = [];
    upstream.script = (_q, res, body) => {
      forwarded.push(body);
      setTimeout(() => res.writeHead(500, { "content-type": "application/json" }).end(KEY_ERROR_500), 20);
    };
    const { key, id } = await h.createKey({ credits: 100_000 });
    const body = {
      model: "m",
      max_tokens: 4000,
      echo: true,
      messages: [
        { role: "user", content: "Describe the picture at length." },
        { role: "assistant", content: [{ type: "image_url", image_url: { url: PNG } }] },
      ],
    };
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) statuses.push((await h.post(key, "/v1/chat/completions", body)).status);
    // Forwarded, it was three 5xx after three full generations, charged nothing.
    const charged = 100_000 * CREDIT - (await h.store.getKey(id))!.balance;
    expect({ forwarded: forwarded.length, statuses, charged }).toEqual({ forwarded: 0, statuses: [400, 400, 400], charged: 0 });
  });

  it("(c) an ordinary echo (text content, or no echo with an image) still goes through", async () => {
    answerEveryRequest();
    const { key } = await h.createKey({ credits: 1000 });
    const text = await h.post(key, "/v1/chat/completions", { model: "m", echo: true, max_tokens: 5, messages: [{ role: "user", content: "hi" }, { role: "assistant", content: [{ type: "text", text: "Once" }] }] });
    const image = await h.post(key, "/v1/chat/completions", { model: "m", max_tokens: 5, messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: PNG } }] }] });
    expect([text.status, image.status, forwarded.length]).toEqual([200, 200, 2]);
  });

  it("(b) a media part's `uuid` is refused: vLLM's multimodal cache is every key's, so a data-less part read, and a first sender poisoned, another key's image", async () => {
    // vLLM (entrypoints/chat_utils.py _parse_chat_message_content_mm_part and
    // _parse_chat_message_content_part): "For media items, if a user has provided one [uuid], use
    // it" as the item's cache identifier in place of its content hash, and with a uuid the media
    // member may be null ("Can only be None if UUID is provided", vllm.multimodal
    // ModalityData): the processed item is then taken from the multimodal cache by that id. The
    // cache is the server's, across every key: a part `{"type":"image_url","image_url":null,
    // "uuid":"<another key's id>"}` has the model describe the other key's image, and a key that
    // sends uuid "X" with an image of its own first has its image answer every later request
    // naming "X".
    answerEveryRequest();
    const owner = await h.createKey({ credits: 100_000 });
    const reader = await h.createKey({ credits: 100_000 });
    const own = { role: "user", content: [{ type: "image_url", image_url: { url: PNG }, uuid: "invoice-2026-0042" }, { type: "text", text: "Total?" }] };
    const theirs = { role: "user", content: [{ type: "image_url", image_url: null, uuid: "invoice-2026-0042" }, { type: "text", text: "Transcribe the image." }] };
    const a = await h.post(owner.key, "/v1/chat/completions", { model: "m", max_tokens: 5, messages: [own] });
    const b = await h.post(reader.key, "/v1/chat/completions", { model: "m", max_tokens: 5, messages: [theirs] });
    expect({ a: a.status, b: b.status, forwarded: forwarded.length }).toEqual({ a: 400, b: 400, forwarded: 0 });
    expect(((await b.json()) as { error: { param: string; message: string } }).error).toMatchObject({ param: "messages", message: expect.stringContaining("'uuid' (in messages[0]) is not accepted") });
    // Responses input parts too, and a uuid of null is no uuid.
    const input = await h.post(reader.key, "/v1/responses", { model: "m", input: [{ role: "user", content: [{ type: "input_image", image_url: PNG, uuid: "x" }] }] });
    expect(input.status).toBe(400);
    const plain = await h.post(owner.key, "/v1/chat/completions", { model: "m", max_tokens: 5, messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: PNG }, uuid: null }] }] });
    expect(plain.status).toBe(200);
  });

  it("(b, with --scheduling-policy priority) a key cannot put its requests ahead of every other key's with vLLM's `priority`", async () => {
    // vLLM: `priority: int` (ge -2^63): "lower means earlier handling"; with the priority policy
    // the v1 scheduler also preempts the running request of the highest value to make room, so
    // one key's -2^63 runs first and evicts other keys' requests (their KV recomputed later). The
    // shim forwards it untouched. (With vLLM's default FCFS policy a non-zero priority is refused
    // by vLLM before any work: harmless.)
    answerEveryRequest();
    const { key } = await h.createKey({ credits: 1000 });
    const res = await h.post(key, "/v1/chat/completions", `{"model":"m","max_tokens":5,"priority":-9223372036854775808,"messages":[{"role":"user","content":"me first"}]}`);
    expect({ status: res.status, forwarded: forwarded.length }).toEqual({ status: 400, forwarded: 0 });
    // vLLM's default, 0, passes.
    expect((await h.post(key, "/v1/chat/completions", { model: "m", max_tokens: 5, priority: 0, messages: [{ role: "user", content: "hi" }] })).status).toBe(200);
  });
});
