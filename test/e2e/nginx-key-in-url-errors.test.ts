import * as net from "node:net";
import * as tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RenderedEdge, startRenderedEdge } from "../support/rendered-edge.ts";

/**
 * A key in the URL, refused before nginx chooses a location: what that refusal must leave as it
 * was (found by review of that change). 127.0.0.2 is the tenant's client (allowedCidrs),
 * 127.0.0.3 the operator's (adminCidrs only), 127.0.0.5 a stranger.
 */
/** Above Linux's ephemeral range (32768-60999), where no outgoing connection can hold them. */
const HTTP_PORT = 61600, HTTPS_PORT = 61601, LOCAL_PORT = 61602;
let edge: RenderedEdge;
let key: string;

beforeAll(async () => {
  edge = await startRenderedEdge({
    stack: "keyurl",
    settings: { allowedCidrs: ["127.0.0.2/32"], adminCidrs: ["127.0.0.3/32"], limits: { maxBodyMb: 1 } },
    ports: { http: HTTP_PORT, https: HTTPS_PORT, local: LOCAL_PORT },
  });
  key = edge.key;
});
afterAll(() => edge?.close());

interface Raw { status: number; headers: Record<string, string>; body: string }
/** `request` sent byte for byte over TLS from the loopback address `from`. */
function raw(from: string, request: string): Promise<Raw> {
  return new Promise((resolve, reject) => {
    let out = "";
    const socket = net.connect({ host: "127.0.0.1", port: HTTPS_PORT, localAddress: from });
    const s = tls.connect({ socket, servername: "localhost", ca: edge.nginx.certificate }, () => s.write(request));
    s.setEncoding("latin1");
    s.on("data", (d: string) => (out += d));
    s.on("error", reject);
    s.on("close", () => {
      const [head = "", ...rest] = out.split("\r\n\r\n");
      const [statusLine = "", ...lines] = head.split("\r\n");
      const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]));
      resolve({ status: Number(statusLine.split(" ")[1]), headers, body: rest.join("\r\n\r\n") });
    });
  });
}
/** `request` sent byte for byte over plain HTTP (port 80's server) from the loopback address `from`: the whole answer. */
function clearText(from: string, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = "";
    const s = net.connect({ host: "127.0.0.1", port: HTTP_PORT, localAddress: from }, () => s.write(request));
    s.setEncoding("latin1");
    s.on("data", (d: string) => (out += d));
    s.on("error", reject);
    s.on("close", () => resolve(out));
  });
}
const code = (r: Raw) => { try { return (JSON.parse(r.body) as { error: { code: string } }).error.code; } catch { return `not JSON: ${r.body.slice(0, 40)}`; } };

describe("a key in the URL, refused before nginx chooses a location", () => {
  it("stays out of the error log on a preflight with a Content-Length over client_max_body_size (nginx's 413 quotes the request line)", async () => {
    const res = await raw("127.0.0.2", `OPTIONS /v1/chat/completions?key=${key} HTTP/1.1\r\nHost: localhost\r\nOrigin: https://app.example\r\n` +
      "Access-Control-Request-Method: POST\r\nContent-Length: 5000000\r\nConnection: close\r\n\r\n");
    // Answered as any preflight (the request itself then gets the 400 the app can read); it was a
    // 413 whose "[error] … client intended to send too large body" line quoted the request line.
    expect([res.status, res.headers["access-control-allow-origin"], res.headers["access-control-max-age"]]).toEqual([204, "*", "86400"]);
    expect(res.headers["x-request-id"]).toMatch(/^[0-9a-f]{32}$/);
    await new Promise((r) => setTimeout(r, 300));
    expect(edge.nginx.output()).not.toContain(key.slice(19));
  });

  it("leaves an error nginx raised before choosing a location a status and body that agree (the error page's internal redirect re-ran the server's rewrite)", async () => {
    const cases: [string, string][] = [
      ["127.0.0.2", `TRACE /v1/models?key=${key} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`],
      ["127.0.0.2", `POST /v1/chat/completions?key=${key} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\n`],
    ];
    for (const [from, request] of cases) {
      const res = await raw(from, request);
      const what = request.split(" ")[0]!;
      // The error's own answer, not a 405 or 501 saying api_key_in_url (the error page's internal
      // redirect ran the server's rewrite again).
      expect([[405, "method_not_allowed"], [501, "not_implemented"], [501, "invalid_request"]], what).toContainEqual([res.status, code(res)]);
    }
    // Port 80 the same: not a 405 saying https_required.
    const plain = await clearText("127.0.0.2", `TRACE /v1/models?key=${key} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
    expect(plain).toMatch(/^HTTP\/1\.1 405 /);
    expect(plain).toContain('"code":"method_not_allowed"');
  });

  it("answers those errors in JSON with a request id, not nginx's HTML 403, from an address the path's location does not serve (the operator's /admin included)", async () => {
    const big = `X-Big: ${"a".repeat(20_000)}\r\n`;
    const cases: [string, string][] = [
      ["127.0.0.5", `TRACE /v1/models?key=${key} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`],
      ["127.0.0.5", `GET /v1/models?key=${key} HTTP/1.1\r\nHost: localhost\r\n${big}Connection: close\r\n\r\n`],
      // The operator's own address, on the admin API it is allowed: $location_client read the error page's $uri.
      ["127.0.0.3", `TRACE /admin/keys?token=${key} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`],
      ["127.0.0.3", `GET /admin/keys?token=${key} HTTP/1.1\r\nHost: localhost\r\n${big}Connection: close\r\n\r\n`],
    ];
    for (const [from, request] of cases) {
      const res = await raw(from, request);
      const what = `${from} ${request.split(" ")[0]} ${request.includes("X-Big") ? "big headers" : ""}`;
      expect(res.headers["content-type"], what).toBe("application/json");
      expect(res.headers["x-request-id"], what).toMatch(/^[0-9a-f]{32}$/);
      expect(code(res), what).toMatch(/^(method_not_allowed|invalid_request|api_key_in_url|forbidden)$/);
    }
  });

  // Found by mutation review: the forbidden location's own answer (no error before it) was pinned
  // by no test: without its default_type, x-request-id or 403 every test passed, and without its
  // client_max_body_size 0 a Content-Length over the limit became nginx's 413, whose error-log
  // line quoted the request line, key and all.
  it("answers a key in the URL from an address the path's location does not serve with its JSON 403 and a request id, whatever the Content-Length, and logs no key", async () => {
    const cases: [string, string][] = [["127.0.0.5", `GET /v1/models?key=${key} HTTP/1.1`], ["127.0.0.3", `POST /v1/chat/completions?key=${key} HTTP/1.1`], ["127.0.0.2", `GET /metrics?key=${key} HTTP/1.1`]];
    for (const [from, line] of cases) {
      // A Content-Length over client_max_body_size (1 MB here) from one address: nginx waits out its body (~5 s).
      for (const length of from === "127.0.0.5" ? ["", "Content-Length: 5000000\r\n"] : [""]) {
        const res = await raw(from, `${line}\r\nHost: localhost\r\n${length}Connection: close\r\n\r\n`);
        const what = `${from} ${line.split("?")[0]} ${length.trim()}`;
        expect([res.status, code(res), res.headers["content-type"]], what).toEqual([403, "forbidden", "application/json"]);
        expect(res.headers["x-request-id"], what).toMatch(/^[0-9a-f]{32}$/);
      }
    }
    await new Promise((r) => setTimeout(r, 300));
    expect(edge.nginx.output()).not.toContain(key.slice(19));
  });

  it("stays out of the error log with a malformed chunked body, which nginx reads and discards after refusing (its line quoted the request line)", async () => {
    const body = "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nnot a chunk\r\n0\r\n\r\n";
    const refused = await raw("127.0.0.2", `POST /v1/chat/completions?key=${key} HTTP/1.1\r\nHost: localhost\r\n${body}`);
    expect([refused.status, code(refused)]).toEqual([400, "api_key_in_url"]);
    const clear = await clearText("127.0.0.2", `POST /v1/chat/completions?key=${key} HTTP/1.1\r\nHost: localhost\r\n${body}`);
    expect(clear).toMatch(/^HTTP\/1\.1 400 [\s\S]*"code":"https_required"/);
    await new Promise((r) => setTimeout(r, 300));
    expect(edge.nginx.output()).not.toContain(key.slice(19));
  });

  it("stays out of the error log with a malformed chunked body when the answer is the 403 (the path's location does not serve the address), and answers in JSON", async () => {
    const malformed = "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nnot a chunk\r\n0\r\n\r\n";
    for (const [from, line] of [
      ["127.0.0.2", `POST /admin/keys?key=${key} HTTP/1.1`], // the tenant's client on an admin path
      ["127.0.0.2", `GET /metrics?key=${key} HTTP/1.1`],
      ["127.0.0.3", `POST /v1/chat/completions?key=${key} HTTP/1.1`], // the operator's machine on the API
    ]) {
      // It went on to error_page's @forbidden, whose log is the server's: nginx discarded the body
      // there and quoted the request line (and the client got nginx's HTML 400).
      // (nginx makes the answer's status 400 as it finds the body malformed; the body stays the
      // refusal's.)
      const res = await raw(from!, `${line}\r\nHost: localhost\r\n${malformed}`);
      expect([res.status, code(res)], line).toEqual([400, "forbidden"]);
    }
    await new Promise((r) => setTimeout(r, 300));
    expect(edge.nginx.output()).not.toContain(key.slice(19));
  });

  it("stays out of the error log with a malformed chunked body on a method nginx refuses before choosing a location (TRACE: 405), on 443 and port 80", async () => {
    const request = `TRACE /v1/models?key=${key} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nnot a chunk\r\n0\r\n\r\n`;
    expect((await raw("127.0.0.2", request)).status).toBe(400); // nginx's, for the malformed body
    const clear = await clearText("127.0.0.2", request);
    expect(clear).toMatch(/^HTTP\/1\.1 4\d\d /);
    await new Promise((r) => setTimeout(r, 300));
    expect(edge.nginx.output()).not.toContain(key.slice(19));
  });
  // Found by the pentest of 2026-12-08: nginx's error-log lines (a body over client_max_body_size,
  // a shim it cannot reach, times out on or that closes early) end with the request's Referer, as
  // sent: a page whose own URL holds a key (`?key=sk-gs-…`) sent it to the log with every such
  // line, whenever the browser sends the whole URL (a Referrer-Policy of unsafe-url or
  // no-referrer-when-downgrade, older browsers' default).
  it("refuses a key in the Referer header (the page's URL) before any error-log line can quote it, on 443 and port 80", async () => {
    const referer = `Referer: https://app.example/chat?key=${key}\r\n`;
    const over = "Content-Length: 5000000\r\nConnection: close\r\n\r\n";
    const refused = await raw("127.0.0.2", `POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n${referer}${over}`);
    expect([refused.status, code(refused)]).toEqual([400, "api_key_in_url"]);
    expect(JSON.parse(refused.body).error.message).toContain("Referer");
    // From an address the path's location does not serve, that location's own answer, as for a key in the URL.
    const stranger = await raw("127.0.0.5", `POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n${referer}${over}`);
    expect([stranger.status, code(stranger)]).toEqual([403, "forbidden"]);
    // Sent over plain HTTP, the page's URL (and the key in it) crossed the network in clear.
    expect(await clearText("127.0.0.2", `POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n${referer}${over}`))
      .toMatch(/^HTTP\/1\.1 400 [\s\S]*"code":"https_required"/);
    // A Referer without a key is no reason to refuse: nginx's 413 as before.
    const plain = await raw("127.0.0.2", `POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nReferer: https://app.example/chat\r\n${over}`);
    expect([plain.status, code(plain)]).toEqual([413, "request_too_large"]);
    await new Promise((r) => setTimeout(r, 300));
    expect(edge.nginx.output()).not.toContain(key.slice(19));
  }, 90_000); // nginx waits out each unsent 5 MB body (~5 s)

  it("answers a browser's preflight from a page whose URL holds a key with its 204, as any preflight (the request itself then gets the 400 the app can read)", async () => {
    const res = await raw("127.0.0.2", `OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nOrigin: https://app.example\r\n` +
      `Referer: https://app.example/chat?key=${key}\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization, content-type\r\nConnection: close\r\n\r\n`);
    expect([res.status, res.headers["access-control-allow-origin"]]).toEqual([204, "*"]);
    await new Promise((r) => setTimeout(r, 300));
    expect(edge.nginx.output()).not.toContain(key.slice(19));
  });
});
