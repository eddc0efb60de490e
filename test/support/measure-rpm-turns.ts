// Measures a batch job's workers on a key's requests/min: `workers` openai-node clients (the SDK's
// default two retries, its own Retry-After handling) share `requests` chat requests against the
// fake model server (fast answers), and the script prints how many were answered, how many raised
// RateLimitError after the retries, the job's time and the most requests admitted in any 60 s
// window. With `hammer`, the workers are raw fetch loops that ignore Retry-After (a client that
// must still get no more than the rate) for `requests` seconds instead. The figures in
// docs/clients.md ("Running a batch job") and docs/decisions.md. A script to run by hand, not a
// test (the times are the machine's and the clock's):
// node test/support/measure-rpm-turns.ts [workers 16] [rpm 120] [requests 300] [sdk|hammer]
import OpenAI from "openai";
import { startShim } from "./shim-harness.ts";

const workers = Number(process.argv[2] ?? 16);
const rpm = Number(process.argv[3] ?? 120);
const requests = Number(process.argv[4] ?? 300);
const mode = process.argv[5] ?? "sdk";
const chat = { model: "qwen2.5-7b", messages: [{ role: "user" as const, content: "hi" }], max_tokens: 1 };

const h = await startShim({ file: { models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }], tiers: { job: { rpm, tpm: 100_000_000 } } } });
try {
  const { key } = await h.createKey({ credits: 1_000_000, tier: "job" });
  /** When each answered request was answered (ms since the start; the fake answers in a few ms). */
  const answered: number[] = [];
  let refused = 0;
  const errors = new Map<string, number>();
  const start = performance.now();
  if (mode === "hammer") {
    // Each loop sends its next request as soon as the last answer (or 429) is read.
    const until = start + requests * 1000;
    await Promise.all(Array.from({ length: workers }, async () => {
      while (performance.now() < until) {
        const res = await h.post(key, "/v1/chat/completions", chat);
        await res.text();
        if (res.status === 200) answered.push(performance.now() - start);
        else refused++;
      }
    }));
  } else {
    const client = new OpenAI({ apiKey: key, baseURL: `${h.url}/v1` });
    let next = 0;
    await Promise.all(Array.from({ length: workers }, async () => {
      while (next < requests) {
        next++;
        try {
          await client.chat.completions.create(chat);
          answered.push(performance.now() - start);
        } catch (e) {
          const name = e instanceof OpenAI.RateLimitError ? "RateLimitError" : (e as Error).constructor.name;
          errors.set(name, (errors.get(name) ?? 0) + 1);
        }
      }
    }));
  }
  const seconds = (performance.now() - start) / 1000;
  answered.sort((a, b) => a - b);
  let most = 0;
  for (let i = 0, j = 0; i < answered.length; i++) {
    while (answered[i]! - answered[j]! >= 60_000) j++;
    most = Math.max(most, i - j + 1);
  }
  const failed = [...errors].map(([name, n]) => `${n} ${name}`).join(", ") || "none failed";
  const extra = mode === "hammer" ? `, ${refused} refused (429)` : `; ${failed}`;
  console.log(`${mode} ${workers} workers, ${rpm}/min: ${answered.length} answered${extra}; ${seconds.toFixed(1)} s; at most ${most} answered in a 60 s window`);
} finally {
  await h.close();
}
