import type pg from "pg";
import { MAX_DOUBTFUL, RELEASE_BATCH } from "./postgres-failures.ts";
import { RELEASE } from "./postgres-sql.ts";

/**
 * Holds whose fate is unknown to this replica: a reserve or settle failed, so it may or may not
 * have committed, and the client got a 503. Each is released (uncharged) once the database
 * answers again, a batch per round trip. The value is when the failure happened (performance.now(), monotonic): a release that
 * finds nothing is tried again until the failed statement cannot still be running on the server
 * (statement timeout plus a margin), since a reserve cut off from its client may still commit
 * after a first try.
 */
export class DoubtfulHolds {
  private readonly holds = new Map<string, number>();
  private retrier: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly pool: pg.Pool;
  private readonly retryMs: number;
  private readonly timeoutMs: number;

  constructor(pool: pg.Pool, retryMs: number, timeoutMs: number) {
    this.pool = pool;
    this.retryMs = retryMs;
    this.timeoutMs = timeoutMs;
  }

  get size(): number {
    return this.holds.size;
  }

  add(reservationId: string): void {
    // Bounded: the oldest is forgotten (a hold of it that did commit is swept at the next start).
    if (this.holds.size >= MAX_DOUBTFUL) this.holds.delete(this.holds.keys().next().value!);
    this.holds.set(reservationId, performance.now());
    if (!this.stopped) this.retrier ??= setTimeout(() => void this.release(), this.retryMs).unref();
  }

  /** A last try at them (at close); what is left is swept by other replicas. Nothing is tried after. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retrier);
    if (this.holds.size > 0) await this.release();
  }

  private async release(): Promise<void> {
    this.retrier = undefined;
    const ids = [...this.holds.keys()];
    for (let i = 0; i < ids.length; i += RELEASE_BATCH) {
      const batch = ids.slice(i, i + RELEASE_BATCH);
      try {
        const found = new Set((await this.pool.query<{ id: string }>({ name: "release", text: RELEASE, values: [batch] })).rows.map((r) => r.id));
        const now = performance.now();
        for (const id of batch) if (found.has(id) || now - this.holds.get(id)! > this.timeoutMs * 2 + 1000) this.holds.delete(id);
      } catch {
        break; // still unreachable: all of them next time
      }
    }
    if (this.holds.size > 0 && !this.stopped) this.retrier = setTimeout(() => void this.release(), this.retryMs).unref();
  }
}
