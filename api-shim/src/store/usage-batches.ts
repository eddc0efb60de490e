// A usage report's rows in batches (/admin/usage streams its body): what a store answers when
// asked with UsageQuery.batched, and the one way to read it to the end or give it up.
import type { UsageGroup } from "./store.ts";

/** A report's rows in batches, in order. */
export type UsageBatches = AsyncIterable<UsageGroup[]> | Iterable<UsageGroup[]>;

/**
 * The rows of usage() asked for with UsageQuery.batched: the first batch, and `rest` when more
 * follow (the caller reads it to the end, or gives up with return() as `for await` does: that
 * ends the report's turn). A store may answer with every row at once (SQLite in memory).
 */
export type UsageRows = UsageGroup[] & { rest?: AsyncIterable<UsageGroup[]> };

/**
 * Every batch of usage()'s answer, in order. Given up (return(): a client gone, a `for await`
 * left early) at any point, the rest is given up too, also before the first batch was taken (a
 * generator's `finally` would not run then): the rest holds the report's turn, which every other
 * report waits for.
 */
export function usageBatches(rows: UsageRows): AsyncIterableIterator<UsageGroup[]> {
  const rest = rows.rest?.[Symbol.asyncIterator]();
  let first = true;
  const batches: AsyncIterableIterator<UsageGroup[]> = {
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

/** Batches as usage() answers them (UsageRows): the first, and the rest to read. */
export async function firstAndRest(batches: AsyncIterable<UsageGroup[]>): Promise<UsageRows> {
  const iterator = batches[Symbol.asyncIterator]();
  const first = await iterator.next();
  if (first.done) return [];
  return Object.assign(first.value, { rest: { [Symbol.asyncIterator]: () => iterator } });
}
