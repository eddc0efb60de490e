import { expect } from "vitest";
import { type Harness, startShim } from "./shim-harness.ts";
import { loopbackServer } from "./shim-process.ts";

/**
 * A stand-in for LiteLLM answering with whatever usage a test sets. Chats in the shape the request
 * asks for (its `metadata.shape`): a JSON answer, a stream ending with OpenAI's usage-only chunk,
 * or LiteLLM's own last chunk, which keeps a choice and carries the whole request's usage. For the
 * shim's reading of a provider's usage (prompt-cache writes and reads) on every path.
 * `/v1/completions` and `/v1/embeddings` answer as LiteLLM's proxy does (found by review; BerriAI/
 * litellm main.py text_completion, streaming_handler.py, types/utils.py): a text completion
 * stream's chunks all keep choice index 0 whatever `n` is, one finish comes for all outputs, and
 * its usage chunk keeps a choice without `text` (exclude_none); embeddings' usage has no
 * completion_tokens member but 0.
 */
export type UsageShape = "json" | "usage-only" | "litellm";

export interface FakeLitellm {
  readonly url: string;
  /** The usage the next answers report. */
  usage: Record<string, unknown>;
  /** Requests it has received. */
  readonly received: number;
  close(): Promise<void>;
}

export async function startFakeLitellm(): Promise<FakeLitellm> {
  let received = 0;
  const server = await loopbackServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString()));
    req.on("end", () => {
      received++;
      const b = JSON.parse(body) as { model: string; stream?: boolean; metadata?: { shape?: UsageShape } };
      const frame = { id: "c1", created: 1, model: b.model };
      if (req.url?.endsWith("/embeddings")) {
        const data = [{ object: "embedding", index: 0, embedding: [0.1, 0.2] }];
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ model: b.model, data, object: "list", usage: { completion_tokens: 0, ...fake.usage } }));
        return;
      }
      if (req.url?.endsWith("/completions") && !req.url.endsWith("/chat/completions")) {
        const text = { ...frame, object: "text_completion" };
        if (!b.stream) {
          res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ ...text, choices: [{ text: " ok", index: 0, logprobs: null, finish_reason: "stop" }], usage: fake.usage }));
          return;
        }
        const chunk = (rest: object) => `data: ${JSON.stringify({ ...text, ...rest })}\n\n`;
        res.writeHead(200, { "content-type": "text/event-stream" });
        res.end(chunk({ choices: [{ text: " o", index: 0 }] }) + chunk({ choices: [{ text: "k", index: 0 }] }) + chunk({ choices: [{ index: 0, finish_reason: "stop" }] }) + chunk({ choices: [{ index: 0 }], usage: fake.usage }) + "data: [DONE]\n\n");
        return;
      }
      if (!b.stream) {
        const message = { role: "assistant", content: "ok" };
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ ...frame, object: "chat.completion", choices: [{ index: 0, message, finish_reason: "stop" }], usage: fake.usage }));
        return;
      }
      const chunk = (rest: object) => `data: ${JSON.stringify({ ...frame, object: "chat.completion.chunk", ...rest })}\n\n`;
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write(chunk({ choices: [{ index: 0, delta: { role: "assistant", content: "ok" }, finish_reason: null }] }));
      const stop = { index: 0, delta: {}, finish_reason: "stop" };
      if (b.metadata?.shape === "litellm") res.write(chunk({ choices: [stop], usage: fake.usage }));
      else res.write(chunk({ choices: [stop] }) + chunk({ choices: [], usage: fake.usage }));
      res.end("data: [DONE]\n\n");
    });
  });
  const fake: FakeLitellm = {
    url: server.url,
    usage: {},
    get received() {
      return received;
    },
    close: () => server.close(),
  };
  return fake;
}

/** A shim started with SHIM_CONFIG's `file` in front of a fake LiteLLM; `close` stops both. */
export async function shimOnFakeLitellm(file: Record<string, unknown>): Promise<{ h: Harness; upstream: FakeLitellm; close: () => Promise<void> }> {
  const upstream = await startFakeLitellm();
  const h = await startShim({ env: { SHIM_UPSTREAM_URL: upstream.url }, file });
  return { h, upstream, close: async () => {
    await h.close();
    await upstream.close();
  } };
}

const CREDIT = 1_000_000;

/**
 * Sends a chat of `messages` to `model` (5 completion tokens asked) with a new key of 1,000
 * credits, in `shape`; returns the charge its answer shows (the header or the SSE comment, checked
 * against the body's member where the answer has one) and its usage's prompt_tokens, having
 * checked that the key's ledger and its /v1/usage say the same.
 */
export async function chargedFor(h: Harness, shape: UsageShape, model: string, messages: unknown[]): Promise<{ credits: number; promptTokens: number }> {
  const { id, key } = await h.createKey({ credits: 1000 });
  const stream = shape !== "json";
  const res = await h.post(key, "/v1/chat/completions", { model, messages, max_tokens: 5, ...(stream ? { stream, stream_options: { include_usage: true }, metadata: { shape } } : {}) });
  expect(res.status).toBe(200);
  let credits: number;
  let promptTokens: number;
  if (stream) {
    const text = await res.text();
    credits = Number(/^: credits_charged=(\S+) /m.exec(text)![1]);
    const last = text.split("\n\n").filter((e) => e.startsWith("data: {")).map((e) => JSON.parse(e.slice(6)) as { usage?: { prompt_tokens: number }; credits_charged?: number }).find((c) => c.usage)!;
    // The usage-only chunk carries the figures too (LiteLLM's, with a choice, does not).
    if (shape === "usage-only") expect(last.credits_charged).toBe(credits);
    promptTokens = last.usage!.prompt_tokens;
  } else {
    credits = Number(res.headers.get("x-credits-charged"));
    const body = (await res.json()) as { credits_charged: number; usage: { prompt_tokens: number } };
    expect(body.credits_charged).toBe(credits);
    promptTokens = body.usage.prompt_tokens;
  }
  // The ledger and the key's report agree with what the answer said; the report's tokens are the usage's.
  expect((await h.store.getKey(id))!.balance).toBe(1000 * CREDIT - Math.round(credits * CREDIT));
  // From 2000, not the default current month: a month turning after the request would report none of it.
  const report = (await (await fetch(`${h.url}/v1/usage?from=2000-01-01`, { headers: { authorization: `Bearer ${key}` } })).json()) as { usage: { total_cost: number; total_tokens: number } };
  expect(report.usage).toMatchObject({ total_cost: credits, total_tokens: promptTokens + 5 });
  return { credits, promptTokens };
}
