import * as http2 from "node:http2";
import * as tls from "node:tls";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import OpenAI, { APIConnectionError } from "openai";
import { Agent, fetch as undiciFetch } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NGINX_HTTP_PORT, NGINX_HTTPS_PORT } from "../../infra/render/compose.ts";
import { failure } from "../support/api-failure.ts";
import type { RunningNginx } from "../support/nginx.ts";
import { type RenderedEdge, startRenderedEdge } from "../support/rendered-edge.ts";
import type { Harness } from "../support/shim-harness.ts";
import { runTool, tempDir } from "../support/tools.ts";

/**
 * The tenant's data path for real: Debian's nginx running the rendered nginx.conf (only the
 * shim's address substituted), the real shim with the rendered shim config, and the fake vLLM,
 * driven over HTTPS by the official OpenAI SDK.
 */
let shim: Harness;
let nginx: RunningNginx;
let key: string;
let edge: RenderedEdge | undefined;
const base = `https://localhost:${NGINX_HTTPS_PORT}`;
const client = (options: { timeout?: number } = {}) => new OpenAI({ apiKey: key, baseURL: `${base}/v1`, maxRetries: 0, timeout: options.timeout ?? 20_000 });

beforeAll(async () => {
  edge = await startRenderedEdge({
    stack: "e2e",
    settings: {
      adminCidrs: ["203.0.113.7/32"],
      limits: { maxBodyMb: 1 },
      pricing: { models: { "qwen2.5-7b": { promptPer1k: 0.1, completionPer1k: 0.2 } } },
    },
    // A small unauthenticated budget (rendered: 60/min), so one test can spend it through nginx.
    shimFile: (rendered) => ({ ...rendered, unauthenticatedRpm: 5 }),
  });
  ({ shim, nginx, key } = edge);
});

afterAll(() => edge?.close());

/** A browser app's page, and the headers the OpenAI SDK (dangerouslyAllowBrowser) asks to send. */
const ORIGIN = "https://chat.example.com";
const SDK_HEADERS = "authorization,content-type,x-stainless-arch,x-stainless-lang,x-stainless-os,x-stainless-package-version,x-stainless-retry-count,x-stainless-runtime,x-stainless-runtime-version,x-stainless-timeout";
/** A browser's CORS preflight for a POST from ORIGIN with the SDK's headers. */
const preflight = (url: string) => fetch(url, {
  method: "OPTIONS", headers: { origin: ORIGIN, "access-control-request-method": "POST", "access-control-request-headers": SDK_HEADERS },
});

describe("through nginx over HTTPS", () => {
  it("answers a chat completion, with the shim's credit headers", async () => {
    const { data, response } = await client().chat.completions.create({
      model: "qwen2.5-7b", messages: [{ role: "user", content: "Hello there" }], max_tokens: 5,
    }).withResponse();
    expect(data.choices[0]?.message.content?.length).toBeGreaterThan(0);
    expect(data.usage?.completion_tokens).toBe(5);
    expect(response.headers.get("x-credits-charged")).toMatch(/^\d+(\.\d+)?$/);
    expect(response.headers.get("x-request-id")).toMatch(/^[0-9a-f]{32}$/);
    expect(response.headers.get("strict-transport-security")).toBe("max-age=63072000");
    expect(response.headers.get("server")).toBe("nginx");
  });

  it("serves a client that trusts the stack's CA for itself alone, built as the docs show (undici's fetch with an Agent given the CA)", async () => {
    const trusting = (ca: string) => new OpenAI({
      apiKey: key, baseURL: `${base}/v1`, maxRetries: 0,
      // undici's own types differ from Node's copy of them (the cast the docs mention for TypeScript).
      fetch: undiciFetch as unknown as typeof globalThis.fetch, fetchOptions: { dispatcher: new Agent({ connect: { ca } }) },
    });
    const reply = await trusting(nginx.certificate).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "Hi" }], max_tokens: 2 });
    expect(reply.usage?.completion_tokens).toBe(2);
    // Its own CA list replaces the process's (which trusts nginx here): another CA is refused.
    const dir = tempDir();
    const other = runTool("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
      "-subj", "/CN=localhost", "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem")]);
    expect(other.status, other.output).toBe(0);
    await expect(trusting(readFileSync(join(dir, "cert.pem"), "utf8")).models.list()).rejects.toThrow(APIConnectionError);
  });

  it("retrieves one model as the SDK asks for it; an id with a `/` (sent as %2F) is nginx's 400, never the shim's", async () => {
    const { data, response } = await client().models.retrieve("qwen2.5-7b").withResponse();
    expect(data).toMatchObject({ id: "qwen2.5-7b", object: "model", credits_charged: 0 });
    expect(response.headers.get("x-credits-charged")).toBe("0");
    const slash = await failure(() => client().models.retrieve("Qwen/Qwen2.5-7B-Instruct"));
    expect(slash).toBeInstanceOf(OpenAI.BadRequestError);
    const requestId = slash.headers?.get("x-request-id");
    expect(requestId).toMatch(/^[0-9a-f]{32}$/);
    expect(shim.logs.filter((l) => l.includes(requestId!))).toEqual([]);
  });

  it("delivers a stream's first event before the upstream has finished", async () => {
    shim.fake.behaviour = { ...shim.fake.behaviour, tokenDelayMs: 150, defaultTokens: 8 };
    try {
      const completedBefore = shim.fake.counters.completed;
      const stream = await client().chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "Count" }], stream: true });
      let first: { tokensSent: number; completed: number } | undefined;
      let text = "";
      for await (const chunk of stream) {
        first ??= { tokensSent: shim.fake.counters.tokensSent, completed: shim.fake.counters.completed - completedBefore };
        text += chunk.choices[0]?.delta?.content ?? "";
      }
      expect(first).toBeDefined();
      expect(first!.completed).toBe(0);
      expect(text.length).toBeGreaterThan(0);
      expect(shim.fake.counters.completed - completedBefore).toBe(1);
    } finally {
      shim.fake.behaviour = { ...shim.fake.behaviour, tokenDelayMs: 0 };
    }
  });

  it("streams a Responses API answer event by event, its first delta before the upstream has finished, charged in its final event", async () => {
    shim.fake.behaviour = { ...shim.fake.behaviour, tokenDelayMs: 150, defaultTokens: 8 };
    try {
      const completedBefore = shim.fake.counters.completed;
      const stream = await client().responses.create({ model: "qwen2.5-7b", input: "Count", stream: true });
      let firstDeltaCompleted: number | undefined;
      let text = "";
      let final: Record<string, unknown> | undefined;
      for await (const event of stream) {
        if (event.type === "response.output_text.delta") {
          firstDeltaCompleted ??= shim.fake.counters.completed - completedBefore;
          text += event.delta;
        }
        if (event.type === "response.completed") final = event as unknown as Record<string, unknown>;
      }
      expect(firstDeltaCompleted).toBe(0);
      expect(text).toBe("t1 t2 t3 t4 t5 t6 t7 t8");
      expect((final!.response as { usage: { output_tokens: number } }).usage.output_tokens).toBe(8);
      expect(String(final!.credits_charged)).toMatch(/^\d+(\.\d+)?$/);
    } finally {
      shim.fake.behaviour = { ...shim.fake.behaviour, tokenDelayMs: 0 };
    }
  });

  it("answers a browser's preflight itself (204, any origin, the headers it asks for), before the shim and the per-address limits", async () => {
    // Before: the preflight (no Authorization: browsers never send it there) reached the shim's
    // key check, a 401 without CORS headers ("Failed to fetch" in the app, "invalid key" in
    // devtools), each one spending the address's failed-key budget (5 here) and nginx's rate.
    const results = await Promise.all(Array.from({ length: 30 }, () => preflight(`${base}/v1/chat/completions`)));
    for (const res of results) {
      expect(res.status).toBe(204);
      expect(res.headers.get("access-control-allow-origin")).toBe("*");
      expect(res.headers.get("access-control-allow-methods")).toBe("GET, POST, OPTIONS");
      expect(res.headers.get("access-control-allow-headers")).toBe(SDK_HEADERS);
      expect(res.headers.get("access-control-max-age")).toBe("86400");
      expect(res.headers.get("strict-transport-security")).toBe("max-age=63072000");
      expect(res.headers.get("x-request-id")).toMatch(/^[0-9a-f]{32}$/);
      expect(await res.text()).toBe("");
    }
    const ids = results.map((r) => r.headers.get("x-request-id")!);
    expect(shim.logs.filter((l) => ids.some((id) => l.includes(id)))).toEqual([]);
    // The other API paths too (a GET's preflight: /v1/models with an Authorization header).
    for (const path of ["/v1/models", "/v1/embeddings", "/v1/usage"]) expect((await preflight(`${base}${path}`)).status, path).toBe(204);
    // An OPTIONS that is no preflight (no Access-Control-Request-Method) is the shim's, as before.
    const plain = await fetch(`${base}/v1/models`, { method: "OPTIONS", headers: { origin: ORIGIN, authorization: `Bearer ${key}` } });
    expect(plain.status).not.toBe(204);
    await plain.body?.cancel();
    // /admin and /metrics stay operator-only: no CORS there (from this address, refused first).
    for (const path of ["/admin/keys", "/metrics"]) {
      const res = await preflight(`${base}${path}`);
      expect([res.status, res.headers.get("access-control-allow-origin")], path).toEqual([403, null]);
      await res.body?.cancel();
    }
  });

  it("lets a browser app read the answer and the shim's headers, a stream's events as they come included", async () => {
    const browser = new OpenAI({ apiKey: key, baseURL: `${base}/v1`, maxRetries: 0, timeout: 20_000, defaultHeaders: { origin: ORIGIN } });
    const { response } = await browser.chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "Hi" }], max_tokens: 2 }).withResponse();
    expect(response.headers.get("access-control-allow-origin")).toBe("*");
    const exposed = response.headers.get("access-control-expose-headers")!.split(/,\s*/).map((h) => h.toLowerCase());
    for (const name of ["x-request-id", "x-credits-charged", "x-credits-remaining", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset",
      "x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-requests", "x-ratelimit-reset-tokens", "x-ratelimit-limit-concurrency", "retry-after", "x-joined-request-id", "idempotent-replayed"]) {
      expect(exposed, name).toContain(name);
    }
    // Every header nginx added before stays: HSTS, and the shim's own.
    expect(response.headers.get("strict-transport-security")).toBe("max-age=63072000");
    expect(response.headers.get("x-credits-charged")).toMatch(/^\d+(\.\d+)?$/);
    // The shim's errors too, so the app can say why (a wrong key would spend this address's budget, which a later test counts).
    const missing = await fetch(`${base}/v1/models/nope`, { headers: { origin: ORIGIN, authorization: `Bearer ${key}` } });
    expect([missing.status, missing.headers.get("access-control-allow-origin")]).toEqual([404, "*"]);
    await missing.body?.cancel();
    shim.fake.behaviour = { ...shim.fake.behaviour, tokenDelayMs: 150, defaultTokens: 8 };
    try {
      const completedBefore = shim.fake.counters.completed;
      const { data: stream, response: streamed } = await browser.chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "Count" }], stream: true }).withResponse();
      expect(streamed.headers.get("access-control-allow-origin")).toBe("*");
      // A stream says what it holds in x-credits-reserved, which the page may read too.
      expect(streamed.headers.get("x-credits-reserved")).toMatch(/^\d+(\.\d+)?$/);
      expect(streamed.headers.get("access-control-expose-headers")).toMatch(/(^|, )x-credits-reserved(,|$)/);
      let completedAtFirst: number | undefined;
      for await (const _chunk of stream) completedAtFirst ??= shim.fake.counters.completed - completedBefore;
      expect(completedAtFirst).toBe(0);
      expect(shim.fake.counters.completed - completedBefore).toBe(1);
    } finally {
      shim.fake.behaviour = { ...shim.fake.behaviour, tokenDelayMs: 0 };
    }
  });

  it("refuses /admin from an address outside adminCidrs, in OpenAI's error shape", async () => {
    const res = await fetch(`${base}/admin/keys`, { headers: { authorization: `Bearer ${shim.adminToken}` } });
    expect(res.status).toBe(403);
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(await res.json()).toEqual({ error: {
      message: "This path is not available from your address.", type: "permission_error", param: null, code: "forbidden",
    } });
  });

  it("answers what it cannot read in OpenAI's shape too, with a request id and HSTS", async () => {
    const forbidden = await fetch(`${base}/admin/keys`);
    expect(forbidden.headers.get("strict-transport-security")).toBe("max-age=63072000");
    await forbidden.body?.cancel();
    const cases: [string, RequestInit | undefined, number][] = [
      [`${base}/v1/models`, { headers: { "x-huge": "x".repeat(20_000) } }, 400], // headers over nginx's buffers
      [`http://127.0.0.1:${NGINX_HTTPS_PORT}/v1/models`, undefined, 400], // plain HTTP on the HTTPS port
    ];
    for (const [url, init, status] of cases) {
      const res = await fetch(url, init);
      expect(res.status, url.slice(0, 40)).toBe(status);
      expect(res.headers.get("x-request-id"), url.slice(0, 40)).toMatch(/^[0-9a-f]{32}$/);
      expect(((await res.json()) as { error: { type: string } }).error.type).toBe("invalid_request_error");
    }
  });

  it("answers a request line it cannot parse, and methods and versions it refuses, in JSON too (not an HTML 500)", async () => {
    for (const [line, status] of [["GET /v1/models%00 HTTP/1.1", 400], ["GET /../../etc/passwd HTTP/1.1", 400], ["GET * HTTP/1.1", 400], ["TRACE /v1/models HTTP/1.1", 405], ["GET /v1/models HTTP/3.0", 505],
      // A Transfer-Encoding nginx does not implement: 501.
      ...["gzip, chunked", "chunked, identity", "xchunked"].map((te) => [`POST /v1/chat/completions HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: ${te}`, 501] as const)] as const) {
      const answer = await rawHttps(`${line}\r\nHost: localhost\r\nConnection: close\r\n\r\n${line.startsWith("POST") ? "0\r\n\r\n" : ""}`);
      expect(answer.split("\r\n")[0], line).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
      expect(answer, line).toMatch(/\r\ncontent-type: application\/json\r\n/i);
      expect(answer, line).toMatch(/\r\nx-request-id: [0-9a-f]{32}\r\n/i);
      expect(JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4)).error.type, line).toBe("invalid_request_error");
    }
  });

  it("refuses a URL with bytes outside printable ASCII itself (curl sends `?x=é` as raw UTF-8), in JSON with its request id and CORS, saying to percent-encode them", async () => {
    // Found by review: passed on, the shim's parser refused it under an id nginx's log never saw.
    for (const target of ["/v1/models?x=café", "/v1/models/café", "/v1/models?q=日本語"]) {
      const answer = await rawHttps(`GET ${target} HTTP/1.1\r\nHost: localhost\r\nOrigin: ${ORIGIN}\r\nAuthorization: Bearer ${key}\r\nConnection: close\r\n\r\n`, true);
      const id = /\r\nx-request-id: ([0-9a-f]{32})\r\n/i.exec(answer)?.[1];
      expect(answer.split("\r\n")[0], target).toBe("HTTP/1.1 400 Bad Request");
      expect(id, target).toMatch(/^[0-9a-f]{32}$/);
      expect(answer, target).toMatch(/\r\nAccess-Control-Allow-Origin: \*\r\n/i);
      expect(answer, target).toMatch(/\r\nStrict-Transport-Security: max-age=63072000\r\n/i);
      expect(JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4)).error, target).toEqual({
        message: "The URL holds a character HTTP does not allow there (a raw non-ASCII byte, a space or a control character): percent-encode it (é as %C3%A9).",
        type: "invalid_request_error", param: null, code: "invalid_request",
      });
      expect(shim.logs.filter((l) => l.includes(id!)), target).toEqual([]);
      await expect.poll(() => nginx.output().includes(`"request_id":"${id}"`)).toBe(true);
    }
  });

  it("passes a header value with a control character on: the shim's 400 says what is wrong, under nginx's request id", async () => {
    const answer = await rawHttps(`GET /v1/models HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${key}\r\nX-Note: a\x01b\r\nConnection: close\r\n\r\n`, true);
    const id = /\r\nx-request-id: (\S+)\r\n/i.exec(answer)?.[1];
    expect(answer.split("\r\n")[0]).toBe("HTTP/1.1 400 Bad Request");
    // The id nginx logged the request under, not one of the shim's own.
    expect(id).toMatch(/^[0-9a-f]{32}$/);
    await expect.poll(() => nginx.output().includes(`"request_id":"${id}"`)).toBe(true);
    expect(shim.logs.filter((l) => l.includes(`"reqId":"${id}"`)).map((l) => JSON.parse(l).status)).toEqual([400]);
    expect(JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4)).error).toEqual({
      message: "A header holds a character HTTP does not allow (a control character in its value, or a space or separator in its name): send header names and values of printable ASCII.",
      type: "invalid_request_error", param: null, code: "invalid_request",
    });
  });

  it("answers a URI too long for its buffers, its internal error pages asked for from outside and a missing ACME token in JSON too (not nginx's HTML 414 and 404)", async () => {
    const cases: [string, number, string][] = [
      [`${base}/v1/models?q=${"a".repeat(9000)}`, 414, "uri_too_long"], // a request line over nginx's 8 KiB buffer
      [`${base}/_gpu_sandbox/errors/400`, 404, "not_found"],
      [`${base}/_gpu_sandbox/errors/414`, 404, "not_found"],
      [`http://localhost:${NGINX_HTTP_PORT}/_gpu_sandbox/errors/505`, 404, "not_found"],
      [`http://localhost:${NGINX_HTTP_PORT}/.well-known/acme-challenge/nope`, 404, "not_found"],
      [`http://localhost:${NGINX_HTTP_PORT}/.well-known/acme-challenge/`, 404, "not_found"],
    ];
    for (const [url, status, code] of cases) {
      const res = await fetch(url, { redirect: "manual" });
      const what = url.slice(0, 60);
      expect(res.status, what).toBe(status);
      expect(res.headers.get("content-type"), what).toBe("application/json");
      expect(res.headers.get("x-request-id"), what).toMatch(/^[0-9a-f]{32}$/);
      if (url.startsWith("https:")) expect(res.headers.get("strict-transport-security"), what).toBe("max-age=63072000");
      expect(((await res.json()) as { error: unknown }).error, what).toMatchObject({ type: "invalid_request_error", param: null, code });
    }
    // The same over a raw connection, as an HTTP/1.1 client sends it.
    const answer = await rawHttps(`GET /v1/models?q=${"a".repeat(9000)} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
    expect(answer.split("\r\n")[0]).toMatch(/^HTTP\/1\.1 414 /);
    expect(JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4)).error.code).toBe("uri_too_long");
  });

  it("writes only valid JSON lines to its access log, a request it never answered (status 000) included", async () => {
    // An HTTP/2 client whose headers exceed nginx's buffers: nginx ends the session (ENHANCE_YOUR_CALM)
    // and logs the request with $status 000.
    const session = http2.connect(`https://127.0.0.1:${NGINX_HTTPS_PORT}`, { rejectUnauthorized: false });
    session.on("error", () => {});
    const headers: Record<string, string> = { ":path": "/v1/models", ":method": "GET", authorization: `Bearer ${key}` };
    for (let i = 0; i < 8; i++) headers[`x-h${i}`] = "a".repeat(7000);
    await new Promise<void>((resolve) => {
      const req = session.request(headers);
      req.on("error", () => resolve());
      req.on("close", () => resolve());
      req.end();
    });
    session.destroy();
    await expect.poll(() => nginx.output().includes('"status":0,')).toBe(true);
    const invalid = nginx.output().split("\n").filter((l) => l.startsWith("{")).filter((l) => {
      try {
        JSON.parse(l);
        return false;
      } catch {
        return true;
      }
    });
    expect(invalid).toEqual([]);
  });

  it("keeps /admin itself to adminCidrs too: a 403 in JSON, not nginx's 301 to an internal port", async () => {
    const res = await fetch(`${base}/admin`, { redirect: "manual", headers: { authorization: `Bearer ${shim.adminToken}` } });
    expect(res.status).toBe(403);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("forbidden");
  });

  it("passes every header size it accepts on to the shim, so the answer carries nginx's request id", async () => {
    // nginx takes headers up to 4 x 8 KiB; the shim must not refuse (431, with an id of its own) what nginx let through.
    const headers = { authorization: `Bearer ${key}`, "x-a": "a".repeat(7000), "x-b": "b".repeat(7000), "x-c": "c".repeat(7000) };
    const res = await fetch(`${base}/v1/models`, { headers });
    expect(res.status).toBe(200);
    const id = res.headers.get("x-request-id")!;
    expect(id).toMatch(/^[0-9a-f]{32}$/);
    await res.body?.cancel();
    // nginx writes its access line once the answer is sent: the client can have the headers first.
    await expect.poll(() => nginx.output()).toContain(`"request_id":"${id}"`);
  });

  it("keeps a key a client put in its URL path out of nginx's access log, as the shim keeps it out of its own", async () => {
    const secret = key.slice(key.lastIndexOf("_") + 1);
    const spellings = [`/${key}/v1/models`, `/${key.replace("_", "%255F")}/v1/models`, `/x%0A${key}/v1/models`, `/${key}/${key}/v1/models`, `/%2573k-gs-${key.slice(6)}/v1/models`];
    for (const path of spellings) {
      const res = await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${key}` } });
      await res.body?.cancel();
      const id = res.headers.get("x-request-id")!;
      await expect.poll(() => nginx.output().includes(`"request_id":"${id}"`)).toBe(true);
      expect(nginx.output(), path).not.toContain(secret);
    }
    expect(nginx.output()).toContain("[path redacted: it may hold a key]");
  });

  it("keeps a key in a query string out of nginx's error log when it refuses /admin or /metrics, or finds no ACME token", async () => {
    const secret = key.slice(key.lastIndexOf("_") + 1);
    const ids: string[] = [];
    for (const path of [`/admin/keys?token=${key}`, `/metrics?api_key=${key}`]) {
      const res = await fetch(`${base}${path}`);
      expect(res.status, path).toBe(403);
      await res.body?.cancel();
      ids.push(res.headers.get("x-request-id")!);
    }
    // Port 80's ACME path (open to everyone for Let's Encrypt): a missing token is a 404, without
    // a line in the error log; with a key in the URL, port 80 refuses it before any location
    // (https_required: the key went in clear), as it does on every path.
    const acme = await fetch(`http://localhost:${NGINX_HTTP_PORT}/.well-known/acme-challenge/nope?x=1`, { redirect: "manual" });
    expect(acme.status).toBe(404);
    await acme.body?.cancel();
    ids.push(acme.headers.get("x-request-id")!);
    const keyed = await fetch(`http://localhost:${NGINX_HTTP_PORT}/.well-known/acme-challenge/nope?key=${key}`, { redirect: "manual" });
    expect([keyed.status, ((await keyed.json()) as { error: { code: string } }).error.code]).toEqual([400, "https_required"]);
    ids.push(keyed.headers.get("x-request-id")!);

    for (const id of ids) await expect.poll(() => nginx.output().includes(`"request_id":"${id}"`)).toBe(true);
    expect(nginx.output()).not.toContain(secret);
  });

  it("keeps /metrics (with or without a trailing slash) to adminCidrs, even for a valid key", async () => {
    for (const path of ["/metrics", "/metrics/", "/metrics?x=1"]) {
      const res = await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${key}` } });
      expect(res.status, path).toBe(403);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("forbidden");
    }
  });

  it("answers an oversized body 413 in OpenAI's shape, without bothering the shim", async () => {
    const received = shim.fake.counters.received;
    const err = await client().chat.completions.create({
      model: "qwen2.5-7b", messages: [{ role: "user", content: "x".repeat(1_200_000) }],
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    const apiError = err as InstanceType<typeof OpenAI.APIError>;
    expect(apiError.status).toBe(413);
    expect(apiError.error).toEqual({
      message: "Request body too large: the limit is 1 MB.", type: "invalid_request_error", param: null, code: "request_too_large",
    });
    expect(shim.fake.counters.received).toBe(received);
  });

  it("redirects plain HTTP to HTTPS, keeping the method (308)", async () => {
    const res = await fetch(`http://127.0.0.1:${NGINX_HTTP_PORT}/v1/chat/completions`, { method: "POST", redirect: "manual" });
    expect(res.status).toBe(308);
    expect(res.headers.get("location")).toBe("https://127.0.0.1/v1/chat/completions");
  });

  it("does not let a client pick its address: a spoofed X-Forwarded-For still spends its own unauthenticated budget", async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) {
      const res = await fetch(`${base}/v1/models`, {
        headers: { authorization: "Bearer sk-gs-guessguessgu_guessguessguessguessguessguessgu", "x-forwarded-for": `198.51.100.${i}`, "x-real-ip": `198.51.100.${i}` },
      });
      statuses.push(res.status);
      if (res.status === 429) expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/^Rate limit exceeded\. Try again in \d+ seconds?\. Too many requests without a valid API key from this address \(5 a minute\)/); // the shim's, not nginx's
      else await res.body?.cancel();
    }
    // nginx replaces the header with the peer's address, so all six share one bucket of five.
    expect(statuses).toEqual([401, 401, 401, 401, 401, 429]);
    await new Promise((r) => setTimeout(r, 1000)); // give nginx's per-address rate back to the next test
  });

  // Last: it spends this address's request budget.
  it("rate-limits one address with nginx's own 429, in OpenAI's shape, before the shim", async () => {
    // The earlier tests' requests come from the same address: let the burst (20 at 10 r/s) refill.
    await new Promise((r) => setTimeout(r, 2500));
    const results = await Promise.all(Array.from({ length: 60 }, () => client().models.list().then(() => "ok", (e: unknown) => e)));
    const limited = results.filter((r): r is InstanceType<typeof OpenAI.RateLimitError> => r instanceof OpenAI.RateLimitError);
    expect(results.filter((r) => r === "ok").length).toBeGreaterThanOrEqual(20);
    expect(limited.length).toBeGreaterThan(0);
    expect(limited.length + results.filter((r) => r === "ok").length).toBe(60);
    expect(limited[0]!.error).toEqual({
      message: "Too many requests from your address; retry after 1 second.", type: "rate_limit_exceeded", param: null,
      code: "rate_limit_exceeded", retry_after: 1,
    });
    expect(limited[0]!.headers?.get("retry-after")).toBe("1");
  });
});

/**
 * One raw request over TLS to nginx (what fetch would refuse to send), and the whole answer.
 * `passedOn`: the write side is left open (the request ends `Connection: close`), for a request
 * nginx passes on to the shim: nginx counts a half-close as the client leaving.
 */
function rawHttps(request: string, passedOn = false): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: "127.0.0.1", port: NGINX_HTTPS_PORT, servername: "localhost" }, () => (passedOn ? socket.write(request) : socket.end(request)));
    let answer = "";
    socket.setEncoding("utf8");
    socket.on("data", (d: string) => (answer += d));
    socket.on("end", () => resolve(answer));
    socket.on("error", reject);
  });
}
