import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { join } from "node:path";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitHttp } from "../../scripts/bench-shim.ts";
import { nginxProxyConf, spawnBareProxy, spawnNginxProxy } from "../../scripts/lib/reference-proxies.ts";
import { FakeVllm } from "../support/fake-vllm.ts";
import { freePort, runTool, tempDir, writeTemp } from "../support/tools.ts";

// The benchmark's reference columns are only worth reading if the proxies really relay: the
// answer unchanged, and a stream's tokens as they are generated (a proxy that waited for the
// whole answer would make the chunk figures meaningless).
describe("the benchmark's reference proxies", () => {
  let fake: FakeVllm;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    fake = await new FakeVllm().start();
  });

  afterAll(async () => {
    for (const child of children) {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        await once(child, "exit");
      }
    }
    await fake.close();
  });

  it("writes an nginx config that nginx -t accepts", () => {
    const dir = tempDir("gpu-sandbox-refproxy-");
    const conf = writeTemp("nginx.conf", nginxProxyConf(dir, 18080, "127.0.0.1:18081"), dir);
    const check = runTool("nginx", ["-t", "-p", dir, "-c", conf, "-e", join(dir, "error.log")]);
    expect(check.output).toMatch(/syntax is ok/);
    expect(check.status).toBe(0);
  });

  const proxies: [string, (port: number) => ChildProcess][] = [
    ["nginx", (port) => spawnNginxProxy(join(tempDir("gpu-sandbox-refproxy-"), "nginx"), port, new URL(fake.url).host)],
    ["bare Fastify + undici", (port) => spawnBareProxy(port, fake.url)],
  ];

  for (const [name, spawnProxy] of proxies) {
    it(`${name}: relays a chat answer and streams tokens as they are generated`, async () => {
      const port = await freePort();
      children.push(spawnProxy(port));
      await waitHttp(`http://127.0.0.1:${port}/health`, 10_000);
      const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: "unused", maxRetries: 0 });

      fake.set({ tokenDelayMs: 0 });
      const chat = await client.chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 3 });
      expect(chat.choices[0]!.message.content).toBe("t1 t2 t3");

      fake.set({ tokenDelayMs: 150 });
      const started = performance.now();
      const arrivals: number[] = [];
      const stream = await client.chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 5, stream: true });
      let text = "";
      for await (const chunk of stream) {
        const delta = chunk.choices[0]?.delta.content;
        if (delta) {
          text += delta;
          arrivals.push(performance.now() - started);
        }
      }
      fake.set({ tokenDelayMs: 0 });
      expect(text.trim()).toBe("t1 t2 t3 t4 t5");
      // Five tokens 150 ms apart: unbuffered, the first arrives ~600 ms before the last.
      expect(arrivals.at(-1)! - arrivals[0]!).toBeGreaterThan(400);
    });
  }
});
