// A usage report's batches read from its store, the rules both stores share in one place: the
// store's part is a BatchSource (a SQLite worker's batches: sqlite-reports.ts; a Postgres cursor's
// FETCHes: postgres-report-cursor.ts).
import { rejectOnAbort } from "../promises.ts";
import { asStoreError, type UsageGroup } from "./store.ts";
import type { UsageRest } from "./usage-batches.ts";

/** The bound on a usage report's statement, both stores' (the request path's is the store's timeoutMs): past it, a 503. */
export const REPORT_TIMEOUT_MS = 60_000;

/** A batch of a report's rows, and whether more follow. */
export interface Batch { rows: UsageGroup[]; more: boolean }

/** Where a report's batches come from. */
export interface BatchSource {
  /** The next batch (the first runs the report); a rejection fails the report. */
  next(): Promise<Batch>;
  /** The report is done with, after any batch under way has answered; `unread`: rows were left (SQLite's worker holds them until told). */
  close?(unread: boolean): void;
  /**
   * Its reader took some of the answer while rows remain: a statement to run meanwhile, if one is
   * due (Postgres keeps its transaction from the server's idle bound). It counts as a batch under
   * way, and its failure fails the report.
   */
  touched?(): Promise<unknown> | undefined;
}

/** How a store's report is read: its reader's bound, its asker's signal, and the way the stores differ. */
export interface ReaderRules {
  /** Its reader has taken nothing for this long (since its last batch or touch()): rows still to come are given up. */
  idleMs: number;
  /** The asker left, the drain was cut, the store is closing: the report is given up. */
  signal: AbortSignal;
  /**
   * The reader's bound waits while a batch is fetched, which has a bound of its own (Postgres' FETCH:
   * the statement's); else it counts on (SQLite's worker answers in ms).
   */
  boundWaitsForBatch: boolean;
}

/**
 * A usage report's rows, one batch each time its reader asks, so a report of millions of rows is
 * never one result handled on the shim's thread, nor held whole in its memory: a slow reader keeps
 * its rows in the store. `done` settles once the report is done with, and only after a batch under
 * way has answered (the store's connection or worker is not free before): it resolves when the last
 * batch is in hand (the store holds nothing more for it) or the reader gave up (return(), its asker gone, its bound passed), and rejects
 * when a batch failed (Postgres then rolls back). The store holds the report's turn until then.
 */
export class ReportReader {
  readonly done: Promise<void>;
  private settle!: (failure?: unknown) => void;
  private readonly source: BatchSource;
  private readonly rules: ReaderRules;
  /**
   * The batch (or the source's statement at a touch) under way, if any: the report ends (its turn
   * passes on) only after it has answered, else its answer could be taken for the next report's.
   */
  private underWay: Promise<unknown> | undefined;
  private more = true;
  private ended = false;
  /** Its reader took nothing for idleMs: rows still to come were given up. */
  private expired = false;
  /** Why the reader gets no more rows: a batch (or a statement at a touch) failed. */
  private failure: unknown;
  private idle: NodeJS.Timeout | undefined;
  private readonly abort = () => this.end();

  constructor(source: BatchSource, rules: ReaderRules) {
    this.source = source;
    this.rules = rules;
    this.done = new Promise<void>((resolve, reject) => (this.settle = (failure) => (failure === undefined ? resolve() : reject(failure))));
    this.done.catch(() => {}); // a failed first batch is thrown to its caller, which need not wait for `done`
    rules.signal.addEventListener("abort", this.abort, { once: true });
  }

  /** The first batch (the one that runs the report). Throws when it fails (`done` rejects too). */
  async first(): Promise<UsageGroup[]> {
    const rows = await this.fetch();
    // The last batch in hand: the store holds nothing more for it, so its turn (and Postgres'
    // connection) goes to the next report now, not once this one's client has read it.
    if (!this.more) this.end();
    else this.armIdle();
    return rows;
  }

  /** The batches from `first` on, for the reader: read to the end, or given up with return(). */
  batches(first: UsageGroup[]): UsageRest {
    const { signal, boundWaitsForBatch, idleMs } = this.rules;
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
        // Given up with rows still to come (its bound passed, its asker left: the client, the
        // store closing): a cut answer, never a short complete one. After the last batch, the
        // report is whole.
        if (this.expired && this.more) throw asStoreError(new Error(`the report's reader took nothing for ${idleMs} ms`));
        if (this.more && signal.aborted) throw asStoreError(signal.reason);
        if (!this.more || this.ended) {
          this.end();
          return { done: true, value: undefined };
        }
        if (boundWaitsForBatch) clearTimeout(this.idle);
        else this.armIdle();
        const value = await this.fetch().catch((e: unknown) => {
          throw asStoreError(signal.aborted ? signal.reason : e);
        });
        if (value.length === 0) {
          this.end();
          return { done: true, value: undefined };
        }
        if (!this.more) this.end();
        else if (boundWaitsForBatch) this.armIdle();
        return { done: false, value };
      },
      return: async () => {
        this.end();
        return { done: true, value: undefined };
      },
    };
    return { [Symbol.asyncIterator]: () => iterator, idleMs, touch: () => this.touch() };
  }

  /**
   * Its reader took some of the answer: the idle time starts again (unless it waits for a batch
   * under way, and starts once it has answered), and the source may run a statement meanwhile.
   */
  private touch(): void {
    if (this.ended || (this.rules.boundWaitsForBatch && this.underWay !== undefined)) return;
    this.armIdle();
    const running = this.more ? this.source.touched?.() : undefined;
    if (running) void this.step(running).catch(() => {}); // the next batch is refused with its failure
  }

  /** The source's next batch; `more` is known before the report's end (waiting for it) closes the source. */
  private fetch(): Promise<UsageGroup[]> {
    return this.step(this.source.next().then((batch) => {
      this.more = batch.more;
      return batch.rows;
    }));
  }

  /** `work` is under way until it settles (the report's end waits for it); its failure fails the report. */
  private async step<T>(work: Promise<T>): Promise<T> {
    this.underWay = work;
    try {
      return await work;
    } catch (e) {
      this.more = false;
      this.failure ??= e;
      this.end(e);
      throw e;
    } finally {
      if (this.underWay === work) this.underWay = undefined;
    }
  }

  /**
   * A reader that stops reading (a client that keeps its connection open and takes nothing) would
   * hold the report's turn, and every report behind it, and what the store holds for it, for as
   * long as it stays: the report is given up once it has taken nothing for idleMs. Each batch, and
   * each sign of its client taking bytes (touch()), starts that time again: a long body read
   * steadily is not cut.
   */
  private armIdle(): void {
    if (this.ended) return;
    clearTimeout(this.idle);
    this.idle = setTimeout(() => {
      this.expired = true;
      this.end();
    }, this.rules.idleMs).unref();
  }

  /** The report is done with: the source is closed and `done` settles once a batch under way has answered. */
  private end(failure?: unknown): void {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.idle);
    this.rules.signal.removeEventListener("abort", this.abort);
    void (this.underWay ?? Promise.resolve()).catch(() => {}).then(() => {
      this.source.close?.(this.more);
      this.settle(failure);
    });
  }
}

/** How a store answers a report (openReport): with its batches once the first is in hand. */
export interface ReportOpening {
  /** The report's signal: its asker's (it left, the drain was cut) and the store's closing, either ending it. */
  readonly signal: AbortSignal;
  /** Once the report runs, in its turn: reads `reader`'s first batch (throws when it fails) and hands the batches to batches()' caller. */
  read(reader: ReportReader): Promise<void>;
  /**
   * The report's batches, once `work` (the report waiting for and holding its turn, calling read(),
   * then waiting for its reader's `done`) has the first in hand. Rejects with the signal's reason as
   * soon as it aborts, or with `work`'s failure (the first batch's, one of waiting for the turn).
   */
  batches(work: Promise<unknown>): Promise<UsageRest>;
}

/** A report's opening, for its asker's `wanted` signal (if any) and the store's `closing`. */
export function openReport(wanted: AbortSignal | undefined, closing: AbortSignal): ReportOpening {
  const signal = wanted ? AbortSignal.any([wanted, closing]) : closing;
  let opened!: (batches: UsageRest) => void;
  const ready = new Promise<UsageRest>((resolve) => (opened = resolve));
  return {
    signal,
    read: async (reader) => opened(reader.batches(await reader.first())),
    // `work` settles once the batches are read: `ready` wins the race as soon as the first is here.
    batches: (work) => Promise.race([ready, rejectOnAbort(work, signal).then(() => ready)]),
  };
}

/** Every row of a report, read to its end (a report asked for without UsageQuery.batched). */
export async function allRows(rest: UsageRest): Promise<UsageGroup[]> {
  const rows: UsageGroup[] = [];
  for await (const batch of rest) for (const row of batch) rows.push(row);
  return rows;
}
