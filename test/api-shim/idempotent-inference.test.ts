import OpenAI from "openai";
import { describe, expect, it } from "vitest";
import { aWhile, balance, BODY, type Chat, CREDIT, CREDITS, FAKE, FILE, idem, prompt, requestLines, sdk } from "../support/kept-answers.ts";
import type { Harness } from "../support/shim-harness.ts";
import { pollUntil } from "../support/tools.ts";
import { shimPerTest } from "../support/upstream-per-test.ts";

/**
 * A batch job killed and restarted paid again for what it had in flight: those requests were
 * generated to their end and charged (their client left), and the new process's re-sends were
 * generated and charged again. With an `Idempotency-Key` per prompt, a re-send of the same body
 * gets the earlier request's answer (waiting for it while it runs), charged once; openai-node
 * 7.57 sends no such header itself (its idempotencyHeader is unset), so the job sends its own.
 */
/** FILE with an embeddings model too. */
const WITH_EMBEDDINGS = { ...FILE, models: [...FILE.models, { name: "bge-m3", maxModelLen: 8192 }] };
/** µc charged to a key made with CREDITS. */
const spent = async (h: Harness, id: string) => CREDITS * CREDIT - (await balance(h, id));
const metric = async (h: Harness, series: string) => Number(new RegExp(`^${series.replace(/[{}"]/g, "\\$&")} (\\S+)$`, "m").exec(await (await fetch(`${h.url}/metrics`)).text())?.[1]);

describe("Idempotency-Key on the inference routes", () => {
  const start = shimPerTest();

  it("a job killed with 8 requests in flight and restarted with the same keys pays for 8: the re-sends wait for those generations, and sent again once they ended get the kept answers", async () => {
    const h = await start({ file: FILE, fake: FAKE });
    h.fake.set({ tokenDelayMs: 50, defaultTokens: 20 }); // 1 s a generation
    const { key, id } = await h.createKey({ credits: CREDITS });
    // The first process: 8 prompts in flight, then killed (its connections closed).
    const kill = new AbortController();
    const first = sdk(h, key);
    const inFlight = Array.from({ length: 8 }, (_, i) => first.chat.completions.create(prompt(i), { ...idem(`job-1:${i}`), signal: kill.signal }).catch(() => undefined));
    await h.fake.until((c) => c.received === 8);
    kill.abort();
    await Promise.all(inFlight);
    // The restarted process sends them all again, while they are still generating.
    const again = sdk(h, key);
    const resend = () => Promise.all(Array.from({ length: 8 }, (_, i) => again.chat.completions.create(prompt(i), idem(`job-1:${i}`)).withResponse()));
    const joined = await resend();
    const lines = requestLines(h, id);
    const left = lines.filter((l) => l.status === 499);
    expect(left).toHaveLength(8);
    for (const { data, response } of joined) {
      expect(response.headers.get("idempotent-replayed")).toBe("true");
      expect(data.choices[0]!.message.content).toBeTruthy();
      // One of the left generations, and its charge.
      const generation = left.find((l) => l.reqId === response.headers.get("x-joined-request-id"))!;
      expect(Number(response.headers.get("x-credits-charged"))).toBe(generation.cost);
    }
    // Each its own prompt's generation: 8 different ones.
    expect(new Set(joined.map((r) => r.response.headers.get("x-joined-request-id"))).size).toBe(8);
    await aWhile();
    expect(h.fake.counters.received).toBe(8);
    const paid = left.reduce((n, l) => n + (l.cost as number), 0);
    expect(await spent(h, id)).toBe(paid * CREDIT);
    // The job crashed again after getting the answers but before recording them: the same again, from memory.
    const replayed = await resend();
    expect(replayed.map((r) => r.response.headers.get("idempotent-replayed"))).toEqual(Array(8).fill("true"));
    expect(replayed.map((r) => r.data.choices[0]!.message.content)).toEqual(joined.map((r) => r.data.choices[0]!.message.content));
    await aWhile();
    expect(h.fake.counters.received).toBe(8);
    expect(await spent(h, id)).toBe(paid * CREDIT);
    // A replay is not a charge: its line says cost 0 and which request it replayed.
    const replayLines = requestLines(h, id).filter((l) => l.status === 200);
    expect(replayLines).toHaveLength(16);
    for (const l of replayLines) expect(left.map((g) => g.reqId)).toContain(l.replayed);
    expect(replayLines.every((l) => l.cost === 0 && !("joined" in l))).toBe(true);
    expect(await metric(h, 'shim_idempotent_replays_total{outcome="running"}')).toBe(8);
    expect(await metric(h, 'shim_idempotent_replays_total{outcome="finished"}')).toBe(8);
  });

  it("an answered request's re-send (the job got it, then crashed before recording it) is its kept answer, charged once; on embeddings too", async () => {
    const h = await start({ file: WITH_EMBEDDINGS, fake: { models: [{ name: "qwen2.5-7b" }, { name: "bge-m3" }] } });
    const { key, id } = await h.createKey({ credits: CREDITS });
    const client = sdk(h, key);
    const a = await client.chat.completions.create(prompt(1), idem("p-1")).withResponse();
    expect(a.response.headers.get("idempotent-replayed")).toBeNull();
    const once = await spent(h, id);
    expect(once).toBeGreaterThan(0);
    const b = await client.chat.completions.create(prompt(1), idem("p-1")).withResponse();
    expect(b.response.headers.get("idempotent-replayed")).toBe("true");
    expect(b.response.headers.get("x-joined-request-id")).toBe(a.response.headers.get("x-request-id"));
    expect(b.data.choices).toEqual(a.data.choices);
    expect(b.response.headers.get("x-credits-charged")).toBe(a.response.headers.get("x-credits-charged"));
    const e1 = await client.embeddings.create({ model: "bge-m3", input: ["one", "two"] }, idem("e-1")).withResponse();
    const e2 = await client.embeddings.create({ model: "bge-m3", input: ["one", "two"] }, idem("e-1")).withResponse();
    expect(e2.response.headers.get("idempotent-replayed")).toBe("true");
    expect(e2.data.data).toEqual(e1.data.data);
    await aWhile();
    expect(h.fake.counters.received).toBe(2);
    expect(await spent(h, id)).toBe(once + Number(e1.response.headers.get("x-credits-charged")) * CREDIT);
  });

  it("the SDK's own retry of a request with an Idempotency-Key (its timeout shorter than the generation) gets that generation's answer, charged once", async () => {
    const h = await start({ file: FILE, fake: FAKE });
    h.fake.set({ tokenDelayMs: 75, defaultTokens: 20 }); // 1.5 s: past the client's 1 s timeout
    const { key, id } = await h.createKey({ credits: CREDITS });
    const client = new OpenAI({ apiKey: key, baseURL: `${h.url}/v1`, timeout: 1000, maxRetries: 2 });
    const { response } = await client.chat.completions.create(prompt(1), idem("p-1")).withResponse();
    expect(response.headers.get("idempotent-replayed")).toBe("true");
    await aWhile();
    expect(h.fake.counters.received).toBe(1);
    expect(await spent(h, id)).toBe(Number(response.headers.get("x-credits-charged")) * CREDIT);
  });

  it("the same Idempotency-Key with another body, route or price is a 409 idempotency_key_reused, nothing generated or charged", async () => {
    const h = await start({ file: WITH_EMBEDDINGS, fake: { models: [{ name: "qwen2.5-7b" }, { name: "bge-m3" }] } });
    const { key, id } = await h.createKey({ credits: CREDITS });
    const client = sdk(h, key);
    await client.chat.completions.create(prompt(1), idem("p-1"));
    const once = await spent(h, id);
    const refusals = [
      () => client.chat.completions.create(prompt(2), idem("p-1")),
      () => client.chat.completions.create(prompt(1), { ...idem("p-1"), query: { batch: 1 } }),
      () => client.embeddings.create({ model: "bge-m3", input: "prompt 1" }, idem("p-1")),
    ];
    for (const refused of refusals) {
      const err = (await refused().catch((e: unknown) => e)) as InstanceType<typeof OpenAI.APIError>;
      expect(err).toBeInstanceOf(OpenAI.ConflictError);
      expect(err.code).toBe("idempotency_key_reused");
      expect(err.param).toBe("Idempotency-Key");
      expect(err.headers?.get("x-should-retry")).toBe("false");
    }
    await aWhile();
    expect(h.fake.counters.received).toBe(1);
    expect(await spent(h, id)).toBe(once);
  });

  it("two keys with the same Idempotency-Key never meet: each generated and charged to its key", async () => {
    const h = await start({ file: FILE, fake: FAKE });
    const a = await h.createKey({ credits: CREDITS });
    const b = await h.createKey({ credits: CREDITS });
    await sdk(h, a.key).chat.completions.create(prompt(1), idem("shared"));
    const other = await sdk(h, b.key).chat.completions.create(prompt(1), idem("shared")).withResponse();
    expect(other.response.headers.get("idempotent-replayed")).toBeNull();
    expect(h.fake.counters.received).toBe(2);
    expect(await spent(h, b.id)).toBe(Number(other.response.headers.get("x-credits-charged")) * CREDIT);
    // And another key's different body under the value is not a conflict.
    const third = await sdk(h, b.key).chat.completions.create(prompt(3), idem("other")).withResponse();
    expect(third.response.status).toBe(200);
  });

  it("copies sent together (a job started twice) make one generation, charged once, each answered with it", async () => {
    const h = await start({ file: FILE, fake: FAKE });
    h.fake.set({ tokenDelayMs: 20, defaultTokens: 20 });
    const { key, id } = await h.createKey({ credits: CREDITS });
    const client = sdk(h, key);
    const copies = await Promise.all([1, 2, 3].map(() => client.chat.completions.create(prompt(1), idem("p-1")).withResponse()));
    expect(copies.filter((c) => c.response.headers.get("idempotent-replayed") === "true")).toHaveLength(2);
    expect(new Set(copies.map((c) => c.data.choices[0]!.message.content)).size).toBe(1);
    await aWhile();
    expect(h.fake.counters.received).toBe(1);
    expect(await spent(h, id)).toBe(Number(copies[0]!.response.headers.get("x-credits-charged")) * CREDIT);
  });

  it("a first request that failed or was refused is not kept: its re-send is generated", async () => {
    const h = await start({ file: FILE, fake: FAKE });
    const { key, id } = await h.createKey({ credits: CREDITS });
    const client = sdk(h, key);
    h.fake.set({ failStatus: 503 });
    await expect(client.chat.completions.create(prompt(1), idem("p-1"))).rejects.toBeInstanceOf(OpenAI.InternalServerError);
    h.fake.reset();
    const retried = await client.chat.completions.create(prompt(1), idem("p-1")).withResponse();
    expect(retried.response.headers.get("idempotent-replayed")).toBeNull();
    expect(h.fake.counters.received).toBe(2);
    expect(await spent(h, id)).toBe(Number(retried.response.headers.get("x-credits-charged")) * CREDIT);
    // Refused for credits before anything was generated: the re-send (after a top-up) generates.
    const poor = await h.createKey({ credits: 1 });
    await expect(sdk(h, poor.key).chat.completions.create(prompt(2), idem("p-2"))).rejects.toMatchObject({ status: 402 });
    await h.admin(`/admin/keys/${poor.id}/credits`, { method: "POST", body: JSON.stringify({ amount: 100 }) });
    const paid = await sdk(h, poor.key).chat.completions.create(prompt(2), idem("p-2")).withResponse();
    expect(paid.response.headers.get("idempotent-replayed")).toBeNull();
    expect(h.fake.counters.received).toBe(3);
  });

  it("a re-send waiting on a first request that then fails generates its own", async () => {
    const h = await start({ file: FILE, fake: FAKE });
    const { key } = await h.createKey({ credits: CREDITS });
    h.fake.set({ failStatus: 503, headerDelayMs: 600 });
    const client = sdk(h, key);
    const firstFails = client.chat.completions.create(prompt(1), idem("p-1")).catch((e: unknown) => e);
    await h.fake.until((c) => c.received === 1);
    const waiting = client.chat.completions.create(prompt(1), idem("p-1")).withResponse();
    await new Promise((r) => setTimeout(r, 100));
    h.fake.reset(); // the re-send, once the failure is in, reaches an upstream that answers
    expect(await firstFails).toBeInstanceOf(OpenAI.InternalServerError);
    const own = await waiting;
    expect(own.response.status).toBe(200);
    expect(own.response.headers.get("idempotent-replayed")).toBeNull();
    expect(h.fake.counters.received).toBe(2);
  });

  it("at the key's cap in flight a re-send joins its running request (no 429: it takes no place); one refused at the cap is not kept", async () => {
    const h = await start({ file: { ...FILE, tiers: { one: { rpm: 1000, tpm: 1_000_000, concurrency: 1 } } }, fake: FAKE });
    const { key } = await h.createKey({ credits: CREDITS, tier: "one" });
    h.fake.set({ tokenDelayMs: 50, defaultTokens: 20 }); // 1 s: the key's one place is the killed job's request throughout
    const kill = new AbortController();
    const killed = sdk(h, key).chat.completions.create(prompt(1), { ...idem("p-1"), signal: kill.signal }).catch(() => undefined);
    await h.fake.until((c) => c.received === 1);
    kill.abort();
    await killed;
    const joined = await sdk(h, key).chat.completions.create(prompt(1), idem("p-1")).withResponse();
    expect(joined.response.headers.get("idempotent-replayed")).toBe("true");
    // Another request holds the place: one with a new Idempotency-Key is refused at the cap, and not kept.
    const holding = sdk(h, key).chat.completions.create(prompt(2));
    await h.fake.until((c) => c.received === 2);
    await expect(sdk(h, key).chat.completions.create(prompt(3), idem("p-3"))).rejects.toMatchObject({ status: 429 });
    await holding;
    const sentAgain = await sdk(h, key).chat.completions.create(prompt(3), idem("p-3")).withResponse();
    expect(sentAgain.response.headers.get("idempotent-replayed")).toBeNull();
    expect(h.fake.counters.received).toBe(3);
  });

  it("an Idempotency-Key too long, of other characters, or on a stream is a 400 naming it, nothing generated", async () => {
    const h = await start({ file: FILE, fake: FAKE });
    const { key, id } = await h.createKey({ credits: CREDITS });
    const client = sdk(h, key);
    for (const [value, stream] of [["x".repeat(201), false], ["caf\u00e9", false], ["tab\there", false], ["ok", true]] as const) {
      const err = (await client.chat.completions.create({ ...prompt(1), stream } as Chat, idem(value)).catch((e: unknown) => e)) as InstanceType<typeof OpenAI.APIError>;
      expect(err).toBeInstanceOf(OpenAI.BadRequestError);
      expect(err.param).toBe("Idempotency-Key");
      expect(err.message).toMatch(stream ? /non-streamed requests only/ : /1 to 200 printable ASCII/);
    }
    const longest = await client.chat.completions.create(prompt(1), idem("x".repeat(200))).withResponse();
    expect(longest.response.status).toBe(200);
    expect(h.fake.counters.received).toBe(1);
    await pollUntil(async () => (await spent(h, id)) > 0, 5000, 10);
  });
});
