import type { IncomingMessage, ServerResponse } from "node:http";
import { loopbackServer } from "./shim-process.ts";
import { type Harness, startShim } from "./shim-harness.ts";

/**
 * Responses API events as vLLM and OpenAI serialize them (pydantic: fields in order, `type` last),
 * for tests whose upstream is scripted event by event (test/api-shim/responses-*.test.ts).
 */

/** What a scripted upstream does with a request: writes the answer, and may cut the connection. */
export type Script = (req: IncomingMessage, res: ServerResponse, body: string) => void;

export const CREDIT = 1_000_000;

/** 1 credit a request, 0.001 credit a prompt token, 1 credit an output token; `prov` is a provider's model. */
export const PRICED_FILE = {
  pricing: { request: 1, models: { m: { promptPer1k: 1, completionPer1k: 1000 }, prov: { promptPer1k: 1, completionPer1k: 1000 } } },
  models: [{ name: "m", maxModelLen: 8192 }, { name: "prov", provider: true, maxModelLen: 8192, maxOutputTokens: 1000 }],
};

/** One event, with its `event:` line (vLLM, OpenAI) or without it (a proxy that writes data lines only). */
export const ev = (type: string, fields: Record<string, unknown>, seq: number, eventLine = true) =>
  `${eventLine ? `event: ${type}\n` : ""}data: ${JSON.stringify({ ...fields, sequence_number: seq, type })}\n\n`;

const response = (status: string, usage: unknown, extra: Record<string, unknown> = {}) => ({ response: { id: "resp_1", object: "response", status, output: [], usage, ...extra } });

export const created = (eventLine = true) => ev("response.created", response("in_progress", null), 0, eventLine);
export const inProgress = () => ev("response.in_progress", response("in_progress", null), 1);

/** The i-th output text delta (` word<i>` unless `text`). */
export const delta = (i: number, { text = ` word${i}`, eventLine = true }: { text?: string; eventLine?: boolean } = {}) =>
  ev("response.output_text.delta", { content_index: 0, delta: text, item_id: "msg_1", logprobs: [], output_index: 0 }, i + 1, eventLine);

/** A final event (`response.completed`, `.incomplete`, `.failed`) with its response's status, usage and any other members. */
export const final = (type: string, status: string, usage: unknown, extra: Record<string, unknown> = {}) => ev(type, response(status, usage, extra), 99);

/** The headers of an upstream's SSE answer. */
export const sse = (res: ServerResponse) => res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8" });

/** A script: the headers, `response.created`, then each of `events`, then the connection cut (50 ms later, once they are read). */
export const cutAfter = (...events: string[]): Script => (_q, res) => {
  sse(res);
  res.write(created(events[0]?.startsWith("event:") ?? true));
  for (const e of events) res.write(e);
  setTimeout(() => res.destroy(), 50);
};

/** `n` output text deltas. */
export const deltas = (n: number, eventLine = true): string[] => Array.from({ length: n }, (_, i) => delta(i + 1, { eventLine }));

/** An upstream that answers each request by the test's current `script`, keeping the body it was sent last. */
export interface ScriptedUpstream {
  readonly url: string;
  script: Script;
  readonly lastBody: string;
  close(): Promise<void>;
}

export async function scriptedUpstream(): Promise<ScriptedUpstream> {
  let lastBody = "";
  const upstream = {
    script: ((_q, res) => res.writeHead(500).end()) as Script,
    get lastBody() {
      return lastBody;
    },
  };
  const server = await loopbackServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (c: string) => (body += c));
    req.on("end", () => {
      lastBody = body;
      upstream.script(req, res, body);
    });
  });
  return Object.assign(upstream, { url: server.url, close: () => server.close() });
}

/** A shim (its SHIM_CONFIG file: PRICED_FILE unless given) in front of a scripted upstream; `close` stops both. */
export async function startScriptedShim(file: Record<string, unknown> = PRICED_FILE): Promise<{ h: Harness; upstream: ScriptedUpstream; close(): Promise<void> }> {
  const upstream = await scriptedUpstream();
  const h = await startShim({ file, env: { SHIM_UPSTREAM_URL: upstream.url } });
  return { h, upstream, close: async () => { await h.close(); await upstream.close(); } };
}
