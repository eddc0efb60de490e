import type pg from "pg";
import { AVAILABLE, SETTLE, SETTLE_UNRESERVED, SETTLED } from "./postgres-sql.ts";
import type { SettleInput } from "./store.ts";

type Queryable = pg.Pool | pg.ClientBase;

/**
 * One settlement (PostgresStore.settle) on `q`. SETTLE deletes the hold's row in the same
 * statement that writes the ledger row, so running it again for the same reservation changes
 * nothing: a retry can never charge twice. `mine`: this replica made the hold and had not settled
 * it. `retried`: an earlier try failed after it may have reached the server, so a hold found gone
 * may be that try's doing, committed with its answer lost: the ledger row it wrote (by key, time
 * and request id) says what it charged.
 */
export async function settleOn(q: Queryable, input: SettleInput, mine: boolean, retried: boolean): Promise<{ available: number; charged: number }> {
  const u = input.usage;
  const usage = [u.at, u.requestId, u.route, u.model, u.status, u.promptTokens, u.completionTokens, u.stream, u.ms];
  const { rows } = await q.query<{ available: number }>({ name: "settle", text: SETTLE, values: [input.reservationId, input.cost, ...usage] });
  if (rows.length === 1) return { available: rows[0]!.available, charged: input.cost };
  if (retried) {
    const prior = (await q.query<{ charged: number }>({ name: "settled", text: SETTLED, values: [input.keyId, u.at, u.requestId] })).rows[0];
    if (prior) return { available: await available(q, input.keyId), charged: prior.charged };
  }
  // No reservation. Settled already, or not made here: nothing changes (a settlement is never
  // applied twice). Made here and unsettled: a sweep released it (this replica was without its
  // liveness lock for longer than the sweeps' grace, or the database lost the reserve's commit),
  // yet the request was served: it is recorded and charged without a hold (SETTLE_UNRESERVED),
  // so the ledger, /v1/usage and the client's credits_charged agree.
  if (!mine) return { available: await available(q, input.keyId), charged: 0 };
  return (await q.query<{ available: number; charged: number }>({ name: "settle-unreserved", text: SETTLE_UNRESERVED, values: [input.keyId, input.cost, ...usage] })).rows[0]!;
}

export async function available(q: Queryable, keyId: string): Promise<number> {
  const { rows } = await q.query<{ available: number }>({ name: "available", text: AVAILABLE, values: [keyId] });
  return rows[0]?.available ?? 0;
}
