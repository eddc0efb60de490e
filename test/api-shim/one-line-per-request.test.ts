import { once } from "node:events";
import { createServer, type Server } from "node:http";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { clientErrorHandler } from "../../api-shim/src/client/client-errors.ts";
import type { SqliteStore } from "../../api-shim/src/store/sqlite-store.ts";
import { keptConnection as keptConnectionTo } from "../support/kept-connection.ts";
import { overrideStore, startShim, type Harness } from "../support/shim-harness.ts";
import { pollUntil } from "../support/tools.ts";

/**
 * Every request gets exactly one log line (and one count in shim_requests_total), a client that
 * leaves before its answer included: nginx closes its connection to the shim when its client
 * leaves, so in production this is every impatient client.
 */
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Sends a raw request and leaves after `leaveAfterMs`; resolves once the shim has had time to finish. */
async function sendAndLeave(url: string, raw: string, leaveAfterMs: number): Promise<void> {
  const u = new URL(url);
  const s = net.connect(Number(u.port), u.hostname);
  await once(s, "connect");
  s.write(raw);
  await sleep(leaveAfterMs);
  s.destroy();
  await sleep(800);
}

const chat = (key: string, id: string) => {
  const b = JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "x" }], max_tokens: 1 });
  return `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${key}\r\ncontent-type: application/json\r\ncontent-length: ${b.length}\r\nx-request-id: ${id}\r\n\r\n${b}`;
};

describe("a client that leaves before its answer, or sends it slowly", () => {
  let h: Harness;
  let key: string;
  let upstream: Server;
  let lookupMs = 0; // a key lookup's round trip (on Postgres, a network round trip)
  beforeAll(async () => {
    // Every request answered after 500 ms with a model list (a busy server): an inference request's answer comes late, and is no chat answer.
    upstream = createServer((_req, res) => {
      setTimeout(() => res.writeHead(200, { "content-type": "application/json" }).end('{"object":"list","data":[{"id":"qwen2.5-7b","object":"model"}]}'), 500);
    });
    await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
    h = await startShim({
      // Trusted, so the ids sent below name the lines.
      env: { SHIM_UPSTREAM_URL: `http://127.0.0.1:${(upstream.address() as net.AddressInfo).port}/v1`, SHIM_TRUST_PROXY: "127.0.0.1" },
      wrapStore: (s: SqliteStore) => overrideStore(s, { getKey: async (id: string) => (await sleep(lookupMs), s.getKey(id)) }),
    });
    ({ key } = await h.createKey({ credits: 100 }));
  });
  afterAll(async () => {
    await h.close();
    upstream.closeAllConnections();
    upstream.close();
  });
  const lines = (id: string) => h.logs.filter((l) => l.includes(`"reqId":"${id}"`)).map((l) => JSON.parse(l) as { level: number; msg: string; status?: number; error?: string; method?: string; path?: string; ms?: number | null });
  const counted = async (route: string) => {
    const m = /shim_requests_total\{route="([^"]+)",status="499"\} (\d+)/g;
    const text = await (await fetch(`${h.url}/metrics`)).text();
    return [...text.matchAll(m)].filter((x) => x[1] === route).reduce((n, x) => n + Number(x[2]), 0);
  };

  it("while the upstream prepares the model list: one line, 499, counted", async () => {
    const before = await counted("/v1/models");
    await sendAndLeave(h.url, `GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${key}\r\nx-request-id: left-models\r\n\r\n`, 100);
    expect(lines("left-models").map((l) => [l.status, l.error])).toEqual([[499, "client_closed_request"]]);
    expect(await counted("/v1/models")).toBe(before + 1);
  });

  it("while its key is looked up (inference): one line, 499", async () => {
    lookupMs = 300;
    await sendAndLeave(h.url, chat(key, "left-chat"), 100);
    lookupMs = 0;
    expect(lines("left-chat").map((l) => [l.status, l.error])).toEqual([[499, "client_closed_request"]]);
  });

  it("while a wrong key is looked up: one line, 499, and no error-level 'unhandled error' (no address is left to count)", async () => {
    // Without a request id: reading the peer's address for it would keep the address known.
    const from = h.logs.length;
    lookupMs = 300;
    await sendAndLeave(h.url, chat(`${key.slice(0, -1)}${key.endsWith("x") ? "y" : "x"}`, "x").replace(/x-request-id: x\r\n/, ""), 100);
    lookupMs = 0;
    const written = h.logs.slice(from).map((l) => JSON.parse(l) as { level: number; msg: string; status?: number; error?: string });
    expect(written.map((l) => [l.level, l.msg, l.status, l.error])).toEqual([[30, "request", 499, "client_closed_request"]]);
  });

  /** Does what Node's HTTP server does after requestTimeout or headersTimeout (checked every 30 s). */
  const timeOut = (socket: net.Socket) => h.app.server.emit("clientError", Object.assign(new Error("Request timeout"), { code: "ERR_HTTP_REQUEST_TIMEOUT" }), socket);
  /** Sends a request whose body never finishes, times it out `waitMs` after Fastify has it; resolves with what the client received. */
  const timedOut = (head: string, waitMs: number) => {
    const arrived = once(h.app.server, "request"); // Fastify's own listener runs first: the request and its id exist
    return rawExchange([`${head}{"model":`, () => arrived, waitMs, timeOut]);
  };
  const slowPost = (auth: string, id: string, length: number) =>
    `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${auth}\r\ncontent-type: application/json\r\ncontent-length: ${length}\r\nx-request-id: ${id}\r\n\r\n`;

  it("a request whose body never finishes arriving (requestTimeout): 408 to the client under its own id, logged 408 under it", async () => {
    const answer = await timedOut(slowPost(key, "slow-body", 1000), 100);
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(idOf(answer)).toBe("slow-body");
    expect(answer).toContain('"code":"request_timeout"');
    expect(lines("slow-body").map((l) => [l.status, l.error])).toEqual([[408, "request_timeout"]]);
  });

  it("an answer sent before its body arrived (a 401): a later requestTimeout does not answer the same request a second time", async () => {
    const answer = await timedOut(slowPost("sk-gs-wrong", "early-401", 100_000), 300);
    expect(answer.match(/HTTP\/1\.1 \d{3}/g)).toEqual(["HTTP/1.1 401"]);
    expect(lines("early-401").map((l) => l.status)).toEqual([401]);
  });

  it.each(["/admin/keys/%E0%A4%A/credits", `/admin/keys/${"a".repeat(300)}/credits`])("the router's own answer (400, 404) to a POST %s whose body never ends: no second answer at requestTimeout", async (path) => {
    const answer = await timedOut(slowPost(key, "router", 1000).replace("/v1/chat/completions", path), 300);
    expect(answer.match(/HTTP\/1\.1 \d{3}/g)).toHaveLength(1);
  });

  /**
   * Sends raw bytes in steps (a string is written, a number waited, a function called with the
   * server's side of the connection); resolves with what the client received once it closed.
   */
  async function rawExchange(steps: (string | number | ((socket: net.Socket) => unknown))[]): Promise<string> {
    const serverSide = once(h.app.server, "connection") as Promise<[net.Socket]>;
    const u = new URL(h.url);
    const s = net.connect(Number(u.port), u.hostname);
    await once(s, "connect");
    const [socket] = await serverSide;
    let answer = "";
    s.on("data", (d) => (answer += String(d)));
    const closed = once(s, "close");
    for (const step of steps) {
      if (typeof step === "string") s.write(step);
      else if (typeof step === "number") await sleep(step);
      else await step(socket);
    }
    await Promise.race([closed, sleep(1000)]);
    s.destroy();
    await sleep(100);
    return answer;
  }
  const unparsedCount = async (status: number) => {
    const text = await (await fetch(`${h.url}/metrics`)).text();
    return Number(text.match(new RegExp(`shim_requests_total\\{route="unparsed",status="${status}"\\} (\\d+)`))?.[1] ?? 0);
  };
  const idOf = (answer: string) => answer.match(/x-request-id: (\S+)/i)?.[1] ?? "none";

  it("headers that never finish (headersTimeout): 408 to the client, and a line and a count, though Fastify never had a request", async () => {
    const before = await unparsedCount(408);
    const answer = await rawExchange(["GET /v1/models HTTP/1.1\r\nhost: x\r\n", 200, timeOut]);
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(lines(idOf(answer)).map((l) => [l.status, l.error, l.method, l.path, l.ms])).toEqual([[408, "request_timeout", "-", "-", null]]);
    expect(await unparsedCount(408)).toBe(before + 1);
  });

  it("bytes that are not HTTP: 400 to the client, and one line", async () => {
    const answer = await rawExchange(["HELLO THERE\r\n\r\n"]);
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    expect(lines(idOf(answer)).map((l) => [l.status, l.error])).toEqual([[400, "invalid_request"]]);
  });

  it("a path no route has (404) and a method a route does not take (405) are counted under route=\"unmatched\", as the docs name it for an alert on scanners", async () => {
    const count = async (status: number) => Number((await (await fetch(`${h.url}/metrics`)).text()).match(new RegExp(`^shim_requests_total\\{route="unmatched",status="${status}"\\} (\\d+)$`, "m"))?.[1] ?? 0);
    const [before404, before405] = [await count(404), await count(405)];
    // With a key: without one, an unknown path is a 401 (authentication comes first, so nothing is learnt of the routes).
    const headers = { authorization: `Bearer ${key}` };
    expect((await fetch(`${h.url}/wp-login.php`, { headers })).status).toBe(404);
    expect((await fetch(`${h.url}/v1/usage`, { method: "DELETE", headers })).status).toBe(405);
    expect([await count(404), await count(405)]).toEqual([before404 + 1, before405 + 1]);
  });

  it("a refusal by the parser says Connection: close: a proxy must not send its next request on that connection", async () => {
    const answer = await rawExchange(["HELLO THERE\r\n\r\n"]);
    expect(answer.slice(0, answer.indexOf("\r\n\r\n"))).toMatch(/\r\nconnection: close(\r\n|$)/i);
  });

  it("a refused request's x-request-id from the trusted proxy that is longer than nginx's 32 hex digits is not taken", async () => {
    const answer = await rawExchange([`GET /v1/models?x=café HTTP/1.1\r\nhost: x\r\nx-request-id: 0123456789abcdef0123456789abcdefEVIL\r\n\r\n`]);
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    expect(idOf(answer)).not.toContain("0123456789abcdef0123456789abcdef");
  });

  it("a request its parser refuses, from the trusted proxy: answered and logged under the proxy's id (nginx's, in its access log), saying what is wrong", async () => {
    const nginxId = "0123456789abcdef0123456789abcdef";
    for (const [raw, message] of [
      [`GET /v1/models?x=café HTTP/1.1\r\nhost: x\r\nx-request-id: ${nginxId}\r\n\r\n`,
        "The URL holds a character HTTP does not allow there (a raw non-ASCII byte, a space or a control character): percent-encode it (é as %C3%A9)."],
      [`GET /v1/models HTTP/1.1\r\nhost: x\r\nx-note: a\x01b\r\nX-Request-Id: ${nginxId}\r\n\r\n`,
        "A header holds a character HTTP does not allow (a control character in its value, or a space or separator in its name): send header names and values of printable ASCII."],
    ] as const) {
      const before = lines(nginxId).length;
      const answer = await rawExchange([raw]);
      expect(answer).toMatch(/^HTTP\/1\.1 400 /);
      expect(idOf(answer)).toBe(nginxId);
      expect(JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4)).error.message).toBe(message);
      expect(lines(nginxId).length).toBe(before + 1);
    }
  });

  it("a refused request's x-request-id from a peer not trusted (SHIM_TRUST_PROXY) is not taken: a client cannot pass for another request in the log", () => {
    let written = "";
    const socket = { writable: true, remoteAddress: "192.0.2.9", end: (text: string) => void (written = text) } as unknown as net.Socket;
    const logged: string[] = [];
    const err = Object.assign(new Error("Parse Error: Invalid char in url query"), {
      code: "HPE_INVALID_URL", bytesParsed: 20, rawPacket: Buffer.from("GET /v1/models?x=caf\xc3\xa9 HTTP/1.1\r\nx-request-id: 0123456789abcdef0123456789abcdef\r\n\r\n", "latin1"),
    });
    clientErrorHandler((id) => logged.push(id), (address) => address === "127.0.0.1")(err, socket);
    expect(idOf(written)).not.toBe("0123456789abcdef0123456789abcdef");
    expect(logged).toEqual([idOf(written)]);
    // Nor, from the proxy, the id of a whole request before the refused one in the same packet.
    const whole = "GET /health HTTP/1.1\r\nx-request-id: 0123456789abcdef0123456789abcdef\r\n\r\n";
    const pipelined = Object.assign(new Error("Parse Error: Invalid char in url query"), {
      code: "HPE_INVALID_URL", bytesParsed: whole.length + 20, rawPacket: Buffer.from(`${whole}GET /v1/models?x=caf\xc3\xa9 HTTP/1.1\r\nhost: x\r\n\r\n`, "latin1"),
    });
    clientErrorHandler((id) => logged.push(id), () => true)(pipelined, socket);
    expect(idOf(written)).not.toBe("0123456789abcdef0123456789abcdef");
  });

  it("a body that turns out malformed: the request's own line and answer say 400 invalid_request, not a client that left", async () => {
    const head = `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${key}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nx-request-id: bad-chunk\r\n\r\n`;
    const answer = await rawExchange([head, 200, "5\r\n{\"mod\r\n", 200, "zz\r\n"]);
    expect(answer.match(/HTTP\/1\.1 \d{3}/g)).toEqual(["HTTP/1.1 400"]);
    expect(lines("bad-chunk").map((l) => [l.status, l.error])).toEqual([[400, "invalid_request"]]);
    expect(idOf(answer)).toBe("bad-chunk"); // the answer names the request its line is under
  });

  it("a whole request followed on its connection by bytes that are not HTTP: each gets its own line", async () => {
    const answer = await rawExchange(["GET /health HTTP/1.1\r\nhost: x\r\nx-request-id: pipelined\r\n\r\nHELLO THERE\r\n\r\n"]);
    expect(answer).toContain("HTTP/1.1 400 ");
    const first = lines("pipelined").map((l) => [l.status, l.error]);
    expect(first.length).toBe(1);
    expect(first[0]![0]).not.toBe(400); // /health was fine: answered (200), or cut by the refusal after it (499)
    expect(lines(idOf(answer.slice(answer.indexOf("HTTP/1.1 400")))).map((l) => [l.status, l.error, l.path])).toEqual([[400, "invalid_request", "-"]]);
  });

  it("an answer sent before the body arrived (a 401): a malformed rest of the body gets no second answer", async () => {
    const head = `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-gs-wrong\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nx-request-id: early-then-bad\r\n\r\n`;
    const answer = await rawExchange([head, 200, "zz\r\n"]);
    expect(answer.match(/HTTP\/1\.1 \d{3}/g)).toEqual(["HTTP/1.1 401"]);
    expect(lines("early-then-bad").map((l) => l.status)).toEqual([401]);
  });

  // The mark that stops a second answer (markIfAnsweredEarly) is the request's, not the
  // connection's: once its body has all arrived, a next request on the kept connection that the
  // parser refuses is answered 400 and logged as every other (not cut without an answer or a line:
  // a 502 at nginx).
  it.each([
    ["a whole request whose body the route read (an admin 400)", (token: string) => {
      const b = "{}";
      return `POST /admin/keys HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${token}\r\ncontent-type: application/json\r\ncontent-length: ${b.length}\r\nx-request-id: read-then-bad\r\n\r\n${b}`;
    }, "read-then-bad"],
    ["a request answered before its body arrived (the auth hook's 401), whose body then arrives whole", () => {
      const b = JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "x" }] });
      return [`POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-gs-wrong\r\ncontent-type: application/json\r\ncontent-length: ${b.length}\r\nx-request-id: early-then-whole\r\n\r\n`, b];
    }, "early-then-whole"],
  ] as const)("%s, then bytes that are not HTTP on the same connection: the 400 is answered and logged", async (_name, first, id) => {
    const parts = [first(h.adminToken)].flat();
    const steps: (string | number)[] = [];
    for (const p of parts) steps.push(p, 300);
    const answer = await rawExchange([...steps, "HELLO THERE\r\n\r\n"]);
    expect(answer.match(/HTTP\/1\.1 \d{3}/g)?.slice(1)).toEqual(["HTTP/1.1 400"]);
    expect(lines(id).length).toBe(1);
    expect(lines(idOf(answer.slice(answer.lastIndexOf("HTTP/1.1 ")))).map((l) => [l.status, l.error, l.path])).toEqual([[400, "invalid_request", "-"]]);
  });

  /** A connection to the shim and what it has answered so far. */
  const keptConnection = () => keptConnectionTo(h.url);

  it("an answer sent before the body was read (the auth hook's 401) keeps the connection: nginx reuses it", async () => {
    const { s, statuses } = await keptConnection();
    const body = JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "x" }], max_tokens: 1 });
    const post = (auth: string) => `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${auth}\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`;
    s.write(post("sk-gs-wrong") + post(key));
    await pollUntil(async () => statuses().length === 2, 3000, 20);
    s.destroy();
    expect(statuses()).toEqual(["HTTP/1.1 401", "HTTP/1.1 200"]);
  });

  it("a body that is not JSON, refused at its first byte, keeps the connection too: nginx, still sending it, got a broken pipe (502)", async () => {
    const { s, got, statuses } = await keptConnection();
    const body = Buffer.alloc(1024 * 1024, 120);
    s.write(`POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${key}\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\n\r\n`);
    s.write(body.subarray(0, 1024));
    await pollUntil(async () => got().includes("HTTP/1.1 400"), 3000, 20);
    expect(got()).not.toMatch(/connection: close/i);
    s.write(body.subarray(1024));
    s.write(`GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${key}\r\n\r\n`);
    await pollUntil(async () => statuses().length === 2, 3000, 20);
    s.destroy();
    expect(statuses()).toEqual(["HTTP/1.1 400", "HTTP/1.1 200"]);
  });
});
