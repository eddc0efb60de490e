import type { IncomingMessage, ServerResponse } from "node:http";
import { afterAll, beforeAll } from "vitest";
import { startShim, type Harness, type RequestLog } from "./shim-harness.ts";
import { loopbackServer } from "./shim-process.ts";

/**
 * Pieces of a LiteLLM proxy's chat stream, for tests that script one as an upstream (its
 * `hosted_vllm/` model named "smart"), and the shim in front of it.
 */

/** A shim in front of `upstreamUrl`, "smart" priced a credit per token and one per request, so a prompt charged or not shows in the charge. */
export function tokenPricedShim(upstreamUrl: string): Promise<Harness> {
  const pricing = { request: 1, models: { smart: { promptPer1k: 1000, completionPer1k: 1000 } } };
  return startShim({ file: { models: [{ name: "smart" }], pricing }, env: { SHIM_UPSTREAM_URL: upstreamUrl } });
}

const frame = { id: "chatcmpl-1", created: 1, model: "smart", object: "chat.completion.chunk" };

/** One chat.completion.chunk event with `rest` (choices, usage) in LiteLLM's frame. */
export const chunk = (rest: object): string => `data: ${JSON.stringify({ ...frame, ...rest })}\n\n`;

/**
 * LiteLLM's error event where its usage chunk failed to be built (BerriAI/litellm#41187, from
 * v1.94.0): its ProxyException's dict, code a string.
 */
export const USAGE_FAILED = `data: ${JSON.stringify({ error: { message: "litellm.APIConnectionError: TypeError: 'MockValSer' object cannot be converted to 'SchemaSerializer'", type: "None", param: "None", code: "500" } })}\n\n`;

export const DONE = "data: [DONE]\n\n";

/** A content delta for output `index`, a finish for it, and a usage-only chunk (vLLM's, `choices: []`). */
export const delta = (index: number, content: string): string => chunk({ choices: [{ index, delta: { content }, finish_reason: null }] });
export const finish = (index: number): string => chunk({ choices: [{ index, delta: {}, finish_reason: "stop" }] });
export const usageOnly = (prompt: number, completion: number): string => chunk({ choices: [], usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion } });

/** A chat stream request to "smart", with `extra` (n, stream_options) on it. */
export const ask = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({ model: "smart", messages: [{ role: "user", content: "say hello there, please, in two words" }], max_tokens: 5, stream: true, ...extra });

const CREDIT = 1_000_000;

export interface ScriptedLitellm {
  /** The shim in front of the upstream, there once the describe block's beforeAll ran. */
  h: Harness;
  /** What the default upstream sends, whole, once each request's body has come. */
  script: string;
  /** Streams `body` from the upstream for a new key (1000 credits): what the client read, what it was charged (credits), and its request's log line. */
  streamed(body: string, request?: Record<string, unknown>): Promise<{ text: string; line: RequestLog; charged: number }>;
}

/**
 * For a describe block: a scripted LiteLLM upstream with a tokenPricedShim in front, opened before
 * its tests and closed after them. The upstream answers each request with `handle`; by default
 * with `script` as an event stream, for `streamed` to set per request.
 */
export function scriptedLitellm(handle?: (req: IncomingMessage, res: ServerResponse) => void): ScriptedLitellm {
  let upstream: { url: string; close(): Promise<void> } | undefined;
  const s: ScriptedLitellm = {
    h: undefined as unknown as Harness,
    script: "",
    async streamed(body, request = ask()) {
      s.script = body;
      const { id, key } = await s.h.createKey({ credits: 1000 });
      const text = await (await s.h.post(key, "/v1/chat/completions", request)).text();
      const line = await s.h.waitForRequestLog((e) => e.keyId === id);
      const charged = (1000 * CREDIT - (await s.h.store.getKey(id))!.balance) / CREDIT;
      return { text, line, charged };
    },
  };
  beforeAll(async () => {
    upstream = await loopbackServer(
      handle ??
        ((req, res) => {
          req.resume();
          req.on("end", () => res.writeHead(200, { "content-type": "text/event-stream" }).end(s.script));
        }),
    );
    s.h = await tokenPricedShim(upstream.url);
  });
  afterAll(async () => {
    await s.h?.close();
    await upstream?.close();
  });
  return s;
}
