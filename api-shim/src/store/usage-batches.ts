// A usage report's rows in batches (/admin/usage streams its body): what a store answers when
// asked with UsageQuery.batched, and the one way to read it to the end or give it up.
import type { UsageGroup } from "./store.ts";

/**
 * Rows per batch of a report, both stores' (a SQLite worker's message, a Postgres cursor's FETCH):
 * each is a few ms of the shim's thread to receive (a structured clone, a parse) and label. A
 * report as one result (1.8 M groups for a year by day of thousands of keys) stopped every other
 * request of the process for seconds. Here, with no value imports: the SQLite worker imports it.
 */
export const REPORT_BATCH_ROWS = 10_000;

/**
 * A report's batches after its first, as both stores answer them: read to the end, or given up
 * with return() as `for await` does (that ends the report's turn). The store holds the report's
 * rows (a worker's statement, a cursor's transaction) for its reader, and gives them up once the
 * reader has taken nothing for `idleMs`: a client that keeps its connection open and reads
 * nothing must not hold the report's turn, and every report behind it, for as long as it stays.
 */
export interface UsageRest<T = UsageGroup> extends AsyncIterable<T[]> {
  /** How long its reader may take nothing before the report is given up. */
  readonly idleMs: number;
  /**
   * Its reader took some of the answer (its client's socket took bytes): the idle time starts
   * again. Asking for the next batch does too; but the body asks for it only once the socket has
   * taken the previous one, a MB or so, which a slow client reading steadily takes minutes over.
   * A batch being fetched meanwhile has the store's own bound on it instead.
   */
  touch(): void;
}

/**
 * The rows of usage() asked for with UsageQuery.batched: the first batch, and `rest` when more
 * follow (the caller reads it to the end, or gives up with return() as `for await` does: that
 * ends the report's turn). A store may answer with every row at once (SQLite in memory).
 */
export type UsageRows<T = UsageGroup> = T[] & { rest?: UsageRest<T> };

/** Every batch of a report (usageBatches), for its body. */
export interface UsageBatches<T = UsageGroup> extends AsyncIterableIterator<T[]> {
  /** The rest's bound (UsageRest.idleMs); none when every row came at once, nothing held for the reader. */
  readonly idleMs?: number;
  /** Passed on to the rest (UsageRest.touch). */
  touch(): void;
  return(): Promise<IteratorResult<T[]>>;
}

/**
 * Every batch of usage()'s answer, in order. Given up (return(): a client gone, a `for await`
 * left early) at any point, the rest is given up too, also before the first batch was taken (a
 * generator's `finally` would not run then): the rest holds the report's turn, which every other
 * report waits for.
 */
export function usageBatches<T>(rows: UsageRows<T>): UsageBatches<T> {
  const rest = rows.rest?.[Symbol.asyncIterator]();
  let first = true;
  const batches: UsageBatches<T> = {
    idleMs: rows.rest?.idleMs,
    touch: () => rows.rest?.touch(),
    next: async () => {
      if (!first) return rest ? rest.next() : { done: true, value: undefined };
      first = false;
      return { done: false, value: rows };
    },
    return: async () => {
      first = false;
      await rest?.return?.();
      return { done: true, value: undefined };
    },
    [Symbol.asyncIterator]: () => batches,
  };
  return batches;
}

/** A store's batches as usage() answers them (UsageRows): the first, and the rest to read. */
export async function firstAndRest<T>(batches: UsageRest<T>): Promise<UsageRows<T>> {
  const iterator = batches[Symbol.asyncIterator]();
  const first = await iterator.next();
  if (first.done) return [];
  const rest: UsageRest<T> = { [Symbol.asyncIterator]: () => iterator, idleMs: batches.idleMs, touch: () => batches.touch() };
  return Object.assign(first.value, { rest });
}
