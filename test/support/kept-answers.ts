import OpenAI from "openai";
import type { Harness } from "./shim-harness.ts";
import { postAndLeave } from "./upstream-per-test.ts";

/**
 * What the tests of answers kept for a re-send share (retry-join.test.ts: an SDK's retry joins
 * the generation its client left; idempotent-inference.test.ts: a re-send with an Idempotency-Key):
 * a priced model, a key's credits, and the helpers that read what it was charged.
 */
export const FILE = { pricing: { request: 1, models: { "qwen2.5-7b": { promptPer1k: 1, completionPer1k: 1000 } } }, models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }] };
export const FAKE = { models: [{ name: "qwen2.5-7b" }] };
export const CREDITS = 1000;
export const CREDIT = 1_000_000;
export const BODY = { model: "qwen2.5-7b", messages: [{ role: "user", content: "a long answer" }], max_tokens: 20 };

/** A non-streamed chat body of its own per prompt `i`, and the options that send it with Idempotency-Key `value` (idempotent-inference tests). */
export type Chat = OpenAI.ChatCompletionCreateParamsNonStreaming;
export const prompt = (i: number | string): Chat => ({ ...BODY, messages: [{ role: "user", content: `prompt ${i}` }] }) as Chat;
export const idem = (value: string) => ({ headers: { "Idempotency-Key": value } });
/** openai-node on the harness, without its own retries unless asked (each attempt is then the test's). */
export const sdk = (h: Harness, key: string, maxRetries = 0) => new OpenAI({ apiKey: key, baseURL: `${h.url}/v1`, maxRetries });

/** Long enough for anything a joined retry wrongly started after its answer to reach the upstream and settle. */
export const aWhile = () => new Promise((r) => setTimeout(r, 500));
export const balance = async (h: Harness, id: string) => (await h.store.getKey(id))!.balance;
export const requestLines = (h: Harness, id: string) => h.logs.filter((l) => l.includes(`"keyId":"${id}"`) && l.includes('"msg":"request"')).map((l) => JSON.parse(l) as Record<string, unknown>);

/** Sends BODY and leaves once the upstream has it; resolves when its generation has been charged (its 499 line). */
export async function leaveAndWaitForCharge(h: Harness, key: string, id: string): Promise<number> {
  const before = h.fake.counters.received;
  await postAndLeave(h, key, BODY, () => h.fake.counters.received > before);
  await h.waitForRequestLog((e) => e.keyId === id && e.status === 499, 10_000);
  return CREDITS * CREDIT - (await balance(h, id));
}
