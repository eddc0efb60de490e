/**
 * The memory that non-streamed answers may hold at once, across requests.
 *
 * A non-streamed answer is read whole before it is sent, because its headers carry the charge
 * (answer-body.ts). Each may be up to SHIM_MAX_ANSWER_BYTES, and nothing else bounds how many are
 * read at once: parallel batches of embeddings could take the process past its memory. So the
 * bytes held are counted here, and a read that would go past the budget waits for bytes to be
 * given back (the upstream's answer waits in its socket meanwhile: vLLM has already done the
 * work, and nothing is refused or charged differently).
 *
 * A budget shared by readers that each hold part of it could deadlock: every reader waiting for
 * bytes the others hold. So one reader at a time may go past the budget (the "overdraft"); it
 * never waits, and hands the overdraft on when its answer is read. With answers sent as fast as
 * they are read, memory is bounded by the budget plus one answer. An answer read but not yet sent
 * (its client takes it slowly: nginx does not buffer answers) still holds its bytes, and the
 * overdraft is given only while such answers hold at most the budget: slow clients can add at
 * most one more budget, and a reader waiting on them goes on as they take their answers.
 */
export class AnswerMemory {
  readonly limit: number;
  /** Bytes held by every lease. */
  private used = 0;
  /** Of those, bytes of answers read and waiting to be sent. */
  private unsent = 0;
  private overdraft: AnswerLease | null = null;
  private readonly waiting: (() => void)[] = [];
  /** Reads that had to wait for room, since the start (a budget too small shows here). */
  waits = 0;

  constructor(limit: number) {
    this.limit = limit;
  }

  /** Bytes held now by answers being read or sent. */
  get inUse(): number {
    return this.used;
  }

  lease(): AnswerLease {
    return new AnswerLease(this);
  }

  /** Takes `n` bytes for `lease` if it may now; false when it must wait. */
  tryTake(lease: AnswerLease, n: number): boolean {
    if (this.used + n > this.limit && this.overdraft !== lease) {
      if (this.overdraft !== null || this.unsent > this.limit) return false;
      this.overdraft = lease;
    }
    this.used += n;
    return true;
  }

  /** Resolves when there may be room: then try again. */
  changed(): Promise<void> {
    this.waits++;
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** `lease` read its answer: its `held` bytes now wait to be sent, and the overdraft is free. */
  readDone(lease: AnswerLease, held: number): void {
    this.unsent += held;
    if (this.overdraft === lease) this.overdraft = null;
    this.wake();
  }

  /** Gives back `n` bytes of `lease`, read (`wasRead`: waiting to be sent) or not. */
  give(lease: AnswerLease, n: number, wasRead: boolean): void {
    this.used -= n;
    if (wasRead) this.unsent -= n;
    if (this.overdraft === lease && !wasRead) this.overdraft = null;
    this.wake();
  }

  private wake(): void {
    for (const wake of this.waiting.splice(0)) wake();
  }
}

/** One answer's account: what it takes is given back by `release`, once the answer is sent or dropped. */
export class AnswerLease {
  private readonly memory: AnswerMemory;
  private held = 0;
  private read = false;
  private released = false;

  constructor(memory: AnswerMemory) {
    this.memory = memory;
  }

  get holding(): boolean {
    return this.held > 0;
  }

  /** Takes `n` more bytes if there is room now (the usual case: no wait, no promise). */
  takeNow(n: number): boolean {
    if (this.released) return true;
    if (!this.memory.tryTake(this, n)) return false;
    this.held += n;
    return true;
  }

  /** Takes `n` more bytes, waiting while there is no room. */
  async take(n: number): Promise<void> {
    while (!this.takeNow(n)) await this.memory.changed();
  }

  /** Gives back bytes dropped while reading (an answer past the largest relayed). */
  drop(n: number): void {
    this.held -= n;
    this.memory.give(this, n, false);
  }

  /** The answer is read (or its read failed): another reader may have the overdraft. */
  readDone(): void {
    if (this.read || this.released) return;
    this.read = true;
    this.memory.readDone(this, this.held);
  }

  /** Gives everything back: the answer was sent, or dropped. Idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    const n = this.held;
    this.held = 0;
    this.memory.give(this, n, this.read);
  }
}
