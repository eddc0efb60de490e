// What the HTTP server answers itself, before or instead of Fastify: bytes that are not HTTP
// (400), headers too large (431), a request that did not arrive in time (408: requestTimeout for
// a body, headersTimeout for headers). Each is still one log line and one count, as nginx logs
// them: by the request's own line when Fastify had one on the connection, else by the handler's.
import { randomUUID } from "node:crypto";
import type { IncomingMessage } from "node:http";
import type { Socket } from "node:net";
import { errorBody, ShimError } from "./errors.ts";

/** Connections the HTTP server refused or gave up on: their request is logged with this, not as a client that left. */
const refused = new WeakMap<object, { status: number; error: ShimError }>();
/** Connections whose request was answered before its body had all arrived, until it has. */
const answeredEarly = new WeakSet<object>();
/** Per connection, the latest request Fastify was given (the one whose body may be arriving), with its id. */
const latest = new WeakMap<object, { req: IncomingMessage; id: string }>();

/** Why the connection's request was refused by the HTTP server, if it was. */
export const refusalOf = (socket: object) => refused.get(socket);

/** Fastify's onRequest: the connection's request and its id, should the HTTP server refuse the rest of it. */
export function requestArrived(req: IncomingMessage, id: string): void {
  latest.set(req.socket, { req, id });
}

/**
 * For an answer sent before its request's body has all arrived (the auth hook's 401 or 429, the
 * router's 400): Node reads and drops the rest and keeps the connection. Should the rest never
 * come, or come malformed, the HTTP server must not answer the same request a second time (a 408
 * or a 400 after the 401).
 */
export function markIfAnsweredEarly(req: IncomingMessage): void {
  if (req.complete) return;
  const socket = req.socket;
  answeredEarly.add(socket);
  req.once("end", () => answeredEarly.delete(socket));
}

/** The line of a connection refused before Fastify had a request on it (no method or path known). */
export type UnparsedLine = (reqId: string, status: number, error: ShimError) => void;

/** Fastify's clientErrorHandler: answers in the OpenAI shape with a request id, then closes (the stream is out of sync). */
export function clientErrorHandler(logUnparsed: UnparsedLine): (err: Error, socket: Socket) => void {
  return (err, socket) => {
    const code = (err as NodeJS.ErrnoException).code;
    if (!socket.writable || code === "ECONNRESET") return void socket.destroy();
    if (answeredEarly.has(socket)) return void socket.destroy(); // its request has its answer
    const tooLarge = code === "HPE_HEADER_OVERFLOW";
    // requestTimeout / headersTimeout: a request (its body, usually) that did not arrive in time.
    const timedOut = code === "ERR_HTTP_REQUEST_TIMEOUT";
    const error = timedOut ? new ShimError("request_timeout") : new ShimError("invalid_request", { message: tooLarge ? "Request headers are too large." : "Malformed HTTP request." });
    const status = tooLarge ? 431 : error.status;
    const statusLine = tooLarge ? "431 Request Header Fields Too Large" : timedOut ? "408 Request Timeout" : "400 Bad Request";
    // A request whose body was still arriving is the one refused: its line says so, and the answer
    // carries its id. Otherwise the refused bytes are a request of their own (headers that never
    // ended, or that were not HTTP, perhaps pipelined behind a whole request): a line of their own.
    const arriving = latest.get(socket);
    const reqId = arriving?.req.complete === false ? arriving.id : randomUUID();
    if (arriving?.req.complete === false) refused.set(socket, { status, error });
    else logUnparsed(reqId, status, error);
    const body = errorBody(error);
    socket.end(`HTTP/1.1 ${statusLine}\r\nx-request-id: ${reqId}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
  };
}
