import OpenAI from "openai";
import { describe, expect, it } from "vitest";
import { aWhile, BODY, type Chat, CREDITS, FAKE, FILE, idem, prompt, sdk } from "../support/kept-answers.ts";
import type { Harness } from "../support/shim-harness.ts";
import { shimPerTest } from "../support/upstream-per-test.ts";
import { KEY_ENTRIES } from "../../api-shim/src/limits/left-generations.ts";

/**
 * Idempotency-Key cases found by the review of 2026-12-07 (idempotent-inference.test.ts has the
 * feature's own): what a restarted job pays where the memory's bounds or its waiting re-sends are at stake.
 */
const UNLIMITED = { ...FILE, tiers: { job: { rpm: null, tpm: null, concurrency: null } } };

describe("Idempotency-Key: the review's cases", () => {
  const start = shimPerTest();

  it("a long request still running when the job is killed is still joined by its re-send after the job sent its key's share of short ones (the answered ones give way first)", async () => {
    const h = await start({ file: UNLIMITED, fake: FAKE, env: { SHIM_UPSTREAM_TIMEOUT_MS: "120000" } });
    const { key } = await h.createKey({ credits: 100 * CREDITS, tier: "job" });
    const client = sdk(h, key);
    // The long one: 2 s a token until it is let go below. The fake reads a request's behaviour as it
    // generates, from the object set() made then (the next set() makes another): running for sure
    // however long the short ones take on a loaded machine (a fixed 6 s delay ended before them).
    h.fake.set({ tokenDelayMs: 2000 });
    const longRun = h.fake.behaviour;
    const kill = new AbortController();
    const long = client.chat.completions.create(prompt("long"), { ...idem("job:long"), signal: kill.signal }).catch(() => undefined);
    await h.fake.until((c) => c.received === 1);
    h.fake.set({ tokenDelayMs: 0 });
    // Meanwhile the job's other workers get KEY_ENTRIES answers, each sent with its own key.
    for (let i = 0; i < KEY_ENTRIES; i += 25) {
      await Promise.all(Array.from({ length: 25 }, (_, j) => client.chat.completions.create(prompt(i + j), idem(`job:${i + j}`))));
    }
    // Killed, restarted: the long one's re-send waits for its generation rather than starting another.
    kill.abort();
    await long;
    longRun.tokenDelayMs = 0; // it ends after its current token
    const again = await client.chat.completions.create(prompt("long"), idem("job:long")).withResponse();
    expect(again.response.headers.get("idempotent-replayed")).toBe("true");
    await aWhile();
    expect(h.fake.counters.received).toBe(1 + KEY_ENTRIES);
  }, 60_000);

  it("a batch job's answered keyed requests pushed out for room are counted as idempotent, not as left generations a retry lost (shim_retry_memory_evictions_total's kind)", async () => {
    const h = await start({ file: UNLIMITED, fake: FAKE });
    const { key } = await h.createKey({ credits: 100 * CREDITS, tier: "job" });
    const client = sdk(h, key);
    // One more than its key's share, each answered to the job, which stayed.
    for (let i = 0; i <= KEY_ENTRIES; i += 25) {
      await Promise.all(Array.from({ length: Math.min(25, KEY_ENTRIES + 1 - i) }, (_, j) => client.chat.completions.create(prompt(i + j), idem(`job:${i + j}`))));
    }
    const text = await (await fetch(`${h.url}/metrics`)).text();
    const value = (labels: string) => Number(text.match(new RegExp(`^shim_retry_memory_evictions_total\\{${labels}\\} (\\d+)$`, "m"))?.[1]);
    expect(value('reason="over_key_share",kind="idempotent"')).toBe(1);
    // The dashboard's "a retry may have found gone for lack of room" reads the left ones: none.
    for (const reason of ["expired", "over_key_share", "over_total"]) expect(value(`reason="${reason}",kind="left"`)).toBe(0);
  });

  it("a re-send waiting on a first request (its client there) whose generation runs out of time gets its final 504, not the same long generation started again", async () => {
    // Half the shim's upstream timeout is the line past which a generation's timeout is final (inference-failures.ts).
    const h = await start({ file: FILE, fake: FAKE, env: { SHIM_UPSTREAM_TIMEOUT_MS: "1500" } });
    const { key } = await h.createKey({ credits: CREDITS });
    h.fake.set({ headerDelayMs: 5000 });
    const client = sdk(h, key);
    const first = client.chat.completions.create(prompt(1), idem("job:1")).catch((e: unknown) => e);
    await h.fake.until((c) => c.received === 1);
    const again = await client.chat.completions.create(prompt(1), idem("job:1")).catch((e: unknown) => e);
    for (const err of [await first, again] as InstanceType<typeof OpenAI.APIError>[]) {
      expect(err).toBeInstanceOf(OpenAI.InternalServerError);
      expect(err.status).toBe(504);
      expect(err.headers?.get("x-should-retry")).toBe("false");
    }
    await aWhile();
    expect(h.fake.counters.received).toBe(1);
  });

  it("a re-send already waiting on a request whose answer is too large to keep (over a key's share) gets that answer, not a generation of its own", async () => {
    const h = await start({ file: { ...FILE, models: [...FILE.models, { name: "bge-m3", maxModelLen: 8192 }] }, fake: { models: [{ name: "qwen2.5-7b" }, { name: "bge-m3" }] } });
    const { key } = await h.createKey({ credits: CREDITS });
    // 64 vectors of 30,000 floats as JSON: past KEY_BYTES (16 MiB), within what the shim relays.
    h.fake.set({ embeddingDims: 30_000, headerDelayMs: 1000 });
    const client = sdk(h, key);
    const body = { model: "bge-m3", input: Array.from({ length: 64 }, (_, i) => `text ${i}`), encoding_format: "float" as const };
    const first = client.embeddings.create(body, idem("big:1")).withResponse();
    await h.fake.until((c) => c.received === 1);
    const waiting = client.embeddings.create(body, idem("big:1")).withResponse();
    const [a, b] = await Promise.all([first, waiting]);
    expect(b.response.headers.get("idempotent-replayed")).toBe("true");
    expect(b.response.headers.get("x-joined-request-id")).toBe(a.response.headers.get("x-request-id"));
    expect(b.data.data).toHaveLength(64);
    expect(h.fake.counters.received).toBe(1);
    // Not kept: a re-send that comes after it is generated (and charged) again, as the docs say.
    const later = await client.embeddings.create(body, idem("big:1")).withResponse();
    expect(later.response.headers.get("idempotent-replayed")).toBeNull();
    expect(h.fake.counters.received).toBe(2);
  }, 60_000); // three 20 MiB answers parsed and relayed: ~16 s on a loaded 2-core machine
});
