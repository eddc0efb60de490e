import { afterAll, afterEach, beforeAll, expect } from "vitest";
import { type FakeLitellmResponses, startFakeLitellmResponses } from "./fake-litellm-responses.ts";
import { moneyInvariants, startShim, type Harness } from "./shim-harness.ts";

/**
 * A test file's shim in front of LiteLLM's Responses dialect (fake-litellm-responses.ts), with
 * `file` as SHIM_CONFIG; `bridged`: as LiteLLM's Responses-to-chat bridge answers a provider's
 * model. Started before the file's tests, its fake put back to answering after each, both closed
 * after them. The fields are set once the file's first beforeAll has run.
 */
export function litellmResponsesShim(file: Record<string, unknown>, bridged = false): { h: Harness; litellm: FakeLitellmResponses } {
  const f = {} as { h: Harness; litellm: FakeLitellmResponses };
  beforeAll(async () => {
    f.litellm = await startFakeLitellmResponses();
    f.litellm.bridged = bridged;
    f.h = await startShim({ env: { SHIM_UPSTREAM_URL: f.litellm.url }, file });
  });
  afterEach(() => {
    f.litellm.mode = "answer";
  });
  afterAll(async () => {
    await f.h.close();
    await f.litellm.close();
  });
  return f;
}

/**
 * A client that leaves a slow Responses stream of `model` at its first text delta: resolves once
 * LiteLLM's request was aborted and the key's hold released, for the caller to check the charge.
 */
export async function leaveResponsesStreamAtFirstDelta({ h, litellm }: { h: Harness; litellm: FakeLitellmResponses }, key: { key: string; id: string }, model: string): Promise<void> {
  litellm.mode = "slow";
  const ac = new AbortController();
  const stream = await h.client(key.key).responses.create({ model, input: "greet me", max_output_tokens: 16, stream: true }, { signal: ac.signal });
  await (async () => {
    for await (const e of stream) if (e.type === "response.output_text.delta") ac.abort();
  })().catch(() => {});
  await expect.poll(() => litellm.abortedEarly, { timeout: 5000 }).toBe(true);
  await expect.poll(async () => (await moneyInvariants(h.store)).find((r) => r.keyId === key.id)?.held, { timeout: 5000 }).toBe(0);
}
