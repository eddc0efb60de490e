import type { FastifyReply, FastifyRequest } from "fastify";
import { shuttingDown } from "../errors.ts";
import { ClientLeftError } from "../store/store.ts";

/**
 * Aborts when the client leaves before its answer is sent, for work that may wait its turn (a
 * usage report on Postgres): a client that gave up, and perhaps retried, should not keep a place.
 */
function clientLeftSignal(reply: FastifyReply): AbortSignal {
  const ac = new AbortController();
  const raw = reply.raw;
  if (raw.destroyed) ac.abort(new ClientLeftError());
  else raw.once("close", () => raw.writableFinished || ac.abort(new ClientLeftError()));
  return ac.signal;
}

/**
 * Store work that may take long (a usage report): given up when its client leaves, and answered
 * 503 (shuttingDown) when a shutdown's drain ends before it does, rather than cut without an
 * answer. The signal tells the store to stop waiting or running.
 */
export function untilLeftOrCut<T>(request: FastifyRequest, reply: FastifyReply, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const left = clientLeftSignal(reply);
  const cut = request.drainCut;
  if (!cut) return work(left);
  return new Promise<T>((resolve, reject) => {
    // Listened to before the work starts: the 503 wins over whatever the store rejects with.
    const onCut = () => reject(shuttingDown());
    if (cut.aborted) return onCut();
    cut.addEventListener("abort", onCut, { once: true });
    work(AbortSignal.any([left, cut])).then(resolve, reject).finally(() => cut.removeEventListener("abort", onCut));
  });
}
