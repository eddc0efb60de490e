import pino, { type Logger } from "pino";

/**
 * JSON logs on stdout (one line per request, written by app.ts), pretty when SHIM_LOG_PRETTY=1.
 * Authorization headers are redacted should anything ever log a request's headers; the
 * request log itself carries no headers, bodies, keys or tokens.
 */
export const REDACT_PATHS = [
  "req.headers.authorization",
  "headers.authorization",
  "authorization",
  "*.authorization",
  "key",
  "*.key",
  "adminToken",
];

export function createLogger(options: { level: string; pretty: boolean; destination?: pino.DestinationStream }): Logger {
  const base = {
    level: options.level,
    base: { service: "api-shim" },
    redact: { paths: REDACT_PATHS, censor: "[redacted]" },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  if (options.destination) return pino(base, options.destination);
  if (options.pretty) {
    return pino({ ...base, transport: { target: "pino-pretty", options: { translateTime: "HH:MM:ss.l", ignore: "pid,hostname,service" } } });
  }
  return pino(base);
}
