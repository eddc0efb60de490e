// cacheIsolation: key behind LiteLLM, as the deployed stack runs it. LiteLLM's native Responses
// path for a `hosted_vllm/` model drops a top-level member it does not know, `cache_salt` among
// them, and merges the request's `extra_body` into what it sends vLLM (fake-litellm-responses.ts,
// vllmBody, cites the source). Without the salt there, keys share vLLM's prefix cache again on
// /v1/responses while the operator believes them isolated.
import { BadRequestError } from "openai";
import { describe, expect, it } from "vitest";
import { keySalt } from "../../api-shim/src/requests/cache-salt.ts";
import { litellmResponsesShim } from "../support/litellm-responses-shim.ts";

const MODELS = [{ name: "qwen2.5-7b", maxModelLen: 8192 }];
const ask = { model: "qwen2.5-7b", input: "Hi", max_output_tokens: 2 };

describe("cacheIsolation: key, /v1/responses through LiteLLM", () => {
  const f = litellmResponsesShim({ models: MODELS, cacheIsolation: "key" });

  it("vLLM gets each key's own salt, streamed or not", async () => {
    const alice = await f.h.createKey({ name: "alice" });
    const bob = await f.h.createKey({ name: "bob" });
    await f.h.client(alice.key).responses.create(ask);
    expect(f.litellm.vllmBodies.at(-1)!.cache_salt).toBe(keySalt(alice.id, undefined));
    const stream = await f.h.client(bob.key).responses.create({ ...ask, stream: true });
    for await (const _ of stream);
    expect(f.litellm.vllmBodies.at(-1)!.cache_salt).toBe(keySalt(bob.id, undefined));
  });

  it("a client's own cache_salt still splits its key's cache, combined with the key's", async () => {
    const alice = await f.h.createKey({ name: "alice" });
    await f.h.client(alice.key).responses.create({ ...ask, cache_salt: "end-user-1" } as typeof ask);
    expect(f.litellm.vllmBodies.at(-1)!.cache_salt).toBe(keySalt(alice.id, "end-user-1"));
  });

  it("a client's own extra_body (another key's salt in it) is refused, before anything reaches vLLM: the shim's is the only one", async () => {
    const alice = await f.h.createKey({ name: "alice" });
    const bob = await f.h.createKey({ name: "bob" });
    const sent = f.litellm.vllmBodies.length;
    const e = await f.h.client(bob.key).responses.create({ ...ask, extra_body: { cache_salt: keySalt(alice.id, undefined) } } as typeof ask).catch((err: unknown) => err);
    expect(e).toBeInstanceOf(BadRequestError);
    expect((e as BadRequestError).param).toBe("extra_body");
    expect(f.litellm.vllmBodies.length).toBe(sent); // nothing reached vLLM
  });
});

describe("cacheIsolation: shared, /v1/responses through LiteLLM", () => {
  const f = litellmResponsesShim({ models: MODELS });

  it("the body goes as sent: no salt, no extra_body", async () => {
    const { key } = await f.h.createKey({});
    await f.h.client(key).responses.create(ask);
    expect(f.litellm.bodies.at(-1)).toEqual(ask);
  });
});
