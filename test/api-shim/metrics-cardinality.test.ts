import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, startShim } from "../support/shim-harness.ts";
import { answeringUpstream } from "../support/shim-process.ts";

/**
 * /metrics' label values come from route patterns, statuses and configured model names only
 * (docs/api-shim/operations.md, Metrics): what a client sends (a model name, a path, a model id to
 * retrieve) makes no new series, however many different ones it sends. Otherwise a client, or a
 * scanner, with a valid key or none, grows Prometheus' memory (and the shim's) without bound.
 */

/** Every series a scrape holds: its name and labels, without the value. */
async function series(h: Harness): Promise<Set<string>> {
  const text = await (await fetch(`${h.url}/metrics`)).text();
  return new Set(text.split("\n").filter((l) => l !== "" && !l.startsWith("#")).map((l) => l.slice(0, l.lastIndexOf(" "))));
}

const random = () => randomBytes(6).toString("hex");

/** `n` of each request whose model or path is the client's own choice, 25 at once. */
async function unknownNames(h: Harness, key: string, n: number): Promise<string[]> {
  const sent: string[] = [];
  const one = async () => {
    const [model, a, b, id] = [`m-${random()}`, random(), random(), random()];
    sent.push(model, a, b, id);
    const auth = { authorization: `Bearer ${key}` };
    const answers = await Promise.all([
      h.post(key, "/v1/chat/completions", { model, messages: [{ role: "user", content: "hi" }], max_tokens: 1 }),
      h.post(key, "/v1/embeddings", { model, input: "hi" }),
      fetch(`${h.url}/${a}/${b}`, { headers: auth }),
      h.post(key, `/v1/${a}`, {}),
      fetch(`${h.url}/v1/models/${id}`, { headers: auth }),
    ]);
    await Promise.all(answers.map((r) => r.text()));
  };
  for (let i = 0; i < n; i += 25) await Promise.all(Array.from({ length: Math.min(25, n - i) }, one));
  return sent;
}

/** The readiness watch off: its gauge, appearing with its first probe 15 s in, is no series per name. */
const NO_WATCH = { SHIM_READY_PROBE_INTERVAL_MS: "0" };

/**
 * Scrapes (the scrape's own route appears) and sends a few of each (their routes' and statuses'
 * series appear), then 1,000: no series is added by the 1,000.
 */
async function expectNoNewSeries(h: Harness, key: string): Promise<Set<string>> {
  await series(h);
  await unknownNames(h, key, 5);
  const before = await series(h);
  const sent = await unknownNames(h, key, 1000);
  const after = await series(h);
  expect([...after].filter((s) => !before.has(s))).toEqual([]);
  const text = [...after].join("\n");
  expect(sent.filter((name) => text.includes(name))).toEqual([]);
  return after;
}

describe("/metrics' series with 1,000 model names and paths of a client's own", () => {
  it("with a model list: unknown models (404), unknown paths (404 unmatched) and model ids add no series", async () => {
    const h = await startShim({ env: NO_WATCH });
    try {
      const { key } = await h.createKey({ credits: 1_000_000 });
      await expectNoNewSeries(h, key);
    } finally {
      await h.close();
    }
  }, 120_000);

  describe("without a model list, in front of an upstream that serves any name (LiteLLM with a wildcard route)", () => {
    let upstream: Awaited<ReturnType<typeof answeringUpstream>>;
    beforeAll(async () => {
      upstream = await answeringUpstream();
      upstream.answer = { status: 200, body: JSON.stringify({ id: "c", object: "chat.completion", created: 1, model: "any", choices: [{ index: 0, message: { role: "assistant", content: "t1" }, finish_reason: "stop" }], usage: { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 } }) };
    });
    afterAll(() => upstream.close());

    it("every name served and metered counts under model=\"unlisted\": no series per name", async () => {
      const h = await startShim({ file: {}, env: { ...NO_WATCH, SHIM_UPSTREAM_URL: upstream.url } });
      try {
        const { key } = await h.createKey({ credits: 1_000_000 });
        const after = await expectNoNewSeries(h, key);
        expect(after).toContain('shim_tokens_total{model="unlisted",kind="completion"}');
      } finally {
        await h.close();
      }
    }, 120_000);
  });
});
