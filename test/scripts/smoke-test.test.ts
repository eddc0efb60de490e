import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { main } from "../../scripts/smoke-test.ts";
import { FakeVllm } from "../support/fake-vllm.ts";
import { DEFAULT_FAKE, startShim, type Harness } from "../support/shim-harness.ts";
import { freePort } from "../support/tools.ts";

let h: Harness;
let key: string;
beforeAll(async () => {
  h = await startShim();
  ({ key } = await h.createKey({ name: "smoke", credits: 100, tier: "enterprise" }));
});
afterAll(() => h.close());
afterEach(() => {
  h.fake.behaviour.failStatus = null;
});

async function smoke(argv: string[], env: NodeJS.ProcessEnv = { GPU_SANDBOX_API_KEY: key }) {
  const io = memoryIo();
  const code = await main(argv, { io, env });
  const lines = io.stdout;
  /** The line of one check: "PASS  models  12 ms  …". */
  const line = (name: string) => lines.find((l) => new RegExp(`^(PASS|FAIL) {2}${name} `).test(l)) ?? `(no line for ${name})`;
  return { code, lines, line, err: io.stderr.join("\n") };
}

describe("smoke-test", () => {
  it("passes against the real shim and the test upstream: every check, with timings", async () => {
    const r = await smoke(["--url", `${h.url}/v1`]);
    expect(r.code, r.lines.join("\n")).toBe(0);
    expect(r.lines[0]).toBe(`Smoke test of ${h.url}/v1`);
    expect(r.line("models")).toMatch(/^PASS {2}models +\d+(\.\d)? m?s {2}2 models: qwen2\.5-7b, bge-m3; using qwen2\.5-7b$/);
    expect(r.line("chat")).toMatch(/^PASS {2}chat +\d+(\.\d)? m?s {2}".+" \(\d+ tokens\)$/);
    expect(r.line("credit-headers")).toMatch(/^PASS {2}credit-headers +\d+(\.\d)? m?s {2}charged \d+(\.\d+)?, remaining \d+(\.\d+)?$/);
    expect(r.line("stream")).toMatch(/^PASS {2}stream +\d+(\.\d)? m?s {2}first token after \d+(\.\d)? m?s, \d+ tokens in \d+(\.\d)? m?s, \d+\.\d tokens\/s$/);
    expect(r.line("responses")).toMatch(/^PASS {2}responses +\d+(\.\d)? m?s {2}"t1 t2 .+" \(\d+ tokens, streamed\)$/);
    expect(r.line("bad-key")).toMatch(/^PASS {2}bad-key +\d+(\.\d)? m?s {2}401 invalid_api_key$/);
    expect(r.lines.at(-1)).toBe("All 6 checks passed.");
  });

  it("takes the endpoint with or without /v1, as manage-keys and report-usage do (one parser: originOf)", async () => {
    for (const url of [h.url, `${h.url}/`]) {
      const r = await smoke(["--url", url]);
      expect(r.code, r.lines.join("\n") + r.err).toBe(0);
      expect(r.lines[0]).toBe(`Smoke test of ${h.url}/v1`);
    }
  });

  it("--key and --model work too", async () => {
    const r = await smoke(["--url", `${h.url}/v1/`, "--key", key, "--model", "bge-m3"], {});
    expect(r.line("models")).toContain("using bge-m3");
    expect(r.line("chat")).toMatch(/^PASS/);
  });

  it("fails when the upstream answers 503, naming the status on each affected check", async () => {
    h.fake.behaviour.failStatus = 503;
    const r = await smoke(["--url", `${h.url}/v1`]);
    expect(r.code).toBe(1);
    expect(r.line("models")).toMatch(/^PASS/);
    expect(r.line("chat")).toMatch(/^FAIL {2}chat +\d+(\.\d)? m?s {2}HTTP 503 \w+: /);
    expect(r.line("credit-headers")).toMatch(/^FAIL .*not run: no chat answer to look at \(chat failed\)$/);
    expect(r.line("stream")).toMatch(/^FAIL {2}stream +\d+(\.\d)? m?s {2}HTTP 503 /);
    expect(r.line("responses")).toMatch(/^FAIL {2}responses +\d+(\.\d)? m?s {2}HTTP 503 /);
    expect(r.line("bad-key")).toMatch(/^PASS/);
    expect(r.lines.at(-1)).toBe("4 of 6 checks failed: chat, credit-headers, stream, responses.");
  });

  it("fails with a revoked key: 401 on every check that uses it", async () => {
    const revoked = await h.createKey({ name: "gone", credits: 5 });
    expect((await h.admin(`/admin/keys/${revoked.id}`, { method: "DELETE" })).status).toBe(200);
    const r = await smoke(["--url", `${h.url}/v1`], { GPU_SANDBOX_API_KEY: revoked.key });
    expect(r.code).toBe(1);
    expect(r.line("models")).toMatch(/^FAIL {2}models +\d+(\.\d)? m?s {2}HTTP 401 invalid_api_key: Invalid API key/);
    expect(r.line("chat")).toContain("not run: no model to use (models failed; pass --model)");
    expect(r.line("stream")).toContain("not run: no model to use");
    expect(r.line("bad-key")).toMatch(/^PASS/);
    const withModel = await smoke(["--url", `${h.url}/v1`, "--model", "qwen2.5-7b"], { GPU_SANDBOX_API_KEY: revoked.key });
    expect(withModel.line("chat")).toMatch(/^FAIL {2}chat +\d+(\.\d)? m?s {2}HTTP 401 invalid_api_key/);
  });

  it("fails against a wrong URL: nothing listening, exit 3 (not reached) as every operator script, so a fleet job tells down from broken", async () => {
    const port = await freePort();
    const r = await smoke(["--url", `http://127.0.0.1:${port}/v1`]);
    expect(r.code).toBe(3);
    expect(r.line("models")).toMatch(new RegExp(`^FAIL {2}models +\\d+ ms {2}cannot connect to http://127\\.0\\.0\\.1:${port}/v1: .*ECONNREFUSED`));
    expect(r.line("bad-key")).toContain("cannot connect to");
    expect(r.lines.at(-1)).toBe("6 of 6 checks failed: models, chat, credit-headers, stream, responses, bad-key; the endpoint was not reached (exit 3).");
    // With --model too: chat, stream and responses each try to connect and fail the same way.
    const withModel = await smoke(["--url", `http://127.0.0.1:${port}/v1`, "--model", "qwen2.5-7b"]);
    expect(withModel.code).toBe(3);
    expect(withModel.line("chat")).toContain("cannot connect to");
  });

  it("a name that does not resolve is not reached either (exit 3; an untrusted certificate too: self-signed.test.ts)", async () => {
    const dns = await smoke(["--url", "http://no-such-host.invalid/v1"]);
    expect(dns.code, dns.lines.join("\n")).toBe(3);
    expect(dns.line("models")).toMatch(/cannot connect to .*(ENOTFOUND|EAI_AGAIN)/);
  });

  it("an endpoint that answered one check is reached: a check failing on it exits 1, even if others could not connect", async () => {
    // The models check answers; the server then closes, so the rest cannot connect.
    const server = createServer((req, res) => {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ object: "list", data: [{ id: "m", object: "model", created: 0, owned_by: "x" }] }));
      server.close();
      server.closeAllConnections();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;
    const r = await smoke(["--url", `http://127.0.0.1:${port}/v1`]);
    expect(r.line("models")).toMatch(/^PASS/);
    expect(r.line("chat")).toContain("cannot connect to");
    expect(r.code).toBe(1);
  });

  it("does not follow a redirect (http:// to a TLS endpoint): says where to point --url and that the key crossed plain http", async () => {
    const seen: (string | undefined)[] = [];
    const target = h.url.replace("127.0.0.1", "localhost"); // the "https" origin nginx's port 80 points to
    const redirect = createServer((req, res) => {
      seen.push(req.headers.authorization);
      res.writeHead(308, { location: `${target}${req.url}` }).end();
    });
    await new Promise<void>((resolve) => redirect.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(redirect.address() as AddressInfo).port}/v1`;
    try {
      const r = await smoke(["--url", url]);
      expect(r.code).toBe(1);
      expect(r.line("models")).toMatch(/^FAIL {2}models +\d+(\.\d)? m?s {2}/);
      expect(r.line("models")).toContain(`HTTP 308: ${url} redirects to ${target}/v1/models: use --url ${target}/v1. The API key was sent over plain http with this request: consider rotating it.`);
      // The made-up key crossed plain http too; that one needs no rotating.
      expect(r.line("bad-key")).toMatch(new RegExp(`^FAIL {2}bad-key +\\d+ ms {2}expected 401, got HTTP 308: ${url.replaceAll(".", "\\.")} redirects to ${target.replaceAll(".", "\\.")}/v1/models: use --url ${target.replaceAll(".", "\\.")}/v1\\.$`));
      // Each request went to the redirecting origin only; none followed it to the shim.
      expect(seen).toEqual([`Bearer ${key}`, "Bearer sk-gs-smoketest0000_notarealkeynotarealkeynotareal"]);
    } finally {
      redirect.close();
    }
  });

  it("a redirect of an endpoint under a base path keeps it in the --url advised; one that moves nothing says --url may not be the endpoint", async () => {
    // nginx's `return 308 https://$host$request_uri` in front of an endpoint at /api/v1.
    const redirect = createServer((req, res) => {
      const port = (redirect.address() as AddressInfo).port;
      res.writeHead(308, { location: req.url!.startsWith("/api/") ? `https://localhost:${port}${req.url}` : `/login?next=${req.url}` }).end();
    });
    await new Promise<void>((resolve) => redirect.listen(0, "127.0.0.1", resolve));
    const origin = `http://127.0.0.1:${(redirect.address() as AddressInfo).port}`;
    try {
      const r = await smoke(["--url", `${origin}/api/v1`]);
      expect(r.line("models")).toContain(`redirects to https://localhost:${(redirect.address() as AddressInfo).port}/api/v1/models: use --url https://localhost:${(redirect.address() as AddressInfo).port}/api/v1. The API key`);
      const login = await smoke(["--url", `${origin}/v1`]);
      expect(login.line("models")).toContain(`HTTP 308: ${origin}/v1 redirects to ${origin}/login?next=/v1/models: --url may not be the shim's endpoint (the shim answers without redirecting). The API key`);
    } finally {
      redirect.close();
    }
  });

  it("names a 200 web page at a wrong --url as not the API, not as an endpoint that accepts any key", async () => {
    const page = createServer((_req, res) => {
      res.writeHead(200, { "content-type": "text/html" });
      res.end("<!doctype html>\n<h1>Welcome to nginx!</h1>");
    });
    await new Promise<void>((resolve) => page.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(page.address() as AddressInfo).port}/v1`;
    const notTheApi = (request: string) => `${request} answered 200 but not with JSON (<!doctype html> <h1>Welcome to nginx!</h1>); is --url the tenant's endpoint?`;
    try {
      const r = await smoke(["--url", url]);
      expect(r.code).toBe(1);
      expect(r.line("models")).toMatch(/^FAIL {2}models +\d+(\.\d)? m?s {2}/);
      expect(r.line("models")).toContain(notTheApi("GET /models"));
      expect(r.line("bad-key")).toContain(notTheApi("GET /models"));
      expect(r.line("bad-key")).not.toContain("does not check keys");
      // With --model the chats are sent too, and fail the same way.
      const withModel = await smoke(["--url", url, "--model", "qwen2.5-7b"]);
      expect(withModel.line("chat")).toContain(notTheApi("POST /chat/completions"));
      expect(withModel.line("stream")).toContain(notTheApi("POST /chat/completions"));
    } finally {
      page.close();
    }
  });

  it("fails against a model that is not served", async () => {
    const r = await smoke(["--url", `${h.url}/v1`, "--model", "llama-9000"]);
    expect(r.code).toBe(1);
    expect(r.line("models")).toContain('model "llama-9000" is not among those /models lists for this key (qwen2.5-7b, bge-m3)');
    expect(r.line("chat")).toMatch(/^FAIL {2}chat +\d+(\.\d)? m?s {2}HTTP 404 model_not_found: /);
  });

  // The shim's /models lists what the key may use: a served model outside its allow-list is missing
  // from it too, and "not served" sent the operator to the model server, not to the key.
  it("a served model outside the key's allow-list is not called \"not served\": the line points at the allow-list", async () => {
    const { key: embedOnly } = await h.createKey({ name: "embed-only", credits: 10, models: ["bge-m3"] });
    const r = await smoke(["--url", `${h.url}/v1`, "--model", "qwen2.5-7b"], { GPU_SANDBOX_API_KEY: embedOnly });
    expect(r.code).toBe(1);
    expect(r.line("models")).not.toContain("is not served");
    expect(r.line("models")).toContain('model "qwen2.5-7b" is not among those /models lists for this key (bge-m3): it lists only the models this key may use; either no model of that name is served, or the key\'s allow-list leaves it out (`npm run manage-keys -- list`, MODELS column)');
    expect(r.line("chat")).toMatch(/^FAIL {2}chat +\d+(\.\d)? m?s {2}HTTP 403 model_not_allowed: /);
  });

  it("a key whose allow-list names no served model (a servedName renamed since): /models lists none, and the line says why it may", async () => {
    // The shim's configuration still names bge-m3 (so the key could be made), its model server no longer serves it.
    const renamed = await startShim({ fake: { ...DEFAULT_FAKE, models: DEFAULT_FAKE.models!.filter((m) => m.name !== "bge-m3") } });
    let r;
    try {
      const { key: embedOnly } = await renamed.createKey({ name: "embed-only", credits: 10, models: ["bge-m3"] });
      r = await smoke(["--url", `${renamed.url}/v1`], { GPU_SANDBOX_API_KEY: embedOnly });
    } finally {
      await renamed.close();
    }
    expect(r.code).toBe(1);
    expect(r.line("models")).toMatch(/ {2}\/models lists no model for this key: it lists only the models this key may use; is any served\? If so, the key's allow-list names none of them \(e\.g\. after a model\.servedName rename; `npm run manage-keys -- list`, MODELS column\)$/);
  });

  it("fails against vLLM without the shim: any key works and there are no credit headers", async () => {
    const open = await new FakeVllm({ models: DEFAULT_FAKE.models! }).start();
    try {
      const r = await smoke(["--url", open.url]);
      expect(r.code).toBe(1);
      expect(r.line("chat")).toMatch(/^PASS/);
      expect(r.line("credit-headers")).toContain("missing or not a number: x-credits-charged, x-credits-remaining");
      expect(r.line("bad-key")).toContain("a made-up key was accepted: the endpoint does not check keys");
    } finally {
      await open.close();
    }
  });

  it("an endpoint that takes the connection and never answers was reached: its timeouts exit 1, not 3 (not reached)", async () => {
    // A host up with its server hung is a broken endpoint, not a down one: a fleet job reading 3
    // would look for a network fault. The requests were sent; only their answers never came.
    const silent = createServer(() => {}); // takes each request and never answers it
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    try {
      const url = `http://127.0.0.1:${(silent.address() as AddressInfo).port}/v1`;
      const r = await smoke(["--url", url, "--timeout-seconds", "1"]);
      expect(r.line("models")).toMatch(/^FAIL {2}models /);
      expect(r.line("bad-key")).toMatch(/^FAIL {2}bad-key /);
      expect(r.lines.at(-1)).toBe("6 of 6 checks failed: models, chat, credit-headers, stream, responses, bad-key.");
      expect(r.code, r.lines.join("\n")).toBe(1);
    } finally {
      silent.closeAllConnections();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  it("--timeout-seconds bounds the whole streamed answer, not only the time to its headers", async () => {
    const slow = await new FakeVllm({ models: DEFAULT_FAKE.models! }).start();
    slow.set({ tokenDelayMs: 1500, defaultTokens: 4 });
    try {
      const started = Date.now();
      const r = await smoke(["--url", slow.url, "--model", "qwen2.5-7b", "--timeout-seconds", "1"]);
      // The stream would take 6 s; given 1 s, it fails at 1 s.
      expect(r.line("stream")).toMatch(new RegExp(`^FAIL {2}stream +\\d(\\.\\d)? s {2}no answer from ${slow.url.replaceAll(".", "\\.")} within 1\\.0 s \\(the stream had not ended\\)$`));
      expect(r.code).toBe(1);
      expect(Date.now() - started).toBeLessThan(5000);
    } finally {
      await slow.close();
    }
  });

  it.each([
    [["--url", "https://example.com/v1?x=1"], '--url "https://example.com/v1?x=1" must be the tenant\'s endpoint, https://<host> or https://<host>/v1, without a query or #fragment'],
    [["--url", "https://example.com/v1#x"], '--url "https://example.com/v1#x" must be the tenant\'s endpoint, https://<host> or https://<host>/v1, without a query or #fragment'],
    [["--url", "https://example.com/admin"], '--url "https://example.com/admin" must be the tenant\'s endpoint, https://<host> or https://<host>/v1, not a route under it'],
    [["--url", "not a url"], '--url "not a url" is not a URL'],
    [[], "--url is required"],
    [["--url", "https://example.com/v1", "--timeout-seconds", "0"], '--timeout-seconds "0" must be a number of seconds'],
    [["--url", "https://example.com/v1", "--timeout-seconds", "0.001"], '--timeout-seconds "0.001" must be a number of seconds from 1 to 3600'],
    [["--url", "https://example.com/v1", "--timeout-seconds", "3601"], '--timeout-seconds "3601" must be a number of seconds from 1 to 3600'],
    // Decimal digits only, as --credits, --amount and --ttl-hours take numbers: Number() reads these too.
    [["--url", "https://example.com/v1", "--timeout-seconds", "1e1"], '--timeout-seconds "1e1" must be a number of seconds from 1 to 3600, in decimal digits'],
    [["--url", "https://example.com/v1", "--timeout-seconds", "0x10"], '--timeout-seconds "0x10" must be a number of seconds from 1 to 3600, in decimal digits'],
    [["--url", "https://example.com/v1", "--ca", "/nonexistent/ca.pem"], "--ca /nonexistent/ca.pem: ENOENT"],
    // npm runs scripts in the repository's root, not where the command was typed: the message says where it looked.
    [["--url", "https://example.com/v1", "--ca", "no-such-ca.pem"], `(a relative path starts at ${process.cwd()}, where npm runs the script)`],
  ])("%j → exit 2: %s", async (argv, message) => {
    const r = await smoke(argv);
    expect(r.code).toBe(2);
    expect(r.err).toContain(message);
  });

  it("refuses a --url with a user name and password without printing them (it is no connection failure)", async () => {
    const r = await smoke(["--url", "http://u:s3cret@127.0.0.1:9/v1", "--timeout-seconds", "2"]);
    expect(r.code).toBe(2);
    expect(r.lines).toEqual([]);
    expect(r.err).toBe("--url has a user name or password in it (user:password@host), which the scripts do not send (the API key is the credential): give the URL without it");
  });

  it("needs a key", async () => {
    const r = await smoke(["--url", `${h.url}/v1`], {});
    expect(r.code).toBe(2);
    expect(r.err).toContain("no API key: export GPU_SANDBOX_API_KEY=sk-gs-… (or pass --key)");
  });

  it("never prints the API key: one holding a control character (two keys from `jq -r`, joined by a newline) is refused without repeating it", async () => {
    const second = await h.createKey({ name: "second", credits: 5 });
    for (const [bad, problem] of [
      [`${key}\n${second.key}`, `GPU_SANDBOX_API_KEY holds "\\n" (U+000A) at character ${key.length + 1}, which no API key has (printable ASCII only): two keys, one a line (\`jq -r\` on more than one)?`],
      [`${key}\u0000`, `GPU_SANDBOX_API_KEY holds "\\u0000" (U+0000) at character ${key.length + 1}, which no API key has (printable ASCII only): pasted with`],
    ] as const) {
      const r = await smoke(["--url", `${h.url}/v1`], { GPU_SANDBOX_API_KEY: bad });
      expect(r.code).not.toBe(0);
      const printed = [...r.lines, r.err].join("\n");
      expect(printed).not.toContain(key.slice(-32));
      expect(printed).not.toContain(second.key.slice(-32));
      expect(r.lines).toEqual([]); // refused before any check: no request sent with it
      expect(r.err).toContain(problem);
    }
    // --key is named as the source, and a typographic dash (fetch: "Cannot convert argument to a ByteString") is refused too.
    const dash = await smoke(["--url", `${h.url}/v1`, "--key", key.replace("sk-gs-", "sk\u2014gs-")], {});
    expect(dash.code).toBe(2);
    expect(dash.err).toContain('--key holds "—" (U+2014) at character 3');
    expect(dash.err).not.toContain(key.slice(-32));
  });

  it("a key with a line break only at its end (a line read from a file) still works, as fetch strips it", async () => {
    const r = await smoke(["--url", `${h.url}/v1`], { GPU_SANDBOX_API_KEY: `${key}\r\n` });
    expect(r.code, r.lines.join("\n") + r.err).toBe(0);
  });

  // Gaps found by mutation review (scripts/smoke-test.ts).
  it("fails an endpoint that lists no model, or answers and streams no content", async () => {
    const none = await new FakeVllm({ models: [] }).start();
    const empty = await new FakeVllm({ models: DEFAULT_FAKE.models! }).start();
    empty.set({ defaultTokens: 0 });
    try {
      const r = await smoke(["--url", none.url]);
      expect(r.line("models")).toMatch(/^FAIL {2}models +\d+(\.\d)? m?s {2}\/models lists no model for this key: /);
      const e = await smoke(["--url", empty.url, "--model", "qwen2.5-7b"]);
      expect(e.code).toBe(1);
      expect(e.line("chat")).toMatch(/^FAIL {2}chat +\d+(\.\d)? m?s {2}the answer has no content \(finish_reason stop\)$/);
      expect(e.line("stream")).toMatch(/^FAIL {2}stream +\d+(\.\d)? m?s {2}the stream ended without any content$/);
      expect(e.line("responses")).toMatch(/^FAIL {2}responses +\d+(\.\d)? m?s {2}the answer has no text \(status completed\)$/);
    } finally {
      await none.close();
      await empty.close();
    }
  });

  it("fails a stream that has content but no usage chunk, though it asked for one (the tokens a stream is charged)", async () => {
    const keyed = await new FakeVllm({ models: DEFAULT_FAKE.models!, apiKey: key }).start();
    keyed.set({ ignoreIncludeUsage: true }); // an upstream that ignores include_usage
    try {
      const r = await smoke(["--url", keyed.url]);
      expect(r.line("stream")).toMatch(/^FAIL {2}stream +\d+(\.\d)? m?s {2}the stream had no usage chunk, though it asked for one \(stream_options\.include_usage\): the shim charged it from an estimate/);
      expect(r.lines.at(-1)).toBe("2 of 6 checks failed: credit-headers, stream.");
    } finally {
      await keyed.close();
    }
  });

  it("responses fails a Responses stream that ends without its final event, one whose final event has no usage, and one replayed from a whole answer (LiteLLM's fake stream)", async () => {
    const fake = await new FakeVllm({ models: DEFAULT_FAKE.models! }).start();
    try {
      fake.set({ stopAfterTokens: 3, stopMode: "cut" });
      const cut = await smoke(["--url", fake.url, "--model", "qwen2.5-7b"]);
      expect(cut.line("responses")).toMatch(/^FAIL {2}responses +\d+(\.\d)? m?s {2}the stream broke off before its final event, after \d+ characters of text \(terminated\)$/);
      fake.set({ stopAfterTokens: null });
      // No usage at the end; or (replay) LiteLLM's fake stream: the whole answer's usage from its first event on.
      let replay = false;
      const usage = { input_tokens: 5, output_tokens: 1, total_tokens: 6 };
      const server = createServer((_req, res) => {
        res.writeHead(200, { "content-type": "text/event-stream" });
        const response = (status: string, u: unknown) => ({ id: "r", object: "response", status, output: [], usage: u });
        res.write(`data: ${JSON.stringify({ type: "response.created", sequence_number: 0, response: response("in_progress", replay ? usage : null) })}\n\n`);
        res.write(`event: response.output_text.delta\ndata: ${JSON.stringify({ type: "response.output_text.delta", delta: "hello", item_id: "m", output_index: 0, content_index: 0, sequence_number: 0 })}\n\n`);
        res.end(`event: response.completed\ndata: ${JSON.stringify({ type: "response.completed", sequence_number: 2, response: response("completed", replay ? usage : null) })}\n\n`);
      });
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      try {
        const { port } = server.address() as AddressInfo;
        const noUsage = await smoke(["--url", `http://127.0.0.1:${port}/v1`, "--model", "qwen2.5-7b"]);
        expect(noUsage.line("responses")).toMatch(/^FAIL {2}responses +\d+(\.\d)? m?s {2}the final event has no usage: the shim charged an estimate/);
        replay = true;
        const replayed = await smoke(["--url", `http://127.0.0.1:${port}/v1`, "--model", "qwen2.5-7b"]);
        expect(replayed.line("responses")).toMatch(/^FAIL {2}responses +\d+(\.\d)? m?s {2}the stream was replayed after the whole answer was generated .*model_info\.supports_native_streaming: true/);
      } finally {
        server.close();
      }
    } finally {
      await fake.close();
    }
  });

  it("responses checks a provider's model as any other: the shim serves it on /v1/responses too", async () => {
    const providers = await startShim({ file: { models: [{ name: "qwen2.5-7b", provider: true, maxModelLen: 8192, maxOutputTokens: 1000 }] } });
    try {
      const { key: providerKey } = await providers.createKey({ credits: 100 });
      const r = await smoke(["--url", `${providers.url}/v1`, "--key", providerKey]);
      expect(r.line("responses")).toMatch(/^PASS {2}responses +\d+(\.\d)? m?s {2}".+" \(\d+ tokens, streamed\)$/);
    } finally {
      await providers.close();
    }
  });

  it("bad-key passes on a 401 only: an endpoint refusing a made-up key with 403 fails the check", async () => {
    const server = createServer((req, res) => {
      const ok = req.headers.authorization === `Bearer ${key}`;
      res.writeHead(ok ? 200 : 403, { "content-type": "application/json" });
      res.end(JSON.stringify(ok ? { object: "list", data: [{ id: "m", object: "model", created: 0, owned_by: "x" }] } : { error: { message: "forbidden", type: "forbidden", code: "forbidden" } }));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const r = await smoke(["--url", `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`]);
      expect(r.line("bad-key")).toMatch(/^FAIL {2}bad-key +\d+(\.\d)? m?s {2}expected 401, got HTTP 403/);
    } finally {
      server.close();
    }
  });

  it("--key wins over an exported GPU_SANDBOX_API_KEY", async () => {
    const r = await smoke(["--url", `${h.url}/v1`, "--key", key], { GPU_SANDBOX_API_KEY: "sk-gs-stale0000_notarealkeynotarealkeynotareal" });
    expect(r.code, r.lines.join("\n")).toBe(0);
  });

  it("refuses a --url past /v1 (a route, not the base URL)", async () => {
    const r = await smoke(["--url", "https://example.com/v1/models"]);
    expect(r.code).toBe(2);
    expect(r.err).toBe('--url "https://example.com/v1/models" must be the tenant\'s endpoint, https://<host> or https://<host>/v1, not a route under it');
  });

  it("one failed check is enough for exit 1: vLLM with its own --api-key passes all but credit-headers", async () => {
    const keyed = await new FakeVllm({ models: DEFAULT_FAKE.models!, apiKey: key }).start();
    try {
      const r = await smoke(["--url", keyed.url]);
      expect(r.lines.at(-1)).toBe("1 of 6 checks failed: credit-headers.");
      expect(r.code).toBe(1);
    } finally {
      await keyed.close();
    }
  });

  it("a key with blanks at either end (a tab, a leading line break) still works; DEL or a tab inside is refused without the key", async () => {
    const r = await smoke(["--url", `${h.url}/v1`], { GPU_SANDBOX_API_KEY: `\n ${key}\t` });
    expect(r.code, r.lines.join("\n") + r.err).toBe(0);
    for (const [bad, shown] of [[`${key}\u007f`, "(U+007F) at character"], [`${key.slice(0, 10)}\t${key.slice(10)}`, '"\\t" (U+0009) at character 11']] as const) {
      const refused = await smoke(["--url", `${h.url}/v1`], { GPU_SANDBOX_API_KEY: bad });
      expect(refused.code).toBe(2);
      expect(refused.lines).toEqual([]);
      expect(refused.err).toContain(shown);
      expect(refused.err).not.toContain(key.slice(-32));
    }
  });
});
