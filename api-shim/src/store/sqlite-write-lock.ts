/** How often a waiting operation tries the write lock again. */
const RETRY_MS = 10;

interface LockWaiter {
  run(): void;
  fail(error: unknown): void;
  /** performance.now() past which it gives up. */
  deadline: number;
}

/**
 * Runs `attempt` (an operation that takes the lock itself and gives it back on failure), again
 * every RETRY_MS while it fails because the database is busy, until `deadline`. Deadlines here
 * are performance.now() times (monotonic): a wall clock stepped forward by NTP ended a 5 s wait
 * within milliseconds, and a settlement's wait that ends fails the store closed.
 */
export async function retryWhileBusy<T>(attempt: () => Promise<T>, busy: (e: unknown) => boolean, deadline: number): Promise<T> {
  for (;;) {
    try {
      return await attempt();
    } catch (e) {
      if (!busy(e) || performance.now() >= deadline) throw e;
      await new Promise((r) => setTimeout(r, RETRY_MS));
    }
  }
}

/**
 * Operations waiting for the database's write lock while another connection holds it (an
 * operator's sqlite3 shell, a backup). SQLite's own busy handler waits by sleeping the thread:
 * with one thread, every request, stream and probe stopped for up to the busy timeout, once per
 * request. Here the lock is tried again every RETRY_MS from a timer, and the waiters run in the
 * order they came once `tryLock` takes it.
 */
export class WriteLockQueue {
  private waiters: LockWaiter[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** Takes the write lock: false when it is busy; throws on any other failure. */
  private readonly tryLock: () => boolean;

  constructor(tryLock: () => boolean) {
    this.tryLock = tryLock;
  }

  /** Operations are waiting: a new one waits behind them, so the order is kept. */
  get waiting(): boolean {
    return this.waiters.length > 0;
  }

  /**
   * `fn`'s result, run once `tryLock` has taken the lock (in the order asked); rejects with
   * SQLITE_BUSY past `deadline`, or with what taking the lock failed with.
   */
  wait<T>(fn: () => T, deadline: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.waiters.push({ deadline, fail: reject, run: () => {
        try {
          resolve(fn());
        } catch (e) {
          reject(e);
        }
      } });
      this.timer ??= setTimeout(this.retry, RETRY_MS);
    });
  }

  /** Fails every waiter (the store is closing). */
  failAll(error: unknown): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    for (const w of this.take()) w.fail(error);
  }

  private readonly retry = (): void => {
    this.timer = undefined;
    let locked: boolean;
    try {
      locked = this.tryLock();
    } catch (e) {
      for (const w of this.take()) w.fail(e);
      return;
    }
    if (locked) {
      for (const w of this.take()) w.run();
      return;
    }
    const now = performance.now();
    const expired = this.waiters.filter((w) => w.deadline <= now);
    this.waiters = this.waiters.filter((w) => w.deadline > now);
    for (const w of expired) w.fail(Object.assign(new Error("the database is locked by another connection"), { code: "SQLITE_BUSY" }));
    if (this.waiters.length > 0) this.timer = setTimeout(this.retry, RETRY_MS);
  };

  private take(): LockWaiter[] {
    const all = this.waiters;
    this.waiters = [];
    return all;
  }
}
