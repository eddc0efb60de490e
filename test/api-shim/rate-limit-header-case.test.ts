import { request } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startShim, type Harness } from "../support/shim-harness.ts";

// Seed 004 spells the requests/min family `X-RateLimit-Limit`, `-Remaining`, `-Reset`. Header
// names are case-insensitive, but a user reads them in `curl -i` and some clients compare them
// as written: every answer spells them as the seed does, whoever writes its head (Fastify, or the
// relay writing its own). Read from the raw head (fetch's Headers would lower-case them).
const SEED = ["X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"];

let h: Harness;
let key: string;
beforeAll(async () => {
  h = await startShim({ file: { tiers: { two: { rpm: 2, tpm: 1_000_000 } }, models: [{ name: "qwen2.5-7b" }] } });
  key = (await h.createKey({ tier: "two", credits: 100 })).key;
});
afterAll(() => h.close());

/** The status and the header names as they came over the wire. */
function raw(path: string, body?: object): Promise<{ status: number; names: string[]; text: string }> {
  return new Promise((resolve, reject) => {
    const url = new URL(path, h.url);
    const req = request(url, { method: body ? "POST" : "GET", headers: { authorization: `Bearer ${key}`, "content-type": "application/json" } }, (res) => {
      let text = "";
      res.setEncoding("utf8").on("data", (c: string) => (text += c)).on("end", () => {
        resolve({ status: res.statusCode!, names: res.rawHeaders.filter((_, i) => i % 2 === 0), text });
      });
    });
    req.on("error", reject);
    req.end(body ? JSON.stringify(body) : undefined);
  });
}

/** The rate-limit headers among `names`, as spelled on the wire. */
const rateLimitNames = (names: string[]) => names.filter((n) => /^x-ratelimit-(limit|remaining|reset)$/i.test(n));

describe("X-RateLimit-* on the wire in the seed's case", () => {
  it("a 200 Fastify writes (/v1/models), a relayed stream, and a 429 refusal", async () => {
    const models = await raw("/v1/models");
    expect(models.status).toBe(200);
    expect(rateLimitNames(models.names)).toEqual(SEED);

    const stream = await raw("/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 2, stream: true });
    expect(stream.status).toBe(200);
    expect(stream.text).toContain("data: [DONE]");
    expect(rateLimitNames(stream.names)).toEqual(SEED);

    const refused = await raw("/v1/models");
    expect(refused.status).toBe(429);
    expect(rateLimitNames(refused.names)).toEqual(SEED);
    // Each header once: a lower-case copy beside a cased one would be two values for one header.
    const lower = refused.names.map((n) => n.toLowerCase());
    expect(new Set(lower).size).toBe(lower.length);
  });
});
