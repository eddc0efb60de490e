import { APIConnectionError, APIError } from "openai";
import { describe, expect, it } from "vitest";
import { shimClient, shimProcessFixture } from "../support/shim-process.ts";

/**
 * Found by review (the shim run alone, `npm run shim` or in front of another server, without
 * nginx's own 413): a body over SHIM_MAX_BODY_BYTES was answered 413 and the connection closed
 * while the client still wrote the body, so undici failed with EPIPE and never showed the 413;
 * SDKs retried it as a connection error (the AI SDK twice, LangChain six times). A process, not
 * the in-process harness: there the timing hid it.
 */
describe("a body over SHIM_MAX_BODY_BYTES sent straight to a shim process", () => {
  const f = shimProcessFixture("body-too-large-");

  it("reaches the client as the 413 that says so, each time, not a broken connection", async () => {
    const p = await f.start({ SHIM_MAX_BODY_BYTES: "1048576" });
    const results: string[] = [];
    for (let i = 0; i < 3; i++) {
      try {
        await shimClient(p, f.key.key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "x".repeat(4_000_000) }] }, { maxRetries: 0 });
        results.push("200");
      } catch (e) {
        results.push(e instanceof APIConnectionError ? `connection error: ${(e.cause as Error | undefined)?.message ?? e.message}` : e instanceof APIError ? `${e.status} ${(e.error as { code?: string } | undefined)?.code}` : String(e));
      }
    }
    expect(results).toEqual(["413 request_too_large", "413 request_too_large", "413 request_too_large"]);
  });
});
