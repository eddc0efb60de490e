import { InternalServerError } from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { failure } from "../support/api-failure.ts";
import { expectLedgerMatches, overrideStore, startShim, type Harness } from "../support/shim-harness.ts";

/**
 * A fault of the shim's own (a bug: here a store method throwing a plain Error, which no row of
 * the error table covers) is the documented 500 and nothing more (docs/api-shim/errors.md): no
 * path, stack or message of the error reaches the client; the operator finds it in the log under
 * `unhandled error`, with the request's id.
 */
describe("a fault of the shim's own: 500 internal_error", () => {
  const PATH = "/var/lib/gpu-sandbox/internal/ledger-7f3a.db";
  const fault = new Error(`SQLITE_MISUSE_EXAMPLE: statement finalized at ${PATH}`);
  fault.stack = `Error: ${fault.message}\n    at SqliteStore.reserve (/opt/gpu-sandbox/api-shim/src/store/sqlite-store.ts:300:17)\n    at async handleInference (/opt/gpu-sandbox/api-shim/src/routes/inference.ts:107:16)`;
  const leaks = [PATH, "ledger-7f3a", "SQLITE_MISUSE_EXAMPLE", "statement finalized", "sqlite-store.ts", "inference.ts", "/opt/gpu-sandbox", "    at "];
  const body = { error: { message: "Internal error.", type: "api_error", param: null, code: "internal_error" } };
  const chat = { model: "qwen2.5-7b", messages: [{ role: "user" as const, content: "hi" }], max_tokens: 2 };
  let h: Harness;
  let key: string;
  let id: string;

  beforeAll(async () => {
    h = await startShim({ wrapStore: (s) => overrideStore(s, { reserve: async () => { throw fault; } }) });
    ({ key, id } = await h.createKey());
  });
  afterAll(() => h.close());

  it("the SDK raises InternalServerError with the documented body", async () => {
    const e = await failure(() => h.client(key).chat.completions.create(chat));
    expect(e).toBeInstanceOf(InternalServerError);
    expect(e.status).toBe(500);
    expect(e.error).toEqual(body.error);
    for (const leak of leaks) expect(e.message).not.toContain(leak);
  });

  it.each([false, true])("(stream: %s) nothing of the error in the body or the headers; the log has it under the request's id; nothing charged", async (stream) => {
    const res = await h.post(key, "/v1/chat/completions", { ...chat, stream });
    const text = await res.text();
    expect(res.status).toBe(500);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    const { credits_charged: charged, credits_remaining: _remaining, ...rest } = JSON.parse(text) as Record<string, unknown>;
    expect(rest).toEqual(body);
    if (charged !== undefined) expect(charged).toBe(0);
    const headers = [...res.headers].map(([k, v]) => `${k}: ${v}`).join("\n");
    for (const leak of leaks) {
      expect(text, leak).not.toContain(leak);
      expect(headers, leak).not.toContain(leak);
    }
    const requestId = res.headers.get("x-request-id");
    expect(requestId).toBeTruthy();
    const logged = h.logs.map((l) => JSON.parse(l) as { msg: string; reqId?: string; err?: { message?: string; stack?: string } }).find((e) => e.msg === "unhandled error" && e.reqId === requestId);
    expect(logged, `an "unhandled error" line with reqId ${requestId}`).toBeDefined();
    expect(logged!.err?.message).toContain("SQLITE_MISUSE_EXAMPLE");
    const request = await h.waitForRequestLog((e) => e.reqId === requestId);
    expect(request).toMatchObject({ status: 500, error: "internal_error" });
    await expectLedgerMatches(h.store, id);
    expect((await h.store.getKey(id))!.balance).toBe(100_000_000);
  });
});
