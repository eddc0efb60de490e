import { afterEach, describe, expect, it } from "vitest";
import { FakeVllm } from "../support/fake-vllm.ts";

/**
 * The fake vLLM's /metrics: vLLM's own exposition (the names and labels of the vLLM the stack pins),
 * so the kit's vLLM alerts and nginx's /metrics/vllm are tried end to end. Running and waiting are
 * counted from the requests it holds; KV cache usage and preemptions are constant (no cache here).
 * (Not `promtool check metrics`: its lint refuses the `:` in every vLLM name, real vLLM's included;
 * test/e2e/prometheus-scrape.test.ts has a real Prometheus scrape it.)
 */
let fake: FakeVllm | undefined;
afterEach(async () => {
  await fake?.close();
  fake = undefined;
});

/** A sample's value in a scrape, by its name and labels as vLLM writes them. */
const sample = (scrape: string, series: string) => {
  const line = scrape.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
};

describe("the fake vLLM's /metrics", () => {
  it("reports held requests as running up to its batch (maxNumSeqs) and the rest as waiting, with vLLM's names, engine and model_name labels, and no key asked", async () => {
    fake = await new FakeVllm({ models: [{ name: "qwen2.5-7b" }], apiKey: "upstream-secret" }).start();
    const base = fake.url.replace(/\/v1$/, "");
    const scrape = async () => {
      const res = await fetch(`${base}/metrics`);
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
      return res.text();
    };
    const labels = '{engine="0",model_name="qwen2.5-7b"}';
    const idle = await scrape();
    expect([sample(idle, `vllm:num_requests_running${labels}`), sample(idle, `vllm:num_requests_waiting${labels}`)]).toEqual([0, 0]);
    expect(sample(idle, `vllm:kv_cache_usage_perc${labels}`)).toBe(0);
    expect(sample(idle, `vllm:num_preemptions_total${labels}`)).toBe(0);
    expect(idle).toContain("# TYPE vllm:num_preemptions_total counter");

    fake.set({ hang: true, maxNumSeqs: 2 });
    const held = [0, 1, 2, 3, 4].map(() => fetch(`${fake!.url}/chat/completions`, {
      method: "POST", headers: { authorization: "Bearer upstream-secret", "content-type": "application/json" },
      body: JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }] }),
    }).catch(() => undefined));
    await fake.until((c) => c.received >= 5);
    const busy = await scrape();
    expect([sample(busy, `vllm:num_requests_running${labels}`), sample(busy, `vllm:num_requests_waiting${labels}`)]).toEqual([2, 3]);
    await fake.close();
    await Promise.all(held);
  });

});
