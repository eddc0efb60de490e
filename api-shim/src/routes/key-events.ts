import type { FastifyInstance } from "fastify";
import type { ShimContext } from "../context.ts";
import { ShimError } from "../errors.ts";
import { isKeyId } from "../auth/keys.ts";
import { onlyKnown } from "../requests/known-members.ts";
import type { FieldChange, KeyEvent } from "../store/store.ts";
import { historyIsComplete } from "../store/key-events.ts";

/**
 * GET /admin/keys/{id}/events (beyond DESIGN.md's routes, docs/decisions.md): the key's history,
 * oldest first: when it was created, rotated, updated (which fields, from what to what) and
 * revoked, and by which admin request (its x-request-id, as that request's log line has it).
 * Before, a change left its time only in the log, which rotates away: "my key stopped working at
 * 14:02" could not be checked a week later. Money is the credits statement's (/admin/credits).
 * A key made before the upgrade that added the history has no `created` event: its `created_at`
 * (GET /admin/keys) says when, and nothing before the upgrade is made up.
 */
export function keyEventRoutes(app: FastifyInstance, ctx: ShimContext): void {
  app.get<{ Params: { id: string } }>("/admin/keys/:id/events", async (request, reply) => {
    onlyKnown(request.query as object, [], "query parameter");
    if (!isKeyId(request.params.id)) throw keyNotFound();
    const [events, key] = await Promise.all([ctx.store.keyEvents(request.params.id), ctx.store.getKeyDetails(request.params.id)]);
    if (events === undefined || key === undefined) throw keyNotFound();
    // `complete`: the history starts with the key's creation and agrees with its row. False for a
    // key made before the upgrade that added histories, or changed by an older shim since: what
    // changed then is not known, and is not made up.
    return reply.send({ object: "list", key_id: request.params.id, complete: historyIsComplete(events, key), data: events.map(showEvent) });
  });
}

/** Times as ISO strings, as keys are shown (an expiry too); a name change without its values (key-events.ts). */
function showEvent(e: KeyEvent) {
  return { object: "key_event", event: e.event, at: new Date(e.at).toISOString(), request_id: e.requestId, changes: e.changes.map(showChange) };
}

function showChange(c: FieldChange) {
  if (c.field !== "expires_at") return c;
  const iso = (v: FieldChange["to"]) => (typeof v === "number" ? new Date(v).toISOString() : v);
  return { field: c.field, ...("from" in c ? { from: iso(c.from) } : {}), to: iso(c.to) };
}

const keyNotFound = () => new ShimError("not_found", { param: "id", message: "No such key." });
