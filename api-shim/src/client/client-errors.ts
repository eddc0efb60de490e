// What the HTTP server answers itself, before or instead of Fastify: bytes that are not HTTP
// (400), headers too large (431), a request that did not arrive in time (408: requestTimeout for
// a body, headersTimeout for headers). Each is still one log line and one count, as nginx logs
// them: by the request's own line when Fastify had one on the connection, else by the handler's.
import { randomUUID } from "node:crypto";
import type { IncomingMessage } from "node:http";
import type { Socket } from "node:net";
import { errorBody, ShimError } from "../errors.ts";

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

/**
 * What the parser's refusal says to the client, by its code, where the code tells what is wrong:
 * a character HTTP does not allow in the URL or a header. nginx passes a header value with a
 * control character on; it refuses such a URL itself, in the same words
 * (templates/nginx/refuse-raw-bytes-in-url.conf), but the shim may be reached without it.
 */
const PARSER_MESSAGES: Readonly<Record<string, string>> = {
  HPE_INVALID_URL: "The URL holds a character HTTP does not allow there (a raw non-ASCII byte, a space or a control character): percent-encode it (é as %C3%A9).",
  HPE_INVALID_HEADER_TOKEN: "A header holds a character HTTP does not allow (a control character in its value, or a space or separator in its name): send header names and values of printable ASCII.",
};

/** nginx's $request_id, as it sends it (api-locations.conf's X-Request-Id). */
const PROXY_REQUEST_ID = /^[0-9a-f]{32}$/;

/**
 * The refused request's own X-Request-Id, if the trusted proxy sent it (`trusted`, as genReqId
 * believes it in app.ts) and it is nginx's (32 hex digits): the id nginx's access log has the
 * request under. Looked for in that request's head, in the packet the parser failed on: from the
 * end of any request before it there to the end of its own headers. Else undefined.
 */
function proxyRequestId(err: Error, socket: Socket, trusted: (peer: string | undefined) => boolean): string | undefined {
  const { rawPacket, bytesParsed } = err as { rawPacket?: unknown; bytesParsed?: unknown };
  if (!Buffer.isBuffer(rawPacket) || !trusted(socket.remoteAddress)) return undefined;
  const packet = rawPacket.toString("latin1");
  const failedAt = typeof bytesParsed === "number" ? bytesParsed : 0;
  const before = failedAt > 0 ? packet.lastIndexOf("\r\n\r\n", failedAt - 1) : -1;
  const start = before === -1 ? 0 : before + 4;
  const end = packet.indexOf("\r\n\r\n", start);
  const head = packet.slice(start, end === -1 ? packet.length : end + 2);
  const id = /\r\nx-request-id:[ \t]*([^\r\n]*?)[ \t]*\r\n/i.exec(head)?.[1];
  return id !== undefined && PROXY_REQUEST_ID.test(id) ? id : undefined;
}

/**
 * Fastify's clientErrorHandler: answers in the OpenAI shape with a request id, then closes (the
 * stream is out of sync). `trusted`: the peers whose X-Request-Id is believed (SHIM_TRUST_PROXY).
 */
export function clientErrorHandler(logUnparsed: UnparsedLine, trusted: (peer: string | undefined) => boolean): (err: Error, socket: Socket) => void {
  return (err, socket) => {
    const code = (err as NodeJS.ErrnoException).code;
    if (!socket.writable || code === "ECONNRESET") return void socket.destroy();
    if (answeredEarly.has(socket)) return void socket.destroy(); // its request has its answer
    const tooLarge = code === "HPE_HEADER_OVERFLOW";
    // requestTimeout / headersTimeout: a request (its body, usually) that did not arrive in time.
    const timedOut = code === "ERR_HTTP_REQUEST_TIMEOUT";
    const message = tooLarge ? "Request headers are too large." : PARSER_MESSAGES[code ?? ""] ?? "Malformed HTTP request.";
    const error = timedOut ? new ShimError("request_timeout") : new ShimError("invalid_request", { message });
    const status = tooLarge ? 431 : error.status;
    const statusLine = tooLarge ? "431 Request Header Fields Too Large" : timedOut ? "408 Request Timeout" : "400 Bad Request";
    // A request whose body was still arriving is the one refused: its line says so, and the answer
    // carries its id. Otherwise the refused bytes are a request of their own (headers that never
    // ended, or that were not HTTP, perhaps pipelined behind a whole request): a line of their own,
    // under nginx's id when it sent one (a request nginx passed on and Node's parser refused),
    // so the client, nginx's access log and the shim's name it alike.
    const arriving = latest.get(socket);
    const reqId = arriving?.req.complete === false ? arriving.id : proxyRequestId(err, socket, trusted) ?? randomUUID();
    if (arriving?.req.complete === false) refused.set(socket, { status, error });
    else logUnparsed(reqId, status, error);
    const body = errorBody(error);
    socket.end(`HTTP/1.1 ${statusLine}\r\nx-request-id: ${reqId}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
  };
}
