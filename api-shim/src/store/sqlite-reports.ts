import { Worker } from "node:worker_threads";
import { rejectOnAbort } from "../promises.ts";
import { allRows, type Batch, openReport, REPORT_TIMEOUT_MS, ReportReader } from "./report-reader.ts";
import { isCorrupt } from "./sqlite-failures.ts";
import type { ReportAnswer, ReportAsk } from "./sqlite-report-worker.ts";
import type { ReportQuery } from "./sqlite-usage-report.ts";
import type { CreditsAsk } from "./sqlite-credits-statement.ts";
import type { KeyCredits, LowCreditsQuery } from "./low-credits.ts";
import type { RequestsAsk } from "./sqlite-request-rows.ts";
import type { RequestRow, RequestsQuery } from "./request-rows.ts";
import type { CreditsLine, CreditsQuery } from "./credits-statement.ts";
import { asStoreError, StoreUnavailableError, type UsageGroup, type UsageQuery } from "./store.ts";
import { KeyedTurns, Turns } from "./turns.ts";
import { firstAndRest, type UsageRest, type UsageRows } from "./usage-batches.ts";

/**
 * Each asking key's reports wait in a line of their own (the operator's, of one key or all, in
 * one more: UsageQuery.asker), and one report of each line at a time waits for the worker: a key
 * asking in a loop delays another key's report, or the operator's on it, by one of its own, not by
 * all it queued. Beyond these many waiting, a report is refused at once (ReportsBusyError: a 429,
 * the askers' own rate).
 */
const WAITING_PER_KEY = 8;
/** What the worker is asked to run: a usage report, a credits statement, or a request's or key's ledger rows. */
type ReportWork = { query: ReportQuery } | { credits: CreditsAsk } | { requests: RequestsAsk } | { lowCredits: LowCreditsQuery };
const WAITING_KEYS = 64;
const WORKER = new URL("./sqlite-report-worker.ts", import.meta.url);
/**
 * A worker with no report for this long ends, and a new one starts with the next report (~100 ms):
 * reports come now and then, and a worker adds ~25 MB of RSS (its isolate, type stripping, page
 * cache). Its end gives back its isolate's heap (~10 MB); the rest stays with malloc, for reuse.
 */
const REPORT_WORKER_IDLE_MS = 60_000;
/**
 * A new worker's start (its modules, better-sqlite3, opening the database: ~100 ms, seconds on a
 * loaded host) is not counted against a report's bound, which counts from its ready message: the
 * first report on a new worker would otherwise have less time than the next. The start has a bound
 * of its own: a worker not ready by then (a disk that stalls at the open) fails the reports
 * waiting for it (503) and is given up; the next report starts another.
 */
const REPORT_WORKER_START_MS = 30_000;

export interface SqliteReportsOptions {
  busyTimeoutMs: number;
  /**
   * A report met a corrupt database (SQLITE_CORRUPT, SQLITE_NOTADB): the store fails closed, as
   * when its own thread meets one. Other failures of a report (its worker could not open the
   * file, a time bound) are that report's 503 alone: the next one gets a new worker.
   */
  onStoreFailure?: (error: Error) => void;
  idleMs?: number;
  timeoutMs?: number;
  /** How long a new worker may take to get ready (REPORT_WORKER_START_MS). */
  startMs?: number;
  /** The worker's module (tests give one of their own). */
  workerUrl?: URL;
}

/**
 * The SQLite store's usage reports of a database file, on a worker thread with a read-only
 * connection of its own (sqlite-report-worker.ts). Run in the store's thread, one report over a
 * million rows stopped every other request of the process for a second or more (better-sqlite3
 * is synchronous). The worker starts with the first report and is replaced when it fails (the
 * report it ran gets a 503, the next one a new worker); the store's close ends it.
 *
 * One report runs at a time, the others wait their turn (WAITING_PER_KEY). A report whose asker
 * leaves (or whose drain is cut) is answered at once; it is stopped, like one that runs past
 * REPORT_TIMEOUT_MS (a 503, on time), within a few thousand rows of its scan or one slice's sort
 * (sqlite-usage-report.ts says how). Its turn passes on once the worker stopped it, so scans
 * never pile up on the worker.
 *
 * An in-memory database (`sqlite::memory:`, the tests') belongs to the one connection that made
 * it: a worker's connection would open an empty database of its own. Its reports run in the
 * store's thread, on that connection (sqlite-store.ts).
 */
export class SqliteReports {
  private worker: Worker | undefined;
  /** `worker`'s start (starting() says how it settles). */
  private started: Promise<void> = Promise.resolve();
  /** The report the worker is running, settled by its answer or by that worker's end. */
  private running: { worker: Worker; resolve: (batch: Batch) => void; reject: (e: unknown) => void } | undefined;
  private readonly turns = new Turns(1, WAITING_KEYS);
  /** The lines of the askers with reports waiting or running (null: the operator). */
  private readonly lines = new KeyedTurns<string | null>(WAITING_PER_KEY);
  /** Aborted by close(). */
  private readonly closing = new AbortController();
  private idle: NodeJS.Timeout | undefined;
  /**
   * Set to stop the running report's statement (the worker reads it as the statement runs); one
   * per worker, so a new report on a new worker does not clear an old worker's.
   */
  private stop = new Int32Array(new SharedArrayBuffer(4));
  private readonly filename: string;
  private readonly options: Required<Omit<SqliteReportsOptions, "onStoreFailure">> & Pick<SqliteReportsOptions, "onStoreFailure">;

  constructor(filename: string, options: SqliteReportsOptions) {
    this.filename = filename;
    this.options = { idleMs: REPORT_WORKER_IDLE_MS, timeoutMs: REPORT_TIMEOUT_MS, startMs: REPORT_WORKER_START_MS, workerUrl: WORKER, ...options };
  }

  /**
   * The report's rows (batches() says when it rejects): every row (read batch by batch, then
   * answered whole: /v1/usage's small reports, the tests), or, asked with `batched`, as UsageRows
   * (its first batch and the rest).
   */
  run(q: UsageQuery, beforeRun: () => Promise<void>): Promise<UsageGroup[]> {
    const batches = this.batches(q, beforeRun);
    return q.batched ? batches.then(firstAndRest) : batches.then(allRows);
  }

  /**
   * The report, once its turn comes, as batches of rows (REPORT_BATCH_ROWS): resolves with its
   * first batch in hand, so a failure is still a status of its own; each further batch is asked
   * of the worker as the caller iterates (a slow reader keeps rows in the worker, not here). The
   * turn is held until the last batch is in hand or the caller gives up (return(), as `for await`
   * does on a break or a throw): a caller that stops early must do the latter. A failure of a further batch (the
   * worker ended, the store closing, the signal aborting) throws from the iteration.
   *
   * `beforeRun` runs once the turn comes, before the worker is asked (the store commits its open
   * batch, so the report sees every request settled before it; a store that failed rejects it).
   * Rejects with the signal's reason as soon as it aborts (any but a ClientLeftError as a
   * StoreUnavailableError's cause), with a ReportsBusyError when too many wait, and with a
   * StoreUnavailableError when the report fails.
   */
  batches(q: UsageQuery, beforeRun: () => Promise<void>): Promise<UsageRest> {
    const { signal: wanted, asker, batched: _, ...query } = q;
    return this.read(asker, wanted, { query }, beforeRun);
  }

  /**
   * A credits statement (sqlite-credits-statement.ts) on the worker, in the reports' lines and
   * turn: a scan of the ledger up to its end, as long as a report's. One line per key: one batch.
   */
  credits(q: CreditsQuery, beforeRun: () => Promise<void>): Promise<CreditsLine[]> {
    const { signal: wanted, asker, ...credits } = q;
    // The worker's rows cross as they are: a statement's lines, not usage groups.
    return this.read(asker, wanted, { credits }, beforeRun).then(allRows) as Promise<unknown> as Promise<CreditsLine[]>;
  }

  /**
   * Each active key's credits this month (low-credits.ts), in the operator's line and the
   * reports' turn: the gauges' refresh waits behind a running report, never beside it.
   */
  lowCredits(q: LowCreditsQuery, beforeRun: () => Promise<void>): Promise<KeyCredits[]> {
    return this.read(null, undefined, { lowCredits: q }, beforeRun).then(allRows) as Promise<unknown> as Promise<KeyCredits[]>;
  }

  /**
   * A request's ledger rows, or a key's requests in a period (sqlite-request-rows.ts), as a
   * report's batches: in its asker's line and the reports' turn, a page per batch.
   */
  requests(q: RequestsQuery, beforeRun: () => Promise<void>): Promise<UsageRows<RequestRow>> {
    const { signal: wanted, asker, ...requests } = q;
    return (this.read(asker, wanted, { requests }, beforeRun) as Promise<unknown> as Promise<UsageRest<RequestRow>>).then(firstAndRest);
  }

  /** `asking` run on the worker in `asker`'s line, then the shared turn, as batches() says. */
  private read(asker: string | null, wanted: AbortSignal | undefined, asking: ReportWork, beforeRun: () => Promise<void>): Promise<UsageRest> {
    if (this.closing.signal.aborted) return Promise.reject(this.closing.signal.reason);
    const opening = openReport(wanted, this.closing.signal);
    const { signal } = opening;
    const work = this.lines.run(asker, () => this.turns.run(async () => {
      try {
        await beforeRun();
        signal.throwIfAborted(); // its asker left meanwhile: no scan for nobody
        clearTimeout(this.idle);
        const worker = this.worker ?? this.start();
        const started = this.started;
        let asked = false;
        // Its reader's bound counts on while the worker is asked for a batch (ms away).
        const reader = new ReportReader({
          next: () => (asked ? this.request(worker, { more: true }) : ((asked = true), this.ask(worker, started, asking, signal))),
          // The rows nobody will read: the worker holds them until told.
          close: (unread) => {
            if (unread && this.worker === worker) worker.postMessage({ drop: true } satisfies ReportAsk);
          },
        }, { idleMs: this.options.timeoutMs, signal, boundWaitsForBatch: false });
        await opening.read(reader);
        await reader.done.catch(() => {}); // a failed batch was thrown to its reader
      } finally {
        clearTimeout(this.idle);
        this.idle = setTimeout(() => this.retire(), this.options.idleMs).unref();
      }
    }, signal), signal);
    return opening.batches(work).catch((e: unknown) => {
      throw asStoreError(e);
    });
  }

  /**
   * The database copied into the new file `into` by the worker (VACUUM INTO: one read snapshot
   * of what was committed, on its read-only connection; sqlite-backup.ts), in the reports' turn:
   * one statement at a time on the worker, so a backup waits for the running report and reports
   * wait for it. `beforeRun` as for a report. A VACUUM cannot be stopped: when `signal` aborts
   * (its asker left, the store closing), this rejects at once and the worker is given up (it ends
   * once the copy is written; the next report starts another): `givenUp` is then told when the
   * statement has ended, so the copy's owner (sqlite-backup.ts) removes it and only then allows
   * another.
   */
  async backup(into: string, beforeRun: () => Promise<void>, signal: AbortSignal, givenUp: (ended: Promise<void>) => void): Promise<void> {
    const stopped = AbortSignal.any([signal, this.closing.signal]);
    stopped.throwIfAborted();
    await this.turns.run(async () => {
      try {
        await beforeRun();
        stopped.throwIfAborted();
        clearTimeout(this.idle);
        const worker = this.worker ?? this.start();
        await rejectOnAbort(this.started, stopped);
        const written = this.request(worker, { backup: into });
        const giveUp = () => {
          if (this.worker === worker) this.retire();
          // The statement has ended once the thread answers (retire() then ends it) or exits: its
          // exit too, since a report on a new worker takes `running` meanwhile, and the old
          // thread's answer then settles nothing here.
          givenUp(new Promise<void>((resolve) => {
            worker.once("exit", () => resolve());
            written.then(() => resolve(), () => resolve());
          }));
        };
        stopped.addEventListener("abort", giveUp, { once: true });
        await rejectOnAbort(written, stopped).finally(() => stopped.removeEventListener("abort", giveUp));
      } finally {
        clearTimeout(this.idle);
        this.idle = setTimeout(() => this.retire(), this.options.idleMs).unref();
      }
    }, stopped).catch((e: unknown) => {
      throw asStoreError(e);
    });
  }

  /**
   * The report's first batch, asked once `worker` has `started`; `signal` aborting stops the
   * statement, and the answer (an error) follows within a few thousand rows of its scan. An asker
   * leaving while the worker starts is answered at once (the worker, once ready, serves the next).
   */
  private async ask(worker: Worker, started: Promise<void>, work: ReportWork, signal: AbortSignal): Promise<Batch> {
    await rejectOnAbort(started, signal);
    signal.throwIfAborted();
    const flag = this.stop;
    Atomics.store(flag, 0, 0);
    const stop = () => Atomics.store(flag, 0, 1);
    signal.addEventListener("abort", stop, { once: true });
    const { timeoutMs } = this.options;
    // The worker's check ends a report past its time, within one slice's sort; should a
    // statement still run on (a disk that stalls, a sort nothing interrupts), the bound is kept
    // here too, a second later (the worker's own check answers first; like it, this counts from
    // the worker's ready, not its start): the report is answered (503), and the worker,
    // busy until its statement ends, is given up (the next report starts another). The bound is
    // the statement's: reading the batches that follow is bounded by the asker's connection.
    const overdue = setTimeout(() => {
      if (this.running?.worker !== worker) return;
      stop();
      this.retire(); // it ends once its statement has
      this.answer(worker, new Error(`the report ran past ${timeoutMs} ms`));
    }, timeoutMs + 1000).unref();
    try {
      return await this.request(worker, { ...work, timeoutMs });
    } finally {
      clearTimeout(overdue);
      signal.removeEventListener("abort", stop);
    }
  }

  /** One answer of `worker`; a worker already given up (retired, ended) fails it at once. */
  private request(worker: Worker, ask: ReportAsk): Promise<Batch> {
    if (this.worker !== worker) return Promise.reject(new StoreUnavailableError(new Error("the report worker ended")));
    return new Promise<Batch>((resolve, reject) => {
      this.running = { worker, resolve, reject };
      worker.postMessage(ask);
    });
  }

  private start(): Worker {
    this.stop = new Int32Array(new SharedArrayBuffer(4));
    const worker = new Worker(this.options.workerUrl, { workerData: { filename: this.filename, busyTimeoutMs: this.options.busyTimeoutMs, stop: this.stop } });
    worker.unref(); // never what keeps the process alive
    worker.on("message", (a: ReportAnswer) => {
      if ("ready" in a) return; // starting() takes it
      if ("written" in a) return this.answer(worker, { rows: [], more: false }); // a backup's: no rows
      this.answer(worker, "rows" in a ? { rows: a.rows, more: a.more === true } : Object.assign(new Error(a.error), { code: a.code }));
    });
    // An uncaught error (the file could not be opened) ends the worker: 'exit' follows.
    worker.on("error", (e) => this.ended(worker, e));
    worker.on("exit", (code) => this.ended(worker, new Error(`the report worker exited (code ${code})`)));
    this.worker = worker;
    this.started = this.starting(worker);
    return worker;
  }

  /**
   * `worker`'s start: resolves with its ready message (its database open); rejects, as a report's
   * failure, when it ends first (the file could not be opened) or is not ready within startMs (it
   * is given up then). Its listeners and its bound go once it settles.
   */
  private starting(worker: Worker): Promise<void> {
    const { startMs } = this.options;
    const started = new Promise<void>((resolve, reject) => {
      const settle = (failure?: Error) => {
        clearTimeout(bound);
        worker.off("message", ready).off("error", settle).off("exit", exited);
        if (failure === undefined) resolve();
        else reject(this.failed(failure));
      };
      const ready = (a: ReportAnswer) => void ("ready" in a && settle());
      const exited = (code: number) => settle(new Error(`the report worker exited (code ${code}) before it was ready`));
      const bound = setTimeout(() => {
        settle(new Error(`the report worker did not start within ${startMs} ms`));
        if (this.worker === worker) this.retire();
      }, startMs).unref();
      worker.on("message", ready).on("error", settle).on("exit", exited);
    });
    started.catch(() => {}); // its asker may have left: a report waiting for it is told by ask()
    return started;
  }

  private answer(worker: Worker, result: Batch | Error): void {
    const running = this.running;
    if (running?.worker !== worker) return;
    this.running = undefined;
    if (!(result instanceof Error)) return running.resolve(result);
    running.reject(this.failed(result));
  }

  /** A report's failure: a 503, and a corrupt database fails the store closed too. */
  private failed(e: Error): StoreUnavailableError {
    if (isCorrupt(e)) this.options.onStoreFailure?.(e);
    return new StoreUnavailableError(e);
  }

  /** The worker failed or exited: its report (if any) fails, and the next report starts a new one. */
  private ended(worker: Worker, error: Error): void {
    if (this.worker === worker) this.worker = undefined;
    this.answer(worker, error);
  }

  /** Waiting reports give up, and a running one is answered 503 at once and stopped; the worker ends, not waited for. */
  close(): void {
    this.closing.abort(new StoreUnavailableError(new Error("the store is closing")));
    this.retire();
  }

  /**
   * Ends the worker (the next report starts another). One running a statement (close() has set
   * `stop`) ends once it answered: a terminating thread runs no JavaScript, so the statement's
   * check could not stop it, and it would scan on to its end (the process's exit waiting for it).
   */
  private retire(): void {
    clearTimeout(this.idle);
    const worker = this.worker;
    this.worker = undefined;
    if (worker === undefined) return;
    if (this.running?.worker === worker) worker.once("message", () => void worker.terminate());
    else void worker.terminate();
  }
}
