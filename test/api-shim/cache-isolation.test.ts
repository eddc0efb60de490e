// SHIM_CONFIG cacheIsolation: `shared` (the default) leaves vLLM's prefix cache to every key, and
// the body as the client sent it; `key` gives every key its own part of it, with a `cache_salt`
// of the key's own on every request to the model vLLM serves (requests/cache-salt.ts). The fake
// vLLM counts prefix-cache hits per (salt, 16-token block), as vLLM does (fake-prefix-cache.ts).
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { ConfigError, parseShimConfig } from "../../api-shim/src/config.ts";
import { keySalt } from "../../api-shim/src/requests/cache-salt.ts";
import { DEFAULT_FAKE, type Harness, startShim } from "../support/shim-harness.ts";
import { ShimStartError, spawnShim } from "../support/shim-process.ts";
import { tempDir } from "../support/tools.ts";

const MODELS = [
  { name: "qwen2.5-7b", maxModelLen: 8192 },
  { name: "bge-m3", maxModelLen: 8192 },
  { name: "claude", provider: true, maxModelLen: 200_000, maxOutputTokens: 1000 },
];
const FAKE = { ...DEFAULT_FAKE, models: [...DEFAULT_FAKE.models!, { name: "claude", maxModelLen: 200_000 }] };

/** A system prompt of 64 words: four of vLLM's 16-token blocks, shared by every request below. */
const SYSTEM = Array.from({ length: 64 }, (_, i) => `rule${i}`).join(" ");
const chat = (question: string) => [{ role: "system" as const, content: SYSTEM }, { role: "user" as const, content: question }];

/** What the fake vLLM got in the last request's `cache_salt` (undefined: none). */
const lastSalt = (h: Harness): unknown => (JSON.parse(h.fake.requests.at(-1)!.body) as { cache_salt?: unknown }).cache_salt;

async function chatCached(h: Harness, key: string, extra: Record<string, unknown> = {}, question = "What now?"): Promise<number> {
  const answer = await h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: chat(question), max_tokens: 2, ...extra });
  return answer.usage?.prompt_tokens_details?.cached_tokens ?? 0;
}

describe("cacheIsolation: key", () => {
  let h: Harness;
  let alice: { id: string; key: string };
  let bob: { id: string; key: string };
  beforeAll(async () => {
    h = await startShim({ file: { models: MODELS, cacheIsolation: "key" }, fake: FAKE });
    alice = await h.createKey({ name: "alice" });
    bob = await h.createKey({ name: "bob" });
  });
  afterAll(() => h.close());
  beforeEach(() => {
    h.fake.reset();
    h.fake.set({ prefixCache: true });
    h.fake.prefixCache.clear();
  });

  it("the same key reads its own prompt's prefix from the cache; another key does not", async () => {
    expect(await chatCached(h, alice.key)).toBe(0);
    expect(await chatCached(h, alice.key, {}, "And then?")).toBe(64);
    expect(await chatCached(h, bob.key)).toBe(0);
    expect(await chatCached(h, bob.key, {}, "And then?")).toBe(64);
  });

  it("the salt vLLM gets is the key's own: the same for one key, another for another, nothing of the key's secret or hash", async () => {
    await chatCached(h, alice.key);
    const first = lastSalt(h);
    await chatCached(h, alice.key);
    expect(lastSalt(h)).toBe(first);
    await chatCached(h, bob.key);
    expect(lastSalt(h)).not.toBe(first);
    expect(first).toBe(keySalt(alice.id, undefined));
    expect(first).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const record = await h.store.getKey(alice.id);
    const secret = alice.key.split("_").at(-1)!;
    for (const part of [alice.key, secret, record!.hash, record!.hash.replace(/^sha256:/, "")]) expect(first).not.toContain(part);
  });

  // A key's salt is its cached prefixes: a shim of another version (a replica mid-upgrade, the
  // shim after an upgrade) must give the key the same one, or its cache is lost (every prompt
  // computed again). Values of SHA-256 over the JSON list [domain, key id, client salt or null].
  it("a key's salt is the same in every shim version: SHA-256 of its id and its client's salt, as documented", () => {
    expect(keySalt("abcdefghijkl", undefined)).toBe("8n5e1MiD58ZgCRTlvTLsKoqG9jpNPm_dqH11ZvbIVgE");
    expect(keySalt("abcdefghijkl", null)).toBe("8n5e1MiD58ZgCRTlvTLsKoqG9jpNPm_dqH11ZvbIVgE");
    expect(keySalt("abcdefghijkl", "end-user-1")).toBe("Dh8jKmFhCRcNgEC8dsMqi6F7C1eyQ4rWq-FYFK704Fg");
  });

  it("a client's own cache_salt splits its key's cache but never reaches another key's", async () => {
    await chatCached(h, alice.key);
    const alicesSalt = lastSalt(h) as string;
    // Bob sends Alice's salt as vLLM got it: no hit.
    expect(await chatCached(h, bob.key, { cache_salt: alicesSalt })).toBe(0);
    expect(lastSalt(h)).not.toBe(alicesSalt);
    // Alice's own salts: each its own part of her cache, the same one hits again.
    expect(await chatCached(h, alice.key, { cache_salt: "end-user-1" })).toBe(0);
    expect(await chatCached(h, alice.key, { cache_salt: "end-user-1" })).toBe(64);
    expect(await chatCached(h, alice.key, { cache_salt: "end-user-2" })).toBe(0);
    // The same client salt under Bob's key is Bob's, not Alice's.
    expect(await chatCached(h, bob.key, { cache_salt: "end-user-1" })).toBe(0);
  });

  it("completions (streamed) and Responses are salted too", async () => {
    const prompt = `${SYSTEM} Continue:`;
    const streamed = async (key: string) => {
      const stream = await h.client(key).completions.create({ model: "qwen2.5-7b", prompt, max_tokens: 2, stream: true, stream_options: { include_usage: true } });
      let cached = 0;
      for await (const chunk of stream) cached = chunk.usage?.prompt_tokens_details?.cached_tokens ?? cached;
      return cached;
    };
    expect(await streamed(alice.key)).toBe(0);
    expect(await streamed(alice.key)).toBe(64);
    expect(await streamed(bob.key)).toBe(0);
    // Not the completions' prompt: vLLM would read that one's blocks as the same tokens.
    const responses = async (key: string) =>
      (await h.client(key).responses.create({ model: "qwen2.5-7b", instructions: `Responses: ${SYSTEM}`, input: "Hi", max_output_tokens: 2 })).usage?.input_tokens_details.cached_tokens;
    expect(await responses(alice.key)).toBe(0);
    expect(await responses(alice.key)).toBeGreaterThanOrEqual(64);
    expect(await responses(bob.key)).toBe(0);
  });

  it("embeddings carry the key's salt (vLLM's pooling routes take it)", async () => {
    await h.client(alice.key).embeddings.create({ model: "bge-m3", input: "hello" });
    expect(lastSalt(h)).toBe(keySalt(alice.id, undefined));
  });

  it("a provider's model gets no salt: its cache is the provider's", async () => {
    await h.client(alice.key).chat.completions.create({ model: "claude", messages: chat("Hi"), max_tokens: 2 });
    expect(h.fake.requests.at(-1)!.body).not.toContain("cache_salt");
  });

  it("the body is the client's bytes with the salt spliced in: first when it had none, in place of its own", async () => {
    const salt = JSON.stringify(keySalt(alice.id, undefined));
    const sent = '{ "model" : "qwen2.5-7b", "seed": 12345678901234567890, "temperature": 1.0, "messages": [{"role": "user", "content": "x"}] }';
    expect((await h.post(alice.key, "/v1/chat/completions", sent)).status).toBe(200);
    expect(h.fake.requests.at(-1)!.body).toBe(`{"cache_salt":${salt}, "model" : "qwen2.5-7b", "seed": 12345678901234567890, "temperature": 1.0, "messages": [{"role": "user", "content": "x"}] }`);
    const own = '{"model":"qwen2.5-7b","cache_salt" : "mine","temperature":1.0,"messages":[{"role":"user","content":"x"}]}';
    expect((await h.post(alice.key, "/v1/chat/completions", own)).status).toBe(200);
    expect(h.fake.requests.at(-1)!.body).toBe(`{"model":"qwen2.5-7b","cache_salt" : ${JSON.stringify(keySalt(alice.id, "mine"))},"temperature":1.0,"messages":[{"role":"user","content":"x"}]}`);
  });

  // Found by review: of duplicates only the last (the one JSON.parse and Python's json read) was
  // replaced, and the client's first went on in the bytes: a reader between the shim and vLLM that
  // takes the first of duplicates would have handed vLLM a salt the client chose (another key's:
  // a key's id is no secret, so its salt can be computed).
  it("a body with the member twice (one spelled with an escape) has the key's salt in both places, none of the client's", async () => {
    const salt = JSON.stringify(keySalt(alice.id, "mine"));
    const sent = '{"model":"qwen2.5-7b","cache_salt":"victims","messages":[{"role":"user","content":"x"}],"cache\\u005fsalt" : "mine"}';
    expect((await h.post(alice.key, "/v1/chat/completions", sent)).status).toBe(200);
    expect(h.fake.requests.at(-1)!.body).toBe(`{"model":"qwen2.5-7b","cache_salt":${salt},"messages":[{"role":"user","content":"x"}],"cache\\u005fsalt" : ${salt}}`);
  });

  it("a cache_salt vLLM would refuse is refused as vLLM refuses it (400, param cache_salt), before anything reaches it", async () => {
    const before = h.fake.counters.received;
    // vLLM refuses @, /, \ and NUL; its length is Python's len, in code points.
    for (const bad of ["", 5, "a/b", "a@b", "a\\b", "a\u0000b", "x".repeat(129), "\u{1F600}".repeat(129)]) {
      const res = await h.post(alice.key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: chat("Hi"), cache_salt: bad });
      expect(res.status).toBe(400);
      const body = (await res.json()) as { error: { param: string; message: string } };
      expect(body.error.param).toBe("cache_salt");
      expect(body.error.message).toMatch(/^Parameter 'cache_salt' must be/);
    }
    expect(h.fake.counters.received).toBe(before);
    // null is none, as in vLLM; 128 characters are taken, 128 emoji too (256 UTF-16 units).
    for (const ok of [null, "x".repeat(128), "\u{1F600}".repeat(128)]) expect((await h.post(alice.key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: chat("Hi"), cache_salt: ok, max_tokens: 1 })).status).toBe(200);
  });
});

describe("cacheIsolation: shared (the default)", () => {
  let h: Harness;
  let alice: { id: string; key: string };
  let bob: { id: string; key: string };
  beforeAll(async () => {
    h = await startShim({ file: { models: MODELS }, fake: FAKE });
    alice = await h.createKey({ name: "alice" });
    bob = await h.createKey({ name: "bob" });
    h.fake.set({ prefixCache: true });
  });
  afterAll(() => h.close());

  it("keys share the cache, and the body goes byte for byte as sent", async () => {
    expect(h.config.cacheIsolation).toBe("shared");
    expect(await chatCached(h, alice.key)).toBe(0);
    expect(await chatCached(h, bob.key)).toBe(64);
    const sent = '{ "model" : "qwen2.5-7b", "messages": [{"role": "user", "content": "x"}], "cache_salt": "theirs" }';
    expect((await h.post(alice.key, "/v1/chat/completions", sent)).status).toBe(200);
    expect(h.fake.requests.at(-1)!.body).toBe(sent);
  });

  it("a bad cache_salt is vLLM's to refuse, as before", async () => {
    const res = await h.post(alice.key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: chat("Hi"), cache_salt: "" });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { message: string } }).error.message).toBe("Parameter 'cache_salt' must be a non-empty string if provided.");
  });
});

describe("the cacheIsolation setting", () => {
  const problems = (value: unknown): string[] => {
    try {
      parseShimConfig({ SHIM_UPSTREAM_URL: "http://litellm:4000/v1", SHIM_CONFIG: "/cfg.yaml" }, () => stringify({ cacheIsolation: value }));
    } catch (e) {
      if (e instanceof ConfigError) return [...e.problems];
      throw e;
    }
    return [];
  };

  it("takes shared and key, and refuses anything else with what it takes", () => {
    expect(problems("shared")).toEqual([]);
    expect(problems("key")).toEqual([]);
    for (const bad of ["Key", "per-key", true, null, 1]) {
      expect(problems(bad)).toEqual([`SHIM_CONFIG cacheIsolation: ${JSON.stringify(bad)} is not valid; expected shared | key (key: each key its own part of vLLM's prefix cache)`]);
    }
  });

  it("a bad value stops the shim at start with that one line", async () => {
    const dir = tempDir("shim-cache-isolation-");
    writeFileSync(join(dir, "shim.yaml"), stringify({ cacheIsolation: "per-key" }));
    const failed = await spawnShim({ SHIM_UPSTREAM_URL: "http://127.0.0.1:9/v1", SHIM_CONFIG: join(dir, "shim.yaml"), SHIM_DATABASE_URL: `sqlite:${join(dir, "shim.db")}` }).catch((e: unknown) => e);
    if (!(failed instanceof ShimStartError)) throw new Error(`expected a failed start, got ${String(failed)}`);
    expect(failed.exit.code).toBe(1);
    expect(failed.stderr()).toBe('invalid api-shim configuration:\n  - SHIM_CONFIG cacheIsolation: "per-key" is not valid; expected shared | key (key: each key its own part of vLLM\'s prefix cache)\n');
  });
});
