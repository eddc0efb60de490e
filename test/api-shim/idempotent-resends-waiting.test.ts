import OpenAI from "openai";
import { describe, expect, it } from "vitest";
import { RESENDS_WAITING } from "../../api-shim/src/routes/idempotent-requests.ts";
import { aWhile, balance, CREDIT, CREDITS, FAKE, FILE, idem, prompt, requestLines, sdk } from "../support/kept-answers.ts";
import { type Harness, overrideStore } from "../support/shim-harness.ts";
import { pollUntil } from "../support/tools.ts";
import { shimPerTest } from "../support/upstream-per-test.ts";

/**
 * Re-sends waiting on one running Idempotency-Key take no place in flight, and each holds its
 * socket and its body in the shared body memory: unbounded, one key sending the same value many
 * times at once could fill that memory and refuse other keys' requests (503 body_memory_full).
 * Past RESENDS_WAITING a re-send is told at once to come back (409 idempotency_key_in_use).
 */
const spent = async (h: Harness, id: string) => CREDITS * CREDIT - (await balance(h, id));

describe("Idempotency-Key: re-sends waiting on a running request", () => {
  const start = shimPerTest();

  it(`past ${RESENDS_WAITING} waiting, a re-send is a retryable 409 idempotency_key_in_use at once, nothing generated or charged; those waiting get the answer, and once it is kept any number get it`, async () => {
    const h = await start({ file: FILE, fake: FAKE });
    h.fake.set({ tokenDelayMs: 75, defaultTokens: 20 }); // 1.5 s a generation
    const { key, id } = await h.createKey({ credits: CREDITS });
    const client = sdk(h, key);
    let firstDone = false;
    const first = client.chat.completions.create(prompt(1), idem("p-1")).withResponse().finally(() => (firstDone = true));
    await h.fake.until((c) => c.received === 1);
    const waiting = Array.from({ length: RESENDS_WAITING }, () => client.chat.completions.create(prompt(1), idem("p-1")).withResponse());
    expect(await pollUntil(() => h.app.shim.inflight.size === 1 + RESENDS_WAITING)).toBe(true);
    const over = (await client.chat.completions.create(prompt(1), idem("p-1")).catch((e: unknown) => e)) as InstanceType<typeof OpenAI.APIError>;
    // Answered while the generation still runs, not after it.
    expect(firstDone).toBe(false);
    expect(over).toBeInstanceOf(OpenAI.ConflictError);
    expect(over.code).toBe("idempotency_key_in_use");
    expect(over.param).toBe("Idempotency-Key");
    expect(over.type).toBe("invalid_request_error");
    expect(over.headers?.get("retry-after")).toBe("2");
    expect(over.headers?.get("x-should-retry")).toBe("true");
    const answers = await Promise.all([first, ...waiting]);
    expect(answers.filter((a) => a.response.headers.get("idempotent-replayed") === "true")).toHaveLength(RESENDS_WAITING);
    expect(new Set(answers.map((a) => a.data.choices[0]!.message.content)).size).toBe(1);
    await aWhile();
    expect(h.fake.counters.received).toBe(1);
    expect(await spent(h, id)).toBe(Number(answers[0]!.response.headers.get("x-credits-charged")) * CREDIT);
    // Its line says what it was, charged nothing.
    const refused = requestLines(h, id).filter((l) => l.status === 409);
    expect(refused).toHaveLength(1);
    expect(refused[0]!.error).toBe("idempotency_key_in_use");
    expect(refused[0]!.cost ?? 0).toBe(0);
    // Kept, the answer is given at once to as many as come: no cap, nothing waits.
    const replays = await Promise.all(Array.from({ length: RESENDS_WAITING + 2 }, () => client.chat.completions.create(prompt(1), idem("p-1")).withResponse()));
    expect(replays.every((r) => r.response.headers.get("idempotent-replayed") === "true")).toBe(true);
    expect(h.fake.counters.received).toBe(1);
  });

  it("openai-node with its default retries waits out the 409's Retry-After and gets the answer once the generation has ended, charged once", async () => {
    const h = await start({ file: FILE, fake: FAKE });
    h.fake.set({ tokenDelayMs: 50, defaultTokens: 20 }); // 1 s: ended before the 2 s Retry-After
    const { key, id } = await h.createKey({ credits: CREDITS });
    const client = sdk(h, key);
    const first = client.chat.completions.create(prompt(1), idem("p-1")).withResponse();
    await h.fake.until((c) => c.received === 1);
    const waiting = Array.from({ length: RESENDS_WAITING }, () => client.chat.completions.create(prompt(1), idem("p-1")));
    expect(await pollUntil(() => h.app.shim.inflight.size === 1 + RESENDS_WAITING)).toBe(true);
    const retried = await sdk(h, key, 2).chat.completions.create(prompt(1), idem("p-1")).withResponse();
    expect(retried.response.headers.get("idempotent-replayed")).toBe("true");
    const charged = Number((await first).response.headers.get("x-credits-charged"));
    await Promise.all(waiting);
    expect(h.fake.counters.received).toBe(1);
    expect(await spent(h, id)).toBe(charged * CREDIT);
    // Its first attempt was the 409, its retry the replay.
    const lines = requestLines(h, id);
    expect(lines.filter((l) => l.status === 409).map((l) => l.error)).toEqual(["idempotency_key_in_use"]);
  }, 15_000);

  it("a waiting re-send whose client left (its SDK timed out) gives its place to the next: that one waits and gets the answer", async () => {
    const h = await start({ file: FILE, fake: FAKE });
    h.fake.set({ tokenDelayMs: 75, defaultTokens: 20 }); // 1.5 s
    const { key } = await h.createKey({ credits: CREDITS });
    const client = sdk(h, key);
    const first = client.chat.completions.create(prompt(1), idem("p-1"));
    await h.fake.until((c) => c.received === 1);
    const gone = new AbortController();
    const left = Array.from({ length: RESENDS_WAITING }, () => client.chat.completions.create(prompt(1), { ...idem("p-1"), signal: gone.signal }).catch(() => undefined));
    expect(await pollUntil(() => h.app.shim.inflight.size === 1 + RESENDS_WAITING)).toBe(true);
    gone.abort();
    await Promise.all(left);
    expect(await pollUntil(() => h.app.shim.inflight.size === 1)).toBe(true);
    const next = await client.chat.completions.create(prompt(1), idem("p-1")).withResponse();
    expect(next.response.headers.get("idempotent-replayed")).toBe("true");
    await first;
    expect(h.fake.counters.received).toBe(1);
  });

  it("one key re-sending a large idempotent request many times at once does not fill the shared body memory: another key's large request is still admitted", async () => {
    const MiB = 1024 * 1024;
    // About 0.9 MiB each (body-memory.test.ts's LARGE): past the 64 KiB every body may take.
    const input = Array.from({ length: 900 }, (_, i) => `${i} ` + "word ".repeat(200));
    const file = { ...FILE, models: [...FILE.models, { name: "bge-m3", maxModelLen: 8192 }] };
    // Room for 6 such bodies: the first, 4 waiting re-sends, and one more.
    const h = await start({ file, fake: { models: [{ name: "qwen2.5-7b" }, { name: "bge-m3" }] }, env: { SHIM_BODY_MEMORY_BYTES: String(6 * MiB) } });
    h.fake.set({ headerDelayMs: 3000 });
    const a = await h.createKey({ credits: CREDITS });
    const b = await h.createKey({ credits: CREDITS });
    const client = sdk(h, a.key);
    const embed = () => client.embeddings.create({ model: "bge-m3", input }, idem("big")).withResponse();
    const first = embed();
    await h.fake.until((c) => c.received === 1);
    const waiting = Array.from({ length: RESENDS_WAITING }, embed);
    expect(await pollUntil(() => h.app.shim.inflight.size === 1 + RESENDS_WAITING, 10_000)).toBe(true);
    // The same again and again: each refused (409), its body let go.
    for (let i = 0; i < 4; i++) expect(await embed().catch((e: unknown) => e)).toMatchObject({ status: 409, code: "idempotency_key_in_use" });
    expect(h.app.shim.bodyMemory.inUse).toBeLessThanOrEqual(5 * MiB);
    // Another key's large request finds room.
    const other = await sdk(h, b.key).embeddings.create({ model: "bge-m3", input: input.slice(1) }).withResponse();
    expect(other.response.status).toBe(200);
    await Promise.all([first, ...waiting]);
    expect(h.fake.counters.received).toBe(2);
  }, 30_000);

  it("a kept answer is given to any number of re-sends at once, with a slow store too (Postgres): none is refused", async () => {
    let delay = 0;
    const h = await start({ file: FILE, fake: FAKE, wrapStore: (s) => overrideStore(s, { getKey: async (id: string) => { if (delay) await new Promise((r) => setTimeout(r, delay)); return s.getKey(id); } }) });
    const { key } = await h.createKey({ credits: CREDITS });
    const client = sdk(h, key);
    await client.chat.completions.create(prompt(1), idem("p-1"));
    // Each replay reads its key's balance as it is sent: 200 ms each, so they overlap.
    delay = 200;
    const replays = await Promise.all(Array.from({ length: 2 * RESENDS_WAITING }, () => client.chat.completions.create(prompt(1), idem("p-1")).withResponse()));
    expect(replays.every((r) => r.response.headers.get("idempotent-replayed") === "true")).toBe(true);
    expect(h.fake.counters.received).toBe(1);
  });
});
