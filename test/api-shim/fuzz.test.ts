import { Agent, request, validateHeaderName, validateHeaderValue } from "node:http";
import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { keysIn, startShim, type Harness, moneyInvariants } from "../support/shim-harness.ts";

/** Seeded PRNG (mulberry32): a failing case reproduces from the seed printed with it. */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  return { next, int, pick };
}
type R = ReturnType<typeof prng>;

/** The end of a chat or completions stream that failed: its error event, then the credits comment. */
const CHAT_FAILED = /(^|\n\n)data: \{"error":\{[^\n]*\}\n\n: credits_charged=[^\n]*\n\n$/;
/**
 * The end of a Responses stream that failed: OpenAI's `event: error` with ours in it, then its
 * `response.failed` (left out only after the upstream's own final event), then the credits comment.
 */
const RESPONSES_FAILED = /(^|\n\n)event: error\ndata: \{"type":"error",[^\n]*"error":\{[^\n]*\}\n\n(event: response\.failed\ndata: \{"type":"response\.failed",[^\n]*"status":"failed"[^\n]*\}\n\n)?: credits_charged=[^\n]*\n\n$/;
/** The end of a whole Responses stream: its final event, then the credits comment (no [DONE]). */
const RESPONSES_DONE = /\n\nevent: response\.(completed|incomplete|failed)\ndata: \{[^\n]*\}\n\n: credits_charged=[^\n]*\n\n$/;
/**
 * Whether an answer is a 200 stream, and what is wrong with its end if anything: a stream ends
 * with [DONE] (a Responses stream with its final event and the credits comment), or with an
 * error event in its route's dialect and the credits comment (docs/api-shim/streaming.md).
 */
function streamEnd(status: number, contentType: string | null | undefined, text: string): { streamed: boolean; wrong?: string } {
  if (status !== 200 || !(contentType ?? "").startsWith("text/event-stream")) return { streamed: false };
  if (text.endsWith("\n\ndata: [DONE]\n\n") || RESPONSES_DONE.test(text) || CHAT_FAILED.test(text)) return { streamed: true };
  const failed = RESPONSES_FAILED.exec(text);
  const finalBefore = /(^|\n)event: response\.(completed|incomplete|failed)\n/.test(text.slice(0, failed?.index ?? 0));
  if (failed && (failed[2] !== undefined) !== finalBefore) return { streamed: true };
  return { streamed: true, wrong: `a stream that ended ${JSON.stringify(text.slice(-200))}` };
}

/** Cases 0 to count − 1 through `one`, `width` at a time (as many clients at once), in order of start. */
async function eachAtOnce(count: number, width: number, one: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < count) await one(next++);
  }));
}

const SEED = Number(process.env.FUZZ_SEED ?? 20261121);
const CASES = 3000;
const FIELD_CASES = 1500;
const HEADER_CASES = 400;

/** Characters of a header name Node's client sends (an HTTP token). */
const TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
/** Names the shim or Node reads, given random values (not those that frame the message, Content-Length, Transfer-Encoding, Connection, Upgrade, Expect, Host, nor Trailer, which Node refuses without chunks). */
const KNOWN_NAMES = ["authorization", "Authorization", "content-type", "content-encoding", "accept", "accept-encoding", "x-request-id", "x-forwarded-for", "x-real-ip", "forwarded", "idempotency-key", "openai-organization", "openai-project", "openai-beta", "x-stainless-retry-count", "x-stainless-timeout", "user-agent", "cookie", "origin", "x-api-key", "api-key", "range", "if-none-match", "cache-control", "te", "proxy-authorization", "x-ratelimit-limit-requests", "x-should-retry", "retry-after", "__proto__", "constructor"];

/** A header name Node's client accepts: a known one, or a random token (1 to 60 characters). */
function randomHeaderName(r: R): string {
  if (r.next() < 0.4) return r.pick(KNOWN_NAMES);
  return Array.from({ length: 1 + r.int(60) }, () => r.pick([...TOKEN_CHARS])).join("");
}

/** A header value Node's client accepts: tabs, visible ASCII and spaces, Latin-1, of 0 to 300 characters (sometimes 4,000). */
function randomHeaderValue(r: R): string {
  const length = r.int(12) === 0 ? 4000 : r.int(300);
  const char = () => {
    const roll = r.int(20);
    if (roll === 0) return "\t";
    if (roll === 1) return String.fromCharCode(0x80 + r.int(0x80));
    return String.fromCharCode(0x20 + r.int(0x5f));
  };
  return r.pick(["", "Bearer ", "sk-gs-", "1.2.3.4, ", "application/json; ", ""]) + Array.from({ length }, char).join("");
}

function randomValue(r: R, depth = 0): unknown {
  switch (r.int(depth > 2 ? 7 : 9)) {
    case 0: return null;
    case 1: return r.next() < 0.5;
    case 2: return r.pick([0, -1, 1, 2.5, 1e308, -1e-308, 2 ** 53 + 1, 4096, 16]);
    case 3: return r.pick(["", "qwen2.5-7b", "bge-m3", "gpt-4", "__proto__", "constructor", "\u0000", "é😀", "x".repeat(r.int(3000)), "sk-gs-"]);
    case 4: return String.fromCharCode(...Array.from({ length: r.int(40) }, () => r.int(0xffff)));
    case 5: return r.pick([[], [1, 2], ["a"], [{ role: "user", content: "hi" }]]);
    case 6: return {};
    case 7: return Array.from({ length: r.int(4) }, () => randomValue(r, depth + 1));
    default: return Object.fromEntries(Array.from({ length: r.int(4) }, () => [r.pick(["model", "messages", "role", "content", "x", "stream", "__proto__"]), randomValue(r, depth + 1)]));
  }
}

function randomBody(r: R): string | Buffer | undefined {
  const valid: Record<string, unknown> = r.pick([
    { model: "qwen2.5-7b", messages: [{ role: "user", content: "hello" }], max_tokens: 3 },
    { model: "qwen2.5-7b", prompt: "hello", max_tokens: 2 },
    { model: "bge-m3", input: ["a", "b"] },
    { model: "qwen2.5-7b", messages: [{ role: "user", content: "hello" }], max_tokens: 2, stream: true },
    { model: "qwen2.5-7b", input: "hello", max_output_tokens: 2 },
    { model: "qwen2.5-7b", instructions: "be brief", input: [{ role: "user", content: [{ type: "input_text", text: "hello" }] }], max_output_tokens: 2, stream: true },
  ]);
  switch (r.int(7)) {
    case 0: return undefined;
    case 1: return JSON.stringify(valid);
    case 2: { // one field replaced with a random value
      const field = r.pick(["model", "messages", "max_tokens", "max_completion_tokens", "stream", "stream_options", "input", "prompt", "n", "temperature"]);
      return JSON.stringify({ ...valid, [field]: randomValue(r) });
    }
    case 3: return JSON.stringify(randomValue(r));
    case 4: { const s = JSON.stringify(valid); return s.slice(0, r.int(s.length)); } // truncated
    case 5: return Buffer.from(Array.from({ length: r.int(200) }, () => r.int(256))); // bytes
    default: return `${"[".repeat(r.int(5000))}1`;
  }
}

describe("fuzz: random bodies and headers", () => {
  let h: Harness;
  let key: string;
  beforeAll(async () => {
    h = await startShim({
      env: { SHIM_MAX_BODY_BYTES: "65536" },
      file: { unauthenticatedRpm: null, pricing: { models: { "qwen2.5-7b": { promptPer1k: 0.01, completionPer1k: 0.02 } } }, models: [{ name: "qwen2.5-7b", maxModelLen: 4096 }, { name: "bge-m3" }] },
    });
    ({ key } = await h.createKey({ credits: 1_000_000 }));
  });
  afterAll(() => h.close());

  it(`${CASES} random requests (seed ${SEED}) get no 5xx and the shim stays up with its money consistent`, async () => {
    const r = prng(SEED);
    const agent = new Agent({ keepAlive: true, maxSockets: 16 });
    const paths = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/v1/usage", "/admin/keys", "/admin/usage", "/admin/keys/x/credits", "/health", "/ready", "/nope", "/v1/chat/completions/../../admin/keys", "/v1/usage?from=%ZZ", "/admin/usage?format=csv&group=day&from=2020-01-01", "/v1/chat/completions?batch=1", "//v1//models", "/%00", "/v1/responses", "/v1/responses/resp_x"];
    const failures: string[] = [];
    const statuses = new Map<number, number>();
    const one = (i: number) => {
      const method = r.pick(["GET", "POST", "POST", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]);
      const headers: Record<string, string> = {};
      const auth = r.int(6);
      if (auth === 0) headers.authorization = `Bearer ${key}`;
      if (auth === 1) headers.authorization = `Bearer ${h.adminToken}`;
      if (auth === 2) headers.authorization = `Bearer sk-gs-${"A".repeat(r.int(20))}_${"b".repeat(r.int(40))}`;
      if (auth === 3) headers.authorization = r.pick(["Bearer", "Bearer ", "Basic Zm9vOmJhcg==", `Bearer ${key} extra`, "bearer\t" + key, "x".repeat(5000)]);
      if (auth === 4) headers.authorization = `Bearer ${key}`;
      const ct = r.int(6);
      if (ct < 3) headers["content-type"] = "application/json";
      if (ct === 3) headers["content-type"] = r.pick(["text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin1", "multipart/form-data; boundary=x", "application/jsonx"]);
      if (r.int(4) === 0) headers["x-request-id"] = r.pick(["abc", "x".repeat(500), "ünïcode".normalize("NFD").replace(/[^\x20-\x7e]/g, "?"), "../../etc", ""]);
      if (r.int(5) === 0) headers["x-forwarded-for"] = r.pick(["1.2.3.4", "::1, 10.0.0.1", "garbage", ""]);
      if (r.int(8) === 0) headers["idempotency-key"] = r.pick(["k1", "", "x".repeat(300)]);
      if (r.int(10) === 0) headers["accept-encoding"] = "gzip, br";
      const body = method === "GET" || method === "HEAD" ? undefined : randomBody(r);
      // Node's client sends DELETE/OPTIONS bodies without framing unless told the length.
      if (body !== undefined) headers["content-length"] = String(Buffer.byteLength(body));
      const path = r.pick(paths);
      const described = () => `case ${i} (seed ${SEED}): ${method} ${path} ${JSON.stringify(headers).slice(0, 200)} ${String(body).slice(0, 200)}`;
      return new Promise<void>((resolve) => {
        const req = request(h.url + path, { method, headers, agent }, (res) => {
          let text = "";
          res.setEncoding("utf8").on("data", (d: string) => (text += d));
          res.on("end", () => {
            statuses.set(res.statusCode ?? 0, (statuses.get(res.statusCode ?? 0) ?? 0) + 1);
            if ((res.statusCode ?? 0) >= 500) failures.push(`${described()} → ${res.statusCode}`);
            const { wrong } = streamEnd(res.statusCode ?? 0, res.headers["content-type"], text);
            if (wrong) failures.push(`${described()} → ${wrong}`);
            resolve();
          });
          // A response cut after its head (a reset, a body short of its length or last chunk).
          res.on("error", (e) => {
            failures.push(`${described()} → ${res.statusCode}, then cut: ${e.message}`);
            resolve();
          });
        });
        req.on("error", (e) => {
          failures.push(`case ${i} (seed ${SEED}): ${method} ${path} ${JSON.stringify(headers).slice(0, 300)} body=${String(body).slice(0, 100)} transport error ${e.message}`);
          resolve();
        });
        req.end(body);
      });
    };
    await eachAtOnce(CASES, 16, one);
    agent.destroy();
    expect(failures).toEqual([]);
    // The mix reaches the deep paths too: forwarded and metered requests, every kind of rejection.
    for (const status of [200, 400, 401, 404]) expect(statuses.get(status) ?? 0, `status ${status} in ${JSON.stringify([...statuses])}`).toBeGreaterThan(20);

    // Raw bytes on the socket: Node's parser answers 400 (or closes), never a crash.
    for (let i = 0; i < 200; i++) {
      const garbage = Buffer.from(Array.from({ length: 1 + r.int(300) }, () => r.int(256)));
      const prefix = r.pick(["", "GET / HTTP/1.1\r\n", "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n"]);
      const answer = await new Promise<string>((resolve) => {
        const s = connect(Number(new URL(h.url).port), "127.0.0.1");
        let got = "";
        s.on("data", (d) => (got += d.toString("latin1")));
        s.on("close", () => resolve(got));
        s.on("error", () => resolve(got));
        s.end(Buffer.concat([Buffer.from(prefix), garbage, Buffer.from("\r\n\r\n")]));
        s.setTimeout(2000, () => s.destroy());
      });
      expect(answer.startsWith("HTTP/1.1 5"), `raw case ${i}: ${answer.slice(0, 80)}`).toBe(false);
      if (answer.startsWith("HTTP/1.1 4")) expect(answer, `raw case ${i}`).toMatch(/\r\nx-request-id: \S+\r\n[^]*\r\n\r\n\{"error":\{/);
    }

    expect((await fetch(`${h.url}/health`)).status).toBe(200);
    expect((await h.client(key).models.list()).data.length).toBe(2);
    for (const row of await moneyInvariants(h.store)) expect(row).toMatchObject({ balance: row.ledgerSum, held: 0, reservations: 0 });
  });

  // The first case sends few random headers. Here each authenticated request to an inference or
  // admin route carries many: random names and values (only what Node's client sends), the
  // shim's own headers with random values, and names given twice or more (several
  // Authorization, Content-Type or Idempotency-Key lines), sometimes hundreds of them.
  it(`${HEADER_CASES} authenticated requests with random, repeated and many headers (seed ${SEED}): no 5xx, no crash`, async () => {
    const r = prng(SEED + 2);
    const { id } = await h.createKey({ credits: 1 });
    const routes: [string, string, string | undefined][] = [
      ["POST", "/v1/chat/completions", JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 3 })],
      ["POST", "/v1/chat/completions", JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 3, stream: true })],
      ["POST", "/v1/completions", JSON.stringify({ model: "qwen2.5-7b", prompt: "hi", max_tokens: 2 })],
      ["POST", "/v1/embeddings", JSON.stringify({ model: "bge-m3", input: ["a"] })],
      ["POST", "/v1/responses", JSON.stringify({ model: "qwen2.5-7b", input: "hi", max_output_tokens: 2, stream: true })],
      ["GET", "/admin/keys", undefined],
      ["GET", "/admin/usage?group=day", undefined],
      ["POST", `/admin/keys/${id}/credits`, JSON.stringify({ amount: 1, note: "fuzz" })],
      ["POST", "/admin/keys", JSON.stringify({ name: "fuzz", credits: 1, tier: "free" })],
    ];
    const agent = new Agent({ keepAlive: true, maxSockets: 16 });
    const failures: string[] = [];
    const statuses = new Map<number, number>();
    const one = (i: number) => {
      const [method, path, body] = r.pick(routes);
      const headers: Record<string, string | string[]> = { authorization: `Bearer ${path.startsWith("/admin") ? h.adminToken : key}`, "content-type": "application/json" };
      const count = r.int(10) === 0 ? 100 + r.int(900) : r.int(20);
      for (let n = 0; n < count; n++) {
        const name = randomHeaderName(r);
        if (["content-length", "transfer-encoding", "connection", "upgrade", "expect", "host", "keep-alive", "trailer"].includes(name.toLowerCase())) continue;
        const value = randomHeaderValue(r);
        validateHeaderName(name); // throws: the generator would be wrong, not the shim
        validateHeaderValue(name, value);
        // A name given again (or again in another case) is sent on a line of its own.
        const had = headers[name];
        headers[name] = had === undefined ? value : [...(Array.isArray(had) ? had : [had]), value];
      }
      if (body !== undefined) headers["content-length"] = String(Buffer.byteLength(body));
      const described = () => `header case ${i} (seed ${SEED + 2}): ${method} ${path} ${JSON.stringify(headers).slice(0, 300)}`;
      return new Promise<void>((resolve) => {
        const req = request(h.url + path, { method, headers, agent }, (res) => {
          let text = "";
          res.setEncoding("utf8").on("data", (d: string) => (text += d));
          res.on("end", () => {
            const status = res.statusCode ?? 0;
            statuses.set(status, (statuses.get(status) ?? 0) + 1);
            if (status >= 500) failures.push(`${described()} → ${status} ${text.slice(0, 200)}`);
            const { wrong } = streamEnd(status, res.headers["content-type"], text);
            if (wrong) failures.push(`${described()} → ${wrong}`);
            // A key this made (POST /admin/keys) is looked for in the logs at close, as any other.
            for (const made of keysIn(text)) h.secrets.add(made);
            resolve();
          });
          res.on("error", (e) => {
            failures.push(`${described()} → ${res.statusCode}, then cut: ${e.message}`);
            resolve();
          });
        });
        req.on("error", (e) => {
          failures.push(`${described()} → transport error ${e.message}`);
          resolve();
        });
        req.end(body);
      });
    };
    await eachAtOnce(HEADER_CASES, 16, one);
    agent.destroy();
    expect(failures).toEqual([]);
    // Most get through to the route (the mix is authenticated), the rest are refused with a 4xx.
    expect(statuses.get(200) ?? 0, JSON.stringify([...statuses])).toBeGreaterThan(HEADER_CASES / 4);
    expect((await fetch(`${h.url}/health`)).status).toBe(200);
    expect((await h.client(key).models.list()).data.length).toBe(2);
    for (const row of await moneyInvariants(h.store)) expect(row).toMatchObject({ balance: row.ledgerSum, held: 0, reservations: 0 });
  });

  // The mix above reaches a given field's validation rarely (a bad value must land on an
  // authenticated JSON POST to the right route). Here every case does: a valid request with one
  // field (or one member of stream_options) replaced by a random value or left out.
  it(`${FIELD_CASES} authenticated requests with one field randomized or left out (seed ${SEED}): no 5xx, and each checked field is refused by name`, async () => {
    const r = prng(SEED + 1);
    const bases: [string, Record<string, unknown>, readonly string[]][] = [
      ["/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 3 }, ["model", "messages", "max_tokens", "max_completion_tokens", "n", "stream", "stream_options", "temperature"]],
      ["/v1/completions", { model: "qwen2.5-7b", prompt: "hi", max_tokens: 2 }, ["model", "prompt", "max_tokens", "n", "stream", "stream_options", "echo"]],
      ["/v1/embeddings", { model: "bge-m3", input: ["a"] }, ["model", "input", "encoding_format"]],
      ["/v1/responses", { model: "qwen2.5-7b", input: "hi", max_output_tokens: 2 }, ["model", "input", "max_output_tokens", "stream", "background", "instructions"]],
    ];
    const failures: string[] = [];
    const refusedByName = new Map<string, number>();
    const statuses = new Map<number, number>();
    let streamed = 0;
    const one = async (i: number) => {
      const [path, base, fields] = r.pick(bases);
      const field = r.pick(fields);
      const roll = r.next();
      // undefined: the field is left out (JSON.stringify drops it).
      const value = roll < 0.15 ? undefined : field === "stream_options" && roll < 0.6 ? { [r.pick(["include_usage", "continuous_usage_stats"])]: randomValue(r) } : randomValue(r);
      const body = JSON.stringify({ ...base, ...(r.next() < 0.5 ? { stream: true } : {}), [field]: value });
      const res = await h.post(key, path, body);
      const text = await res.text().catch((e: unknown) => `cut: ${String((e as Error).cause ?? e)}`);
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      if (res.status >= 500) failures.push(`case ${i} (seed ${SEED + 1}): ${path} ${body.slice(0, 300)} → ${res.status} ${text.slice(0, 200)}`);
      const { streamed: isStream, wrong } = streamEnd(res.status, res.headers.get("content-type"), text);
      if (isStream) streamed++;
      if (wrong) failures.push(`case ${i} (seed ${SEED + 1}): ${path} ${body.slice(0, 300)} → ${wrong}`);
      if (res.status === 400) {
        const param = (JSON.parse(text) as { error: { param: string | null } }).error.param;
        if (param !== null) refusedByName.set(param, (refusedByName.get(param) ?? 0) + 1);
      }
    };
    await eachAtOnce(FIELD_CASES, 8, one);
    expect(failures).toEqual([]);
    // Each field the shim checks itself was reached with a bad value and refused by name.
    for (const field of ["model", "messages", "max_tokens", "max_completion_tokens", "n", "stream", "stream_options", "prompt", "input", "max_output_tokens", "background"]) {
      expect(refusedByName.get(field) ?? 0, `400 with param '${field}' in ${JSON.stringify([...refusedByName])}`).toBeGreaterThan(0);
    }
    expect(statuses.get(200) ?? 0, JSON.stringify([...statuses])).toBeGreaterThan(50);
    expect(streamed, "200 streams, each checked to end as documented").toBeGreaterThan(20);
    for (const row of await moneyInvariants(h.store)) expect(row).toMatchObject({ balance: row.ledgerSum, held: 0, reservations: 0 });
  });
});
