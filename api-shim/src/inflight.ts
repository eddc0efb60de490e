import { EventEmitter, once } from "node:events";

/**
 * The inference requests in flight, so a shutdown can wait for them (drain) and then abort the
 * rest. An aborted request still settles: it is charged for what was generated.
 */
export class Inflight {
  private readonly entries = new Set<(reason: string) => void>();
  private readonly events = new EventEmitter();
  draining = false;

  /** Registers an abort function; call the returned function when the request is over. */
  add(abort: (reason: string) => void): () => void {
    this.entries.add(abort);
    return () => {
      if (this.entries.delete(abort) && this.entries.size === 0) this.events.emit("empty");
    };
  }

  get size(): number {
    return this.entries.size;
  }

  /** Stops admitting, waits up to `timeoutMs` for requests to finish, then aborts the rest and waits for them to settle. */
  async drain(timeoutMs: number, settleTimeoutMs = 10_000): Promise<{ aborted: number }> {
    this.draining = true;
    if (this.size === 0) return { aborted: 0 };
    const finished = await this.waitEmpty(timeoutMs);
    if (finished) return { aborted: 0 };
    const aborted = this.size;
    for (const abort of [...this.entries]) abort("drain");
    await this.waitEmpty(settleTimeoutMs);
    return { aborted };
  }

  private async waitEmpty(timeoutMs: number): Promise<boolean> {
    if (this.size === 0) return true;
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), timeoutMs);
    try {
      await once(this.events, "empty", { signal: ac.signal });
      return true;
    } catch {
      return this.size === 0;
    } finally {
      clearTimeout(timer);
    }
  }
}
