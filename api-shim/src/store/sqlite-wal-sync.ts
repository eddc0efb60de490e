import { type FileHandle, open } from "node:fs/promises";

/**
 * Makes what was committed to a WAL durable without stopping the event loop: an fdatasync of
 * the -wal file on libuv's thread pool, where synchronous = FULL would have better-sqlite3 sync
 * it at COMMIT on the main thread (5 ms fsyncs of network block storage then stall every
 * request). One handle stays open: in WAL mode SQLite truncates or overwrites the -wal, it
 * unlinks it only when its last connection closes (the store's own stays open until close()).
 *
 * Syncs are shared: a datasync started after a commit covers it, so a caller that committed
 * while one is in flight waits for the next, which every such caller shares.
 */
/** A sync asked for once close() has begun: the store is shutting down (its close makes the WAL durable). */
export class WalClosedError extends Error {
  constructor() {
    super("the WAL's sync is closed: the store is closing");
  }
}

export class WalSync {
  private readonly path: string;
  private handle: Promise<FileHandle> | null = null;
  private inFlight: Promise<void> | null = null;
  private next: Promise<void> | null = null;
  private closed = false;
  /**
   * The first datasync that failed, given to every later sync: after a write-back error Linux may
   * answer the next datasync 0 with the dirty pages dropped, so a write committed since is not
   * known to be on disk either.
   */
  private failure: unknown = null;

  constructor(databaseFile: string) {
    this.path = `${databaseFile}-wal`;
  }

  /** Resolves once a datasync of the WAL that started after this call has completed. */
  sync(): Promise<void> {
    if (this.closed) return Promise.reject(new WalClosedError());
    if (this.inFlight === null) return this.start();
    this.next ??= this.inFlight.catch(() => {}).then(() => {
      this.next = null;
      return this.start();
    });
    return this.next;
  }

  private start(): Promise<void> {
    const run = (async () => {
      if (this.failure !== null) throw this.failure;
      if (this.closed) throw new WalClosedError();
      // "r+": a WAL is there after a commit; one that is not must not be created here.
      this.handle ??= open(this.path, "r+");
      const handle = await this.handle.catch((e: unknown) => {
        this.handle = null; // tried again at the next sync
        throw e;
      });
      await handle.datasync().catch((e: unknown) => {
        this.failure = e;
        throw e;
      });
    })();
    const done = run.finally(() => {
      if (this.inFlight === done) this.inFlight = null;
    });
    this.inFlight = done;
    return done;
  }

  /** Closes the handle, once the syncs in flight or queued have completed; later ones are refused. */
  async close(): Promise<void> {
    this.closed = true;
    while (this.inFlight !== null || this.next !== null) await Promise.allSettled([this.inFlight, this.next]);
    const handle = this.handle;
    this.handle = null;
    await (await handle?.catch(() => null))?.close();
  }
}
