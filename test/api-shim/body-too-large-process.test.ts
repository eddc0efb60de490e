import { connect, type Socket } from "node:net";
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
    await f.output.stopCleanly(p);
  });

  /** Headers declaring `declared` body bytes, then 1 KiB of it: the answer's head, and the socket. */
  const oversized = (url: string, declared: number) => new Promise<{ head: string; socket: Socket }>((resolve, reject) => {
    const { port } = new URL(url);
    const socket = connect(Number(port), "127.0.0.1", () => {
      socket.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${f.key.key}\r\nContent-Type: application/json\r\nContent-Length: ${declared}\r\n\r\n`);
      socket.write("x".repeat(1024));
    });
    let got = "";
    socket.on("data", (c: Buffer) => {
      got += c.toString("latin1");
      const end = got.indexOf("\r\n\r\n");
      if (end !== -1) resolve({ head: got.slice(0, end), socket });
    });
    socket.on("error", reject);
  });
  const closedWithin = (socket: Socket, ms: number) => new Promise<boolean>((r) => {
    if (socket.destroyed || socket.readableEnded) return r(true);
    const t = setTimeout(() => r(false), ms);
    socket.once("close", () => { clearTimeout(t); r(true); });
  });

  it("drains at most 64 MiB: a body declared larger gets its 413 with Connection: close, and the connection is closed", async () => {
    const p = await f.start({ SHIM_MAX_BODY_BYTES: "1048576" });
    const big = await oversized(p.url, 100 * 1024 * 1024);
    try {
      expect(big.head).toMatch(/^HTTP\/1\.1 413/);
      expect(big.head.toLowerCase()).toMatch(/\r\nconnection: close/);
      expect(await closedWithin(big.socket, 2000)).toBe(true);
    } finally {
      big.socket.destroy();
    }
    // Within the bound the connection stays for the rest of the body.
    const small = await oversized(p.url, 32 * 1024 * 1024);
    try {
      expect(small.head).toMatch(/^HTTP\/1\.1 413/);
      expect(small.head.toLowerCase()).not.toMatch(/\r\nconnection: close/);
    } finally {
      small.socket.destroy();
    }
    await f.output.stopCleanly(p);
  });
});
