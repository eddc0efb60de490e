import OpenAI, { APIError } from "openai";
import { type IncomingMessage, request } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { toUsage } from "../../api-shim/src/metering/usage-json.ts";
import { parseResponsesRequest } from "../../api-shim/src/requests/responses-request.ts";
import { startShim, type Harness, balanceOf, expectLedgerMatches } from "../support/shim-harness.ts";
import { CREDIT, created, cutAfter, delta, deltas, ev, PRICED_FILE, scriptedUpstream, type ScriptedUpstream, sse, startScriptedShim } from "../support/responses-events.ts";

/**
 * POST /v1/responses against upstreams that bend the dialect. A scripted upstream: each test sets `upstream.script`,
 * which writes the answer (and may cut the connection) as the upstream under test would.
 */
let upstream: ScriptedUpstream;
const FILE = PRICED_FILE;

describe("POST /v1/responses: upstreams that bend the dialect", () => {
  let h: Harness;
  let close: () => Promise<void>;
  beforeAll(async () => ({ h, upstream, close } = await startScriptedShim()));
  afterAll(() => close());
  const balance = (id: string) => balanceOf(h.store, id);
  const ledgerMatches = (id: string) => expectLedgerMatches(h.store, id);

  it("data-only events (no `event:` line, `type` last as pydantic writes it) cut by the upstream after 40 deltas are charged for them", async () => {
    upstream.script = cutAfter(...deltas(40, false));
    const { key, id } = await h.createKey({ credits: 1000 });
    const text = await (await h.post(key, "/v1/responses", { model: "m", input: "x", max_output_tokens: 100, stream: true })).text();
    // The client received all 40 deltas' text…
    expect(text.match(/response\.output_text\.delta/g)?.length).toBe(40);
    // …and is charged at least one token per delta (plus the request), as with `event:` lines.
    const charged = 1000 * CREDIT - (await balance(id));
    expect(charged).toBeGreaterThanOrEqual(CREDIT + 40 * CREDIT);
    await ledgerMatches(id);
  });

  it("the same stream with `event:` lines is charged for its deltas", async () => {
    upstream.script = cutAfter(...deltas(40));
    const { key, id } = await h.createKey({ credits: 1000 });
    await (await h.post(key, "/v1/responses", { model: "m", input: "x", max_output_tokens: 100, stream: true })).text();
    expect(1000 * CREDIT - (await balance(id))).toBeGreaterThanOrEqual(CREDIT + 40 * CREDIT);
  });

  it("a final event whose usage has no output_tokens is charged the delivered deltas (chat charges its counted chunks), not 0", async () => {
    upstream.script = (_q, res) => {
      sse(res);
      res.write(created());
      for (let i = 1; i <= 40; i++) res.write(delta(i));
      res.end(ev("response.completed", { response: { id: "resp_1", object: "response", status: "completed", output: [], usage: { input_tokens: 5 } } }, 99));
    };
    const { key, id } = await h.createKey({ credits: 1000 });
    await (await h.post(key, "/v1/responses", { model: "m", input: "x", max_output_tokens: 100, stream: true })).text();
    const charged = 1000 * CREDIT - (await balance(id));
    expect(charged).toBeGreaterThanOrEqual(CREDIT + 40 * CREDIT);
  });

  it("a missing previous_response_id behind LiteLLM (its frame around vLLM's 404) is a 404 naming previous_response_id, not model_not_found", async () => {
    const vllm = JSON.stringify({ error: { message: "Response with id 'resp_abc' not found.", type: "NotFoundError", param: "response_id", code: 404 } });
    const message = `litellm.NotFoundError: Hosted_vllmException - ${vllm}. Received Model Group=m\nAvailable Model Group Fallbacks=None`;
    upstream.script = (_q, res) => res.writeHead(404, { "content-type": "application/json" }).end(JSON.stringify({ error: { message, type: null, param: null, code: "404" } }));
    const { key } = await h.createKey({ credits: 100 });
    const err = await new OpenAI({ apiKey: key, baseURL: `${h.url}/v1`, maxRetries: 0 }).responses.create({ model: "m", input: "and then?", max_output_tokens: 1, previous_response_id: "resp_abc" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.NotFoundError);
    expect((err as APIError).param).toBe("previous_response_id");
  });

  it("a chat answer at 200 that is an error body with an `output` member is still an error (not charged), as before the Responses change", async () => {
    upstream.script = (_q, res) => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ error: { message: "boom", type: "InternalServerError", param: null, code: 500 }, output: null }));
    const { key, id } = await h.createKey({ credits: 1000 });
    const res = await h.post(key, "/v1/chat/completions", { model: "m", messages: [{ role: "user", content: "hi" }], max_tokens: 5 });
    expect(res.status).toBeGreaterThanOrEqual(500);
    expect(await balance(id)).toBe(1000 * CREDIT);
  });

  it("an upstream that sends [DONE] before response.completed: the client is told the stream failed (it got no final event)", async () => {
    upstream.script = (_q, res) => {
      sse(res);
      res.write(created());
      res.write("data: [DONE]\n\n");
      for (let i = 1; i <= 3; i++) res.write(delta(i));
      res.end(ev("response.completed", { response: { id: "resp_1", object: "response", status: "completed", output: [], usage: { input_tokens: 5, output_tokens: 3 } } }, 99));
    };
    const { key } = await h.createKey({ credits: 1000 });
    const text = await (await h.post(key, "/v1/responses", { model: "m", input: "x", max_output_tokens: 100, stream: true })).text();
    expect(text).toMatch(/event: error\ndata: \{"type":"error"/);
    expect(text).not.toContain("response.completed");
  });
});

describe("a Responses stream's final event, held until written", () => {
  it("counts against SHIM_ANSWER_MEMORY_BYTES while a client that reads nothing holds it, and is given back when the request ends", { timeout: 20_000 }, async () => {
    // The whole response again, its output and logprobs: 32 MB, more than the sockets hold.
    const big = "x".repeat(32 * 1024 * 1024);
    const own = await scriptedUpstream();
    own.script = (_q, res) => {
      sse(res);
      res.write(created());
      res.write(delta(1));
      const final = ev("response.completed", { response: { id: "resp_1", object: "response", status: "completed", output: [{ type: "message", content: [{ type: "output_text", text: big }] }], usage: { input_tokens: 5, output_tokens: 1 } } }, 9);
      // In pieces, as a large event arrives: each piece counted while the event is read.
      for (let i = 0; i < final.length; i += 1024 * 1024) res.write(final.slice(i, i + 1024 * 1024));
      res.end();
    };
    const h2 = await startShim({ file: FILE, env: { SHIM_UPSTREAM_URL: own.url, SHIM_ANSWER_MEMORY_BYTES: String(8 * 1024 * 1024), SHIM_STREAM_IDLE_TIMEOUT_MS: "3000" } });
    const memory = async () => Number(/^shim_answer_memory_bytes (\d+)/m.exec(await (await fetch(`${h2.url}/metrics`)).text())?.[1]);
    try {
      const { key } = await h2.createKey({ credits: 100 });
      const slow = request(`${h2.url}/v1/responses`, { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json" } });
      slow.on("error", () => {});
      let response: IncomingMessage | undefined;
      await new Promise<void>((resolve) => {
        slow.on("response", (res) => {
          res.pause();
          response = res;
          resolve();
        });
        slow.end(JSON.stringify({ model: "m", input: "x", max_output_tokens: 10, stream: true }));
      });
      await expect.poll(memory, { timeout: 10_000 }).toBeGreaterThan(32 * 1024 * 1024);
      // Cut after the idle timeout: the request ends, and its memory is given back.
      await expect.poll(memory, { timeout: 10_000 }).toBe(0);
      response?.destroy();
    } finally {
      await h2.close();
      await own.close();
    }
  });
});

describe("Responses parsing and usage names", () => {
  it("a chat usage with input_tokens but completion_tokens (no prompt_tokens) keeps its completion count", () => {
    expect(toUsage({ input_tokens: 10, completion_tokens: 7 })).toMatchObject({ promptTokens: 10, completionTokens: 7 });
  });

  it("server-side tools that vLLM runs in several turns (built-in tools, MCP) are refused or held for, not held as one turn", () => {
    // vLLM's _generate_with_builtin_tools loops while the model calls a built-in tool, and for
    // HarmonyContext resets sampling_params.max_tokens = max_model_len - len(prompt) each turn:
    // max_output_tokens bounds only the first turn; input_tokens sums every turn's prompt.
    for (const tool of [{ type: "code_interpreter", container: { type: "auto" } }, { type: "web_search_preview" }, { type: "mcp", server_label: "x", server_url: "https://example.com/mcp" }]) {
      expect(() => parseResponsesRequest({ model: "m", input: "x", max_output_tokens: 16, tools: [tool] })).toThrow();
    }
  });

  // Codex CLI sends its MCP tools grouped in a `namespace` tool by default; vLLM takes it (its
  // ResponsesRequest.check_tool_usage names them namespace__name). The client runs them, as it
  // runs any function tool: one turn per request.
  it("a namespace of function tools is taken, and so weighs in the hold; one holding any other tool is refused, naming it", () => {
    const fn = { type: "function", name: "list_files", parameters: { type: "object", properties: {} } };
    const namespace = { type: "namespace", name: "mcp_fs", description: "files", tools: [fn, { ...fn, name: "read_file" }] };
    const taken = parseResponsesRequest({ model: "m", input: "x", tools: [namespace] });
    expect(taken.renderedJsonBytes).toBe(Buffer.byteLength(JSON.stringify([namespace])));
    for (const [tools, where] of [
      [[fn, { ...namespace, tools: [fn, { type: "web_search_preview" }] }], "tools[1].tools[1]"],
      [[{ ...namespace, tools: "all" }], "tools[0].tools"],
      [[{ type: "namespace", name: "empty" }], "tools[0].tools"],
    ] as const) {
      expect(() => parseResponsesRequest({ model: "m", input: "x", tools })).toThrow(expect.objectContaining({ message: expect.stringContaining(where), param: "tools" }));
    }
  });
});
