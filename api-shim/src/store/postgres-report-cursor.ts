import { asStoreError, StoreUnavailableError, type UsageGroup } from "./store.ts";
import type { UsageRest } from "./usage-batches.ts";

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
 * A usage report's rows read from its cursor, one FETCH per batch its reader asks for, so a
 * report of millions of rows is never one result parsed on the shim's thread, nor held whole in
 * its memory: a slow reader keeps its rows on the server. `done` settles once the report is done
 * with, and only after a FETCH under way has answered (its connection is not free before): it
 * resolves when the last batch was read or the reader gave up (return(), its asker gone, its bound
 * passed), so the transaction commits; it rejects when a FETCH failed, so it rolls back.
 */
export class ReportCursor {
  readonly done: Promise<void>;
  private settle!: (failure?: unknown) => void;
  private readonly reading: CursorReading;
  /** The FETCH under way, if any. */
  private fetching: Promise<unknown> | undefined;
  private more = true;
  private ended = false;
  /** Why the reader gets no more rows: its bound passed, or a FETCH (or a keepAlive) failed. */
  private failure: unknown;
  private idle: NodeJS.Timeout | undefined;
  /** When the last statement ended (performance.now()): the server's idle time counts from it. */
  private lastStatement = performance.now();
  private readonly abort = () => this.end();

  constructor(reading: CursorReading) {
    this.reading = reading;
    this.done = new Promise<void>((resolve, reject) => (this.settle = (failure) => (failure === undefined ? resolve() : reject(failure))));
    this.done.catch(() => {}); // a failed first FETCH is thrown to its caller, which need not wait for `done`
    reading.signal.addEventListener("abort", this.abort, { once: true });
  }

  /**
   * The first batch (the FETCH that runs the report's statement: its grouping and sort). A report
   * that fits in it is done at once: its turn and connection are given up before it is read.
   * Throws when the FETCH fails (`done` rejects too).
   */
  async first(): Promise<UsageGroup[]> {
    const rows = await this.fetchBatch();
    if (!this.more) this.end();
    else this.armIdle();
    return rows;
  }

  /** The batches from `first` on, for the reader: read to the end, or given up with return(). */
  batches(first: UsageGroup[]): UsageRest {
    let pending: UsageGroup[] | undefined = first;
    const iterator: AsyncIterator<UsageGroup[]> = {
      next: async () => {
        if (pending !== undefined) {
          const value = pending;
          pending = undefined;
          this.armIdle();
          return { done: false, value };
        }
        if (this.failure !== undefined) throw asStoreError(this.failure);
        // Given up for its asker (the client left, the store is closing) with rows still to come:
        // a cut answer, never a short complete one. After the last batch, the report is whole.
        if (this.more && this.reading.signal.aborted) throw asStoreError(this.reading.signal.reason);
        if (!this.more || this.ended) {
          this.end();
          return { done: true, value: undefined };
        }
        clearTimeout(this.idle); // a FETCH is bounded by the report's statement bound, not the reader's
        const value = await this.fetchBatch().catch((e: unknown) => {
          throw asStoreError(this.reading.signal.aborted ? this.reading.signal.reason : e);
        });
        if (value.length === 0) {
          this.end();
          return { done: true, value: undefined };
        }
        if (this.more) this.armIdle();
        else this.end();
        return { done: false, value };
      },
      return: async () => {
        this.end();
        return { done: true, value: undefined };
      },
    };
    return { [Symbol.asyncIterator]: () => iterator, idleMs: this.reading.idleMs, touch: () => this.touch() };
  }

  /**
   * Its reader took some of the answer: the idle time starts again, unless a statement is under
   * way (a FETCH has the statement's bound, and the idle time starts once it has answered). A
   * slow reader asks for its next batch minutes after the last FETCH: the transaction is kept
   * from the server's idle bound by a statement that reads nothing, once keepAliveMs have passed.
   */
  private touch(): void {
    if (this.ended || !this.more || this.fetching !== undefined) return;
    this.armIdle();
    if (performance.now() - this.lastStatement < this.reading.keepAliveMs) return;
    const running = this.reading.keepAlive();
    this.fetching = running;
    running.then(
      () => (this.lastStatement = performance.now()),
      (e: unknown) => {
        // The session is gone or its transaction failed: the next FETCH would fail too.
        this.more = false;
        this.failure ??= e;
        this.end(e);
      },
    ).finally(() => {
      if (this.fetching === running) this.fetching = undefined;
    });
  }

  /** One FETCH, its days labelled (here, between FETCHes: a report of millions of rows is labelled batch by batch). */
  private async fetchBatch(): Promise<UsageGroup[]> {
    const { fetch, rows, day } = this.reading;
    const fetching = fetch();
    this.fetching = fetching;
    try {
      const batch = await fetching;
      this.lastStatement = performance.now();
      this.more = batch.length === rows;
      return day ? batch.map((r) => ({ ...r, group: new Date(Number(r.group) * 86_400_000).toISOString().slice(0, 10) })) : batch;
    } catch (e) {
      this.more = false;
      this.failure ??= e;
      this.end(e);
      throw e;
    } finally {
      this.fetching = undefined;
    }
  }

  /**
   * A reader that stops reading (a client that keeps its connection open and takes nothing) would
   * hold the report's connection, its transaction and its turn, and every report behind it, for as
   * long as it stays: its rows are given up once it has taken nothing for idleMs. Each batch, and
   * each sign of its client taking bytes (touch()), starts that time again: a long body read
   * steadily is not cut.
   */
  private armIdle(): void {
    if (this.ended) return;
    clearTimeout(this.idle);
    this.idle = setTimeout(() => {
      this.failure ??= new StoreUnavailableError(new Error(`the report's reader took nothing for ${this.reading.idleMs} ms`));
      this.end();
    }, this.reading.idleMs).unref();
  }

  /** The report is done with; `done` settles once a FETCH under way has answered. */
  private end(failure?: unknown): void {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.idle);
    this.reading.signal.removeEventListener("abort", this.abort);
    void (this.fetching ?? Promise.resolve()).catch(() => {}).then(() => this.settle(failure));
  }
}
