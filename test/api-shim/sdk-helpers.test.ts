import OpenAI from "openai";
import { LengthFinishReasonError } from "openai/error";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { balanceOf, expectLedgerMatches, startShim, type Harness } from "../support/shim-harness.ts";

/**
 * The openai-node SDK's (7.57) higher-level helpers, as users write their code with them, through
 * the shim in front of the fake vLLM: `chat.completions.stream` and its events, `runTools`,
 * `parse` with a json_schema response_format, `responses.stream`, and `_request_id`. Each is
 * charged what the upstream reported it generated, once.
 */
const model = "qwen2.5-7b";
/** The shim's SHIM_CONFIG here: 1 credit a request, 0.1 per 1k prompt tokens, 0.2 per 1k completion tokens. */
const priced = { pricing: { request: 1, models: { [model]: { promptPer1k: 0.1, completionPer1k: 0.2 } } }, models: [{ name: model, maxModelLen: 8192 }] };
/** Micro-credits a request costs at that pricing. */
const cost = (u: { prompt_tokens: number; completion_tokens: number }) => 1_000_000 + u.prompt_tokens * 100 + u.completion_tokens * 200;

describe("the OpenAI SDK's helpers through the shim", () => {
  let h: Harness;
  let key: string;
  let keyId: string;
  const weather: Record<string, unknown> = { type: "object", properties: { city: { type: "string" } }, required: ["city"], additionalProperties: false };

  beforeAll(async () => {
    h = await startShim({ file: priced });
    ({ key, id: keyId } = await h.createKey({ credits: 1000, tier: "developer" }));
  });
  afterAll(() => h.close());

  /** What the key was charged for the requests from `before` on (micro-credits), once each has logged its line (settled). */
  async function chargedSince(before: { balance: number; seen: number }): Promise<number> {
    for (const r of h.fake.requests.slice(before.seen)) await h.waitForRequestLog((l) => l.reqId === r.headers["x-request-id"]);
    return before.balance - (await balanceOf(h.store, keyId));
  }
  const mark = async () => ({ balance: await balanceOf(h.store, keyId), seen: h.fake.requests.length });

  for (const includeUsage of [false, true]) {
    it(`chat.completions.stream (include_usage ${includeUsage}): its events, finalChatCompletion(), charged exactly the usage generated`, async () => {
      const before = await mark();
      const stream = h.client(key).chat.completions.stream({ model, messages: [{ role: "user", content: "Say four words" }], max_tokens: 4, ...(includeUsage ? { stream_options: { include_usage: true } } : {}) });
      const deltas: string[] = [];
      let contentDone: string | undefined;
      stream.on("content", (delta) => deltas.push(delta));
      stream.on("content.done", (e) => (contentDone = e.content));
      const done = await stream.finalChatCompletion();
      expect(deltas.join("")).toBe("t1 t2 t3 t4");
      expect(contentDone).toBe("t1 t2 t3 t4");
      expect(done.choices[0]!.message.content).toBe("t1 t2 t3 t4");
      expect(done.choices[0]!.finish_reason).toBe("length");
      expect(await stream.finalContent()).toBe("t1 t2 t3 t4");
      const usage = h.fake.usages.at(-1)!;
      // The shim always asks for the usage chunk; the client sees it only when it asked.
      expect(JSON.parse(h.fake.requests.at(-1)!.body).stream_options).toEqual({ include_usage: true });
      if (includeUsage) expect(done.usage).toMatchObject(usage);
      else expect(done.usage ?? undefined).toBeUndefined();
      expect(await chargedSince(before)).toBe(cost(usage));
      await expectLedgerMatches(h.store, keyId);
    });
  }

  it("chat.completions.runTools with a named function: the call is run, the runner ends, the turn charged; totalUsage() is its usage", async () => {
    const before = await mark();
    const calls: unknown[] = [];
    const runner = h.client(key).chat.completions.runTools({
      model, messages: [{ role: "user", content: "Weather in Paris?" }],
      tool_choice: { type: "function", function: { name: "get_weather" } },
      tools: [{ type: "function", function: { name: "get_weather", description: "Current weather in a city", parameters: weather, parse: JSON.parse, function: (args: unknown) => { calls.push(args); return "18C, sunny"; } } }],
    });
    const final = await runner.finalChatCompletion();
    expect(calls).toEqual([{ city: "x" }]);
    expect(await runner.finalFunctionToolCallResult()).toBe("18C, sunny");
    expect(final.choices[0]!.message.tool_calls![0]!.type).toBe("function");
    const usage = h.fake.usages.at(-1)!;
    expect(await runner.totalUsage()).toMatchObject(usage);
    expect(await chargedSince(before)).toBe(cost(usage));
    await expectLedgerMatches(h.store, keyId);
  });

  for (const stream of [false, true]) {
    it(`chat.completions.runTools (stream ${stream}) with tool_choice "required": every turn reaches the upstream with the tool results, each charged its usage`, async () => {
      const before = await mark();
      let runs = 0;
      const params = {
        model, messages: [{ role: "user" as const, content: "Weather in Oslo?" }], tool_choice: "required" as const,
        tools: [{ type: "function" as const, function: { name: "get_weather", description: "Current weather in a city", parameters: weather, parse: JSON.parse, function: () => `${++runs * 10}C` } }],
      };
      // vLLM forces a call on every turn with "required": the runner stops at maxChatCompletions.
      // Streamed, the runner sees usage only when it asks for the usage chunk, as from OpenAI.
      const runner = stream ? h.client(key).chat.completions.runTools({ ...params, stream: true, stream_options: { include_usage: true } }, { maxChatCompletions: 3 }) : h.client(key).chat.completions.runTools(params, { maxChatCompletions: 3 });
      await runner.done();
      expect(runs).toBe(3);
      const turns = h.fake.requests.slice(before.seen).map((r) => JSON.parse(r.body) as { messages: { role: string; content?: string }[] });
      expect(turns.map((t) => t.messages.map((m) => m.role).join(","))).toEqual(["user", "user,assistant,tool", "user,assistant,tool,assistant,tool"]);
      expect(turns[2]!.messages.at(-1)!.content).toBe("20C");
      const usages = h.fake.usages.slice(-3);
      expect(await runner.totalUsage()).toMatchObject({ prompt_tokens: usages.reduce((s, u) => s + u.prompt_tokens, 0), completion_tokens: usages.reduce((s, u) => s + u.completion_tokens, 0) });
      expect(await chargedSince(before)).toBe(usages.reduce((s, u) => s + cost(u), 0));
      await expectLedgerMatches(h.store, keyId);
    });
  }

  it("chat.completions.parse with a json_schema response_format: the format reaches vLLM untouched and the JSON answer is parsed", async () => {
    const before = await mark();
    const response_format = { type: "json_schema" as const, json_schema: { name: "weather", strict: true, schema: { type: "object", properties: { city: { type: "string" }, celsius: { type: "integer" } }, required: ["city", "celsius"], additionalProperties: false } } };
    const done = await h.client(key).chat.completions.parse({ model, messages: [{ role: "user", content: "Weather in Rome as JSON" }], response_format });
    expect(JSON.parse(h.fake.requests.at(-1)!.body).response_format).toEqual(response_format);
    expect(done.choices[0]!.message.parsed).toEqual({ city: "x", celsius: 1 });
    expect(done.choices[0]!.finish_reason).toBe("stop");
    expect(await chargedSince(before)).toBe(cost(h.fake.usages.at(-1)!));
    // A max_tokens that cuts the JSON: the SDK's own error, the tokens generated charged all the same.
    const cut = await mark();
    const err = await h.client(key).chat.completions.parse({ model, messages: [{ role: "user", content: "Weather in Rome as JSON" }], response_format, max_tokens: 3 }).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(LengthFinishReasonError);
    expect(await chargedSince(cut)).toBe(cost({ prompt_tokens: h.fake.usages.at(-1)!.prompt_tokens, completion_tokens: 3 }));
  });

  it("chat.completions.stream with a json_schema response_format: the streamed JSON is parsed into the final message", async () => {
    const response_format = { type: "json_schema" as const, json_schema: { name: "weather", schema: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } } };
    const stream = h.client(key).chat.completions.stream({ model, messages: [{ role: "user", content: "Weather in Rome as JSON" }], response_format });
    const done = await stream.finalChatCompletion();
    expect(done.choices[0]!.message.parsed).toEqual({ city: "x" });
  });

  it("a json_object response_format gets a JSON object back", async () => {
    const done = await h.client(key).chat.completions.create({ model, messages: [{ role: "user", content: "Any JSON object" }], response_format: { type: "json_object" } });
    expect(JSON.parse(done.choices[0]!.message.content!)).toEqual({});
  });

  it("responses.stream: its events and finalResponse(), charged its usage, the figures on both", async () => {
    const before = await mark();
    const stream = h.client(key).responses.stream({ model, input: "Say four words", max_output_tokens: 4 });
    const deltas: string[] = [];
    stream.on("response.output_text.delta", (e) => deltas.push(e.delta));
    let completed: Record<string, unknown> | undefined;
    stream.on("response.completed", (e) => (completed = e as unknown as Record<string, unknown>));
    const final = await stream.finalResponse();
    expect(deltas.join("")).toBe("t1 t2 t3 t4");
    expect(final.output_text).toBe("t1 t2 t3 t4");
    expect(final.status).toBe("incomplete");
    const usage = h.fake.usages.at(-1)!;
    expect(final.usage).toMatchObject({ input_tokens: usage.prompt_tokens, output_tokens: usage.completion_tokens });
    expect(await chargedSince(before)).toBe(cost(usage));
    // The figures, where a client reads them: the final event (as documented), and the response
    // finalResponse() gives, as responses.create() gives them on its response.
    const figures = { credits_charged: cost(usage) / 1e6, credits_remaining: (await balanceOf(h.store, keyId)) / 1e6 };
    expect(completed).toMatchObject(figures);
    expect(final).toMatchObject(figures);
  });

  it("_request_id on results, request_id of withResponse() and APIError.requestID are the shim's x-request-id", async () => {
    const client = h.client(key);
    const done = await client.chat.completions.create({ model, messages: [{ role: "user", content: "hi" }], max_tokens: 1 });
    expect(done._request_id).toBe(h.fake.requests.at(-1)!.headers["x-request-id"]);
    const { request_id, response } = await client.models.list().withResponse();
    expect(request_id).toBe(response.headers.get("x-request-id"));
    expect(request_id).toMatch(/\S/);
    const err = await client.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "hi" }] }).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.NotFoundError);
    const apiError = err as InstanceType<typeof OpenAI.APIError>;
    expect(apiError.requestID).toBe(apiError.headers!.get("x-request-id"));
    expect(apiError.requestID).toMatch(/\S/);
    expect(apiError.headers!.get("x-credits-remaining")).not.toBeNull();
  });
});

describe("the SDK's automatic retries through the shim: a retried request is charged once", () => {
  let h: Harness;
  const chat = { model, messages: [{ role: "user" as const, content: "hi" }], max_tokens: 3 };

  beforeAll(async () => {
    h = await startShim({ file: { ...priced, tiers: { single: { rpm: 1000, tpm: 1_000_000, concurrency: 1 } } } });
  });
  afterAll(() => h.close());

  /**
   * A client with the SDK's defaults (two retries) that records each status it got, and when each
   * attempt was sent and answered (ms); `after` runs on each answer.
   */
  function recordingClient(apiKey: string, after: (statuses: number[]) => void = () => undefined) {
    const statuses: number[] = [];
    const attempts: { sentAt: number; answeredAt: number }[] = [];
    const client = new OpenAI({
      apiKey, baseURL: `${h.url}/v1`, timeout: 20_000,
      fetch: async (url, init) => {
        const sentAt = performance.now();
        const res = await fetch(url, init as RequestInit);
        attempts.push({ sentAt, answeredAt: performance.now() });
        statuses.push(res.status);
        after(statuses);
        return res;
      },
    });
    return { client, statuses, attempts };
  }

  for (const [upstream, shown] of [[502, 502], [503, 503], [504, 504], [429, 503]] as const) {
    it(`an upstream ${upstream} (the shim's ${shown}) is retried by the SDK; the answer that follows is charged once, the failure nothing`, async () => {
      const { id, key } = await h.createKey({ credits: 100 });
      const before = await balanceOf(h.store, id);
      // The fake fails once (vLLM's 500 is relayed as a 502), then answers.
      h.fake.set({ failStatus: upstream === 502 ? 500 : upstream });
      const { client, statuses } = recordingClient(key, () => h.fake.reset());
      try {
        const done = await client.chat.completions.create(chat);
        expect(statuses).toEqual([shown, 200]);
        expect(done.choices[0]!.message.content).toBe("t1 t2 t3");
        await h.waitForRequestLog((l) => l.reqId === done._request_id);
        expect(before - (await balanceOf(h.store, id))).toBe(cost(h.fake.usages.at(-1)!));
        await expectLedgerMatches(h.store, id);
      } finally {
        h.fake.reset();
      }
    }, 20_000);
  }

  it("the shim's own 429 (a key's requests in flight) says to come back in a second; the SDK waits that long, and its retry is charged once", async () => {
    const { id, key } = await h.createKey({ credits: 100, tier: "single" });
    const { client, statuses, attempts } = recordingClient(key);
    // A stream that holds the key's one place for ~1.2 s: past the shim's 0.5 s wait for a place
    // (the 429 comes at ~0.5 s), within the refusal's Retry-After of 1 s.
    h.fake.set({ tokenDelayMs: 120, defaultTokens: 10 });
    const held = await h.client(key).chat.completions.create({ ...chat, max_tokens: 10, stream: true });
    const reading = (async () => { for await (const _ of held); })();
    const before = await balanceOf(h.store, id);
    const done = await client.chat.completions.create(chat);
    await reading;
    // The SDK's own backoff would send the retry 375-500 ms after the 429 (openai-node 7.57's
    // calculateDefaultRetryTimeoutMillis); Retry-After: 1 makes it wait 1 s. Timed from the 429's
    // answer to the retry's start, so a slow stream cannot make up the difference.
    expect(attempts[1]!.sentAt - attempts[0]!.answeredAt).toBeGreaterThanOrEqual(950);
    // Exactly one retry: sent at ~1.5 s, after the stream ended (~1.2 s), and the shim waits 0.5 s
    // more for a place; a third try would need the stream 0.8 s late.
    expect(statuses).toEqual([429, 200]);
    for (const r of h.fake.requests.slice(-2)) await h.waitForRequestLog((l) => l.reqId === r.headers["x-request-id"]);
    const streamed = h.fake.usages.at(-2)!;
    expect(before - (await balanceOf(h.store, id))).toBe(cost(streamed) + cost(h.fake.usages.at(-1)!));
    await expectLedgerMatches(h.store, id);
    h.fake.reset();
  }, 20_000);
});
