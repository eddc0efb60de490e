import type { FastifyReply } from "fastify";
import { ClientLeftError } from "../store/store.ts";

/**
 * Aborts when the client leaves before its answer is sent, for work that may wait its turn (a
 * usage report on Postgres): a client that gave up, and perhaps retried, should not keep a place.
 */
export function clientLeftSignal(reply: FastifyReply): AbortSignal {
  const ac = new AbortController();
  const raw = reply.raw;
  if (raw.destroyed) ac.abort(new ClientLeftError());
  else raw.once("close", () => raw.writableFinished || ac.abort(new ClientLeftError()));
  return ac.signal;
}
