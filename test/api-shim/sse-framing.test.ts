import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startShim, type Harness } from "../support/shim-harness.ts";
import { sseEvents } from "../../api-shim/src/metering/sse.ts";
import { StreamMeter } from "../../api-shim/src/metering/metering.ts";
import { ResponsesMeter } from "../../api-shim/src/metering/responses-stream.ts";

/**
 * The shim against the ways upstreams frame a chat stream's SSE (docs/api-shim/streaming.md, "Streams as
 * other servers frame them"): each framing one recorded stream, written piece by piece by a scripted
 * upstream and read by the openai SDK; a split fuzz of sseEvents and the meter; and the framings
 * it got wrong (found by review): llama.cpp's `error:` field, a whole answer that ends with
 * neither usage nor [DONE], and `[DONE]` with whitespace after it.
 */
const CREDIT = 1_000_000;
const PROMPT = 7;
const COMPLETION = 3;
const frame = { id: "chatcmpl-1", object: "chat.completion.chunk", created: 1, model: "smart" };
const TOKENS = ["Hé", "llo ", "wörld 😀"];
const chunk = (delta: Record<string, unknown>, finish: string | null = null) => JSON.stringify({ ...frame, choices: [{ index: 0, delta, finish_reason: finish }] });
/** The answer's data payloads: role, three tokens, the finish. */
const answer = [chunk({ role: "assistant", content: "" }), ...TOKENS.map((t) => chunk({ content: t })), chunk({}, "stop")];
const usageChunk = JSON.stringify({ ...frame, choices: [], usage: { prompt_tokens: PROMPT, completion_tokens: COMPLETION, total_tokens: PROMPT + COMPLETION } });
const payloads = [...answer, usageChunk];
const lf = (data: string) => `data: ${data}\n\n`;
const vllmError = (code: number, message: string) => lf(JSON.stringify({ error: { message, type: "InternalServerError", param: null, code } }));
/** llama.cpp before PR #16109 (2025-09): server_sent_event(sink, "error", …), then `data: [DONE]` on its OpenAI routes. */
const llamaError = (code: number, message: string, type: string) => `error: ${JSON.stringify({ code, message, type })}\n\n`;

interface Framing {
  name: string;
  /** The stream's text, one upstream write each. */
  events: string[];
  /** The upstream reported usage (else the estimate is charged, as for a stream without usage). */
  usage: boolean;
}
const framings: Framing[] = [
  { name: "vLLM: `data: ` and a blank line", events: [...payloads.map(lf), lf("[DONE]")], usage: true },
  { name: "`data:` without the space (TGI's axum)", events: [...payloads.map((d) => `data:${d}\n\n`), "data:[DONE]\n\n"], usage: true },
  { name: "CRLF with `: ping - …` comments (sse-starlette)", events: [...payloads.flatMap((d, i) => [`data: ${d}\r\n\r\n`, ...(i === 2 ? [": ping - 2026-01-01 00:00:00.000000\r\n\r\n"] : [])]), "data: [DONE]\r\n\r\n"], usage: true },
  { name: "id:, event: and retry: lines", events: [...payloads.map((d, i) => `id: ${i}\nevent: message\nretry: 1000\ndata: ${d}\n\n`), lf("[DONE]")], usage: true },
  { name: "data over several data: lines (sse-starlette splits on newlines)", events: [...payloads.map((d) => `data: ${d.replace(/,"/g, ',\ndata: "')}\n\n`), lf("[DONE]")], usage: true },
  { name: "every event in one write", events: [[...payloads.map(lf), lf("[DONE]")].join("")], usage: true },
  { name: "[DONE] without its blank line at the end of the body", events: [...payloads.map(lf), "data: [DONE]"], usage: true },
  { name: "[DONE] with spaces after it", events: [...payloads.map(lf), "data: [DONE]   \n\n"], usage: true },
  { name: "no usage, [DONE]", events: [...answer.map(lf), lf("[DONE]")], usage: false },
  { name: "no usage, no [DONE], every output finished (TGI before #2221, ik_llama.cpp#467, llama-box#2)", events: answer.map(lf), usage: false },
];

let upstream: Server;
let h: Harness;
/** What the scripted upstream writes next: each piece a write, 1 ms apart; then it ends its body. */
let pieces: (string | Buffer)[] = [];
beforeAll(async () => {
  upstream = createServer((req, res) => {
    req.resume();
    req.on("end", async () => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      for (const [i, piece] of pieces.entries()) {
        if (i > 0) await new Promise((r) => setTimeout(r, 1));
        if (res.destroyed) return;
        res.write(piece);
      }
      res.end();
    });
  });
  await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
  h = await startShim({
    env: { SHIM_UPSTREAM_URL: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1`, SHIM_UPSTREAM_API_KEY: "" },
    file: { models: [{ name: "smart", maxModelLen: 8192 }], pricing: { request: 1, models: { smart: { promptPer1k: 1000, completionPer1k: 1000 } } } },
  });
});
afterAll(async () => {
  await h.close();
  upstream.closeAllConnections();
  await new Promise((r) => upstream.close(r));
});

const ask = (wantUsage: boolean) => ({ model: "smart", messages: [{ role: "user" as const, content: "hi" }], max_tokens: 20, stream: true as const, ...(wantUsage ? { stream_options: { include_usage: true } } : {}) });

/** Streams `split` through the shim to the SDK: the chunks it yielded, the error it raised, the charge and the request's log line. */
async function viaSdk(split: (string | Buffer)[], wantUsage: boolean) {
  pieces = split;
  const { id, key } = await h.createKey({ credits: 1000 });
  const chunks: Record<string, unknown>[] = [];
  let error: unknown = null;
  try {
    for await (const c of await h.client(key).chat.completions.create(ask(wantUsage))) chunks.push(c as unknown as Record<string, unknown>);
  } catch (e) {
    error = e;
  }
  const line = await h.waitForRequestLog((e) => e.keyId === id);
  const charged = 1000 * CREDIT - (await h.store.getKey(id))!.balance;
  const content = chunks.map((c) => (c.choices as { delta?: { content?: string } }[])[0]?.delta?.content ?? "").join("");
  return { chunks, content, error, charged, line };
}

/** Streams `split` through the shim with fetch: the raw text the client got, the charge and the log line. */
async function raw(split: string[]) {
  pieces = split;
  const { id, key } = await h.createKey({ credits: 1000 });
  const text = await (await h.post(key, "/v1/chat/completions", ask(false))).text();
  const line = await h.waitForRequestLog((e) => e.keyId === id);
  return { text, line, charged: 1000 * CREDIT - (await h.store.getKey(id))!.balance };
}

const noUsageUpstream = async () => (await viaSdk([...answer.map(lf), lf("[DONE]")], false)).charged;
const failures = async (reason: string) => Number(new RegExp(`shim_upstream_failures_total\\{reason="${reason}"\\} (\\d+)`).exec(await (await fetch(`${h.url}/metrics`)).text())?.[1] ?? 0);

describe("framings upstreams send, relayed to the openai SDK", () => {
  for (const f of framings) {
    for (const wantUsage of [false, true]) {
      it(`${f.name} (usage ${wantUsage ? "" : "not "}asked): the whole answer, no error, charged as its usage says`, async () => {
        const o = await viaSdk(f.events, wantUsage);
        expect(o.error, String(o.error)).toBeNull();
        expect(o.content).toBe(TOKENS.join(""));
        expect(o.line).toMatchObject({ status: 200 });
        expect(o.line.error).toBeUndefined();
        expect(o.charged).toBe(f.usage ? (1 + PROMPT + COMPLETION) * CREDIT : await noUsageUpstream());
        // The usage chunk only to a client that asked, once, with the figures; nothing else leaks.
        const withUsage = o.chunks.filter((c) => c.usage != null);
        if (!wantUsage || !f.usage) expect(withUsage).toEqual([]);
        else expect(withUsage.map((c) => c.usage)).toEqual([expect.objectContaining({ prompt_tokens: PROMPT, completion_tokens: COMPLETION })]);
        for (const c of o.chunks) expect(c.object).toBe("chat.completion.chunk");
      });
    }
  }

  it("a vLLM error event after content: the SDK raises after the content delivered", async () => {
    const o = await viaSdk([...payloads.slice(0, 3).map(lf), vllmError(500, "boom"), lf("[DONE]")], false);
    expect(o.error).toBeTruthy();
    expect(o.content).toBe(TOKENS.slice(0, 2).join(""));
  });
});

describe("llama.cpp's failure after its 200 (an `error:` line, then data: [DONE])", () => {
  const internals = "llama_decode failed: /home/ci/llama.cpp/src/llama-context.cpp:123";

  it("after content: told as the shim's upstream_error, never relayed, charged as vLLM's error event is", async () => {
    const before = await failures("stream_error");
    const llama = await raw([...payloads.slice(0, 3).map(lf), llamaError(500, internals, "server_error"), lf("[DONE]")]);
    expect(llama.text).not.toContain("llama-context.cpp");
    expect(llama.text).not.toMatch(/^error:/m);
    expect(llama.text).toContain('"code":"upstream_error"');
    expect(llama.text).not.toContain("data: [DONE]");
    expect(llama.line).toMatchObject({ error: "upstream_error", cause: "stream_error" });
    expect(await failures("stream_error")).toBe(before + 1);
    const vllm = await raw([...payloads.slice(0, 3).map(lf), vllmError(500, internals), lf("[DONE]")]);
    // The request and the two content chunks, no prompt (no finish came): not the estimated whole answer.
    expect(llama.charged).toBe(vllm.charged);
  });

  it("before any content (a prompt past the context size): the SDK raises the mapped error, and nothing is charged", async () => {
    const message = "the request exceeds the available context size, try increasing it";
    const llama = await viaSdk([llamaError(400, message, "exceed_context_size_error"), lf("[DONE]")], false);
    expect(llama.chunks).toEqual([]);
    expect(llama.charged).toBe(0);
    // What the same failure as vLLM's error event gets.
    const vllm = await viaSdk([vllmError(400, message), lf("[DONE]")], false);
    const told = (e: unknown) => ({ status: (e as { status?: number }).status, message: (e as Error).message });
    expect(told(llama.error)).toEqual(told(vllm.error));
    expect(llama.line.error).toBe(vllm.line.error);
  });

  it("an `error:` line that holds no JSON object is a comment, relayed as one", async () => {
    const o = await raw([...payloads.map(lf), "error: not json\n\n", lf("[DONE]")]);
    expect(o.text).toContain("error: not json\n\n");
    expect(o.line.error).toBeUndefined();
  });
});

describe("a whole answer whose upstream ends with neither usage nor [DONE]", () => {
  it("is a whole stream: [DONE] written, no error, charged and counted as a stream without usage", async () => {
    const before = await failures("no_usage");
    const o = await raw(answer.map(lf));
    expect(o.text).not.toContain('"error"');
    expect(o.text.endsWith("data: [DONE]\n\n")).toBe(true);
    expect(o.line).toMatchObject({ status: 200, cause: "no_usage" });
    expect(o.line.error).toBeUndefined();
    expect(o.charged).toBe(await noUsageUpstream());
    expect(await failures("no_usage")).toBe(before + 2); // this stream and the one without usage that ended with [DONE]
  });

  it("one whose answer is not whole (no finish came) is still cut short", async () => {
    const o = await raw(answer.slice(0, -1).map(lf));
    expect(o.text).toContain('"code":"upstream_error"');
    expect(o.line).toMatchObject({ error: "upstream_error", cause: "stream_cut" });
  });

  // SGLang 0.4.3 writes "finish_reason":"" on every chunk before the last (sgl-project/sglang#3912):
  // no finish (found by a review of the session's diff: counted as one, a cut was told as whole).
  const sglang = (content: string) => JSON.stringify({ ...frame, choices: [{ index: 0, delta: { content }, finish_reason: "" }] });
  it("a finish_reason of \"\" (SGLang 0.4.3's on every chunk) is no finish: a body ending there is cut short", async () => {
    const o = await raw([sglang("Hello"), sglang(" there")].map(lf));
    expect(o.text).toContain('"code":"upstream_error"');
    expect(o.line).toMatchObject({ error: "upstream_error", cause: "stream_cut" });
  });

  it("and an error event after such chunks is the upstream's failure, told, not an error in the usage chunk's place", async () => {
    const o = await raw([lf(sglang("Hello")), vllmError(500, "engine died"), lf("[DONE]")]);
    expect(o.text).toContain('"code":"upstream_error"');
    expect(o.line).toMatchObject({ error: "upstream_error", cause: "stream_error" });
  });
});

describe("[DONE] with whitespace after it (OpenAI's Python SDK ends on data starting with [DONE])", () => {
  it("chat and completions: the end of the stream, whatever the whitespace", () => {
    for (const end of ["data: [DONE] ", "data: [DONE]\t", "data:[DONE]  "]) {
      expect(new StreamMeter({ clientWantsUsage: false, hideContinuous: true, outputsPerPrompt: 1, outputs: 1 }).process(end).kind, end).toBe("done");
    }
    // Anything else after it is not the end.
    expect(new StreamMeter({ clientWantsUsage: false, hideContinuous: true, outputsPerPrompt: 1, outputs: 1 }).process("data: [DONE]x").kind).toBe("chunk");
  });

  it("Responses: before the final event it is the upstream's failure, as [DONE] alone is", () => {
    expect(new ResponsesMeter(100).process("data: [DONE]  ").kind).toBe("error");
  });
});

// ---------- split fuzz: pieces cut anywhere give the unsplit result ----------
function rng(seed: number) {
  let s = seed >>> 0;
  return () => (s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32;
}
/** `bytes` cut at `offsets` (out of order, repeated or at the ends: skipped). */
function splitAt(bytes: Buffer, offsets: number[]): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  for (const o of [...offsets].sort((a, b) => a - b)) {
    if (o <= at || o >= bytes.length) continue;
    out.push(bytes.subarray(at, o));
    at = o;
  }
  out.push(bytes.subarray(at));
  return out;
}
async function* chunksOf(split: Buffer[]) {
  for (const p of split) yield new Uint8Array(p);
}
/** What sseEvents and the meter make of one split: each event's kind and what is forwarded, and the usage charged. */
async function metered(split: Buffer[], wantUsage: boolean) {
  const meter = new StreamMeter({ clientWantsUsage: wantUsage, hideContinuous: true, outputsPerPrompt: 1, outputs: 1 });
  const out: string[] = [];
  for await (const e of sseEvents(chunksOf(split))) {
    const m = meter.process(e);
    out.push(`${m.kind}:${"forward" in m ? m.forward : ""}`);
    if (m.kind === "done") break;
  }
  return { out, usage: meter.usage(true, () => 99), complete: meter.complete };
}

// The CRLF framing: a line end, multi-byte characters and a comment each split between pieces.
const crlf = Buffer.from(framings[2]!.events.join(""), "utf8");

describe("split fuzz", () => {
  it("sseEvents and the meter: a cut at every byte offset gives the unsplit result", async () => {
    for (const wantUsage of [false, true]) {
      const whole = await metered([crlf], wantUsage);
      expect(whole.out.at(-1)).toBe("done:");
      for (let o = 1; o < crlf.length; o++) expect(await metered(splitAt(crlf, [o]), wantUsage), `cut at ${o}`).toEqual(whole);
    }
  });

  it("end to end: 50 random splits, each piece its own write, reach the SDK as the whole answer", async () => {
    const r = rng(crlf.length);
    for (let i = 0; i < 50; i++) {
      const wantUsage = i % 2 === 1;
      const offsets = Array.from({ length: 1 + Math.floor(r() * 8) }, () => 1 + Math.floor(r() * (crlf.length - 1)));
      // Pieces go as bytes: a cut may fall inside a multi-byte character.
      const o = await viaSdk(splitAt(crlf, offsets), wantUsage);
      const label = `cuts ${offsets.join(",")} usage=${wantUsage}`;
      expect(o.error, label).toBeNull();
      expect(o.content, label).toBe(TOKENS.join(""));
      expect(o.charged, label).toBe((1 + PROMPT + COMPLETION) * CREDIT);
      expect(o.chunks.filter((c) => c.usage != null).length, label).toBe(wantUsage ? 1 : 0);
    }
  }, 30_000);
});
