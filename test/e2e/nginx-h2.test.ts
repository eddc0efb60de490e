import * as http2 from "node:http2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RenderedEdge, startRenderedEdge } from "../support/rendered-edge.ts";

/** HTTP/2 clients through the rendered nginx edge. Ports of their own (62000-62002). */
const HTTPS_PORT = 62001;
let edge: RenderedEdge;
beforeAll(async () => {
  edge = await startRenderedEdge({
    stack: "h2edge", ports: { http: 62000, https: HTTPS_PORT, local: 62002 },
    settings: { adminCidrs: ["8.8.4.4/32"], limits: { maxBodyMb: 1 }, pricing: { models: { "qwen2.5-7b": { promptPer1k: 0.1, completionPer1k: 0.2 } } } },
  });
});
afterAll(() => edge?.close());

type Answer = { status: number; headers: http2.IncomingHttpHeaders; body: string; error?: string };
const connect = () => { const s = http2.connect(`https://localhost:${HTTPS_PORT}`); s.on("error", () => {}); return s; };
function send(s: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: string): Promise<Answer> {
  return new Promise((resolve) => {
    const r = s.request(headers);
    let h: http2.IncomingHttpHeaders = {}; let b = "";
    r.on("response", (x) => (h = x)); r.setEncoding("utf8"); r.on("data", (d: string) => (b += d));
    r.on("end", () => resolve({ status: Number(h[":status"]), headers: h, body: b }));
    r.on("error", (e) => resolve({ status: Number(h[":status"] ?? 0), headers: h, body: b, error: String(e) }));
    r.end(body);
  });
}
const chat = (key: string) => ({ ":method": "POST", ":path": "/v1/chat/completions", authorization: `Bearer ${key}`, "content-type": "application/json" });

describe("HTTP/2 through nginx", () => {
  it("a cancelled stream (RST_STREAM) is aborted upstream and charged as over HTTP/1.1; its neighbour on the connection finishes, charged its usage", async () => {
    const a = await edge.shim.createKey({ credits: 1000 }), b = await edge.shim.createKey({ credits: 1000 });
    edge.shim.fake.set({ tokenDelayMs: 50, defaultTokens: 60 });
    const { aborted } = edge.shim.fake.counters;
    const s = connect();
    const ask = JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "long" }], max_tokens: 60, stream: true, stream_options: { include_usage: true } });
    const ra = s.request(chat(a.key));
    const other = send(s, chat(b.key), ask);
    ra.end(ask);
    let seen = "", id = "";
    ra.on("response", (h) => (id = String(h["x-request-id"])));
    ra.setEncoding("utf8");
    await new Promise<void>((done) => ra.on("data", (d: string) => { seen += d; if ((seen.match(/"content":" ?t\d/g) ?? []).length >= 5) { ra.close(http2.constants.NGHTTP2_CANCEL); done(); } }));
    await edge.shim.fake.until((c) => c.aborted > aborted);
    expect((await edge.shim.waitForRequestLog((e) => e.reqId === id)).status).toBe(499);
    const ob = await other;
    expect(ob.body).toContain('"completion_tokens":60');
    const charged = Number(/credits_charged=([\d.]+)/.exec(ob.body)![1]);
    expect((await edge.shim.store.getKey(b.id))!.balance).toBe(Math.round((1000 - charged) * 1e6));
    expect((await edge.shim.store.getKey(a.id))!.held).toBe(0);
    s.close();
    edge.shim.fake.reset();
  });

  it("a space or DEL in the URL, which nginx's HTTP/2 parser refuses itself: the 400 says to percent-encode it", async () => {
    const s = connect();
    for (const path of ["/v1/models?x=a b", "/v1/models?x=\u007f"]) {
      const a = await send(s, { ":method": "GET", ":path": path, authorization: `Bearer ${edge.key}` });
      expect(a.status, path).toBe(400);
      expect(JSON.parse(a.body).error.message, path).toMatch(/percent-encode it/);
    }
    s.close();
  });
});
