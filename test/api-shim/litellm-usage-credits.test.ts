import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Harness } from "../support/shim-harness.ts";
import { chunk, DONE, tokenPricedShim, USAGE_FAILED } from "../support/litellm-script.ts";
import { loopbackServer } from "../support/shim-process.ts";

/**
 * A stream's credit figures in LiteLLM's usage chunk, which keeps a choice (the deployed stack's
 * upstream, `hosted_vllm/`): streaming_handler.py sends the whole request's usage on the finish
 * chunk, or on a chunk of its own after it (model_response_creator(): one choice, an empty delta,
 * finish_reason None, dropped by exclude_none). Before, only vLLM's usage-only chunk
 * (`choices: []`) got `credits_charged`/`credits_remaining`, so an SDK user of the deployed stack
 * never saw them in-band. Scripted upstream; the client is the `openai` SDK.
 */
const CREDIT = 1_000_000;
/** The upstream's events: `before` at once; `after` once the gate opens (or after 2 s). */
let script = { before: "", after: "" };
let gate: { open(): void; byClient: boolean } = { open() {}, byClient: false };

describe("LiteLLM's usage chunk that keeps a choice carries the stream's credit figures", () => {
  let h: Harness;
  let upstream: { url: string; close(): Promise<void> };
  beforeAll(async () => {
    upstream = await loopbackServer((req, res) => {
      req.resume();
      req.on("end", async () => {
        res.writeHead(200, { "content-type": "text/event-stream" });
        res.write(script.before);
        if (script.after !== "") {
          await new Promise<void>((resolve) => {
            const g = { byClient: false, open: () => ((g.byClient = true), clearTimeout(timer), resolve()) };
            // Past the wait, the client's opening comes too late to count.
            const timer = setTimeout(() => ((g.open = () => {}), resolve()), 2000);
            gate = g;
          });
        }
        res.end(script.after);
      });
    });
    // 10 prompt and 2 completion tokens cost 13.
    h = await tokenPricedShim(upstream.url);
  });
  afterAll(async () => {
    await h.close();
    await upstream.close();
  });

  const usage = (completion: number) => ({ usage: { prompt_tokens: 10, completion_tokens: completion, total_tokens: 10 + completion } });
  const role = chunk({ choices: [{ index: 0, delta: { role: "assistant", content: "" } }] });
  const answer = role + chunk({ choices: [{ index: 0, delta: { content: "Hello" } }] }) + chunk({ choices: [{ index: 0, delta: { content: " there" } }] });
  const finish = (extra: object = {}) => chunk({ choices: [{ index: 0, delta: {}, finish_reason: "stop" }], ...extra });
  /** LiteLLM's own usage chunk after the finish: a placeholder choice, its finish_reason dropped. */
  const ownUsage = chunk({ choices: [{ index: 0, delta: {} }], ...usage(2) });
  const done = DONE;
  const error = USAGE_FAILED;
  const ask = (streamOptions?: object) => ({ model: "smart", messages: [{ role: "user" as const, content: "say hello there" }], max_tokens: 5, stream: true as const, ...(streamOptions ? { stream_options: streamOptions } : {}) });

  /** Streams `before` (then `after`, once the client opens the gate) to the SDK for a new key: its chunks, what it was charged and what is left. */
  async function sdkStream(before: string, streamOptions?: object, after = "", opensGate?: (c: Record<string, unknown>) => boolean) {
    script = { before, after };
    const { id, key } = await h.createKey({ credits: 1000 });
    const chunks: Record<string, unknown>[] = [];
    for await (const c of await h.client(key).chat.completions.create(ask(streamOptions))) {
      const seen = c as unknown as Record<string, unknown>;
      chunks.push(seen);
      if (opensGate?.(seen)) gate.open();
    }
    const balance = (await h.store.getKey(id))!.balance;
    return { chunks, charged: 1000 - balance / CREDIT, remaining: balance / CREDIT };
  }
  const finishes = (chunks: Record<string, unknown>[]) => chunks.map((c) => (c.choices as { finish_reason?: string | null }[])[0]?.finish_reason).filter(Boolean);

  for (const [name, body] of [
    ["usage on its finish chunk", answer + finish(usage(2)) + done],
    ["usage on its own chunk after the finish", answer + finish() + ownUsage + done],
    ["usage on its own chunk after the finish, no [DONE] (the body ends)", answer + finish() + ownUsage],
  ] as const) {
    it(`${name}: a client that asked for usage finds the charge and the balance in its last chunk with usage, and its finish_reason`, async () => {
      const { chunks, charged, remaining } = await sdkStream(body, { include_usage: true });
      expect(charged).toBe(13); // the request, 10 prompt and 2 completion tokens: as before
      const withUsage = chunks.filter((c) => c.usage);
      expect(withUsage).toHaveLength(1);
      expect(withUsage[0]).toMatchObject({ usage: { prompt_tokens: 10, completion_tokens: 2 }, credits_charged: charged, credits_remaining: remaining });
      expect(finishes(chunks)).toEqual(["stop"]);
      expect(chunks.map((c) => (c.choices as { delta?: { content?: string } }[])[0]?.delta?.content ?? "").join("")).toBe("Hello there");
    });

    it(`${name}: a client that did not ask gets no usage and no figures in any chunk, charged the same`, async () => {
      const { chunks, charged } = await sdkStream(body);
      expect(charged).toBe(13);
      expect(chunks.some((c) => "usage" in c || "credits_charged" in c)).toBe(false);
      expect(finishes(chunks)).toEqual(["stop"]);
    });
  }

  it("usage on the finish chunk and again on its own chunk after it: only the last carries the figures, each goes out once", async () => {
    const { chunks, charged } = await sdkStream(answer + finish(usage(1)) + ownUsage + done, { include_usage: true });
    expect(charged).toBe(13); // the last usage wins
    const withUsage = chunks.filter((c) => c.usage);
    expect(withUsage.map((c) => [(c.usage as { completion_tokens: number }).completion_tokens, c.credits_charged])).toEqual([[1, undefined], [2, 13]]);
    expect(finishes(chunks)).toEqual(["stop"]);
  });

  it("LiteLLM's error in the usage chunk's place after it (BerriAI/litellm#41187): a whole stream, the held chunk written with the figures", async () => {
    script = { before: answer + finish(usage(2)) + error, after: "" };
    const { id, key } = await h.createKey({ credits: 1000 });
    const text = await (await h.post(key, "/v1/chat/completions", ask({ include_usage: true }))).text();
    const charged = 1000 - (await h.store.getKey(id))!.balance / CREDIT;
    expect(charged).toBe(13);
    expect(text).not.toContain('"error"');
    const events = text.split("\n\n").filter((e) => e.startsWith("data: {")).map((e) => JSON.parse(e.slice("data: ".length)));
    expect(events.at(-1)).toMatchObject({ choices: [{ finish_reason: "stop" }], usage: { prompt_tokens: 10 }, credits_charged: 13 });
    expect(text).toMatch(/\n: credits_charged=13 credits_remaining=\S+\n\ndata: \[DONE\]\n\n$/);
  });

  // Nothing with content is delayed: the upstream waits, after such a chunk, until the client has it.
  for (const [name, before, after, streamOptions] of [
    // vLLM's running usage (continuous_usage_stats, asked by the client) on content chunks, its finish chunk's included.
    ["vLLM's running usage on a content chunk", role + chunk({ choices: [{ index: 0, delta: { content: "Hello" } }], ...usage(1) }) + chunk({ choices: [{ index: 0, delta: { content: " there" }, finish_reason: "stop" }], ...usage(2) }), chunk({ choices: [], ...usage(2) }) + done, { include_usage: true, continuous_usage_stats: true }],
    ["LiteLLM's usage on a finish chunk with content", role + chunk({ choices: [{ index: 0, delta: { content: "Hello" } }] }) + chunk({ choices: [{ index: 0, delta: { content: " there" }, finish_reason: "stop" }], ...usage(2) }), done, { include_usage: true }],
    // Any choice with content keeps the chunk from being held, not only all of them (a mutation review's survivor).
    ["a chunk of two choices with the usage, one with content", role + chunk({ choices: [{ index: 0, delta: { content: "Hello" } }] }) + chunk({ choices: [{ index: 0, delta: { content: " there" }, finish_reason: "stop" }, { index: 1, delta: {}, finish_reason: "stop" }], ...usage(2) }), done, { include_usage: true }],
  ] as const) {
    it(`${name} is not held: the client reads it before anything follows, and is charged as before`, async () => {
      const { chunks, charged } = await sdkStream(before, streamOptions, after, (c) => finishes([c]).length > 0);
      expect(gate.byClient).toBe(true);
      expect(charged).toBe(13);
      expect(finishes(chunks)).toEqual(["stop"]);
    });
  }
});
