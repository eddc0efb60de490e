import { PermissionDeniedError } from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_FAKE, startShim, type Harness } from "../support/shim-harness.ts";
import { failure } from "../support/api-failure.ts";

/**
 * Model aliases (SHIM_CONFIG models[].aliases), for clients that send the names they sent to
 * LiteLLM or OpenAI: the shim takes an alias for its model, forwards the model's own name (the
 * fake vLLM knows no alias: an alias reaching it is a 404), and prices, limits, allow-lists and
 * reports the request under the model's name, so an invoice is never split across names.
 */
describe("model aliases through the shim, with the openai SDK", () => {
  let h: Harness;
  const chat = { messages: [{ role: "user" as const, content: "one two three" }], max_tokens: 4 };

  beforeAll(async () => {
    h = await startShim({
      file: {
        pricing: { request: 1, batchRequest: 2, models: { "qwen2.5-7b": { promptPer1k: 0.5, completionPer1k: 1 } } },
        models: [
          { name: "qwen2.5-7b", maxModelLen: 8192, aliases: ["gpt-4o-mini", "gpt-3.5-turbo"] },
          { name: "bge-m3", maxModelLen: 8192, aliases: ["text-embedding-3-small"] },
        ],
      },
      fake: DEFAULT_FAKE, // serves qwen2.5-7b and bge-m3 only
    });
  });
  afterAll(() => h.close());

  /** What the fake's last usage costs at qwen2.5-7b's price, in credits. */
  const lastCost = () => {
    const u = h.fake.usages.at(-1)!;
    return 1 + (500 * u.prompt_tokens + 1000 * u.completion_tokens) / 1e6;
  };

  it("answers a request sent with an alias as its model, named by the model, charged the model's price", async () => {
    const { key, id } = await h.createKey({ credits: 100 });
    const { data, response } = await h.client(key).chat.completions.create({ model: "gpt-4o-mini", ...chat }).withResponse();
    expect(data.model).toBe("qwen2.5-7b");
    expect(data.choices[0]!.message.content).toBeTruthy();
    expect(Number(response.headers.get("x-credits-charged"))).toBeCloseTo(lastCost(), 6);
    const first = lastCost();
    expect(first).toBeGreaterThan(1); // the token prices counted, not the request price alone

    // Streamed too: every chunk names the model, and the stream is charged its usage at the model's price.
    const stream = await h.client(key).chat.completions.create({ model: "gpt-3.5-turbo", ...chat, stream: true });
    const models = new Set<string>();
    for await (const chunk of stream) models.add(chunk.model);
    expect([...models]).toEqual(["qwen2.5-7b"]);
    expect((await h.store.getKey(id))!.balance).toBe(Math.round((100 - first - lastCost()) * 1e6));

    const embedded = await h.client(key).embeddings.create({ model: "text-embedding-3-small", input: "a b c" });
    expect(embedded.model).toBe("bge-m3");
    const responded = await h.client(key).responses.create({ model: "gpt-4o-mini", input: "hi", max_output_tokens: 4 });
    expect(responded.model).toBe("qwen2.5-7b");
  });

  it("reports usage under the model's name alone, in GET /v1/usage and GET /admin/usage", async () => {
    const { key, id } = await h.createKey({ credits: 100 });
    const c = h.client(key);
    await c.chat.completions.create({ model: "gpt-4o-mini", ...chat });
    const viaAlias = lastCost();
    await c.chat.completions.create({ model: "qwen2.5-7b", ...chat });
    const viaName = lastCost();
    await c.chat.completions.create({ model: "gpt-3.5-turbo", ...chat });
    const viaOther = lastCost();
    const cost = viaAlias + viaName + viaOther;
    const own = (await (await fetch(`${h.url}/v1/usage`, { headers: { authorization: `Bearer ${key}` } })).json()) as { usage: { models: Record<string, { requests: number; cost: number }> } };
    expect(Object.keys(own.usage.models)).toEqual(["qwen2.5-7b"]);
    expect(own.usage.models["qwen2.5-7b"]!.requests).toBe(3);
    expect(own.usage.models["qwen2.5-7b"]!.cost).toBeCloseTo(cost, 6);
    const admin = (await (await h.admin(`/admin/usage?key=${id}&group=model`)).json()) as { data: { model: string; requests: number; cost: number }[] };
    expect(admin.data).toEqual([expect.objectContaining({ key_id: id, model: "qwen2.5-7b", requests: 3 })]);
    expect(admin.data[0]!.cost).toBeCloseTo(cost, 6);
    const rows = (await (await h.admin(`/admin/requests?key=${id}`)).json()) as { data: { model: string }[] };
    expect(rows.data.map((r) => r.model)).toEqual(["qwen2.5-7b", "qwen2.5-7b", "qwen2.5-7b"]);
  });

  it("lists each alias in GET /v1/models after its model, as the model's entry under the alias's id, and retrieves it", async () => {
    const { key } = await h.createKey({ credits: 10 });
    const listed = (await h.client(key).models.list()).data;
    expect(listed.map((m) => m.id)).toEqual(["qwen2.5-7b", "gpt-4o-mini", "gpt-3.5-turbo", "bge-m3", "text-embedding-3-small"]);
    const model = listed.find((m) => m.id === "qwen2.5-7b")!;
    const alias = listed.find((m) => m.id === "gpt-4o-mini")!;
    expect(alias).toEqual({ ...model, id: "gpt-4o-mini" }); // its context, owner and price are the model's
    expect((await h.client(key).models.retrieve("gpt-4o-mini")).id).toBe("gpt-4o-mini");
  });

  it("gives a key allowed a model that model's aliases, and keeps an allow-list that names an alias as the model's name", async () => {
    const limited = await h.createKey({ credits: 10, models: ["qwen2.5-7b"] });
    expect((await h.client(limited.key).chat.completions.create({ model: "gpt-4o-mini", ...chat })).model).toBe("qwen2.5-7b");
    const refused = await failure(() => h.client(limited.key).embeddings.create({ model: "text-embedding-3-small", input: "x" }));
    expect(refused).toBeInstanceOf(PermissionDeniedError);
    // The refusal quotes the name the client sent.
    expect(refused.error).toMatchObject({ code: "model_not_allowed", param: "model", message: "This key may not use the model 'text-embedding-3-small'." });
    expect((await h.client(limited.key).models.list()).data.map((m) => m.id)).toEqual(["qwen2.5-7b", "gpt-4o-mini", "gpt-3.5-turbo"]);

    const byAlias = await h.createKey({ credits: 10, models: ["gpt-4o-mini"] });
    const keys = (await (await h.admin("/admin/keys")).json()) as { data: { id: string; models: string[] | null }[] };
    expect(keys.data.find((k) => k.id === byAlias.id)!.models).toEqual(["qwen2.5-7b"]);
    expect((await h.client(byAlias.key).chat.completions.create({ model: "gpt-3.5-turbo", ...chat })).model).toBe("qwen2.5-7b");
  });

  it("holds a request without max_tokens against the model's context whichever name it is sent by", async () => {
    const { key } = await h.createKey({ credits: 1 });
    const held = async (model: string) => {
      const e = await failure(() => h.client(key).chat.completions.create({ model, messages: chat.messages }, { maxRetries: 0 }));
      expect(e.status, model).toBe(402);
      return (e.error as { credits_required: number }).credits_required;
    };
    // The request price and 8,192 completion tokens at 1 credit per 1k, plus the prompt's estimate
    // from the body's bytes (the alias is a byte longer than the model's name: half a millicredit).
    const byName = await held("qwen2.5-7b");
    const byAlias = await held("gpt-4o-mini");
    expect(byName).toBeGreaterThan(1 + 8.192);
    expect(byName).toBeLessThan(1 + 8.192 + 0.5);
    expect(Math.abs(byAlias - byName)).toBeLessThanOrEqual(0.001);
  });
});
