// Found by mutation review: cache-write pricing a one-token change to cache-writes.ts or
// provider-surcharges.ts got past every test with: the lifetime of a request that marks a
// 1-hour prefix and then a 5-minute turn (the order Anthropic requires: longer lifetimes first),
// and the cap of the surcharge at the prompt tokens for usages reporting more writes than that.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cacheWriteSurcharge } from "../../api-shim/src/money/cache-writes.ts";
import { CHAT_TEMPLATE_TOKENS } from "../../api-shim/src/money/pricing.ts";
import { refuseProviderSurcharges } from "../../api-shim/src/providers/provider-surcharges.ts";
import type { Harness } from "../support/shim-harness.ts";
import { type FakeLitellm, shimOnFakeLitellm } from "../support/fake-litellm.ts";

const CREDIT = 1_000_000;
const FILE = {
  models: [{ name: "claude", provider: true, maxModelLen: 200_000, maxOutputTokens: 1000 }],
  pricing: { request: 0, models: { claude: { promptPer1k: 1, completionPer1k: 1 } } },
};

describe("a 1-hour cache_control followed by a 5-minute one (Anthropic's required order)", () => {
  let h: Harness;
  let upstream: FakeLitellm;
  /** 10 plain prompt tokens and 1,000 written, reported as a total without the split by lifetime; 5 completion tokens. */
  const usage = { prompt_tokens: 1010, completion_tokens: 5, total_tokens: 1015, cache_creation_input_tokens: 1000, prompt_tokens_details: { cached_tokens: 0, cache_creation_tokens: 1000 } };
  let close: () => Promise<void>;
  beforeAll(async () => {
    ({ h, upstream, close } = await shimOnFakeLitellm(FILE));
    upstream.usage = usage;
  });
  afterAll(() => close());

  const prefix = "long prefix ".repeat(200);
  const messages = [
    { role: "system", content: [{ type: "text", text: prefix, cache_control: { type: "ephemeral", ttl: "1h" } }] },
    { role: "user", content: [{ type: "text", text: "the latest turn", cache_control: { type: "ephemeral" } }] },
  ];
  const body = { model: "claude", messages, max_tokens: 5 };

  it("asks for the hour: writes reported as a total are charged the hour's rate, and the hold has the hour's room", async () => {
    expect(refuseProviderSurcharges({ messages })).toBe("1h");
    const { id, key } = await h.createKey({ credits: 1000 });
    const res = await h.post(key, "/v1/chat/completions", body);
    expect(res.status).toBe(200);
    // 1,010 prompt + 5 completion + 1,000 writes at +1x (the 5-minute rate would be 1.265).
    expect(Number(res.headers.get("x-credits-charged"))).toBe(2.015);
    expect((await h.store.getKey(id))!.balance).toBe(1000 * CREDIT - 2_015_000);
    const poor = await h.createKey({ credits: 0.000001 });
    const refused = await h.post(poor.key, "/v1/chat/completions", body);
    expect(refused.status).toBe(402);
    const bound = Buffer.byteLength(JSON.stringify(body)) + CHAT_TEMPLATE_TOKENS;
    expect(Math.round(((await refused.json()) as { credits_required: number }).credits_required * CREDIT)).toBe(bound * 2000 + 5000);
  });
});

describe("cache-write arithmetic, a usage reporting more writes than prompt tokens", () => {
  it("charges no more writes than prompt tokens, whatever their lifetime", () => {
    // 1,000 µc per 1k tokens: a 5-minute write's surcharge is 0.25 µc, an hour's 1 µc.
    expect(cacheWriteSurcharge({ fiveMinute: 5000, oneHour: 0, unsplit: 0 }, 1000, 1000, "5m")).toBe(250);
    expect(cacheWriteSurcharge({ fiveMinute: 600, oneHour: 600, unsplit: 0 }, 1000, 1000, "1h")).toBe(600 + 100);
    expect(cacheWriteSurcharge({ fiveMinute: 0, oneHour: 600, unsplit: 600 }, 1000, 1000, "1h")).toBe(1000);
    expect(cacheWriteSurcharge({ fiveMinute: 600, oneHour: 0, unsplit: 600 }, 1000, 1000, "5m")).toBe(250);
  });
});
