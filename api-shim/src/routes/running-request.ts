import type { ShimContext } from "../context.ts";
import { ShimError } from "../errors.ts";
import { creditsNumber, formatCredits } from "../money/money.ts";

/**
 * GET /admin/requests/{id} of a request this process is still serving (a long stream): it has no
 * ledger row until it settles, and a plain "no such request" would send support looking for a
 * request that is there. A 404 still (the ledger has no row: a script that reads 404 as "no row"
 * stays right), with a code of its own, `request_running`, and what a ticket needs in `running`
 * (docs/decisions.md). Another replica's requests are not seen: each knows its own (replicas.md).
 *
 * `keyId`: only a request of that key (the route's `key`); another key's is not told.
 */
export function runningRequest(ctx: ShimContext, id: string, keyId: string | undefined): ShimError | undefined {
  const request = ctx.inflight.running(id);
  // Settled (its row written) while its answer is still being sent: the ledger answers.
  if (request === undefined || request.shim.cost !== null) return undefined;
  const key = request.auth?.key.id;
  if (key === undefined || (keyId !== undefined && key !== keyId)) return undefined;
  const runningMs = Math.max(0, Math.round(performance.now() - request.shim.start));
  const since = new Date(ctx.clock.now() - runningMs).toISOString();
  const held = request.shim.held;
  // "/v1/chat/completions" -> "chat", "/v1/completions" -> "completions": the ledger's `route`.
  const route = (request.routeOptions.url ?? "").replace(/^\/v1\//, "").replace(/\/completions$/, "");
  // A retry that joined a generation, or a re-send with an earlier request's Idempotency-Key.
  const joined = request.shim.joined ?? request.shim.replayed ?? null;
  const waiter = request.shim.replayed !== undefined ? "a re-send with the Idempotency-Key of request" : "a retry waiting for the answer of request";
  const holding = joined !== null ? `no hold: it is ${waiter} ${joined}, which it joined (x-joined-request-id) and whose row will have the charge; it gets no row of its own`
    : held === null ? "no credit hold yet (it waits for its key's other holds to settle)" : `a hold of ${formatCredits(held)} credits on its key`;
  return new ShimError("request_running", {
    param: "request_id",
    message: `Request ${id} is still running on this shim: since ${since} (${Math.round(runningMs / 1000)} s), key ${key}, ${route}, model ${request.shim.model ?? "unknown"}, with ${holding}. It has no ledger row until it ends; look it up again then.`,
    extra: {
      running: {
        request_id: id, key_id: key, since, running_ms: runningMs, route, model: request.shim.model,
        held: held === null ? null : creditsNumber(held), joined_request_id: joined,
      },
    },
  });
}
