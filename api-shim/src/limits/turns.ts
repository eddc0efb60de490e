/**
 * How long past its time a told turn is kept for its caller. openai-node comes back within a few
 * ms of Retry-After, a client further away within its round trip; past this the caller is taken
 * to have given up (an SDK refused on its last retry does not come back) and the room is let go.
 */
export const TURN_GRACE_MS = 1000;

/**
 * How long past its time a turn goes only to a request that may be its caller: not to an SDK's
 * first attempt (rate-limit.ts take's `firstTry`), which was told no turn. The told SDK is back
 * within a few ms; after this the first attempts take the turn, or a client that only ever sends
 * first attempts (no retries, ignoring Retry-After) would have its own turns hold all the room.
 */
export const RETRIES_FIRST_MS = 250;

/**
 * The turns a requests bucket has told the callers it refused: when each was told to come back
 * (its Retry-After) and the room held for it until then. Without them, a batch job's worker
 * answered in between sent its next request at once and took the room a told worker came back
 * to, which was refused again: 5 to 10 of 300 requests failed after the SDK's two retries, none
 * with the room held (test/support/measure-rpm-turns.ts). Callers are not told apart (a retry
 * carries nothing of its refusal), so a turn whose time has come goes to whichever request
 * arrives first; the turns' times are the whole seconds the callers were told, so that is, in
 * practice, the told caller.
 *
 * Sorted by time. The bucket tells no turn further ahead than 59 s, so a bucket holds at most
 * about its requests/min of turns (16 bytes each), and only while it refuses: a turn goes once
 * claimed or TURN_GRACE_MS past its time, and an idle bucket holds none.
 */
export class Turns {
  private dues: number[] = [];
  private amounts: number[] = [];
  /** Index of the earliest turn still held: claimed and lapsed ones are skipped, not spliced out. */
  private head = 0;
  private heldSum = 0;

  /** Room held at `nowMs` for turns told and neither claimed nor lapsed. */
  held(nowMs: number): number {
    while (this.head < this.dues.length && this.dues[this.head]! + TURN_GRACE_MS < nowMs) this.drop();
    return this.heldSum;
  }

  /** How many turns are held (for tests and the memory bound). */
  get size(): number {
    return this.dues.length - this.head;
  }

  /**
   * The room of the earliest turn whose time has come at `nowMs`, 0 when none has (call held()
   * first); for a `firstTry`, whose time came RETRIES_FIRST_MS ago.
   */
  due(nowMs: number, firstTry: boolean): number {
    const after = firstTry ? RETRIES_FIRST_MS : 0;
    return this.head < this.dues.length && this.dues[this.head]! + after <= nowMs ? this.amounts[this.head]! : 0;
  }

  /** The earliest turn, due at `nowMs`, is taken by the request arriving now. */
  claim(): void {
    this.drop();
  }

  /** A turn of `n` told to come back at `dueMs`. */
  tell(dueMs: number, n: number): void {
    let i = this.dues.length;
    while (i > this.head && this.dues[i - 1]! > dueMs) i--; // almost always the last: callers are told in order
    this.dues.splice(i, 0, dueMs);
    this.amounts.splice(i, 0, n);
    this.heldSum += n;
  }

  /** Every turn forgotten: told at a rate the bucket no longer has. */
  clear(): void {
    this.dues = [];
    this.amounts = [];
    this.head = 0;
    this.heldSum = 0;
  }

  private drop(): void {
    this.heldSum -= this.amounts[this.head]!;
    this.head++;
    if (this.head === this.dues.length) this.clear();
    else if (this.head > 64 && this.head * 2 > this.dues.length) {
      // Spliced out in a batch, so a long line costs no more than its length.
      this.dues = this.dues.slice(this.head);
      this.amounts = this.amounts.slice(this.head);
      this.head = 0;
    }
  }
}
