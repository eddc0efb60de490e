import { FakeVllm } from "../test/support/fake-vllm.ts";
import { commaList, exitOnFailure, mainWithUsage, setVariables, UsageError } from "./lib/cli.ts";

const USAGE = `Usage: npm run fake-vllm

A test server that speaks vLLM's OpenAI dialect (models, chat, completions, embeddings, SSE with
usage chunks, vLLM's error bodies) without a GPU: answers are "t1 t2 …", one token each.
A forced tool call (\`tools\` with \`tool_choice: "required"\` or a named function) is answered
with that call, as vLLM does: arguments from its required properties ("x", 1); "auto" gets text.

  FAKE_VLLM_PORT            8000 (FAKE_VLLM_HOST 127.0.0.1)
  FAKE_VLLM_MODELS          comma-separated served names (qwen2.5-7b)
  FAKE_VLLM_TOKENS          tokens per answer (16; fewer when max_tokens asks for fewer)
  FAKE_VLLM_TOKEN_DELAY_MS  delay per token (0; 20 looks like a GPU)
  FAKE_VLLM_API_KEY         require this bearer key, as vLLM's --api-key does

Examples:
  npm run fake-vllm
  FAKE_VLLM_PORT=8001 FAKE_VLLM_TOKEN_DELAY_MS=20 npm run fake-vllm
  SHIM_UPSTREAM_URL=http://127.0.0.1:8001/v1 npm run shim`;

/**
 * `npm run fake-vllm`: the test upstream (vLLM's OpenAI dialect, no GPU) on 127.0.0.1:8000, so
 * the shim can be tried end to end on a laptop: `npm run fake-vllm` in one terminal,
 * `npm run shim` in another.
 *
 * FAKE_VLLM_PORT (8000), FAKE_VLLM_TOKEN_DELAY_MS (0: as fast as possible; 20 looks like a GPU),
 * FAKE_VLLM_MODELS (comma-separated served names, default qwen2.5-7b).
 */
export async function serveFakeVllm(given: NodeJS.ProcessEnv = process.env): Promise<FakeVllm> {
  // A variable set but blank (an env file's `FAKE_VLLM_PORT=`) keeps its default, as `npm run shim` does.
  const env = setVariables(given);
  const names = commaList(env.FAKE_VLLM_MODELS ?? "qwen2.5-7b")!;
  if (names.length === 0) throw new UsageError(`FAKE_VLLM_MODELS: ${JSON.stringify(given.FAKE_VLLM_MODELS)} names no model; give comma-separated served names, e.g. qwen2.5-7b`);
  const tokens = wholeNumber(env, "FAKE_VLLM_TOKENS", 16, "a whole number of tokens (0 or more)");
  const tokenDelayMs = wholeNumber(env, "FAKE_VLLM_TOKEN_DELAY_MS", 0, "a whole number of milliseconds (0 or more)");
  const port = wholeNumber(env, "FAKE_VLLM_PORT", 8000, "a port (0 to 65535)", 65535);
  const fake = new FakeVllm({ models: names.map((name) => ({ name, maxModelLen: 8192 })), ...(env.FAKE_VLLM_API_KEY ? { apiKey: env.FAKE_VLLM_API_KEY } : {}) });
  fake.set({ tokenDelayMs, defaultTokens: tokens });
  await fake.start(port, env.FAKE_VLLM_HOST ?? "127.0.0.1");
  return fake;
}

/** A variable holding a whole number from 0 to `max` (`fallback` when unset); else a UsageError saying it is not `what`. */
function wholeNumber(env: NodeJS.ProcessEnv, name: string, fallback: number, what: string, max = Number.MAX_SAFE_INTEGER): number {
  const value = env[name];
  if (value === undefined) return fallback;
  if (/^\s*\d+\s*$/.test(value) && Number(value) <= max) return Number(value);
  throw new UsageError(`${name}: ${JSON.stringify(value)} is not ${what}`);
}

export const main = mainWithUsage(USAGE, async (io) => {
  let fake: FakeVllm;
  try {
    fake = await serveFakeVllm();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "EADDRINUSE") throw new UsageError(`fake-vllm: port ${process.env.FAKE_VLLM_PORT ?? 8000} is in use by another process; set FAKE_VLLM_PORT to a free one`);
    throw new UsageError(`fake-vllm: ${(e as Error).message}`);
  }
  io.out(`fake vLLM listening on ${fake.url} serving ${fake.models.map((m) => m.name).join(", ")} (Ctrl-C to stop)`);
  const stop = () => void fake.close().then(() => process.exit(0));
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
});

if (import.meta.main) exitOnFailure(await main(process.argv.slice(2)));
