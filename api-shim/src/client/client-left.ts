import type { FastifyReply, FastifyRequest } from "fastify";
import { rejectOnAbort } from "../promises.ts";
import { ClientLeftError } from "../store/store.ts";

/**
 * Aborts when the client leaves before its answer is sent, for work that may wait its turn (a
 * usage report on Postgres, a request waiting for its key's requests to finish: key-waits.ts): a
 * client that gave up, and perhaps retried, should not keep a place.
 */
export function clientLeftSignal(reply: FastifyReply): AbortSignal {
  const ac = new AbortController();
  const raw = reply.raw;
  if (raw.destroyed) ac.abort(new ClientLeftError());
  else raw.once("close", () => raw.writableFinished || ac.abort(new ClientLeftError()));
  return ac.signal;
}

/**
 * Store work that may take long (a usage report): given up when its client leaves, and answered
 * 503 (Inflight.refusal) when a shutdown's drain ends before it does, rather than cut without an
 * answer. The signal tells the store to stop waiting or running.
 */
export function untilLeftOrCut<T>(request: FastifyRequest, reply: FastifyReply, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const left = clientLeftSignal(reply);
  const cut = request.drainCut;
  if (!cut) return work(left);
  const refused = () => request.server.shim.inflight.refusal();
  if (cut.aborted) return Promise.reject(refused());
  // Listened to as the work starts (its call may throw: a rejection too): the 503 wins over
  // whatever the store rejects with when the cut aborts it.
  const started = new Promise<T>((resolve) => resolve(work(AbortSignal.any([left, cut]))));
  return rejectOnAbort(started, cut, refused);
}
