import { createRequire } from "node:module";
import pino, { type Logger } from "pino";

/**
 * JSON logs on stdout (one line per request, written by request-line.ts), pretty when SHIM_LOG_PRETTY=1.
 * Authorization headers are redacted should anything ever log a request's headers; the
 * request log itself carries no headers, bodies, keys or tokens.
 */
export const REDACT_PATHS = ["req.headers.authorization", "headers.authorization"];

export function createLogger(options: { level: string; pretty: boolean; destination?: pino.DestinationStream }): Logger {
  const base = {
    level: options.level,
    base: { service: "api-shim" },
    redact: { paths: REDACT_PATHS, censor: "[redacted]" },
  };
  if (options.destination) return pino(base, options.destination);
  if (options.pretty) {
    // Prettified here and written at once, not by pino-pretty as a transport: a transport's worker
    // stalls for good once its stdout's reader is gone (`npm run shim | tee`, then Ctrl-C, which
    // kills tee too), and pino's exit hook then blocks the process's exit waiting for it. A
    // development dependency, loaded only when asked for (the image does not have it).
    const { prettyFactory } = createRequire(import.meta.url)("pino-pretty") as typeof import("pino-pretty");
    const prettify = prettyFactory({ translateTime: "HH:MM:ss.l", ignore: "pid,hostname,service" });
    // Synchronous: nothing is left to flush at exit. A stdout whose reader is gone (EPIPE) drops the lines.
    const stdout = pino.destination({ dest: 1, sync: true });
    return pino(base, { write: (line: string) => void stdout.write(prettify(line)) });
  }
  // Buffered: one write(2) per 4 KiB of lines instead of one per request (the benchmark shows the
  // difference), flushed at least every second and on shutdown; a SIGKILL can lose up to a
  // second of lines.
  const destination = pino.destination({ dest: 1, minLength: 4096, sync: false });
  setInterval(() => destination.flush(), 1000).unref();
  return pino(base, destination);
}

/** The fields of the one line per request (request-line.ts, finishRequest). */
export interface RequestLine {
  reqId: string;
  method: string;
  path: string;
  status: number;
  /** null: the HTTP server refused the connection's bytes before there was a request to time. */
  ms: number | null;
  keyId: string | null;
  model: string | null;
  tokens: number | null;
  cost: number | null;
  error?: string;
  /** Why the upstream failed (an error code), when it could not be reached or read. */
  cause?: string;
  /** A retry answered with an earlier request's generation, charged there: that request's id. */
  joined?: string;
  /** A re-send with an Idempotency-Key answered with an earlier request's answer, charged there: that request's id. */
  replayed?: string;
  /** Why its API key was refused (a 401, or the address's 429 that followed): context.ts KeyRefusal. */
  keyRefused?: string;
  /** "previous": an admin request let in with SHIM_ADMIN_TOKEN_PREVIOUS, by a client still to move to the new token. */
  adminToken?: "previous";
}

/**
 * Writes the request line as `logger.info(line, "request")` would, serialized by hand: pino's
 * generic serializer (walking the object, escaping each string in JavaScript) measurably cost
 * CPU and garbage on every request. The bytes are the same: pino's level and time prefix, the
 * logger's bindings, the fields in order, `"msg":"request"`. A logger configured with anything
 * that would change them (mixin, formatters, hooks, a multistream that wants metadata, another
 * message key) gets the ordinary call instead.
 */
export function requestLogger(logger: Logger): (line: RequestLine) => void {
  const l = logger as unknown as Record<symbol, unknown>;
  const s = pino.symbols;
  const stream = l[s.streamSym] as { write(line: string): void; [k: symbol]: unknown };
  const formatters = l[s.formattersSym] as { log?: unknown } | undefined;
  const hooks = l[s.hooksSym] as { streamWrite?: unknown } | undefined;
  const plain =
    l[s.mixinSym] == null && formatters?.log == null && hooks?.streamWrite == null && l[s.nestedKeySym] == null &&
    l[s.messageKeySym] === "msg" && stream?.[s.needsMetadataGsym] !== true && typeof stream?.write === "function" &&
    typeof l[s.timeSym] === "function" && typeof l[s.chindingsSym] === "string" && (l[s.lsCacheSym] as Record<number, string>)?.[30] === '{"level":30';
  if (!plain) return (line) => logger.info(line, "request");
  const time = l[s.timeSym] as () => string;
  const chindings = l[s.chindingsSym] as string;
  const q = JSON.stringify;
  return (line) => {
    if (!logger.isLevelEnabled("info")) return;
    stream.write(
      `{"level":30${time()}${chindings},"reqId":${q(line.reqId)},"method":${q(line.method)},"path":${q(line.path)},"status":${line.status},"ms":${line.ms},` +
        `"keyId":${line.keyId === null ? "null" : q(line.keyId)},"model":${line.model === null ? "null" : q(line.model)},"tokens":${line.tokens},"cost":${line.cost}` +
        `${line.error === undefined ? "" : `,"error":${q(line.error)}`}${line.cause === undefined ? "" : `,"cause":${q(line.cause)}`}` +
        `${line.joined === undefined ? "" : `,"joined":${q(line.joined)}`}${line.replayed === undefined ? "" : `,"replayed":${q(line.replayed)}`}${line.keyRefused === undefined ? "" : `,"keyRefused":${q(line.keyRefused)}`}` +
        `${line.adminToken === undefined ? "" : `,"adminToken":${q(line.adminToken)}`},"msg":"request"}\n`,
    );
  };
}
