import { type BatchSource, ReportReader } from "./report-reader.ts";
import type { UsageGroup } from "./store.ts";

/** A report's cursor as postgres-reports.ts reads it. */
export interface CursorReading {
  /** Runs one FETCH of the report's cursor (its SQL: the report's mark, so a cancellation finds it). */
  fetch: () => Promise<UsageGroup[]>;
  /** Rows per FETCH: a shorter answer is the last. */
  rows: number;
  /** Days come as UTC day numbers, labelled here. */
  day: boolean;
  /** Its reader has taken nothing for this long (since its last batch or touch()): the report is given up. */
  idleMs: number;
  /**
   * Runs a statement that reads nothing, in the report's transaction: the server's bound on a
   * transaction left idle counts from its last statement, not from the reader's progress.
   */
  keepAlive: () => Promise<unknown>;
  /** Run keepAlive at a touch() once this long has passed since the last statement (postgres-reports.ts says why). */
  keepAliveMs: number;
  /** The asker left, the drain was cut, the store is closing: the report is given up. */
  signal: AbortSignal;
}

/**
 * A usage report's rows read from its cursor, one FETCH per batch its reader asks for
 * (ReportReader: the rules the stores share). A report that fits in its first FETCH is done at
 * once: its turn and connection are given up before it is read, as after any last FETCH. The
 * reader's bound waits while a FETCH runs: a statement has the report's statement bound. `done`
 * resolves once the report is done with, so the transaction commits; it rejects when a FETCH (or
 * a keepAlive) failed, so it rolls back.
 */
export function reportCursor(reading: CursorReading): ReportReader {
  return new ReportReader(cursorBatches(reading), { idleMs: reading.idleMs, signal: reading.signal, boundWaitsForBatch: true });
}

/**
 * The cursor's batches: each FETCH's days labelled (here, between FETCHes: a report of millions of
 * rows is labelled batch by batch). A slow reader asks for its next batch minutes after the last
 * FETCH: the transaction is kept from the server's idle bound by a statement that reads nothing,
 * at a touch once keepAliveMs have passed since the last statement.
 */
function cursorBatches(reading: CursorReading): BatchSource {
  /** When the last statement ended (performance.now()): the server's idle time counts from it. */
  let lastStatement = performance.now();
  const statement = async <T>(running: Promise<T>): Promise<T> => {
    const value = await running;
    lastStatement = performance.now();
    return value;
  };
  return {
    next: async () => {
      const batch = await statement(reading.fetch());
      const rows = reading.day ? batch.map((r) => ({ ...r, group: new Date(Number(r.group) * 86_400_000).toISOString().slice(0, 10) })) : batch;
      return { rows, more: batch.length === reading.rows };
    },
    touched: () => (performance.now() - lastStatement < reading.keepAliveMs ? undefined : statement(reading.keepAlive())),
  };
}
