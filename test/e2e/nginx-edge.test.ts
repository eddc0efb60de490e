import type { IncomingHttpHeaders } from "node:http";
import { request } from "node:https";
import { connect } from "node:net";
import * as tls from "node:tls";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RenderedEdge, startRenderedEdge } from "../support/rendered-edge.ts";
import type { RunningNginx } from "../support/nginx.ts";
import type { Harness } from "../support/shim-harness.ts";

/**
 * What a client meets at the edge before the shim: plain http:// on port 80, the per-address
 * cap on parallel requests and a key put in the URL. Debian's nginx with the rendered nginx.conf (limits.connections 2, so
 * three streams reach it), the real shim and the fake vLLM. Ports of their own, so this file
 * runs beside the other nginx tests.
 */
/** Above Linux's ephemeral range (32768-60999), where no outgoing connection can hold them. */
const HTTP_PORT = 61700;
const HTTPS_PORT = 61701;
const LOCAL_PORT = 61702;

let shim: Harness;
let nginx: RunningNginx;
let key: string;
let edge: RenderedEdge | undefined;
const client = (base: string) => new OpenAI({ apiKey: key, baseURL: `${base}/v1`, maxRetries: 0, timeout: 20_000 });

/** Runs `fn` while this address holds two slow streams open through the API's port (its parallel limit). */
async function whileTwoStreamsAreHeld(fn: (https: OpenAI) => Promise<void>): Promise<void> {
  shim.fake.behaviour = { ...shim.fake.behaviour, tokenDelayMs: 300, defaultTokens: 10 };
  const https = client(`https://localhost:${HTTPS_PORT}`);
  const streams = [];
  try {
    for (let i = 0; i < 2; i++) streams.push(await https.chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "Count" }], stream: true }));
    await fn(https);
  } finally {
    for (const stream of streams) stream.controller.abort();
    shim.fake.behaviour = { ...shim.fake.behaviour, tokenDelayMs: 0 };
  }
}

beforeAll(async () => {
  edge = await startRenderedEdge({
    stack: "edge",
    settings: { adminCidrs: ["203.0.113.7/32"], limits: { maxBodyMb: 1, connections: 2 }, tls: { mode: "self-signed", domain: "llm.gpu-sandbox.test" } },
    ports: { http: HTTP_PORT, https: HTTPS_PORT, local: LOCAL_PORT },
  });
  ({ shim, nginx, key } = edge);
});

const secret = () => key.slice(key.lastIndexOf("_") + 1);
/** A key where clients put one: a query parameter (Azure's api-key, Gemini's key), a base URL's path; sent as is and percent-encoded. */
const spellings = () => [
  `/v1/models?api-key=${key}`, `/v1/chat/completions?key=${key}`, `/${key}/v1/models`,
  `/v1/models?api-key=%73k-gs-${key.slice(6)}`, `/v1/models?key=sk%2Dgs%2D${key.slice(6)}`, `/%2573k-gs-${key.slice(6)}/v1/models`,
  `/admin/keys?token=${key}`, `/metrics?key=${key}`,
  // Each hex digit of an encoded character encoded in turn (%25%37%33 -> %73 -> s), mixed with other spellings.
  `/v1/models?api-key=%25%37%33${key.slice(1)}`, `/v1/models?key=s%25%36%42%2D%25%36%37s%25%32%44${key.slice(6)}`, `/v1/models?key=%53K%2dGS-${key.slice(6)}`,
  // The key without its prefix (<id>_<secret>), its `_` as is or encoded.
  `/v1/models?key=${key.slice(6)}`, `/${key.slice(6, 18)}%5F${key.slice(19)}/v1/models`, `/v1/models?key=${key.slice(6, 18)}%25%35%46${key.slice(19)}`,
];

/** `method` `path` (sent as written, any method) over HTTPS, with `headers`. */
function send(method: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port: HTTPS_PORT, method, path, servername: "localhost", headers, ca: nginx.certificate }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

/** One raw request (what fetch would refuse to send) to `port` on loopback, over TLS for the HTTPS port; the whole answer. */
function raw(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = port === HTTPS_PORT
      ? tls.connect({ host: "127.0.0.1", port, servername: "localhost", ca: nginx.certificate }, () => socket.end(text))
      : connect({ host: "127.0.0.1", port }, () => socket.end(text));
    let answer = "";
    socket.setEncoding("utf8");
    socket.on("data", (d: string) => (answer += d));
    socket.on("end", () => resolve(answer));
    socket.on("error", reject);
  });
}

// The last test stops the shim (a restart, a deploy): nginx alone is left to stop then.
let shimStopped = false;
afterAll(() => (shimStopped ? edge?.nginx.stop() : edge?.close()));

describe("plain http:// on port 80, in front of an HTTPS endpoint", () => {
  const http = `http://localhost:${HTTP_PORT}`;

  it("tells an SDK given an http:// base URL to use https://, and that its key went unencrypted, rather than a false 'Invalid API key'", async () => {
    const received = shim.fake.counters.received;
    const err = await client(http).models.list().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    const apiError = err as InstanceType<typeof OpenAI.BadRequestError>;
    expect(apiError.error).toEqual({
      message: "This endpoint is served over https:// only: use https:// in the base URL. The key in this request was sent unencrypted: have it rotated (a new secret) by whoever issued it.",
      type: "invalid_request_error", param: null, code: "https_required",
    });
    expect(apiError.headers?.get("x-request-id")).toMatch(/^[0-9a-f]{32}$/);
    expect(apiError.headers?.get("location")).toBeNull();
    expect(shim.fake.counters.received).toBe(received);
  });

  it("tells a request with a key in its URL that the key went unencrypted, as for the header, rather than redirecting it with the key", async () => {
    // Found by review: the 308 took the key to https://, which an SDK follows, and the client
    // heard only api_key_in_url there, never that the key had crossed the network in clear.
    const received = shim.fake.counters.received;
    for (const path of spellings()) {
      const res = await fetch(`${http}${path}`, { method: path.includes("chat") ? "POST" : "GET", redirect: "manual" });
      const id = res.headers.get("x-request-id")!;
      expect([res.status, res.headers.get("location")], path).toEqual([400, null]);
      expect(res.headers.get("content-type"), path).toBe("application/json");
      expect(await res.json(), path).toEqual({ error: {
        message: "This endpoint is served over https:// only: use https:// in the base URL. The key in this request was sent unencrypted: have it rotated (a new secret) by whoever issued it.",
        type: "invalid_request_error", param: null, code: "https_required",
      } });
      expect(id, path).toMatch(/^[0-9a-f]{32}$/);
      await expect.poll(() => nginx.output().includes(`"request_id":"${id}"`)).toBe(true);
      expect(JSON.parse(nginx.output().split("\n").find((l) => l.includes(`"request_id":"${id}"`))!).uri, path).toBe("/[path redacted: it may hold a key]");
    }
    expect(shim.fake.counters.received).toBe(received);
    expect(nginx.output()).not.toContain(secret());
  });

  it("counts a key in Azure's `api-key` or Anthropic's `x-api-key` header as sent unencrypted too, rather than redirecting it", async () => {
    // Found by review: only Authorization counted, so these got the 308 and the client never heard its key went in clear.
    const received = shim.fake.counters.received;
    for (const header of ["authorization", "api-key", "x-api-key"]) {
      const res = await fetch(`${http}/v1/chat/completions`, { method: "POST", redirect: "manual", headers: { [header]: header === "authorization" ? `Bearer ${key}` : key } });
      expect([res.status, res.headers.get("location")], header).toEqual([400, null]);
      expect(((await res.json()) as { error: { code: string } }).error.code, header).toBe("https_required");
    }
    expect(shim.fake.counters.received).toBe(received);
  });

  it("does not answer a browser's preflight on plain http: the browser then never sends the key in clear", async () => {
    const res = await fetch(`${http}/v1/chat/completions`, {
      method: "OPTIONS", redirect: "manual", headers: { origin: "http://localhost:3000", "access-control-request-method": "POST", "access-control-request-headers": "authorization" },
    });
    // A preflight answered with a redirect fails in the browser, before the request with the key.
    expect(res.status).toBe(308);
    await res.body?.cancel();
  });

  it("still redirects a request without credentials (a browser, a health probe) to https:// with 308", async () => {
    const res = await fetch(`${http}/v1/models`, { redirect: "manual" });
    expect(res.status).toBe(308);
    expect(res.headers.get("location")).toBe("https://llm.gpu-sandbox.test/v1/models");
    await res.body?.cancel();
  });

  it("redirects to the stack's own name (tls.domain), never to a name the client sent in Host or an absolute-form URL, nor to `_` without one", async () => {
    // Found by the penetration test: the Location copied the client's Host, so the 308 could point off the tenant.
    for (const request of [
      "GET /v1/models HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
      "GET http://evil.example/v1/models HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
      "GET /v1/models HTTP/1.0\r\n\r\n",
    ]) {
      const answer = await raw(HTTP_PORT, request);
      expect(answer.split("\r\n")[0], request).toMatch(/^HTTP\/1\.1 308 /);
      expect(/\r\nLocation: (\S*)\r\n/i.exec(answer)?.[1], request).toBe("https://llm.gpu-sandbox.test/v1/models");
    }
  });

  it("keeps Let's Encrypt's challenge path on plain http, a key sent with it too (a missing token is a 404)", async () => {
    const res = await fetch(`${http}/.well-known/acme-challenge/nope`, { redirect: "manual", headers: { authorization: `Bearer ${key}` } });
    expect(res.status).toBe(404);
    await res.body?.cancel();
  });

  it("answers a body over limits.maxBodyMb in OpenAI's JSON shape, not nginx's HTML page", async () => {
    const res = await fetch(`${http}/v1/chat/completions`, {
      method: "POST", redirect: "manual", headers: { "content-type": "application/json" }, body: "x".repeat(1_200_000),
    });
    expect(res.status).toBe(413);
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(res.headers.get("x-request-id")).toMatch(/^[0-9a-f]{32}$/);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("request_too_large");
  });

  it("answers a request line it cannot read in JSON too", async () => {
    const res = await fetch(`${http}/v1/models`, { redirect: "manual", headers: { "x-huge": "x".repeat(20_000) } });
    expect(res.status).toBe(400);
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(((await res.json()) as { error: { type: string } }).error.type).toBe("invalid_request_error");
  });

  it("names a header sent twice and Content-Length with Transfer-Encoding among the causes of its 400, on either port", async () => {
    // Found by the penetration test: the message named only a bad URL and headers too large, neither of which these are.
    for (const port of [HTTP_PORT, HTTPS_PORT]) {
      for (const headers of [`Authorization: Bearer ${key}\r\nAuthorization: Bearer ${key}`, "Content-Length: 5\r\nTransfer-Encoding: chunked"]) {
        const answer = await raw(port, `POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n${headers}\r\nConnection: close\r\n\r\n0\r\n\r\n`);
        expect(answer.split("\r\n")[0], headers).toMatch(/^HTTP\/1\.1 400 /);
        expect(JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4)).error, headers).toEqual({
          message: "The request could not be read: malformed (a space or control character in the URL: percent-encode it; a header sent twice, such as Authorization; " +
            "both Content-Length and Transfer-Encoding), or its headers are too large.",
          type: "invalid_request_error", param: null, code: "invalid_request",
        });
      }
    }
  });
});

describe("the host's own requests, on the port compose publishes on the host's loopback alone", () => {
  it("get the deploy's readiness answer, past the per-address rate and parallel limits, while an address sharing theirs (every IPv6 client comes from Docker's gateway too) holds its parallel requests", async () => {
    await whileTwoStreamsAreHeld(async () => {
      // The API's port refuses this address anything more; the host's own port does not count it.
      expect((await fetch(`https://localhost:${HTTPS_PORT}/ready`)).status).toBe(429);
      const ready = await fetch(`http://127.0.0.1:${LOCAL_PORT}/ready`);
      expect(ready.status).toBe(200);
      expect(await ready.json()).toMatchObject({ status: "ready" });
      const held = await Promise.all(Array.from({ length: 40 }, () => fetch(`http://127.0.0.1:${LOCAL_PORT}/health`).then((r) => r.status)));
      expect(held.filter((s) => s !== 200)).toEqual([]);
    });
    // The rest of the API's rules hold there too: /admin only from adminCidrs.
    expect((await fetch(`http://127.0.0.1:${LOCAL_PORT}/admin/keys`, { headers: { authorization: `Bearer ${shim.adminToken}` } })).status).toBe(403);
  });
});

describe("limits.connections", () => {
  it("refuses a request past the address's parallel ones with a 429 that says so, not that it sent too many requests", async () => {
    await whileTwoStreamsAreHeld(async (https) => {
      // Two streams held open (their headers are in: nginx counts them), then a third request.
      const err = await https.models.list().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OpenAI.RateLimitError);
      const limited = err as InstanceType<typeof OpenAI.RateLimitError>;
      expect(limited.error).toEqual({
        message: "Too many parallel requests from your address (at most 2 at once); retry when one has finished.",
        type: "rate_limit_exceeded", param: null, code: "rate_limit_exceeded", retry_after: 1,
      });
      expect(limited.headers?.get("retry-after")).toBe("1");
      expect(limited.headers?.get("x-request-id")).toMatch(/^[0-9a-f]{32}$/);
      expect(limited.headers?.get("strict-transport-security")).toBe("max-age=63072000");
      // Logged as what the client got: 430 is nginx's internal status for the refusal alone.
      const id = limited.headers!.get("x-request-id")!;
      await expect.poll(() => nginx.output().includes(`"request_id":"${id}"`)).toBe(true);
      expect(JSON.parse(nginx.output().split("\n").find((l) => l.includes(`"request_id":"${id}"`))!).status).toBe(429);
    });
  });
});

describe("a browser app (CORS: any origin, docs/decisions.md)", () => {
  const https = `https://localhost:${HTTPS_PORT}`;
  const origin = "https://chat.example.com";
  /** The CORS headers of an answer: a browser shows the app nothing of it without the first. */
  const cors = (res: Response) => ({ origin: res.headers.get("access-control-allow-origin"), exposed: res.headers.get("access-control-expose-headers") });

  it("can read nginx's own errors (413, 429, 400 api_key_in_url, 400 for an ambiguous path): what went wrong, not 'Failed to fetch'", async () => {
    const received = shim.fake.counters.received;
    const answers: [string, Response][] = [
      ["413", await fetch(`${https}/v1/chat/completions`, { method: "POST", headers: { origin, authorization: `Bearer ${key}`, "content-type": "application/json" }, body: "x".repeat(1_200_000) })],
      ["api_key_in_url", await fetch(`${https}/v1/models?api-key=${key}`, { headers: { origin } })],
      ["ambiguous path", await fetch(`${https}/v1/models/Qwen%2FQwen2.5-7B-Instruct`, { headers: { origin, authorization: `Bearer ${key}` } })],
    ];
    expect(shim.fake.counters.received).toBe(received); // the held streams below do reach it
    await whileTwoStreamsAreHeld(async () => {
      answers.push(["429", await fetch(`${https}/v1/models`, { headers: { origin, authorization: `Bearer ${key}` } })]);
    });
    for (const [what, res] of answers) {
      expect(res.status, what).toBeGreaterThanOrEqual(400);
      expect(cors(res).origin, what).toBe("*");
      expect(cors(res).exposed, what).toMatch(/(^|, )x-request-id(,|$)/);
      expect(cors(res).exposed, what).toMatch(/(^|, )retry-after(,|$)/);
      // The headers nginx added before stay.
      expect(res.headers.get("strict-transport-security"), what).toBe("max-age=63072000");
      expect(res.headers.get("x-request-id"), what).toMatch(/^[0-9a-f]{32}$/);
      expect(((await res.json()) as { error: { code: string } }).error.code, what).toMatch(/^(request_too_large|api_key_in_url|invalid_request|rate_limit_exceeded)$/);
    }
    expect(answers.map(([, r]) => r.status)).toEqual([413, 400, 400, 429]);
  });

  it("gets none on nginx's own errors raised before a location is chosen (414, 400, 405) for /admin and /metrics, spelt any way nginx reads as them; the API's keep theirs", async () => {
    // Found by review: $cors_origin read $uri, by then the internal error page's.
    const long = `?${"a".repeat(9000)}`;
    const big = { "x-big": "a".repeat(20_000) };
    const cases: [string, string, Record<string, string>, number, string | null][] = [
      ["GET", `/admin/keys${long}`, {}, 414, null], ["GET", "/metrics", big, 400, null], ["TRACE", "/admin/keys", {}, 405, null],
      ["TRACE", "/%61dmin/keys", {}, 405, null], ["TRACE", "//metrics", {}, 405, null], ["TRACE", "/%6Detrics", {}, 405, null],
      ["GET", `/v1/%2e%2e/admin${long}`, {}, 414, null], ["TRACE", "/v1/../metrics", {}, 405, null], ["GET", "/ADMIN/keys", big, 400, null],
      ["GET", `/v1/models${long}`, {}, 414, "*"], ["GET", "/v1/models", big, 400, "*"], ["TRACE", "/v1/models", {}, 405, "*"],
      ["TRACE", "/v1/models/admin", {}, 405, "*"], ["GET", `/v1/metrics${long}`, {}, 414, "*"],
    ];
    for (const [method, path, headers, status, allowed] of cases) {
      const res = await send(method, path, { origin, ...headers });
      const what = `${method} ${path.slice(0, 40)}`;
      expect([res.status, res.headers["access-control-allow-origin"] ?? null], what).toEqual([status, allowed]);
      expect(res.headers["access-control-expose-headers"] === undefined, what).toBe(allowed === null);
      expect(res.headers["x-request-id"], what).toMatch(/^[0-9a-f]{32}$/);
    }
  });

  it("gets no CORS headers from /admin or /metrics, which stay the operator's (a 403 from here)", async () => {
    for (const path of ["/admin/keys", "/metrics", `/admin/keys?token=${key}`]) {
      const res = await fetch(`${https}${path}`, { headers: { origin } });
      expect([res.status, cors(res)], path).toEqual([403, { origin: null, exposed: null }]);
      await res.body?.cancel();
    }
  });
});

describe("a key in the URL", () => {
  const https = `https://localhost:${HTTPS_PORT}`;
  const send = (path: string) => fetch(`${https}${path}`, { method: path.includes("chat") ? "POST" : "GET" });

  it("is refused before the shim, in OpenAI's shape, telling the client to send it in the Authorization header", async () => {
    const received = shim.fake.counters.received;
    for (const path of spellings()) {
      const res = await send(path);
      const id = res.headers.get("x-request-id")!;
      const body = await res.text();
      // /admin and /metrics: this address is not in adminCidrs, refused first for that.
      if (/^\/(admin|metrics)/.test(path)) {
        expect(res.status, path).toBe(403);
      } else {
        expect(res.status, path).toBe(400);
        expect(JSON.parse(body), path).toEqual({ error: {
          message: "An API key was found in the URL (of this request, or in its Referer header, of the page that sent it): send it in the Authorization header (Bearer), never in a URL, where proxies and logs keep it.",
          type: "invalid_request_error", param: null, code: "api_key_in_url",
        } });
      }
      expect(res.headers.get("content-type"), path).toBe("application/json");
      expect(res.headers.get("strict-transport-security"), path).toBe("max-age=63072000");
      expect(id, path).toMatch(/^[0-9a-f]{32}$/);
      expect(shim.logs.filter((l) => l.includes(id)), path).toEqual([]);
      await expect.poll(() => nginx.output().includes(`"request_id":"${id}"`)).toBe(true);
      expect(JSON.parse(nginx.output().split("\n").find((l) => l.includes(`"request_id":"${id}"`))!).uri, path).toBe("/[path redacted: it may hold a key]");
    }
    expect(shim.fake.counters.received).toBe(received);
    expect(nginx.output()).not.toContain(secret());
  });

  it("still passes the API's requests on, a query string and a key id in the path included", async () => {
    const models = await fetch(`${https}/v1/models?limit=2`, { headers: { authorization: `Bearer ${key}` } });
    expect(models.status).toBe(200);
    await models.body?.cancel();
    const model = await fetch(`${https}/v1/models/qwen2.5-7b`, { headers: { authorization: `Bearer ${key}` } });
    expect(model.status).toBe(200);
    await model.body?.cancel();
    // Queries and names the API and its clients use: none looks like a key.
    for (const path of ["/v1/models?batch=1", "/v1/models/Qwen/Qwen2.5-7B-Instruct", "/v1/models/my_org_model_v2-GGUF_Q4_K_M",
      "/v1/usage?from=2025-01-01T00%3A00%3A00%2B00%3A00&to=2025-02-01T00%3A00%3A00Z", `/v1/usage?key=${key.slice(6, 18)}`]) {
      const res = await fetch(`${https}${path}`, { headers: { authorization: `Bearer ${key}` } });
      expect(shim.logs.some((l) => l.includes(res.headers.get("x-request-id")!)), path).toBe(true);
      await res.body?.cancel();
    }
    // A key's id (12 characters: not a key) in the path: the shim's own 404.
    const id = await fetch(`${https}/v1/models/${key.slice(6, 18)}`, { headers: { authorization: `Bearer ${key}` } });
    expect(id.status).toBe(404);
    expect(shim.logs.some((l) => l.includes(id.headers.get("x-request-id")!))).toBe(true);
    await id.body?.cancel();
  });

  it("stays out of nginx's error log with a body over client_max_body_size, on either port (its 413 line quoted the request line)", async () => {
    // nginx compares Content-Length with the limit as it chooses a location, before any rule in
    // one, and its 413 wrote "client intended to send too large body … request: \"POST …?api-key=sk-gs-…\"".
    const big = "x".repeat(1_200_000);
    const control = await fetch(`${https}/v1/chat/completions?case=too-large`, { method: "POST", body: big });
    expect(control.status).toBe(413);
    await control.body?.cancel();
    await expect.poll(() => nginx.output()).toMatch(/\[error\].*too large body.*POST \/v1\/chat\/completions\?case=too-large HTTP/);
    const origin = "https://chat.example.com";
    for (const path of [`/v1/chat/completions?api-key=${key}`, `/${key}/v1/chat/completions`, `/v1/chat/completions?key=%25%37%33${key.slice(1)}`]) {
      const res = await fetch(`${https}${path}`, { method: "POST", body: big, headers: { origin } });
      expect([res.status, res.headers.get("access-control-allow-origin")], path).toEqual([400, "*"]);
      expect(res.headers.get("strict-transport-security"), path).toBe("max-age=63072000");
      expect(res.headers.get("x-request-id"), path).toMatch(/^[0-9a-f]{32}$/);
      expect(((await res.json()) as { error: { code: string } }).error.code, path).toBe("api_key_in_url");
      const plain = await fetch(`http://localhost:${HTTP_PORT}${path}`, { method: "POST", body: big, redirect: "manual" });
      expect([plain.status, ((await plain.json()) as { error: { code: string } }).error.code], path).toEqual([400, "https_required"]);
    }
    // From an address outside adminCidrs, /admin with a key in its URL is still refused for the address first.
    const admin = await fetch(`${https}/admin/keys?token=${key}`, { method: "POST", body: big });
    expect(admin.status).toBe(403);
    await admin.body?.cancel();
    expect(nginx.output()).not.toContain(secret());
  });

  // Last: it stops the shim.
  it("stays out of nginx's error log while the shim is down (a restart, a deploy), where a request it passes on is quoted", async () => {
    shimStopped = true;
    await shim.close();
    const control = await fetch(`${https}/v1/models?case=shim-down`);
    expect(control.status).toBe(502);
    await control.body?.cancel();
    for (const path of spellings()) {
      const res = await send(path);
      expect(res.status, path).toBeLessThan(500);
      await res.body?.cancel();
    }
    // The control request's line shows the error log is read here, and quotes query strings.
    await expect.poll(() => nginx.output()).toMatch(/\[error\].*connect\(\) failed.*GET \/v1\/models\?case=shim-down HTTP/);
    expect(nginx.output()).not.toContain(secret());
  });

  // After the test above: the shim is down.
  it("tells OpenAI's SDKs to wait 5 s while the shim is down (a restart, a deploy), rather than spend their two retries within 1.5 s", async () => {
    const err = await client(`https://localhost:${HTTPS_PORT}`).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }] }).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.InternalServerError);
    const e = err as InstanceType<typeof OpenAI.InternalServerError>;
    expect([e.status, e.headers?.get("retry-after"), e.headers?.get("x-should-retry")]).toEqual([502, "5", null]);
  });
});
