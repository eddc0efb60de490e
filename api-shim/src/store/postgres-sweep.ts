import type pg from "pg";
import { LOCK_CLASS } from "./postgres-migrations.ts";
import { IS_READ_ONLY } from "./postgres-sql.ts";

/**
 * The live owners: those whose advisory lock (LOCK_CLASS, owner) a session holds (see
 * takeOwnerLock) in this database. pg_locks shows the whole server's: a lock held in another
 * database (the source of a copy made with pg_dump | psql, still running) is no replica of this one.
 */
const LIVE = `SELECT objid::bigint AS owner FROM pg_locks WHERE locktype = 'advisory' AND classid = $1::bigint::oid AND objsubid = 2 AND granted
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`;
/**
 * Whether the database takes no writes (READ_ONLY), and whether owner $2's liveness lock is held
 * on it: a replica whose liveness session reached another server than its pool (a failover, a DNS
 * name that moved) has its holds swept there as a dead replica's.
 */
export const READY = `SELECT ${IS_READ_ONLY} AS read_only, EXISTS (${LIVE} AND objid = $2::bigint::oid) AS locked`;
/** The database's time (ms) and the owners of holds that have no live lock now. */
const LOCKLESS = `WITH live AS (${LIVE})
  SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now,
    ARRAY(SELECT DISTINCT r.owner FROM reservations r WHERE NOT EXISTS (SELECT 1 FROM live WHERE live.owner = r.owner)) AS owners`;
/** Releases (uncharged) the holds of the owners $2 that still have no live lock; says how many. */
const RELEASE_LOCKLESS = `WITH live AS (${LIVE}),
  gone AS (DELETE FROM reservations r WHERE r.owner = ANY($2::int[]) AND NOT EXISTS (SELECT 1 FROM live WHERE live.owner = r.owner) RETURNING key_id, amount),
  per AS (SELECT key_id, sum(amount) AS amount, count(*) AS n FROM gone GROUP BY key_id),
  k AS (UPDATE keys SET held = held - per.amount FROM per WHERE keys.id = per.key_id RETURNING per.n)
  SELECT coalesce(sum(n), 0)::bigint AS released FROM k`;
/**
 * A replica that took its lock back (a new owner id) after its liveness session was cut: its
 * holds still in flight ($2, its own reservation ids) become the new owner's ($1), whichever id
 * they carry (an earlier try at the relock may have moved them already).
 */
export const ADOPT_HOLDS = "UPDATE reservations SET owner = $1 WHERE id = ANY($2::text[]) AND owner <> $1";

/** Default of PostgresStoreOptions.sweepGraceMs. */
export const SWEEP_GRACE_MS = 30_000;

/**
 * The sweeps' memory of owners seen without their liveness lock. A replica is alive while it holds
 * its advisory lock; Postgres drops the lock the moment its session ends, so a lock missing for a
 * moment is also a replica whose session was cut (a network blip, a database restart,
 * pg_terminate_backend) and which is taking a lock back under a new owner id, its holds with it
 * (ADOPT_HOLDS). Its holds are released only once the owner has been without a lock for `graceMs`
 * by the database's clock (seen by a sweep, and still by a later one at least that much later), so
 * replicas' own clocks do not matter. One pass at a time.
 */
export class StaleOwners {
  /** Owner → the database's time (ms) a sweep of this replica first saw it without a lock. */
  private readonly seen = new Map<number, number>();
  private running: Promise<{ released: number; dueInMs: number | null }> | undefined;
  private readonly graceMs: number;

  constructor(graceMs: number) {
    this.graceMs = graceMs;
  }

  /**
   * One sweep: the holds of owners past their grace released; `dueInMs` is when the next owner's
   * grace ends (null if none waits), for a sweep then. A pass asked for while one runs waits for
   * it and releases nothing itself (what it released is counted once, by its own caller).
   */
  pass(pool: pg.Pool): Promise<{ released: number; dueInMs: number | null }> {
    if (this.running) return this.running.then(() => ({ released: 0, dueInMs: null }));
    const running = this.run(pool).finally(() => (this.running = undefined));
    this.running = running;
    return running;
  }

  private async run(pool: pg.Pool): Promise<{ released: number; dueInMs: number | null }> {
    const { now, owners } = (await pool.query<{ now: number; owners: number[] }>(LOCKLESS, [LOCK_CLASS])).rows[0]!;
    const lockless = new Set(owners);
    for (const owner of this.seen.keys()) if (!lockless.has(owner)) this.seen.delete(owner);
    for (const owner of owners) if (!this.seen.has(owner)) this.seen.set(owner, now);
    const due = owners.filter((owner) => now - this.seen.get(owner)! >= this.graceMs);
    let released = 0;
    if (due.length > 0) {
      released = (await pool.query<{ released: number }>(RELEASE_LOCKLESS, [LOCK_CLASS, due])).rows[0]!.released;
      for (const owner of due) this.seen.delete(owner);
    }
    const waits = [...this.seen.values()].map((first) => first + this.graceMs - now);
    return { released, dueInMs: waits.length > 0 ? Math.max(0, Math.min(...waits)) : null };
  }
}
