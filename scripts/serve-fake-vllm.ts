import { FakeVllm } from "../test/support/fake-vllm.ts";

/**
 * `npm run fake-vllm`: the test upstream (vLLM's OpenAI dialect, no GPU) on 127.0.0.1:8000, so
 * the shim can be tried end to end on a laptop: `npm run fake-vllm` in one terminal,
 * `npm run shim` in another.
 *
 * FAKE_VLLM_PORT (8000), FAKE_VLLM_TOKEN_DELAY_MS (0: as fast as possible; 20 looks like a GPU),
 * FAKE_VLLM_MODELS (comma-separated served names, default qwen2.5-7b).
 */
export async function serveFakeVllm(env: NodeJS.ProcessEnv = process.env): Promise<FakeVllm> {
  const names = (env.FAKE_VLLM_MODELS ?? "qwen2.5-7b").split(",").map((s) => s.trim()).filter(Boolean);
  const fake = new FakeVllm({ models: names.map((name) => ({ name, maxModelLen: 8192 })), ...(env.FAKE_VLLM_API_KEY ? { apiKey: env.FAKE_VLLM_API_KEY } : {}) });
  fake.set({ tokenDelayMs: Number(env.FAKE_VLLM_TOKEN_DELAY_MS ?? 0), defaultTokens: Number(env.FAKE_VLLM_TOKENS ?? 16) });
  await fake.start(Number(env.FAKE_VLLM_PORT ?? 8000), env.FAKE_VLLM_HOST ?? "127.0.0.1");
  return fake;
}

async function main(): Promise<void> {
  try {
    const fake = await serveFakeVllm();
    console.log(`fake vLLM listening on ${fake.url} serving ${fake.models.map((m) => m.name).join(", ")} (Ctrl-C to stop)`);
    const stop = () => void fake.close().then(() => process.exit(0));
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  } catch (e) {
    console.error(`fake-vllm: ${(e as Error).message}`);
    process.exitCode = 1;
  }
}

if (import.meta.main) await main();
