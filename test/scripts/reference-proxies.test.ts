import type { ChildProcess } from "node:child_process";
import { rmSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stopAll } from "../../scripts/lib/processes.ts";
import { nginxBinary, nginxProxyConf, startBareProxy, startNginxProxy } from "../../scripts/lib/reference-proxies.ts";
import { FakeVllm } from "../support/fake-vllm.ts";
import { freePort, runTool, tempDir, writeTemp } from "../support/tools.ts";

// The benchmark's reference columns are only worth reading if the proxies really relay: the
// answer unchanged, and a stream's tokens as they are generated (a proxy that waited for the
// whole answer would make the chunk figures meaningless).
describe("the benchmark's reference proxies", () => {
  let fake: FakeVllm;
  const children: ChildProcess[] = [];
  const dirs: string[] = [];
  const dir = () => {
    const d = tempDir("gpu-sandbox-refproxy-");
    dirs.push(d);
    return d;
  };
  const nginx = () => {
    const binary = nginxBinary();
    if (!binary) throw new Error("nginx is not installed: apt-get install nginx (.ci/run installs it)");
    return binary;
  };

  beforeAll(async () => {
    fake = await new FakeVllm().start();
  });

  afterAll(async () => {
    await stopAll(children);
    await fake.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it("writes an nginx config that nginx -t accepts", () => {
    const d = dir();
    const conf = writeTemp("nginx.conf", nginxProxyConf(d, 18080, "127.0.0.1:18081"), d);
    const check = runTool(nginx(), ["-t", "-p", d, "-c", conf, "-e", "stderr"]);
    expect(check.output).toMatch(/syntax is ok/);
    expect(check.status).toBe(0);
  });

  const proxies: [string, (port: number) => Promise<ChildProcess>][] = [
    ["nginx", (port) => startNginxProxy(nginx(), join(dir(), "nginx"), port, new URL(fake.url).host)],
    ["bare Fastify + undici", (port) => startBareProxy(join(dir(), "bare.log"), port, fake.url)],
  ];

  for (const [name, start] of proxies) {
    it(`${name}: relays a chat answer and streams tokens as they are generated`, async () => {
      const port = await freePort();
      children.push(await start(port));
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

  it("an nginx that cannot start is reported at once with what it said (the bench then leaves its column out)", async () => {
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, "127.0.0.1", r));
    const port = (taken.address() as { port: number }).port;
    try {
      const failure = await startNginxProxy(nginx(), join(dir(), "nginx"), port, new URL(fake.url).host).then(() => null, (e: Error) => e.message);
      // Reported as nginx exiting (not as the 10 s wait running out), with nginx's own words.
      expect(failure).toMatch(/stopped \(exit code 1\) before it answered/);
      expect(failure).toMatch(/Address already in use/);
    } finally {
      taken.close();
    }
  });
});
