import OpenAI, { RateLimitError } from "openai";
import { describe, expect, it } from "vitest";
import { manualClock } from "../support/clocks.ts";
import { type Harness, overrideStore, startShim } from "../support/shim-harness.ts";

/**
 * What a key's 429 says: seed 004's sentence first, word for word (clients may match it), then
 * which limit refused and what the client can do, in figures (tier names may be configured), as
 * OpenAI's "Rate limit reached … on tokens per min (TPM): Limit …, Used …, Requested …" does.
 */

// The SDK's err.message is the status, then the body's error.message.
const SEED = /^429 Rate limit exceeded\. Try again in \d+ seconds?\. /;
const chat = { model: "qwen2.5-7b", messages: [{ role: "user" as const, content: "hi" }] };
const KEY_NAME = "alice-laptop";

/**
 * The free tier (10 requests/min, 10,000 tokens/min) on a model of 8,192 tokens, as deployed; the
 * clock manual. `authenticated(n)`: resolves once n more requests have had their key looked up,
 * after which the auth hook's checks of the budgets run without waiting.
 */
async function onFreeTier(run: (s: { h: Harness; key: string; id: string; authenticated: (n: number) => Promise<void> }) => Promise<void>): Promise<void> {
  let looked = 0;
  const h = await startShim({
    clock: manualClock(Date.now()),
    file: { models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }] },
    wrapStore: (s) => overrideStore(s, { getKey: async (keyId: string) => { const k = await s.getKey(keyId); looked++; return k; } }),
  });
  const authenticated = async (n: number) => {
    const until = looked + n;
    while (looked < until) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 20));
  };
  try {
    const { key, id } = await h.createKey({ tier: "free", credits: 1000, name: KEY_NAME });
    await run({ h, key, id, authenticated });
  } finally {
    h.fake.reset();
    await h.close();
  }
}

/**
 * An SDK client whose request bodies wait for `gate`: the headers go at once, so the request
 * passes the auth hook (which looks at the budgets before the body is read) and meets the
 * tokens/min check again at admission, once the gate opens.
 */
function gatedClient(h: Harness, key: string, gate: Promise<void>): OpenAI {
  const gatedFetch = (url: string | URL | Request, init: RequestInit = {}): Promise<Response> => {
    const bytes = new TextEncoder().encode(String(init.body));
    const headers = new Headers(init.headers);
    headers.delete("content-length");
    const body = new ReadableStream<Uint8Array>({
      // Its first byte at once: fetch sends the headers only with the body's first chunk.
      async start(c) {
        c.enqueue(bytes.subarray(0, 1));
        await gate;
        c.enqueue(bytes.subarray(1));
        c.close();
      },
    });
    return fetch(url, { ...init, headers, body, duplex: "half" } as RequestInit);
  };
  return new OpenAI({ apiKey: key, baseURL: `${h.url}/v1`, maxRetries: 0, fetch: gatedFetch });
}

/**
 * Two chats without max_tokens, held upstream, each counting the model's whole context: the
 * free tier's tokens/min budget spent (~16,400 of 10,000). Resolves once both are upstream, with
 * their answers to wait for.
 */
async function spendTokensBudget(h: Harness, key: string): Promise<Promise<unknown>[]> {
  h.fake.set({ headerDelayMs: 2000, defaultTokens: 5 });
  const received = h.fake.counters.received;
  const running = [h.client(key).chat.completions.create(chat), h.client(key).chat.completions.create(chat)];
  await h.fake.until((c) => c.received === received + 2);
  return running;
}

const refusal = (p: Promise<unknown>) => p.then(() => { throw new Error("admitted, not refused"); }, (e: unknown) => {
  expect(e).toBeInstanceOf(RateLimitError);
  return e as RateLimitError;
});

const noKeyIn = (message: string, key: string, id: string) => {
  for (const s of [key, id, KEY_NAME]) expect(message).not.toContain(s);
};

describe("a key's 429 says which limit refused it and what to do", () => {
  it("requests per minute: the tier's figure", () => onFreeTier(async ({ h, key, id }) => {
    for (let i = 0; i < 10; i++) await h.client(key).models.list();
    const e = await refusal(h.client(key).chat.completions.create({ ...chat, max_tokens: 5 }));
    expect(e.message).toMatch(SEED);
    expect(e.message).toMatch(/ Requests per minute: this key's tier allows 10\.$/);
    const res = await h.post(key, "/v1/chat/completions", { ...chat, max_tokens: 5 });
    expect(res.status).toBe(429);
    const body = (await res.json()) as { error: { message: string; retry_after: number } };
    // The same words; the wait is this caller's turn, after the first refusal's (6 s, then 12 s).
    const anyWait = (m: string) => m.replace(/in \d+ seconds/, "in N seconds");
    expect(anyWait(`429 ${body.error.message}`)).toBe(anyWait(e.message));
    expect(body.error.message.startsWith(`Rate limit exceeded. Try again in ${body.error.retry_after} seconds. `)).toBe(true);
    noKeyIn(body.error.message, key, id);
  }));

  it("tokens per minute at admission: what this request counts, and, without max_tokens, to set it; before the body is read: what a request counts", () => onFreeTier(async ({ h, key, id, authenticated }) => {
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    const gated = gatedClient(h, key, gate);
    // Two past the auth hook while the budget is whole, their bodies waiting.
    const withoutMax = refusal(gated.chat.completions.create(chat));
    const withMax = refusal(gated.chat.completions.create({ ...chat, max_tokens: 50 }));
    const threeOutputs = refusal(gated.chat.completions.create({ ...chat, n: 3 }));
    await authenticated(3);
    // The evaluator's burst: plain chats without max_tokens each count the model's whole context.
    const running = await spendTokensBudget(h, key);
    open();

    const a = await withoutMax;
    expect(a.message).toMatch(SEED);
    const count = /A request counts its prompt and the most it may generate: this one, (\d+), as /.exec(a.message);
    expect(count).not.toBeNull();
    expect(Number(count![1])).toBeGreaterThan(8192); // the prompt plus the model's context
    expect(a.message).toContain("Tokens per minute: this key's tier allows 10000, and its recent requests have counted them all.");
    expect(a.message).toMatch(/, as without max_tokens it may generate up to 8192 \(the model's limit\)\. Set max_tokens to what you need\.$/);
    noKeyIn(a.message, key, id);

    const b = await withMax;
    expect(b.message).toMatch(SEED);
    expect(b.message).toContain("Tokens per minute: this key's tier allows 10000, and its recent requests have counted them all.");
    expect(b.message).toMatch(/A request counts its prompt and the most it may generate: this one, (5[1-9]|[6-9]\d)\.$/); // 50 + the prompt's few
    expect(b.message).not.toMatch(/set max_tokens/i);

    // n: 3 names the model's limit per output, not the three outputs' sum (found by a review).
    expect((await threeOutputs).message).toMatch(/, as without max_tokens each of its 3 outputs may generate up to 8192 \(the model's limit\)\. Set max_tokens to what you need\.$/);

    // Refused before its body is read: what a request counts, in general.
    const c = await refusal(h.client(key).chat.completions.create(chat));
    expect(c.message).toMatch(SEED);
    expect(c.message).toMatch(/ Tokens per minute: this key's tier allows 10000, and its recent requests have counted them all\. A request counts its prompt and the most it may generate \(max_tokens × n; without max_tokens, the model's whole context\)\. Set max_tokens \(max_output_tokens on \/v1\/responses\) to what you need\.$/);
    const res = await h.post(key, "/v1/chat/completions", { ...chat, max_tokens: 5 });
    expect(res.status).toBe(429);
    expect(res.headers.get("x-ratelimit-remaining-tokens")).toBe("0");
    const body = (await res.json()) as { error: { message: string; code: string } };
    expect(body.error).toMatchObject({ code: "rate_limit_exceeded", message: c.message.slice("429 ".length) });
    noKeyIn(body.error.message, key, id);
    await Promise.all(running);
  }));

  /**
   * The message of a request `send` makes with a gated client, refused at admission: its body
   * waits while spendTokensBudget spends the budget.
   */
  async function refusedAtAdmission(h: Harness, key: string, authenticated: (n: number) => Promise<void>, send: (client: OpenAI) => Promise<unknown>): Promise<string> {
    let open!: () => void;
    const refused = refusal(send(gatedClient(h, key, new Promise<void>((r) => (open = r)))));
    await authenticated(1);
    const running = await spendTokensBudget(h, key);
    open();
    const { message } = await refused;
    await Promise.all(running);
    expect(message).toMatch(SEED);
    return message;
  }

  it("a Responses request refused at admission without max_output_tokens is told to set that", () => onFreeTier(async ({ h, key, authenticated }) => {
    const message = await refusedAtAdmission(h, key, authenticated, (c) => c.responses.create({ model: "qwen2.5-7b", input: "hi" }));
    expect(message).toMatch(/, as without max_output_tokens it may generate up to 8192 \(the model's limit\)\. Set max_output_tokens to what you need\.$/);
  }));

  // Found unpinned by a mutation review, as the next.
  it("an embeddings request refused at admission for tokens/min is not told to set max_tokens: it generates nothing", () => onFreeTier(async ({ h, key, authenticated }) => {
    const message = await refusedAtAdmission(h, key, authenticated, (c) => c.embeddings.create({ model: "qwen2.5-7b", input: "hello there" }));
    expect(message).toMatch(/A request counts its prompt and the most it may generate: this one, \d+\.$/);
    expect(message).not.toMatch(/max_tokens/);
  }));

  // Found by a platform review: a RAG ingestion (LangChain's embedDocuments, the AI SDK's
  // embedMany, 512 to 2,048 inputs a request) spends tokens/min, and its next batches are refused
  // before their bodies are read; they were told to set max_tokens, which embeddings do not take.
  it("an embeddings request refused before its body is read is told what it counts, not to set max_tokens", () => onFreeTier(async ({ h, key, id }) => {
    const running = await spendTokensBudget(h, key);
    const { message } = await refusal(h.client(key).embeddings.create({ model: "qwen2.5-7b", input: ["a", "b"] }));
    expect(message).toMatch(SEED);
    expect(message).toContain("Tokens per minute: this key's tier allows 10000, and its recent requests have counted them all.");
    expect(message).toMatch(/ An embeddings request counts its inputs' tokens: send fewer inputs per request, or wait for the Retry-After\.$/);
    expect(message).not.toMatch(/max_tokens|max_output_tokens/);
    noKeyIn(message, key, id);
    // A chat refused the same way is still told about max_tokens.
    expect((await refusal(h.client(key).chat.completions.create(chat))).message).toMatch(/Set max_tokens \(max_output_tokens on \/v1\/responses\) to what you need\.$/);
    await Promise.all(running);
  }));

  it("requests/min spent and tokens/min spent too, through HTTP: the 429 says both, and waits for the tokens", () => onFreeTier(async ({ h, key }) => {
    const running = await spendTokensBudget(h, key);
    // The rest of the 10 requests/min on a route that spends no tokens.
    for (let i = 0; i < 8; i++) await h.client(key).models.list();
    const res = await h.post(key, "/v1/chat/completions", { ...chat, max_tokens: 5 });
    expect(res.status).toBe(429);
    const body = (await res.json()) as { error: { message: string } };
    expect(body.error.message).toMatch(/ Requests per minute: this key's tier allows 10, and its tokens per minute \(10000\) are spent too\.$/);
    await Promise.all(running);
  }));
});
