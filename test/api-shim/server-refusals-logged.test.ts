// What the HTTP server refuses before Fastify has a request is logged and counted with the status the client was sent.
import type net from "node:net";
import { describe, expect, it } from "vitest";
import { clientErrorHandler } from "../../api-shim/src/client/client-errors.ts";

describe("what the HTTP server refuses itself, as logged and counted", () => {
  it("headers too large are logged and counted as the 431 the client was sent, not as a 400", () => {
    let written = "";
    const socket = { writable: true, remoteAddress: "192.0.2.9", end: (text: string) => void (written = text) } as unknown as net.Socket;
    const statuses: number[] = [];
    const err = Object.assign(new Error("Header overflow"), { code: "HPE_HEADER_OVERFLOW" });
    clientErrorHandler((_id, status) => statuses.push(status), () => false)(err, socket);
    expect(written).toMatch(/^HTTP\/1\.1 431 /);
    expect(statuses).toEqual([431]);
  });
});
