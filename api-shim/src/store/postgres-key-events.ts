/** The Postgres store's key histories (key-events.ts): events written in the caller's transaction, and read. */
import type pg from "pg";
import { eventRow, fromRow, INSERT_EVENT, type KeyEvent, SELECT_EVENTS } from "./key-events.ts";

export async function recordEvent(c: pg.ClientBase, event: KeyEvent): Promise<void> {
  await c.query(INSERT_EVENT, eventRow(event));
}

/** The key's events, oldest first; undefined when there is no such key (keys are never deleted: two reads suffice). */
export async function keyEventsOf(q: pg.Pool, id: string): Promise<KeyEvent[] | undefined> {
  if ((await q.query("SELECT 1 FROM keys WHERE id = $1", [id])).rowCount === 0) return undefined;
  const { rows } = await q.query<{ key_id: string; at: number; event: string; request_id: string | null; changes: string }>(SELECT_EVENTS, [id]);
  return rows.map(fromRow);
}
