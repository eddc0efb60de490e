import pg from "pg";
import type { OpenConnections } from "./postgres-connections.ts";
import { inTransaction } from "./postgres-client.ts";
import { connectSession, type StoreSession } from "./postgres-sessions.ts";
import { AVAILABLE, LOCK_KEY, SETTLE, SETTLE_UNRESERVED, SETTLED } from "./postgres-sql.ts";
import type { SettleInput } from "./store.ts";

type Queryable = pg.Pool | pg.ClientBase;
type Settled = { available: number; charged: number };

/**
 * One settlement (PostgresStore.settle) on `q`. SETTLE deletes the hold's row in the same
 * statement that writes the ledger row, so running it again for the same reservation changes
 * nothing. A settlement without a hold (SETTLE_UNRESERVED) has no row to delete: only its second
 * try (settleAgainOn) may run it again, and that one first looks for the first try's ledger row,
 * waiting for the key's row to do so. Either way a retry never charges twice. `mine`: this replica
 * made the hold and had not settled it.
 */
export async function settleOn(q: Queryable, input: SettleInput, mine: boolean): Promise<Settled> {
  return (await settleHeld(q, input)) ?? (await settleWithoutHold(q, input, mine));
}

/**
 * A settlement that failed after it may have reached the server (its connection broke, its
 * answer was lost), tried again on a connection of its own (`session`: the pool's settings; the
 * pool's connections may all be broken alike): if the first try committed, this finds its ledger
 * row and answers with what it charged; if not, this makes it. Either way the client gets its
 * answer, charged once (settleAgainOn).
 */
export async function settleAfresh(session: StoreSession, connections: OpenConnections, input: SettleInput, mine: boolean): Promise<Settled> {
  const c = new pg.Client(session.config);
  c.on("error", () => {});
  connections.add(c);
  try {
    await connectSession(c, session.settings);
    return await settleAgainOn(c, input, mine);
  } finally {
    c.end().catch(() => {});
  }
}

/**
 * The second try of a settlement whose first failed after it may have reached the server: a hold
 * found gone may be that try's doing, committed with its answer lost, and the ledger row it wrote
 * (by key, time and request id) says what it charged. The first try may also still be running on
 * the server, waiting for the key's row (its client gone, the server does not know yet): it takes
 * that row before it looks, in one transaction, so it waits behind the first try and sees its row
 * once it commits, rather than charging a second time.
 */
async function settleAgainOn(c: pg.ClientBase, input: SettleInput, mine: boolean): Promise<Settled> {
  const held = await settleHeld(c, input);
  if (held) return held;
  const u = input.usage;
  return inTransaction(c, async () => {
    await c.query({ name: "lock-key", text: LOCK_KEY, values: [input.keyId] });
    const prior = (await c.query<{ charged: number }>({ name: "settled", text: SETTLED, values: [input.keyId, u.at, u.requestId] })).rows[0];
    if (prior) return { available: await available(c, input.keyId), charged: prior.charged };
    return settleWithoutHold(c, input, mine);
  });
}

const usageValues = (u: SettleInput["usage"]) => [u.at, u.requestId, u.route, u.model, u.status, u.promptTokens, u.completionTokens, u.stream, u.ms, u.served, u.priceId, u.batch, u.cachedTokens];

/** SETTLE: what it charged (the cost, at most the hold); undefined when there is no hold (settled already, swept, or not made here). */
async function settleHeld(q: Queryable, input: SettleInput): Promise<Settled | undefined> {
  const { rows } = await q.query<Settled>({ name: "settle", text: SETTLE, values: [input.reservationId, input.cost, ...usageValues(input.usage)] });
  return rows[0];
}

/**
 * No reservation. Settled already, or not made here: nothing changes (a settlement is never
 * applied twice). Made here and unsettled: a sweep released it (this replica was without its
 * liveness lock for longer than the sweeps' grace, or the database lost the reserve's commit),
 * yet the request was served: it is recorded and charged without a hold (SETTLE_UNRESERVED),
 * so the ledger, /v1/usage and the client's credits_charged agree.
 */
async function settleWithoutHold(q: Queryable, input: SettleInput, mine: boolean): Promise<Settled> {
  if (!mine) return { available: await available(q, input.keyId), charged: 0 };
  // At most the hold, as SETTLE charges: the hold it had is the bound the request was admitted with.
  const cost = Math.min(input.cost, input.hold);
  return (await q.query<Settled>({ name: "settle-unreserved", text: SETTLE_UNRESERVED, values: [input.keyId, cost, ...usageValues(input.usage)] })).rows[0]!;
}

async function available(q: Queryable, keyId: string): Promise<number> {
  const { rows } = await q.query<{ available: number }>({ name: "available", text: AVAILABLE, values: [keyId] });
  return rows[0]?.available ?? 0;
}
